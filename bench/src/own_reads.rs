//! (e) One device's reads of its own events, after few and after many sends.
//!
//! A server adds `unsigned.transaction_id` to the events a device sent itself, which means
//! looking up that device's transactions on every `/event`, `/messages` and `/sync` that
//! returns them. If the look-up scans all of the device's transactions (issue 21: the
//! PostgreSQL planner took the `(user_id, device_id)` prefix of the primary key and filtered
//! 12,649 rows for one `/event`), a bot's reads slow down as it sends. This scenario measures
//! the three reads after `early` sends and again after `sends`; the ratio should be about 1.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    Common,
    client::{Api, Session, enc},
    stats::{self, Summary},
    traffic::Outcome,
};

/// The scenario's knobs (see `parley-bench own-reads --help`).
pub struct Params {
    pub sends: usize,
    pub early: usize,
    pub rooms: usize,
    pub samples: usize,
    pub concurrency: usize,
}

pub async fn run(api: &Api, common: &Common, params: Params) -> anyhow::Result<Outcome> {
    let Params { sends, early, rooms, samples, concurrency } = params;
    anyhow::ensure!(rooms >= 1 && early >= 1 && sends > early, "need rooms >= 1 and sends > early >= 1");
    let bot = api.register(&format!("{}bot", common.prefix())).await?;
    let mut room_ids = Vec::with_capacity(rooms);
    for i in 0..rooms {
        room_ids
            .push(api.create_room(&bot.token, &json!({"preset": "private_chat", "name": format!("own {i}")})).await?);
    }
    let mut sent: Vec<String> = Vec::with_capacity(sends);
    let mut phases = serde_json::Map::new();
    let mut lines = Vec::new();
    for (phase, upto) in [("early", early), ("late", sends)] {
        let started = Instant::now();
        let batch = send_range(api, common, &bot, &room_ids, sent.len()..upto, concurrency).await?;
        sent.extend(batch);
        eprintln!("  {phase}: {} sends in total ({:.1} s for this batch)", sent.len(), started.elapsed().as_secs_f64());
        let reads = measure(api, &bot, &room_ids, &sent, samples).await?;
        lines.push(format!("after {} sends:", sent.len()));
        for (name, summary) in &reads {
            lines.push(format!("  {name:<9} {}", summary.line()));
        }
        phases.insert(
            phase.to_owned(),
            json!({"sends": sent.len(), "reads": reads.iter().map(|(n, s)| ((*n).to_owned(), s.json())).collect::<serde_json::Map<String, Value>>()}),
        );
    }
    let ratio = |name: &str| {
        let p50 = |phase: &str| phases[phase]["reads"][name]["p50_ms"].as_f64().unwrap_or(0.0);
        if p50("early") > 0.0 { stats::round3(p50("late") / p50("early")) } else { 0.0 }
    };
    let ratios = json!({"event": ratio("event"), "messages": ratio("messages"), "sync": ratio("sync")});
    lines.push(format!("p50 late/early: {ratios}"));
    Ok(Outcome { json: json!({"phases": phases, "p50_ratio_late_to_early": ratios}), lines })
}

/// Sends messages `range` (spread over the rooms), `concurrency` at a time; their event IDs.
async fn send_range(
    api: &Api,
    common: &Common,
    bot: &Session,
    rooms: &[String],
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    stream::iter(range)
        .map(|n| async move {
            let room = &rooms[n % rooms.len()];
            let path = format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                enc(room),
                enc(&format!("{}-own-{n}", common.run_id))
            );
            let content = json!({"msgtype": "m.text", "body": format!("own message {n}")});
            let resp = api.setup_call("send", Method::PUT, &path, Some(&bot.token), Some(&content)).await?;
            resp["event_id"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no event_id in {resp}"))
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

/// `samples` of each read, one after another: `/event` of one of the bot's recent events,
/// `/messages` (the latest 20 of a room) and an initial `/sync` (the latest 20 of each room).
async fn measure(
    api: &Api,
    bot: &Session,
    rooms: &[String],
    sent: &[String],
    samples: usize,
) -> anyhow::Result<Vec<(&'static str, Summary)>> {
    let timed = |started: Instant| u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let call = |path: String| async move {
        let started = Instant::now();
        let body = api.call(Method::GET, &path, Some(&bot.token), None, Duration::from_secs(120)).await;
        body.map(|body| (timed(started), body)).map_err(|e| anyhow!("GET {path}: {e}"))
    };
    let (mut event, mut messages, mut sync) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..samples {
        // One of the most recent sends (the rooms' latest pages hold them too).
        let n = sent.len() - 1 - k % sent.len().min(rooms.len() * 20);
        let room = &rooms[n % rooms.len()];
        let (micros, body) = call(format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(&sent[n]))).await?;
        own_transaction(&body).context("/event")?;
        event.push(micros);
        let room = &rooms[k % rooms.len()];
        let (micros, body) = call(format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20", enc(room))).await?;
        own_transaction(&body["chunk"][0]).context("/messages")?;
        messages.push(micros);
        let filter = enc(&json!({"room": {"timeline": {"limit": 20}}, "presence": {"types": []}}).to_string());
        let (micros, body) = call(format!("/_matrix/client/v3/sync?timeout=0&filter={filter}")).await?;
        let first_room = &body["rooms"]["join"][&rooms[0]]["timeline"]["events"];
        own_transaction(first_room.as_array().and_then(|e| e.last()).unwrap_or(&Value::Null)).context("/sync")?;
        sync.push(micros);
    }
    Ok(vec![
        ("event", Summary::from_micros(event)),
        ("messages", Summary::from_micros(messages)),
        ("sync", Summary::from_micros(sync)),
    ])
}

/// The reads are only comparable if the server did the look-up: the event must carry the
/// transaction ID it was sent with.
fn own_transaction(event: &Value) -> anyhow::Result<()> {
    match event["unsigned"]["transaction_id"].as_str() {
        Some(_) => Ok(()),
        None => Err(anyhow!("no unsigned.transaction_id on the bot's own event: {event}")),
    }
}
