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
    if not rows:
        return
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
    federation(runs)
    rows = [[run["params"]["clients"], fmt(get(run, "result", "commits_per_s"), 0)]
            for run in runs if run.get("scenario") == "pgbench"]
    if rows:
        table("PostgreSQL single-row INSERT commits (pgbench)", ["clients", "commits/s"], rows)


def federation(runs):
    runs = [run for run in runs if run.get("scenario") == "federation"]
    for run in runs:
        if get(run, "params", "read_receipts"):
            run["label"] += " (reads)"
    rows = []
    for run in runs:
        r = run.get("result")
        if run.get("failed") or r is None:
            rows.append([run["label"], "FAILED"] + [""] * 8)
            continue
        for name in ("latency_a_to_b", "latency_b_to_a"):
            phase = get(r, "phases", name)
            if phase is None:
                continue
            remote, local = phase["remote_latency"], phase.get("local_latency") or {}
            rows.append([
                run["label"], "A -> B" if name == "latency_a_to_b" else "B -> A",
                remote["count"], fmt(remote["p50_ms"]), fmt(remote["p95_ms"]), fmt(remote["p99_ms"]),
                fmt(remote["max_ms"]), fmt(local.get("p50_ms")), "yes" if phase["correct"] else "NO",
            ])
    table(
        "Scenario federation: delivery latency to the other server (send start to arrival in /sync)",
        ["server", "direction", "messages", "p50 ms", "p95 ms", "p99 ms", "max ms", "same-server p50",
         "correct"],
        rows,
    )
    rows = []
    for run in runs:
        phase = get(run, "result", "phases", "throughput")
        if phase is None:
            continue
        traffic, remote = phase["traffic"], phase["remote_arrival"]
        rows.append([
            run["label"], traffic["sent_ok"], traffic["senders"], fmt(traffic["throughput_msgs_per_s"]),
            fmt(remote["per_s_from_first_send"]), fmt(remote["per_s_first_to_last_arrival"]),
            fmt(remote["lag_after_last_send_s"], 2), fmt(get(traffic, "phase", "server_cpu_s"), 2),
            fmt(get(traffic, "other_servers", "other", "server_cpu_s"), 2), "yes" if phase["correct"] else "NO",
        ])
    table(
        "Scenario federation: a burst sent on A, arriving at B (A's outbound queue)",
        ["server", "messages", "senders", "sent on A /s", "at B /s from first send", "at B /s first to last",
         "B lag s", "A cpu s", "B cpu s", "correct"],
        rows,
    )
    rows = []
    for run in runs:
        phase = get(run, "result", "phases", "backlog")
        if phase is None:
            continue
        traffic, drain = phase["traffic"], phase.get("drain_after_resume") or {}
        rows.append([
            run["label"], traffic["sent_ok"], fmt(traffic["throughput_msgs_per_s"]),
            fmt(drain.get("first_arrival_after_resume_s"), 2), fmt(drain.get("last_arrival_after_resume_s"), 2),
            fmt(drain.get("per_s")), fmt(get(traffic, "phase", "server_cpu_s"), 2),
            fmt(get(traffic, "other_servers", "other", "server_cpu_s"), 2), "yes" if phase["correct"] else "NO",
        ])
    table(
        "Scenario federation: a backlog (sent on A while B was stopped) delivered after B resumes",
        ["server", "messages", "sent on A /s", "first at B s", "last at B s", "at B /s", "A cpu s", "B cpu s",
         "correct"],
        rows,
    )


if __name__ == "__main__":
    main()
