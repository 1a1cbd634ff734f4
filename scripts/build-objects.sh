#!/usr/bin/env bash
# Builds every guest component of the repository:
#   example objects -> objects/dist/<name>.wasm          (hello, counter, calculator, kv)
#   test fixtures   -> tests/fixtures/dist/<name>.wasm   (misbehave, foreign)
# All Rust guests build in ONE cargo invocation (one lock, one target dir, one dependency build)
# with `--target wasm32-wasip2 --profile guest`, which emits components directly.
#
# Usage: scripts/build-objects.sh        (from any directory)
# Env:   CARGO_TARGET_DIR   cargo's target dir (default: <repo>/target)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET=wasm32-wasip2
PROFILE=guest
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT_DIR="$TARGET_DIR/$TARGET/$PROFILE"

RUST_OBJECTS=(hello counter calculator kv)
RUST_FIXTURES=(misbehave foreign)

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    echo "installing the $TARGET target" >&2
    rustup target add "$TARGET"
fi

packages=()
for name in "${RUST_OBJECTS[@]}" "${RUST_FIXTURES[@]}"; do
    packages+=(-p "$name")
done
CARGO_TARGET_DIR="$TARGET_DIR" cargo build --target "$TARGET" --profile "$PROFILE" "${packages[@]}"

# Copies a built component to DEST_DIR/<name>.wasm after checking it is a component
# (magic `\0asm`, then version 0x0d 0x00 and layer 0x01 0x00), and prints its size.
install_component() {
    local src="$1" dest_dir="$2" name
    name="$(basename "$src")"
    if [[ "$(head -c 8 "$src" | od -An -tx1 | tr -d ' \n')" != "0061736d0d000100" ]]; then
        echo "error: $src is not a WebAssembly component" >&2
        exit 1
    fi
    mkdir -p "$dest_dir"
    cp "$src" "$dest_dir/$name"
    printf '%-40s %8d bytes\n' "${dest_dir#"$ROOT"/}/$name" "$(wc -c <"$dest_dir/$name")"
}

for name in "${RUST_OBJECTS[@]}"; do
    install_component "$OUT_DIR/$name.wasm" "$ROOT/objects/dist"
done
for name in "${RUST_FIXTURES[@]}"; do
    install_component "$OUT_DIR/$name.wasm" "$ROOT/tests/fixtures/dist"
done

# --- Python objects ------------------------------------------------------------------------
# Hook for the Python guests (another issue): build each objects/python/<name>/ with
#   componentize-py -d "$ROOT/wit" -w object componentize app -o "$ROOT/objects/dist/<name>.wasm"
# (componentize-py==0.25.1, see TOOLCHAIN.md), then report it with the same size line, e.g.
#   build_python_objects   # defined here when objects/python/ exists
