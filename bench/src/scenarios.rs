//! The scenarios: how many users, which rooms, who sends what.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::{Value, json};

use crate::{
    Common,
    client::{Api, enc},
    setup::{self, RoomKind},
    stats::{self, PhaseMeter, mib},
    traffic::{Outcome, Receiver, Traffic},
};

/// A cheap, fixed pseudo-random mix (splitmix64), so runs pick the same senders every time.
fn mix(k: u64) -> u64 {
    let mut z = k.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// (a) Direct chats: `rooms` 1:1 rooms over `users` users (each user in about
/// 2·rooms/users of them), both sides of every pair sending.
pub async fn dm(
    api: &Api,
    common: &Common,
    users: usize,
    rooms: usize,
    messages: usize,
    senders: usize,
) -> anyhow::Result<Outcome> {
    ensure!(users >= 2, "at least 2 users");
    ensure!(rooms <= users * (users - 1) / 2, "more rooms than distinct pairs");
    let people = setup::register_users(api, &common.prefix(), users, common.setup_concurrency).await?;
    // Room i pairs user a with the user d places further on; d grows as pairs run out.
    let memberships: Vec<Vec<usize>> = (0..rooms)
        .map(|i| {
            let a = i % users;
            let d = 1 + i / users;
            vec![a, (a + d) % users]
        })
        .collect();
    let made = setup::create_rooms(api, &people, RoomKind::Direct, memberships, common.setup_concurrency).await?;
    let receivers = one_receiver_per_user(api, common, &people).await?;
    let plan: Vec<(usize, usize)> =
        (0..messages).map(|k| (k % rooms, made[k % rooms].members[(k / rooms) % 2])).collect();
    traffic(api, common, &people, &made, receivers, plan, senders, Duration::from_secs(2)).await
}

/// (b) Group rooms: `rooms` rooms of `room_size` members drawn from `users` users (rooms
/// overlap when rooms·room_size > users); senders are members picked at random.
pub async fn group(
    api: &Api,
    common: &Common,
    users: usize,
    rooms: usize,
    room_size: usize,
    messages: usize,
    senders: usize,
) -> anyhow::Result<Outcome> {
    ensure!(room_size >= 2 && room_size <= users, "room size must be between 2 and the number of users");
    let people = setup::register_users(api, &common.prefix(), users, common.setup_concurrency).await?;
    let memberships: Vec<Vec<usize>> = (0..rooms)
        .map(|i| {
            let start = i * users / rooms.max(1);
            (0..room_size).map(|j| (start + j) % users).collect()
        })
        .collect();
    let made = setup::create_rooms(api, &people, RoomKind::Group, memberships, common.setup_concurrency).await?;
    let receivers = one_receiver_per_user(api, common, &people).await?;
    let plan: Vec<(usize, usize)> = (0..messages)
        .map(|k| {
            let room = k % rooms;
            let members = &made[room].members;
            (room, members[(mix(k as u64) % members.len() as u64) as usize])
        })
        .collect();
    traffic(api, common, &people, &made, receivers, plan, senders, Duration::from_secs(2)).await
}

/// (c) Many idle long-polls, then a burst. `users` users in rooms of `room_size`, each user
/// with `devices` devices and `polls` concurrent long-polls per device; every room also has a
/// sender who does not poll. After the polls are open (and the server's socket count has
/// settled), each sender sends `burst` messages at once.
#[expect(clippy::too_many_arguments, reason = "one per scenario knob")]
pub async fn idle(
    api: &Api,
    common: &Common,
    users: usize,
    devices: usize,
    polls: usize,
    room_size: usize,
    burst: usize,
    poll_timeout_ms: u64,
    settle: Duration,
) -> anyhow::Result<Outcome> {
    ensure!(users >= 1 && devices >= 1 && polls >= 1 && room_size >= 1, "all counts must be at least 1");
    let rooms = users.div_ceil(room_size);
    let people = setup::register_users(api, &common.prefix(), users + rooms, common.setup_concurrency).await?;
    let device_sessions = setup::login_devices(api, &people[..users], devices - 1, common.setup_concurrency).await?;
    let memberships: Vec<Vec<usize>> = (0..rooms)
        .map(|i| std::iter::once(users + i).chain(i * room_size..((i + 1) * room_size).min(users)).collect())
        .collect();
    let made = setup::create_rooms(api, &people, RoomKind::Group, memberships, common.setup_concurrency).await?;
    let tokens: Vec<&str> = device_sessions.iter().flatten().map(|s| s.token.as_str()).collect();
    let batches = setup::initial_syncs(api, &tokens, common.presence, common.setup_concurrency).await?;
    let mut receivers = Vec::with_capacity(users * devices * polls);
    let mut batch = batches.into_iter();
    for (user, sessions) in device_sessions.iter().enumerate() {
        for session in sessions {
            let since = batch.next().context("a batch per device")?;
            for p in 0..polls {
                receivers.push(Receiver {
                    user,
                    token: session.token.clone(),
                    since: since.clone(),
                    timeout_ms: poll_timeout_ms + p as u64,
                });
            }
        }
    }
    let plan: Vec<(usize, usize)> = (0..burst).flat_map(|_| (0..rooms).map(move |i| (i, users + i))).collect();
    let senders = plan.len();
    let mut outcome = traffic(api, common, &people, &made, receivers, plan, senders, settle).await?;
    let per_poll = outcome.json["server_rss_per_poll_bytes"].as_f64();
    outcome.lines.insert(
        0,
        format!(
            "memory per waiting sync {}",
            per_poll.map_or_else(|| "- (needs --server-pid)".to_owned(), |b| format!("{:.1} KiB", b / 1024.0))
        ),
    );
    Ok(outcome)
}

/// (d) Initial sync of one user in `rooms` rooms, each with `members` other members from a
/// pool of `pool` users and `messages` messages sent by `talkers` of them (so that, with
/// timelines of 10 events, lazy loading leaves out the members who did not speak); timed
/// `repeat` times with lazy-loaded members and `repeat` times with full member state.
#[expect(clippy::too_many_arguments, reason = "one per scenario knob")]
pub async fn initial_sync(
    api: &Api,
    common: &Common,
    rooms: usize,
    pool: usize,
    members: usize,
    messages: usize,
    talkers: usize,
    repeat: usize,
) -> anyhow::Result<Outcome> {
    ensure!(members <= pool && pool >= 1, "members per room must not exceed the pool");
    ensure!(talkers >= 1, "at least one member must talk");
    let setup_start = Instant::now();
    let people = setup::register_users(api, &common.prefix(), pool + 1, common.setup_concurrency).await?;
    let target = pool;
    let memberships: Vec<Vec<usize>> = (0..rooms)
        .map(|i| std::iter::once(target).chain((0..members).map(|j| (i * members + j) % pool)).collect())
        .collect();
    let made = setup::create_rooms(api, &people, RoomKind::Group, memberships, common.setup_concurrency).await?;
    let sends: Vec<(usize, usize)> = (0..rooms).flat_map(|r| (0..messages).map(move |m| (r, m))).collect();
    let made_ref = &made;
    let people_ref = &people;
    stream::iter(sends)
        .map(|(r, m)| async move {
            let room = &made_ref[r];
            let others = (room.members.len() - 1).min(talkers);
            let sender = if others == 0 { room.members[0] } else { room.members[1 + m % others] };
            let content = json!({"msgtype": "m.text", "body": format!("history {m} in room {r}")});
            let path = format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                enc(&room.id),
                enc(&format!("{}-h{r}-{m}", common.run_id))
            );
            api.setup_call("send", reqwest::Method::PUT, &path, Some(&people_ref[sender].token), Some(&content)).await
        })
        .buffer_unordered(common.setup_concurrency)
        .try_collect::<Vec<Value>>()
        .await?;
    eprintln!("  setup done in {:.1} s", setup_start.elapsed().as_secs_f64());

    let token = &people[target].token;
    let lazy = json!({"room": {"timeline": {"limit": 10}, "state": {"lazy_load_members": true}}});
    let full = json!({"room": {"timeline": {"limit": 10}}});
    let meter = PhaseMeter::start(common.server_pid.as_deref());
    let mut modes = serde_json::Map::new();
    let mut lines = Vec::new();
    for (name, filter) in [("lazy_members", lazy), ("full_members", full)] {
        let query = format!("filter={}", enc(&filter.to_string()));
        let mut times = Vec::with_capacity(repeat);
        let (mut size, mut joined, mut member_events) = (0, 0, 0);
        for _ in 0..repeat {
            let started = Instant::now();
            let (body, bytes) = api.sync_sized(token, &query).await.context("initial sync")?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            size = bytes;
            let rooms_json = body["rooms"]["join"].as_object().cloned().unwrap_or_default();
            joined = rooms_json.len();
            member_events = rooms_json
                .values()
                .map(|room| {
                    let state = room["state"]["events"]
                        .as_array()
                        .map_or(0, |e| e.iter().filter(|ev| ev["type"] == "m.room.member").count());
                    let timeline = room["timeline"]["events"]
                        .as_array()
                        .map_or(0, |e| e.iter().filter(|ev| ev["type"] == "m.room.member").count());
                    state + timeline
                })
                .sum::<usize>();
        }
        if joined != rooms {
            api.errors.add(format!("initial sync {name}: {joined} of {rooms} rooms"));
        }
        let median = stats::median(&times);
        lines.push(format!(
            "initial sync, {name:<13} median {median:.1} ms  (runs: {})  {joined} rooms, {member_events} member events, {:.1} KiB",
            times.iter().map(|t| format!("{t:.0}")).collect::<Vec<_>>().join(", "),
            size as f64 / 1024.0
        ));
        modes.insert(
            name.to_owned(),
            json!({
                "median_ms": stats::round3(median),
                "runs_ms": times.iter().map(|&t| stats::round3(t)).collect::<Vec<_>>(),
                "rooms_returned": joined,
                "member_events": member_events,
                "response_bytes": size,
            }),
        );
    }
    let phase = meter.finish();
    lines.push(format!(
        "server                  cpu {} s, peak rss {}",
        phase["server_cpu_s"],
        mib(phase["server_peak_rss_bytes"].as_u64())
    ));
    let errors = api.errors.snapshot();
    lines.push(format!(
        "errors                  {}",
        if errors.is_empty() { "none".to_owned() } else { format!("{errors:?}") }
    ));
    let json = json!({
        "rooms": rooms,
        "initial_sync": modes,
        "phase": phase,
        "errors": errors,
    });
    Ok(Outcome { json, lines })
}

async fn one_receiver_per_user(
    api: &Api,
    common: &Common,
    people: &[crate::client::Session],
) -> anyhow::Result<Vec<Receiver>> {
    let tokens: Vec<&str> = people.iter().map(|p| p.token.as_str()).collect();
    let batches = setup::initial_syncs(api, &tokens, common.presence, common.setup_concurrency).await?;
    Ok(batches
        .into_iter()
        .enumerate()
        .map(|(user, since)| Receiver {
            user,
            token: people[user].token.clone(),
            since,
            timeout_ms: common.poll_timeout_ms,
        })
        .collect())
}

#[expect(clippy::too_many_arguments, reason = "the plan of one run")]
async fn traffic(
    api: &Api,
    common: &Common,
    people: &[crate::client::Session],
    rooms: &[setup::Room],
    receivers: Vec<Receiver>,
    messages: Vec<(usize, usize)>,
    senders: usize,
    settle: Duration,
) -> anyhow::Result<Outcome> {
    Traffic {
        api,
        run_id: common.run_id.clone(),
        users: people,
        rooms,
        receivers,
        messages,
        senders,
        rate: common.rate,
        timeline_limit: common.timeline_limit,
        presence: common.presence,
        duration: Duration::from_secs(common.duration_secs),
        drain: Duration::from_secs(common.drain_secs),
        open_rate: common.poll_open_rate,
        settle,
        server_pid: common.server_pid.as_deref(),
        homes: None,
        other_pids: Vec::new(),
        pause_pid: None,
        read_receipts: common.read_receipts,
    }
    .run()
    .await
}
