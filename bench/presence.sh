#!/usr/bin/env bash
# The presence benchmark (issue: presence): N users online, each sharing rooms with about 50
# others, holding long-polling /syncs with set_presence=online (their heartbeat). Reports the
# server's CPU and memory while they sit there, and the generator's report of the burst.
#
#   bench/presence.sh [sqlite|postgres] [users]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BACKEND=${1:-sqlite}
USERS=${2:-2000}
WINDOW=${WINDOW:-60}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release --manifest-path "$ROOT/Cargo.toml" -p parley --bin parley >&2
cargo build --release --manifest-path "$ROOT/Cargo.toml" -p parley-bench >&2
ulimit -n "$(ulimit -Hn)"
DIR=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
case "$BACKEND" in
    sqlite) DB="sqlite://$DIR/parley.db" ;;
    postgres)
        psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS parley_presence_bench" >/dev/null
        psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE parley_presence_bench" >/dev/null
        DB="postgres://postgres@127.0.0.1:5432/parley_presence_bench" ;;
esac
cat > "$DIR/parley.toml" <<TOML
server_name = "localhost"
[listen]
client = "127.0.0.1:$PORT"
[database]
url = "$DB"
[registration]
mode = "open"
[rate_limits]
per_second = 1000000.0
burst = 1000000
[logging]
level = "warn"
TOML
"$CARGO_TARGET_DIR/release/parley" --config "$DIR/parley.toml" serve 2>"$DIR/server.log" &
PID=$!
cleanup() {
    kill $PID 2>/dev/null; wait $PID 2>/dev/null || true
    rm -rf "$DIR"
    if [ "$BACKEND" = postgres ]; then
        psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS parley_presence_bench WITH (FORCE)" >/dev/null
    fi
}
trap cleanup EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/_matrix/client/versions" >/dev/null && break; sleep 0.2; done
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
# The generator registers the users, builds the rooms, makes each user's initial sync, then
# opens one long-poll per user with set_presence=online (the heartbeat) and a 30 s timeout, as
# clients do, and holds them for RAMP + WINDOW + 30 s before a one-message burst per room.
RAMP=${RAMP:-15}
"$CARGO_TARGET_DIR/release/parley-bench" --presence --url "http://127.0.0.1:$PORT" --server-pid "$PID" \
    --label "parley-$BACKEND-presence" --drain-secs 120 \
    idle --users "$USERS" --devices 1 --polls 1 --room-size 50 --burst 1 \
    --idle-timeout-ms 30000 --settle-secs $((RAMP + WINDOW + 30)) 2> >(tee "$DIR/gen.err" >&2) &
GEN=$!
until grep -q "polls open" "$DIR/gen.err" 2>/dev/null; do
    kill -0 $GEN 2>/dev/null || { echo "generator exited before the polls opened" >&2; exit 1; }
    sleep 0.2
done
# Window 1: users coming online (each change fans out to the users who share a room).
C0=$(cpu); R0=$(rss); T0=$(date +%s.%N)
sleep "$RAMP"
C1=$(cpu); R1=$(rss); T1=$(date +%s.%N)
# Window 2: everyone online, heartbeating through their long-polls.
sleep "$WINDOW"
C2=$(cpu); R2=$(rss); T2=$(date +%s.%N)
pct() { python3 -c "print(round(($2-$1)/100/($4-$3)*100,2))"; }
echo "PRESENCE backend=$BACKEND users=$USERS ramp_${RAMP}s_cpu_percent=$(pct "$C0" "$C1" "$T0" "$T1") steady_${WINDOW}s_cpu_percent=$(pct "$C1" "$C2" "$T1" "$T2") steady_cpu_ticks=$((C2 - C1)) rss_kib_polls_open=$R0 rss_kib_after_ramp=$R1 rss_kib_end=$R2"
wait $GEN
