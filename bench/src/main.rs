//! `parley-bench`: a load generator for Matrix homeservers that speaks only the standard
//! Client-Server API, so the same run measures Parley, Synapse or anything else.
//!
//! Each scenario registers its own users (open registration, `m.login.dummy`), builds its
//! rooms, and reports in people's terms and as one JSON line starting with `BENCH_JSON `.

mod client;
mod echo;
mod federation;
mod own_reads;
mod scenarios;
mod setup;
mod stats;
mod traffic;

use std::{
    hash::{BuildHasher as _, Hasher as _},
    io::Write as _,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
#[command(name = "parley-bench", about = "Load generator for Matrix homeservers (Client-Server API only)")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Options every scenario takes.
#[derive(clap::Args, Clone)]
pub struct Common {
    /// Base URL of the homeserver.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8008")]
    pub url: String,
    /// PID of the server process, for its RSS, CPU time and open sockets (from /proc).
    #[arg(long, global = true)]
    pub server_pid: Option<String>,
    /// A name for the server in the report (e.g. `parley-sqlite`).
    #[arg(long, global = true, default_value = "server")]
    pub label: String,
    /// Setup requests (register, createRoom, join, ...) in flight at once.
    #[arg(long, global = true, default_value_t = 8)]
    pub setup_concurrency: usize,
    /// Long-poll timeout of the receivers' syncs, in milliseconds.
    #[arg(long, global = true, default_value_t = 30_000)]
    pub poll_timeout_ms: u64,
    /// Timeline limit of the receivers' incremental syncs (high, so no message is skipped).
    #[arg(long, global = true, default_value_t = 500)]
    pub timeline_limit: usize,
    /// Total send rate in messages/s (open loop); 0 sends as fast as the senders can.
    #[arg(long, global = true, default_value_t = 0.0)]
    pub rate: f64,
    /// Stop taking new messages after this many seconds of sending (0: send them all), so a
    /// slow server does not make a run take forever; messages never sent are not expected.
    #[arg(long, global = true, default_value_t = 0)]
    pub duration_secs: u64,
    /// Seconds to wait after the last send for outstanding deliveries.
    #[arg(long, global = true, default_value_t = 60)]
    pub drain_secs: u64,
    /// Long-polls opened per second (0: all at once). Clients of a real server do not all
    /// connect in the same instant, and a server with a short listen backlog (Synapse's is 50)
    /// would otherwise see connect timeouts.
    #[arg(long, global = true, default_value_t = 1000.0)]
    pub poll_open_rate: f64,
    /// Leave presence on: syncs mark users online and presence updates wake polls.
    #[arg(long, global = true)]
    pub presence: bool,
    /// Receivers mark what they receive as read, as a client showing the room does: after
    /// each sync response with new events, a private read receipt (`m.read.private`, which
    /// stays on its server) for the newest one in each room. Without it every message stays
    /// unread, and a server that counts unread messages per sync pays for all of them.
    #[arg(long, global = true)]
    pub read_receipts: bool,
    /// Set by the program: distinguishes this run's users, transactions and messages.
    #[arg(skip)]
    pub run_id: String,
}

impl Common {
    /// Localpart prefix of this run's users.
    pub fn prefix(&self) -> String {
        format!("bench{}_", self.run_id)
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// (a) Many 1:1 rooms, both sides of each pair chatting.
    Dm {
        #[arg(long, default_value_t = 200)]
        users: usize,
        #[arg(long, default_value_t = 400)]
        rooms: usize,
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        #[arg(long, default_value_t = 16)]
        senders: usize,
    },
    /// (b) Group rooms of `room-size` members.
    Group {
        #[arg(long, default_value_t = 200)]
        users: usize,
        #[arg(long, default_value_t = 4)]
        rooms: usize,
        #[arg(long, default_value_t = 100)]
        room_size: usize,
        #[arg(long, default_value_t = 400)]
        messages: usize,
        #[arg(long, default_value_t = 8)]
        senders: usize,
    },
    /// (c) users × devices × polls idle long-polls, then a burst of messages.
    Idle {
        #[arg(long, default_value_t = 200)]
        users: usize,
        /// Devices per user (each beyond the first is a /login).
        #[arg(long, default_value_t = 2)]
        devices: usize,
        /// Concurrent long-polls per device.
        #[arg(long, default_value_t = 25)]
        polls: usize,
        #[arg(long, default_value_t = 50)]
        room_size: usize,
        /// Messages per room in the burst.
        #[arg(long, default_value_t = 1)]
        burst: usize,
        /// Long-poll timeout here (overrides --poll-timeout-ms): the polls must outlast the settling.
        #[arg(long, default_value_t = 110_000)]
        idle_timeout_ms: u64,
        /// Minimum seconds between opening the polls and the burst.
        #[arg(long, default_value_t = 5)]
        settle_secs: u64,
    },
    /// (d) Initial sync of one user in many rooms, lazy-loaded vs full member state.
    InitialSync {
        #[arg(long, default_value_t = 500)]
        rooms: usize,
        /// Users the rooms' other members are drawn from.
        #[arg(long, default_value_t = 100)]
        pool: usize,
        /// Other members per room.
        #[arg(long, default_value_t = 8)]
        members: usize,
        /// Messages per room before the syncs.
        #[arg(long, default_value_t = 10)]
        messages: usize,
        /// Members who send those messages (the rest only joined).
        #[arg(long, default_value_t = 2)]
        talkers: usize,
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
    /// (e) One device's reads of its own events (/event, /messages, /sync) after `early`
    /// sends and again after `sends`: their cost must not grow with what it has sent.
    OwnReads {
        #[arg(long, default_value_t = 100_000)]
        sends: usize,
        /// Sends before the first measurement; with 10 rooms, 200 fills every page read (20
        /// events), so both phases read the same amount.
        #[arg(long, default_value_t = 200)]
        early: usize,
        /// Rooms the sends are spread over (the look-up is per device, not per room).
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        /// Reads of each kind per phase.
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// Sends in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// (f) Two federating servers: `--url` is server A, `--other` server B. Cross-server
    /// delivery latency both ways (one message at a time), then the rate at which a burst
    /// sent on A arrives at B (A's outbound queue). Every message must arrive exactly once,
    /// in the order of A's timeline.
    Federation {
        /// Base URL of server B (client API).
        #[arg(long)]
        other: String,
        /// PID of server B's process, for its CPU time and RSS.
        #[arg(long)]
        other_pid: Option<String>,
        /// Users on B in the room, each with a long-poll (1: one remote reader).
        #[arg(long, default_value_t = 1)]
        remote_users: usize,
        /// Messages A → B before measuring (not counted).
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// Messages A → B, one at a time, for the latency.
        #[arg(long, default_value_t = 500)]
        latency_messages: usize,
        /// Send rate of the latency phases, messages/s (one sender).
        #[arg(long, default_value_t = 20.0)]
        latency_rate: f64,
        /// Messages B → A, one at a time (0: skip that direction).
        #[arg(long, default_value_t = 200)]
        reverse_messages: usize,
        /// Messages of the throughput burst, sent on A as fast as A answers (0: skip).
        #[arg(long, default_value_t = 5000)]
        throughput_messages: usize,
        /// Messages sent on A while B's process is stopped (needs --other-pid; 0: skip): the
        /// rate at which A's queue then delivers the backlog to B.
        #[arg(long, default_value_t = 0)]
        backlog_messages: usize,
        /// Concurrent senders on A in the throughput and backlog bursts (each its own user).
        #[arg(long, default_value_t = 8)]
        senders: usize,
    },
    /// A trivial in-memory stand-in homeserver, to show what the generator can push.
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:18008")]
        listen: String,
    },
}

fn run_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut common = cli.common;
    common.run_id = run_id();
    if let Scenario::EchoServer { listen } = &cli.scenario {
        return echo::serve(listen).await;
    }
    let api = client::Api::new(&common.url)?;
    api.wait_ready(Duration::from_secs(60)).await?;
    let started = Instant::now();
    let (name, params, outcome) = match cli.scenario {
        Scenario::Dm { users, rooms, messages, senders } => (
            "dm",
            json!({"users": users, "rooms": rooms, "messages": messages, "senders": senders}),
            scenarios::dm(&api, &common, users, rooms, messages, senders).await?,
        ),
        Scenario::Group { users, rooms, room_size, messages, senders } => (
            "group",
            json!({"users": users, "rooms": rooms, "room_size": room_size, "messages": messages, "senders": senders}),
            scenarios::group(&api, &common, users, rooms, room_size, messages, senders).await?,
        ),
        Scenario::Idle { users, devices, polls, room_size, burst, idle_timeout_ms, settle_secs } => (
            "idle",
            json!({"users": users, "devices": devices, "polls_per_device": polls, "room_size": room_size,
                   "burst": burst, "poll_timeout_ms": idle_timeout_ms, "polls": users * devices * polls}),
            scenarios::idle(
                &api,
                &common,
                users,
                devices,
                polls,
                room_size,
                burst,
                idle_timeout_ms,
                Duration::from_secs(settle_secs),
            )
            .await?,
        ),
        Scenario::InitialSync { rooms, pool, members, messages, talkers, repeat } => (
            "initial_sync",
            json!({"rooms": rooms, "pool": pool, "members": members, "messages": messages,
                   "talkers": talkers, "repeat": repeat}),
            scenarios::initial_sync(&api, &common, rooms, pool, members, messages, talkers, repeat).await?,
        ),
        Scenario::OwnReads { sends, early, rooms, samples, concurrency } => (
            "own_reads",
            json!({"sends": sends, "early": early, "rooms": rooms, "samples": samples, "concurrency": concurrency}),
            own_reads::run(&api, &common, own_reads::Params { sends, early, rooms, samples, concurrency }).await?,
        ),
        Scenario::Federation {
            other,
            other_pid,
            remote_users,
            warmup,
            latency_messages,
            latency_rate,
            reverse_messages,
            throughput_messages,
            backlog_messages,
            senders,
        } => (
            "federation",
            json!({"other": other, "remote_users": remote_users, "warmup": warmup,
                   "latency_messages": latency_messages, "latency_rate": latency_rate,
                   "reverse_messages": reverse_messages, "throughput_messages": throughput_messages,
                   "backlog_messages": backlog_messages, "senders": senders, "throughput_rate": common.rate,
                   "read_receipts": common.read_receipts}),
            federation::run(
                &api,
                &common,
                federation::Params {
                    other,
                    other_pid,
                    remote_users,
                    warmup,
                    latency_messages,
                    latency_rate,
                    reverse_messages,
                    throughput_messages,
                    backlog_messages,
                    senders,
                },
            )
            .await?,
        ),
        Scenario::EchoServer { .. } => unreachable!("handled above"),
    };
    let report = json!({
        "scenario": name,
        "label": common.label,
        "url": common.url,
        "run_id": common.run_id,
        "params": params,
        "wall_seconds": stats::round3(started.elapsed().as_secs_f64()),
        "result": outcome.json,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "== {name} on {} ({}) ==", common.label, common.url)?;
    for line in &outcome.lines {
        writeln!(out, "  {line}")?;
    }
    writeln!(out, "BENCH_JSON {report}")?;
    Ok(())
}
