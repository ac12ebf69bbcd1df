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

# A container's declared environment (guests.json `environment`) reaches its init as `lxc.environment`
# lines, but systemd starts every service with a clean environment. This unit, early in boot, hands the
# variables named in PHOENIX_GUEST_ENVIRONMENT from init's environment to systemd (`set-environment`,
# one argv word each: values are never parsed or expanded), so the guest's services see them too.
install -d -m 0755 /usr/local/lib/phoenix /etc/systemd/system/sysinit.target.wants
cat >/usr/local/lib/phoenix/guest-environment <<'SH'
#!/bin/bash
# Phoenix (base layer): pass the container's declared environment from init to systemd's services.
set -euo pipefail
environ=${1:-/proc/1/environ}
declare -A found=()
while IFS= read -r -d '' pair; do
    found[${pair%%=*}]=${pair#*=}
done <"$environ"
names=${found[PHOENIX_GUEST_ENVIRONMENT]:-}
[[ -n $names ]] || exit 0
assignments=()
IFS=, read -r -a wanted <<<"$names"
for name in "${wanted[@]}"; do
    [[ -v found[$name] ]] && assignments+=("$name=${found[$name]}")
done
((${#assignments[@]})) && systemctl set-environment "${assignments[@]}"
exit 0
SH
chmod 0755 /usr/local/lib/phoenix/guest-environment
cat >/etc/systemd/system/phoenix-guest-environment.service <<'UNIT'
# Managed by Phoenix (base layer): see /usr/local/lib/phoenix/guest-environment.
[Unit]
Description=Phoenix: the container's declared environment for every service
DefaultDependencies=no
Before=sysinit.target
ConditionVirtualization=container

[Service]
Type=oneshot
ExecStart=/usr/local/lib/phoenix/guest-environment

[Install]
WantedBy=sysinit.target
UNIT
ln -sfn /etc/systemd/system/phoenix-guest-environment.service \
    /etc/systemd/system/sysinit.target.wants/phoenix-guest-environment.service

apt-get clean
rm -rf /var/lib/apt/lists/*
