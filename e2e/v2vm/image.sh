#!/usr/bin/env bash
# The guest of the v2 rig: Debian 12 with systemd as PID 1 and what the test
# suites use on a node (CNI plugins, iptables, busybox, util-linux tools).
# vm.sh names its cached image after a hash of this file, so any change
# here builds a new image on the next run.
#
#   image.sh packages          the packages mmdebstrap installs
#   image.sh customize ROOT    mmdebstrap's customize hook (runs on the host)
set -euo pipefail

packages() {
	local p=(
		# boot: systemd as PID 1, the system bus (systemd's D-Bus API and
		# kubelet's), udev, a kernel and an initramfs that finds the disk
		systemd systemd-sysv dbus udev kmod linux-image-amd64 initramfs-tools
		# what the suites run on a node
		containernetworking-plugins busybox-static iptables iproute2 util-linux
		procps psmisc socat curl jq ca-certificates e2fsprogs
	)
	local IFS=,
	echo "${p[*]}"
}

customize() {
	local r=$1
	echo cri-mini-v2 >"$r/etc/hostname"
	printf '127.0.0.1 localhost\n127.0.1.1 cri-mini-v2\n::1 localhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
	echo '/dev/vda / ext4 rw,noatime 0 1' >"$r/etc/fstab"
	chroot "$r" passwd -d root >/dev/null
	# Apt lists are of no use in a guest that never installs anything.
	rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin

	# The initramfs only has to find an ext4 root on virtio-blk; a small one
	# unpacks quickly under a software CPU.
	sed -i 's/^MODULES=.*/MODULES=list/' "$r/etc/initramfs-tools/initramfs.conf"
	printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic >"$r/etc/initramfs-tools/modules"
	chroot "$r" update-initramfs -u -k all >/dev/null 2>&1

	# Nothing periodic or interactive competes with the tests.
	local u
	for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
		fstrim.timer systemd-tmpfiles-clean.timer e2scrub_reap.service getty@tty1.service; do
		ln -sf /dev/null "$r/etc/systemd/system/$u"
	done
	mkdir -p "$r/etc/systemd/journald.conf.d"
	printf '[Journal]\nStorage=volatile\n' >"$r/etc/systemd/journald.conf.d/v2vm.conf"

	# At boot: mount the run's control share and hand over to the runner
	# vm.sh puts there, so that changes to the runner need no new image.
	cat >"$r/usr/local/sbin/v2vm-boot" <<'EOF'
#!/bin/bash
mkdir -p /run/v2vm
modprobe -a 9p 9pnet_virtio
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 v2vmctl /run/v2vm && [[ -f /run/v2vm/runner ]]; then
	exec bash /run/v2vm/runner
fi
echo "v2vm-boot: no control share" >/dev/ttyS0
EOF
	chmod 755 "$r/usr/local/sbin/v2vm-boot"
	# The command runs as a node's runtime would: a system service with its
	# own delegated cgroup, no limits, among systemd's units.
	cat >"$r/etc/systemd/system/v2vm-run.service" <<'EOF'
[Unit]
Description=cri-mini v2 rig: run the requested command, then power off
After=basic.target network.target
[Service]
Type=simple
ExecStart=/usr/local/sbin/v2vm-boot
Delegate=yes
TasksMax=infinity
LimitNOFILE=1048576
LimitMEMLOCK=infinity
[Install]
WantedBy=multi-user.target
EOF
	chroot "$r" systemctl enable v2vm-run.service >/dev/null 2>&1
}

case ${1:-} in
packages) packages ;;
customize) customize "$2" ;;
*) echo "usage: image.sh packages | customize ROOT" >&2; exit 2 ;;
esac
