#!/usr/bin/env python3
"""Prints the comparison tables of a results.jsonl written by bench/run.sh."""

import json
import sys


def get(obj, *path):
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def mib(value):
    return "-" if value is None else f"{value / 1048576:.0f}"


def table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    line = "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))))


def errors(result):
    errs = get(result, "errors") or {}
    measured = {k: v for k, v in errs.items() if not k.startswith("setup ")}
    total = sum(measured.values())
    return str(total) if total else "0"


def main():
    runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    for name in ("dm", "group"):
        rows = []
        for run in runs:
            if run.get("scenario") != name:
                continue
            r = run.get("result")
            if run.get("failed") or r is None:
                rows.append([run["label"], "FAILED"] + [""] * 10)
                continue
            lat = r["delivery_latency"]
            phase = r["phase"]
            rows.append([
                run["label"] + (" (generator ceiling)" if run["label"] == "echo" else ""),
                fmt(r["throughput_msgs_per_s"]),
                fmt(lat["p50_ms"]), fmt(lat["p90_ms"]), fmt(lat["p99_ms"]), fmt(lat["max_ms"]),
                f'{r["deliveries_missing"]}/{r["deliveries_duplicate"]}',
                errors(r),
                fmt(phase.get("server_cpu_s"), 2),
                mib(phase.get("server_peak_rss_bytes")),
                fmt(phase.get("generator_cpu_s"), 2),
            ])
        table(
            f"Scenario {name}: sending and delivery (latency from send start to arrival in each recipient's /sync)",
            ["server", "msgs/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "miss/dup", "errors",
             "server cpu s", "peak MiB", "gen cpu s"],
            rows,
        )
    rows = []
    for run in runs:
        if run.get("scenario") != "idle":
            continue
        r = run.get("result")
        if run.get("failed") or r is None:
            rows.append([run["label"], "FAILED"] + [""] * 8)
            continue
        lat = r["delivery_latency"]
        per_poll = r.get("server_rss_per_poll_bytes")
        rows.append([
            run["label"], r["receivers"],
            mib(r.get("server_rss_before_polls_bytes")), mib(r.get("server_rss_polling_bytes")),
            "-" if per_poll is None else f"{per_poll / 1024:.1f}",
            fmt(lat["p50_ms"]), fmt(lat["p90_ms"]), fmt(lat["p99_ms"]), fmt(lat["max_ms"]),
            f'{r["deliveries_missing"]}/{r["deliveries_duplicate"]}', errors(r),
        ])
    table(
        "Scenario idle: waiting long-polls, then a burst (wake latency from send start)",
        ["server", "polls", "rss before MiB", "rss polling MiB", "KiB/poll", "wake p50", "p90", "p99", "max",
         "miss/dup", "errors"],
        rows,
    )
    rows = []
    for run in runs:
        if run.get("scenario") != "initial_sync":
            continue
        r = run.get("result")
        if run.get("failed") or r is None:
            rows.append([run["label"], "FAILED"] + [""] * 5)
            continue
        lazy, full = r["initial_sync"]["lazy_members"], r["initial_sync"]["full_members"]
        rows.append([
            run["label"], r["rooms"],
            fmt(lazy["median_ms"]), f'{lazy["response_bytes"] / 1024:.0f}',
            fmt(full["median_ms"]), f'{full["response_bytes"] / 1024:.0f}',
            errors(r),
        ])
    table(
        "Scenario initial-sync: one user in many rooms (median of the repetitions)",
        ["server", "rooms", "lazy ms", "lazy KiB", "full ms", "full KiB", "errors"],
        rows,
    )
    rows = []
    for run in runs:
        if run.get("scenario") != "own_reads":
            continue
        r = run.get("result")
        if run.get("failed") or r is None:
            rows.append([run["label"], "FAILED"] + [""] * 6)
            continue
        early, late = r["phases"]["early"], r["phases"]["late"]
        row = [run["label"], f'{early["sends"]} / {late["sends"]}']
        for kind in ("event", "messages", "sync"):
            row.append(f'{fmt(early["reads"][kind]["p50_ms"])} / {fmt(late["reads"][kind]["p50_ms"])}')
        rows.append(row)
    table(
        "Scenario own-reads: one device's reads of its own events, p50 ms after few / many sends",
        ["server", "sends", "/event", "/messages", "/sync"],
        rows,
    )
    rows = [[run["params"]["clients"], fmt(get(run, "result", "commits_per_s"), 0)]
            for run in runs if run.get("scenario") == "pgbench"]
    if rows:
        table("PostgreSQL single-row INSERT commits (pgbench)", ["clients", "commits/s"], rows)


if __name__ == "__main__":
    main()
