#!/usr/bin/env bash
# recept on a Citus 12+ coordinator with schema-based sharding: tenant
# creation, migrations, the clinic API and a cross-tenant admin report,
# driven through recept's own command line and HTTP API.
#
# Skipped (exit 0) unless RECEPT_CITUS_URL names the coordinator, e.g.
#   RECEPT_CITUS_URL=postgres://recept:secret@coordinator:5432/recept load/citus.sh
# The coordinator's database needs `citus.enable_schema_based_sharding = on`
# (ALTER DATABASE … SET, or postgresql.conf) so each tenant schema becomes a
# distributed schema. Everything the run creates is deleted and purged at
# the end; it talks to the coordinator and to loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${RECEPT_CITUS_URL:-}" ]; then
    echo "citus: skipped (set RECEPT_CITUS_URL to a Citus coordinator to run it)"
    exit 0
fi

cargo build --quiet --release --bin recept
recept=target/release/recept
run="citus$(date +%s | tail -c 6)"
work=$(mktemp -d)
export RECEPT__CLUSTERS__MAIN__URL="$RECEPT_CITUS_URL"
export RECEPT__ADMIN__TOKEN="citus-check-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
export RECEPT__SERVER__CLINIC_LISTEN=127.0.0.1:18180
export RECEPT__SERVER__ADMIN_LISTEN=127.0.0.1:18181
clinic=http://127.0.0.1:18180
admin=http://127.0.0.1:18181
cleanup() {
    if [ -z "${server:-}" ]; then
        "$recept" serve >"$work/serve.log" 2>&1 &
        server=$!
        for _ in $(seq 1 100); do curl -sf "$admin/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
    fi
    for i in 1 2 3; do
        curl -s -o /dev/null -X DELETE -H "Authorization: Bearer $RECEPT__ADMIN__TOKEN" \
            -H "X-Admin-Actor: load/citus.sh" "$admin/admin/tenants/${run}_$i" || true
    done
    kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
    "$recept" tenants purge --grace-days 0 >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
step() { printf 'citus: %s\n' "$*"; }
expect() { # expect STATUS METHOD URL [BODY]
    local want=$1 method=$2 url=$3 body=${4:-}
    local got
    got=$(curl -s -o "$work/body" -w '%{http_code}' -X "$method" \
        -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        ${body:+--data "$body"} "$url")
    [ "$got" = "$want" ] || { echo "citus: $method $url answered $got, not $want: $(cat "$work/body")"; exit 1; }
}

step "configuration and budget"
"$recept" check-config
step "master release"
"$recept" master import tenants/master/2026-04.csv --version "citus-$run" >/dev/null
step "three tenants (schema, migrations, master copy on the coordinator)"
for i in 1 2 3; do
    "$recept" tenants create "${run}_$i" --name "Citus clinic $i" --master-release "citus-$run"
done
step "a migration run"
"$recept" migrate
key=$("$recept" tenants issue-key "${run}_1")

step "serving"
"$recept" serve >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
    curl -sf "$admin/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
expect 200 GET "$clinic/v1/tenant"
expect 201 POST "$clinic/v1/patients" \
    '{"name":"分散 太郎","birth_date":"1970-01-01","sex":"male","insurances":[{"insurer_number":"06132013","copay_rate":30,"valid_from":"2020-01-01"}]}'
patient=$(grep -o '"id":"[^"]*"' "$work/body" | head -1 | cut -d'"' -f4)
expect 201 POST "$clinic/v1/encounters" \
    "{\"patient_id\":\"$patient\",\"date\":\"2026-05-12\",\"items\":[{\"code\":\"111000110\",\"quantity\":1}]}"
expect 200 GET "$clinic/v1/patients/$patient/balance"
expect 200 POST "$clinic/v1/claims/generate" '{"month":"2026-05"}'
key=$RECEPT__ADMIN__TOKEN
expect 200 GET "$admin/admin/reports/monthly?month=2026-05"
grep -q "\"${run}_1\"" "$work/body" || { echo "citus: the report does not list ${run}_1"; exit 1; }
step "all passed"
