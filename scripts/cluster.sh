#!/usr/bin/env bash
# Starts N stations on loopback for trying the cluster: station 1 on port 8001, the others join it
# on 8002, 8003, ... Each has its own data directory under ./cluster-data/ (override with
# CLUSTER_DATA). Extra arguments go to every `host serve` (e.g. --sync-replicas 1).
# Ctrl-C stops them all.
#
#   scripts/cluster.sh 3
#   host deploy objects/dist/counter.wasm --station http://127.0.0.1:8001
#   curl -X POST 127.0.0.1:8002/objects/counter          # any station reaches the home
#   host stations                                       # who is alive, who homes what
#   host migrate counter --to <station id>              # live migration
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-3}"
shift || true
if ! [[ "$count" =~ ^[0-9]+$ ]] || (( count < 1 || count > 20 )); then
    echo "usage: scripts/cluster.sh N [host serve flags...]   (1 <= N <= 20)" >&2
    exit 2
fi
scripts/setup.sh
cargo build -p host
base="${CLUSTER_DATA:-./cluster-data}"
pids=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT
for ((i = 1; i <= count; i++)); do
    port=$((8000 + i))
    join=()
    (( i > 1 )) && join=(--join 127.0.0.1:8001)
    mkdir -p "$base/station-$i"
    env -u RUST_BACKTRACE target/debug/host serve --port "$port" --data "$base/station-$i" --no-watch "${join[@]}" "$@" \
        > >(sed -u "s/^/[station-$i] /") 2> >(sed -u "s/^/[station-$i] /" >&2) &
    pids+=("$!")
done
echo "started $count stations on 127.0.0.1:8001..$((8000 + count)); data in $base; Ctrl-C stops them" >&2
wait
