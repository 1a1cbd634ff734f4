#!/usr/bin/env bash
# Runs Object Primitive's benchmarks (issue 5) and writes bench/results.json.
#
#   scripts/bench.sh [--quick] [bench-driver options]     (from any directory)
#
# Sets up, builds the example objects, the host and the bench crate in release, installs a load
# generator if none is installed (wrk from Debian; oha from crates.io if apt cannot), then hands
# over to `bench-driver` (bench/src/driver.rs), which starts its own stations and baseline on
# 127.0.0.1 port 0 with temp data dirs, runs the scenarios, prints the table and writes the JSON.
# --quick: 3 s per HTTP scenario and short criterion timings; finishes within ~5 minutes after
# the first compile. Other options go to the driver, e.g. `--only http` (see
# `target/release/bench-driver --help`).
#
# A benchmark never fails: a scenario that errors is reported as such and this script exits 0.
# Only a failed build (nothing to measure) exits non-zero. Every process the run starts is
# stopped on exit, including on Ctrl-C.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
started=$SECONDS

# The driver runs in its own session, so its process group holds it and everything it starts
# (stations, the baseline, wrk, the criterion bench): stopping the group stops them all.
driver_pid=""
bin_dir=""
cleanup() {
    if [[ -n "$driver_pid" ]] && kill -0 -- "-$driver_pid" 2>/dev/null; then
        kill -TERM -- "-$driver_pid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 -- "-$driver_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL -- "-$driver_pid" 2>/dev/null || true
    fi
    if [[ -n "$bin_dir" ]]; then
        rm -rf "$bin_dir"
    fi
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT TERM

# wasmtime captures a backtrace on every Store drop when RUST_BACKTRACE is set (~7% CPU).
unset RUST_BACKTRACE

scripts/setup.sh
scripts/build-objects.sh

# Separate invocations: building host and bench together would unify their dependencies'
# features and rebuild wasmtime differently from a plain `cargo build --release -p host`.
echo "bench: building the host, the bench crate and the criterion bench (release)" >&2
cargo build --release -p host
cargo build --release -p bench
criterion_bench="$(cargo bench -p host --bench runtime --profile release --no-run \
    --message-format=json | { grep -o '"executable":"[^"]*/deps/runtime-[^"]*"' || true; } |
    sed 's/^"executable":"//; s/"$//' | tail -n 1)"

# Run from copies: the target dir is shared, and another build may replace target/release/host
# while the benchmarks run.
bin_dir="$(mktemp -d "${TMPDIR:-/tmp}/op-bench-bin-XXXXXX")"
cp "$TARGET_DIR/release/host" "$TARGET_DIR/release/baseline" "$TARGET_DIR/release/bench-driver" "$bin_dir/"
if [[ -n "$criterion_bench" && -x "$criterion_bench" ]]; then
    cp "$criterion_bench" "$bin_dir/runtime-bench"
fi

# Installs wrk (apt) or, failing that, oha (cargo) unless one is already there.
install_load_generator() {
    if command -v wrk >/dev/null 2>&1 || command -v oha >/dev/null 2>&1 ||
        [[ -x "${HOME:-/root}/.cargo/bin/oha" ]]; then
        return 0
    fi
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
        sudo=(sudo -n)
    fi
    echo "bench: installing wrk (apt-get)" >&2
    if "${sudo[@]}" apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; then
        return 0
    fi
    echo "bench: apt-get could not install wrk; installing oha (cargo install oha --locked)" >&2
    if ! cargo install oha --locked; then
        echo "bench: no load generator could be installed; the HTTP scenarios will report errors" >&2
    fi
}
install_load_generator

# The driver runs in its own session (see `cleanup`).
driver_args=(--root "$ROOT" --host "$bin_dir/host" --baseline "$bin_dir/baseline")
if [[ -x "$bin_dir/runtime-bench" ]]; then
    driver_args+=(--criterion-bench "$bin_dir/runtime-bench")
fi
setsid "$bin_dir/bench-driver" "${driver_args[@]}" "$@" &
driver_pid=$!
status=0
wait "$driver_pid" || status=$?
if [[ "$status" -ne 0 ]]; then
    echo "bench: bench-driver exited with status $status" >&2
fi
echo "bench: done in $((SECONDS - started)) s" >&2
exit 0
