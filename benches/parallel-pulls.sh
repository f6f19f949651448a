#!/usr/bin/env bash
# Parallel warm pulls of 8 distinct 256 MiB blobs from one registry: the
# aggregate MB/s of 1, 4 and 8 concurrent `curl` pulls (three rounds each)
# and the server's CPU seconds per GB served (from /proc/PID/stat).
#   benches/parallel-pulls.sh stowage   # target/release/stowage
#   benches/parallel-pulls.sh dist      # /usr/bin/docker-registry
# PORT (default 5403) must be free; everything lives in a temp dir.
set -euo pipefail
KIND="${1:?stowage or dist}"; PORT="${PORT:-5403}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STOWAGE="${STOWAGE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/stowage}"
W="$(mktemp -d "${TMPDIR:-/tmp}/parallel-pulls.XXXXXX")"
P=""
trap 'kill "$P" 2>/dev/null || true; rm -rf "$W"' EXIT
if [ "$KIND" = stowage ]; then
  "$STOWAGE" serve --listen 127.0.0.1:$PORT --data-dir $W/d --log-level warn > $W/log 2>&1 &
else
  cat > $W/dist.yml <<EOC
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/d}, delete: {enabled: true}, cache: {blobdescriptor: inmemory}}
http: {addr: 127.0.0.1:$PORT}
EOC
  /usr/bin/docker-registry serve $W/dist.yml > $W/log 2>&1 &
fi
P=$!; sleep 2
for i in $(seq 1 8); do
  head -c 268435456 /dev/urandom > $W/b
  D=sha256:$(sha256sum $W/b | cut -d' ' -f1); echo $D >> $W/digests
  L=$(curl -s -D - -o /dev/null -X POST http://127.0.0.1:$PORT/v2/p/blobs/uploads/ | grep -i ^location | tr -d '\r' | cut -d' ' -f2)
  case "$L" in http*) ;; *) L="http://127.0.0.1:$PORT$L";; esac
  case "$L" in *\?*) S='&';; *) S='?';; esac
  curl -s -o /dev/null -w "" -X PUT --data-binary @$W/b -H "Content-Type: application/octet-stream" "$L${S}digest=$D"
done
rm $W/b
mapfile -t DS < $W/digests
for d in "${DS[@]}"; do curl -s -o /dev/null http://127.0.0.1:$PORT/v2/p/blobs/$d; done  # warm
for n in 1 4 8; do
  best=0
  for r in 1 2 3; do
    t0=$(date +%s.%N); c0=$(awk '{print $14+$15}' /proc/$P/stat)
    pids=(); for i in $(seq 0 $((n-1))); do curl -s -o /dev/null http://127.0.0.1:$PORT/v2/p/blobs/${DS[$i]} & pids+=($!); done; wait "${pids[@]}"
    t1=$(date +%s.%N); c1=$(awk '{print $14+$15}' /proc/$P/stat)
    mbs=$(echo "$n*268.435456/($t1-$t0)" | bc -l); cpu=$(echo "($c1-$c0)/100/($n*0.268435456)" | bc -l)
    printf "%s streams=%d round=%d  %.0f MB/s  server cpu %.2f s/GB\n" $KIND $n $r $mbs $cpu
  done
done
echo "rss: $(grep VmHWM /proc/$P/status)"
