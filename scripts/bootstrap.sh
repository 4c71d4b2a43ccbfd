#!/bin/bash
# Install what swarmlet needs on a fresh Debian (bookworm) machine, start the
# Docker engine if none runs, and install swarmlet itself (editable) with its
# test extras. Idempotent: a second run installs nothing and starts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(docker.io mmdebstrap busybox-static musl-tools openssh-client iproute2 curl
              wrk nginx-light haproxy procps psmisc chromium tmux
              etcd-server etcd-client pebble)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # nginx and haproxy are benchmark peers only: never leave their services running. etcd
  # (3.4, Go binaries needing only libc) is what the HA tests start on loopback and what
  # 'master ha' uploads to servers: its packaged service (where systemd runs) is stopped too.
  # pebble (with pebble-challtestsrv) is Let's Encrypt's test ACME CA: the edge's tests run it
  # on loopback and never ask a public CA.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for s in nginx haproxy; do (service "$s" stop || pkill -x "$s") >/dev/null 2>&1 || true; done
  (service etcd stop; systemctl disable etcd) >/dev/null 2>&1 || true
fi

if ! docker info >/dev/null 2>&1; then
  echo "bootstrap: starting dockerd"
  mkdir -p /var/log
  nohup dockerd >/var/log/swarmlet-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "bootstrap: dockerd did not start; see /var/log/swarmlet-dockerd.log" >&2; tail -20 /var/log/swarmlet-dockerd.log >&2; exit 1; }
fi

# Install (editable) unless this very checkout is what Python imports already.
here=$(pwd)
installed=$(cd / && python3 -c 'import os, swarmlet, swarmlet_agent, pytest, pytest_asyncio, hypothesis, acme, uvloop; print(os.path.dirname(os.path.dirname(swarmlet.__file__)) + "|" + os.path.dirname(os.path.dirname(swarmlet_agent.__file__)))' 2>/dev/null || true)
if [ "$installed" != "$here|$here" ]; then
  echo "bootstrap: installing swarmlet from $here (editable) with test extras"
  python3 -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
    | grep -v -e '^WARNING: Running pip as' -e 'is ignored: it is neither' || true
fi
(cd / && python3 -c "import swarmlet, swarmlet_agent") || { echo "bootstrap: swarmlet failed to install" >&2; exit 1; }
