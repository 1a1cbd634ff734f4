#!/usr/bin/env bash
# Sets up, builds the example objects and test fixtures, and runs every test: unit tests of the
# host and the guest SDKs (Rust, then Python with the SDK's in-memory fake), then the black-box
# tests that start real `host serve` processes (Rust and Python objects).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-objects.sh
PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s guest-sdk/python/tests
# wasmtime captures a backtrace on every Store drop when RUST_BACKTRACE is set (TOOLCHAIN.md).
unset RUST_BACKTRACE
# The example applications' unit tests, against the SDK's in-memory fake.
cargo test -p auth -p blog -p chat -p counter -p reminder -p misbehave
cargo test -p host -p object-primitive-sdk "$@"
