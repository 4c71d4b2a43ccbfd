#!/bin/bash
# Build the lab's "bare server" image with mmdebstrap and `docker import`.
# Usage: build-node-image.sh TAG [MIRROR]
# The node has systemd (PID 1), sshd, dockerd and python3 - and nothing else:
# no pip, no venv, no swarmlet. Host keys are made at first boot, so every
# node (and every re-created node) has its own.
# mmdebstrap, not debootstrap: it resolves and installs with apt and dpkg in one
# pass: the whole build (import included) took 34-39 s here, 62 s with
# debootstrap (the first e2e test of every clean CI run waits for it).
set -euo pipefail
tag=$1
mirror=${2:-http://deb.debian.org/debian}
work=$(mktemp -d /var/tmp/swarmlet-node-XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mmdebstrap --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=systemd,systemd-sysv,dbus,openssh-server,docker.io,python3,iproute2,iptables,ca-certificates,procps,iputils-ping \
  bookworm "$root" "$mirror" >"$work/mmdebstrap.log" 2>&1 || { tail -20 "$work/mmdebstrap.log" >&2; exit 1; }

bash "$(dirname "$0")/node-setup.sh" "$root"
tar -C "$root" -c . | docker import \
  -c 'CMD ["/sbin/init"]' -c 'ENV container=docker' \
  -c 'LABEL io.swarmlet.lab=node-image' - "$tag" >/dev/null
echo "$tag"
