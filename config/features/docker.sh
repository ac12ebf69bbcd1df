#!/usr/bin/env bash
# docker: Docker Engine and the NVIDIA container toolkit, both at pinned versions, from their apt repos.
# In an unprivileged LXC container the toolkit cannot manage device cgroups (the host does, via the
# container's devN entries), so `no-cgroups = true` is set there.
#
# Environment: PHOENIX_DOCKER_VERSION, PHOENIX_CONTAINERD_VERSION, PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION,
#              PHOENIX_TARGET = lxc | vm | ec2
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
: "${PHOENIX_DOCKER_VERSION:?}" "${PHOENIX_CONTAINERD_VERSION:?}" "${PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION:?}"
target="${PHOENIX_TARGET:-lxc}"
case "$target" in
    lxc | vm | ec2) ;;
    *) echo "PHOENIX_TARGET must be lxc, vm or ec2, not '$target'" >&2; exit 2 ;;
esac
codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
keyrings=/etc/apt/keyrings
install -m 0755 -d "$keyrings"

apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates curl gnupg

if [[ ! -s "$keyrings/docker.gpg" ]]; then
    curl -fsSL https://download.docker.com/linux/debian/gpg | gpg --dearmor -o "$keyrings/docker.gpg"
fi
echo "deb [arch=$(dpkg --print-architecture) signed-by=$keyrings/docker.gpg]" \
    "https://download.docker.com/linux/debian ${codename} stable" >/etc/apt/sources.list.d/docker.list

if [[ ! -s "$keyrings/nvidia-container-toolkit.gpg" ]]; then
    curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey |
        gpg --dearmor -o "$keyrings/nvidia-container-toolkit.gpg"
fi
echo "deb [signed-by=$keyrings/nvidia-container-toolkit.gpg]" \
    "https://nvidia.github.io/libnvidia-container/stable/deb/\$(ARCH) /" \
    >/etc/apt/sources.list.d/nvidia-container-toolkit.list

apt-get update -qq
ctk="$PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION"
apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "docker-ce=${PHOENIX_DOCKER_VERSION}" "docker-ce-cli=${PHOENIX_DOCKER_VERSION}" \
    "containerd.io=${PHOENIX_CONTAINERD_VERSION}" \
    "nvidia-container-toolkit=${ctk}" "nvidia-container-toolkit-base=${ctk}" \
    "libnvidia-container-tools=${ctk}" "libnvidia-container1=${ctk}"
# Hold every pinned package: the toolkit only requires libnvidia-container-tools >= its own version, so
# holding it alone lets an upgrade move the libraries off the pin.
apt-mark hold docker-ce docker-ce-cli containerd.io nvidia-container-toolkit nvidia-container-toolkit-base \
    libnvidia-container-tools libnvidia-container1 >/dev/null

nvidia-ctk runtime configure --runtime=docker
if [[ "$target" == "lxc" ]]; then
    nvidia-ctk config --in-place --set nvidia-container-cli.no-cgroups=true
fi
systemctl enable docker >/dev/null 2>&1 || true
systemctl restart docker 2>/dev/null || true
