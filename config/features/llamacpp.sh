#!/usr/bin/env bash
# llamacpp: llama.cpp's llama-server built from a pinned release tag with CUDA, installed as
# /usr/local/bin/llama-server. The tag's commit is pinned here per version and checked after the fetch,
# so a moved tag cannot change what is built. Static libraries (BUILD_SHARED_LIBS=OFF): one binary,
# nothing left pointing into the build tree. The CUDA
# toolkit comes from NVIDIA's Debian 12 repository at the pinned release (versions.cuda_toolkit, e.g.
# 12-8 for the cuda-toolkit-12-8 package); the build runs on the layer's build container.
# No unit: the guest's ModelServer writes llama-server.service from its config.
#
# Environment: PHOENIX_LLAMACPP_VERSION (a tag like b6070), PHOENIX_CUDA_TOOLKIT_VERSION
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
: "${PHOENIX_LLAMACPP_VERSION:?}" "${PHOENIX_CUDA_TOOLKIT_VERSION:?}"

# The commit each release tag points at (git ls-remote --tags). A new version needs its line here.
case "$PHOENIX_LLAMACPP_VERSION" in
    b6070) commit=15e92fd33791e60a4ddb5970b47242a855c27117 ;;
    *)
        echo "llamacpp: no commit pinned for ${PHOENIX_LLAMACPP_VERSION} in features/llamacpp.sh" >&2
        exit 2
        ;;
esac

marker=/usr/local/lib/llama.cpp.phoenix-version
if [[ -x /usr/local/bin/llama-server && "$(cat "$marker" 2>/dev/null)" == "$PHOENIX_LLAMACPP_VERSION" ]]; then
    echo "llamacpp: ${PHOENIX_LLAMACPP_VERSION} already installed"
    exit 0
fi

keyrings=/etc/apt/keyrings
install -m 0755 -d "$keyrings"
apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates curl gnupg git cmake build-essential \
    libcurl4-openssl-dev python3
if [[ ! -s "$keyrings/cuda.gpg" ]]; then
    curl -fsSL https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/3bf863cc.pub |
        gpg --dearmor -o "$keyrings/cuda.gpg"
fi
echo "deb [signed-by=$keyrings/cuda.gpg] https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/ /" \
    >/etc/apt/sources.list.d/cuda.list
apt-get update -qq
apt-get install -y -qq --no-install-recommends "cuda-toolkit-${PHOENIX_CUDA_TOOLKIT_VERSION}"
cuda="/usr/local/cuda-${PHOENIX_CUDA_TOOLKIT_VERSION//-/.}"

src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
git -C "$src" init -q
git -C "$src" fetch -q --depth 1 https://github.com/ggml-org/llama.cpp.git "refs/tags/${PHOENIX_LLAMACPP_VERSION}"
git -C "$src" checkout -q --detach FETCH_HEAD
got="$(git -C "$src" rev-parse HEAD)"
if [[ "$got" != "$commit" ]]; then
    echo "llamacpp: tag ${PHOENIX_LLAMACPP_VERSION} is ${got}, not the pinned ${commit}" >&2
    exit 1
fi
cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DLLAMA_CURL=ON \
    -DCMAKE_CUDA_COMPILER="$cuda/bin/nvcc" -DCMAKE_INSTALL_PREFIX=/usr/local -DLLAMA_BUILD_TESTS=OFF -DBUILD_SHARED_LIBS=OFF
cmake --build "$src/build" --config Release -j "$(nproc)" --target llama-server
install -m 0755 "$src/build/bin/llama-server" /usr/local/bin/llama-server
printf '%s\n' "$PHOENIX_LLAMACPP_VERSION" >"$marker"
/usr/local/bin/llama-server --version
echo "llamacpp: built ${PHOENIX_LLAMACPP_VERSION} (${commit})"
