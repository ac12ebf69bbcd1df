#!/usr/bin/env bash
# Build the pinned Pulumi CLI and its Python language host from their Go modules (`make pulumi`).
#
#   tools/pulumi/build.sh            build when missing, then print `pulumi version` (last line)
#   tools/pulumi/build.sh --bin-dir  print the directory the binaries are (or will be) in; builds nothing
#
# The cache lives outside the tracked tree, in $PHOENIX_CACHE (default ~/.cache/phoenix), under a
# directory named by the pinned version and a hash of the pins (both go.mod/go.sum pairs and this
# script): a changed pin builds into a new directory, an unchanged one is reused. Why each step is
# as it is: docs/pulumi-cli.md.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# The version a go.mod requires of a module, whether on a `require` line or inside a require block.
required() { awk -v m="$2" '$1 == "require" && $2 == m { print $3 } $1 == m { print $2 }' "$1" | head -n1; }
version="$(required "$here/go.mod" github.com/pulumi/pulumi/pkg/v3)"
langhost_version="$(required "$here/language-python/go.mod" github.com/pulumi/pulumi/sdk/v3)"
[[ -n "$version" && -n "$langhost_version" ]] || { echo "make pulumi: no pinned version in $here/go.mod" >&2; exit 3; }
key="$(cat "$here/go.mod" "$here/go.sum" "$here/language-python/go.mod" "$here/language-python/go.sum" \
    "$here/build.sh" | sha256sum | cut -c1-12)"
cache="${PHOENIX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phoenix}"
bin="$cache/pulumi/$version-$key/bin"

if [[ "${1:-}" == "--bin-dir" ]]; then
    echo "$bin"
    exit 0
fi

if [[ ! -f "$bin/.complete" ]]; then
    command -v go >/dev/null || { echo "make pulumi: Go is not on PATH (Go >= 1.26 builds the CLI)" >&2; exit 3; }
    mkdir -p "$bin"
    # Release-build settings of the Pulumi CLI: static, reproducible paths, its two build tags, and the
    # version stamped in (without it `pulumi version` says v3.0.0 and plugin checks misfire).
    export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"
    stamp="github.com/pulumi/pulumi/sdk/v3/go/common/version.Version"
    echo "make pulumi: building the Pulumi CLI $version (a few minutes on 2 cores) into $bin" >&2
    (cd "$here" && go build -trimpath -tags osusergo,grpcnotrace -ldflags "-X $stamp=$version" \
        -o "$bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
    echo "make pulumi: building the Python language host (sdk/v3 $langhost_version)" >&2
    (cd "$here/language-python" && go build -trimpath -tags osusergo,grpcnotrace \
        -ldflags "-X $stamp=$langhost_version" \
        -o "$bin/pulumi-language-python" github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python)
    # The two scripts the host and the engine run (the program's entry point, and the dynamic-provider
    # plugin) ship in the sdk/v3 module of the CLI's version, the one matching the Python SDK.
    sdk="$(cd "$here" && go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)"
    install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$bin/pulumi-language-python-exec"
    install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$bin/pulumi-resource-pulumi-python"
    touch "$bin/.complete"
fi

"$bin/pulumi" version
