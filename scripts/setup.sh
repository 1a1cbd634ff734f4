#!/usr/bin/env bash
# Installs what building Object Primitive needs on a fresh machine: the wasm32-wasip2 Rust target
# and, for the Python objects, componentize-py 0.25.1 from PyPI (needs python3 with pip).
# Idempotent; every other script calls it first.
#
# Usage: scripts/setup.sh [--rust-only]   (--rust-only: skip what only Python objects need)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUST_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --rust-only) RUST_ONLY=1 ;;
        *)
            echo "error: unknown argument $arg (usage: scripts/setup.sh [--rust-only])" >&2
            exit 1
            ;;
    esac
done

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install Rust with rustup first (https://rustup.rs)" >&2
    exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "setup: installing the wasm32-wasip2 Rust target" >&2
    rustup target add wasm32-wasip2
fi

# --- Partition tests: nftables (drop rules between 127.0.0.x addresses) ---------------------
# The black-box partition tests need `nft` and root; they say so and return where they cannot
# have them outside CI. Installed here when apt-get can (as root), never required for building.
if ! command -v nft >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
    echo "setup: installing nftables (apt-get) for the partition tests" >&2
    (apt-get update -qq && apt-get install -y -qq nftables >/dev/null) ||
        echo "setup: could not install nftables; the partition tests will fail in CI" >&2
fi

# --- Inspector tests: headless Chromium and its WebDriver (Debian's chromium, chromium-driver) --
# The black-box tests of `/ui` (tests/blackbox/ui.rs) drive /usr/bin/chromium through
# /usr/bin/chromedriver; without them they say so and return outside CI, and fail in CI.
if { [[ ! -x /usr/bin/chromium ]] || [[ ! -x /usr/bin/chromedriver ]]; } &&
    command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
    echo "setup: installing chromium and chromium-driver (apt-get) for the inspector's tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) ||
        echo "setup: could not install chromium; the inspector's tests will fail in CI" >&2
fi

# --- Python objects: componentize-py (TOOLCHAIN.md) ------------------------------------------
((RUST_ONLY)) && exit 0
COMPONENTIZE_PY_VERSION=0.25.1
installed_version() {
    "$ROOT/scripts/build-python.sh" --check 2>/dev/null | sed -n 's/.*(componentize-py \(.*\))$/\1/p'
}
if [[ "$(installed_version)" != "$COMPONENTIZE_PY_VERSION" ]]; then
    if ! command -v python3 >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
            echo "setup: installing python3 and pip (apt-get)" >&2
            apt-get update -qq && apt-get install -y -qq python3 python3-pip >/dev/null
        else
            echo "error: python3 is not installed; Python objects need it (with pip) for" \
                "componentize-py. Install python3, or run scripts/setup.sh --rust-only" >&2
            exit 1
        fi
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "setup: bootstrapping pip (python3 -m ensurepip)" >&2
        python3 -m ensurepip --upgrade >/dev/null 2>&1 || python3 -m ensurepip --user >/dev/null 2>&1 || {
            echo "error: python3 has no pip; install it (e.g. apt-get install python3-pip)," \
                "then run: python3 -m pip install componentize-py==$COMPONENTIZE_PY_VERSION" >&2
            exit 1
        }
    fi
    echo "setup: installing componentize-py $COMPONENTIZE_PY_VERSION (python3 -m pip)" >&2
    # A distribution's own Python refuses system-wide installs (PEP 668): fall back to --user.
    python3 -m pip install --disable-pip-version-check -q "componentize-py==$COMPONENTIZE_PY_VERSION" ||
        python3 -m pip install --disable-pip-version-check -q --user --break-system-packages \
            "componentize-py==$COMPONENTIZE_PY_VERSION"
    hash -r
    if [[ "$(installed_version)" != "$COMPONENTIZE_PY_VERSION" ]]; then
        "$ROOT/scripts/build-python.sh" --check >&2 || true
        echo "error: componentize-py $COMPONENTIZE_PY_VERSION was installed but is not found;" \
            "put Python's script directory on PATH or set COMPONENTIZE_PY" >&2
        exit 1
    fi
fi
