#!/usr/bin/env bash
# vm.sh: a throw-away Debian 12 guest booted the way current nodes boot:
# systemd as PID 1 and the unified cgroup v2 hierarchy with every controller
# (cgroup_no_v1=all), to run cri-mini's tests where a v1 host cannot.
#
#   vm.sh build              build the guest image once (cached; image.sh)
#   vm.sh run CMD [ARG...]   boot, run CMD as root in a systemd service,
#                            stream its output, power off; exit with CMD's
#                            status (124 timeout, 125 the guest gave none)
#   vm.sh shell              boot to a root login on the serial console
#                            (no password; Ctrl-A x quits)
#
# Every run starts from the cached image through a copy-on-write snapshot
# (qemu snapshot=on): nothing a run does is kept. The directories in
# V2VM_SHARES are shared over 9p at the same paths, and CMD starts in the
# current directory when it is one of them (or below one).
#
# Environment:
#   V2VM_SHARES   "DIR[:ro] ..." host directories to share (default: none)
#   V2VM_ENV      names of variables to pass to CMD (the guest otherwise has
#                 a clean root environment)
#   V2VM_PATH     directories to put in front of CMD's PATH
#   V2VM_CPUS     vCPUs (default 2)      V2VM_MEM  MiB (default 3072)
#   V2VM_ACCEL    auto (default), kvm or tcg. auto takes KVM only when the
#                 CPU shows vmx or svm: a /dev/kvm without them (PVM, as in
#                 Firecracker sandboxes) cannot run a stock kernel.
#   V2VM_TIMEOUT  seconds before the guest is killed (default 5400)
#   V2VM_CONSOLE  1: also copy the guest's console (kernel, systemd) to stderr
#   CRI_MINI_V2VM_CACHE  image cache (default ~/.cache/cri-mini-v2vm)
# Needs root (mmdebstrap, 9p passthrough) and qemu-system-x86, qemu-utils,
# mmdebstrap, e2fsprogs (installed with apt-get when missing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CACHE=${CRI_MINI_V2VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cri-mini-v2vm}
CPUS=${V2VM_CPUS:-2}
MEM=${V2VM_MEM:-3072}
TIMEOUT=${V2VM_TIMEOUT:-5400}
# The image is named after its recipe: a changed recipe builds a new one.
IMAGE=$CACHE/image-$(sha256sum "$here/image.sh" | cut -c1-12)

log() { echo "vm.sh: $*" >&2; }
die() { log "$*"; exit 125; }

host_packages() {
	local missing=() p
	for p in qemu-system-x86 qemu-utils mmdebstrap e2fsprogs; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return
	log "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# apt_sources: the host's own Debian sources, so the guest comes from the
# same mirror (or snapshot) as the host.
apt_sources() {
	local f
	for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
		[[ -s $f ]] && grep -qE '^(deb |URIs:)' "$f" && { echo "$f"; return; }
	done
	die "no Debian apt sources on this host (/etc/apt/sources.list.d/debian.sources)"
}

build() {
	[[ -f $IMAGE/root.img ]] && return
	[[ $(id -u) == 0 ]] || die "needs root"
	host_packages
	mkdir -p "$CACHE"
	local work start=$SECONDS
	work=$(mktemp -d "$CACHE/build.XXXXXX")
	# shellcheck disable=SC2064 # expand now: the trap runs after work is out of scope
	trap "rm -rf '$work'" EXIT
	log "building the guest image (Debian 12, $(bash "$here/image.sh" packages | tr ',' ' '))"
	if ! nice mmdebstrap --mode=root --variant=minbase --include="$(bash "$here/image.sh" packages)" \
		--customize-hook="bash '$here/image.sh' customize \"\$1\"" \
		bookworm "$work/root" "$(apt_sources)" >"$work/mmdebstrap.log" 2>&1; then
		tail -n 30 "$work/mmdebstrap.log" >&2
		die "mmdebstrap failed"
	fi
	local kernel
	kernel=$(find "$work/root/boot" -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -n 1)
	mkdir "$work/image"
	cp "$work/root/boot/$kernel" "$work/image/vmlinuz"
	cp "$work/root/boot/initrd.img-${kernel#vmlinuz-}" "$work/image/initrd.img"
	# Sparse: the file takes only what the root file system uses.
	nice mkfs.ext4 -q -L root -d "$work/root" "$work/image/root.img" 6G
	rm -rf "$CACHE"/image-*
	mv "$work/image" "$IMAGE"
	rm -rf "$work"
	trap - EXIT
	log "image built in $((SECONDS - start)) s: $IMAGE (kernel ${kernel#vmlinuz-})"
}

accel() {
	case ${V2VM_ACCEL:-auto} in
	kvm | tcg) echo "$V2VM_ACCEL" ;;
	auto) if [[ -w /dev/kvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo; then echo kvm; else echo tcg; fi ;;
	*) die "V2VM_ACCEL must be auto, kvm or tcg" ;;
	esac
}

# runner is the second stage of the guest's boot unit, given to each run in
# the control share: it mounts the shares, runs the command and powers off.
runner() {
	cat <<'EOF'
ctl=/run/v2vm
say() { echo "v2vm: $*" >/dev/ttyS0; }
while read -r tag dir mode; do
	mkdir -p "$dir"
	mount -t 9p -o "trans=virtio,version=9p2000.L,msize=524288,cache=loose,$mode" "$tag" "$dir" || say "cannot mount $dir"
done <$ctl/shares
[[ -f $ctl/interactive ]] && exit 0 # the serial getty takes over
for _ in $(seq 100); do [[ -c /dev/hvc0 ]] && break; sleep 0.1; done
out=/dev/hvc0
[[ -c $out ]] || { say "no /dev/hvc0: output on the serial console"; out=/dev/ttyS0; }
export HOME=/root LANG=C.UTF-8 PATH=$(cat $ctl/path)/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cd "$(cat $ctl/cwd)"
bash $ctl/cmd </dev/null >$out 2>&1
echo $? >$ctl/rc.tmp
mv $ctl/rc.tmp $ctl/rc
sync
echo o >/proc/sysrq-trigger
EOF
}

tmp='' qemu_pid=''
cleanup() {
	[[ -z $qemu_pid ]] || kill "$qemu_pid" 2>/dev/null || true
	[[ -z $qemu_pid ]] || wait "$qemu_pid" 2>/dev/null || true
	[[ -z $tmp ]] || rm -rf "$tmp"
}

# boot run|shell [CMD...]
boot() {
	local mode=$1
	shift
	[[ $(id -u) == 0 ]] || die "needs root"
	build
	tmp=$(mktemp -d /tmp/cri-mini-v2vm.XXXXXX)
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	local ctl=$tmp/ctl a
	mkdir "$ctl"
	a=$(accel)
	local -a q=(qemu-system-x86_64 -nodefaults -no-user-config -display none -machine q35
		-smp "$CPUS" -m "$MEM" -no-reboot
		-kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img"
		-drive "file=$IMAGE/root.img,format=raw,if=virtio,snapshot=on,cache=unsafe"
		-device virtio-rng-pci
		-fsdev "local,id=ctl,path=$ctl,security_model=passthrough" -device virtio-9p-pci,fsdev=ctl,mount_tag=v2vmctl)
	if [[ $a == kvm ]]; then
		q+=(-accel kvm -cpu host)
	else
		# A smaller translation cache than qemu's 1 GiB default: as fast here,
		# and the host keeps the memory.
		q+=(-accel tcg,tb-size=256 -cpu max)
	fi
	local n=0 spec dir mode ro cwd
	cwd=$(pwd -P)
	echo / >"$ctl/cwd"
	for spec in ${V2VM_SHARES:-}; do
		dir=$(readlink -f "${spec%:ro}")
		[[ -d $dir ]] || die "share $dir is not a directory"
		mode=rw ro=''
		[[ $spec == *:ro ]] && mode=ro ro=,readonly=on
		q+=(-fsdev "local,id=s$n,path=$dir,security_model=passthrough$ro" -device "virtio-9p-pci,fsdev=s$n,mount_tag=s$n")
		echo "s$n $dir $mode" >>"$ctl/shares"
		[[ $cwd/ == "$dir"/* ]] && echo "$cwd" >"$ctl/cwd"
		n=$((n + 1))
	done
	touch "$ctl/shares"
	local p path=''
	for p in ${V2VM_PATH:-}; do path+="$p:"; done
	echo "$path" >"$ctl/path"
	runner >"$ctl/runner"
	{
		local v
		for v in ${V2VM_ENV:-}; do
			[[ -z ${!v+x} ]] || printf 'export %s=%q\n' "$v" "${!v}"
		done
		printf 'exec'
		printf ' %q' "$@"
		echo
	} >"$ctl/cmd"
	# unified hierarchy only, every controller in it; psi=1 as Debian's
	# kernel leaves pressure files off by default; huge pages for hugetlb.
	q+=(-append "root=/dev/vda rw console=ttyS0 panic=-1 mitigations=off quiet loglevel=4 net.ifnames=0 \
systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all psi=1 hugepages=16 systemd.show_status=0")
	if [[ $mode == shell ]]; then
		touch "$ctl/interactive"
		"${q[@]}" -serial mon:stdio
		return
	fi
	: >"$tmp/out"
	q+=(-serial "file:$tmp/console" -device virtio-serial-pci -chardev "file,id=out,path=$tmp/out" -device virtconsole,chardev=out)
	log "booting ($a, $CPUS vCPU, $MEM MiB)"
	local start=$SECONDS rc=0
	timeout "$TIMEOUT" "${q[@]}" </dev/null 2>"$tmp/qemu.err" &
	qemu_pid=$!
	if [[ ${V2VM_CONSOLE:-} == 1 ]]; then
		tail -n +1 -F --pid="$qemu_pid" "$tmp/console" >&2 2>/dev/null &
	fi
	tail -n +1 -f --pid="$qemu_pid" "$tmp/out"
	wait "$qemu_pid" || rc=$?
	qemu_pid=''
	if ((rc == 124)); then
		log "timed out after $TIMEOUT s; console tail:"
		tail -n 20 "$tmp/console" >&2
		return 124
	fi
	if [[ ! -f $ctl/rc ]]; then
		log "the guest stopped without an exit status; qemu and console tail:"
		cat "$tmp/qemu.err" >&2
		tail -n 40 "$tmp/console" >&2
		return 125
	fi
	rc=$(<"$ctl/rc")
	log "exit status $rc after $((SECONDS - start)) s (boot, run, power off)"
	return "$rc"
}

case ${1:-} in
build) build ;;
run)
	shift
	(($# > 0)) || die "usage: vm.sh run CMD [ARG...]"
	boot run "$@"
	;;
shell) boot shell ;;
*) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2 ;;
esac
