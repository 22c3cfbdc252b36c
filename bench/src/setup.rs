//! Users, devices and rooms, made through the Client-Server API before anything is measured.

use std::time::Instant;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::{Value, json};

use crate::client::{Api, Session, enc};

/// A room and its members (indices into the user list; the first is the creator).
#[derive(Clone, Debug)]
pub struct Room {
    pub id: String,
    pub members: Vec<usize>,
}

/// What kind of room to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomKind {
    /// A direct chat: created with `is_direct` and an invite, which the other side accepts
    /// with `/join`.
    Direct,
    /// A public group room that members `/join`.
    Group,
}

/// Registers `count` users `{prefix}{i}`, `concurrency` at a time, in order.
pub async fn register_users(api: &Api, prefix: &str, count: usize, concurrency: usize) -> anyhow::Result<Vec<Session>> {
    let started = Instant::now();
    let users: Vec<Session> = stream::iter(0..count)
        .map(|i| {
            let localpart = format!("{prefix}{i}");
            async move { api.register(&localpart).await }
        })
        .buffered(concurrency)
        .try_collect()
        .await?;
    eprintln!("  registered {count} users in {:.1} s", started.elapsed().as_secs_f64());
    Ok(users)
}

/// Logs every user in `extra` more times (new devices), in order: `[user][device]`.
pub async fn login_devices(
    api: &Api,
    users: &[Session],
    extra: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Vec<Session>>> {
    let started = Instant::now();
    let logins: Vec<Session> = stream::iter(users.iter().flat_map(|u| std::iter::repeat_n(u, extra)))
        .map(|u| api.login(&u.localpart))
        .buffered(concurrency)
        .try_collect()
        .await?;
    let mut devices: Vec<Vec<Session>> = users.iter().map(|u| vec![u.clone()]).collect();
    for (i, session) in logins.into_iter().enumerate() {
        devices[i / extra.max(1)].push(session);
    }
    if extra > 0 {
        eprintln!("  logged in {} more devices in {:.1} s", users.len() * extra, started.elapsed().as_secs_f64());
    }
    Ok(devices)
}

/// Creates the rooms (the first member creates each) and joins every other member.
pub async fn create_rooms(
    api: &Api,
    users: &[Session],
    kind: RoomKind,
    memberships: Vec<Vec<usize>>,
    concurrency: usize,
) -> anyhow::Result<Vec<Room>> {
    let started = Instant::now();
    let ids: Vec<String> = stream::iter(memberships.iter().enumerate())
        .map(|(i, members)| {
            let creator = &users[members[0]];
            let body = match kind {
                RoomKind::Direct => json!({
                    "preset": "trusted_private_chat",
                    "is_direct": true,
                    "invite": members[1..].iter().map(|&m| users[m].user_id.clone()).collect::<Vec<_>>(),
                }),
                RoomKind::Group => json!({"preset": "public_chat", "name": format!("bench room {i}")}),
            };
            async move { api.create_room(&creator.token, &body).await }
        })
        .buffered(concurrency)
        .try_collect()
        .await?;
    let joins: Vec<(usize, &str)> = memberships
        .iter()
        .zip(&ids)
        .flat_map(|(members, id)| members[1..].iter().map(move |&m| (m, id.as_str())))
        .collect();
    let join_count = joins.len();
    stream::iter(joins)
        .map(|(m, id)| api.join(&users[m].token, id))
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    eprintln!("  created {} rooms and made {join_count} joins in {:.1} s", ids.len(), started.elapsed().as_secs_f64());
    Ok(ids.into_iter().zip(memberships).map(|(id, members)| Room { id, members }).collect())
}

/// The filter every measuring sync uses: timelines up to `limit` events, lazy-loaded members,
/// and (unless `presence`) no presence, so that only messages wake a poll.
pub fn sync_filter(limit: usize, presence: bool) -> Value {
    let mut filter = json!({
        "room": {"timeline": {"limit": limit}, "state": {"lazy_load_members": true}},
        "account_data": {"not_types": ["*"]},
    });
    if !presence {
        filter["presence"] = json!({"not_types": ["*"]});
    }
    filter
}

/// The query string of a sync (without `since`).
pub fn sync_query(filter: &Value, timeout_ms: u64, presence: bool) -> String {
    let mut query = format!("timeout={timeout_ms}&filter={}", enc(&filter.to_string()));
    if !presence {
        // Polling does not make the user "online", so presence does not wake other polls.
        query.push_str("&set_presence=offline");
    }
    query
}

/// Initial syncs for the given devices, `concurrency` at a time; returns their `next_batch`.
pub async fn initial_syncs(
    api: &Api,
    tokens: &[&str],
    presence: bool,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    let query = sync_query(&sync_filter(1, presence), 0, presence);
    let query = &query;
    let batches: Vec<String> = stream::iter(tokens)
        .map(|token| async move {
            let resp = loop {
                match api.sync(token, query, std::time::Duration::ZERO).await {
                    Ok(resp) => break resp,
                    Err(err) => {
                        api.errors.add(format!("setup initial sync: {}", err.kind()));
                        let wait = err.retry_after().context(format!("initial sync: {err}"))?;
                        tokio::time::sleep(wait).await;
                    }
                }
            };
            resp["next_batch"].as_str().map(str::to_owned).context("no next_batch in the initial sync")
        })
        .buffered(concurrency)
        .try_collect()
        .await?;
    eprintln!("  {} initial syncs in {:.1} s", tokens.len(), started.elapsed().as_secs_f64());
    Ok(batches)
}
