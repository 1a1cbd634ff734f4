#!/usr/bin/env bash
# A/B of host binaries on one GET: the station's CPU time per request (utime+stime from
# /proc/PID/stat over the measured run, divided by the requests wrk made) and requests/s, in
# interleaved rounds, so that a drifting shared machine moves both sides alike. Compare the
# binaries round by round (paired ratios), not run totals.
#
# Usage: scripts/ab-cpu.sh ROUNDS HOST_BIN_A HOST_BIN_B [...]
# Env:   WASM  the component to deploy as `hello` (default: objects/dist/hello.wasm; give a
#              0.1.0 component when an older host is one of the binaries)
# Needs wrk and curl; each station runs on 127.0.0.1 port 0 with a temp data dir.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds=${1:?usage: scripts/ab-cpu.sh ROUNDS HOST_BIN_A HOST_BIN_B [...]}
shift
(($# >= 2)) || { echo "usage: scripts/ab-cpu.sh ROUNDS HOST_BIN_A HOST_BIN_B [...]" >&2; exit 1; }
wasm=${WASM:-$ROOT/objects/dist/hello.wasm}
hz=$(getconf CLK_TCK)
pid=""
dir=""
cleanup() {
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
    [[ -n "$dir" ]] && rm -rf "$dir"
}
trap cleanup EXIT
for r in $(seq 1 "$rounds"); do
    for bin in "$@"; do
        dir=$(mktemp -d)
        "$bin" serve --bind 127.0.0.1 --port 0 --data "$dir/data" --no-watch >"$dir/out" 2>"$dir/err" &
        pid=$!
        for _ in $(seq 1 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
        url=$(grep -o 'http://[0-9.:]*' "$dir/out" | head -1)
        [[ -n "$url" ]] || { echo "$bin did not start: $(tail -3 "$dir/err")" >&2; exit 1; }
        curl -sf -X PUT --data-binary @"$wasm" "$url/admin/objects/hello" >/dev/null
        curl -sf "$url/objects/hello" >/dev/null
        wrk -t1 -c32 -d2s "$url/objects/hello" >/dev/null
        read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        out=$(wrk -t1 -c32 -d8s "$url/objects/hello")
        read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        cpu_us=$(awk -v t="$((u1 + s1 - u0 - s0))" -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
        echo "round $r $bin rps=$rps cpu_us_per_req=$cpu_us"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        pid=""
        rm -rf "$dir"
        dir=""
    done
done
