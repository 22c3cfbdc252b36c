#!/usr/bin/env bash
# How much of the PostgreSQL storage code is repeated in the SQLite code: the share of
# non-blank lines under src/storage/postgres that also appear (trimmed, anywhere) under
# src/storage/sqlite. Code shared through src/storage/sql/ is in neither directory, so it
# does not count. Prints one line per file and the total; the goal is at most 20%.
#
#   .ci/dup-lines.sh                              # report
#   .ci/dup-lines.sh --max 20                     # also fail when the total exceeds 20%
#   .ci/dup-lines.sh --exclude events.rs,state.rs # leave files out of the total
set -euo pipefail
cd "$(dirname "$0")/.."
MAX=""
EXCLUDE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --max) MAX=$2; shift ;;
        --exclude) EXCLUDE=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
python3 - "$MAX" "$EXCLUDE" <<'PY'
import pathlib, sys

def lines(path):
    return [l.strip() for l in path.read_text().splitlines() if l.strip()]

excluded = set(filter(None, sys.argv[2].split(",")))
pg = sorted(f for f in pathlib.Path("src/storage/postgres").glob("*.rs") if f.name not in excluded)
sqlite_lines = set()
for f in pathlib.Path("src/storage/sqlite").glob("*.rs"):
    sqlite_lines.update(lines(f))
total = repeated = 0
for f in pg:
    ls = lines(f)
    dup = sum(1 for l in ls if l in sqlite_lines)
    total += len(ls)
    repeated += dup
    print(f"{f.name:20} {dup:5} / {len(ls):5}  {100 * dup / max(len(ls), 1):5.1f}%")
share = 100 * repeated / max(total, 1)
print(f"{'total':20} {repeated:5} / {total:5}  {share:5.1f}%")
if sys.argv[1] and share > float(sys.argv[1]):
    sys.exit(f"repeated share {share:.1f}% exceeds {sys.argv[1]}%")
PY
