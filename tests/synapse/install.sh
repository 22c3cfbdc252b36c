#!/usr/bin/env bash
# Installs the pinned Synapse into a virtualenv for the interop tests (tests/it/synapse.rs),
# once: a re-run finds the venv complete and only prints its Python.
#
# Usage: tests/synapse/install.sh [VENV_DIR]   (default: $CARGO_TARGET_DIR or target, /synapse-venv)
# Prints the venv's python path as its last line of standard output; everything else goes to
# standard error.
set -euo pipefail

# Pinned exactly: a new Synapse release must not change what CI runs without a commit.
SYNAPSE_VERSION=1.163.2

root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-${CARGO_TARGET_DIR:-$root/target}/synapse-venv}"
python="$venv/bin/python"
# Written last, after a successful install: a venv without it is incomplete and is rebuilt.
stamp="$venv/.synapse-$SYNAPSE_VERSION"

if [ -x "$python" ] && [ -e "$stamp" ]; then
    echo "$python"
    exit 0
fi

# Two runs at once (two test processes) must not build the same venv together.
mkdir -p "$(dirname "$venv")"
if command -v flock >/dev/null; then
    exec 9>"$venv.lock"
    flock 9
    if [ -x "$python" ] && [ -e "$stamp" ]; then
        echo "$python"
        exit 0
    fi
fi

host_python="${PYTHON:-$(command -v python3 || true)}"
[ -n "$host_python" ] || { echo "synapse install: python3 is needed" >&2; exit 1; }

echo "synapse install: matrix-synapse==$SYNAPSE_VERSION into $venv" >&2
rm -rf "$venv"
"$host_python" -m venv "$venv" >&2
"$python" -m pip install --quiet --disable-pip-version-check --no-input \
    "matrix-synapse==$SYNAPSE_VERSION" >&2
"$python" -c 'import synapse; print("synapse install: synapse", synapse.__version__)' >&2
touch "$stamp"
echo "$python"
