#!/usr/bin/env bash
# Stowage's backups against restic on the same content, in one run:
#   1. one Stowage node (temp data dir) takes a push of IMAGES images of
#      LAYER_MIB MiB of incompressible layers (stowage-bench push-large);
#   2. full backup: `stowage backup create` into a plain and into an
#      encrypted repository (--key-file), and `restic init` + `restic backup`
#      of the node's data directory (restic always encrypts);
#   3. incremental: INC_MIB MiB more is pushed, and each backup runs again;
#      the bytes each added to its repository are du -sb after minus before;
#   4. restore: `stowage restore --latest --data-dir` from both repositories
#      and `restic restore latest --target`;
#   5. the repositories' sizes for the same content;
# then prints a markdown table with the ratios. Reported, never asserted:
# the exit status says only whether every step ran.
#
# Every timed step starts with the page cache dropped (root; DROP_CACHES=0
# keeps it), and its time includes a `sync -f` of the filesystem it wrote,
# so that what is compared is "on disk": Stowage fsyncs what it writes,
# restic leaves part of it to the kernel. The table's seconds include the
# sync; the command alone is in the saved JSON (and printed with each step).
#
# Environment: IMAGES (20, even: push-large pushes half in one piece, half
# in PATCHes), LAYER_MIB (50), INC_MIB (10, even: two images of INC_MIB/2),
# PORT (5420) and RESTORE_PORT (5421) for the node and the check of the
# restored data directory, STEP_TIMEOUT (900 s per command), MAX_SECS (1800:
# no command runs past it), DROP_CACHES (1), KEEP (0; 1 keeps the temp dir),
# SKIP_BUILD=1 with STOWAGE=… and BENCH=… (existing binaries), RESTIC
# (/usr/bin/restic), RESTIC_COMPRESSION (restic's own variable: unset means
# restic's default, auto), PERF=1 (perf record of the node during the
# encrypted full backup and of the encrypted restore; slows both a little).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

IMAGES="${IMAGES:-20}"
LAYER_MIB="${LAYER_MIB:-50}"
INC_MIB="${INC_MIB:-10}"
PORT="${PORT:-5420}"
RESTORE_PORT="${RESTORE_PORT:-5421}"
STEP_TIMEOUT="${STEP_TIMEOUT:-900}"
MAX_SECS="${MAX_SECS:-1800}"
DROP_CACHES="${DROP_CACHES:-1}"
KEEP="${KEEP:-0}"
PERF="${PERF:-0}"
RESTIC="${RESTIC:-/usr/bin/restic}"
READY_TIMEOUT=60
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

log() { echo "backup-vs-restic.sh: $*" >&2; }
die() { log "$*"; exit 1; }

if [ $((IMAGES % 2)) -ne 0 ] || [ "$IMAGES" -lt 2 ]; then die "IMAGES must be even and at least 2"; fi
if [ $((INC_MIB % 2)) -ne 0 ] || [ "$INC_MIB" -lt 2 ]; then die "INC_MIB must be even and at least 2"; fi
[ -x "$RESTIC" ] || die "no restic at $RESTIC (Debian: apt-get install restic)"
for tool in curl jq timeout du sync awk; do
  command -v "$tool" >/dev/null || die "needs $tool"
done

# ---- build ----
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building stowage and stowage-bench (release)"
  cargo build --release -p stowage-node -p stowage-benches --bin stowage --bin stowage-bench >&2
fi
STOWAGE="${STOWAGE:-$TARGET_DIR/release/stowage}"
BENCH="${BENCH:-$TARGET_DIR/release/stowage-bench}"
for bin in "$STOWAGE" "$BENCH"; do
  [ -x "$bin" ] || die "missing $bin"
done
STARTED_AT="$(date +%s)" # MAX_SECS counts from here, not from the build

# ---- processes and cleanup ----
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stowage-backup-bench.XXXXXX")"
OUT="$WORK/out"
mkdir -p "$OUT"
PIDS=()
POLLER=""
PERF_PID=""

stop_pid() {
  local pid="$1"
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    return
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do
    stop_pid "$pid"
  done
  PIDS=()
}

cleanup() {
  local status=$?
  [ -n "$POLLER" ] && stop_pid "$POLLER"
  [ -n "$PERF_PID" ] && stop_pid "$PERF_PID"
  stop_all
  if [ "$KEEP" = 1 ]; then
    log "kept everything in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The whole run is bounded: each command gets at most STEP_TIMEOUT seconds
# and never more than what is left of MAX_SECS (no step starts after it).
step_timeout() {
  local left=$(( MAX_SECS - ($(date +%s) - STARTED_AT) ))
  if [ "$left" -le 0 ]; then die "over MAX_SECS=$MAX_SECS before $1"; fi
  echo $(( left < STEP_TIMEOUT ? left : STEP_TIMEOUT ))
}

require_free_port() {
  if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; then
    die "port $1 is already in use (PORT, RESTORE_PORT)"
  fi
}

wait_ready() {
  local url="$1" pid="$2" logfile="$3"
  local deadline=$(( $(date +%s) + READY_TIMEOUT ))
  until curl -fs -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logfile" >&2 || true
      die "process $pid exited before $url answered"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 30 "$logfile" >&2 || true
      die "$url not ready after ${READY_TIMEOUT}s"
    fi
    sleep 0.2
  done
  kill -0 "$pid" 2>/dev/null || die "process $pid is gone"
}

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
dusb() { du -sb "$1" | awk '{print $1}'; }

drop_caches() {
  if [ "$DROP_CACHES" = 1 ] && [ -w /proc/sys/vm/drop_caches ]; then
    sync
    echo 3 >/proc/sys/vm/drop_caches
  fi
}

# Every measurement, one JSON object per line.
RESULTS="$OUT/results.jsonl"
record() { # record NAME KEY=NUMBER...
  local name="$1" kv json
  shift
  json="{\"step\":\"$name\""
  for kv in "$@"; do json+=",\"${kv%%=*}\":${kv#*=}"; done
  echo "$json}" >>"$RESULTS"
}

declare -A SECS SECS_CMD CPU

# CPU seconds (user + system) the node has used so far.
CLK_TCK="$(getconf CLK_TCK)"
node_cpu() {
  sed 's/^.*) //' "/proc/$NODE_PID/stat" | awk -v hz="$CLK_TCK" '{ printf "%.2f", ($12 + $13) / hz }'
}
# The command's own CPU comes from GNU time, when there is one.
TIME_BIN=""
[ -x /usr/bin/time ] && TIME_BIN=/usr/bin/time

# timed NAME SYNC_DIR CMD...: drops the page cache, runs CMD (stdout to
# $OUT/NAME.out, stderr to $OUT/NAME.err, at most STEP_TIMEOUT seconds),
# then `sync -f SYNC_DIR`; SECS_CMD[NAME] is the command's time, SECS[NAME]
# the time with the sync, CPU[NAME] the CPU seconds of the command and of
# the node meanwhile (a backup's work is the node's; it idles otherwise).
timed() {
  local name="$1" syncdir="$2" t0 t1 t2 c0 c1 status=0 wrap=() limit
  shift 2
  limit="$(step_timeout "$name")"
  [ -n "$TIME_BIN" ] && wrap=("$TIME_BIN" -f '%U %S' -o "$OUT/$name.time")
  drop_caches
  c0="$(node_cpu)"
  t0="$(now)"
  timeout "$limit" "${wrap[@]}" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" || status=$?
  t1="$(now)"
  c1="$(node_cpu)"
  CPU[$name]="$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')"
  if [ -s "$OUT/$name.time" ]; then
    CPU[$name]="$(awk -v n="${CPU[$name]}" 'END { printf "%.2f", n + $1 + $2 }' "$OUT/$name.time")"
  fi
  if [ "$status" -ne 0 ]; then
    tail -n 20 "$OUT/$name.err" >&2 || true
    [ "$status" -eq 124 ] && log "$name ran over its $limit s (STEP_TIMEOUT, MAX_SECS)"
    die "$name failed (status $status): $*"
  fi
  sync -f "$syncdir"
  t2="$(now)"
  SECS_CMD[$name]="$(sub "$t1" "$t0")"
  SECS[$name]="$(sub "$t2" "$t0")"
  log "$name: ${SECS_CMD[$name]} s (+ sync: ${SECS[$name]} s), ${CPU[$name]} CPU s"
}

# The node's backup phases (state, listing, copying, recording), sampled
# every 0.2 s while a `backup create` runs, to say where its time goes.
start_poller() {
  local file="$1"
  : >"$file"
  (
    while :; do
      body="$(curl -s --max-time 1 "$NODE/_stowage/backup" 2>/dev/null || true)"
      if [[ "$body" =~ \"phase\":\"([a-z]*)\" ]]; then
        echo "$(date +%s.%N) ${BASH_REMATCH[1]}" >>"$file"
      fi
      sleep 0.2
    done
  ) &
  POLLER=$!
}
stop_poller() {
  stop_pid "$POLLER"
  POLLER=""
}
# phases FILE START END: "state 0.10 s  copying 9.20 s  ..." from the
# samples after START (the job's start; the first phase counts from it),
# each phase until the next one's first sample (the last until END).
phases() {
  awk -v start="$2" -v end="$3" '
    $1 < start { next }
    $2 != last { if (last != "") d[last] += $1 - t; else $1 = start; t = $1; last = $2; if (!(last in seen)) { seen[last] = 1; order[++n] = last } }
    END { if (last != "" && last != "done") d[last] += end - t
          for (i = 1; i <= n; i++) if (order[i] != "done") printf "%s %.2f s  ", order[i], d[order[i]] }
  ' "$1"
}

# ---- the node and the push ----
require_free_port "$PORT"
require_free_port "$RESTORE_PORT"
NODE="http://127.0.0.1:$PORT"
DATA="$WORK/data"
log "Stowage $("$STOWAGE" --version 2>/dev/null || echo '?'), restic $("$RESTIC" version | awk '{print $2}'); work dir $WORK"
"$STOWAGE" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --log-level warn \
  >"$OUT/node.log" 2>&1 &
NODE_PID=$!
PIDS+=("$NODE_PID")
wait_ready "$NODE/v2/" "$NODE_PID" "$OUT/node.log"

push() { # push NAME BLOBS MIB: 2*BLOBS images of MIB MiB
  log "pushing $(( 2 * $2 )) images of $3 MiB"
  timeout "$(step_timeout "push $1")" "$BENCH" --target "$NODE" --workload push-large --blobs "$2" \
    --blob-mib "$3" --patch-mib 16 --repo-prefix backup --no-machine --json \
    >"$OUT/$1.jsonl" 2>"$OUT/$1.err" || { tail -n 20 "$OUT/$1.err" >&2; die "push $1 failed"; }
  grep -q '"errors":0' "$OUT/$1.jsonl" || log "push $1 reported errors: $(cat "$OUT/$1.jsonl")"
}
# What restic reads: the data directory without the ballast.
data_bytes() { echo $(( $(dusb "$DATA") - $(dusb "$DATA/ballast" 2>/dev/null || echo 0) )); }
push push-full $((IMAGES / 2)) "$LAYER_MIB"
sync
DATA_BYTES_FULL="$(data_bytes)"

KEY="$WORK/backup.key"
"$STOWAGE" backup keygen "$KEY" >/dev/null
export RESTIC_PASSWORD="stowage-bench-$$"
export RESTIC_CACHE_DIR="$WORK/restic-cache"
REPO_PLAIN="$WORK/repo-plain"
REPO_ENC="$WORK/repo-enc"
REPO_RESTIC="$WORK/repo-restic"

# stowage_backup NAME REPO [--key-file F]
stowage_backup() {
  local name="$1" repo="$2"
  shift 2
  start_poller "$OUT/$name.phases"
  if [ "$PERF" = 1 ] && [ "$name" = full-enc ] && command -v perf >/dev/null; then
    perf record -g -o "$OUT/perf-backup.data" -p "$NODE_PID" >/dev/null 2>"$OUT/perf-backup.err" &
    PERF_PID=$!
  fi
  timed "$name" "$WORK" "$STOWAGE" backup create --to "$repo" "$@" --node "$NODE" --json
  if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID"; wait "$PERF_PID" || true
    PERF_PID=""
    perf report -i "$OUT/perf-backup.data" --no-children --stdio 2>/dev/null \
      | grep -E '^ +[0-9.]+%' | head -n 15 >"$OUT/perf-backup.txt" || true
  fi
  stop_poller
  local start end
  start="$(jq -r '.started_ms / 1000' "$OUT/$name.out")"
  end="$(jq -r '(.finished_ms // 0) / 1000' "$OUT/$name.out")"
  log "$name: $(sub "$end" "$start") s in the node; phases: $(phases "$OUT/$name.phases" "$start" "$end")"
  record "$name" "secs=${SECS[$name]}" "cmd_secs=${SECS_CMD[$name]}" "cpu_secs=${CPU[$name]}" \
    "node_secs=$(jq '(.finished_ms - .started_ms) / 1000' "$OUT/$name.out")" \
    "new_bytes=$(jq '.snapshot.new_bytes' "$OUT/$name.out")" \
    "chunk_bytes=$(jq '.snapshot.chunk_bytes' "$OUT/$name.out")" \
    "chunks=$(jq '.snapshot.chunks' "$OUT/$name.out")" "new_chunks=$(jq '.snapshot.new_chunks' "$OUT/$name.out")"
}

restic_backup() {
  local name="$1"
  # The ballast is the node's disk reserve (64 MiB of zeros, made again
  # when the node starts): not content, and Stowage's backup leaves it out.
  timed "$name" "$WORK" "$RESTIC" --repo "$REPO_RESTIC" backup --json --exclude "$DATA/ballast" "$DATA"
  local summary
  summary="$(grep '"message_type":"summary"' "$OUT/$name.out" | tail -n 1)"
  record "$name" "secs=${SECS[$name]}" "cmd_secs=${SECS_CMD[$name]}" "cpu_secs=${CPU[$name]}" \
    "data_added=$(jq '.data_added' <<<"$summary")" "files_new=$(jq '.files_new' <<<"$summary")" \
    "files_unmodified=$(jq '.files_unmodified' <<<"$summary")" \
    "restic_secs=$(jq '.total_duration' <<<"$summary")"
}

# ---- full backups ----
stowage_backup full-plain "$REPO_PLAIN"
stowage_backup full-enc "$REPO_ENC" --key-file "$KEY"
timed restic-init "$WORK" "$RESTIC" --repo "$REPO_RESTIC" init
restic_backup full-restic
FULL_BYTES="$(jq '.snapshot.chunk_bytes' "$OUT/full-plain.out")"
declare -A SIZE1
for r in plain enc restic; do
  v="REPO_${r^^}"
  SIZE1[$r]="$(dusb "${!v}")"
done

# ---- incremental ----
push push-inc 1 $((INC_MIB / 2))
sync
DATA_BYTES_INC="$(data_bytes)"
stowage_backup inc-plain "$REPO_PLAIN"
stowage_backup inc-enc "$REPO_ENC" --key-file "$KEY"
restic_backup inc-restic
INC_BYTES=$(( $(jq '.snapshot.chunk_bytes' "$OUT/inc-plain.out") - FULL_BYTES ))
declare -A SIZE2 ADDED
for r in plain enc restic; do
  v="REPO_${r^^}"
  SIZE2[$r]="$(dusb "${!v}")"
  ADDED[$r]=$(( SIZE2[$r] - SIZE1[$r] ))
done
record sizes "data_dir_full=$DATA_BYTES_FULL" "data_dir_inc=$DATA_BYTES_INC" \
  "full_bytes=$FULL_BYTES" "inc_bytes=$INC_BYTES" \
  "repo_plain=${SIZE2[plain]}" "repo_enc=${SIZE2[enc]}" "repo_restic=${SIZE2[restic]}" \
  "added_plain=${ADDED[plain]}" "added_enc=${ADDED[enc]}" "added_restic=${ADDED[restic]}" \
  "full_plain=${SIZE1[plain]}" "full_enc=${SIZE1[enc]}" "full_restic=${SIZE1[restic]}"

# ---- restore ----
# The node stays up: nothing is stopped, and it is idle from here on.
RESTORED_BYTES="$(jq '.snapshot.chunk_bytes' "$OUT/inc-plain.out")"
# check_restored DIR: starts a node on DIR and sets TAGS to the tags it lists.
check_restored() {
  local dir="$1" pid repo n
  TAGS=0
  "$STOWAGE" serve --listen "127.0.0.1:$RESTORE_PORT" --data-dir "$dir" --log-level warn \
    >"$OUT/restored-node.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_ready "http://127.0.0.1:$RESTORE_PORT/v2/" "$pid" "$OUT/restored-node.log"
  for repo in $(curl -fs --max-time 10 "http://127.0.0.1:$RESTORE_PORT/v2/_catalog" | jq -r '.repositories[]'); do
    n="$(curl -fs --max-time 10 "http://127.0.0.1:$RESTORE_PORT/v2/$repo/tags/list" | jq '.tags // [] | length' || true)"
    TAGS=$(( TAGS + ${n:-0} ))
  done
  stop_pid "$pid"
  PIDS=("$NODE_PID")
}
for r in plain enc; do
  name="restore-$r"
  v="REPO_${r^^}"
  key=()
  [ "$r" = enc ] && key=(--key-file "$KEY")
  if [ "$PERF" = 1 ] && [ "$r" = enc ] && command -v perf >/dev/null; then
    timed "$name" "$WORK" perf record -g -o "$OUT/perf-restore.data" -- \
      "$STOWAGE" restore --from "${!v}" "${key[@]}" --latest --data-dir "$WORK/restored-$r" --json
    perf report -i "$OUT/perf-restore.data" --no-children --stdio 2>/dev/null \
      | grep -E '^ +[0-9.]+%' | head -n 15 >"$OUT/perf-restore.txt" || true
  else
    timed "$name" "$WORK" "$STOWAGE" restore --from "${!v}" "${key[@]}" --latest \
      --data-dir "$WORK/restored-$r" --json
  fi
  got="$(jq '.bytes' "$OUT/$name.out")"
  [ "$got" = "$RESTORED_BYTES" ] || log "$name restored $got chunk bytes, the snapshot has $RESTORED_BYTES"
  check_restored "$WORK/restored-$r"
  log "$name: a node on the restored data directory lists $TAGS tags (pushed: $(( IMAGES + 2 )))"
  record "$name" "secs=${SECS[$name]}" "cmd_secs=${SECS_CMD[$name]}" "cpu_secs=${CPU[$name]}" "bytes=$got" "tags=$TAGS"
  rm -rf "$WORK/restored-$r"
done
timed restore-restic "$WORK" "$RESTIC" --repo "$REPO_RESTIC" restore latest --target "$WORK/restored-restic"
restored_chunks="$(dusb "$WORK/restored-restic$DATA/chunks" 2>/dev/null || echo 0)"
log "restore-restic: $(dusb "$WORK/restored-restic") bytes restored (the data dir without its ballast: $(data_bytes))"
record restore-restic "secs=${SECS[restore-restic]}" "cmd_secs=${SECS_CMD[restore-restic]}" "cpu_secs=${CPU[restore-restic]}" \
  "bytes=$(dusb "$WORK/restored-restic")" "chunks_dir_bytes=$restored_chunks"
rm -rf "$WORK/restored-restic"

# ---- the table ----
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", b / s / 1e6; else printf "-" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "-" }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
row() { printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }
speed_rows() { # speed_rows LABEL BYTES STEP_PREFIX
  local label="$1" bytes="$2" p="$3"
  local r="${SECS[$p-restic]}" e="${SECS[$p-enc]}" s="${SECS[$p-plain]}"
  row "$label" "MB/s" "$(mbps "$bytes" "$r")" "$(mbps "$bytes" "$e")" "$(ratio "$r" "$e")" \
    "$(mbps "$bytes" "$s")" "$(ratio "$r" "$s")"
  row "$label" "s" "$r" "$e" "$(ratio "$r" "$e")" "$s" "$(ratio "$r" "$s")"
  r="${CPU[$p-restic]}" e="${CPU[$p-enc]}" s="${CPU[$p-plain]}"
  row "$label" "CPU s" "$r" "$e" "$(ratio "$r" "$e")" "$s" "$(ratio "$r" "$s")"
}
TABLE="$OUT/table.md"
{
  row "phase" "metric" "restic" "Stowage (encrypted)" "ratio" "Stowage (plain)" "ratio"
  row "---" "---" "---:" "---:" "---:" "---:" "---:"
  speed_rows "full backup, $(mib "$FULL_BYTES")" "$FULL_BYTES" full
  speed_rows "incremental, +$(mib "$INC_BYTES")" "$INC_BYTES" inc
  row "incremental" "added to repo" "$(mib "${ADDED[restic]}")" "$(mib "${ADDED[enc]}")" \
    "$(ratio "${ADDED[restic]}" "${ADDED[enc]}")" "$(mib "${ADDED[plain]}")" "$(ratio "${ADDED[restic]}" "${ADDED[plain]}")"
  speed_rows "restore, $(mib "$RESTORED_BYTES")" "$RESTORED_BYTES" restore
  row "repository, both snapshots" "du -sb" "$(mib "${SIZE2[restic]}")" "$(mib "${SIZE2[enc]}")" \
    "$(ratio "${SIZE2[restic]}" "${SIZE2[enc]}")" "$(mib "${SIZE2[plain]}")" "$(ratio "${SIZE2[restic]}" "${SIZE2[plain]}")"
} >"$TABLE"

echo
cat "$TABLE"
cat <<EOF

ratios: above 1 means better than restic (MB/s: Stowage/restic; seconds, CPU seconds and bytes: restic/Stowage)
seconds include a sync -f after each command (CPU s: the command's and the node's meanwhile), page cache dropped before each: $([ "$DROP_CACHES" = 1 ] && [ -w /proc/sys/vm/drop_caches ] && echo yes || echo no)
data: $IMAGES images of $LAYER_MIB MiB, then 2 of $((INC_MIB / 2)) MiB (blob chunks: $FULL_BYTES + $INC_BYTES bytes); the node's data dir without its ballast (what restic reads): $DATA_BYTES_FULL, then $DATA_BYTES_INC bytes
restic init: ${SECS[restic-init]} s (not in the full backup's time); RESTIC_COMPRESSION=${RESTIC_COMPRESSION:-unset (auto)}
commands alone (s): full $(for r in restic enc plain; do printf '%s %s ' "$r" "${SECS_CMD[full-$r]}"; done); inc $(for r in restic enc plain; do printf '%s %s ' "$r" "${SECS_CMD[inc-$r]}"; done); restore $(for r in restic enc plain; do printf '%s %s ' "$r" "${SECS_CMD[restore-$r]}"; done)
machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)
EOF
for f in perf-backup perf-restore; do
  if [ -s "$OUT/$f.txt" ]; then echo; echo "$f (perf report --no-children, top):"; cat "$OUT/$f.txt"; fi
done

SAVE="$TARGET_DIR/bench-results/$(date +%Y-%m-%d)"
mkdir -p "$SAVE"
stamp="$(date +%H%M%S)"
cp "$RESULTS" "$SAVE/backup-vs-restic-$stamp.jsonl"
cp "$TABLE" "$SAVE/backup-vs-restic-$stamp.md"
log "saved $SAVE/backup-vs-restic-$stamp.{jsonl,md}"
