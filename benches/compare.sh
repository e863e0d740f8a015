#!/usr/bin/env bash
# Side-by-side benchmark: Cairn, Prometheus and VictoriaMetrics on this
# machine, with the same workloads and queries, one system at a time.
#
#   benches/compare.sh [--preset ci|full] [--out DIR] [--systems cairn,prometheus,victoriametrics]
#
# Installs Debian's prometheus and victoria-metrics when missing, builds
# Cairn and the harness (optimised: `release` for the full preset, the
# quicker-to-build `bench-fast` for the CI preset), and runs
# benches/src/bin/compare.rs on CPU 1 while each system runs on CPU 0.
# Writes results.json, results.md and chart.svg to DIR (default: a new
# folder under /tmp) and prints the table.
#
# Presets: ci takes a few minutes and only proves the harness works; full
# takes about 20 minutes on 2 cores and gives the figures in
# docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

preset=full out="" systems=cairn,prometheus,victoriametrics
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --systems) systems=$2; shift 2 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$preset" in
  ci) profile=${PROFILE:-bench-fast} ;;
  full) profile=${PROFILE:-release} ;;
  *) echo "compare.sh: --preset must be ci or full" >&2; exit 2 ;;
esac
out=${out:-$(mktemp -d /tmp/cairn-compare.XXXXXX)}
mkdir -p "$out"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "compare.sh: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Without the SQL endpoint: no benchmark uses it, and DataFusion is most of
# an optimised build.
cargo build -q --profile "$profile" -p cairn --no-default-features
cargo build -q --profile "$profile" -p cairn-benches
tdir=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
rm -rf "$out/data"
# Each system runs pinned to CPU 0 (the harness starts it with taskset);
# the harness itself, generating load and asking queries, runs on CPU 1.
taskset -c 1 "$tdir/compare" --preset "$preset" --out "$out" --cairn "$tdir/cairn" \
  --systems "$systems" --commit "$commit"
rm -rf "$out/data"
