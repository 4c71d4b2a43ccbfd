#!/bin/bash
# Turn a Debian rootfs (at $1, default /) into a lab "bare server": sshd and
# dockerd as systemd units, per-node host keys made at first boot, inner
# Docker networks away from the outer engine's, container-hostile units
# masked. Shared by the mmdebstrap build and the Dockerfile build.
set -euo pipefail
root=${1:-}
mkdir -p "$root/etc/systemd/system/multi-user.target.wants" "$root/etc/ssh/sshd_config.d"
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
         systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
         sys-kernel-tracing.mount dev-hugepages.mount sys-fs-fuse-connections.mount dev-mqueue.mount \
         systemd-pcrphase.service systemd-pcrphase-sysinit.service systemd-pcrphase-initrd.service \
         e2scrub_all.timer fstrim.timer dpkg-db-backup.timer systemd-ask-password-console.path \
         systemd-ask-password-wall.path systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
         systemd-firstboot.service systemd-random-seed.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$u"
done
: >"$root/etc/machine-id"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc "$root"/usr/share/man
