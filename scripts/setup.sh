#!/usr/bin/env bash
# Installs what building Object Primitive needs on a fresh machine: the wasm32-wasip2 Rust target.
# Idempotent; every other script calls it first.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install Rust with rustup first (https://rustup.rs)" >&2
    exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "setup: installing the wasm32-wasip2 Rust target" >&2
    rustup target add wasm32-wasip2
fi
