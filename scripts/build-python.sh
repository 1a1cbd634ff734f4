#!/usr/bin/env bash
# Builds one Python object into a WebAssembly component with componentize-py, against the
# repository's WIT world (wit/, world `object`) and Python SDK (guest-sdk/python/src), and
# reports the build time and the component's size.
#
# Usage: scripts/build-python.sh APP.py [-o OUT.wasm] [-p DIR]... [-q]
#        scripts/build-python.sh --check     (is componentize-py installed? prints its path)
#
#   APP.py   the module defining the object and `Handler = export(MyObject)`; its directory is
#            on the Python path, so modules beside it can be imported.
#   -o OUT   the component to write (default: ./<name>.wasm, where <name> is the module's name,
#            or its directory's name when the module is called `app`)
#   -p DIR   another directory of Python modules/packages to bundle (repeatable)
#   -q       print only the result line
#
# Needs componentize-py 0.25.1: `python3 -m pip install componentize-py==0.25.1` (scripts/setup.sh
# installs it). Found on PATH, in $COMPONENTIZE_PY, or in Python's and pip --user's script dirs.
# A build takes ~10-20 s on 2 cores and writes an ~18 MB component; the bytes differ between
# builds of the same source (componentize-py snapshots a running interpreter).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPONENTIZE_PY_VERSION=0.25.1
INSTALL_HINT="python3 -m pip install componentize-py==$COMPONENTIZE_PY_VERSION"

die() {
    echo "error: $*" >&2
    exit 1
}

# Sets COMPONENTIZE to the componentize-py executable, or fails saying how to install it.
find_componentize_py() {
    local candidates=() dir
    [[ -n "${COMPONENTIZE_PY:-}" ]] && candidates+=("$COMPONENTIZE_PY")
    if command -v componentize-py >/dev/null 2>&1; then
        candidates+=("$(command -v componentize-py)")
    fi
    if command -v python3 >/dev/null 2>&1; then
        for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)" \
            "$(python3 -c 'import site; print(site.getuserbase())' 2>/dev/null)/bin"; do
            [[ -n "$dir" && -x "$dir/componentize-py" ]] && candidates+=("$dir/componentize-py")
        done
    fi
    local c
    for c in "${candidates[@]}"; do
        # A pyenv shim exists on PATH even when the active Python lacks the tool: run it.
        if "$c" --version >/dev/null 2>&1; then
            COMPONENTIZE="$c"
            return 0
        fi
    done
    die "componentize-py is not installed; install it with: $INSTALL_HINT"
}

check_version() {
    local version
    version="$("$COMPONENTIZE" --version 2>/dev/null | awk '{print $2}')"
    if [[ "$version" != "$COMPONENTIZE_PY_VERSION" ]]; then
        echo "warning: componentize-py $version found at $COMPONENTIZE; this project is tested with" \
            "$COMPONENTIZE_PY_VERSION ($INSTALL_HINT)" >&2
    fi
}

app="" out="" quiet=0
extra_paths=()
while (($#)); do
    case "$1" in
        --check)
            find_componentize_py
            check_version
            echo "$COMPONENTIZE ($("$COMPONENTIZE" --version))"
            exit 0
            ;;
        -o | --output)
            (($# >= 2)) || die "$1 needs a file name"
            out="$2"
            shift 2
            ;;
        -p | --python-path)
            (($# >= 2)) || die "$1 needs a directory"
            [[ -d "$2" ]] || die "$2 is not a directory"
            extra_paths+=(-p "$(cd "$2" && pwd)")
            shift 2
            ;;
        -q | --quiet)
            quiet=1
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        -*) die "unknown option $1 (see --help)" ;;
        *)
            [[ -z "$app" ]] || die "one app module at a time (got $app and $1)"
            app="$1"
            shift
            ;;
    esac
done
[[ -n "$app" ]] || die "usage: scripts/build-python.sh APP.py [-o OUT.wasm] [-p DIR]... (see --help)"
[[ -f "$app" ]] || die "$app: no such file"
[[ "$app" == *.py ]] || die "$app: expected a Python module (*.py)"

app_dir="$(cd "$(dirname "$app")" && pwd)"
module="$(basename "$app" .py)"
[[ "$module" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "$app: '$module' is not a valid Python module name"
case "$module" in
    wit_world | object_primitive | componentize_py_*)
        die "$app: the module name '$module' clashes with a generated or SDK module; rename it" ;;
esac
if [[ -z "$out" ]]; then
    name="$module"
    [[ "$module" == app ]] && name="$(basename "$app_dir")"
    out="$PWD/$name.wasm"
fi
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

find_componentize_py
check_version

# componentize-py writes the component in place; build into a temp file in the same directory
# and rename, so a watcher (`host serve --watch`) never sees a half-written component.
tmp="$(mktemp "$out.tmp.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
log="$(mktemp)"
trap 'rm -f "$tmp" "$log"' EXIT

start_ns="$(date +%s%N)"
# PYTHONPATH/PYTHONHOME of the calling shell must not leak into the build; RUST_BACKTRACE
# would bury a Python error under a Rust backtrace of componentize-py itself.
if ! env -u PYTHONPATH -u PYTHONHOME -u RUST_BACKTRACE "$COMPONENTIZE" -d "$ROOT/wit" -w object componentize "$module" \
    -p "$app_dir" -p "$ROOT/guest-sdk/python/src" "${extra_paths[@]}" -o "$tmp" >"$log" 2>&1; then
    cat "$log" >&2
    die "componentize-py failed to build $app (the object module must define \`Handler = export(MyObject)\`)"
fi
end_ns="$(date +%s%N)"
((quiet)) || grep -v '^Component built successfully$' "$log" >&2 || true

if [[ "$(head -c 8 "$tmp" | od -An -tx1 | tr -d ' \n')" != "0061736d0d000100" ]]; then
    die "componentize-py did not write a WebAssembly component for $app"
fi
chmod "$(printf '%o' $((0666 & ~$(umask))))" "$tmp" # mktemp made it 0600
mv -f "$tmp" "$out"
trap 'rm -f "$log"' EXIT

size="$(wc -c <"$out")"
ms=$(((end_ns - start_ns) / 1000000))
display="$out"
[[ "$out" == "$PWD/"* ]] && display="${out#"$PWD"/}"
printf '%-40s %9d bytes (%s MB)  built in %d.%01d s\n' "$display" "$size" \
    "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')" $((ms / 1000)) $(((ms % 1000) / 100))
