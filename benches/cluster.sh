#!/usr/bin/env bash
# Ingest throughput and query latency of a 3-ingester cluster (replication
# factor 3, plus a distributor and a querier) against `cairn all`, on this
# machine, with the same load.
#
#   benches/cluster.sh [--out DIR] [-- extra arguments of benches/src/bin/cluster.rs]
#
# Builds optimised (release; PROFILE=bench-fast for a quicker build) and
# prints a Markdown table; DIR/cluster-results.json holds every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "cluster.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
profile=${PROFILE:-release}
out=${out:-$(mktemp -d /tmp/cairn-cluster.XXXXXX)}
mkdir -p "$out"
cargo build -q --profile "$profile" -p cairn --no-default-features
cargo build -q --profile "$profile" -p cairn-benches --bin cluster
tdir=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")
"$tdir/cluster" --cairn "$tdir/cairn" --out "$out" --commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$@"
