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
# shellcheck source=scripts/station-lib.sh
source "$ROOT/scripts/station-lib.sh"
for r in $(seq 1 "$rounds"); do
    for bin in "$@"; do
        station_start 10 "$bin" serve --bind 127.0.0.1 --port 0 --no-watch
        url=$STATION_URL
        curl -sf -X PUT --data-binary @"$wasm" "$url/admin/objects/hello" >/dev/null
        curl -sf "$url/objects/hello" >/dev/null
        wrk -t1 -c32 -d2s "$url/objects/hello" >/dev/null
        read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$STATION_PID/stat")
        out=$(wrk -t1 -c32 -d8s "$url/objects/hello")
        read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$STATION_PID/stat")
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        cpu_us=$(awk -v t="$((u1 + s1 - u0 - s0))" -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
        echo "round $r $bin rps=$rps cpu_us_per_req=$cpu_us"
        station_stop
    done
done
