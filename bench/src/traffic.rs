//! The measured part: long-polling receivers, concurrent senders, and the exactly-once check.
//!
//! Every message carries `bench_run`, `bench_id` and `bench_t` (microseconds since this run's
//! start when the send began) in its content. A receiver that finds one in its sync records
//! the delivery latency `now - bench_t`. At the end every (message, receiving device) pair
//! that should have happened is checked: delivered exactly once, missing, or duplicated.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    client::{Api, CallError, Session, enc},
    setup::{Room, sync_filter, sync_query},
    stats::{self, PhaseMeter, Summary, mib},
};

/// One long-polling loop: a device's token, where it starts, and its timeout.
pub struct Receiver {
    pub user: usize,
    pub token: String,
    pub since: String,
    /// Distinct per poll of one device: Synapse answers identical concurrent sync requests
    /// from one cached computation, which would make several polls cost as much as one.
    pub timeout_ms: u64,
}

pub struct Traffic<'a> {
    pub api: &'a Api,
    pub run_id: String,
    pub users: &'a [Session],
    pub rooms: &'a [Room],
    pub receivers: Vec<Receiver>,
    /// (room, sending user) of each message, in sending order.
    pub messages: Vec<(usize, usize)>,
    pub senders: usize,
    /// Messages per second in total; 0 sends as fast as `senders` allow (closed loop).
    pub rate: f64,
    pub timeline_limit: usize,
    pub presence: bool,
    /// Stop taking new messages after this long (zero: no limit).
    pub duration: Duration,
    /// How long to wait after the last send for late deliveries.
    pub drain: Duration,
    /// Long-polls opened per second (0: all at once).
    pub open_rate: f64,
    /// Minimum wait between opening the polls and the first send.
    pub settle: Duration,
    pub server_pid: Option<&'a str>,
    /// Per user, the server it lives on (its index's `Api`); `None`: every user is on `api`.
    pub homes: Option<Vec<Api>>,
    /// Other server processes to meter over the send phase, as (label, PID).
    pub other_pids: Vec<(String, String)>,
    /// A server process held stopped (SIGSTOP) while the messages are sent and resumed
    /// (SIGCONT) once every send has been answered: what it receives piles up meanwhile.
    pub pause_pid: Option<String>,
    /// Receivers send a private read receipt for the newest event of each sync response (and
    /// leave ephemeral events out of their syncs, so that it does not wake them).
    pub read_receipts: bool,
}

/// What each receiver saw, for scenarios that look closer than the summary (which server a
/// receiver is on, the order of arrivals).
pub struct Details {
    /// When the first send started, in microseconds since the run's clock started (the clock
    /// of `ReceiverDetail`'s times).
    pub send_start_us: u64,
    /// When the last send was answered.
    pub send_end_us: u64,
    /// When each message's send was answered (0: it failed).
    pub answered_us: Vec<u64>,
    /// When the paused process was resumed (with `pause_pid`).
    pub resumed_us: Option<u64>,
    pub receivers: Vec<ReceiverDetail>,
}

pub struct ReceiverDetail {
    pub user: usize,
    /// First-delivery latencies, microseconds.
    pub latencies: Vec<u64>,
    /// `bench_id`s in the order they first arrived.
    pub order: Vec<u32>,
    /// When each of them arrived (microseconds), in the same order.
    pub arrivals_us: Vec<u64>,
    /// When the first and the last new message arrived (microseconds; 0: none did).
    pub first_arrival_us: u64,
    pub last_arrival_us: u64,
    pub expected: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub responses: u64,
}

#[derive(Default)]
struct ReceiverLog {
    /// bench_id → number of deliveries.
    seen: HashMap<u32, u32>,
    /// First-delivery latencies in microseconds.
    latencies: Vec<u64>,
    /// Rooms answered with `limited: true` (the timeline skipped events).
    gaps: u64,
    /// Sync responses received.
    responses: u64,
    /// bench_ids in the order of their first delivery, and when each arrived.
    order: Vec<u32>,
    arrivals: Vec<u64>,
    /// When the first and the last new message arrived (microseconds since t0).
    first_arrival: u64,
    last_arrival: u64,
}

struct Shared {
    t0: Instant,
    run_id: String,
    stop: AtomicBool,
    opened: AtomicUsize,
    /// Per receiver: deliveries it should get (counted as sends succeed) and distinct ones it got.
    expected: Vec<AtomicU64>,
    got: Vec<AtomicU64>,
    logs: Vec<Mutex<ReceiverLog>>,
}

impl Shared {
    fn micros(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }
}

/// What a run of traffic produced: a JSON object and human-readable lines.
pub struct Outcome {
    pub json: Value,
    pub lines: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Traffic<'_> {
    pub async fn run(self) -> anyhow::Result<Outcome> {
        self.run_detailed().await.map(|(outcome, _)| outcome)
    }

    /// The run, and what each receiver saw.
    pub async fn run_detailed(self) -> anyhow::Result<(Outcome, Details)> {
        let homes: Vec<Api> = self.homes.clone().unwrap_or_else(|| vec![self.api.clone(); self.users.len()]);
        anyhow::ensure!(homes.len() == self.users.len(), "one home server per user");
        let homes = Arc::new(homes);
        let n_recv = self.receivers.len();
        let shared = Arc::new(Shared {
            t0: Instant::now(),
            run_id: self.run_id.clone(),
            stop: AtomicBool::new(false),
            opened: AtomicUsize::new(0),
            expected: (0..n_recv).map(|_| AtomicU64::new(0)).collect(),
            got: (0..n_recv).map(|_| AtomicU64::new(0)).collect(),
            logs: (0..n_recv).map(|_| Mutex::default()).collect(),
        });
        let mut receivers_of_user: Vec<Vec<usize>> = vec![Vec::new(); self.users.len()];
        let user_of_receiver: Vec<usize> = self.receivers.iter().map(|r| r.user).collect();
        for (r, receiver) in self.receivers.iter().enumerate() {
            receivers_of_user[receiver.user].push(r);
        }

        // Open every long-poll.
        let pid = self.server_pid;
        let rss_before = pid.and_then(stats::rss);
        let fds_before = pid.and_then(stats::open_fds);
        let mut filter = sync_filter(self.timeline_limit, self.presence);
        if self.read_receipts {
            filter["room"]["ephemeral"] = json!({"not_types": ["*"]});
        }
        let read_receipts = self.read_receipts;
        let mut tasks = Vec::with_capacity(n_recv);
        let opening = Instant::now();
        for (r, receiver) in self.receivers.into_iter().enumerate() {
            if self.open_rate > 0.0 {
                tokio::time::sleep_until((opening + Duration::from_secs_f64(r as f64 / self.open_rate)).into()).await;
            }
            let query = sync_query(&filter, receiver.timeout_ms, self.presence);
            let user_id = self.users[receiver.user].user_id.clone();
            let api = homes[receiver.user].clone();
            let poll = Poll { api, shared: Arc::clone(&shared), r, query, user_id, read_receipts };
            tasks.push(tokio::spawn(poll.run(receiver)));
        }
        while shared.opened.load(Ordering::Relaxed) < n_recv {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A marker for scripts that measure the server while the polls wait (bench/presence.sh).
        eprintln!("  all {n_recv} polls open");
        // Let the server take up every request: at least `settle`, and (with a PID) until it
        // holds a socket for (nearly) every poll, its socket count has stopped moving and it is
        // idle. A server that accepts slowly would otherwise get the burst while still
        // accepting polls.
        let mut last_fds = None;
        let mut last_cpu = pid.and_then(stats::cpu_seconds);
        let mut stable = 0;
        let wanted_fds = fds_before.map(|f| (f + n_recv).saturating_sub(64));
        let settled = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let fds = pid.and_then(stats::open_fds);
            let cpu = pid.and_then(stats::cpu_seconds);
            let idle = match (last_cpu, cpu) {
                (Some(a), Some(b)) => b - a < 0.05,
                _ => true,
            };
            last_cpu = cpu;
            stable = if fds == last_fds && idle { stable + 1 } else { 0 };
            last_fds = fds;
            let enough = match (fds, wanted_fds) {
                (Some(f), Some(w)) => f >= w,
                _ => true,
            };
            if opening.elapsed() >= self.settle && (pid.is_none() || (stable >= 3 && enough)) {
                break true;
            }
            if opening.elapsed() >= self.settle + Duration::from_secs(180) {
                self.api.errors.add("polls never settled (server sockets or CPU still moving)".to_owned());
                break false;
            }
        };
        let rss_polling = pid.and_then(stats::rss);
        let fds_polling = pid.and_then(stats::open_fds);
        let open_secs = opening.elapsed().as_secs_f64();

        // Send.
        let meter = PhaseMeter::start(pid);
        let other_meters: Vec<(String, PhaseMeter)> =
            self.other_pids.iter().map(|(label, pid)| (label.clone(), PhaseMeter::start(Some(pid)))).collect();
        let messages = Arc::new(self.messages);
        let n_msgs = messages.len();
        let msg_ok: Arc<Vec<AtomicBool>> = Arc::new((0..n_msgs).map(|_| AtomicBool::new(false)).collect());
        let answered: Arc<Vec<AtomicU64>> = Arc::new((0..n_msgs).map(|_| AtomicU64::new(0)).collect());
        let send_rtts = Arc::new(Mutex::new(Vec::with_capacity(n_msgs)));
        let next = Arc::new(AtomicUsize::new(0));
        let attempted = Arc::new(AtomicUsize::new(0));
        let members: Arc<Vec<Vec<usize>>> = Arc::new(self.rooms.iter().map(|r| r.members.clone()).collect());
        let room_ids: Arc<Vec<String>> = Arc::new(self.rooms.iter().map(|r| r.id.clone()).collect());
        let tokens: Arc<Vec<String>> = Arc::new(self.users.iter().map(|u| u.token.clone()).collect());
        let receivers_of_user = Arc::new(receivers_of_user);
        let paused = self.pause_pid.as_deref().map(Paused::stop).transpose()?;
        let send_start = Instant::now();
        let send_start_us = shared.micros();
        let mut senders = Vec::with_capacity(self.senders);
        for _ in 0..self.senders {
            let ctx = SendCtx {
                homes: Arc::clone(&homes),
                shared: Arc::clone(&shared),
                messages: Arc::clone(&messages),
                msg_ok: Arc::clone(&msg_ok),
                answered: Arc::clone(&answered),
                rtts: Arc::clone(&send_rtts),
                next: Arc::clone(&next),
                members: Arc::clone(&members),
                room_ids: Arc::clone(&room_ids),
                tokens: Arc::clone(&tokens),
                receivers_of_user: Arc::clone(&receivers_of_user),
                rate: self.rate,
                start: send_start,
                duration: self.duration,
                attempted: Arc::clone(&attempted),
            };
            senders.push(tokio::spawn(ctx.run()));
        }
        for sender in senders {
            sender.await?;
        }
        let send_secs = send_start.elapsed().as_secs_f64();
        let send_end_us = shared.micros();
        let resumed_us = match paused {
            Some(paused) => {
                paused.resume()?;
                Some(shared.micros())
            }
            None => None,
        };

        // Wait for every delivery, or the drain timeout.
        let drain_start = Instant::now();
        let all_in = || {
            shared.expected.iter().zip(&shared.got).all(|(e, g)| g.load(Ordering::Relaxed) >= e.load(Ordering::Relaxed))
        };
        while !all_in() && drain_start.elapsed() < self.drain {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let delivered_secs = send_start.elapsed().as_secs_f64();
        let drained = all_in();
        shared.stop.store(true, Ordering::Relaxed);
        for task in &tasks {
            task.abort();
        }
        let phase = meter.finish();
        let other_phases: serde_json::Map<String, Value> =
            other_meters.into_iter().map(|(label, meter)| (label, meter.finish())).collect();

        // Exactly once?
        let sent_ok = msg_ok.iter().filter(|ok| ok.load(Ordering::Relaxed)).count();
        // With a duration limit, messages past the cut were never attempted.
        let attempted = attempted.load(Ordering::Relaxed);
        let (mut expected, mut missing, mut duplicates, mut unexpected, mut gaps, mut responses) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        let mut latencies = Vec::new();
        let mut details = Vec::with_capacity(n_recv);
        let mut expected_sets: Vec<Vec<u32>> = vec![Vec::new(); n_recv];
        for (k, &(room, sender)) in messages.iter().enumerate() {
            if !msg_ok[k].load(Ordering::Relaxed) {
                continue;
            }
            for &m in members[room].iter().filter(|&&m| m != sender) {
                for &r in &receivers_of_user[m] {
                    expected_sets[r].push(k as u32);
                }
            }
        }
        for (r, wanted) in expected_sets.iter().enumerate() {
            let mut log = lock(&shared.logs[r]);
            gaps += log.gaps;
            responses += log.responses;
            latencies.extend_from_slice(&log.latencies);
            let (mut mine_missing, mut mine_duplicates) = (0, 0);
            for k in wanted {
                match log.seen.remove(k) {
                    None => mine_missing += 1,
                    Some(n) => mine_duplicates += u64::from(n.saturating_sub(1)),
                }
            }
            expected += wanted.len() as u64;
            missing += mine_missing;
            duplicates += mine_duplicates;
            unexpected += log.seen.values().map(|&n| u64::from(n)).sum::<u64>();
            details.push(ReceiverDetail {
                user: user_of_receiver[r],
                latencies: std::mem::take(&mut log.latencies),
                order: std::mem::take(&mut log.order),
                arrivals_us: std::mem::take(&mut log.arrivals),
                first_arrival_us: log.first_arrival,
                last_arrival_us: log.last_arrival,
                expected: wanted.len() as u64,
                missing: mine_missing,
                duplicates: mine_duplicates,
                gaps: log.gaps,
                responses: log.responses,
            });
        }
        let latency = Summary::from_micros(latencies);
        let rtt = Summary::from_micros(std::mem::take(&mut *lock(&send_rtts)));
        let throughput = sent_ok as f64 / send_secs;
        let errors = self.api.errors.snapshot();
        let polls = n_recv as u64;
        let per_poll = match (rss_before, rss_polling) {
            (Some(a), Some(b)) if polls > 0 => Some((b as f64 - a as f64) / polls as f64),
            _ => None,
        };

        let json = json!({
            "receivers": n_recv,
            "messages": n_msgs,
            "senders": self.senders,
            "sent_ok": sent_ok,
            "attempted": attempted,
            "send_failed": attempted.saturating_sub(sent_ok),
            "send_seconds": stats::round3(send_secs),
            "throughput_msgs_per_s": stats::round3(throughput),
            "send_rtt": rtt.json(),
            "deliveries_expected": expected,
            "deliveries_missing": missing,
            "deliveries_duplicate": duplicates,
            "deliveries_unexpected": unexpected,
            "timeline_gaps": gaps,
            "sync_responses": responses,
            "all_delivered_seconds": stats::round3(delivered_secs),
            "drained": drained,
            "delivery_latency": latency.json(),
            "polls_open_seconds": stats::round3(open_secs),
            "polls_settled": settled,
            "server_rss_before_polls_bytes": rss_before,
            "server_rss_polling_bytes": rss_polling,
            "server_rss_per_poll_bytes": per_poll.map(stats::round3),
            "server_fds_before_polls": fds_before,
            "server_fds_polling": fds_polling,
            "phase": phase,
            "other_servers": other_phases,
            "errors": errors,
        });
        let mut lines = vec![
            format!("receivers (long-polls)  {n_recv}"),
            format!(
                "sent                    {sent_ok}/{attempted} ok (of {n_msgs} planned) in {send_secs:.2} s by {} senders: {throughput:.1} msgs/s",
                self.senders
            ),
            format!("send round trip         {}", rtt.line()),
            format!("delivery latency        {}", latency.line()),
            format!(
                "deliveries              {expected} expected, {missing} missing, {duplicates} duplicate, {unexpected} unexpected, {gaps} limited timelines"
            ),
            format!(
                "all delivered after     {delivered_secs:.2} s{}",
                if drained { "" } else { " (drain timeout: some never arrived)" }
            ),
        ];
        if pid.is_some() {
            lines.push(format!(
                "server                  cpu {} s, peak rss {}, rss before polls {}, with polls open {}, fds {} -> {}",
                phase["server_cpu_s"],
                mib(phase["server_peak_rss_bytes"].as_u64()),
                mib(rss_before),
                mib(rss_polling),
                fds_before.map_or("-".to_owned(), |f| f.to_string()),
                fds_polling.map_or("-".to_owned(), |f| f.to_string()),
            ));
        }
        for (label, other) in &other_phases {
            lines.push(format!(
                "{:<24}cpu {} s, peak rss {}",
                format!("server {label}"),
                other["server_cpu_s"],
                mib(other["server_peak_rss_bytes"].as_u64())
            ));
        }
        lines.push(format!("generator cpu           {} s", phase["generator_cpu_s"]));
        lines.push(format!(
            "errors                  {}",
            if errors.is_empty() { "none".to_owned() } else { format!("{errors:?}") }
        ));
        let answered_us = answered.iter().map(|t| t.load(Ordering::Relaxed)).collect();
        let details = Details { send_start_us, send_end_us, answered_us, resumed_us, receivers: details };
        Ok((Outcome { json, lines }, details))
    }
}

/// Sends a signal (`STOP`, `CONT`) to a process, with kill(1).
fn signal(pid: &str, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid).status()?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

/// A process held stopped; resumed by `resume`, or when dropped (an error on the way must
/// not leave it stopped).
struct Paused {
    pid: Option<String>,
}

impl Paused {
    fn stop(pid: &str) -> anyhow::Result<Self> {
        signal(pid, "STOP")?;
        Ok(Self { pid: Some(pid.to_owned()) })
    }

    fn resume(mut self) -> anyhow::Result<()> {
        match self.pid.take() {
            Some(pid) => signal(&pid, "CONT"),
            None => Ok(()),
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = signal(&pid, "CONT");
        }
    }
}

/// One receiver's long-poll loop.
struct Poll {
    api: Api,
    shared: Arc<Shared>,
    r: usize,
    query: String,
    user_id: String,
    read_receipts: bool,
}

impl Poll {
    async fn run(self, receiver: Receiver) {
        let Self { api, shared, r, query, user_id, read_receipts } = self;
        let timeout = Duration::from_millis(receiver.timeout_ms);
        let mut since = receiver.since;
        let mut opened = false;
        while !shared.stop.load(Ordering::Relaxed) {
            let q = format!("since={}&{query}", enc(&since));
            if !opened {
                opened = true;
                shared.opened.fetch_add(1, Ordering::Relaxed);
            }
            match api.sync(&receiver.token, &q, timeout).await {
                Ok(body) => {
                    let new = record(&shared, r, &body, &user_id);
                    shared.got[r].fetch_add(new, Ordering::Relaxed);
                    if read_receipts && new > 0 {
                        mark_read(&api, &receiver.token, &body);
                    }
                    match body["next_batch"].as_str() {
                        Some(next) => since = next.to_owned(),
                        None => {
                            api.errors.add("sync: no next_batch".to_owned());
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                Err(err) => {
                    api.errors.add(format!("sync: {}", err.kind()));
                    let wait = err.retry_after().unwrap_or(Duration::from_millis(200));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Marks the newest timeline event of each room in a sync response as read (privately), in
/// the background: the next poll does not wait for it.
fn mark_read(api: &Api, token: &str, body: &Value) {
    let Some(rooms) = body["rooms"]["join"].as_object() else { return };
    for (room_id, room) in rooms {
        let newest = room["timeline"]["events"].as_array().and_then(|e| e.last()).and_then(|e| e["event_id"].as_str());
        if let Some(event_id) = newest {
            let (api, token, room_id, event_id) = (api.clone(), token.to_owned(), room_id.clone(), event_id.to_owned());
            tokio::spawn(async move {
                if let Err(err) = api.read_private(&token, &room_id, &event_id).await {
                    api.errors.add(format!("receipt: {}", err.kind()));
                }
            });
        }
    }
}

/// Notes what one sync response delivered; returns how many messages were new to it.
fn record(shared: &Shared, r: usize, body: &Value, user_id: &str) -> u64 {
    let now = shared.micros();
    let mut log = lock(&shared.logs[r]);
    log.responses += 1;
    let mut new = 0;
    let Some(rooms) = body["rooms"]["join"].as_object() else { return 0 };
    for room in rooms.values() {
        if room["timeline"]["limited"] == true {
            log.gaps += 1;
        }
        let events = room["timeline"]["events"].as_array().map_or(&[][..], Vec::as_slice);
        for event in events {
            let content = &event["content"];
            if content["bench_run"].as_str() != Some(shared.run_id.as_str())
                || event["sender"].as_str() == Some(user_id)
            {
                continue;
            }
            let (Some(id), Some(t)) = (content["bench_id"].as_u64(), content["bench_t"].as_u64()) else {
                continue;
            };
            let count = log.seen.entry(id as u32).or_insert(0);
            *count += 1;
            if *count == 1 {
                new += 1;
                log.latencies.push(now.saturating_sub(t));
                log.order.push(id as u32);
                log.arrivals.push(now);
                if log.first_arrival == 0 {
                    log.first_arrival = now;
                }
                log.last_arrival = now;
            }
        }
    }
    new
}

struct SendCtx {
    /// Each user's server.
    homes: Arc<Vec<Api>>,
    shared: Arc<Shared>,
    messages: Arc<Vec<(usize, usize)>>,
    msg_ok: Arc<Vec<AtomicBool>>,
    answered: Arc<Vec<AtomicU64>>,
    rtts: Arc<Mutex<Vec<u64>>>,
    next: Arc<AtomicUsize>,
    members: Arc<Vec<Vec<usize>>>,
    room_ids: Arc<Vec<String>>,
    tokens: Arc<Vec<String>>,
    receivers_of_user: Arc<Vec<Vec<usize>>>,
    rate: f64,
    start: Instant,
    duration: Duration,
    attempted: Arc<AtomicUsize>,
}

impl SendCtx {
    async fn run(self) {
        loop {
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(&(room, sender)) = self.messages.get(k) else { break };
            if !self.duration.is_zero() && self.start.elapsed() >= self.duration {
                break;
            }
            self.attempted.fetch_add(1, Ordering::Relaxed);
            if self.rate > 0.0 {
                let due = self.start + Duration::from_secs_f64(k as f64 / self.rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let t = self.shared.micros();
            let run = &self.shared.run_id;
            let content = json!({
                "msgtype": "m.text",
                "body": format!("bench {run} #{k}"),
                "bench_run": run,
                "bench_id": k,
                "bench_t": t,
            });
            let txn = format!("{run}-{k}");
            let mut transport_failures = 0;
            let ok = loop {
                let api = &self.homes[sender];
                match api.send(&self.tokens[sender], &self.room_ids[room], &txn, &content).await {
                    Ok(_) => break true,
                    Err(err) => {
                        api.errors.add(format!("send: {}", err.kind()));
                        if let Some(wait) = err.retry_after() {
                            tokio::time::sleep(wait).await;
                        } else if matches!(err, CallError::Transport(_)) && transport_failures < 3 {
                            // Same transaction ID: a retry cannot duplicate the event.
                            transport_failures += 1;
                        } else {
                            break false;
                        }
                    }
                }
            };
            if ok {
                lock(&self.rtts).push(self.shared.micros() - t);
                self.msg_ok[k].store(true, Ordering::Relaxed);
                self.answered[k].store(self.shared.micros(), Ordering::Relaxed);
                for &m in self.members[room].iter().filter(|&&m| m != sender) {
                    for &r in &self.receivers_of_user[m] {
                        self.shared.expected[r].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}
