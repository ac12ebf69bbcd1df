#!/usr/bin/env bash
# vllm: vLLM at a pinned version in its own virtualenv at /opt/vllm.
# A venv rather than the vllm-openai image: the service then runs directly under systemd in the
# container, with the GPUs the container was given, and no Docker-in-LXC layer between them.
#
# Environment: PHOENIX_VLLM_VERSION
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
: "${PHOENIX_VLLM_VERSION:?}"
venv=/opt/vllm

if [[ -x "$venv/bin/python" ]] &&
    [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("vllm"))' 2>/dev/null)" == "$PHOENIX_VLLM_VERSION" ]]; then
    echo "vllm: ${PHOENIX_VLLM_VERSION} already installed"
    exit 0
fi

apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv python3-dev gcc
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "vllm==${PHOENIX_VLLM_VERSION}"
echo "vllm: installed ${PHOENIX_VLLM_VERSION}"
