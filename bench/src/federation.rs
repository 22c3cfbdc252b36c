//! (f) Two homeservers federating: how long a message takes from a client of one server to a
//! client of the other, and how fast the sending server's outbound queue carries a burst.
//!
//! Setup: `senders + 1` users on server A (`--url`; the last one only reads: the observer),
//! `remote-users` users on server B (`--other`). The first A user creates a public room with
//! an alias; the other A users join it, then the B users join it by that alias (B resolves it
//! over federation and joins with make_join / send_join). Then, in one room:
//!
//! 1. **warm-up**: a few messages A → B, not measured (keys fetched, caches filled);
//! 2. **latency A → B**: one A user sends messages one at a time at a fixed rate; every B user
//!    has a /sync long-poll open; latency = from the start of the send request to the
//!    message's arrival in a B user's sync (the A observer's arrival is the same-server
//!    reference);
//! 3. **latency B → A**: the same the other way (the first B user sends, the A observer reads);
//! 4. **throughput**: `senders` A users send `throughput-messages` as fast as A answers them
//!    (closed loop); the rate at B is messages / (last arrival at B − first send start);
//! 5. **backlog** (needs `--other-pid`): B's process is stopped (SIGSTOP) while `senders` A
//!    users send `backlog-messages`, and resumed (SIGCONT) once A has answered them all: A's
//!    queue then holds them all, and the rate at which they arrive at B after the resume is
//!    the queue's own rate (transactions of up to 50 PDUs back to back, nothing else sent).
//!    B must be stopped for less than A's federation request timeout, or A counts the
//!    in-flight transaction as failed (and, past 500 queued PDUs, catches up instead).
//!
//! Every phase checks that every receiver got every message exactly once, and in the order of
//! A's timeline (`/messages` on A); B's `/messages` must show that order too.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, ensure};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    Common,
    client::{Api, Session, enc},
    setup::{self, Room},
    stats::{self, Summary},
    traffic::{Details, Outcome, Receiver, Traffic},
};

/// The scenario's knobs (see `parley-bench federation --help`).
pub struct Params {
    pub other: String,
    pub other_pid: Option<String>,
    pub remote_users: usize,
    pub warmup: usize,
    pub latency_messages: usize,
    pub latency_rate: f64,
    pub reverse_messages: usize,
    pub throughput_messages: usize,
    pub backlog_messages: usize,
    pub senders: usize,
}

/// Both servers, their users and the shared room.
struct World<'a> {
    common: &'a Common,
    /// A's users (senders, then the observer), then B's.
    people: Vec<Session>,
    homes: Vec<Api>,
    room: Room,
    /// Index of the first B user (= number of A users).
    first_b: usize,
    observer: usize,
    other_pid: Option<String>,
}

/// One phase's figures, and whether it was correct.
struct PhaseReport {
    json: Value,
    lines: Vec<String>,
    correct: bool,
}

pub async fn run(api: &Api, common: &Common, params: Params) -> anyhow::Result<Outcome> {
    ensure!(params.senders >= 1 && params.remote_users >= 1, "need at least one sender and one remote user");
    ensure!(
        params.backlog_messages == 0 || params.other_pid.is_some(),
        "--backlog-messages needs --other-pid (B is held stopped)"
    );
    let there = api.at(&params.other);
    there.wait_ready(Duration::from_secs(60)).await?;
    let prefix = common.prefix();
    let setup_start = Instant::now();
    let a_users =
        setup::register_users(api, &format!("{prefix}a"), params.senders + 1, common.setup_concurrency).await?;
    let b_users =
        setup::register_users(&there, &format!("{prefix}b"), params.remote_users, common.setup_concurrency).await?;
    let a_server = server_of(&a_users[0].user_id)?;
    let b_server = server_of(&b_users[0].user_id)?;
    ensure!(a_server != b_server, "--url and --other are the same server ({a_server})");

    let alias_local = format!("{prefix}fed");
    let body = json!({"preset": "public_chat", "room_alias_name": alias_local, "name": "federation bench"});
    let room_id = api.create_room(&a_users[0].token, &body).await?;
    stream::iter(&a_users[1..])
        .map(|user| api.join(&user.token, &room_id))
        .buffer_unordered(common.setup_concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    // The first remote join makes B join the room (alias query, make_join, send_join); the
    // others are B's users joining a room B is already in.
    let alias = format!("#{alias_local}:{a_server}");
    let joining = Instant::now();
    let joined = there.join_by(&b_users[0].token, &alias).await.context("the first remote join")?;
    ensure!(joined == room_id, "B joined {joined}, not A's room {room_id}");
    let first_join_ms = joining.elapsed().as_secs_f64() * 1000.0;
    let joining = Instant::now();
    stream::iter(&b_users[1..])
        .map(|user| there.join_by(&user.token, &alias))
        .buffer_unordered(common.setup_concurrency)
        .try_collect::<Vec<String>>()
        .await?;
    let other_joins_s = joining.elapsed().as_secs_f64();
    let everyone = a_users.len() + b_users.len();
    wait_members(api, &a_users[0].token, &room_id, everyone).await.context("A never saw every member")?;
    wait_members(&there, &b_users[0].token, &room_id, everyone).await.context("B never saw every member")?;
    eprintln!(
        "  room {room_id} on {a_server}, joined from {b_server}: first remote join {first_join_ms:.0} ms, {} more in {other_joins_s:.1} s; setup {:.1} s",
        b_users.len() - 1,
        setup_start.elapsed().as_secs_f64()
    );

    let first_b = a_users.len();
    let observer = first_b - 1;
    let homes: Vec<Api> = std::iter::repeat_n(api.clone(), a_users.len())
        .chain(std::iter::repeat_n(there.clone(), b_users.len()))
        .collect();
    let people: Vec<Session> = a_users.into_iter().chain(b_users).collect();
    let room = Room { id: room_id, members: (0..people.len()).collect() };
    let world = World { common, people, homes, room, first_b, observer, other_pid: params.other_pid.clone() };

    let b_receivers: Vec<usize> = (first_b..world.people.len()).collect();
    let a_then_b: Vec<usize> = std::iter::once(observer).chain(b_receivers.iter().copied()).collect();
    let mut phases = serde_json::Map::new();
    let mut lines = Vec::new();
    let mut correct = true;
    let mut add = |name: &str, report: PhaseReport| {
        correct &= report.correct;
        lines.push(format!("-- {name}"));
        lines.extend(report.lines);
        phases.insert(name.to_owned(), report.json);
    };

    if params.warmup > 0 {
        let plan = vec![(0, 0); params.warmup];
        add("warmup", world.phase("w", plan, 1, params.latency_rate, &a_then_b, false).await?);
    }
    if params.latency_messages > 0 {
        let plan = vec![(0, 0); params.latency_messages];
        add("latency_a_to_b", world.phase("l", plan, 1, params.latency_rate, &a_then_b, false).await?);
    }
    if params.reverse_messages > 0 {
        // B's first user sends; the A observer and B's other users read.
        let plan = vec![(0, first_b); params.reverse_messages];
        let readers: Vec<usize> = std::iter::once(observer).chain(first_b + 1..world.people.len()).collect();
        add("latency_b_to_a", world.phase("r", plan, 1, params.latency_rate, &readers, false).await?);
    }
    if params.throughput_messages > 0 {
        let plan: Vec<(usize, usize)> = (0..params.throughput_messages).map(|k| (0, k % params.senders)).collect();
        add("throughput", world.phase("t", plan, params.senders, common.rate, &a_then_b, false).await?);
    }
    if params.backlog_messages > 0 {
        let plan: Vec<(usize, usize)> = (0..params.backlog_messages).map(|k| (0, k % params.senders)).collect();
        add("backlog", world.phase("b", plan, params.senders, common.rate, &a_then_b, true).await?);
    }
    let errors = api.errors.snapshot();
    lines.push(format!(
        "errors                  {}",
        if errors.is_empty() { "none".to_owned() } else { format!("{errors:?}") }
    ));
    lines.push(format!("correct                 {}", if correct { "yes" } else { "NO (see above)" }));
    let json = json!({
        "servers": {"a": a_server, "b": b_server},
        "room_id": world.room.id,
        "first_remote_join_ms": stats::round3(first_join_ms),
        "other_remote_joins_s": stats::round3(other_joins_s),
        "phases": phases,
        "correct": correct,
        "errors": errors,
    });
    Ok(Outcome { json, lines })
}

impl World<'_> {
    /// Sends `plan` ((room, sender) per message), `senders` at a time at `rate` (0: as fast as
    /// the server answers), with `readers` long-polling; then checks and summarises. With
    /// `pause_other`, B's process is stopped while the messages are sent.
    async fn phase(
        &self,
        tag: &str,
        plan: Vec<(usize, usize)>,
        senders: usize,
        rate: f64,
        readers: &[usize],
        pause_other: bool,
    ) -> anyhow::Result<PhaseReport> {
        let common = self.common;
        let run_tag = format!("{}{tag}", common.run_id);
        let mut receivers = Vec::with_capacity(readers.len());
        for &user in readers {
            let token = self.people[user].token.as_str();
            let since = setup::initial_syncs(&self.homes[user], &[token], common.presence, 1).await?;
            let since = since.into_iter().next().context("a batch per reader")?;
            receivers.push(Receiver { user, token: token.to_owned(), since, timeout_ms: common.poll_timeout_ms });
        }
        let sender_side_is_a = plan.first().is_none_or(|&(_, sender)| sender < self.first_b);
        let (outcome, details) = Traffic {
            api: &self.homes[0],
            run_id: run_tag.clone(),
            users: &self.people,
            rooms: std::slice::from_ref(&self.room),
            receivers,
            messages: plan,
            senders,
            rate,
            timeline_limit: common.timeline_limit,
            presence: common.presence,
            duration: Duration::from_secs(common.duration_secs),
            drain: Duration::from_secs(common.drain_secs),
            open_rate: 0.0,
            settle: Duration::from_secs(2),
            server_pid: common.server_pid.as_deref(),
            homes: Some(self.homes.clone()),
            other_pids: self.other_pid.iter().map(|pid| ("other".to_owned(), pid.clone())).collect(),
            pause_pid: if pause_other { self.other_pid.clone() } else { None },
            read_receipts: common.read_receipts,
        }
        .run_detailed()
        .await?;

        // What A's and B's timelines show of this phase.
        let a_token = &self.people[self.observer].token;
        let b_token = &self.people[self.first_b].token;
        let a_order = timeline_order(&self.homes[self.observer], a_token, &self.room.id, &run_tag).await?;
        let b_order = timeline_order(&self.homes[self.first_b], b_token, &self.room.id, &run_tag).await?;
        Ok(self.report(&outcome, &details, sender_side_is_a, &a_order, &b_order))
    }

    fn report(
        &self,
        outcome: &Outcome,
        details: &Details,
        from_a: bool,
        a_order: &[u32],
        b_order: &[u32],
    ) -> PhaseReport {
        let traffic = &outcome.json;
        let sent_ok = traffic["sent_ok"].as_u64().unwrap_or(0);
        // Remote: receivers on the other server than the senders.
        let is_remote = |user: usize| (user >= self.first_b) == from_a;
        let (remote, local): (Vec<_>, Vec<_>) = details.receivers.iter().partition(|r| is_remote(r.user));
        let summary = |group: &[&crate::traffic::ReceiverDetail]| {
            Summary::from_micros(group.iter().flat_map(|r| r.latencies.iter().copied()).collect())
        };
        let (remote_latency, local_latency) = (summary(&remote), summary(&local));
        // Arrival rate: messages / (last arrival − first send start), for the slowest receiver
        // of the group; and the lag of that last arrival behind the last send's answer.
        let rate = |group: &[&crate::traffic::ReceiverDetail]| {
            let last = group.iter().map(|r| r.last_arrival_us).max().unwrap_or(0);
            let first = group.iter().map(|r| r.first_arrival_us).filter(|&t| t > 0).min().unwrap_or(0);
            let span = last.saturating_sub(details.send_start_us) as f64 / 1e6;
            let steady = last.saturating_sub(first) as f64 / 1e6;
            let count = group.iter().map(|r| r.order.len()).min().unwrap_or(0) as f64;
            json!({
                "receivers": group.len(),
                "per_s_from_first_send": if span > 0.0 { stats::round3(count / span) } else { 0.0 },
                "per_s_first_to_last_arrival": if steady > 0.0 { stats::round3((count - 1.0).max(0.0) / steady) } else { 0.0 },
                "last_arrival_s": stats::round3(span),
                "lag_after_last_send_s": stats::round3(last.saturating_sub(details.send_end_us) as f64 / 1e6),
                "expected": group.iter().map(|r| r.expected).sum::<u64>(),
                "missing": group.iter().map(|r| r.missing).sum::<u64>(),
                "duplicates": group.iter().map(|r| r.duplicates).sum::<u64>(),
                "limited_timelines": group.iter().map(|r| r.gaps).sum::<u64>(),
                "sync_responses": group.iter().map(|r| r.responses).sum::<u64>(),
            })
        };
        let (remote_rate, local_rate) = (rate(&remote), rate(&local));
        // Messages answered on the sending server but not yet at a remote receiver, at worst.
        let peak_in_flight =
            remote.iter().map(|r| peak_backlog(&details.answered_us, &r.arrivals_us)).max().unwrap_or(0);
        // With the other server held stopped: what arrived after it was resumed, and how fast.
        let drain = details.resumed_us.map(|resumed| {
            let after: Vec<u64> =
                remote.iter().flat_map(|r| r.arrivals_us.iter().copied()).filter(|&t| t >= resumed).collect();
            let per_receiver = after.len() as f64 / remote.len().max(1) as f64;
            let first = after.iter().min().map_or(0, |t| t - resumed) as f64 / 1e6;
            let last = after.iter().max().map_or(0, |t| t - resumed) as f64 / 1e6;
            json!({
                "arrived_after_resume": per_receiver,
                "first_arrival_after_resume_s": stats::round3(first),
                "last_arrival_after_resume_s": stats::round3(last),
                "per_s": if last > 0.0 { stats::round3(per_receiver / last) } else { 0.0 },
            })
        });

        // Order: A's timeline holds every message sent, once; B's timeline and every
        // receiver's arrivals follow it.
        let mut sorted = a_order.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let a_complete = a_order.len() as u64 == sent_ok && sorted.len() == a_order.len();
        let b_same = b_order == a_order;
        let out_of_order: Vec<usize> =
            details.receivers.iter().filter(|r| r.order != a_order).map(|r| r.user).collect();
        let exact = traffic["deliveries_missing"] == 0
            && traffic["deliveries_duplicate"] == 0
            && traffic["deliveries_unexpected"] == 0
            && traffic["send_failed"] == 0
            && traffic["drained"] == true;
        let correct = exact && a_complete && b_same && out_of_order.is_empty();

        let sender_side = if from_a { "A" } else { "B" };
        let (near, far) = if from_a { ("A", "B") } else { ("B", "A") };
        let mut lines = vec![
            format!(
                "sent on {sender_side}               {sent_ok} in {:.2} s by {} senders: {:.1} msgs/s (send round trip p50 {:.1} ms, p99 {:.1} ms)",
                traffic["send_seconds"].as_f64().unwrap_or(0.0),
                traffic["senders"],
                traffic["throughput_msgs_per_s"].as_f64().unwrap_or(0.0),
                traffic["send_rtt"]["p50_ms"].as_f64().unwrap_or(0.0),
                traffic["send_rtt"]["p99_ms"].as_f64().unwrap_or(0.0),
            ),
            format!("latency to {far} (remote)   {}", remote_latency.line95()),
        ];
        if !local.is_empty() {
            lines.push(format!("latency to {near} (local)    {}", local_latency.line95()));
        }
        lines.push(format!(
            "arrival at {far}            {:.1} msgs/s from the first send, {:.1} msgs/s first to last arrival; last {:.2} s after the first send, {:.2} s after the last",
            remote_rate["per_s_from_first_send"].as_f64().unwrap_or(0.0),
            remote_rate["per_s_first_to_last_arrival"].as_f64().unwrap_or(0.0),
            remote_rate["last_arrival_s"].as_f64().unwrap_or(0.0),
            remote_rate["lag_after_last_send_s"].as_f64().unwrap_or(0.0),
        ));
        lines.push(format!(
            "in flight at most       {peak_in_flight} messages answered on {sender_side}, not yet at {far}"
        ));
        if let Some(drain) = &drain {
            lines.push(format!(
                "{far} held stopped          resumed once every send was answered: {:.0} messages arrived after, the first {:.2} s and the last {:.2} s after the resume: {:.1} msgs/s",
                drain["arrived_after_resume"].as_f64().unwrap_or(0.0),
                drain["first_arrival_after_resume_s"].as_f64().unwrap_or(0.0),
                drain["last_arrival_after_resume_s"].as_f64().unwrap_or(0.0),
                drain["per_s"].as_f64().unwrap_or(0.0),
            ));
        }
        lines.push(format!(
            "deliveries              {} expected, {} missing, {} duplicate, {} unexpected, {} limited timelines",
            traffic["deliveries_expected"],
            traffic["deliveries_missing"],
            traffic["deliveries_duplicate"],
            traffic["deliveries_unexpected"],
            traffic["timeline_gaps"],
        ));
        lines.push(format!(
            "order                   A's timeline {} messages{}; B's timeline {}; receivers out of A's order: {}",
            a_order.len(),
            if a_complete { "" } else { " (NOT every message sent exactly once)" },
            if b_same { "the same" } else { "DIFFERENT" },
            out_of_order.len(),
        ));
        let cpu = |v: &Value| v["server_cpu_s"].as_f64().map_or_else(|| "-".to_owned(), |c| format!("{c:.2} s"));
        lines.push(format!(
            "cpu                     A {}, B {}, generator {}",
            cpu(&traffic["phase"]),
            cpu(&traffic["other_servers"]["other"]),
            traffic["phase"]["generator_cpu_s"],
        ));
        let json = json!({
            "from": sender_side,
            "remote_latency": remote_latency.json(),
            "local_latency": if local.is_empty() { Value::Null } else { local_latency.json() },
            "remote_arrival": remote_rate,
            "local_arrival": if local.is_empty() { Value::Null } else { local_rate },
            "peak_in_flight": peak_in_flight,
            "drain_after_resume": drain,
            "order": {
                "a_timeline_messages": a_order.len(),
                "a_timeline_complete": a_complete,
                "b_timeline_same": b_same,
                "receivers_out_of_order": out_of_order,
            },
            "correct": correct,
            "traffic": traffic,
        });
        PhaseReport { json, lines, correct }
    }
}

/// The most messages answered (`answered`, times; 0 for a failed send) and not yet arrived
/// (`arrivals`, times) at any moment.
fn peak_backlog(answered: &[u64], arrivals: &[u64]) -> u64 {
    let mut answered: Vec<u64> = answered.iter().copied().filter(|&t| t > 0).collect();
    answered.sort_unstable();
    let mut arrivals = arrivals.to_vec();
    arrivals.sort_unstable();
    let (mut i, mut j, mut peak) = (0, 0, 0_i64);
    while i < answered.len() {
        // A message can reach the other server before its sender hears the answer.
        if j < arrivals.len() && arrivals[j] <= answered[i] {
            j += 1;
        } else {
            i += 1;
            peak = peak.max(i as i64 - j as i64);
        }
    }
    u64::try_from(peak).unwrap_or(0)
}

/// The server name of a user ID.
fn server_of(user_id: &str) -> anyhow::Result<String> {
    user_id.split_once(':').map(|(_, server)| server.to_owned()).ok_or_else(|| anyhow!("not a user ID: {user_id}"))
}

/// Waits until the room has `count` joined members as `api`'s server sees it.
async fn wait_members(api: &Api, token: &str, room_id: &str, count: usize) -> anyhow::Result<()> {
    let path = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room_id));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let resp = api.setup_call("joined_members", Method::GET, &path, Some(token), None).await?;
        let joined = resp["joined"].as_object().map_or(0, serde_json::Map::len);
        if joined >= count {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{joined} of {count} members after 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `bench_id`s of the messages tagged `run_tag` in the room's timeline as `api`'s server
/// shows it (`/messages`, paged back from the end), oldest first.
async fn timeline_order(api: &Api, token: &str, room_id: &str, run_tag: &str) -> anyhow::Result<Vec<u32>> {
    let mut ids = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(room_id));
        if let Some(token) = &from {
            path.push_str(&format!("&from={}", enc(token)));
        }
        let page = api.setup_call("messages", Method::GET, &path, Some(token), None).await?;
        let chunk = page["chunk"].as_array().map_or(&[][..], Vec::as_slice);
        for event in chunk {
            let content = &event["content"];
            if content["bench_run"].as_str() == Some(run_tag)
                && let Some(id) = content["bench_id"].as_u64()
            {
                ids.push(id as u32);
            }
        }
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    ids.reverse();
    Ok(ids)
}
