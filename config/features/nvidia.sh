#!/usr/bin/env bash
# nvidia: the NVIDIA driver from NVIDIA's pinned runfile, checksum verified before it runs.
# In an LXC container only the userspace is installed (--no-kernel-module): the kernel module is the
# host's, and the two versions must match (Phoenix checks that before it runs this).
# In a VM or on EC2 the kernel module is built with DKMS.
#
# Environment: PHOENIX_NVIDIA_VERSION, PHOENIX_NVIDIA_RUNFILE_URL, PHOENIX_NVIDIA_SHA256,
#              PHOENIX_TARGET = lxc | vm | ec2
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
: "${PHOENIX_NVIDIA_VERSION:?}" "${PHOENIX_NVIDIA_RUNFILE_URL:?}" "${PHOENIX_NVIDIA_SHA256:?}"
target="${PHOENIX_TARGET:-lxc}"
case "$target" in
    lxc | vm | ec2) ;;
    *) echo "PHOENIX_TARGET must be lxc, vm or ec2, not '$target'" >&2; exit 2 ;;
esac

installed=""
if command -v nvidia-smi >/dev/null 2>&1; then
    installed="$(nvidia-smi --version 2>/dev/null | sed -n 's/^DRIVER version *: *//Ip' | head -n1 || true)"
fi
if [[ -z "$installed" && -e "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.${PHOENIX_NVIDIA_VERSION}" ]]; then
    installed="$PHOENIX_NVIDIA_VERSION"  # userspace present; nvidia-smi may lack a device to talk to
fi
if [[ "$installed" == "$PHOENIX_NVIDIA_VERSION" ]]; then
    echo "nvidia: ${PHOENIX_NVIDIA_VERSION} already installed"
    exit 0
fi

apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates curl kmod pkg-config libglvnd-dev
args=(--silent --no-questions --ui=none --no-nouveau-check --no-x-check)
if [[ "$target" == "lxc" ]]; then
    args+=(--no-kernel-module)
else
    apt-get install -y -qq --no-install-recommends dkms build-essential "linux-headers-$(uname -r)"
    args+=(--dkms)
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
runfile="$workdir/NVIDIA-${PHOENIX_NVIDIA_VERSION}.run"
curl -fsSL --retry 3 -o "$runfile" "$PHOENIX_NVIDIA_RUNFILE_URL"
echo "${PHOENIX_NVIDIA_SHA256}  ${runfile}" | sha256sum -c --quiet -
sh "$runfile" "${args[@]}"
echo "nvidia: installed ${PHOENIX_NVIDIA_VERSION} (${target})"
