#!/usr/bin/env bash
# Builds critest (the CRI validation suite of sigs.k8s.io/cri-tools) from its
# own module source and prints the path of the binary. `go install` of
# cmd/critest does not work (it is a test package), so the module is copied to
# a writable directory and built with `go test -c`. The binary is cached per
# version: reruns only print the path.
set -euo pipefail

CRITEST_VERSION=${CRITEST_VERSION:-v1.37.0}
CACHE=${CRI_MINI_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cri-mini-e2e}
BIN=$CACHE/critest-$CRITEST_VERSION

if [[ -x $BIN ]]; then
	echo "$BIN"
	exit 0
fi

mkdir -p "$CACHE"
mod=$(go mod download -json "sigs.k8s.io/cri-tools@$CRITEST_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d $mod ]] || { echo "build.sh: no module dir for sigs.k8s.io/cri-tools@$CRITEST_VERSION" >&2; exit 1; }

src=$(mktemp -d "${TMPDIR:-/tmp}/critest-src.XXXXXX")
trap 'rm -rf "$src"' EXIT
cp -r "$mod/." "$src"
chmod -R u+w "$src"
# GOFLAGS from the caller (e.g. -mod=vendor) must not leak into the other module.
(cd "$src" && GOFLAGS=-mod=mod GOWORK=off go test -c -o "$BIN.tmp" ./cmd/critest) >&2
mv "$BIN.tmp" "$BIN"
echo "$BIN"
