#!/bin/bash
# TEST-ONLY stand-in for config/features/docker.sh, run by the lab's template chain (tests/lab/e2e.py).
# Never ship it.
#
# Why a stand-in: Debian's docker.io would need the network to install (the lab's containers have none),
# and dockerd needs cgroup delegation the lab's LXC does not give. This writes the NVIDIA container
# toolkit config the real script writes (no-cgroups, as LXC needs) and a `docker` CLI whose `info` lists
# the nvidia runtime only while that config is present, which is what the docker layer's smoke test asks.
# The e2e test edits REVISION to change this layer's script (a new key: docker and vllm are rebuilt).
set -euo pipefail

REVISION=1

: "${PHOENIX_DOCKER_VERSION:?pinned by the chain (versions.docker)}"
: "${PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION:?pinned by the chain (versions.nvidia_container_toolkit)}"
command -v nvidia-smi >/dev/null || {
    echo "docker stand-in: nvidia-smi is missing: this layer is not a clone of the gpu layer" >&2
    exit 1
}

install -d -m 0755 /etc/nvidia-container-runtime
cat >/etc/nvidia-container-runtime/config.toml <<'TOML'
# Written by the Phoenix lab's docker stand-in (test only), as the real feature's nvidia-ctk step does.
[nvidia-container-cli]
no-cgroups = true
TOML

cat >/usr/bin/docker <<DOCKER
#!/bin/sh
# TEST-ONLY stand-in for the docker CLI, installed by the Phoenix lab (tests/lab/standins): no daemon.
runtimes='"io.containerd.runc.v2":{"path":"runc"},"runc":{"path":"runc"}'
if grep -q '^no-cgroups = true' /etc/nvidia-container-runtime/config.toml 2>/dev/null; then
    runtimes="\$runtimes"',"nvidia":{"path":"nvidia-container-runtime"}'
fi
case "\$1 \$2 \$3" in
"info --format {{json .Runtimes}}") echo "{\$runtimes}" ;;
"info "*) echo "Server Version: $PHOENIX_DOCKER_VERSION (Phoenix lab stand-in, test only)"
    echo "Runtimes: \$runtimes" ;;
"version "*) echo "Docker version $PHOENIX_DOCKER_VERSION (Phoenix lab stand-in, test only)" ;;
*) echo "docker stand-in (Phoenix lab): only 'info' and 'version' are simulated" >&2; exit 1 ;;
esac
DOCKER
chmod 0755 /usr/bin/docker
printf 'docker=%s toolkit=%s revision=%s\n' "$PHOENIX_DOCKER_VERSION" \
    "$PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION" "$REVISION" >/etc/phoenix/docker
