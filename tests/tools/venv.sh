#!/usr/bin/env bash
# Prints the path of a Python virtualenv holding exactly the tools pinned in
# tests/tools/requirements.txt (every package at an exact version, checked
# against its hashes), making it first when it does not exist yet. The
# virtualenv is named after the file's hash, so a change of pins makes a new
# one and a new release on the registry never changes what is installed.
# Python and its venv module are installed first when missing (as root).
# To change a pin: edit requirements.in, then regenerate requirements.txt
# with pip-compile (see README, "Fuzzing and the generated client").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pins="$here/requirements.txt"
digest=$(sha256sum "$pins" | cut -c1-16)
venv="${RECEPT_TOOLS_DIR:-${TMPDIR:-/tmp}/recept-tools}/$digest"
if [ ! -x "$venv/bin/python" ] || [ ! -e "$venv/.complete" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
        [ "$(id -u)" = 0 ] || { echo "install python3 and python3-venv first" >&2; exit 1; }
        apt-get update >&2 && apt-get install -y python3 python3-venv >&2
    fi
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        --require-hashes --no-deps --only-binary=:all: -r "$pins" >&2
    touch "$venv/.complete"
fi
echo "$venv"
