#!/bin/sh
# setup-containerd.sh: build the reference runtime the benchmark compares
# cri-mini with (containerd v2.4.2 + its runc shim, runc v1.5.3) from the Go
# module proxy into a cache dir, so that later runs reuse the binaries.
# Prints the bin dir on stdout.
set -eu

CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
RUNC_VERSION=${RUNC_VERSION:-v1.5.3}
CACHE=${CRI_MINI_BENCH_CACHE:-$HOME/.cache/cri-mini-bench}
BIN=$CACHE/bin
mkdir -p "$BIN"

stamp_ok() { # stamp_ok NAME VERSION: the cached binary was built from VERSION
	[ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]
}

if ! stamp_ok containerd "$CONTAINERD_VERSION" || ! stamp_ok containerd-shim-runc-v2 "$CONTAINERD_VERSION"; then
	echo "building containerd $CONTAINERD_VERSION" >&2
	# The btrfs/devmapper/zfs/aufs snapshotters need C headers we don't have
	# and the benchmark uses overlayfs only.
	GOBIN=$BIN CGO_ENABLED=0 go install -tags "no_btrfs no_devmapper no_zfs no_aufs" \
		"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" >&2
	echo "$CONTAINERD_VERSION" >"$BIN/.containerd.version"
	echo "$CONTAINERD_VERSION" >"$BIN/.containerd-shim-runc-v2.version"
fi

if ! stamp_ok runc "$RUNC_VERSION"; then
	if ! [ -e /usr/include/seccomp.h ]; then
		echo "installing libseccomp-dev (runc's seccomp support)" >&2
		apt-get install -y -q libseccomp-dev >&2
	fi
	echo "building runc $RUNC_VERSION" >&2
	GOBIN=$BIN CGO_ENABLED=1 go install -tags seccomp \
		"github.com/opencontainers/runc@$RUNC_VERSION" >&2
	echo "$RUNC_VERSION" >"$BIN/.runc.version"
fi

echo "$BIN"
