#!/usr/bin/env bash
# Fuzzes every clinic route from the OpenAPI document with schemathesis
# (PyPI) against a private `recept dev` on loopback: no 500s, and every
# response matches the documented status codes, content types and schemas.
# Bounded: a fixed number of examples per route, and the server stops with
# the script. Usage: tests/fuzz/schemathesis.sh [max examples per route]
# Where schemathesis is not installed it goes into a virtualenv of its own
# (Python and its venv module are installed first when missing and root).
set -euo pipefail
cd "$(dirname "$0")/../.."
examples="${1:-300}"

st=$(command -v st || true)
if [ -z "$st" ]; then
    venv="${TMPDIR:-/tmp}/recept-schemathesis"
    if [ ! -x "$venv/bin/st" ]; then
        if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
            [ "$(id -u)" = 0 ] || { echo "install python3 and python3-venv first" >&2; exit 1; }
            apt-get update && apt-get install -y python3 python3-venv
        fi
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet schemathesis
    fi
    st="$venv/bin/st"
fi
cargo build --quiet --bin recept

work=$(mktemp -d)
cleanup() {
    [ -n "${server:-}" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

export RECEPT__SERVER__CLINIC_LISTEN=127.0.0.1:18080
export RECEPT__SERVER__ADMIN_LISTEN=127.0.0.1:18081
target/debug/recept dev --state-dir "$work/state" --tenants tenants >"$work/out" 2>"$work/err" &
server=$!
for _ in $(seq 1 120); do
    grep -q "demo tenant" "$work/out" 2>/dev/null && break
    sleep 0.5
done
key=$(grep "demo tenant" "$work/out" | head -1 | awk '{print $NF}')
[ -n "$key" ] || { echo "recept dev did not start:"; cat "$work/err"; exit 1; }

"$st" run http://127.0.0.1:18080/v1/openapi.json \
    -H "Authorization: Bearer $key" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$examples" --workers 2
