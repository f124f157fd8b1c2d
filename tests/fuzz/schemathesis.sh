#!/usr/bin/env bash
# Fuzzes every clinic route from the OpenAPI document with schemathesis
# against a private `recept dev` on loopback: no 500s, every response as
# documented (status, content type, schema, headers), and the stateful phase
# follows the document's links (patient -> visit -> payment / void, month ->
# claims -> confirm). Any schemathesis warning fails the run (see
# schemathesis.toml), so a document that promises less than the server
# checks, or a route the fuzzer cannot reach with real ids, is a failure.
#
# Reproducible: schemathesis and everything under it are the exact versions
# pinned in tests/tools/requirements.txt, one worker (CPython 3.11's AST
# constructor is not thread-safe, which hypothesis trips over with several),
# no example database carried between runs, and a fixed seed, so a failure
# replays exactly with the seed it prints.
#
# Usage: tests/fuzz/schemathesis.sh [--deep] [--seed N] [--examples N]
#   default   the CI run: seed 20261202, 100 examples per route and phase
#   --deep    a longer run with a fresh random seed each time: 1,000
#             examples per route and phase (takes tens of minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
seed=20261202
examples=100
while [ $# -gt 0 ]; do
    case "$1" in
        --deep) seed=$(shuf -i 1-2147483647 -n 1); examples=1000 ;;
        --seed) seed="$2"; shift ;;
        --examples) examples="$2"; shift ;;
        *) echo "usage: $0 [--deep] [--seed N] [--examples N]" >&2; exit 2 ;;
    esac
    shift
done

venv=$(bash tests/tools/venv.sh)
. tests/tools/dev-server.sh
start_dev_server 18080 18081

echo "schemathesis: seed $seed, $examples examples per route and phase"
# RECEPT_FUZZ_REPORT=DIR keeps every request and response (NDJSON) there.
report="${RECEPT_FUZZ_REPORT:-$(mktemp -d)}"
status=0
SCHEMATHESIS_HOOKS=hooks PYTHONPATH=tests/fuzz \
    "$venv/bin/st" --config-file tests/fuzz/schemathesis.toml run \
    "$CLINIC_URL/v1/openapi.json" \
    -H "Authorization: Bearer $DEMO_KEY" \
    --seed "$seed" --max-examples "$examples" --workers 1 \
    --generation-database none --no-color \
    --report ndjson --report-dir "$report" || status=$?
[ -n "${RECEPT_FUZZ_REPORT:-}" ] || rm -rf "$report"
echo "schemathesis: seed $seed, exit $status"
exit "$status"
