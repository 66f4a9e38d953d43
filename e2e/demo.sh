#!/usr/bin/env bash
# demo.sh: cri-mini's main job on a fresh Debian machine with Go, as root.
# Installs what it needs, builds cri-mini, starts the daemon with its embedded
# defaults in a throw-away directory, brings in a busybox image without any
# public registry (built from Debian's busybox-static, loaded with
# `cri-mini image import`), runs a pod and a container through crictl, shows
# its logs and an exec, and removes everything again.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$HOME/go/bin:$PATH

if ! command -v crictl >/dev/null || [ ! -x /usr/lib/cni/bridge ]; then
	echo "== installing CNI plugins, iptables and crictl"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		containernetworking-plugins iptables busybox-static >/dev/null
	go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0
fi
make -s build

work=$(mktemp -d /tmp/cri-mini-demo.XXXXXX)
sock=$work/cri-mini.sock
daemon=
cleanup() {
	set +e
	if [ -n "$daemon" ]; then
		for p in $(crictl -r "unix://$sock" pods -q 2>/dev/null); do
			crictl -r "unix://$sock" stopp "$p" >/dev/null
			crictl -r "unix://$sock" rmp "$p" >/dev/null
		done
		kill "$daemon"; wait "$daemon" 2>/dev/null
	fi
	grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
	rm -rf "$work"
	ip link del cri-mini-demo0 2>/dev/null
	echo "== cleaned up"
}
trap cleanup EXIT

mkdir -p "$work/net.d"
cat >"$work/net.d/10-demo.conflist" <<JSON
{"cniVersion":"1.0.0","name":"cri-mini-demo","plugins":[
 {"type":"bridge","bridge":"cri-mini-demo0","isGateway":true,"ipMasq":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.89.0.0/24"}]],"dataDir":"$work/ipam"}},
 {"type":"portmap","capabilities":{"portMappings":true}},
 {"type":"loopback"}]}
JSON

echo "== starting cri-mini"
./bin/cri-mini --listen "unix://$sock" --root "$work/root" --runroot "$work/run" \
	--cni-config-dir "$work/net.d" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 10\n' "$sock" "$sock" >"$work/crictl.yaml"
crictl() { command crictl --config "$work/crictl.yaml" "$@"; }

crictl version
cat >"$work/pod.json" <<JSON
{"metadata":{"name":"demo","namespace":"default","uid":"demo-uid","attempt":0},
 "hostname":"demo","log_directory":"$work/logs",
 "dns_config":{"servers":["10.89.0.1"],"searches":["demo.local"],"options":["ndots:2"]},
 "linux":{}}
JSON
echo "== runp"
pod=$(crictl runp "$work/pod.json")
crictl pods
echo "== the pod"
crictl inspectp -o go-template --template 'state {{.status.state}}, IP {{.status.network.ip}}{{"\n"}}' "$pod"
echo "== its resolv.conf, from the pod's DNS config (recipe R2)"
cat "$work/run/pods/$pod/resolv.conf"
echo "== a busybox image built locally, loaded with cri-mini image import (no registry)"
go build -o "$work/imgbuild" ./e2e/cmd/imgbuild
"$work/imgbuild" -save "$work/busybox.tar" -only '^e2e-test-images/busybox:1.29-2$'
./bin/cri-mini image import --root "$work/root" "$work/busybox.tar"
crictl images
cat >"$work/ctr.json" <<JSON
{"metadata":{"name":"hello"},"image":{"image":"registry.k8s.io/e2e-test-images/busybox:1.29-2"},
 "command":["sh","-c","while true; do echo hello from \$(hostname), pid \$\$; sleep 1; done"],
 "log_path":"hello.log","linux":{}}
JSON
echo "== create + start a container in the pod"
ctr=$(crictl create "$pod" "$work/ctr.json" "$work/pod.json")
crictl start "$ctr"
sleep 2
crictl ps
echo "== its logs (CRI format on disk, written by its supervisor)"
crictl logs "$ctr"
echo "== an exec: the container's view of the world"
crictl exec "$ctr" sh -c 'echo "hostname $(hostname), I am $(id -u), PID 1 is $(cat /proc/1/cmdline | tr "\0" " ")"; grep -c . /proc/self/mountinfo | sed "s/^/mounts: /"'
echo "== stop + remove the container"
crictl stop -t 2 "$ctr"
crictl rm "$ctr"
echo "== stopp / rmp"
crictl stopp "$pod"
crictl rmp "$pod"
crictl pods
