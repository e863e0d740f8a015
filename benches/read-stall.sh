#!/usr/bin/env bash
# Latency of a cheap query (`vector(1)`) on `cairn all` while three clients
# run day-long queries over blocks: shows whether block reads stall the
# threads that answer requests.
#
#   benches/read-stall.sh CAIRN_BINARY [LOADGEN_BINARY]
#
# Writes 23 hours of 10 node targets (30 s apart), cuts them into blocks,
# then prints the cheap query's p50/p90/p99/max over 300 probes, three
# times. Optimised builds: cargo build --release -p cairn -p cairn-benches.
set -euo pipefail
bin=$1
loadgen=${2:-$(dirname "$0")/../target/release/loadgen}
dir=$(mktemp -d /tmp/cairn-read-stall.XXXXXX)
port=19109
"$bin" all --data.dir "$dir" --http.listen-address 127.0.0.1:$port --grpc.listen-address 127.0.0.1:19195 \
  --ingester.out-of-order-time-window=24h > "$dir/log.txt" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/ready > /dev/null && break; sleep 0.2; done
now=$(( $(date +%s) * 1000 ))
"$loadgen" --url http://127.0.0.1:$port/api/v1/push --targets 10 --duration 23h --interval-ms 30000 \
  --start-ms $(( now - 86400000 )) --concurrency 4 > "$dir/load.json"
curl -sf -XPOST "http://127.0.0.1:$port/ingester/flush?all=true" > /dev/null
for _ in 1 2 3; do
  python3 - "$port" "$now" <<'PY'
import http.client, sys, threading, time, urllib.parse
port, now = int(sys.argv[1]), int(sys.argv[2])
stop, heavy_done = False, [0]
def heavy():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    q = urllib.parse.urlencode({"query": "count(node_cpu_seconds_total)", "start": (now - 86400000) / 1000,
                                "end": (now - 3600000) / 1000, "step": "60"})
    while not stop:
        c.request("GET", "/api/v1/query_range?" + q); c.getresponse().read()
        heavy_done[0] += 1
threads = [threading.Thread(target=heavy) for _ in range(3)]
for t in threads: t.start()
time.sleep(1)
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
lat, t_start = [], time.perf_counter()
for _ in range(300):
    t0 = time.perf_counter()
    c.request("GET", "/api/v1/query?query=vector(1)"); c.getresponse().read()
    lat.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.05)
elapsed = time.perf_counter() - t_start
stop = True
for t in threads: t.join()
lat.sort()
print(f"vector(1) ms: p50 {lat[150]:.2f} p90 {lat[270]:.2f} p99 {lat[297]:.2f} max {lat[-1]:.2f}; "
      f"day-long queries done {heavy_done[0]} ({heavy_done[0] / elapsed:.1f}/s)")
PY
done
