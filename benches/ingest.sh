#!/usr/bin/env bash
# Ingest benchmark, side by side: the same node_exporter-like remote write
# load sent to Cairn, Prometheus and VictoriaMetrics, one system at a time.
# Each system is pinned to CPU 0 and the load generator to CPU 1, so the
# figures are per server core.
#
#   benches/ingest.sh [--targets N] [--rounds R] [--concurrency C]
#                     [--memory-targets M] [--systems "cairn prometheus victoriametrics"]
#                     [--out DIR]
#
# Throughput run: N targets x ~1,200 series x R rounds, 2,000-sample requests.
# Memory run: a fresh instance of each system receives M targets x 2 rounds
# (M=834 is about 1M series); RSS per active series is read from /proc.
# Environment: PROFILE (cargo profile, default release).
set -euo pipefail
cd "$(dirname "$0")/.."

targets=100 rounds=60 concurrency=4 memory_targets=834 out="" systems="cairn prometheus victoriametrics"
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) targets=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --memory-targets) memory_targets=$2; shift 2 ;;
    --systems) systems=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "ingest.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
profile=${PROFILE:-release}
work=$(mktemp -d)
out=${out:-$work}
mkdir -p "$out"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work/data-"*' EXIT

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
command -v taskset >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo build -q --profile "$profile" -p cairn -p cairn-benches
tdir=${CARGO_TARGET_DIR:-target}/$( [ "$profile" = dev ] && echo debug || echo "$profile")
cairn=$tdir/cairn loadgen=$tdir/loadgen

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start SYSTEM DIR -> sets pid and url
start() {
  local sys=$1 dir=$2 port
  port=$(free_port)
  mkdir -p "$dir"
  case "$sys" in
    cairn)
      taskset -c 0 "$cairn" all --data.dir="$dir" --http.listen-address=127.0.0.1:$port \
        --grpc.listen-address=127.0.0.1:$(free_port) --log.level=warn >"$dir.log" 2>&1 &
      url=http://127.0.0.1:$port/api/v1/push ready=http://127.0.0.1:$port/ready ;;
    prometheus)
      printf 'global:\n  scrape_interval: 1m\n' >"$dir.yml"
      taskset -c 0 prometheus --config.file="$dir.yml" --storage.tsdb.path="$dir" \
        --web.listen-address=127.0.0.1:$port --web.enable-remote-write-receiver >"$dir.log" 2>&1 &
      url=http://127.0.0.1:$port/api/v1/write ready=http://127.0.0.1:$port/-/ready ;;
    victoriametrics)
      taskset -c 0 victoria-metrics -storageDataPath="$dir" -httpListenAddr=127.0.0.1:$port \
        -retentionPeriod=1d >"$dir.log" 2>&1 &
      url=http://127.0.0.1:$port/api/v1/write ready=http://127.0.0.1:$port/health ;;
  esac
  pid=$!
  for _ in $(seq 1 300); do
    curl -sf "$ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "ingest.sh: $sys did not become ready; log:" >&2; cat "$dir.log" >&2; exit 1
}

stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }

results=$out/ingest-results.jsonl
: >"$results"
for sys in $systems; do
  echo "== $sys: throughput ($targets targets x $rounds rounds)" >&2
  start "$sys" "$work/data-$sys-tp"
  taskset -c 1 "$loadgen" --url "$url" --targets "$targets" --rounds "$rounds" \
    --concurrency "$concurrency" --pid "$pid" --name "$sys" | tee -a "$results"
  stop
  echo "== $sys: memory ($memory_targets targets x 2 rounds)" >&2
  start "$sys" "$work/data-$sys-mem"
  taskset -c 1 "$loadgen" --url "$url" --targets "$memory_targets" --rounds 2 \
    --concurrency "$concurrency" --pid "$pid" --name "$sys-memory" | tee -a "$results"
  sleep 5
  echo "{\"system\":\"$sys-memory-settled\",\"rss_bytes\":$(awk '/VmRSS/{print $2*1024}' /proc/$pid/status)}" | tee -a "$results"
  stop
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tp = {r["system"]: r for r in rows if "samples_per_sec" in r and not r["system"].endswith("-memory")}
mem = {r["system"][:-len("-memory")]: r for r in rows if r["system"].endswith("-memory")}
settled = {r["system"][:-len("-memory-settled")]: r for r in rows if r["system"].endswith("-memory-settled")}
print()
print("| system | samples/s (1 core) | CPU s per 1M samples | p99 request ms | series (memory run) | RSS bytes/series | rejected |")
print("|---|---|---|---|---|---|---|")
for s, r in tp.items():
    m = mem.get(s, {}); st = settled.get(s, {})
    series = m.get("series", 0) or 1
    rss = st.get("rss_bytes") or m.get("server_rss_bytes") or 0
    print(f"| {s} | {r['samples_per_sec']:,.0f} | {r['cpu_seconds_per_million_samples']} | {r['latency_ms_p99']} | {m.get('series',0):,} | {rss/series:,.0f} | {r['samples_rejected']+m.get('samples_rejected',0)} |")
PY
echo "results: $results" >&2
