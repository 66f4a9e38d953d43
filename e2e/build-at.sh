#!/usr/bin/env bash
# build-at.sh: builds cri-mini and cri-mini-shim as they were at a commit of
# this repository, for the upgrade test (e2e/upgrade_test.go; e2e/v2vm/run.sh
# builds them on the host for the guest):
#
#   e2e/build-at.sh REV OUTDIR
#
# The commit is taken from the checkout's history with git archive; Go
# modules come from the module cache or proxy as for any build. Exit status
# 3 when the checkout is a shallow clone without REV.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$1 out=$2
if ! git cat-file -e "$rev^{commit}" 2>/dev/null; then
	if [[ $(git rev-parse --is-shallow-repository) == true ]]; then
		echo "build-at.sh: commit $rev is not in this shallow clone" >&2
		exit 3
	fi
	echo "build-at.sh: no commit $rev in $(pwd)" >&2
	exit 1
fi
src=$(mktemp -d /tmp/cri-mini-build-at.XXXXXX)
trap 'rm -rf "$src"' EXIT
git archive "$rev" | tar -x -C "$src"
mkdir -p "$out"
out=$(cd "$out" && pwd)
(cd "$src" && go build -o "$out/cri-mini" ./cmd/cri-mini && go build -o "$out/cri-mini-shim" ./cmd/cri-mini-shim)
