#!/usr/bin/env bash
# ollama: the ollama server at a pinned version, from its release tarball (ollama-linux-amd64.tgz), whose
# sha256 is pinned here per version and checked before anything is unpacked. Installs the tree under
# /usr/local (bin/ollama and lib/ollama, the CUDA runners included) and a system user `ollama` whose home
# holds the models. No unit and no model: the guest's ModelServer writes ollama.service from its config
# and pulls the model (`ollama pull`) once the server answers.
#
# Environment: PHOENIX_OLLAMA_VERSION (chain.json versions.ollama)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
: "${PHOENIX_OLLAMA_VERSION:?}"

# The release's sha256sum.txt entry for ollama-linux-amd64.tgz. A new version needs its line here.
case "$PHOENIX_OLLAMA_VERSION" in
    0.11.4) sha256=a388afb2ccf4e61a3d0de88f0d0600e9e1d67e56bbc9a011ee287f62780bee33 ;;
    *)
        echo "ollama: no sha256 pinned for ${PHOENIX_OLLAMA_VERSION} in features/ollama.sh" >&2
        exit 2
        ;;
esac

marker=/usr/local/lib/ollama/.phoenix-version
if [[ -x /usr/local/bin/ollama && "$(cat "$marker" 2>/dev/null)" == "$PHOENIX_OLLAMA_VERSION" ]]; then
    echo "ollama: ${PHOENIX_OLLAMA_VERSION} already installed"
    exit 0
fi

apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates curl python3
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
curl -fsSL -o "$tmp/ollama.tgz" \
    "https://github.com/ollama/ollama/releases/download/v${PHOENIX_OLLAMA_VERSION}/ollama-linux-amd64.tgz"
echo "${sha256}  $tmp/ollama.tgz" | sha256sum -c --quiet -
rm -rf /usr/local/lib/ollama  # an older version's runners must not linger beside the new ones
tar -C /usr/local -xzf "$tmp/ollama.tgz"
printf '%s\n' "$PHOENIX_OLLAMA_VERSION" >"$marker"
if ! id ollama >/dev/null 2>&1; then
    useradd --system --user-group --create-home --home-dir /usr/share/ollama --shell /usr/sbin/nologin ollama
fi
/usr/local/bin/ollama --version >/dev/null 2>&1 || true  # prints a warning without a running server
echo "ollama: installed ${PHOENIX_OLLAMA_VERSION}"
