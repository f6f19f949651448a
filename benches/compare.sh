#!/usr/bin/env bash
# Runs the same stowage-bench workloads, in one run on this machine, against
#   1. the CNCF Distribution registry (Debian's docker-registry, 2.8.x),
#   2. a single Stowage node,
#   3. a 3-node Stowage cluster on loopback (skippable: CLUSTER=0),
# one after the other (each alone on the machine), then prints a table with
# Stowage/Distribution ratios and the targets' verdicts.
#
# Sizes come from the environment, so a quick run is possible:
#   BLOBS=1 BLOB_MIB=16 CLIENTS=4 DURATION=5 REAL_MIB=20 ROUNDS=2 benches/compare.sh
#
# BLOBS, BLOB_MIB, PATCH_MIB, CLIENTS, IMAGES (per client), DURATION (mixed,
# seconds), MANIFEST_SECS (each manifest-get phase), REAL_MIB, REAL_LAYERS
# and ROUNDS (the skopeo and docker workloads: image size in MiB, its layers,
# push and pull rounds), WORKLOADS (comma list or "all"), CLUSTER (0 skips
# the cluster), SKIP_BUILD=1 with STOWAGE=… and BENCH=… (use existing
# binaries), KEEP=1 (keep data and logs), port bases DIST_PORT,
# STOWAGE_PORT, CLUSTER_HTTP_BASE, CLUSTER_RPC_BASE, READY_TIMEOUT (seconds
# per server), DROP_CACHES (0 keeps the page cache before pull-large and
# before each real-client pull). skopeo and docker are used when they
# answer; a workload whose tool is missing says SKIPPED and has no rows.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

BLOBS="${BLOBS:-4}"
BLOB_MIB="${BLOB_MIB:-256}"
PATCH_MIB="${PATCH_MIB:-16}"
CLIENTS="${CLIENTS:-16}"
IMAGES="${IMAGES:-25}"
DURATION="${DURATION:-30}"
MANIFEST_SECS="${MANIFEST_SECS:-$(( DURATION < 10 ? DURATION : 10 ))}"
REAL_MIB="${REAL_MIB:-277}"
REAL_LAYERS="${REAL_LAYERS:-5}"
ROUNDS="${ROUNDS:-3}"
WORKLOADS="${WORKLOADS:-all}"
CLUSTER="${CLUSTER:-1}"
KEEP="${KEEP:-0}"
DIST_PORT="${DIST_PORT:-5300}"
STOWAGE_PORT="${STOWAGE_PORT:-5301}"
CLUSTER_HTTP_BASE="${CLUSTER_HTTP_BASE:-5310}"
CLUSTER_RPC_BASE="${CLUSTER_RPC_BASE:-6310}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
DIST_BIN=/usr/bin/docker-registry
CLUSTER_SKIPPED_MSG="SKIPPED: cluster mode not available in this build"

log() { echo "compare.sh: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ---- build ----
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building stowage and stowage-bench (release)"
  cargo build --release --bin stowage --bin stowage-bench >&2
fi
STOWAGE="${STOWAGE:-$TARGET_DIR/release/stowage}"
BENCH="${BENCH:-$TARGET_DIR/release/stowage-bench}"
for bin in "$STOWAGE" "$BENCH"; do
  [ -x "$bin" ] || { log "missing $bin"; exit 1; }
done

# ---- Distribution ----
if [ ! -x "$DIST_BIN" ]; then
  log "installing docker-registry from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  # The package's service is not enabled or used: the binary runs below
  # with its own config, on its own port.
  as_root apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
fi

# ---- processes and cleanup ----
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stowage-compare.XXXXXX")"
PIDS=()

# Stops a server we started (SIGTERM, then SIGKILL after 10 s); says so when
# it had already exited, since its results are then suspect.
stop_pid() {
  local pid="$1" status=0
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || status=$?
    log "process $pid had exited before it was stopped (status $status); its log is in $WORK (KEEP=1 keeps it)"
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
  stop_all
  if [ "$KEEP" = 1 ]; then
    log "kept data and logs in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Fails when something already listens on 127.0.0.1:PORT: the readiness
# check would otherwise find that server and measure it instead of ours.
require_free_port() {
  local port="$1"
  if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
    log "port $port is already in use; pick other ports (DIST_PORT, STOWAGE_PORT, CLUSTER_HTTP_BASE, CLUSTER_RPC_BASE)"
    exit 1
  fi
}

# Polls url until it answers 2xx, or fails after READY_TIMEOUT seconds (or
# as soon as the process behind it has exited).
wait_ready() {
  local url="$1" pid="$2" logfile="$3"
  local deadline=$(( $(date +%s) + READY_TIMEOUT ))
  until curl -fs -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "process $pid exited before $url answered; its log:"
      tail -n 30 "$logfile" >&2 || true
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$url not ready after ${READY_TIMEOUT}s; log:"
      tail -n 30 "$logfile" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  # Ready, and still ours (not a server that was there before).
  kill -0 "$pid" 2>/dev/null || { log "process $pid is gone"; return 1; }
}

# Every port is checked before the first run, so a collision does not
# waste the runs before it (and again just before each server starts).
ALL_PORTS=("$DIST_PORT" "$STOWAGE_PORT")
if [ "$CLUSTER" != 0 ]; then
  for n in 1 2 3; do
    ALL_PORTS+=("$((CLUSTER_HTTP_BASE + n))" "$((CLUSTER_RPC_BASE + n))")
  done
fi
for port in "${ALL_PORTS[@]}"; do
  require_free_port "$port"
done

BENCH_ARGS=(
  --json
  --blobs "$BLOBS" --blob-mib "$BLOB_MIB" --patch-mib "$PATCH_MIB"
  --clients "$CLIENTS" --images-per-client "$IMAGES"
  --duration-secs "$DURATION" --manifest-secs "$MANIFEST_SECS"
  --real-mib "$REAL_MIB" --real-layers "$REAL_LAYERS" --rounds "$ROUNDS"
  --workload "$WORKLOADS"
)
# pull-large reads from storage for every registry alike: the page cache is
# dropped first (root only), so a registry that just wrote through the
# cache is not measured against one that wrote around it. pull-large-warm
# repeats the pull with whatever the first pass cached. The skopeo and
# docker workloads drop it before each pull round.
if [ "${DROP_CACHES:-1}" = 1 ] && [ -w /proc/sys/vm/drop_caches ]; then
  BENCH_ARGS+=(--drop-caches)
else
  log "not dropping the page cache before pull-large (needs root; DROP_CACHES=0 disables)"
fi

# run_bench OUT_FILE PIDS TARGETS...
run_bench() {
  local out="$1" pids="$2"
  shift 2
  local args=("${BENCH_ARGS[@]}") pid target
  for pid in $pids; do args+=(--rss-pid "$pid"); done
  for target in "$@"; do args+=(--target "$target"); done
  # Errors in a workload are in its result (and fail the table's check);
  # the comparison goes on with the next registry.
  "$BENCH" "${args[@]}" >"$out" || log "stowage-bench reported errors (see above)"
}

# ---- 1. Distribution ----
mkdir -p "$WORK/dist-data"
cat >"$WORK/dist.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/dist-data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$DIST_PORT
EOF
require_free_port "$DIST_PORT"
log "Distribution $("$DIST_BIN" --version 2>/dev/null | awk '{print $NF}') on 127.0.0.1:$DIST_PORT"
"$DIST_BIN" serve "$WORK/dist.yml" >"$WORK/dist.log" 2>&1 &
DIST_PID=$!
PIDS+=("$DIST_PID")
wait_ready "http://127.0.0.1:$DIST_PORT/v2/" "$DIST_PID" "$WORK/dist.log"
run_bench "$WORK/dist.jsonl" "$DIST_PID" "http://127.0.0.1:$DIST_PORT"
stop_all

# ---- 2. Stowage, one node ----
require_free_port "$STOWAGE_PORT"
log "Stowage single node on 127.0.0.1:$STOWAGE_PORT"
"$STOWAGE" serve --listen "127.0.0.1:$STOWAGE_PORT" --data-dir "$WORK/stowage-data" \
  --log-level warn >"$WORK/stowage.log" 2>&1 &
STOWAGE_PID=$!
PIDS+=("$STOWAGE_PID")
wait_ready "http://127.0.0.1:$STOWAGE_PORT/v2/" "$STOWAGE_PID" "$WORK/stowage.log"
run_bench "$WORK/stowage.jsonl" "$STOWAGE_PID" "http://127.0.0.1:$STOWAGE_PORT"
stop_all

# ---- 3. Stowage, three nodes ----
TABLE_CLUSTER=()
if [ "$CLUSTER" = 0 ]; then
  log "cluster skipped (CLUSTER=0)"
elif ! "$STOWAGE" serve --help 2>/dev/null | grep -q -- '--cluster-listen'; then
  echo "$CLUSTER_SKIPPED_MSG"
  TABLE_CLUSTER=(--table "Stowage 3-node=$CLUSTER_SKIPPED_MSG")
else
  for n in 1 2 3; do
    require_free_port "$((CLUSTER_HTTP_BASE + n))"
    require_free_port "$((CLUSTER_RPC_BASE + n))"
  done
  zones=(a b c)
  targets=()
  cluster_pids=""
  for n in 1 2 3; do
    peers=()
    for m in 1 2 3; do
      [ "$m" = "$n" ] && continue
      peers+=(--peer "$m=${zones[$((m - 1))]}@127.0.0.1:$((CLUSTER_RPC_BASE + m))")
    done
    log "Stowage cluster node $n on 127.0.0.1:$((CLUSTER_HTTP_BASE + n))"
    "$STOWAGE" serve --node-id "$n" --zone "${zones[$((n - 1))]}" \
      --listen "127.0.0.1:$((CLUSTER_HTTP_BASE + n))" \
      --cluster-listen "127.0.0.1:$((CLUSTER_RPC_BASE + n))" \
      "${peers[@]}" --data-dir "$WORK/node$n" --log-level warn \
      >"$WORK/node$n.log" 2>&1 &
    PIDS+=("$!")
    cluster_pids="$cluster_pids $!"
    targets+=("http://127.0.0.1:$((CLUSTER_HTTP_BASE + n))")
  done
  i=0
  for pid in $cluster_pids; do
    i=$((i + 1))
    wait_ready "${targets[$((i - 1))]}/v2/" "$pid" "$WORK/node$i.log"
    wait_ready "${targets[$((i - 1))]}/readyz" "$pid" "$WORK/node$i.log"
  done
  run_bench "$WORK/cluster.jsonl" "$cluster_pids" "${targets[@]}"
  stop_all
  TABLE_CLUSTER=(--table "Stowage 3-node=$WORK/cluster.jsonl")
fi

# ---- table ----
RESULTS="$TARGET_DIR/bench-results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RESULTS"
cp "$WORK"/*.jsonl "$RESULTS"/
echo
echo "BLOBS=$BLOBS BLOB_MIB=$BLOB_MIB PATCH_MIB=$PATCH_MIB CLIENTS=$CLIENTS IMAGES=$IMAGES DURATION=$DURATION MANIFEST_SECS=$MANIFEST_SECS REAL_MIB=$REAL_MIB REAL_LAYERS=$REAL_LAYERS ROUNDS=$ROUNDS"
"$BENCH" --table "Distribution=$WORK/dist.jsonl" --table "Stowage=$WORK/stowage.jsonl" \
  "${TABLE_CLUSTER[@]}" | tee "$RESULTS/table.txt"
log "results kept in $RESULTS"
