#!/usr/bin/env bash
# Builds kubelet (k8s.io/kubernetes) from the Go module proxy and prints the
# path of the binary. `go install k8s.io/kubernetes/cmd/kubelet@...` does not
# work: kubernetes replaces its staging modules (k8s.io/api, client-go, ...)
# with ./staging paths, and a dependency's replace directives are ignored. So
# a wrapper module is generated in the cache directory that requires
# kubernetes and replaces every staging module it lists with the matching
# published v0.x version. The binary is cached per version: reruns only print
# the path.
set -euo pipefail

KUBELET_VERSION=${KUBELET_VERSION:-v1.37.2}
CACHE=${CRI_MINI_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cri-mini-e2e}
DIR=$CACHE/kubelet-$KUBELET_VERSION
BIN=$DIR/kubelet

if [[ -x $BIN ]]; then
	echo "$BIN"
	exit 0
fi

# Staging modules are published as v0.<minor>.<patch> for kubernetes v1.<minor>.<patch>.
staging_version=v0.${KUBELET_VERSION#v1.}
# GOFLAGS from the caller (e.g. -mod=vendor) must not leak into the wrapper.
export GOFLAGS=-mod=mod GOWORK=off

mkdir -p "$DIR"
gomod=$(go mod download -json "k8s.io/kubernetes@$KUBELET_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[[ -f $gomod ]] || { echo "build.sh: no go.mod for k8s.io/kubernetes@$KUBELET_VERSION" >&2; exit 1; }
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$gomod")
((${#staging[@]} > 0)) || { echo "build.sh: no staging replaces found in $gomod" >&2; exit 1; }

{
	echo "module cri-mini.local/kubelet-build"
	echo
	echo "go $(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"
	echo
	echo "require k8s.io/kubernetes $KUBELET_VERSION"
	echo
	echo "replace ("
	for m in "${staging[@]}"; do
		echo "	$m => $m $staging_version"
	done
	echo ")"
} >"$DIR/go.mod"
cat >"$DIR/tools.go" <<'GO'
//go:build tools

// Package tools pins the kubelet command so that go mod tidy keeps its dependencies.
package tools

import _ "k8s.io/kubernetes/cmd/kubelet"
GO

(
	cd "$DIR"
	go mod tidy
	# The version kubelet reports (kubelet --version, node status).
	minor=${KUBELET_VERSION#v1.}
	minor=${minor%%.*}
	pkg=k8s.io/component-base/version
	CGO_ENABLED=0 go build -o "$BIN.tmp" -ldflags "-X $pkg.gitVersion=$KUBELET_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor" \
		k8s.io/kubernetes/cmd/kubelet
) >&2
mv "$BIN.tmp" "$BIN"
echo "$BIN"
