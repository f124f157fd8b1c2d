#!/usr/bin/env bash
# Generates a Python client from the clinic API's served OpenAPI document
# with openapi-python-client (pinned in tests/tools/requirements.txt) and
# drives a front desk's day through it (frontdesk.py) against a private
# `recept dev`. Fails when the generator cannot build an operation, or when
# the document and the server disagree on a name, type or status.
# Usage: tests/client/run.sh [DIR]   (DIR keeps the generated client)
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$(bash tests/tools/venv.sh)
export PATH="$venv/bin:$PATH"
. tests/tools/dev-server.sh
start_dev_server 18180 18181

out="${1:-$DEV_WORK/client}"
mkdir -p "$out"
"$venv/bin/python" -c 'import sys, urllib.request; open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1]).read())' \
    "$CLINIC_URL/v1/openapi.json" "$out/openapi.json"
rm -rf "$out/recept_client"
log="$out/generate.log"
(cd "$out" && openapi-python-client generate --path openapi.json --meta none \
    --output-path recept_client --config /dev/stdin >"$log" 2>&1 <<<'project_name_override: recept_client
package_name_override: recept_client') || { cat "$log"; exit 1; }
if grep -qi "warning" "$log"; then
    echo "openapi-python-client could not generate everything:"; cat "$log"; exit 1
fi
PYTHONPATH="$out" "$venv/bin/python" tests/client/frontdesk.py
