# Sourced by the scripts beside it: start_dev_server starts a private
# `recept dev` (its own PostgreSQL, the demo clinics) on two loopback ports
# and sets CLINIC_URL, ADMIN_URL, ADMIN_TOKEN and DEMO_KEY (the first demo
# clinic's API key). The server and its state go when the script exits.
# Usage: start_dev_server CLINIC_PORT ADMIN_PORT
start_dev_server() {
    local clinic_port="$1" admin_port="$2"
    DEV_WORK=$(mktemp -d)
    trap stop_dev_server EXIT
    cargo build --quiet --bin recept
    RECEPT__SERVER__CLINIC_LISTEN="127.0.0.1:$clinic_port" \
        RECEPT__SERVER__ADMIN_LISTEN="127.0.0.1:$admin_port" \
        target/debug/recept dev --state-dir "$DEV_WORK/state" --tenants tenants \
        >"$DEV_WORK/out" 2>"$DEV_WORK/err" &
    DEV_PID=$!
    for _ in $(seq 1 240); do
        grep -q "demo tenant" "$DEV_WORK/out" 2>/dev/null && break
        kill -0 "$DEV_PID" 2>/dev/null || break
        sleep 0.5
    done
    DEMO_KEY=$(grep "demo tenant" "$DEV_WORK/out" | head -1 | awk '{print $NF}')
    ADMIN_TOKEN=$(grep "admin token" "$DEV_WORK/out" | head -1 | awk '{print $NF}')
    if [ -z "$DEMO_KEY" ]; then
        echo "recept dev did not start:" >&2
        cat "$DEV_WORK/err" >&2
        exit 1
    fi
    CLINIC_URL="http://127.0.0.1:$clinic_port"
    ADMIN_URL="http://127.0.0.1:$admin_port"
    export CLINIC_URL ADMIN_URL ADMIN_TOKEN DEMO_KEY
}

stop_dev_server() {
    if [ -n "${DEV_PID:-}" ]; then
        kill -TERM "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null
    fi
    [ -n "${DEV_WORK:-}" ] && rm -rf "$DEV_WORK"
    return 0
}
