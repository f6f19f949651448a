#!/usr/bin/env bash
# Push replication (issue #11) measured, in one run on this machine:
#   1. lag: a source Stowage node with a replication rule to a target
#      Stowage node; CLIENTS clients push IMAGES small images each
#      (push-many's images: 3 layers of 1-64 KiB, a config, a manifest with
#      a tag) as fast as they can ("burst"), then PACED_CLIENTS clients push
#      PACED_IMAGES each, one every PACE_MS ms ("paced"). For every tag:
#      the time from the source's 201 to its manifest PUT until a GET of
#      the tag on the target answers 200 with the same digest (polled every
#      POLL_MS ms). With CLUSTER=1 the same again with a 3-node source
#      cluster on loopback (pushes spread over its nodes; the leader
#      replicates).
#   2. large blobs: BIG_IMAGES images of one BIG_MIB MiB layer each, pushed
#      one after the other to a fresh source node with a rule to a fresh
#      target ("live": from the first push's 201 until every tag is on the
#      target); then, from the same source, each to a fresh target node of
#      its own: a rule added after the push (the rule's initial copy),
#      `skopeo copy` of each image, `stowage copy` of each image, and one
#      `stowage copy` of the whole repository. Every target is checked
#      after: each manifest by digest, each blob read back and hashed.
# Then prints markdown tables. Reported, never asserted: the exit status
# says only whether every step ran.
#
# Environment: CLIENTS (16), IMAGES (25 per client), PACED_CLIENTS (2),
# PACED_IMAGES (30), PACE_MS (250), POLL_MS (20), CLUSTER (1; 0 skips the
# cluster source), BIG_IMAGES (10), BIG_MIB (100), PORT_BASE (5460: the
# source on PORT_BASE, targets on PORT_BASE+1.., the cluster on
# PORT_BASE+10+n, its RPC on PORT_BASE+1010+n), LAG_TIMEOUT (120 s a lag
# run gives the target after its last push), STEP_TIMEOUT (600 s per
# command), MAX_SECS (1800: no command runs past it), DROP_CACHES (0; 1
# drops the page cache before each copy of the large images, root only),
# KEEP (0; 1 keeps the temp dir), SKIP_BUILD=1 with STOWAGE=… and
# REPL_BENCH=… (existing binaries), SKOPEO (/usr/bin/skopeo),
# SKOPEO_PRESERVE (1: skopeo copy --preserve-digests; 0 without), PERF (0; 1
# records the source node with perf during the burst and the rule's
# initial copy, and prints the top of each profile).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

CLIENTS="${CLIENTS:-16}"
IMAGES="${IMAGES:-25}"
PACED_CLIENTS="${PACED_CLIENTS:-2}"
PACED_IMAGES="${PACED_IMAGES:-30}"
PACE_MS="${PACE_MS:-250}"
POLL_MS="${POLL_MS:-20}"
CLUSTER="${CLUSTER:-1}"
BIG_IMAGES="${BIG_IMAGES:-10}"
BIG_MIB="${BIG_MIB:-100}"
PORT_BASE="${PORT_BASE:-5460}"
LAG_TIMEOUT="${LAG_TIMEOUT:-120}"
STEP_TIMEOUT="${STEP_TIMEOUT:-600}"
MAX_SECS="${MAX_SECS:-1800}"
DROP_CACHES="${DROP_CACHES:-0}"
KEEP="${KEEP:-0}"
PERF="${PERF:-0}"
SKOPEO="${SKOPEO:-/usr/bin/skopeo}"
SKOPEO_PRESERVE="${SKOPEO_PRESERVE:-1}"
READY_TIMEOUT=60
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
RUN_ID="$(date +%H%M%S)-$$"

log() { echo "replication-vs-skopeo.sh: $*" >&2; }
die() { log "$*"; exit 1; }

for tool in curl jq timeout awk; do
  command -v "$tool" >/dev/null || die "needs $tool"
done
[ -x "$SKOPEO" ] || die "no skopeo at $SKOPEO (Debian: apt-get install skopeo)"

# ---- build ----
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building stowage and stowage-repl-bench (release)"
  cargo build --release -p stowage-node -p stowage-benches --bin stowage --bin stowage-repl-bench >&2
fi
STOWAGE="${STOWAGE:-$TARGET_DIR/release/stowage}"
REPL_BENCH="${REPL_BENCH:-$TARGET_DIR/release/stowage-repl-bench}"
for bin in "$STOWAGE" "$REPL_BENCH"; do
  [ -x "$bin" ] || die "missing $bin"
done
STARTED_AT="$(date +%s)"

# ---- processes and cleanup ----
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stowage-repl-bench.XXXXXX")"
OUT="$WORK/out"
mkdir -p "$OUT"
PIDS=()
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

step_timeout() {
  local left=$(( MAX_SECS - ($(date +%s) - STARTED_AT) ))
  if [ "$left" -le 0 ]; then die "over MAX_SECS=$MAX_SECS before $1"; fi
  echo $(( left < STEP_TIMEOUT ? left : STEP_TIMEOUT ))
}

require_free_port() {
  if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; then
    die "port $1 is already in use (PORT_BASE=$PORT_BASE)"
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

now_ns() { date +%s%N; }
secs_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }

CLK_TCK="$(getconf CLK_TCK)"
cpu_of() { # CPU seconds (user + system) process $1 has used so far
  sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk -v hz="$CLK_TCK" '{ printf "%.2f", ($12 + $13) / hz }'
}
TIME_BIN=""
[ -x /usr/bin/time ] && TIME_BIN=/usr/bin/time

drop_caches() {
  if [ "$DROP_CACHES" = 1 ] && [ -w /proc/sys/vm/drop_caches ]; then
    sync
    echo 3 >/proc/sys/vm/drop_caches
  fi
}

RESULTS="$OUT/results.jsonl"
record() { # record NAME JSON: one line {"step": NAME, ...JSON}
  jq -c --arg step "$1" '{step: $step} + .' <<<"$2" >>"$RESULTS"
}

# start_node NAME PORT [serve flags...]: a single node on PORT with its own
# data dir; sets NODE_PID.
start_node() {
  local name="$1" port="$2"
  shift 2
  require_free_port "$port"
  "$STOWAGE" serve --listen "127.0.0.1:$port" --data-dir "$WORK/$name" --log-level warn "$@" \
    >"$OUT/$name.log" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  wait_ready "http://127.0.0.1:$port/v2/" "$NODE_PID" "$OUT/$name.log"
}

# start_cluster NAME: 3 nodes (zones a, b, c) on PORT_BASE+10+n; sets
# CLUSTER_URLS and CLUSTER_PIDS.
start_cluster() {
  local name="$1" n m zones=(a b c) peers
  CLUSTER_URLS=()
  CLUSTER_PIDS=()
  for n in 1 2 3; do
    require_free_port "$((PORT_BASE + 10 + n))"
    require_free_port "$((PORT_BASE + 1010 + n))"
  done
  for n in 1 2 3; do
    peers=()
    for m in 1 2 3; do
      [ "$m" = "$n" ] && continue
      peers+=(--peer "$m=${zones[$((m - 1))]}@127.0.0.1:$((PORT_BASE + 1010 + m))")
    done
    "$STOWAGE" serve --node-id "$n" --zone "${zones[$((n - 1))]}" \
      --listen "127.0.0.1:$((PORT_BASE + 10 + n))" \
      --cluster-listen "127.0.0.1:$((PORT_BASE + 1010 + n))" \
      "${peers[@]}" --data-dir "$WORK/$name-$n" --log-level warn \
      >"$OUT/$name-$n.log" 2>&1 &
    PIDS+=("$!")
    CLUSTER_PIDS+=("$!")
    CLUSTER_URLS+=("http://127.0.0.1:$((PORT_BASE + 10 + n))")
  done
  for n in 0 1 2; do
    wait_ready "${CLUSTER_URLS[$n]}/v2/" "${CLUSTER_PIDS[$n]}" "$OUT/$name-$((n + 1)).log"
    wait_ready "${CLUSTER_URLS[$n]}/readyz" "${CLUSTER_PIDS[$n]}" "$OUT/$name-$((n + 1)).log"
  done
}

# add_rule NODE NAME TARGET GLOB: adds the rule.
add_rule() {
  local node="$1" name="$2" target="$3" glob="$4"
  timeout 30 "$STOWAGE" replication add "$name" --target "$target" --repositories "$glob" \
    --node "$node" --json >"$OUT/rule-$name.json" 2>&1 || { cat "$OUT/rule-$name.json" >&2; die "replication add $name failed"; }
}
# wait_rule_started NODE NAME: until the rule's first step (the initial
# copy of what matches) is done: cursor > 0.
wait_rule_started() {
  local node="$1" name="$2" deadline=$(( $(date +%s) + 60 )) cursor=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    # Any node answers; the leader's answer has the work's status.
    cursor="$(curl -fs --max-time 2 "$node/_stowage/replication" \
      | jq -r --arg n "$name" '[.rules[] | select(.rule.name == $n) | .cursor][0] // 0' 2>/dev/null || echo 0)"
    [ "${cursor:-0}" -gt 0 ] && return 0
    sleep 0.1
  done
  die "rule $name did not start within 60 s"
}

# The replicator's own account of failures, from the source's log.
repl_warnings() { # repl_warnings LOGFILE...
  cat "$@" 2>/dev/null | grep -c 'replication failed' || true
}

# Server-side request times from a node's /metrics: scrape NODE FILE, then
# metrics_delta BEFORE AFTER prints "endpoint method count mean total" for
# every endpoint that answered in between (an empty BEFORE: since start).
scrape() { curl -fs --max-time 5 "$1/metrics" >"$2" 2>/dev/null || : >"$2"; }
metrics_delta() {
  awk '
    $1 !~ /^stowage_http_request_duration_seconds_(sum|count)[{]/ { next }
    FILENAME == ARGV[1] { b[$1] = $2; next }
    { a[$1] = $2 }
    END {
      for (k in a) if (k ~ /_sum[{]/) {
        c = k; sub(/_sum[{]/, "_count{", c)
        n = a[c] - b[c]; s = a[k] - b[k]
        if (n > 0) {
          l = k; sub(/^[^{]*[{]/, "", l); sub(/[}]$/, "", l); gsub(/"/, "", l); gsub(/,/, " ", l)
          printf "  %-40s %7d requests, mean %8.2f ms, total %7.3f s\n", l, n, s / n * 1000, s
        }
      }
    }' "$1" "$2" | sort
}
# server_times NAME BEFORE AFTER: saves the delta as $OUT/server-NAME.txt
server_times() { metrics_delta "$2" "$3" >"$OUT/server-$1.txt"; }

perf_start() { # perf_start PID NAME
  if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
    perf record -g -o "$OUT/perf-$2.data" -p "$1" >/dev/null 2>"$OUT/perf-$2.err" &
    PERF_PID=$!
  fi
}
perf_stop() { # perf_stop NAME
  if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    perf report -i "$OUT/perf-$1.data" --no-children --stdio 2>/dev/null \
      | grep -E '^ +[0-9.]+%' | head -n 25 >"$OUT/perf-$1.txt" || true
  fi
}

# lag_run NAME TARGET_URL STATUS_NODES CLIENTS IMAGES PACE_MS SOURCES...
lag_run() {
  local name="$1" target="$2" status="$3" clients="$4" images="$5" pace="$6"
  shift 6
  local args=() s
  for s in "$@"; do args+=(--source "$s"); done
  for s in $status; do args+=(--status "$s"); done
  log "lag/$name: $clients clients x $images images, pace ${pace} ms, to $*"
  timeout "$(step_timeout "lag $name")" "$REPL_BENCH" lag "${args[@]}" --target "$target" \
    --clients "$clients" --images-per-client "$images" --pace-ms "$pace" --poll-ms "$POLL_MS" \
    --timeout-secs "$LAG_TIMEOUT" --repo-prefix "lag/$name-$RUN_ID" --seed "$RANDOM$RANDOM" \
    --out "$OUT/lag-$name.tags.jsonl" --status-out "$OUT/lag-$name.status.jsonl" \
    >"$OUT/lag-$name.json" 2>"$OUT/lag-$name.err" || { tail -n 20 "$OUT/lag-$name.err" >&2; die "lag $name failed"; }
  record "lag-$name" "$(cat "$OUT/lag-$name.json")"
  log "lag/$name: $(jq -c '{push_images_per_s, lag_p50_ms, lag_p99_ms, lag_max_ms, repl_images_per_s, missing, wrong_digest, push_errors}' "$OUT/lag-$name.json")"
}

# ---- 1. lag, single-node source ----
SRC_PORT="$PORT_BASE"
SRC="http://127.0.0.1:$SRC_PORT"
log "Stowage $("$STOWAGE" --version 2>/dev/null || echo '?'), $("$SKOPEO" --version); work dir $WORK"
start_node lag-src "$SRC_PORT"
LAG_SRC_PID="$NODE_PID"
start_node lag-dst "$((PORT_BASE + 1))"
add_rule "$SRC" lag "http://127.0.0.1:$((PORT_BASE + 1))" 'lag/**'
wait_rule_started "$SRC" lag
perf_start "$LAG_SRC_PID" lag-burst
scrape "http://127.0.0.1:$((PORT_BASE + 1))" "$OUT/m0-dst"
scrape "$SRC" "$OUT/m0-src"
lag_run single-burst "http://127.0.0.1:$((PORT_BASE + 1))" "$SRC" "$CLIENTS" "$IMAGES" 0 "$SRC"
scrape "http://127.0.0.1:$((PORT_BASE + 1))" "$OUT/m1-dst"
scrape "$SRC" "$OUT/m1-src"
server_times single-burst-target "$OUT/m0-dst" "$OUT/m1-dst"
server_times single-burst-source "$OUT/m0-src" "$OUT/m1-src"
perf_stop lag-burst
lag_run single-paced "http://127.0.0.1:$((PORT_BASE + 1))" "$SRC" "$PACED_CLIENTS" "$PACED_IMAGES" "$PACE_MS" "$SRC"
record lag-single-warnings "{\"replication_failed_warnings\": $(repl_warnings "$OUT/lag-src.log")}"
stop_all

# ---- 1b. lag, 3-node source ----
if [ "$CLUSTER" = 1 ]; then
  start_cluster lagc
  start_node lagc-dst "$((PORT_BASE + 2))"
  add_rule "${CLUSTER_URLS[0]}" lag "http://127.0.0.1:$((PORT_BASE + 2))" 'lag/**'
  wait_rule_started "${CLUSTER_URLS[0]}" lag
  scrape "http://127.0.0.1:$((PORT_BASE + 2))" "$OUT/m0-dst"
  lag_run cluster-burst "http://127.0.0.1:$((PORT_BASE + 2))" "${CLUSTER_URLS[*]}" "$CLIENTS" "$IMAGES" 0 "${CLUSTER_URLS[@]}"
  scrape "http://127.0.0.1:$((PORT_BASE + 2))" "$OUT/m1-dst"
  server_times cluster-burst-target "$OUT/m0-dst" "$OUT/m1-dst"
  lag_run cluster-paced "http://127.0.0.1:$((PORT_BASE + 2))" "${CLUSTER_URLS[*]}" "$PACED_CLIENTS" "$PACED_IMAGES" "$PACE_MS" "${CLUSTER_URLS[@]}"
  record lag-cluster-warnings "{\"replication_failed_warnings\": $(repl_warnings "$OUT"/lagc-[123].log)}"
  stop_all
fi

# ---- 2. large blobs ----
BIG_REPO="big/img-$RUN_ID"
IMAGES_FILE="$OUT/big-images.jsonl"
start_node big-src "$SRC_PORT"
BIG_SRC_PID="$NODE_PID"
start_node big-live "$((PORT_BASE + 3))"
LIVE_PID="$NODE_PID"
add_rule "$SRC" live "http://127.0.0.1:$((PORT_BASE + 3))" 'big/*'
wait_rule_started "$SRC" live
log "big/live: pushing $BIG_IMAGES images of $BIG_MIB MiB with the rule in place"
timeout "$(step_timeout "big live")" "$REPL_BENCH" big --source "$SRC" --target "http://127.0.0.1:$((PORT_BASE + 3))" \
  --images "$BIG_IMAGES" --layer-mib "$BIG_MIB" --repo "$BIG_REPO" --seed "$RANDOM$RANDOM" \
  --images-file "$IMAGES_FILE" --poll-ms "$POLL_MS" --out "$OUT/big-live.tags.jsonl" \
  >"$OUT/big-live.json" 2>"$OUT/big-live.err" || { tail -n 20 "$OUT/big-live.err" >&2; die "big live failed"; }
record big-live "$(cat "$OUT/big-live.json")"
BIG_BYTES="$(jq '.bytes' "$OUT/big-live.json")"
log "big/live: $(jq -c '{push_mb_per_s, repl_mb_per_s, repl_secs, lag_p50_ms, lag_max_ms, missing}' "$OUT/big-live.json")"

declare -A SECS CPU VERIFY
verify_target() { # verify_target NAME URL
  timeout "$(step_timeout "verify $1")" "$REPL_BENCH" verify --target "$2" --images-file "$IMAGES_FILE" --blobs \
    >"$OUT/verify-$1.json" 2>"$OUT/verify-$1.err" || true
  VERIFY[$1]="$(jq -r '"\(.ok)/\(.images) tags, \(.blobs_ok) blobs ok, \(.blobs_bad) bad"' "$OUT/verify-$1.json" 2>/dev/null || echo "verify failed")"
  record "verify-$1" "$(cat "$OUT/verify-$1.json" 2>/dev/null || echo '{}')"
  log "verify $1: ${VERIFY[$1]}"
}
scrape "http://127.0.0.1:$((PORT_BASE + 3))" "$OUT/m1-dst"
server_times live-target /dev/null "$OUT/m1-dst"
verify_target live "http://127.0.0.1:$((PORT_BASE + 3))"
stop_pid "$LIVE_PID"
PIDS=("$BIG_SRC_PID")

# timed_copy NAME PORT CMD...: a fresh target on PORT, the page cache
# dropped (DROP_CACHES=1), then CMD timed (CMD sees the target's URL as
# $DST); CPU = the command's + the source's + the target's meanwhile.
timed_copy() {
  local name="$1" port="$2" t0 t1 c0s c0d c1s c1d status=0 tool_cpu=0 wrap=()
  shift 2
  start_node "dst-$name" "$port"
  local dst_pid="$NODE_PID"
  DST="127.0.0.1:$port"
  drop_caches
  [ -n "$TIME_BIN" ] && wrap=("$TIME_BIN" -a -f '%U %S' -o "$OUT/$name.time")
  : >"$OUT/$name.time"
  scrape "$SRC" "$OUT/m0-src"
  c0s="$(cpu_of "$BIG_SRC_PID")"; c0d="$(cpu_of "$dst_pid")"
  t0="$(now_ns)"
  "$@" || status=$?
  t1="$(now_ns)"
  c1s="$(cpu_of "$BIG_SRC_PID")"; c1d="$(cpu_of "$dst_pid")"
  [ "$status" -eq 0 ] || die "$name failed (status $status)"
  scrape "$SRC" "$OUT/m1-src"
  scrape "http://$DST" "$OUT/m1-dst"
  server_times "$name-source" "$OUT/m0-src" "$OUT/m1-src"
  server_times "$name-target" /dev/null "$OUT/m1-dst"
  tool_cpu="$(awk '{ s += $1 + $2 } END { printf "%.2f", s }' "$OUT/$name.time")"
  SECS[$name]="$(secs_between "$t0" "$t1")"
  CPU[$name]="$(awk -v a="$c0s" -v b="$c1s" -v c="$c0d" -v d="$c1d" -v t="$tool_cpu" 'BEGIN { printf "%.2f", (b - a) + (d - c) + t }')"
  log "$name: ${SECS[$name]} s, ${CPU[$name]} CPU s (tool $tool_cpu)"
  verify_target "$name" "http://$DST"
  record "$name" "{\"secs\": ${SECS[$name]}, \"cpu_secs\": ${CPU[$name]}, \"tool_cpu_secs\": $tool_cpu, \"bytes\": $BIG_BYTES}"
  stop_pid "$dst_pid"
  PIDS=("$BIG_SRC_PID")
}

TAGS=()
for i in $(seq 0 $((BIG_IMAGES - 1))); do TAGS+=("img-$i"); done

# The rule's initial copy: a rule added now copies what the repository
# holds, then follows the log. Timed from the add until every tag is there.
initial_copy() {
  local dst="http://$DST" t0
  perf_start "$BIG_SRC_PID" initial
  t0="$(date +%s%3N)"
  timeout 30 "$STOWAGE" replication add initial --target "$dst" --repositories 'big/*' --node "$SRC" --json \
    >"$OUT/rule-initial.json" 2>&1 || return 1
  timeout "$(step_timeout "initial copy")" "$REPL_BENCH" wait --target "$dst" --images-file "$IMAGES_FILE" \
    --poll-ms "$POLL_MS" >"$OUT/initial-wait.json" 2>"$OUT/initial-wait.err" || return 1
  perf_stop initial
  # When the first tag arrived (the worker rests up to a second between
  # steps) and the pace from the first tag to the last.
  record rule-initial-detail "$(jq -c --argjson t0 "$t0" --argjson b "$BIG_BYTES" --argjson n "$BIG_IMAGES" '
    [.tags[].unix_ms] | sort | {first_tag_ms: (.[0] - $t0), last_tag_ms: (.[-1] - $t0),
      first_to_last_mb_per_s: (if length > 1 and .[-1] > .[0] then ($b / $n * (length - 1)) / ((.[-1] - .[0]) / 1000) / 1e6 else null end)}' \
    "$OUT/initial-wait.json")"
  [ "$(jq '.missing' "$OUT/initial-wait.json")" = 0 ]
}
# the rule stays, idle, while the other copies run: remove it first.
timed_copy rule-initial "$((PORT_BASE + 4))" initial_copy
timeout 30 "$STOWAGE" replication remove initial --node "$SRC" --json >/dev/null 2>&1 || log "could not remove rule initial"
timeout 30 "$STOWAGE" replication remove live --node "$SRC" --json >/dev/null 2>&1 || log "could not remove rule live"

SKOPEO_FLAGS=()
[ "$SKOPEO_PRESERVE" = 1 ] && SKOPEO_FLAGS=(--preserve-digests)
skopeo_each() {
  local tag
  for tag in "${TAGS[@]}"; do
    timeout "$(step_timeout skopeo)" "${wrap[@]}" "$SKOPEO" --insecure-policy copy "${SKOPEO_FLAGS[@]}" \
      --src-tls-verify=false --dest-tls-verify=false \
      "docker://127.0.0.1:$SRC_PORT/$BIG_REPO:$tag" "docker://$DST/$BIG_REPO:$tag" \
      >>"$OUT/skopeo.out" 2>>"$OUT/skopeo.err" || { tail -n 5 "$OUT/skopeo.err" >&2; return 1; }
  done
}
stowage_copy_each() {
  local tag
  for tag in "${TAGS[@]}"; do
    timeout "$(step_timeout "stowage copy")" "${wrap[@]}" "$STOWAGE" copy --json \
      "http://127.0.0.1:$SRC_PORT/$BIG_REPO:$tag" "http://$DST/$BIG_REPO:$tag" \
      >>"$OUT/copy-each.out" 2>>"$OUT/copy-each.err" || { tail -n 5 "$OUT/copy-each.err" >&2; return 1; }
  done
}
stowage_copy_repo() {
  timeout "$(step_timeout "stowage copy repo")" "${wrap[@]}" "$STOWAGE" copy --json \
    "http://127.0.0.1:$SRC_PORT/$BIG_REPO" "http://$DST/$BIG_REPO" \
    >"$OUT/copy-repo.out" 2>"$OUT/copy-repo.err" || { tail -n 5 "$OUT/copy-repo.err" >&2; return 1; }
}
timed_copy skopeo "$((PORT_BASE + 5))" skopeo_each
timed_copy copy-each "$((PORT_BASE + 6))" stowage_copy_each
timed_copy copy-repo "$((PORT_BASE + 7))" stowage_copy_repo
record big-warnings "{\"replication_failed_warnings\": $(repl_warnings "$OUT/big-src.log")}"
stop_all

# ---- tables ----
TABLE="$OUT/table.md"
f1() { awk -v x="$1" 'BEGIN { if (x == "" || x == "null") printf "-"; else printf "%.0f", x }'; }
f2() { awk -v x="$1" 'BEGIN { if (x == "" || x == "null") printf "-"; else printf "%.1f", x }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", b / s / 1e6; else printf "-" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a > 0) printf "%.2fx", a / b; else printf "-" }'; }
{
  echo "| source | workload | images | push images/s | lag p50 ms | lag p90 ms | lag p99 ms | lag max ms | replicated images/s | same, after the pushes | last tag, after the last push s | missing |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for run in single-burst single-paced cluster-burst cluster-paced; do
    f="$OUT/lag-$run.json"
    [ -s "$f" ] || continue
    src="${run%%-*}"; [ "$src" = single ] && src="1 node" || src="3 nodes"
    wl="${run#*-}"
    [ "$wl" = burst ] && wl="burst, $CLIENTS clients" || wl="paced, $PACED_CLIENTS x 1 per ${PACE_MS} ms"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$src" "$wl" \
      "$(jq '.tags' "$f")" "$(f2 "$(jq '.push_images_per_s' "$f")")" \
      "$(f1 "$(jq '.lag_p50_ms' "$f")")" "$(f1 "$(jq '.lag_p90_ms' "$f")")" \
      "$(f1 "$(jq '.lag_p99_ms' "$f")")" "$(f1 "$(jq '.lag_max_ms' "$f")")" \
      "$(f2 "$(jq '.repl_images_per_s' "$f")")" "$(f2 "$(jq '.drain_images_per_s' "$f")")" \
      "$(awk -v x="$(jq '.drain_ms' "$f")" 'BEGIN { printf "%.2f", x / 1000 }')" \
      "$(jq '.missing + .wrong_digest' "$f")"
  done
  echo
  SK="${SECS[skopeo]}"
  echo "| $BIG_IMAGES x $BIG_MIB MiB, source to a fresh target | s | MB/s | ratio | CPU s | checked on the target |"
  echo "|---|---:|---:|---:|---:|---|"
  printf '| skopeo copy, one image at a time | %s | %s | 1.00x | %s | %s |\n' "$SK" "$(mbps "$BIG_BYTES" "$SK")" "${CPU[skopeo]}" "${VERIFY[skopeo]}"
  for m in copy-each copy-repo rule-initial; do
    case "$m" in
      copy-each) label="stowage copy, one image at a time" ;;
      copy-repo) label="stowage copy, the repository (every tag)" ;;
      rule-initial) label="replication, rule added after the push" ;;
    esac
    printf '| %s | %s | %s | %s | %s | %s |\n' "$label" "${SECS[$m]}" "$(mbps "$BIG_BYTES" "${SECS[$m]}")" \
      "$(ratio "$SK" "${SECS[$m]}")" "${CPU[$m]}" "${VERIFY[$m]}"
  done
  live="$(jq '.repl_secs // 0' "$OUT/big-live.json")"
  printf '| replication, live (first push 201 to last tag on the target) | %.3f | %s | %s | - | %s |\n' "$live" \
    "$(mbps "$BIG_BYTES" "$live")" "$(ratio "$SK" "$live")" "${VERIFY[live]}"
} >"$TABLE"

echo
cat "$TABLE"
cat <<EOF

lag: from the source's 201 to the manifest PUT until a GET of the tag on the target answers with the same digest (polled every $POLL_MS ms: up to that much too high); "replicated images/s" = tags visible / (last visible - first 201); "after the pushes": the tags that became visible after the last 201, over that time (the replicator without the push load)
large: MB/s = $BIG_BYTES bytes (layers, configs, manifests) over the time; ratio = skopeo's time / this one's (above 1: Stowage faster); CPU s = the tool's + the source node's + the target node's over the copy
rule added after the push: $(jq -r 'select(.step == "rule-initial-detail") | "first tag on the target \(.first_tag_ms) ms after the add, last \(.last_tag_ms) ms; \(.first_to_last_mb_per_s | floor) MB/s from the first tag to the last"' "$RESULTS")
live push of the large images: $(jq -r '"\(.push_mb_per_s | floor) MB/s to the source (\(.push_secs * 1000 | floor) ms), per-image lag p50 \(.lag_p50_ms | floor) ms, max \(.lag_max_ms | floor) ms"' "$OUT/big-live.json")
skopeo: $("$SKOPEO" --version) with ${SKOPEO_FLAGS[*]:-no --preserve-digests} (layers are uncompressed tar: without --preserve-digests skopeo gzips them on the way, and the digests on the target differ); page cache dropped before each copy: $([ "$DROP_CACHES" = 1 ] && [ -w /proc/sys/vm/drop_caches ] && echo yes || echo no)
"replication failed" warnings in the source logs: $(jq -r 'select(.step | endswith("warnings")) | "\(.step) \(.replication_failed_warnings)"' "$RESULTS" | tr '\n' ' ')
machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)
EOF
echo
echo "server-side request times (each node's /metrics: time to the answer's head), per run:"
for f in "$OUT"/server-*.txt; do
  [ -s "$f" ] || continue
  echo "$(basename "$f" .txt | sed 's/^server-//'):"; cat "$f"
done
for f in "$OUT"/perf-*.txt; do
  [ -s "$f" ] || continue
  echo; echo "$(basename "$f" .txt) (perf report --no-children, top):"; cat "$f"
done

SAVE="$TARGET_DIR/bench-results/$(date +%Y-%m-%d)"
mkdir -p "$SAVE"
stamp="$(date +%H%M%S)"
cp "$RESULTS" "$SAVE/replication-vs-skopeo-$stamp.jsonl"
cp "$TABLE" "$SAVE/replication-vs-skopeo-$stamp.md"
for f in "$OUT"/*.tags.jsonl "$OUT"/lag-*.status.jsonl "$OUT"/server-*.txt; do
  [ -s "$f" ] && cp "$f" "$SAVE/replication-vs-skopeo-$stamp-$(basename "$f")"
done
log "saved $SAVE/replication-vs-skopeo-$stamp.{jsonl,md} (and the per-tag lags)"
