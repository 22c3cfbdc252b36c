#!/usr/bin/env bash
# Runs the benchmark scenarios against Parley (SQLite, PostgreSQL) and Synapse 1.163 (SQLite,
# PostgreSQL) on this machine, plus pgbench's single-row commit rate, and prints a comparison.
#
#   bench/run.sh                      # everything, full-size scenarios
#   bench/run.sh --quick              # small parameters: a trial run of the tooling
#   bench/run.sh --servers "parley-sqlite synapse-sqlite" --scenarios "dm group"
#   bench/run.sh --skip-pgbench --skip-echo
#   bench/run.sh --servers "parley-sqlite parley-postgres" --scenarios own-reads --skip-pgbench --skip-echo
#                                     # not in the default set: 100,000 sends take a while
#
# Results go to bench/results/<timestamp>/: results.jsonl (one JSON object per run),
# commands.txt (every command, as run), summary.txt (the comparison table), and the servers'
# logs. Each server gets a fresh database and a fresh process per scenario.
#
# Needs: cargo, python3 (3.10+), PostgreSQL at 127.0.0.1:5432 as user postgres with trust
# auth, curl, ss. Installs Synapse into bench/.venv and pgbench (postgresql-contrib) if absent.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
SERVERS="parley-sqlite parley-postgres synapse-sqlite synapse-postgres"
SCENARIOS="dm group idle initial-sync"
PROFILE=full
SKIP_PGBENCH=0
SKIP_ECHO=0
SKIP_BUILD=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) PROFILE=quick ;;
        --servers) SERVERS="$2"; shift ;;
        --scenarios) SCENARIOS="$2"; shift ;;
        --skip-pgbench) SKIP_PGBENCH=1 ;;
        --skip-echo) SKIP_ECHO=1 ;;
        --skip-build) SKIP_BUILD=1 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="${OUT:-$BENCH/results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
COMMANDS="$OUT/commands.txt"
: > "$RESULTS"
: > "$COMMANDS"
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
pg_env
SYNAPSE_VERSION=1.163.0
VENV="$BENCH/.venv"
SERVER_PID=""

# ---------------------------------------------------------------------------------------------
# Scenario parameters. "quick" checks the tooling in a few minutes; "full" is the measurement
# (each scenario a few minutes per server on a 2-core machine).
if [ "$PROFILE" = quick ]; then
    ARGS_dm="--duration-secs 30 dm --users 40 --rooms 60 --messages 600 --senders 8"
    ARGS_group="--duration-secs 30 group --users 60 --rooms 2 --room-size 50 --messages 100 --senders 4"
    ARGS_idle="--drain-secs 120 idle --users 40 --devices 2 --polls 5 --room-size 20 --burst 2 --settle-secs 3"
    ARGS_initial="initial-sync --rooms 60 --pool 20 --members 6 --messages 10 --talkers 2 --repeat 3"
    ARGS_echo="dm --users 40 --rooms 60 --messages 5000 --senders 16"
    ARGS_own="own-reads --sends 2000 --early 200 --samples 20"
    PGBENCH_SECS=5
else
    # dm and group send for at most 90 s (throughput is messages sent / time taken).
    ARGS_dm="--duration-secs 90 dm --users 200 --rooms 400 --messages 5000 --senders 16"
    ARGS_group="--duration-secs 90 group --users 200 --rooms 4 --room-size 100 --messages 1000 --senders 8"
    # 200 users x 2 devices x 25 polls = 10,000 long-polls.
    ARGS_idle="--drain-secs 300 idle --users 200 --devices 2 --polls 25 --room-size 50 --burst 1 --settle-secs 5"
    ARGS_initial="initial-sync --rooms 500 --pool 100 --members 4 --messages 10 --talkers 2 --repeat 5"
    ARGS_echo="dm --users 200 --rooms 400 --messages 30000 --senders 16"
    # One device sends 100,000 messages; its reads after 200 and after 100,000 sends.
    ARGS_own="own-reads --sends 100000 --early 200 --samples 200"
    PGBENCH_SECS=20
fi
ARGS_dm="${BENCH_ARGS_DM:-$ARGS_dm}"
ARGS_group="${BENCH_ARGS_GROUP:-$ARGS_group}"
ARGS_idle="${BENCH_ARGS_IDLE:-$ARGS_idle}"
ARGS_initial="${BENCH_ARGS_INITIAL:-$ARGS_initial}"
ARGS_own="${BENCH_ARGS_OWN:-$ARGS_own}"
scenario_args() {
    case "$1" in
        dm) echo "$ARGS_dm" ;;
        group) echo "$ARGS_group" ;;
        idle) echo "$ARGS_idle" ;;
        initial-sync) echo "$ARGS_initial" ;;
        own-reads) echo "$ARGS_own" ;;
        *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}

# 10,000 long-polls need as many sockets in the generator and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
    echo "warning: ulimit -n is $(ulimit -n); the idle scenario needs more than its poll count" >&2
fi
echo "ulimit -n $(ulimit -n)" >> "$COMMANDS"

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=""
}
trap stop_server EXIT

# ---------------------------------------------------------------------------------------------
# Parley
start_parley() { # backend dir port
    local backend=$1 dir=$2 port=$3 url
    mkdir -p "$dir"
    if [ "$backend" = sqlite ]; then
        url="sqlite://$dir/parley.db"
    else
        pg_fresh_db parley_bench ""
        url="$PG_BASE/parley_bench"
    fi
    parley_config "$dir/parley.toml" localhost "$port" "$url"
    launch_parley "$dir"
    SERVER_PID=$LAUNCHED_PID
    wait_ready "http://127.0.0.1:$port" "$SERVER_PID"
}

# ---------------------------------------------------------------------------------------------
# Synapse
install_synapse() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import synapse, psycopg2, sys; sys.exit(synapse.__version__.split()[0] != '$SYNAPSE_VERSION')" 2>/dev/null; then
        return
    fi
    log "installing Synapse $SYNAPSE_VERSION into $VENV"
    run python3 -m venv "$VENV"
    run "$VENV/bin/pip" install -q "matrix-synapse[postgres]==$SYNAPSE_VERSION"
}

start_synapse() { # backend dir port
    local backend=$1 dir=$2 port=$3 db
    mkdir -p "$dir/media"
    if [ "$backend" = sqlite ]; then
        db="  name: sqlite3
  args:
    database: $dir/homeserver.db"
    else
        pg_fresh_db synapse_bench "ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0"
        db="  name: psycopg2
  args:
    user: postgres
    host: 127.0.0.1
    port: 5432
    database: synapse_bench
    cp_min: 5
    cp_max: 10"
    fi
    cat > "$dir/log.yaml" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $dir/homeserver.log
loggers:
  synapse.storage.SQL:
    level: WARNING
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
EOF
    # Rate limits far above anything the scenarios do: they measure throughput, not limiting.
    local high="{per_second: 1000000, burst_count: 1000000}"
    cat > "$dir/homeserver.yaml" <<EOF
server_name: "localhost"
pid_file: $dir/homeserver.pid
listeners:
  - port: $port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
$db
log_config: $dir/log.yaml
media_store_path: $dir/media
signing_key_path: $dir/signing.key
report_stats: false
macaroon_secret_key: "bench-macaroon-$(date +%s%N)"
form_secret: "bench-form-$(date +%s%N)"
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: true
enable_registration_without_verification: true
rc_message: $high
rc_registration: $high
rc_registration_token_validity: $high
rc_login:
  address: $high
  account: $high
  failed_attempts: $high
rc_joins:
  local: $high
  remote: $high
rc_joins_per_room: $high
rc_invites:
  per_room: $high
  per_user: $high
  per_issuer: $high
rc_third_party_invite: $high
rc_room_creation: $high
rc_presence:
  per_user: $high
rc_admin_redaction: $high
rc_3pid_validation: $high
EOF
    run "$VENV/bin/python" -m synapse.app.homeserver --config-path "$dir/homeserver.yaml" --generate-keys > /dev/null
    echo "$VENV/bin/python -m synapse.app.homeserver --config-path $dir/homeserver.yaml > $dir/server.log 2>&1 &" >> "$COMMANDS"
    "$VENV/bin/python" -m synapse.app.homeserver --config-path "$dir/homeserver.yaml" > "$dir/server.log" 2>&1 &
    SERVER_PID=$!
    wait_ready "http://127.0.0.1:$port" "$SERVER_PID"
}

# ---------------------------------------------------------------------------------------------
# One scenario on one server: a fresh database and process, the generator, the JSON line kept.
run_scenario() { # server scenario
    local server=$1 scenario=$2 kind=${1%%-*} backend=${1#*-} port dir args
    port=$(free_port)
    dir="$OUT/$server/$scenario"
    mkdir -p "$dir"
    log "$scenario on $server (port $port)"
    case "$kind" in
        parley) start_parley "$backend" "$dir" "$port" ;;
        synapse) start_synapse "$backend" "$dir" "$port" ;;
    esac
    args=$(scenario_args "$scenario")
    # shellcheck disable=SC2086 # the arguments are words on purpose
    run_generator "$scenario" "$server" "$dir/generator.log" \
        "$GEN" --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --label "$server" $args || true
    stop_server
    case "$server" in
        parley-postgres) pg_drop_db parley_bench ;;
        synapse-postgres) pg_drop_db synapse_bench ;;
    esac
}

# ---------------------------------------------------------------------------------------------
log "machine"
machine_info "$OUT/machine.txt"

if [ "$SKIP_BUILD" = 0 ]; then
    build_release
fi
case " $SERVERS " in *" synapse-"*) install_synapse ;; esac

if [ "$SKIP_ECHO" = 0 ]; then
    # The generator against a server that costs next to nothing: its ceiling, not a result.
    port=$(free_port)
    log "generator ceiling: echo server on port $port"
    echo "$GEN echo-server --listen 127.0.0.1:$port &" >> "$COMMANDS"
    "$GEN" echo-server --listen "127.0.0.1:$port" 2> "$OUT/echo.log" &
    SERVER_PID=$!
    wait_ready "http://127.0.0.1:$port" "$SERVER_PID"
    # shellcheck disable=SC2086
    run_generator dm echo "$OUT/echo-generator.log" \
        "$GEN" --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --label echo $ARGS_echo
    stop_server
fi

for server in $SERVERS; do
    for scenario in $SCENARIOS; do
        run_scenario "$server" "$scenario"
    done
done

if [ "$SKIP_PGBENCH" = 0 ]; then
    if ! command -v pgbench > /dev/null; then
        log "installing pgbench (postgresql-contrib)"
        run apt-get update -q
        run apt-get install -y -q postgresql-contrib
    fi
    log "pgbench: single-row INSERT commits"
    pg_fresh_db bench_commit ""
    run psql -q -d bench_commit -c "CREATE TABLE commits (id BIGSERIAL PRIMARY KEY, client INT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now())"
    psql -At -d bench_commit -c "SHOW synchronous_commit" | sed 's/^/synchronous_commit = /' | tee -a "$COMMANDS" >&2
    echo 'INSERT INTO commits (client) VALUES (:client_id);' > "$OUT/insert.sql"
    for clients in 1 16 64; do
        jobs=$(( clients < 2 ? clients : 2 ))
        line=$(run pgbench -n -c "$clients" -j "$jobs" -T "$PGBENCH_SECS" -f "$OUT/insert.sql" bench_commit 2>&1 \
            | tee "$OUT/pgbench-$clients.log" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | tail -1)
        echo "pgbench $clients clients: $line commits/s" >&2
        printf '{"scenario":"pgbench","label":"postgresql","params":{"clients":%s,"seconds":%s},"result":{"commits_per_s":%s}}\n' \
            "$clients" "$PGBENCH_SECS" "${line:-null}" >> "$RESULTS"
    done
    pg_drop_db bench_commit
fi

log "summary"
python3 "$BENCH/summarize.py" "$RESULTS" | tee "$OUT/summary.txt"
echo "results: $OUT" >&2
