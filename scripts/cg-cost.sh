#!/usr/bin/env bash
# Instructions per request of host binaries, counted by callgrind: repeatable for the same binary
# and inputs whatever else the machine is doing, so a change of a few percent in the cost of a
# call shows (wrk on this shared machine moves ±15% between runs). Each binary serves one station
# under `valgrind --tool=callgrind` with instrumentation off until a warm-up of 200 GETs is done,
# counts N GETs made over one keep-alive connection, and prints the program total per request
# (background work of the station during the counted window included: keep N large). The first
# binary is the baseline of the ratios. Profiles stay in OUT for callgrind_annotate.
#
# Usage: scripts/cg-cost.sh N OUT HOST_BIN_A [HOST_BIN_B ...]
# Env:   WASM  the component to deploy as `hello` (default: objects/dist/hello.wasm; give a 0.1.0
#              component when an older host is one of the binaries)
# Needs valgrind and curl. Stations run on 127.0.0.1 port 0 with a temp data dir, one worker and
# --max-instances 4 (valgrind cannot reserve the default instance pool's address space).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage="usage: scripts/cg-cost.sh N OUT HOST_BIN_A [HOST_BIN_B ...]"
n=${1:?$usage}
out=${2:?$usage}
shift 2
(($# >= 1)) || { echo "$usage" >&2; exit 1; }
wasm=${WASM:-$ROOT/objects/dist/hello.wasm}
# shellcheck source=scripts/station-lib.sh
source "$ROOT/scripts/station-lib.sh"
gets() { # gets URL COUNT: COUNT GETs of URL over one connection
    local urls=()
    for _ in $(seq 1 "$2"); do urls+=("$1"); done
    curl -sf "${urls[@]}" >/dev/null
}
base=""
for bin in "$@"; do
    profile_dir="$out/$(basename "$bin")"
    mkdir -p "$profile_dir"
    station_start 300 valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$profile_dir/callgrind.%p" \
        "$bin" serve --bind 127.0.0.1 --port 0 --no-watch --workers 1 --max-instances 4
    url=$STATION_URL
    curl -sf -X PUT --data-binary @"$wasm" "$url/admin/objects/hello" >/dev/null
    gets "$url/objects/hello" 200
    callgrind_control -i on "$STATION_PID" >/dev/null
    gets "$url/objects/hello" "$n"
    callgrind_control -d "$STATION_PID" >/dev/null
    station_stop
    profile=$(ls -t "$profile_dir"/callgrind.*.1 | head -1)
    total=$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen++ {gsub(",", "", $1); print $1}')
    per=$((total / n))
    if [[ -z "$base" ]]; then
        base=$per
        echo "$bin: $per instructions per GET ($profile)"
    else
        awk -v b="$base" -v p="$per" -v bin="$bin" -v f="$profile" \
            'BEGIN { printf "%s: %d instructions per GET, %.3f× the first (%s)\n", bin, p, p / b, f }'
    fi
done
