#!/usr/bin/env bash
# base_setup: the minimum every Phoenix guest needs. Idempotent; safe to run again on a built layer.
# Runs as root inside the target: `pct exec` (LXC), cloud-init (VM, EC2). No arguments.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

packages=(ca-certificates curl gnupg locales tzdata python3 procps)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# A fixed locale and zone so logs and tools behave the same on every host.
if ! locale -a 2>/dev/null | grep -qx 'C.utf8'; then
    sed -i 's/^# *\(en_US.UTF-8\)/\1/' /etc/locale.gen
    locale-gen >/dev/null
fi
ln -sf /usr/share/zoneinfo/Etc/UTC /etc/localtime
echo Etc/UTC >/etc/timezone

apt-get clean
rm -rf /var/lib/apt/lists/*
