#!/usr/bin/env bash
# suites.sh: runs prebuilt test suites of cri-mini and prints one line of
# counts per suite. run.sh starts it inside the v2 guest; on any other
# machine it runs the same suites the same way (for v1 figures to set
# beside the guest's), as root from the checkout's top:
#
#   e2e/v2vm/suites.sh BINDIR SUITE...
#
# BINDIR holds what run.sh builds on the host (nothing is compiled here):
# cri-mini, cri-mini-shim, imgbuild and the images it saved (images.tar),
# the older cri-mini and shim of e2e's upgrade test (upgrade-from/),
# crictl, critest, kubelet and one PKG.test per Go package
# ("container/cgroups" -> container_cgroups.test).
# A SUITE is a Go package directory (its root tests run with -test.v from
# that directory, as go test does), "critest" or "kubelet".
# CRI_MINI_CGROUP_DRIVER (default cgroupfs) is the driver of critest's and
# kubelet's daemon, and kubelet's; their logs are kept in BINDIR/artifacts.
# Exit status: 0 when every suite passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
top=$PWD
bin=$(cd "$1" && pwd)
shift
export PATH=$bin:$PATH CRI_MINI_BIN=$bin/cri-mini IMGBUILD_BIN=$bin/imgbuild IMGBUILD_LOAD=$bin/images.tar \
	CRITEST_BIN=$bin/critest KUBELET_BIN=$bin/kubelet
[[ -d $bin/upgrade-from ]] && export CRI_MINI_UPGRADE_FROM=$bin/upgrade-from
logs=$(mktemp -d /tmp/cri-mini-suites.XXXXXX)
summary=() failed=0

# go_suite PKG: the package's test binary; counts top-level tests.
go_suite() {
	local pkg=$1 log rc=0 pass fail skip
	log=$logs/${pkg//\//_}.log
	(cd "$top/$pkg" && "$bin/${pkg//\//_}.test" -test.v -test.count=1 -test.timeout=30m) 2>&1 | tee "$log" || rc=$?
	pass=$(grep -c '^--- PASS' "$log")
	fail=$(grep -c '^--- FAIL' "$log")
	skip=$(grep -c '^--- SKIP' "$log")
	grep -q '^e2e: SKIP' "$log" && skip="all ($(sed -n 's/^e2e: SKIP: //p' "$log"))"
	result "$pkg" "$rc" "$pass passed, $fail failed, $skip skipped"
	grep '^--- FAIL' "$log" | sed 's/^/    /' >>"$logs/failures"
}

result() {
	local word=ok
	(($2 == 0)) || { word=FAIL; failed=1; }
	summary+=("$(printf '%-20s %-5s %s' "$1" "$word" "$3")")
}

for suite in "$@"; do
	echo "=== suite $suite ($(date +%T))"
	start=$SECONDS
	case $suite in
	critest)
		rc=0
		E2E_ARTIFACTS=$bin/artifacts/critest e2e/critest/run.sh 2>&1 | tee "$logs/critest.log" || rc=$?
		result critest "$rc" "$(grep -o '^critest: .*' "$logs/critest.log" | tail -n 1 | cut -d' ' -f2-)"
		;;
	kubelet)
		rc=0
		E2E_ARTIFACTS=$bin/artifacts/kubelet e2e/kubelet/run.sh 2>&1 | tee "$logs/kubelet.log" || rc=$?
		# The table's rows: "N description PASS|FAIL measured".
		n=$(grep -cE '^[0-9]+ +.* (PASS|FAIL) ' "$logs/kubelet.log")
		ok=$(grep -cE '^[0-9]+ +.* PASS ' "$logs/kubelet.log")
		result kubelet "$rc" "$ok of $n scenarios passed"
		;;
	*)
		if [[ -x $bin/${suite//\//_}.test ]]; then
			go_suite "$suite"
		else
			result "$suite" 1 "no test binary $bin/${suite//\//_}.test"
		fi
		;;
	esac
	summary[-1]+=" ($((SECONDS - start)) s)"
done

echo
echo "=== summary ($(uname -r), cgroup $(stat -fc %T /sys/fs/cgroup), driver ${CRI_MINI_CGROUP_DRIVER:-cgroupfs} for critest and kubelet)"
printf '%s\n' "${summary[@]}"
[[ ! -s $logs/failures ]] || { echo "failed tests:"; cat "$logs/failures"; }
rm -rf "$logs"
exit "$failed"
