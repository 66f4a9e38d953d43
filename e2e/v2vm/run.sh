#!/usr/bin/env bash
# run.sh: cri-mini's suites where production nodes run (make test-v2): builds
# everything on the host (the daemon, one test binary per Go package,
# crictl, critest and kubelet from the caches e2e/ already uses; compiling
# under the guest's software CPU would take far too long), boots the v2
# guest of vm.sh with the checkout shared at its own path, and runs there
#
#   e2e/v2vm/suites.sh: the root test suites of container/cgroups,
#   container, sandbox, netns and e2e, then critest and the kubelet
#   scenarios with the systemd cgroup driver (cri-mini's and kubelet's) and
#   kubelet's failCgroupV1 at its default.
#
#   e2e/v2vm/run.sh [SUITE...]     (default: all of them, in that order)
#
# Exit status: the suites' (0 when all passed). Environment: as vm.sh
# (V2VM_CPUS, V2VM_MEM, V2VM_ACCEL, V2VM_TIMEOUT, V2VM_CONSOLE).
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $(id -u) == 0 ]] || { echo "run.sh: needs root" >&2; exit 1; }
(($# > 0)) || set -- container/cgroups container sandbox netns e2e critest kubelet

start=$SECONDS
out=bin/v2vm
rm -rf "$out"
mkdir -p "$out"
echo "run.sh: building on the host into $out"
make -s build
cp bin/cri-mini bin/cri-mini-shim "$out/"
# the older daemon of e2e's upgrade test (none from a shallow clone: exit 3)
e2e/build-at.sh "$(cat e2e/upgrade-from)" "$out/upgrade-from" || [[ $? == 3 ]]
go build -o "$out/imgbuild" ./e2e/cmd/imgbuild
crictl=$(command -v crictl || echo "$(go env GOPATH)/bin/crictl")
[[ -x $crictl ]] || { echo "run.sh: crictl missing: go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0" >&2; exit 1; }
cp "$crictl" "$out/crictl"
for suite in "$@"; do
	case $suite in
	critest | kubelet)
		# the cached binary e2e/SUITE/build.sh prints, and the offline images
		cp "$(e2e/"$suite"/build.sh)" "$out/$suite"
		[[ -f $out/images.tar ]] || "$out/imgbuild" -save "$out/images.tar" >/dev/null
		;;
	*) go test -c -o "$out/${suite//\//_}.test" "./$suite" ;;
	esac
done
echo "run.sh: built in $((SECONDS - start)) s"

e2e/v2vm/vm.sh build
rc=0
V2VM_SHARES=$PWD CRI_MINI_CGROUP_DRIVER=systemd V2VM_ENV=CRI_MINI_CGROUP_DRIVER \
	e2e/v2vm/vm.sh run e2e/v2vm/suites.sh "$out" "$@" || rc=$?
echo "run.sh: exit status $rc after $((SECONDS - start)) s in all"
exit "$rc"
