#!/usr/bin/env bash
# Builds Kubernetes binaries (k8s.io/kubernetes) from the Go module proxy and
# prints the path of each, one a line:
#
#   build.sh [kubelet] [e2e_node.test] [agnhost] [ginkgo]   (default: kubelet)
#
# e2e_node.test is the node e2e suite (test/e2e_node, `go test -c`), agnhost
# the suite's test image program (test/images/agnhost), ginkgo the ginkgo v2
# CLI at the version kubernetes' go.mod requires (it runs the suite in
# parallel). All land in one directory: the suite looks for kubelet next to
# e2e_node.test.
#
# `go install k8s.io/kubernetes/cmd/kubelet@...` does not work: kubernetes
# replaces its staging modules (k8s.io/api, client-go, ...) with ./staging
# paths, and a dependency's replace directives are ignored. So a wrapper
# module is generated in the cache directory that requires kubernetes and
# replaces every staging module it lists with the matching published v0.x
# version. The binaries are cached per version: reruns only print the paths.
set -euo pipefail

KUBELET_VERSION=${KUBELET_VERSION:-v1.37.2}
CACHE=${CRI_MINI_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cri-mini-e2e}
DIR=$CACHE/k8s-$KUBELET_VERSION

(($# > 0)) || set -- kubelet
declare -A pkgs=(
	[kubelet]=k8s.io/kubernetes/cmd/kubelet
	[e2e_node.test]=k8s.io/kubernetes/test/e2e_node
	[agnhost]=k8s.io/kubernetes/test/images/agnhost
	[ginkgo]=github.com/onsi/ginkgo/v2/ginkgo
)
missing=()
for b; do
	[[ -n ${pkgs[$b]:-} ]] || { echo "build.sh: unknown binary $b (want: ${!pkgs[*]})" >&2; exit 2; }
	[[ -x $DIR/$b ]] || missing+=("$b")
done

# wrapper_module writes go.mod and tools.go into $DIR and tidies them.
wrapper_module() {
	# Staging modules are published as v0.<minor>.<patch> for kubernetes v1.<minor>.<patch>.
	local staging_version=v0.${KUBELET_VERSION#v1.} gomod m
	gomod=$(go mod download -json "k8s.io/kubernetes@$KUBELET_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[[ -f $gomod ]] || { echo "build.sh: no go.mod for k8s.io/kubernetes@$KUBELET_VERSION" >&2; return 1; }
	mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$gomod")
	((${#staging[@]} > 0)) || { echo "build.sh: no staging replaces found in $gomod" >&2; return 1; }
	{
		echo "module cri-mini.local/k8s-build"
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
	{
		echo "//go:build tools"
		echo
		echo "// Package tools pins the packages built here so that go mod tidy keeps their dependencies."
		echo "package tools"
		echo
		echo "import ("
		printf '\t_ "%s"\n' "${pkgs[@]}" | sort
		echo ")"
	} >"$DIR/tools.go"
	(cd "$DIR" && go mod tidy)
}

if ((${#missing[@]} > 0)); then
	# GOFLAGS from the caller (e.g. -mod=vendor) must not leak into the wrapper.
	export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0
	mkdir -p "$DIR"
	[[ -f $DIR/go.sum ]] || wrapper_module >&2
	# The version kubelet reports (kubelet --version, node status); -s -w:
	# no symbol table or DWARF, a much lighter link of the big binaries.
	minor=${KUBELET_VERSION#v1.}
	minor=${minor%%.*}
	v=k8s.io/component-base/version
	ldflags="-s -w -X $v.gitVersion=$KUBELET_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor"
	for b in "${missing[@]}"; do
		echo "build.sh: building $b (${pkgs[$b]})" >&2
		if [[ $b == *.test ]]; then
			(cd "$DIR" && go test -c -o "$b.tmp" -ldflags "$ldflags" "${pkgs[$b]}") >&2
		else
			(cd "$DIR" && go build -o "$b.tmp" -ldflags "$ldflags" "${pkgs[$b]}") >&2
		fi
		mv "$DIR/$b.tmp" "$DIR/$b"
	done
fi
for b; do
	echo "$DIR/$b"
done
