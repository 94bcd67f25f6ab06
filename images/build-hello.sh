#!/usr/bin/env bash
# Builds the test image hoist-hello:local with no registry: a static musl build
# of the `hoist` binary copied into a FROM-scratch image (images/hoist-hello).
#
# Installs what it needs when missing: the rustup target
# x86_64-unknown-linux-musl and musl-gcc (Debian/Ubuntu package musl-tools,
# needed by crates that compile C, such as ring).
#
# Usage: images/build-hello.sh [TAG]      (default hoist-hello:local)
# Then:  hoist service create --driver docker --image hoist-hello:local ...
#        or: docker run --rm -p 8080:8080 hoist-hello:local
set -euo pipefail

tag="${1:-hoist-hello:local}"
target="x86_64-unknown-linux-musl"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! rustup target list --installed | grep -qx "$target"; then
    echo "==> rustup target add $target"
    rustup target add "$target"
fi

if ! command -v musl-gcc >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "musl-gcc is missing and this is not an apt system: install musl (musl-gcc) first" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "==> apt-get install -y musl-tools"
    $sudo apt-get update
    $sudo apt-get install -y musl-tools
fi

echo "==> cargo build --release --target $target -p hoist"
cd "$repo"
# C code (ring) must be compiled against musl too, not the host's glibc.
export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"
cargo build --release --target "$target" -p hoist

binary="${CARGO_TARGET_DIR:-$repo/target}/$target/release/hoist"
if ! file "$binary" 2>/dev/null | grep -q "static"; then
    # `file` may be absent; ldd is the fallback check.
    if ldd "$binary" >/dev/null 2>&1; then
        echo "warning: $binary looks dynamically linked; a scratch image cannot run it" >&2
    fi
fi

# A context with only the Dockerfile and the binary: sending the repository
# (and its target directory) to the engine would take minutes.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$repo/images/hoist-hello/Dockerfile" "$context/Dockerfile"
cp "$binary" "$context/hoist"

echo "==> docker build -t $tag"
docker build -t "$tag" "$context"
echo "built $tag"
