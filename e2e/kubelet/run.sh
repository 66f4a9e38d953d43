#!/usr/bin/env bash
# Runs a real kubelet (k8s.io/kubernetes v1.37.2, standalone: static pods, no
# API server) against cri-mini, offline:
#   1. builds cri-mini (make build) and kubelet (cached, e2e/kubelet/build.sh);
#   2. serves the offline images on a loopback registry (e2e/cmd/imgbuild)
#      and starts cri-mini with a throw-away root and its own CNI network,
#      registry.k8s.io mirrored to that registry;
#   3. starts kubelet with a throw-away root dir, its own cgroup root and a
#      static pod directory, and drops the manifests/e2e-*.yaml pods into it:
#        1 a container logging a line a second (crictl logs keeps growing),
#        2 two containers sharing an emptyDir (crictl exec + logs),
#        3 a container exiting 3, restarted by kubelet (attempt in crictl ps -a),
#        4 an exec liveness probe that starts failing (container restarted),
#        5 removing a manifest tears its pod down (gone from crictl pods),
#        6 kubelet restarted: it takes the running pods back unchanged,
#        7 cri-mini killed (SIGKILL) and restarted under kubelet: pods and
#          containers unchanged, exec and logs work,
#        8 kubelet rotates the logger's log (ReopenContainerLog),
#        9 /stats/summary carries cri-mini's stats (with PSI),
#       10 an in-place resize through UpdateContainerResources shows in
#          kubelet's pod status (a static pod's spec cannot be resized),
#       11 a debug container in a pod's container's pid namespace
#          (NamespaceMode TARGET, the CRI calls of kubectl debug --target),
#       12 a privileged pod sees /sys read-write and the host's devices,
#       13 a non-root pod without capabilities serves on port 80,
#       14 a pod with hostUsers: false is root in its own user namespace,
#          the mapped user on the host, logs and execs;
#   4. prints a table of the results, removes the pods, stops everything and
#      reports what was left behind (mounts, pods, containers, cgroups, links,
#      processes), restoring the sysctls kubelet changes. kubelet needs
#      /var/lib/kubelet/device-plugins (a fixed path); made, it is removed.
# Needs root and the CNI plugins (/usr/lib/cni). Exit status 1 if a scenario
# failed or something was left behind.
#
# Environment: CRI_MINI_BIN (default: make build, bin/cri-mini),
# E2E_ARTIFACTS (a directory to keep the daemon and kubelet logs in),
# CRI_MINI_CGROUP_DRIVER (cgroupfs, the default: kubelet's cgroup root is
# this run's own; or systemd, as kubeadm sets nodes up: kubelet and cri-mini
# both on systemd's slices and scopes, kubelet's cgroup root and
# failCgroupV1 at their defaults), KUBELET_BIN and IMGBUILD_BIN (prebuilt
# binaries, where nothing is to be built, as in e2e/v2vm) and IMGBUILD_LOAD
# (the images as imgbuild -save wrote them),
# KUBELET_FEATURE_GATES (passed to kubelet --feature-gates; for instance
# EventedPLEG=true,PLEGOnDemandRelist=true to have kubelet follow
# GetContainerEvents instead of relisting every second).
# The functions below run from the EXIT trap and from wait_for.
# shellcheck disable=SC2317
set -euo pipefail
cd "$(dirname "$0")/../.."

CNI_PLUGINS=/usr/lib/cni
NODE=cri-mini-e2e
[[ $(id -u) == 0 ]] || { echo "run.sh: needs root" >&2; exit 1; }
[[ -x $CNI_PLUGINS/bridge ]] || { echo "run.sh: CNI plugins missing: apt-get install containernetworking-plugins" >&2; exit 1; }
crictl_bin=$(command -v crictl || echo "$(go env GOPATH)/bin/crictl")
[[ -x $crictl_bin ]] || { echo "run.sh: crictl missing: go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0" >&2; exit 1; }

if [[ -z ${CRI_MINI_BIN:-} ]]; then
	make -s build
fi
kubelet=${KUBELET_BIN:-$(e2e/kubelet/build.sh)}
driver=${CRI_MINI_CGROUP_DRIVER:-cgroupfs}
unified=''
[[ ! -f /sys/fs/cgroup/cgroup.controllers ]] || unified=1

work=$(mktemp -d /tmp/cri-mini-kubelet.XXXXXX)
# The daemon runs from a copy (with cri-mini-shim, when built, next to it):
# other runs may rebuild bin/, and every process of this run is then known by
# its executable's path below $work, or (supervisors, pause processes) by the
# daemon's sealed in-memory copy of the shim it runs (see start_daemon).
mkdir "$work/bin"
src=${CRI_MINI_BIN:-bin/cri-mini}
cp "$src" "$work/bin/cri-mini"
[[ ! -x $(dirname "$src")/cri-mini-shim ]] || cp "$(dirname "$src")/cri-mini-shim" "$work/bin/"
BIN=$work/bin/cri-mini
sock=$work/cri-mini.sock
bridge=kube$(($$ % 100000))
subnet=10.179.$(($$ % 200)).0/24
cgroot=/cri-mini-kubelet-e2e-$$
kubelet_port=$((20000 + $$ % 10000)) # its HTTPS server (/stats/summary), loopback only
made_logs_dir='' made_state_dir=''
registry_pid='' daemon_pid='' kubelet_pid=''
sealed=' ' # device:inode of each daemon's sealed copy of the shim, space-separated
. e2e/lib.sh

crictl() { "$crictl_bin" --config "$work/crictl.yaml" "$@"; }

cleanup() {
	local rc=$? m h d pid cut_short=''
	trap - EXIT INT TERM
	# Cut short (Ctrl-C, an error): manifests remain. Taking them away lets
	# kubelet stop the pods and drop its pod cgroups itself; what kubelet
	# keeps then (pod cgroups, log links) is removed below without being
	# reported, as it is kubelet's, not cri-mini's.
	[[ -z $kubelet_pid ]] || kill -CONT "$kubelet_pid" 2>/dev/null || true # scenario 11 pauses it
	if compgen -G "$work/static/*.yaml" >/dev/null; then
		cut_short=1
		rm -f "$work"/static/*.yaml
		watch_while "$kubelet_pid" kubelet 30 no_ready_pods >/dev/null || true
	fi
	stop "$kubelet_pid" kubelet
	if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
		# Every pod went with its manifest before kubelet stopped; after a
		# failure some remain (and cri-mini keeps pods across restarts).
		m=$(crictl pods -q 2>/dev/null || true)
		[[ -z $m || -n $cut_short ]] || leak "pods $(echo "$m" | tr '\n' ' ')"
		crictl rmp --all --force >/dev/null 2>&1 || true
		m=$(crictl ps -a -q 2>/dev/null || true)
		[[ -z $m ]] || leak "containers $(echo "$m" | tr '\n' ' ')"
	fi
	stop "$daemon_pid" cri-mini
	stop "$registry_pid" registry
	if [[ -n ${E2E_ARTIFACTS:-} ]]; then
		mkdir -p "$E2E_ARTIFACTS"
		cp "$work"/daemon.log "$work"/kubelet.log "$E2E_ARTIFACTS"/ 2>/dev/null || true
	fi
	if ((rc != 0)); then
		for f in daemon kubelet; do
			[[ -f $work/$f.log ]] || continue
			echo "--- $f log (last 30 lines) ---" >&2
			tail -n 30 "$work/$f.log" >&2
		done
	fi
	# kubelet bind-mounts its root dir onto itself; that one is expected.
	umount "$work/kubelet" 2>/dev/null || true
	unmount_below "$work"
	for d in /proc/[0-9]*; do
		m=$(readlink "$d/exe" 2>/dev/null) || continue
		[[ $m == "$work/"* || $sealed == *" $(stat -L -c %d:%i "$d/exe" 2>/dev/null) "* ||
			($m == "$kubelet" && $(tr '\0' ' ' <"$d/cmdline") == *"$work/"*) ]] || continue
		leak "process ${d#/proc/} ($(tr '\0' ' ' <"$d/cmdline" | cut -c1-80))"
		kill -KILL "${d#/proc/}" 2>/dev/null || true
	done
	# kubelet's own cgroups (kubepods and its QoS classes, also made in the
	# v2 hierarchy) go with the root; a pod cgroup still there is a leak of
	# kubelet's, a cgroup below one (a container's, named by its ID, or a
	# pause's) one of cri-mini's.
	for h in /sys/fs/cgroup/*"$cgroot" /sys/fs/cgroup"$cgroot"; do
		[[ $driver == cgroupfs ]] || continue
		remove_cgroup_tree "$h" '@(|/kubepods|/kubepods/burstable|/kubepods/besteffort)' "$([[ -n $cut_short ]] || echo 1)"
	done
	# With systemd, kubelet's slices and cri-mini's scopes are units: a
	# container scope left is cri-mini's leak, a pod slice kubelet's.
	if [[ $driver == systemd ]]; then
		for m in $(systemctl list-units --all --plain --no-legend 'cri-mini-*.scope' 'kubepods-*pod*.slice' | awk '{print $1}'); do
			[[ $m == *.slice && -n $cut_short ]] || leak "unit $m"
		done
		systemctl stop kubepods.slice 2>/dev/null || true
	fi
	remove_bridge "$bridge"
	# The device plugin socket directory is fixed: /var/lib/kubelet/device-plugins.
	[[ -z $made_state_dir ]] || rm -rf /var/lib/kubelet
	if [[ -n $made_logs_dir ]]; then
		m=$(find /var/log/containers -mindepth 1 2>/dev/null | head -n 3 | tr '\n' ' ')
		[[ -z $m || -n $cut_short ]] || leak "container log links $m"
		rm -rf /var/log/containers
	fi
	finish "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# now: the time in milliseconds; since MS: the seconds from MS, to 0.1 s.
now() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
since() { local d=$(($(now) - $1)); printf '%d.%d' $((d / 1000)) $((d % 1000 / 100)); }

# watch_while PID NAME SECONDS CMD...: polls CMD every 0.3 s as long as
# process PID lives, for at most SECONDS; prints the seconds it took.
watch_while() {
	local pid=$1 name=$2 limit=$3 start
	shift 3
	start=$(now)
	until "$@"; do
		kill -0 "$pid" 2>/dev/null || { echo "run.sh: $name exited" >&2; return 1; }
		(($(now) - start < limit * 1000)) || return 1
		sleep 0.3
	done
	since "$start"
}

echo "run.sh: building and serving the offline images"
imgbuild=${IMGBUILD_BIN:-$work/imgbuild}
[[ -n ${IMGBUILD_BIN:-} ]] || go build -o "$imgbuild" ./e2e/cmd/imgbuild
"$imgbuild" -serve 127.0.0.1:0 ${IMGBUILD_LOAD:+-load "$IMGBUILD_LOAD"} -addr-file "$work/registry.addr" >"$work/imgbuild.log" 2>&1 &
registry_pid=$!
watch_while "$registry_pid" imgbuild 300 test -s "$work/registry.addr" >/dev/null ||
	{ tail -n 20 "$work/imgbuild.log" >&2; exit 1; }
registry=$(<"$work/registry.addr")

printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' "$sock" "$sock" >"$work/crictl.yaml"
mkdir -p "$work/net.d"
write_conflist "$work/net.d/10-kubelet-e2e.conflist" cri-mini-kubelet-e2e "$bridge" "$subnet" "$work/ipam"

daemon_up() { crictl version >/dev/null 2>&1; }
# start_daemon: starts cri-mini (again, after a crash: same state dirs).
start_daemon() {
	"$BIN" --root "$work/root" --runroot "$work/run" --listen "unix://$sock" --cgroup-driver "$driver" \
		--cni-config-dir "$work/net.d" --cni-plugin-dir "$CNI_PLUGINS" -v 2 \
		--registry-mirror "registry.k8s.io=http://$registry" \
		--insecure-registry "$registry" >>"$work/daemon.log" 2>&1 &
	daemon_pid=$!
	watch_while "$daemon_pid" cri-mini 20 daemon_up >/dev/null || { echo "run.sh: cri-mini not serving" >&2; return 1; }
	local fd
	for fd in /proc/"$daemon_pid"/fd/*; do
		[[ $(readlink "$fd") != /memfd:cri-mini* ]] || sealed+="$(stat -L -c %d:%i "$fd") "
	done
}
echo "run.sh: starting cri-mini (images from $registry)"
start_daemon

# With cgroupfs, kubelet wants its cgroup root to exist: in the one tree
# (v2), or in every v1 hierarchy with cpusets filled in. With systemd it
# keeps its default, kubepods.slice at the top.
if [[ $driver == systemd ]]; then
	cgroup_config="cgroupDriver: systemd"
elif [[ -n $unified ]]; then
	mkdir "/sys/fs/cgroup$cgroot"
	cgroup_config="cgroupDriver: cgroupfs"$'\n'"cgroupRoot: $cgroot"
else
	for h in /sys/fs/cgroup/*/; do
		h=${h%/}
		[[ $h == */unified ]] && continue
		mkdir "$h$cgroot"
		if [[ -f $h/cpuset.cpus ]]; then
			cat "$h/cpuset.cpus" >"$h$cgroot/cpuset.cpus"
			cat "$h/cpuset.mems" >"$h$cgroot/cpuset.mems"
		fi
	done
	# kubelet refuses cgroup v1 unless told otherwise.
	cgroup_config="cgroupDriver: cgroupfs"$'\n'"cgroupRoot: $cgroot"$'\n'"failCgroupV1: false"
fi
save_sysctls
[[ -e /var/log/containers ]] || made_logs_dir=1
[[ -e /var/lib/kubelet ]] || made_state_dir=1

mkdir -p "$work/static" "$work/pod-logs"
cat >"$work/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
$cgroup_config
failSwapOn: false
oomScoreAdj: 0
staticPodPath: $work/static
fileCheckFrequency: 2s
containerLogMaxSize: 2Ki
containerLogMaxFiles: 3
containerLogMonitorInterval: 3s
podLogsDir: $work/pod-logs
volumePluginDir: $work/volume-plugins
makeIPTablesUtilChains: false
enableServer: true
port: $kubelet_port
readOnlyPort: 0
healthzPort: 0
address: 127.0.0.1
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%
  imagefs.available: 1%
EOF
start_kubelet() {
	"$kubelet" --config "$work/kubelet.yaml" --root-dir "$work/kubelet" --cert-dir "$work/kubelet-pki" \
		--hostname-override "$NODE" --v 2 ${KUBELET_FEATURE_GATES:+--feature-gates "$KUBELET_FEATURE_GATES"} \
		>>"$work/kubelet.log" 2>&1 &
	kubelet_pid=$!
}
echo "run.sh: starting kubelet $kubelet"
start_kubelet

# wait_for SECONDS CMD...: polls CMD while kubelet runs; prints the seconds it took.
wait_for() { watch_while "$kubelet_pid" kubelet "$@"; }

# add_manifest NAME: writes manifests/NAME.yaml atomically into the static
# pod directory (kubelet must not read a half-written file).
add_manifest() {
	cp "manifests/$1.yaml" "$work/static/.$1.tmp"
	mv "$work/static/.$1.tmp" "$work/static/$1.yaml"
}

# pod_id NAME: the sandbox of static pod NAME (named NAME-<node> by kubelet).
pod_id() { crictl pods --name "^$1-$NODE\$" -q; }
# attempts POD CONTAINER: "attempt state id" for each attempt of the
# container that kubelet keeps, newest first.
attempts() {
	local p id
	p=$(pod_id "$1")
	[[ -n $p ]] || return 0
	for id in $(crictl ps -a --pod "$p" --name "^$2\$" -q); do
		crictl inspect -o go-template --template '{{or .status.metadata.attempt 0}} {{.status.state}} {{.status.id}}{{"\n"}}' "$id"
	done | sort -rn
}
# newest POD CONTAINER FIELD: field 1 (attempt), 2 (state) or 3 (id) of the
# newest attempt; last_exited POD CONTAINER: the ID of the newest exited one.
newest() { attempts "$1" "$2" | awk -v f="$3" 'NR == 1 {print $f}'; }
last_exited() { attempts "$1" "$2" | awk '$2 == "CONTAINER_EXITED" {print $3; exit}'; }
exit_code() { crictl inspect -o go-template --template '{{.status.exitCode}}' "$1" 2>/dev/null; }
running() { [[ $(newest "$1" "$2" 2) == CONTAINER_RUNNING ]]; }
attempt_at_least() {
	local a
	a=$(newest "$1" "$2" 1)
	((${a:--1} >= $3))
}
pod_gone() { [[ -z $(pod_id "$1") ]]; }
pod_not_ready() { [[ -z $(crictl pods --name "^$1-$NODE\$" --state ready -q) ]]; }
logged() { crictl logs "$1" 2>&1 | grep -q "$2"; }
no_pods() { [[ -z $(crictl pods -q) ]]; }
no_ready_pods() { [[ -z $(crictl pods --state ready -q) ]]; }

results=() failed=0
# result N DESCRIPTION PASS|FAIL FIGURE
result() {
	results+=("$(printf '%-2s %-44s %-5s %s' "$1" "$2" "$3" "$4")")
	[[ $3 == PASS ]] || failed=1
}

echo "run.sh: adding the static pods"
for m in e2e-logger e2e-emptydir e2e-crashloop e2e-liveness e2e-resize e2e-privileged e2e-port80 e2e-userns; do add_manifest "$m"; done
added=$(now)

# ticks: the number of the logger's last line, read through crictl logs
# (a count of lines would drop when kubelet rotates the log); 0 while there
# is no logger to read, so that a failed scenario does not end the run.
ticks() { crictl logs --tail 1 "$(newest e2e-logger logger 3)" 2>/dev/null | awk '$1 == "tick" {n = $2} END {print n + 0}' || true; }
ticks_above() { (($(ticks) > $1)); }

# 1. Logs keep coming.
if t=$(wait_for 180 running e2e-logger logger); then
	sleep 2
	n1=$(ticks)
	# Polled: a rotation (scenario 8's small log size) can empty the log
	# for a moment, and a slow CPU (make test-v2) read an empty one.
	if t2=$(wait_for 15 ticks_above $((n1 + 2))); then
		result 1 "logger: a line a second in crictl logs" PASS "running after ${t}s; line $n1, then 3 more within ${t2}s"
	else
		result 1 "logger: a line a second in crictl logs" FAIL "line $n1, then line $(ticks) 15 s later"
	fi
else
	result 1 "logger: a line a second in crictl logs" FAIL "not running after 180 s"
fi

# 2. emptyDir shared between two containers.
if wait_for 60 running e2e-emptydir writer >/dev/null && t=$(wait_for 60 running e2e-emptydir reader); then
	id=$(newest e2e-emptydir reader 3)
	got=$(crictl exec "$id" cat /shared/msg || true)
	logged=$(wait_for 10 logged "$id" 'read: written-by-writer' >/dev/null && echo yes || echo no)
	if [[ $got == written-by-writer && $logged == yes ]]; then
		result 2 "emptyDir: reader sees the writer's file" PASS "exec cat: '$got'; reader logged it"
	else
		result 2 "emptyDir: reader sees the writer's file" FAIL "exec cat: '$got'; logged: $logged"
	fi
else
	result 2 "emptyDir: reader sees the writer's file" FAIL "containers not running after 60 s"
fi

# 3. Exit 3, restarted by kubelet.
if wait_for 150 attempt_at_least e2e-crashloop crasher 2 >/dev/null; then
	t=$(since "$added")
	code=$(exit_code "$(last_exited e2e-crashloop crasher)" || true)
	if [[ $code == 3 ]]; then
		result 3 "restart: exit 3 -> kubelet restarts it" PASS "attempt 2 ${t}s after the manifest; exit code 3"
	else
		result 3 "restart: exit 3 -> kubelet restarts it" FAIL "attempt 2 after ${t}s; exit code '$code'"
	fi
else
	result 3 "restart: exit 3 -> kubelet restarts it" FAIL "attempt '$(newest e2e-crashloop crasher 1)' after 150 s"
fi

# 4. Failing exec liveness probe -> restart.
# The container never exits by itself: the restart must be kubelet's doing,
# and kubelet must say it was the probe.
if wait_for 120 attempt_at_least e2e-liveness probed 1 >/dev/null; then
	t=$(since "$added")
	code=$(exit_code "$(last_exited e2e-liveness probed)" || true)
	if grep -q 'Container probed failed liveness probe, will be restarted' "$work/kubelet.log"; then
		result 4 "liveness: failing exec probe -> restart" PASS "attempt 1 ${t}s after the manifest (probe fails from 8 s); exit code $code"
	else
		result 4 "liveness: failing exec probe -> restart" FAIL "attempt 1 after ${t}s, but kubelet did not log a liveness failure"
	fi
else
	result 4 "liveness: failing exec probe -> restart" FAIL "attempt '$(newest e2e-liveness probed 1)' after 120 s"
fi

# state: the IDs and states of the steady pods (logger, emptyDir) and of
# their containers, to compare before and after a restart: nothing made
# again, nothing stopped.
state() {
	local name p id
	for name in e2e-emptydir e2e-logger; do
		for p in $(pod_id "$name"); do
			crictl inspectp -o go-template --template '{{.status.id}} {{.status.metadata.name}} {{.status.state}}{{"\n"}}' "$p"
			for id in $(crictl ps -a --pod "$p" -q); do
				crictl inspect -o go-template --template \
					'{{.status.id}} {{.status.metadata.name}} {{or .status.metadata.attempt 0}} {{.status.state}}{{"\n"}}' "$id"
			done
		done
	done | sort
}
# syncs_above N: kubelet has logged more than N "SyncLoop ADD" (pods read from the manifests).
syncs() { grep -c '"SyncLoop ADD"' "$work/kubelet.log" || true; }
syncs_above() { (($(syncs) > $1)); }

# 6. kubelet restarts: it takes the running pods back as they are.
before=$(state)
n=$(ticks) synced=$(syncs)
stop "$kubelet_pid" kubelet
start_kubelet
t=$(wait_for 30 syncs_above "$synced" || echo never)
sleep 15
after=$(state)
if [[ $before == "$after" ]] && wait_for 10 ticks_above "$n" >/dev/null; then  # a rotation may just have emptied the log
	result 6 "kubelet restart: pods taken back as they are" PASS "pods read again after ${t}s; same $(grep -c . <<<"$after") pod/container IDs and states 15 s later"
else
	result 6 "kubelet restart: pods taken back as they are" FAIL "changed: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | head -n 4 | tr '\n' ' '); logger line $(ticks), was $n"
fi

# 7. cri-mini is killed (SIGKILL) and started again under kubelet: the pods
# and containers keep running, kubelet makes none of them again, exec and
# logs still work.
before=$(state)
kill -KILL "$daemon_pid"
wait "$daemon_pid" 2>/dev/null || true
start=$(now)
if start_daemon; then
	up=$(since "$start")
	n=$(ticks)
	sleep 15
	after=$(state)
	got=$(crictl exec "$(newest e2e-emptydir reader 3)" cat /shared/msg 2>&1 || true)
	if [[ $before == "$after" && $got == written-by-writer ]] && wait_for 10 ticks_above "$n" >/dev/null; then
		result 7 "cri-mini kill -9 + restart under kubelet" PASS "serving after ${up}s; same $(grep -c . <<<"$after") IDs and states 15 s later; exec, logs work"
	else
		result 7 "cri-mini kill -9 + restart under kubelet" FAIL "exec: '$got'; changed: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | head -n 4 | tr '\n' ' ')"
	fi
else
	result 7 "cri-mini kill -9 + restart under kubelet" FAIL "cri-mini did not come back"
fi

# 8. kubelet rotates the logger's log (containerLogMaxSize 2Ki, ~140 bytes
# a line): it renames the file and asks cri-mini to reopen it
# (ReopenContainerLog); new lines must land in the new file.
logdir=$(find "$work/pod-logs" -maxdepth 1 -name 'default_e2e-logger-*' -print -quit)
rotated() { compgen -G "$logdir/logger/0.log.*" >/dev/null; }
if t=$(wait_for 60 rotated); then
	n=$(ticks)
	if wait_for 10 ticks_above "$n" >/dev/null; then
		result 8 "log rotation: ReopenContainerLog after rename" PASS "$(find "$logdir/logger" -name '0.log.*' | wc -l) rotated file(s); new lines after; $(grep -c 'ReopenContainerLog.*code="OK"' "$work/daemon.log") ReopenContainerLog OK"
	else
		result 8 "log rotation: ReopenContainerLog after rename" FAIL "rotated, but no new line in 10 s (reopens: $(grep -c 'ReopenContainerLog' "$work/daemon.log"))"
	fi
else
	result 8 "log rotation: ReopenContainerLog after rename" FAIL "no rotated file in $logdir/logger 60 s more (reopens: $(grep -c 'ReopenContainerLog' "$work/daemon.log"))"
fi

# 10. In-place resize: the CRI call kubelet makes to resize a running
# container (UpdateContainerResources; crictl update here, as a static
# pod's spec cannot be resized). It shrinks the limits, which kubelet does
# to the container before the pod's cgroup (growing, it raises the pod's
# first: cgroup v1 refuses a CPU quota above the parent's). kubelet copies
# the limits ContainerStatus reports into the pod's status, which its /pods
# endpoint serves for static pods, once it reads the pod's container
# statuses again: after a resize of its own it asks for that; here the
# stop of the pod's other container makes it. The cgroup has the limits.
# cgroup_value PID CONTROLLER V1FILE V2FILE: a file of the cgroup process PID
# is in: V1FILE in CONTROLLER's v1 hierarchy, or V2FILE in the one v2 tree.
cgroup_value() {
	local path
	if [[ -n $unified ]]; then
		path=$(sed -n 's/^0:://p' "/proc/$1/cgroup")
		cat "/sys/fs/cgroup$path/$4"
	else
		path=$(awk -F: -v c="$2" '{n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) print $3}' "/proc/$1/cgroup")
		cat "/sys/fs/cgroup/$2$path/$3"
	fi
}
kubelet_pods() { curl -sk --max-time 10 "https://127.0.0.1:$kubelet_port/pods"; }
resized_status() { kubelet_pods | grep -q '"limits":{"cpu":"250m","memory":"48Mi"}'; }
if wait_for 60 running e2e-resize resized >/dev/null; then
	id=$(newest e2e-resize resized 3)
	pid=$(crictl inspect -o go-template --template '{{.info.pid}}' "$id")
	if ! crictl update --cpu-period 100000 --cpu-quota 25000 --memory $((48 << 20)) "$id" >/dev/null ||
		! crictl stop "$(newest e2e-resize nudge 3)" >/dev/null; then
		result 10 "in-place resize: pod status shows new limits" FAIL "crictl update or stop refused"
	elif t=$(wait_for 150 resized_status); then
		mem=$(cgroup_value "$pid" memory memory.limit_in_bytes memory.max)
		quota=$(cgroup_value "$pid" cpu cpu.cfs_quota_us cpu.max)
		quota=${quota%% *} # v2's cpu.max: QUOTA PERIOD
		if [[ $mem == $((48 << 20)) && $quota == 25000 ]]; then
			result 10 "in-place resize: pod status shows new limits" PASS "kubelet's status has cpu 250m, memory 48Mi (was 500m, 64Mi) after ${t}s; cgroup too"
		else
			result 10 "in-place resize: pod status shows new limits" FAIL "status shows them, cgroup: memory $mem quota $quota"
		fi
	else
		result 10 "in-place resize: pod status shows new limits" FAIL "kubelet's status still has $(kubelet_pods | grep -o '"name":"resized"[^]]*"limits":{[^}]*}' | grep -o '"limits":{[^}]*}' | tail -1) after 150 s"
	fi
else
	result 10 "in-place resize: pod status shows new limits" FAIL "not running after 60 s"
fi

# 11. kubectl debug --target=web: kubelet creates the ephemeral container
# in the target's pid namespace (NamespaceMode TARGET with target_id); a
# static pod cannot get one, so run.sh makes the same CRI calls. kubelet
# stops a container it did not make as soon as it relists its pod (on a
# slow CPU before the exec is done), so it is paused (SIGSTOP) meanwhile.
if wait_for 60 running e2e-port80 web >/dev/null; then
	target=$(newest e2e-port80 web 3)
	kill -STOP "$kubelet_pid"
	printf '{"metadata":{"name":"debugger"},"image":{"image":"registry.k8s.io/e2e-test-images/busybox:1.29-2"},"command":["sleep","3600"],
	 "linux":{"security_context":{"namespace_options":{"pid":3,"target_id":"%s"}}}}\n' "$target" >"$work/debugger.json"
	printf '{"metadata":{"name":"e2e-port80-%s","namespace":"default","uid":"debug"}}\n' "$NODE" >"$work/debug-pod.json"
	if dbg=$(crictl create "$(pod_id e2e-port80)" "$work/debugger.json" "$work/debug-pod.json" 2>&1) && crictl start "$dbg" >/dev/null; then
		seen=$(crictl exec "$dbg" sh -c 'tr "\0" " " </proc/1/cmdline' 2>&1 || true)
		crictl rm -f "$dbg" >/dev/null 2>&1 || true
		kill -CONT "$kubelet_pid"
		if [[ $seen == "nc -ll -p 80 "* ]]; then
			result 11 "debug --target: the target's pid namespace" PASS "the debug container's PID 1 is the web container's: '$seen'"
		else
			result 11 "debug --target: the target's pid namespace" FAIL "PID 1 seen from the debug container: '$seen'"
		fi
	else
		kill -CONT "$kubelet_pid"
		result 11 "debug --target: the target's pid namespace" FAIL "create/start: $dbg"
	fi
else
	result 11 "debug --target: the target's pid namespace" FAIL "web not running after 60 s"
fi

# 12. A privileged pod: /sys read-write and a device of the host that no
# unprivileged container gets.
hostdev=$(find /dev -maxdepth 1 -type c ! -name null ! -name zero ! -name full ! -name random ! -name urandom \
	! -name tty ! -name ptmx ! -name console -printf '%f\n' | sort | head -n 1)
if wait_for 60 running e2e-privileged privileged >/dev/null; then
	id=$(newest e2e-privileged privileged 3)
	sys=$(crictl exec "$id" grep ' /sys sysfs ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1 || true)
	if [[ $sys == rw ]] && crictl exec "$id" test -c "/dev/$hostdev"; then
		result 12 "privileged: rw /sys and the host's devices" PASS "/sys $sys; the host's /dev/$hostdev present ($(crictl exec "$id" ls /dev | wc -l) entries in /dev)"
	else
		result 12 "privileged: rw /sys and the host's devices" FAIL "/sys '$sys'; /dev/$hostdev: $(crictl exec "$id" ls -l "/dev/$hostdev" 2>&1 || true)"
	fi
else
	result 12 "privileged: rw /sys and the host's devices" FAIL "not running after 60 s"
fi

# 13. A non-root container without capabilities serves on port 80.
if wait_for 60 running e2e-port80 web >/dev/null; then
	ip=$(crictl inspectp -o go-template --template '{{.status.network.ip}}' "$(pod_id e2e-port80)")
	got=$(timeout 10 bash -c "exec 3<>/dev/tcp/$ip/80 && cat <&3" 2>&1 || true)
	if [[ $got == bound-by-uid-1000 ]]; then
		result 13 "non-root pod serves on :80" PASS "$ip:80 answered '$got'"
	else
		result 13 "non-root pod serves on :80" FAIL "$ip:80 answered '$got'"
	fi
else
	result 13 "non-root pod serves on :80" FAIL "not running after 60 s"
fi

# 14. hostUsers: false. kubelet allocates the pod a range of 65536 host ids
# (a multiple of 65536, from 65536 on) and sends it with the pod and with
# every mount. Inside, root with that uid_map (through exec) logging its uid
# (the log's first lines, the uid_map among them, are rotated away by now);
# on the host the process is the range's first id; the emptyDir, idmapped,
# stores the container's file as the host's root's. The pod came with the
# others: it went through the restarts of 6 and 7 as its first attempt.
if wait_for 90 running e2e-userns userns >/dev/null; then
	id=$(newest e2e-userns userns 3)
	inside=$(crictl exec "$id" sh -c 'echo $(id -u) $(cat /proc/self/uid_map)' 2>&1 || true)
	pid=$(crictl inspect -o go-template --template '{{.info.pid}}' "$id")
	host=$(stat -c %u "/proc/$pid" 2>/dev/null || echo none)
	file=$(find "$work/kubelet/pods" -path '*empty-dir/data/file' -print -quit)
	owner=$(stat -c %u:%g "$file" 2>/dev/null || echo none)
	logged=$(wait_for 10 logged "$id" 'alive uid 0' >/dev/null && echo yes || echo no)
	attempt=$(newest e2e-userns userns 1)
	if [[ $host =~ ^[0-9]+$ ]] && ((host >= 65536 && host % 65536 == 0)) && [[ $inside == "0 0 $host 65536" &&
		$logged == yes && $owner == 0:0 && $attempt == 0 ]]; then
		result 14 "hostUsers: false: own user namespace" PASS "attempt 0 through the restarts; root inside (logged), uid $host on the host; exec shows uid_map '0 $host 65536'; emptyDir file 0:0 on disk"
	else
		result 14 "hostUsers: false: own user namespace" FAIL "exec: '$inside'; log: '$logged'; host uid '$host'; emptyDir file '$owner'; attempt '$attempt'"
	fi
else
	result 14 "hostUsers: false: own user namespace" FAIL "not running after 90 s: $(grep -m1 -o 'e2e-userns[^"]*user namespace[^"]*' "$work/kubelet.log" || true)"
fi

# 9. kubelet's /stats/summary carries cri-mini's figures (kubelet's CRI
# stats provider: ListPodSandboxStats, ListContainerStats, ImageFsInfo),
# with the containers' pressure (PSI) where the host has it.
summary=$(curl -sk --max-time 10 "https://127.0.0.1:$kubelet_port/stats/summary" || true)
pod_json=$(awk '/"podRef"/ {p = 0} /"name": "e2e-logger-'"$NODE"'"/ {p = 1} p' <<<"$summary")
cpu=$(grep -m1 -o '"usageCoreNanoSeconds": [0-9]*' <<<"$pod_json" | grep -o '[0-9]*$' || echo 0)
mem=$(grep -m1 -o '"workingSetBytes": [0-9]*' <<<"$pod_json" | grep -o '[0-9]*$' || echo 0)
psi=none
if [[ -f /sys/fs/cgroup/cpu.pressure || -f /sys/fs/cgroup/unified/cpu.pressure ]]; then
	psi=$(grep -c '"psi"' <<<"$pod_json" || true)
fi
if grep -q '"name": "logger"' <<<"$pod_json" && ((cpu > 0 && mem > 0)) && grep -q '"imageFs"' <<<"$summary" && [[ $psi != 0 ]]; then
	result 9 "kubelet /stats/summary from cri-mini's stats" PASS "logger pod: ${cpu} ns CPU, ${mem} B working set; imageFs reported; $psi PSI figures"
else
	result 9 "kubelet /stats/summary from cri-mini's stats" FAIL "cpu '$cpu' mem '$mem' psi '$psi' in: $(head -c 300 <<<"$summary" | tr '\n' ' ')"
fi

# 5. Removing a manifest tears the pod down.
start=$(now)
rm "$work/static/e2e-logger.yaml"
stopped=$(wait_for 60 pod_not_ready e2e-logger || echo never)
if wait_for 120 pod_gone e2e-logger >/dev/null; then
	result 5 "teardown: manifest removed -> pod gone" PASS "not ready after ${stopped}s, gone after $(since "$start")s"
else
	result 5 "teardown: manifest removed -> pod gone" FAIL "not ready after ${stopped}s, still listed after 120 s"
fi

echo "run.sh: removing the other static pods"
rm -f "$work"/static/*.yaml
all_gone=$(wait_for 180 no_pods) || { all_gone="not in 180 "; echo "run.sh: pods still there 180 s after their manifests went" >&2; }

echo
printf '%-2s %-44s %-5s %s\n' "#" scenario result measured
printf '%s\n' "${results[@]}" | sort -n
echo "   (all pods gone ${all_gone}s after the remaining manifests were removed)"
exit "$failed"
