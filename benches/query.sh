#!/usr/bin/env bash
# Query benchmark, side by side: the same data remote-written into Cairn and
# Prometheus, then the same range queries against both, one system at a time
# (each pinned to CPU 0, the client on CPU 1).
#
#   benches/query.sh [--targets N] [--hours H] [--runs R] [--out DIR]
#
# Data: N node_exporter-like targets (~1,160 series each; N=9 is ~10K
# series) scraped every 15 s for H hours. Queries: benches/src/bin/querybench.rs,
# over the last H hours minus 10 minutes at a 30 s step. Environment:
# PROFILE (cargo profile, default release).
set -euo pipefail
cd "$(dirname "$0")/.."

targets=9 hours=6 runs=5 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) targets=$2; shift 2 ;;
    --hours) hours=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "query.sh: unknown argument $1" >&2; exit 2 ;;
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
command -v taskset >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo build -q --profile "$profile" -p cairn -p cairn-benches
tdir=${CARGO_TARGET_DIR:-target}/$( [ "$profile" = dev ] && echo debug || echo "$profile")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rounds=$((hours * 240))
now_ms=$(date +%s%3N)
# Samples half a step off the 15 s grid, queries (and subquery steps) on
# it, so that no range window ends exactly on a sample: Prometheus 2 closes
# windows on the left, Cairn like Prometheus 3 does not.
data_start=$(( (now_ms - rounds * 15000) / 60000 * 60000 + 7500 ))
# The extra 15 s keeps outer windows off the subquery's minute grid too.
q_start=$(( data_start - 7500 + 600000 + 15000 ))
q_end=$(( data_start - 7500 + (rounds - 1) * 15000 ))

results=$out/query-results.jsonl
: >"$results"
for sys in cairn prometheus; do
  port=$(free_port) dir=$work/data-$sys
  mkdir -p "$dir"
  case "$sys" in
    cairn)
      taskset -c 0 "$tdir/cairn" all --data.dir="$dir" --http.listen-address=127.0.0.1:$port \
        --grpc.listen-address=127.0.0.1:$(free_port) --log.level=warn >"$dir.log" 2>&1 &
      write=/api/v1/push ready=/ready ;;
    prometheus)
      printf 'global:\n  scrape_interval: 1m\n' >"$dir.yml"
      # Blocks of a day keep all the data in the head while it is written:
      # older samples would otherwise fall behind the head's cut and be
      # refused as out of bounds. Both systems then answer from memory.
      taskset -c 0 prometheus --config.file="$dir.yml" --storage.tsdb.path="$dir" \
        --storage.tsdb.min-block-duration=24h --storage.tsdb.max-block-duration=24h \
        --web.listen-address=127.0.0.1:$port --web.enable-remote-write-receiver >"$dir.log" 2>&1 &
      write=/api/v1/write ready=/-/ready ;;
  esac
  pid=$!
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port$ready" >/dev/null 2>&1 && break; sleep 0.1; done
  echo "== $sys: loading $targets targets x $rounds rounds" >&2
  taskset -c 1 "$tdir/loadgen" --url "http://127.0.0.1:$port$write" --targets "$targets" --rounds "$rounds" \
    --start-ms "$data_start" --concurrency 4 --pid "$pid" --name "$sys-load" >>"$results"
  sleep 5
  echo "== $sys: querying" >&2
  taskset -c 1 "$tdir/querybench" --url "http://127.0.0.1:$port" --start-ms "$q_start" --end-ms "$q_end" \
    --step 30 --runs "$runs" --name "$sys" | tee -a "$results"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
q = {r["system"]: {x["query"]: x for x in r["queries"]} for r in rows if "queries" in r}
load = {r["system"]: r for r in rows if "samples_acked" in r}
for s, r in load.items():
    print(f"{s}: {r['samples_acked']:,} samples of {r['series']:,} series loaded")
c, p = q["cairn"], q["prometheus"]
print()
print("| query | Cairn median ms | Prometheus median ms | ratio | series (C/P) | points (C/P) | values agree |")
print("|---|---|---|---|---|---|---|")
for name in c:
    a, b = c[name], p[name]
    agree = abs(a["value_sum"] - b["value_sum"]) <= 1e-6 * max(abs(a["value_sum"]), abs(b["value_sum"]), 1.0)
    print(f"| {name} | {a['median_ms']:.1f} | {b['median_ms']:.1f} | {a['median_ms']/b['median_ms']:.2f} | {a['series']}/{b['series']} | {a['points']}/{b['points']} | {'yes' if agree and a['points']==b['points'] else 'NO'} |")
PY
echo "results: $results" >&2
