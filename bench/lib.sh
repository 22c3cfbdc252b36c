# Helpers shared by bench/run.sh and bench/federation.sh (sourced, not run).
#
# Expects: ROOT (the repository), COMMANDS (the commands.txt being written), CARGO_TARGET_DIR,
# and for PostgreSQL the PG* variables (see pg_env).

GEN="$CARGO_TARGET_DIR/release/parley-bench"
PARLEY="$CARGO_TARGET_DIR/release/parley"

log() { printf '\n### %s\n' "$*" >&2; }
# Runs a command and records it in commands.txt.
run() { printf '%s\n' "$*" >> "$COMMANDS"; "$@"; }

# PostgreSQL at 127.0.0.1:5432 as user postgres (trust auth).
pg_env() {
    PGHOST=127.0.0.1
    PGPORT=5432
    PGUSER=postgres
    PGOPTIONS="--client-min-messages=warning"
    export PGHOST PGPORT PGUSER PGOPTIONS
    PG_BASE="postgres://postgres@127.0.0.1:5432"
}

# Release builds of the server and the generator.
build_release() {
    log "building Parley and the generator (release)"
    # Two commands: `--bin parley` would otherwise also restrict which of parley-bench's bins are built.
    run cargo build --release --manifest-path "$ROOT/Cargo.toml" -p parley --bin parley
    run cargo build --release --manifest-path "$ROOT/Cargo.toml" -p parley-bench
}

# The machine and the commit, into $1 (and stderr).
machine_info() {
    { uname -a; nproc; free -m | sed -n 2p; git -C "$ROOT" rev-parse HEAD; } | tee "$1" >&2
}

# A free TCP port on 127.0.0.1 (never one another program listens on).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until $1 answers /versions and $2 (the PID) is the process listening on its port.
wait_ready() {
    local url=$1 pid=$2 port=${1##*:}
    for _ in $(seq 1 240); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "server $pid exited during startup" >&2
            return 1
        fi
        if curl -sf "$url/_matrix/client/versions" > /dev/null 2>&1 \
            && ss -ltnp "sport = :$port" | grep -q "pid=$pid,"; then
            return 0
        fi
        sleep 0.5
    done
    echo "server $pid did not answer on $url" >&2
    return 1
}

# Stops a server we started (SIGTERM, then SIGKILL after 30 s); one a benchmark held
# stopped (SIGSTOP) is resumed first.
stop_pid() {
    local pid=$1
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -CONT "$pid" 2>/dev/null || true
        kill -TERM "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        wait "$pid" 2>/dev/null || true
    fi
}

pg_fresh_db() { # name [extra CREATE DATABASE options]
    run psql -q -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)"
    run psql -q -d postgres -c "CREATE DATABASE $1 $2"
}
pg_drop_db() { psql -q -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" || true; }

# Writes a Parley config for benchmarks: open registration, no effective rate limit, warn
# logging. Extra TOML (e.g. a [federation] section) is read from stdin when $5 is "-".
parley_config() { # file server_name client_port database_url [-]
    {
        cat <<EOF
server_name = "$2"
[listen]
client = "127.0.0.1:$3"
[database]
url = "$4"
max_connections = 16
[registration]
mode = "open"
[rate_limits]
per_second = 1000000.0
burst = 1000000
[logging]
level = "warn"
EOF
        if [ "${5:-}" = - ]; then cat; fi
    } > "$1"
}

# Starts Parley with $1/parley.toml, logging to $1/server.log; its PID in LAUNCHED_PID.
launch_parley() { # dir
    echo "$PARLEY --config $1/parley.toml serve > $1/server.log 2>&1 &" >> "$COMMANDS"
    "$PARLEY" --config "$1/parley.toml" serve > "$1/server.log" 2>&1 &
    LAUNCHED_PID=$!
}

# Runs the generator (the command in "$@", recorded), keeps its BENCH_JSON line in $RESULTS
# and prints the rest; on failure records {"scenario": $1, "label": $2, "failed": true}.
run_generator() { # scenario label generator-log command...
    local scenario=$1 label=$2 genlog=$3 output
    shift 3
    printf '%s\n' "$*" >> "$COMMANDS"
    if output=$("$@" 2> "$genlog"); then
        printf '%s\n' "$output" | grep -v '^BENCH_JSON ' || true
        printf '%s\n' "$output" | sed -n 's/^BENCH_JSON //p' >> "$RESULTS"
    else
        echo "FAILED: $scenario on $label (see $genlog)" >&2
        tail -5 "$genlog" >&2
        printf '{"scenario":"%s","label":"%s","failed":true}\n' "${scenario//-/_}" "$label" >> "$RESULTS"
        return 1
    fi
}
