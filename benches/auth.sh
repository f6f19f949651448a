#!/usr/bin/env bash
# The cost of access control per request, in one run on this machine:
# manifest-get (by tag, then by digest) against a Stowage node with no
# accounts (the anchor), then against a node with accounts where every
# request carries a bearer token from the token endpoint (the client logs
# in as docker does: a 401 names the scope, it fetches a token, keeps it
# per repository). Prints the table with the ratio to the anchor.
#
#   CLIENTS=16 MANIFEST_SECS=10 benches/auth.sh
#
# CLIENTS, MANIFEST_SECS, SKIP_BUILD=1 with STOWAGE=… and BENCH=…, KEEP=1,
# OPEN_PORT, AUTH_PORT, READY_TIMEOUT (seconds per node).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CLIENTS="${CLIENTS:-16}"
MANIFEST_SECS="${MANIFEST_SECS:-10}"
OPEN_PORT="${OPEN_PORT:-5401}"
AUTH_PORT="${AUTH_PORT:-5402}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
KEEP="${KEEP:-0}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

log() { echo "auth.sh: $*" >&2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building stowage and stowage-bench (release)"
  cargo build --release --bin stowage --bin stowage-bench >&2
fi
STOWAGE="${STOWAGE:-$TARGET_DIR/release/stowage}"
BENCH="${BENCH:-$TARGET_DIR/release/stowage-bench}"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_up() {
  local url="$1" deadline=$((SECONDS + READY_TIMEOUT))
  until curl -s -o /dev/null "$url/healthz"; do
    [ "$SECONDS" -lt "$deadline" ] || { log "$url did not come up"; exit 1; }
    sleep 0.2
  done
}

echo "bench-admin-password" >"$WORK/admin.pw"
"$STOWAGE" serve --listen "127.0.0.1:$OPEN_PORT" --data-dir "$WORK/open" --log-level warn &
PIDS+=($!)
"$STOWAGE" serve --listen "127.0.0.1:$AUTH_PORT" --data-dir "$WORK/auth" --log-level warn \
  --admin-password-file "$WORK/admin.pw" &
PIDS+=($!)
wait_up "http://127.0.0.1:$OPEN_PORT"
wait_up "http://127.0.0.1:$AUTH_PORT"
# The bootstrap admin exists once a Basic login works.
deadline=$((SECONDS + READY_TIMEOUT))
until [ "$(curl -s -o /dev/null -w '%{http_code}' -u admin:bench-admin-password \
  "http://127.0.0.1:$AUTH_PORT/v2/")" = 200 ]; do
  [ "$SECONDS" -lt "$deadline" ] || { log "the admin account never worked"; exit 1; }
  sleep 0.2
done

common=(--workload manifest-get --clients "$CLIENTS" --manifest-secs "$MANIFEST_SECS" --no-machine --json)
log "auth off (anchor)"
"$BENCH" --target "http://127.0.0.1:$OPEN_PORT" "${common[@]}" >"$WORK/open.jsonl"
log "auth on: bearer tokens"
"$BENCH" --target "http://127.0.0.1:$AUTH_PORT" --login "admin:$WORK/admin.pw" "${common[@]}" \
  >"$WORK/auth.jsonl"
"$BENCH" --table "auth off=$WORK/open.jsonl" --table "token auth=$WORK/auth.jsonl"
