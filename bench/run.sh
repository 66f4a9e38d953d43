#!/bin/sh
# run.sh: `make bench`. Builds the reference runtime (setup-containerd.sh,
# cached) and the cribench driver, then measures containerd and, when
# CRI_MINI_BIN names a cri-mini binary that serves containers, cri-mini
# side by side, then the cost curve to a full node (the figures with 0, 30
# and 110 pods resident). Results: the tables on stdout,
# $BENCH_OUT/results.{json,svg}.
# Environment: BENCH_RUNS (default 20), BENCH_BURST (the sizes of the
# bursts of pods started at once, 10,30; the memory figures are taken at the
# largest), BENCH_CURVE (the curve's numbers of resident pods, 0,30,110;
# none: no curve), BENCH_CURVE_RUNS (20), BENCH_OUT (bench-out),
# CRI_MINI_BIN (empty: containerd only). Needs root.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root" >&2; exit 1; }
bin=$(bench/setup-containerd.sh)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/cribench" ./bench/cmd/cribench
set -- -containerd-bin "$bin" -runs "${BENCH_RUNS:-20}" -burst "${BENCH_BURST:-10,30}" -out "${BENCH_OUT:-bench-out}" \
	-curve "${BENCH_CURVE:-0,30,110}" -curve-runs "${BENCH_CURVE_RUNS:-20}"
if [ -n "${CRI_MINI_BIN:-}" ]; then
	set -- "$@" -cri-mini "$CRI_MINI_BIN"
fi
"$tmp/cribench" "$@"
