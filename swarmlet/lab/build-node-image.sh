#!/bin/bash
# Build the lab's "bare server" image with debootstrap and `docker import`.
# Usage: build-node-image.sh TAG [MIRROR]
# The node has systemd (PID 1), sshd, dockerd and python3 - and nothing else:
# no pip, no venv, no swarmlet. Host keys are made at first boot, so every
# node (and every re-created node) has its own.
set -euo pipefail
tag=$1
mirror=${2:-http://deb.debian.org/debian}
work=$(mktemp -d /var/tmp/swarmlet-node-XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,openssh-server,docker.io,python3,iproute2,iptables,ca-certificates,procps,iputils-ping \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }

rm -f "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/systemd/system/ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate this node's own SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/ssh-hostkeys.service "$root/etc/systemd/system/multi-user.target.wants/ssh-hostkeys.service"
ln -sf /lib/systemd/system/ssh.service "$root/etc/systemd/system/multi-user.target.wants/ssh.service"
ln -sf /lib/systemd/system/docker.service "$root/etc/systemd/system/multi-user.target.wants/docker.service"
cat >"$root/etc/ssh/sshd_config.d/swarmlet-lab.conf" <<'CONF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
CONF
mkdir -p "$root/etc/docker" "$root/root/.ssh"
chmod 700 "$root/root/.ssh"
# Inner Docker networks well away from the outer engine's 172.17+/16 pools.
cat >"$root/etc/docker/daemon.json" <<'JSON'
{"bip": "10.231.0.1/24", "default-address-pools": [{"base": "10.232.0.0/16", "size": 24}]}
JSON
# Units that make no sense in a container, masked so boot is quick.
for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
         getty@tty1.service console-getty.service systemd-logind.service \
         systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service \
         systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount; do
  ln -sf /dev/null "$root/etc/systemd/system/$u"
done
: >"$root/etc/machine-id"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc "$root"/usr/share/man
tar -C "$root" -c . | docker import \
  -c 'CMD ["/sbin/init"]' -c 'ENV container=docker' \
  -c 'LABEL io.swarmlet.lab=node-image' - "$tag" >/dev/null
echo "$tag"
