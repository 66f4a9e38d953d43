#!/usr/bin/env bash
# Runs Kubernetes' node e2e suite (k8s.io/kubernetes v1.37.2 test/e2e_node,
# its PR-gating set: [NodeConformance] without Flaky, Slow, Serial or
# Disruptive; or, with NODE_E2E_SET, its Slow or its Serial specs) against
# cri-mini, or against containerd + runc for comparison, offline:
#
#   e2e/node/run.sh [cri-mini|containerd]
#
#   1. builds cri-mini (make build), e2e_node.test, kubelet, agnhost and the
#      ginkgo CLI (cached, e2e/kubelet/build.sh), and for containerd
#      containerd 2.4.2 + runc (cached, bench/setup-containerd.sh);
#   2. serves the suite's images under their upstream names on a loopback
#      registry (e2e/cmd/imgbuild -agnhost) that the runtime mirrors
#      registry.k8s.io to;
#   3. starts the runtime with throw-away state, its own CNI network and a
#      second runtime handler named test-handler;
#   4. runs the suite with ginkgo: it starts etcd, an API server and a
#      namespace controller in process and kubelet (cgroupRoot "/", the
#      fixed /var/lib/kubelet) against the runtime; the specs of
#      e2e/node/skip.txt are skipped, each with its reason;
#   5. prints "N passed, N failed, N skipped" and a line per failed spec
#      with the first line of its failure, stops everything and deletes what
#      it made, restoring the sysctls kubelet changes, and reports whatever
#      was left behind (also after a failure or Ctrl-C).
# Needs root, the CNI plugins (/usr/lib/cni), jq, the ports the suite fixes,
# 6443 (API server), 10248, 10250 and 10255 (kubelet), and no other kubelet
# running (the device plugin directory is fixed too). The suite starts
# kubelet through systemd-run when that is on PATH and restarts and stops it
# with "sudo systemctl": it runs with e2e/node/fake-systemd first on PATH, a
# stand-in for the three that keeps its units below the run's directory
# (units/, calls.log the calls), systemd or not (this host has no systemd
# running and no sudo).
# Exit status 1 if a spec failed or something was left behind.
#
# Environment: CRI_MINI_BIN (default: make build, bin/cri-mini),
# NODE_E2E_SET (which [NodeConformance] specs: gating, the default, the
# PR-gating set; slow, those marked [Slow] but not [Serial]; serial, those
# marked [Serial], Slow or not, one process at a time; Flaky and Disruptive
# specs are never run, the groups of e2e/node/skip.txt always skipped),
# NODE_E2E_SPECS (a file of spec names, one a line, as e2e/node/ci-specs.txt:
# run only those, less the set's skips; default: the whole set), NODE_E2E_PROCS
# (parallel ginkgo processes, default 6; always 1 for serial), NODE_E2E_TIMEOUT
# (default 90m), E2E_ARTIFACTS (a directory to keep the JSON report and the
# logs in).
# The functions below run from the EXIT trap.
# shellcheck disable=SC2317
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNTIME=${1:-cri-mini}
SET=${NODE_E2E_SET:-gating}
CNI_PLUGINS=/usr/lib/cni
PORTS=(6443 10248 10250 10255)
[[ $RUNTIME == cri-mini || $RUNTIME == containerd ]] || { echo "run.sh: runtime $RUNTIME: want cri-mini or containerd" >&2; exit 2; }
[[ $SET == gating || $SET == slow || $SET == serial ]] || { echo "run.sh: NODE_E2E_SET=$SET: want gating, slow or serial" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "run.sh: needs root" >&2; exit 1; }
[[ -x $CNI_PLUGINS/bridge ]] || { echo "run.sh: CNI plugins missing: apt-get install containernetworking-plugins" >&2; exit 1; }
command -v jq >/dev/null || { echo "run.sh: jq missing: apt-get install jq" >&2; exit 1; }
for p in "${PORTS[@]}"; do
	! ss -Hltn "sport = :$p" | grep -q . || { echo "run.sh: port $p is in use; the suite needs it" >&2; exit 1; }
done
[[ ! -e /var/lib/kubelet ]] || { echo "run.sh: /var/lib/kubelet exists; the suite's kubelet uses that fixed root" >&2; exit 1; }
# Every kubelet serves device plugins at /var/lib/kubelet/device-plugins
# and empties that directory when it starts: another kubelet (a make
# kubelet-e2e) would take the suite's kubelet's socket.
if other=$(pgrep -x kubelet); then
	echo "run.sh: a kubelet runs already ($(echo "$other" | tr '\n' ' ')); it would share /var/lib/kubelet/device-plugins with the suite's" >&2
	exit 1
fi
crictl_bin=$(command -v crictl || echo "$(go env GOPATH)/bin/crictl")
[[ -x $crictl_bin ]] || { echo "run.sh: crictl missing: go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0" >&2; exit 1; }

if [[ $RUNTIME == cri-mini && -z ${CRI_MINI_BIN:-} ]]; then
	make -s build
fi
mapfile -t k8s < <(e2e/kubelet/build.sh e2e_node.test kubelet agnhost ginkgo)
agnhost=${k8s[2]} ginkgo=${k8s[3]}
ctrd_bin=''
[[ $RUNTIME != containerd ]] || ctrd_bin=$(bench/setup-containerd.sh)

work=$(mktemp -d /tmp/cri-mini-node-e2e.XXXXXX)
# The suite runs from its own directory (ginkgo's choice), writes its
# kubelet's config and static pod directory there and looks for kubelet
# next to itself: both are linked into the run's directory, so that every
# process of the run is known by its executable's path below $work.
mkdir "$work/e2e"
ln "${k8s[0]}" "${k8s[1]}" "$work/e2e/" 2>/dev/null || cp "${k8s[0]}" "${k8s[1]}" "$work/e2e/"
suite=$work/e2e/e2e_node.test
sock=$work/runtime.sock
bridge=node$(($$ % 100000))
subnet=10.180.$(($$ % 200)).0/24
made_logs_dirs=() made_cgroups=()
registry_pid='' runtime_pid='' suite_status=0 suite_done=''
. e2e/lib.sh

crictl() { "$crictl_bin" --runtime-endpoint "unix://$sock" --timeout 60s "$@"; }

# ours PID: the process runs one of this run's programs: anything below
# $work (the suite, its kubelet, cri-mini), the ginkgo CLI or a containerd
# shim started for this run (their command lines name $work).
ours() {
	local exe
	exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
	[[ $exe == "$work/"* ]] && return 0
	[[ $exe == "$ginkgo" || ($ctrd_bin != '' && $exe == "$ctrd_bin/"*) ]] || return 1
	[[ $(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) == *"$work/"* ]]
}

cleanup() {
	local rc=$? m d pid
	trap - EXIT INT TERM
	# The suite stops kubelet, the API server and etcd itself; cut short,
	# its processes get SIGINT (the ginkgo CLI does not pass it on).
	for d in /proc/[0-9]*; do
		[[ $(readlink "$d/exe" 2>/dev/null) != "$suite" ]] || kill -INT "${d#/proc/}" 2>/dev/null || true
	done
	for _ in $(seq 300); do gone "$suite" && break; sleep 0.2; done
	# kubelet runs as a unit of the systemd stand-in, no child of the
	# suite's: the suite stops it when it ends (systemctl kill, then stop);
	# cut short, it may not have.
	if [[ -d $work/units ]]; then
		while read -r m _; do
			[[ -z $suite_done ]] || leak "unit $m of the systemd stand-in, still running"
			FAKE_SYSTEMD_STATE=$work/units "$work/fake-systemd/systemctl" stop "$m" || true
		done < <(FAKE_SYSTEMD_STATE=$work/units "$work/fake-systemd/systemctl" list-units --state=running --no-legend)
	fi
	for _ in $(seq 300); do gone "$work/e2e/" && break; sleep 0.2; done
	if [[ -n $runtime_pid ]] && kill -0 "$runtime_pid" 2>/dev/null; then
		# Pods of a cut-short run remain: the runtime removes them (kubelet
		# is gone by now), so that their mounts and network go too.
		crictl rmp --all --force >/dev/null 2>&1 || true
	fi
	stop "$runtime_pid" "$RUNTIME"
	stop "$registry_pid" registry
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		[[ $pid != "$$" ]] && ours "$pid" || continue
		leak "process $pid ($(tr '\0' ' ' <"$d/cmdline" | cut -c1-100))"
		kill -KILL "$pid" 2>/dev/null || true
	done
	if [[ -n ${E2E_ARTIFACTS:-} ]]; then
		mkdir -p "$E2E_ARTIFACTS"
		cp "$work"/runtime.log "$work"/report.json "$work"/suite.log "$E2E_ARTIFACTS"/ 2>/dev/null || true
		cp "$work"/report/kubelet.log "$E2E_ARTIFACTS"/ 2>/dev/null || true
		cp "$work"/units/calls.log "$E2E_ARTIFACTS"/systemd-calls.log 2>/dev/null || true
	fi
	# kubelet's pod volumes (secrets, projected, emptyDir on memory) and
	# its root bind mount.
	while IFS= read -r m; do
		umount -l "$m" 2>/dev/null || true
	done < <(awk 'index($5, "/var/lib/kubelet") == 1 {print $5}' /proc/self/mountinfo | sort -r)
	rm -rf /var/lib/kubelet
	unmount_below "$work"
	# kubelet's cgroups below cgroupRoot "/" (kubepods and its QoS
	# classes): a pod cgroup still there after a run that ended well is a
	# leak, a container cgroup of cri-mini's (cri-mini-<id>) always.
	for d in "${made_cgroups[@]}"; do
		remove_cgroup_tree "$d" '@(|/burstable|/besteffort)' "$((rc == 0))"
	done
	remove_bridge "$bridge"
	for d in "${made_logs_dirs[@]}"; do rm -rf "$d"; done
	finish "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# gone PREFIX: no process runs an executable whose path starts with PREFIX.
gone() {
	local d
	for d in /proc/[0-9]*; do
		[[ $(readlink "$d/exe" 2>/dev/null) != "$1"* ]] || return 1
	done
}

# wait_until SECONDS PID NAME CMD...: polls CMD while PID lives.
wait_until() {
	local limit=$1 pid=$2 name=$3
	shift 3
	for _ in $(seq $((limit * 5))); do
		"$@" && return 0
		kill -0 "$pid" 2>/dev/null || { echo "run.sh: $name exited" >&2; return 1; }
		sleep 0.2
	done
	echo "run.sh: $name not ready after ${limit}s" >&2
	return 1
}

echo "run.sh: building and serving the node e2e images"
go build -o "$work/imgbuild" ./e2e/cmd/imgbuild
k8s_src=$(cd "$(dirname "$agnhost")" && GOFLAGS=-mod=mod GOWORK=off go list -m -f '{{.Dir}}' k8s.io/kubernetes)
"$work/imgbuild" -agnhost "$agnhost" -agnhost-tls "$k8s_src/test/images/agnhost/porter" -serve 127.0.0.1:0 -addr-file "$work/registry.addr" >"$work/imgbuild.log" 2>&1 &
registry_pid=$!
wait_until 600 "$registry_pid" imgbuild test -s "$work/registry.addr" || { tail -n 20 "$work/imgbuild.log" >&2; exit 1; }
registry=$(<"$work/registry.addr")

mkdir -p "$work/net.d"
write_conflist "$work/net.d/10-node-e2e.conflist" cri-mini-node-e2e "$bridge" "$subnet" "$work/ipam"

runtime_up() { crictl info >/dev/null 2>&1; }
echo "run.sh: starting $RUNTIME (images from $registry)"
if [[ $RUNTIME == cri-mini ]]; then
	# The Serial set's private-registry specs pull from a plain-HTTP
	# registry the suite serves on the node's loopback: declared, as an
	# admin declares such a registry (cri-mini refuses undeclared ones).
	registry_flags=(--insecure-registry "$registry")
	[[ $SET != serial ]] || registry_flags+=(--insecure-registry localhost:5000)
	mkdir "$work/bin"
	src=${CRI_MINI_BIN:-bin/cri-mini}
	cp "$src" "$work/bin/cri-mini"
	[[ ! -x $(dirname "$src")/cri-mini-shim ]] || cp "$(dirname "$src")/cri-mini-shim" "$work/bin/"
	"$work/bin/cri-mini" --root "$work/root" --runroot "$work/run" --listen "unix://$sock" \
		--cni-config-dir "$work/net.d" --cni-plugin-dir "$CNI_PLUGINS" -v 2 --runtime-handler test-handler \
		--registry-mirror "registry.k8s.io=http://$registry" "${registry_flags[@]}" >"$work/runtime.log" 2>&1 &
else
	mkdir -p "$work/certs.d/registry.k8s.io"
	printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$registry" "$registry" \
		>"$work/certs.d/registry.k8s.io/hosts.toml"
	sed -e "s#@WORK@#$work#g" -e "s#@SOCK@#$sock#g" -e "s#@BIN@#$ctrd_bin#g" -e "s#@CNI@#$CNI_PLUGINS#g" \
		e2e/node/containerd.toml >"$work/containerd.toml"
	PATH=$ctrd_bin:$PATH "$ctrd_bin/containerd" --config "$work/containerd.toml" >"$work/runtime.log" 2>&1 &
fi
runtime_pid=$!
wait_until 60 "$runtime_pid" "$RUNTIME" runtime_up || { tail -n 20 "$work/runtime.log" >&2; exit 1; }

save_sysctls
for d in /var/log/pods /var/log/containers; do
	[[ -e $d ]] || made_logs_dirs+=("$d")
done
# kubelet makes kubepods below cgroupRoot "/" in every hierarchy (the
# unified one of a hybrid host too) and leaves it when it stops.
for d in /sys/fs/cgroup/*/; do
	[[ -e ${d}kubepods ]] || made_cgroups+=("${d}kubepods")
done

# systemd-run, systemctl and sudo for the suite: the stand-in's (a copy,
# so that the run does not depend on the tree's files changing under it).
cp -r e2e/node/fake-systemd "$work/fake-systemd"
suite_path=$work/fake-systemd:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

mkdir -p "$work/report" "$work/tmp"
cat >"$work/kubelet-base.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
makeIPTablesUtilChains: false
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
podCIDR: "$subnet"
volumeStatsAggPeriod: 10s
fileCheckFrequency: 10s
serializeImagePulls: false
evictionPressureTransitionPeriod: 30s
# Pod and container stats from the runtime (CRI), not cAdvisor, as
# containerd's own node e2e check runs kubelet: cAdvisor knows only
# containerd's and CRI-O's containers.
featureGates:
  PodAndContainerStatsFromCRI: true
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  nodefs.inodesFree: 2%
  imagefs.available: 2%
EOF

# The set: its skips, its focus (both marks, in either order: the text
# ginkgo matches has them where the Describe and It put them) and processes.
procs=${NODE_E2E_PROCS:-6} focus='\[NodeConformance\]'
case $SET in
gating) skip='\[Flaky\]|\[Slow\]|\[Serial\]|\[Disruptive\]' ;;
slow)
	skip='\[Flaky\]|\[Serial\]|\[Disruptive\]'
	focus='\[NodeConformance\].*\[Slow\]|\[Slow\].*\[NodeConformance\]'
	;;
serial)
	# [Serial] specs restart kubelet, change its configuration or fill the
	# node: nothing else may run beside them.
	skip='\[Flaky\]|\[Disruptive\]' procs=1
	focus='\[NodeConformance\].*\[Serial\]|\[Serial\].*\[NodeConformance\]'
	;;
esac
while IFS= read -r line; do
	[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
	skip+="|$(sed 's/[[:space:]]*|.*$//' <<<"$line")"
done <e2e/node/skip.txt
args=(--procs="$procs" --timeout="${NODE_E2E_TIMEOUT:-90m}" --no-color
	--label-filter=NodeConformance --skip="$skip" --json-report="$work/report.json")
if [[ -n ${NODE_E2E_SPECS:-} ]]; then
	# The spec names as regular expressions, each matched to its end (the
	# text ginkgo matches has more in front).
	while IFS= read -r line; do
		[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
		args+=(--focus="$(sed 's/[][\\.^$*+?(){}|]/\\&/g' <<<"$line")\$")
	done <"$NODE_E2E_SPECS"
else
	args+=(--focus="$focus")
fi
suite_args=(--container-runtime-endpoint="unix://$sock" --image-service-endpoint="unix://$sock"
	--prepull-images=false --kubelet-config-file="$work/kubelet-base.yaml"
	"--kubelet-flags=--cluster-domain=cluster.local --runtime-cgroups= --kubelet-cgroups= --system-cgroups= --fail-cgroupv1=false"
	--dns-domain=cluster.local --node-name="$(hostname)" --report-dir="$work/report")

echo "run.sh: $ginkgo ${args[*]} $suite -- ${suite_args[*]}"
start=$SECONDS
# In the background: a signal to this script is handled (by cleanup) at
# once, not after the suite.
(cd "$work" && PATH=$suite_path TMPDIR=$work/tmp FAKE_SYSTEMD_STATE=$work/units exec "$ginkgo" run "${args[@]}" "$suite" -- "${suite_args[@]}") >"$work/suite.log" 2>&1 &
wait $! || suite_status=$?
suite_done=1
took=$((SECONDS - start))

if [[ ! -s $work/report.json ]]; then
	tail -n 40 "$work/suite.log" >&2
	echo "run.sh: the suite wrote no report (exit $suite_status)" >&2
	exit 1
fi
# The specs of the selection: the set's, or the listed ones.
selected='def name: [.ContainerHierarchyTexts[], .LeafNodeText] | join(" ");
	def selected: if $list != "" then (name as $n | $list | split("\n") | any(. == $n))
		elif $set == "slow" then (name | test("\\[NodeConformance\\]") and test("\\[Slow\\]") and (test("\\[(Flaky|Serial|Disruptive)\\]") | not))
		elif $set == "serial" then (name | test("\\[NodeConformance\\]") and test("\\[Serial\\]") and (test("\\[(Flaky|Disruptive)\\]") | not))
		else (name | test("\\[NodeConformance\\]") and (test("\\[(Flaky|Slow|Serial|Disruptive)\\]") | not)) end;
	def failed: .State | IN("failed", "panicked", "timedout", "interrupted", "aborted");
	[.[].SpecReports[] | select(.LeafNodeType == "It")]'
list=''
[[ -z ${NODE_E2E_SPECS:-} ]] || list=$(grep -v '^[[:space:]]*\(#\|$\)' "$NODE_E2E_SPECS")
# One line per failed spec: its name and the first line of its failure.
jq -r --arg list "$list" --arg set "$SET" "$selected"'[] | select(failed)
	| "failed: " + name + "\n    " + .State + ": "
	+ ((.Failure.Message // "") | split("\n") | map(select(test("\\S"))) | first // "" | .[0:240])' "$work/report.json"
read -r passed failed skipped < <(jq -r --arg list "$list" --arg set "$SET" "$selected"' | map(select(selected))
	| [(map(select(.State == "passed")) | length), (map(select(failed)) | length), (map(select(.State | IN("skipped", "pending"))) | length)]
	| @tsv' "$work/report.json")
what=''
[[ $SET == gating ]] || what=" ($SET set)"
echo "node e2e$what against $RUNTIME: $((passed + failed)) specs ran in $((took / 60))m$((took % 60))s ($skipped skipped: e2e/node/skip.txt, or by the suite itself)"
echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0 && suite_status == 0)) || exit 1
