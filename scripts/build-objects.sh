#!/usr/bin/env bash
# Builds every guest component of the repository:
#   example objects -> objects/dist/<name>.wasm          (hello, counter, calculator, kv, auth, blog, chat, reminder)
#   test fixtures   -> tests/fixtures/dist/<name>.wasm   (misbehave, foreign, legacy)
#   Python objects  -> objects/dist/py-<name>.wasm       (hello, counter, calculator, auth, blog, chat, reminder)
#   Python fixtures -> tests/fixtures/dist/py-<name>.wasm (kv)
# All Rust guests build in ONE cargo invocation (one lock, one target dir, one dependency build)
# with `--target wasm32-wasip2 --profile guest`, which emits components directly.
# Python guests build with componentize-py (scripts/build-python.sh), one per CPU at a time, and only
# when a source (the object's directory, guest-sdk/python/src, wit/) changed since the last
# build: each takes ~10-20 s, and its bytes differ on every build (a watching station would
# deploy a new version each time).
#
# Usage: scripts/build-objects.sh [--rust-only]     (from any directory)
#   --rust-only   skip the Python objects (they need componentize-py; see scripts/setup.sh)
# Env:   CARGO_TARGET_DIR   cargo's target dir (default: <repo>/target)
#        PYTHON_JOBS        Python builds run at once (default: the number of CPUs, at most 4)
set -euo pipefail

BUILD_PYTHON=1
for arg in "$@"; do
    case "$arg" in
        --rust-only) BUILD_PYTHON=0 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "error: unknown argument $arg (usage: scripts/build-objects.sh [--rust-only])" >&2
            exit 1
            ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET=wasm32-wasip2
PROFILE=guest
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT_DIR="$TARGET_DIR/$TARGET/$PROFILE"

RUST_OBJECTS=(hello counter calculator kv auth blog chat reminder)
# `legacy` and `foreign` are built against the frozen 0.1.0 world (wit/v0.1.0), the others
# against wit/object.wit (0.2.0) through the SDK.
RUST_FIXTURES=(misbehave foreign legacy)

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
# Each objects/python/<name>/app.py -> objects/dist/py-<name>.wasm (deployed as `py-<name>` by a
# station watching objects/), each tests/fixtures/python/<name>/app.py ->
# tests/fixtures/dist/py-<name>.wasm, with componentize-py==0.25.1 (TOOLCHAIN.md).
PYTHON_OBJECTS=(hello counter calculator auth blog chat reminder)
PYTHON_FIXTURES=(kv)

# True if $1 exists and is newer than every file under the other arguments.
up_to_date() {
    local out="$1"
    shift
    [[ -f "$out" ]] || return 1
    [[ -z "$(find "$@" -type f -newer "$out" -not -path '*/__pycache__/*' -print -quit)" ]]
}

build_python_objects() {
    if ! "$ROOT/scripts/build-python.sh" --check >/dev/null; then
        echo "       (or skip the Python objects: scripts/build-objects.sh --rust-only)" >&2
        exit 1
    fi
    local jobs="${PYTHON_JOBS:-$(nproc 2>/dev/null || echo 2)}"
    ((jobs > 4)) && jobs=4
    local src dest name logs pids=() failed=0 i
    logs="$(mktemp -d)"
    local todo=()
    for name in "${PYTHON_OBJECTS[@]}"; do
        todo+=("$ROOT/objects/python/$name|$ROOT/objects/dist/py-$name.wasm")
    done
    for name in "${PYTHON_FIXTURES[@]}"; do
        todo+=("$ROOT/tests/fixtures/python/$name|$ROOT/tests/fixtures/dist/py-$name.wasm")
    done
    for i in "${!todo[@]}"; do
        src="${todo[$i]%%|*}"
        dest="${todo[$i]#*|}"
        if up_to_date "$dest" "$src" "$ROOT/guest-sdk/python/src" "$ROOT/wit"; then
            printf '%-40s %9d bytes (up to date)\n' "${dest#"$ROOT"/}" "$(wc -c <"$dest")" >"$logs/$i"
            continue
        fi
        while (($(jobs -rp | wc -l) >= jobs)); do
            wait -n || true
        done
        (
            cd "$ROOT"
            "$ROOT/scripts/build-python.sh" -q "$src/app.py" -o "$dest" >"$logs/$i" 2>&1 ||
                { echo "FAILED" >>"$logs/$i"; exit 1; }
        ) &
        pids+=($!)
    done
    wait "${pids[@]}" 2>/dev/null || true
    for i in "${!todo[@]}"; do
        cat "$logs/$i"
        grep -qx FAILED "$logs/$i" && failed=1
    done
    rm -rf "$logs"
    if ((failed)); then
        echo "error: building a Python object failed (see above)" >&2
        exit 1
    fi
}

if ((BUILD_PYTHON)); then
    build_python_objects
fi
