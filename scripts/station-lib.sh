# Sourced by the scripts that compare host binaries one throwaway station at a time
# (ab-cpu.sh, cg-cost.sh): start a station, read the address it prints, stop it. Whatever is
# still running when the script exits (an error, Ctrl-C) is stopped and its data dir removed.
#
#   station_start WAIT_S COMMAND...   runs COMMAND (a `host serve ... --port 0` command line,
#                                     possibly under valgrind) with `--data` in a temp dir, waits
#                                     up to WAIT_S seconds for its "listening" line and sets
#                                     STATION_PID and STATION_URL (exits if it never comes)
#   station_stop                      stops it and removes its data dir

STATION_PID=""
STATION_DIR=""
STATION_URL=""

station_cleanup() {
    [[ -n "$STATION_PID" ]] && kill "$STATION_PID" 2>/dev/null || true
    [[ -n "$STATION_DIR" ]] && rm -rf "$STATION_DIR"
}
trap station_cleanup EXIT

station_start() {
    local wait_s=$1
    shift
    STATION_DIR=$(mktemp -d)
    "$@" --data "$STATION_DIR/data" >"$STATION_DIR/out" 2>"$STATION_DIR/err" &
    STATION_PID=$!
    for _ in $(seq 1 $((wait_s * 10))); do
        grep -q listening "$STATION_DIR/out" 2>/dev/null && break
        sleep 0.1
    done
    STATION_URL=$(grep -o 'http://[0-9.:]*' "$STATION_DIR/out" | head -1)
    [[ -n "$STATION_URL" ]] || { echo "$1 did not start: $(tail -3 "$STATION_DIR/err")" >&2; exit 1; }
}

station_stop() {
    kill "$STATION_PID"
    wait "$STATION_PID" 2>/dev/null || true
    STATION_PID=""
    rm -rf "$STATION_DIR"
    STATION_DIR=""
}
