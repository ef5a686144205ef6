#!/usr/bin/env bash
# Measures one launch (requests, CPU, wall time, peak memory, binary size) against moto
# on loopback and prints a Markdown table for docs/benchmarks.md. Run on demand; the
# test suite never runs it. BENCH_RUNS (default 50) sets the launches per row.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(scripts/venv.sh)"
if [ ! -x /usr/bin/time ]; then
    echo "scripts/bench.sh: installing GNU time to measure peak memory" >&2
    apt-get update -qq && apt-get install -y -qq time >/dev/null
fi
cargo build --release --locked --quiet
exec "$venv/bin/python" scripts/bench_launch.py
