#!/usr/bin/env bash
# Two Parleys federating on loopback: cross-server delivery latency (both ways) and the rate at
# which a burst sent on one arrives at the other (its outbound federation queue). See
# docs/benchmarks.md, "Federation (issue 13)".
#
#   bench/federation.sh                          # SQLite, full size
#   bench/federation.sh --backend postgres       # one PostgreSQL database per server
#   bench/federation.sh --repeat 2               # two runs, each with fresh servers
#   bench/federation.sh --quick --skip-build     # small parameters: a trial of the tooling
#   BENCH_ARGS_FEDERATION="--drain-secs 300 federation --senders 16" bench/federation.sh
#
# Each run: fresh databases (SQLite files, or PostgreSQL databases parley_fedbench_a and
# parley_fedbench_b), server A (fed-a.localhost) and server B (fed-b.localhost) on free
# loopback ports, each with a federation listener (self-signed HTTPS) and the other in its
# [federation.destinations]; both must answer /versions and federation /version; then
# `parley-bench federation`, then both are stopped (SIGTERM).
#
# Results go to bench/results/fed-<timestamp>/: results.jsonl (one JSON object per run),
# commands.txt (every command, as run), summary.txt, machine.txt, and per run the servers'
# configs and logs and the generator's log.
#
# Needs: cargo, python3, curl, ss; for --backend postgres, PostgreSQL at 127.0.0.1:5432 as
# user postgres with trust auth.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
BACKEND=sqlite
PROFILE=full
REPEAT=1
SKIP_BUILD=0
while [ $# -gt 0 ]; do
    case "$1" in
        --backend) BACKEND="$2"; shift ;;
        --quick) PROFILE=quick ;;
        --repeat) REPEAT="$2"; shift ;;
        --skip-build) SKIP_BUILD=1 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case "$BACKEND" in sqlite|postgres) ;; *) echo "--backend is sqlite or postgres" >&2; exit 2 ;; esac

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="${OUT:-$BENCH/results/fed-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
COMMANDS="$OUT/commands.txt"
: > "$RESULTS"
: > "$COMMANDS"
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
pg_env

if [ "$PROFILE" = quick ]; then
    ARGS="--drain-secs 120 --read-receipts federation --warmup 5 --latency-messages 50 --reverse-messages 20 --throughput-messages 500 --backlog-messages 500 --senders 4"
else
    # 500 messages A -> B and 200 B -> A at 20/s, then 5,000 from 8 senders on A as fast as A
    # answers, then 5,000 more while B is held stopped (the backlog B then gets). Readers mark
    # what they receive as read (private receipts), as a client showing the room does: without
    # that, each sync counts every unread message of the run (see docs/benchmarks.md).
    ARGS="--drain-secs 600 --read-receipts federation --warmup 20 --latency-messages 500 --latency-rate 20 --reverse-messages 200 --throughput-messages 5000 --backlog-messages 5000 --senders 8"
fi
ARGS="${BENCH_ARGS_FEDERATION:-$ARGS}"

NAME_A=fed-a.localhost
NAME_B=fed-b.localhost
PID_A=""
PID_B=""
stop_servers() {
    stop_pid "$PID_B"
    stop_pid "$PID_A"
    PID_A=""
    PID_B=""
    if [ "$BACKEND" = postgres ]; then
        pg_drop_db parley_fedbench_a
        pg_drop_db parley_fedbench_b
    fi
}
trap stop_servers EXIT

# Waits until the federation listener at 127.0.0.1:$1 answers /_matrix/federation/v1/version.
wait_federation() {
    for _ in $(seq 1 120); do
        curl -skf "https://127.0.0.1:$1/_matrix/federation/v1/version" > /dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "no federation listener on 127.0.0.1:$1" >&2
    return 1
}

# Writes the config of one server. The backlog phase holds B stopped (SIGSTOP) while A sends,
# for 20-60 s; a transaction sent meanwhile must not fail, or A counts a failure and, past 500
# queued PDUs, catches up (sends only the latest event of the room) instead. So A's federation
# request timeout goes from 30 s to 120 s, and B's idle keep-alive limit
# (http.header_read_timeout_secs) from 30 s to 300 s: on resuming, B's overdue timer would
# otherwise close A's idle connection, with A's request unread in it.: its database, client and federation ports, the other.
write_config() { # dir name db client_port fed_port other_name other_fed_port
    local dir=$1 name=$2 db=$3 client=$4 fed=$5 other=$6 other_fed=$7 url
    mkdir -p "$dir"
    if [ "$BACKEND" = sqlite ]; then
        url="sqlite://$dir/parley.db"
    else
        pg_fresh_db "$db" ""
        url="$PG_BASE/$db"
    fi
    parley_config "$dir/parley.toml" "$name" "$client" "$url" - <<EOF
[federation]
listen = "127.0.0.1:$fed"
verify_certificates = false
request_timeout_secs = 120
ip_range_allowlist = ["127.0.0.0/8"]
[federation.destinations]
"$other" = "127.0.0.1:$other_fed"
[http]
header_read_timeout_secs = 300
EOF
}

run_pair() { # run number
    local n=$1 dir="$OUT/parley-$BACKEND-$1" client_a fed_a client_b fed_b label
    label="parley-$BACKEND"
    client_a=$(free_port); fed_a=$(free_port); client_b=$(free_port); fed_b=$(free_port)
    log "run $n on $BACKEND: A $NAME_A (client $client_a, federation $fed_a), B $NAME_B (client $client_b, federation $fed_b)"
    write_config "$dir/a" "$NAME_A" parley_fedbench_a "$client_a" "$fed_a" "$NAME_B" "$fed_b"
    write_config "$dir/b" "$NAME_B" parley_fedbench_b "$client_b" "$fed_b" "$NAME_A" "$fed_a"
    launch_parley "$dir/a"
    PID_A=$LAUNCHED_PID
    launch_parley "$dir/b"
    PID_B=$LAUNCHED_PID
    wait_ready "http://127.0.0.1:$client_a" "$PID_A"
    wait_ready "http://127.0.0.1:$client_b" "$PID_B"
    wait_federation "$fed_a"
    wait_federation "$fed_b"
    # shellcheck disable=SC2086 # the arguments are words on purpose
    run_generator federation "$label" "$dir/generator.log" \
        "$GEN" --url "http://127.0.0.1:$client_a" --server-pid "$PID_A" --label "$label" $ARGS \
        --other "http://127.0.0.1:$client_b" --other-pid "$PID_B" || true
    stop_servers
}

log "machine"
machine_info "$OUT/machine.txt"
if [ "$SKIP_BUILD" = 0 ]; then
    build_release
fi
for n in $(seq 1 "$REPEAT"); do
    run_pair "$n"
done

log "summary"
python3 "$BENCH/summarize.py" "$RESULTS" | tee "$OUT/summary.txt"
echo "results: $OUT" >&2
