#!/bin/bash
# TEST-ONLY stand-in for config/features/nvidia.sh, run by the lab's template chain (tests/lab/e2e.py).
# Never ship it.
#
# Why a stand-in: the lab has no NVIDIA GPU or driver and its containers have no network, so the real
# userspace install (the pinned runfile with --no-kernel-module) cannot run. This installs an `nvidia-smi`
# that answers the gpu layer's smoke test with the version Phoenix pinned (PHOENIX_NVIDIA_VERSION, which
# the config check ties to the host driver), so the test sees the pin travel from chain.json to the guest.
set -euo pipefail

: "${PHOENIX_NVIDIA_VERSION:?pinned by the chain (versions.nvidia)}"
test -f /etc/phoenix/base || {
    echo "nvidia stand-in: /etc/phoenix/base is missing: this layer is not a clone of the base layer" >&2
    exit 1
}

cat >/usr/bin/nvidia-smi <<SMI
#!/bin/sh
# TEST-ONLY stand-in for nvidia-smi, installed by the Phoenix lab (tests/lab/standins): no GPU behind it.
case "\$*" in
*--query-gpu=driver_version*) echo "$PHOENIX_NVIDIA_VERSION" ;;
*) echo "NVIDIA-SMI stand-in (Phoenix lab, test only)    Driver Version: $PHOENIX_NVIDIA_VERSION" ;;
esac
SMI
chmod 0755 /usr/bin/nvidia-smi
printf 'nvidia=%s\n' "$PHOENIX_NVIDIA_VERSION" >/etc/phoenix/nvidia
