#!/usr/bin/env bash
# Sets up, builds the host and the example objects, and runs a station on 127.0.0.1:8001 with its
# data in ./data, watching ./objects: every built example object is deployed and served.
# Extra arguments go to `host serve` (e.g. scripts/serve.sh --port 8002).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-objects.sh
cargo build -p host
# Defaults: --data ./data, --watch ./objects (this script runs from the repository root).
exec env -u RUST_BACKTRACE target/debug/host serve "$@"
