#!/usr/bin/env bash
# Installs whatever asterfleet needs and is missing: Debian packages first
# (after `apt-get update`), then a virtualenv with the pinned Python
# dependencies. Safe to run again: it does nothing when all is present.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
  python3 python3-venv python3-dev gcc make
  etcd-server etcd-client
  kamailio kamailio-extra-modules
  sip-tester
  iproute2 procps psmisc git curl
  keepalived
  buildah runc skopeo docker-registry busybox-static
  postgresql
  tshark
  chromium
  podman runc catatonit debootstrap prometheus systemd
  ngircd
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "asterfleet: missing Debian packages: ${missing[*]}" >&2
    echo "asterfleet: run as root, or: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 2
  fi
  echo "asterfleet: installing Debian packages: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Distribution packages start their own daemons on install; asterfleet runs
# its own instances on free ports, so stop the system ones when they run.
for unit in etcd kamailio; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$unit" 2>/dev/null; then
    systemctl stop "$unit" || true
  fi
done

PY=${PYTHON:-python3}
# Reinstalled when the pins or the compiled parser's sources change (the
# editable install compiles capture/_hepfast.pyx in place).
stamp=.venv/.installed-$(cat pyproject.toml setup.py src/asterfleet/capture/*.pyx | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
