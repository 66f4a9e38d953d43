#!/usr/bin/env bash
# Runs the CRI validation suite (critest, sigs.k8s.io/cri-tools v1.37.0)
# against cri-mini with no public registry:
#   1. builds critest (cached, e2e/critest/build.sh) and the offline images;
#   2. serves the images on a loopback registry (e2e/cmd/imgbuild -serve);
#   3. starts bin/cri-mini with throw-away --root/--runroot, its own CNI
#      network, and registry.k8s.io, gcr.io, k8s.gcr.io mirrored to that
#      registry (critest keeps the upstream image names);
#   4. runs critest, skipping the specs in e2e/critest/skip.txt;
#   5. prints "N passed, N failed, N skipped", removes every pod, stops
#      everything and deletes what it made (also on failure or Ctrl-C).
# Needs root, the CNI plugins (/usr/lib/cni), ipcmk (util-linux) and free
# ports 12000-12003. Exit status: critest's, or 1 if something was left behind.
#
# Environment: CRI_MINI_BIN (default bin/cri-mini), CRITEST_FOCUS (a ginkgo
# focus regex, to run a part), CRITEST_TIMEOUT (default 45m),
# E2E_ARTIFACTS (a directory to keep the daemon log and the JSON report in),
# CRI_MINI_CGROUP_DRIVER (cgroupfs, the default, or systemd: the daemon's
# driver; critest then puts its pods in system.slice), and where nothing is
# to be built (e2e/v2vm): CRITEST_BIN and IMGBUILD_BIN, prebuilt binaries,
# and IMGBUILD_LOAD, the images as imgbuild -save wrote them.
set -euo pipefail
cd "$(dirname "$0")/../.."
. e2e/lib.sh

BIN=${CRI_MINI_BIN:-bin/cri-mini}
CNI_PLUGINS=/usr/lib/cni
[[ $(id -u) == 0 ]] || { echo "run.sh: needs root" >&2; exit 1; }
[[ -x $BIN ]] || { echo "run.sh: $BIN missing (make build)" >&2; exit 1; }
[[ -x $CNI_PLUGINS/bridge ]] || { echo "run.sh: CNI plugins missing: apt-get install containernetworking-plugins" >&2; exit 1; }
command -v ipcmk >/dev/null || echo "run.sh: warning: ipcmk (util-linux) missing: the HostIpc specs will fail" >&2
crictl=$(command -v crictl || echo "$(go env GOPATH)/bin/crictl")

critest=${CRITEST_BIN:-$(e2e/critest/build.sh)}
driver=${CRI_MINI_CGROUP_DRIVER:-cgroupfs}

work=$(mktemp -d /tmp/cri-mini-critest.XXXXXX)
sock=$work/cri-mini.sock
bridge=crit$(($$ % 100000))
subnet=10.178.$(($$ % 200)).0/24
registry_pid= daemon_pid= shm_before=

cleanup() {
	local rc=$? left=0
	trap - EXIT INT TERM
	if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
		# critest removes its pods; after a failure or an interrupt some
		# may remain, and cri-mini keeps pods across its own restarts.
		if [[ -x $crictl ]]; then
			"$crictl" --runtime-endpoint "unix://$sock" --timeout 60s rmp --all --force >/dev/null 2>&1 || true
		fi
		kill -TERM "$daemon_pid"
		for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.2; done
		if kill -0 "$daemon_pid" 2>/dev/null; then
			echo "run.sh: cri-mini did not exit on SIGTERM; killing it" >&2
			kill -KILL "$daemon_pid"; left=1
		fi
		wait "$daemon_pid" 2>/dev/null || true
	fi
	if [[ -n $registry_pid ]]; then
		kill -TERM "$registry_pid" 2>/dev/null || true
		wait "$registry_pid" 2>/dev/null || true
	fi
	if [[ -n ${E2E_ARTIFACTS:-} ]]; then
		mkdir -p "$E2E_ARTIFACTS"
		cp "$work"/daemon.log "$work"/report.json "$E2E_ARTIFACTS"/ 2>/dev/null || true
	fi
	if ((rc != 0)) && [[ -f $work/daemon.log ]]; then
		echo "--- cri-mini log (last 40 lines) ---" >&2
		tail -n 40 "$work/daemon.log" >&2
	fi
	# Anything still mounted below the run's directory is a leak: report it,
	# then detach it so that the directory can go.
	local m
	for m in $(awk -v d="$work/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
		echo "run.sh: left behind: mount $m" >&2
		umount -l "$m" || true
		left=1
	done
	# critest's HostIpc specs make 1 MiB segments with ipcmk on the host and
	# never remove them; remove those that appeared during the run.
	if [[ -n $shm_before ]]; then
		local id
		for id in $(awk 'NR > 1 && $4 == 1048576 && $7 == 0 {print $2}' /proc/sysvipc/shm); do
			[[ $shm_before == *" $id "* ]] || ipcrm -m "$id" || true
		done
	fi
	if ip link show "$bridge" >/dev/null 2>&1; then
		ip link delete "$bridge" || true
	fi
	# With the systemd driver every container was a scope of systemd's.
	if [[ $driver == systemd ]]; then
		for m in $(systemctl list-units --all --plain --no-legend 'cri-mini-*.scope' | awk '{print $1}'); do
			echo "run.sh: left behind: unit $m" >&2
			systemctl stop "$m" || true
			left=1
		done
	fi
	rm -rf "$work"
	((left == 0)) || rc=1
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "run.sh: building and serving the offline images"
imgbuild=${IMGBUILD_BIN:-$work/imgbuild}
[[ -n ${IMGBUILD_BIN:-} ]] || go build -o "$imgbuild" ./e2e/cmd/imgbuild
"$imgbuild" -serve 127.0.0.1:0 ${IMGBUILD_LOAD:+-load "$IMGBUILD_LOAD"} -addr-file "$work/registry.addr" >"$work/imgbuild.log" 2>&1 &
registry_pid=$!
for _ in $(seq 600); do
	[[ -s $work/registry.addr ]] && break
	kill -0 "$registry_pid" 2>/dev/null || { cat "$work/imgbuild.log" >&2; exit 1; }
	sleep 0.5
done
[[ -s $work/registry.addr ]] || { echo "run.sh: registry not ready after 300s" >&2; exit 1; }
registry=$(<"$work/registry.addr")

mkdir -p "$work/net.d"
write_conflist "$work/net.d/10-critest.conflist" cri-mini-critest "$bridge" "$subnet" "$work/ipam"

echo "run.sh: starting cri-mini (images from $registry, $driver cgroup driver)"
"$BIN" --root "$work/root" --runroot "$work/run" --listen "unix://$sock" --cgroup-driver "$driver" \
	--cni-config-dir "$work/net.d" --cni-plugin-dir "$CNI_PLUGINS" -v 2 \
	--registry-mirror "registry.k8s.io=http://$registry" \
	--registry-mirror "gcr.io=http://$registry" \
	--registry-mirror "k8s.gcr.io=http://$registry" \
	--insecure-registry "$registry" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 200); do
	[[ -S $sock ]] && break
	kill -0 "$daemon_pid" 2>/dev/null || { echo "run.sh: cri-mini exited at start" >&2; exit 1; }
	sleep 0.1
done
[[ -S $sock ]] || { echo "run.sh: cri-mini did not listen within 20s" >&2; exit 1; }

args=(--runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock"
	--ginkgo.no-color --ginkgo.timeout "${CRITEST_TIMEOUT:-45m}" --ginkgo.json-report "$work/report.json")
while IFS= read -r line; do
	[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
	args+=(--ginkgo.skip "$(sed 's/[[:space:]]*|.*$//' <<<"$line")")
done <e2e/critest/skip.txt
[[ -n ${CRITEST_FOCUS:-} ]] && args+=(--ginkgo.focus "$CRITEST_FOCUS")

shm_before=" $(awk 'NR > 1 {printf "%s ", $2}' /proc/sysvipc/shm)"
echo "run.sh: $critest ${args[*]}"
status=0
# TMPDIR: log directories critest makes go with the run's directory.
mkdir -p "$work/tmp"
(cd "$work" && TMPDIR=$work/tmp "$critest" "${args[@]}") 2>&1 | tee "$work/critest.log" || status=$?

summary=$(grep -Eo '[0-9]+ Passed \| [0-9]+ Failed \| [0-9]+ Pending \| [0-9]+ Skipped' "$work/critest.log" | tail -n 1 || true)
if [[ -z $summary ]]; then
	echo "run.sh: critest did not finish (no summary line)"
	exit $((status == 0 ? 1 : status))
fi
read -r passed _ _ failed _ _ pending _ _ skipped _ <<<"$summary"
if command -v jq >/dev/null && [[ -s $work/report.json ]]; then
	# Specs skipped by critest at run time (not by skip.txt) say why.
	jq -r '.[].SpecReports[] | select(.LeafNodeType == "It" and .State == "skipped" and (.Failure.Message // "") != "")
		| "skipped: " + (.ContainerHierarchyTexts | join(" ")) + " " + .LeafNodeText + ": " + .Failure.Message' "$work/report.json"
	jq -r '.[].SpecReports[] | select(.LeafNodeType == "It" and (.State | IN("failed", "panicked", "timedout", "interrupted")))
		| "failed: " + (.ContainerHierarchyTexts | join(" ")) + " " + .LeafNodeText' "$work/report.json"
fi
((pending == 0)) || echo "critest: $pending pending"
echo "critest: $passed passed, $failed failed, $skipped skipped (of $((passed + failed + pending + skipped)) specs)"
exit "$status"
