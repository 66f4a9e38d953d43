# shellcheck shell=bash
# Helpers the e2e run scripts source (e2e/critest/run.sh, e2e/kubelet/run.sh,
# e2e/node/run.sh): their CNI network, and for the two that drive kubelet,
# stopping what they started and removing what it left, each leftover
# reported through leak, which sets leaks=1. Those run from the scripts'
# EXIT traps.
# shellcheck disable=SC2317
leaks=0
shopt -s extglob # remove_cgroup_tree's KEEP
# Kernel settings kubelet changes at start (it expects panics on oops/OOM):
# save_sysctls before it starts, restore_sysctls after.
kubelet_sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
declare -A sysctl_saved=()

save_sysctls() {
	local m
	for m in "${kubelet_sysctls[@]}"; do
		sysctl_saved[$m]=$(sysctl -n "$m")
	done
}

restore_sysctls() {
	local m
	for m in "${!sysctl_saved[@]}"; do
		sysctl -qw "$m=${sysctl_saved[$m]}" || echo "run.sh: could not restore $m" >&2
	done
}

leak() { echo "run.sh: left behind: $*" >&2; leaks=1; }

# stop PID NAME: SIGTERM, then SIGKILL after 20 s (a leak: it should exit).
stop() {
	local pid=$1 name=$2
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid"
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
	if kill -0 "$pid" 2>/dev/null; then
		leak "$name did not exit on SIGTERM; killed"
		kill -KILL "$pid"
	fi
	wait "$pid" 2>/dev/null || true
}

# unmount_below DIR: every mount below DIR is a leak; each is detached.
unmount_below() {
	local m
	while IFS= read -r m; do
		leak "mount $m"
		umount -l "$m" || true
	done < <(awk -v d="$1/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
}

# remove_cgroup_tree DIR KEEP PODS: kills what is left in cgroup DIR (in
# one hierarchy) and below it and removes them all. A cgroup below DIR is
# reported, once (from the memory hierarchy on v1, the one tree on v2),
# unless its path below DIR matches the extended glob KEEP (kubelet's own
# levels, "" for DIR): a cgroup below a pod's (a container's, named by its
# ID, or the pause's) as cri-mini's always, another (a pod's, kubelet's)
# when PODS is 1.
remove_cgroup_tree() {
	local top=$1 keep=$2 pods=$3 d pid report=''
	[[ -d $top ]] || return 0
	[[ $top != /sys/fs/cgroup/memory/* && ! -f /sys/fs/cgroup/cgroup.controllers ]] || report=1
	while IFS= read -r d; do
		# shellcheck disable=SC2254 # KEEP is a pattern
		case ${d#"$top"} in
		$keep) ;;
		*/pod*/*) [[ -z $report ]] || leak "cgroup ${d#/sys/fs/cgroup/}" ;;
		*) [[ -z $report || $pods != 1 ]] || leak "cgroup ${d#/sys/fs/cgroup/}" ;;
		esac
		while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$d/cgroup.procs"
	done < <(find "$top" -depth -type d)
	find "$top" -depth -type d -exec rmdir {} + 2>/dev/null || { sleep 1; find "$top" -depth -type d -exec rmdir {} + 2>/dev/null; } ||
		leak "cgroup $top (cannot remove)"
}

# remove_bridge NAME: deletes the CNI bridge NAME; a veth still on it is a
# pod's, a leak.
remove_bridge() {
	local m
	ip link show "$1" >/dev/null 2>&1 || return 0
	m=$(ip -o link show master "$1" | awk -F': ' '{print $2}' | cut -d@ -f1 | tr '\n' ' ')
	[[ -z $m ]] || leak "veth $m"
	ip link delete "$1" || true
}

# write_conflist FILE NAME BRIDGE SUBNET IPAM_DIR: the run's CNI network
# NAME: a bridge with host-local addresses from SUBNET (kept in IPAM_DIR),
# hostPort through portmap, and loopback.
write_conflist() {
	cat >"$1" <<EOF
{"cniVersion": "1.0.0", "name": "$2", "plugins": [
 {"type": "bridge", "bridge": "$3", "isGateway": true, "ipMasq": true, "hairpinMode": true,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "$4"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$5"}},
 {"type": "portmap", "capabilities": {"portMappings": true}},
 {"type": "loopback"}]}
EOF
}

# finish RC: the end of a cleanup: restores the sysctls, removes the run's
# directory $work and exits with RC, or 1 if something was left behind.
finish() {
	restore_sysctls
	rm -rf "$work"
	((leaks == 0)) || set -- 1
	exit "$1"
}
