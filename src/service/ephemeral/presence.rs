//! Presence: who is online, kept in memory and persisted only when a user's state changes.
//!
//! Heartbeats (any authenticated request, and `/sync`'s `set_presence`) only update memory.
//! One task ticks every second to apply the automatic changes (idle users become
//! `unavailable`, users with no sync running go `offline`) and to publish coalesced changes:
//! a user whose state flaps publishes at most once per `min_update_interval_secs`. A published
//! change is written with a stream position and wakes the syncs of the users who share a room.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, UserId, presence::PresenceState};
use serde_json::{Value as JsonValue, json};
use tokio::{sync::watch, time::Instant};

use crate::{
    config::PresenceConfig,
    error::Result,
    service::{federation::EduOut, latest::Key, notifier::Notifier, now_ms, rooms::Rooms},
    storage::{Storage, StreamAllocator, receipts::PresenceRow},
};

/// A user counts as currently active within this long of their last activity.
const CURRENTLY_ACTIVE: Duration = Duration::from_secs(60);
/// How often automatic changes and coalesced updates are applied.
const TICK: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Published {
    state: String,
    status_msg: Option<String>,
    currently_active: bool,
}

struct UserPresence {
    state: String,
    status_msg: Option<String>,
    last_active: Instant,
    last_active_ms: i64,
    /// The state was set explicitly (PUT /presence); idleness does not override `unavailable`.
    explicit: bool,
    syncing: u32,
    last_sync_end: Option<Instant>,
    published: Option<Published>,
    last_publish: Option<Instant>,
}

impl UserPresence {
    fn new() -> Self {
        Self {
            state: "offline".to_owned(),
            status_msg: None,
            last_active: Instant::now(),
            last_active_ms: now_ms(),
            explicit: false,
            syncing: 0,
            last_sync_end: None,
            published: None,
            last_publish: None,
        }
    }

    fn current(&self) -> Published {
        Published {
            state: self.state.clone(),
            status_msg: self.status_msg.clone(),
            currently_active: self.state == "online" && self.last_active.elapsed() < CURRENTLY_ACTIVE,
        }
    }
}

/// A running sync, counted for presence until dropped.
pub struct SyncingGuard {
    /// `None` when presence is disabled: nothing was counted.
    presence: Option<Arc<PresenceService>>,
    user_id: OwnedUserId,
}

impl Drop for SyncingGuard {
    fn drop(&mut self) {
        if let Some(presence) = &self.presence {
            presence.sync_ended(&self.user_id);
        }
    }
}

/// A user's presence as clients see it.
#[derive(Clone, Debug)]
pub struct PresenceView {
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ago: Option<u64>,
    pub currently_active: bool,
}

pub struct PresenceService {
    config: PresenceConfig,
    /// Local users only; other servers' users are known from what their servers publish.
    users: Mutex<HashMap<OwnedUserId, UserPresence>>,
    storage: Storage,
    stream: Arc<StreamAllocator>,
    rooms: Arc<Rooms>,
    notifier: Arc<Notifier>,
    /// Tells the servers that share a room with a local user about their published changes.
    edus: EduOut,
}

impl PresenceService {
    pub fn new(
        config: PresenceConfig,
        storage: Storage,
        stream: Arc<StreamAllocator>,
        rooms: Arc<Rooms>,
        notifier: Arc<Notifier>,
        edus: EduOut,
    ) -> Arc<Self> {
        Arc::new(Self { config, users: Mutex::default(), storage, stream, rooms, notifier, edus })
    }

    /// A remote user's presence, as their server published it.
    pub async fn receive_remote(
        &self,
        user_id: &UserId,
        state: &PresenceState,
        status_msg: Option<String>,
        last_active_ago: u64,
        currently_active: bool,
    ) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        let row = PresenceRow {
            user_id: user_id.to_owned(),
            state: state.as_str().to_owned(),
            status_msg,
            last_active_ts: now_ms().saturating_sub(i64::try_from(last_active_ago).unwrap_or(i64::MAX)),
            currently_active,
            stream_pos: 0,
        };
        self.write(row).await
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn with_user<T>(&self, user_id: &UserId, f: impl FnOnce(&mut UserPresence) -> T) -> T {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        f(users.entry(user_id.to_owned()).or_insert_with(UserPresence::new))
    }

    /// Any authenticated activity: the user is active now, and online unless they chose a
    /// state themselves.
    pub fn touch(&self, user_id: &UserId) {
        if !self.config.enabled {
            return;
        }
        self.with_user(user_id, |p| {
            p.last_active = Instant::now();
            p.last_active_ms = now_ms();
            if !p.explicit || p.state == "offline" {
                p.state = "online".to_owned();
                p.explicit = false;
            }
        });
    }

    /// A `/sync` began, with its `set_presence` (`online` when absent). It counts as running
    /// until the returned guard is dropped, which also happens when the sync's future is
    /// dropped half-way (a client gone, a timeout, shutdown): a count raised before an await
    /// and lowered after it would stay up forever then, and the user would never go offline.
    pub fn sync_started(self: &Arc<Self>, user_id: &UserId, set_presence: &PresenceState) -> SyncingGuard {
        if !self.config.enabled {
            return SyncingGuard { presence: None, user_id: user_id.to_owned() };
        }
        self.with_user(user_id, |p| p.syncing += 1);
        match set_presence {
            PresenceState::Offline => {}
            PresenceState::Unavailable => self.with_user(user_id, |p| {
                p.state = "unavailable".to_owned();
                p.explicit = true;
            }),
            // `online`; the API refuses any other value before a sync starts.
            _ => self.touch(user_id),
        }
        SyncingGuard { presence: Some(Arc::clone(self)), user_id: user_id.to_owned() }
    }

    fn sync_ended(&self, user_id: &UserId) {
        self.with_user(user_id, |p| {
            p.syncing = p.syncing.saturating_sub(1);
            p.last_sync_end = Some(Instant::now());
        });
    }

    /// How many syncs of the user are running now (for tests and metrics).
    pub fn syncing(&self, user_id: &UserId) -> u32 {
        self.users.lock().unwrap_or_else(PoisonError::into_inner).get(user_id).map_or(0, |p| p.syncing)
    }

    /// `PUT /presence/{userId}/status`. Published at once (subject to the flap interval).
    pub async fn set_status(&self, user_id: &UserId, state: &str, status_msg: Option<String>) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        self.with_user(user_id, |p| {
            p.state = state.to_owned();
            p.status_msg = status_msg;
            p.explicit = state != "online";
            if state == "online" {
                p.last_active = Instant::now();
                p.last_active_ms = now_ms();
            }
        });
        self.publish_if_due(user_id).await
    }

    /// The user's presence: live from memory when known, else as last published.
    pub async fn get(&self, user_id: &UserId) -> Result<PresenceView> {
        let offline = PresenceView {
            state: "offline".to_owned(),
            status_msg: None,
            last_active_ago: None,
            currently_active: false,
        };
        if !self.config.enabled {
            return Ok(offline);
        }
        let live = {
            let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
            users.get(user_id).map(|p| PresenceView {
                state: p.state.clone(),
                status_msg: p.status_msg.clone(),
                last_active_ago: Some(u64::try_from(p.last_active.elapsed().as_millis()).unwrap_or(u64::MAX)),
                currently_active: p.current().currently_active,
            })
        };
        if let Some(live) = live {
            return Ok(live);
        }
        Ok(match self.storage.presence.get(user_id).await? {
            Some(row) => self.view_of(&row),
            None => offline,
        })
    }

    fn view_of(&self, row: &PresenceRow) -> PresenceView {
        let live =
            self.users.lock().unwrap_or_else(PoisonError::into_inner).get(&row.user_id).map(|p| p.last_active_ms);
        let last_active = live.unwrap_or(row.last_active_ts);
        PresenceView {
            state: row.state.clone(),
            status_msg: row.status_msg.clone(),
            last_active_ago: Some(u64::try_from(now_ms().saturating_sub(last_active)).unwrap_or(0)),
            currently_active: row.currently_active,
        }
    }

    /// The `m.presence` events for `viewer`: users who share a room with them (and
    /// themselves) whose presence was published in `(after, up_to]`, or all such users'
    /// current presence on an initial sync.
    /// `joined_rooms` are the viewer's joined rooms, which the caller knows already.
    pub async fn events_for(
        &self,
        viewer: &UserId,
        joined_rooms: &[OwnedRoomId],
        after: Option<i64>,
        up_to: i64,
    ) -> Result<Vec<JsonValue>> {
        if !self.config.enabled {
            return Ok(Vec::new());
        }
        let mut visible = HashSet::from([viewer.to_owned()]);
        for room_id in joined_rooms {
            visible.extend(self.rooms.members.audience_of(room_id).await?.iter().cloned());
        }
        let rows = self.storage.presence.changed_since(after.unwrap_or(0), up_to).await?;
        Ok(rows
            .iter()
            .filter(|row| visible.contains(&row.user_id))
            .map(|row| {
                let view = self.view_of(row);
                let mut content = json!({ "presence": view.state, "currently_active": view.currently_active });
                if let Some(ago) = view.last_active_ago {
                    content["last_active_ago"] = ago.into();
                }
                if let Some(msg) = view.status_msg {
                    content["status_msg"] = msg.into();
                }
                json!({ "type": "m.presence", "sender": row.user_id, "content": content })
            })
            .collect())
    }

    /// The user and everyone who shares a room with them.
    pub async fn sharing_rooms_with(&self, user_id: &UserId) -> Result<HashSet<OwnedUserId>> {
        let mut users = HashSet::from([user_id.to_owned()]);
        for room in self.storage.state.user_rooms(user_id, &["join"]).await? {
            users.extend(self.rooms.members.audience_of(&room.room_id).await?.iter().cloned());
        }
        Ok(users)
    }

    /// Whether `viewer` may see `target`'s presence.
    pub async fn may_see(&self, viewer: &UserId, target: &UserId) -> Result<bool> {
        Ok(viewer == target || self.sharing_rooms_with(viewer).await?.contains(target))
    }

    /// Publishes the user's state if it differs from what was last published and the flap
    /// interval allows; otherwise the next tick will.
    async fn publish_if_due(&self, user_id: &UserId) -> Result<()> {
        let interval = Duration::from_secs(self.config.min_update_interval_secs);
        let due = self.with_user(user_id, |p| {
            let current = p.current();
            let changed = p.published.as_ref() != Some(&current);
            let allowed = p.last_publish.is_none_or(|at| at.elapsed() >= interval);
            (changed && allowed).then(|| {
                p.published = Some(current.clone());
                p.last_publish = Some(Instant::now());
                (current, p.last_active_ms)
            })
        });
        let Some((published, last_active_ms)) = due else { return Ok(()) };
        let row = PresenceRow {
            user_id: user_id.to_owned(),
            state: published.state,
            status_msg: published.status_msg,
            last_active_ts: last_active_ms,
            currently_active: published.currently_active,
            stream_pos: 0,
        };
        let mut update = json!({
            "user_id": user_id,
            "presence": row.state,
            "last_active_ago": now_ms().saturating_sub(last_active_ms).max(0),
            "currently_active": row.currently_active,
        });
        if let Some(msg) = &row.status_msg {
            update["status_msg"] = msg.clone().into();
        }
        self.write(row).await?;
        // Coalesced already (at most one publication per interval), and only to servers that
        // share a room with the user.
        self.edus.to_users_rooms(user_id, "m.presence", json!({ "push": [update] })).await
    }

    /// Writes a published state at a new stream position and wakes whom it concerns.
    async fn write(&self, row: PresenceRow) -> Result<()> {
        // Who to wake is looked up before the position is taken: an open position holds back
        // every reader's watermark, so it is held for the write alone.
        let audience: Vec<OwnedUserId> = self.sharing_rooms_with(&row.user_id).await?.into_iter().collect();
        let mut pos = self.stream.allocate();
        self.notifier.latest().note(Key::Presence, pos.get());
        self.storage.presence.put(&row, &pos).await?;
        let notifier = Arc::clone(&self.notifier);
        pos.on_visible(move || notifier.notify_users(audience.iter().map(|u| &**u)));
        Ok(())
    }

    /// Applies automatic changes and publishes coalesced ones, once per tick, until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if !self.config.enabled {
            return;
        }
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            let due = self.apply_timeouts();
            for user_id in due {
                if let Err(e) = self.publish_if_due(&user_id).await {
                    tracing::warn!(%user_id, error = %e, "could not publish presence");
                }
            }
        }
    }

    /// Idle users become unavailable, users without a running sync go offline. Returns the
    /// users whose state may need publishing.
    fn apply_timeouts(&self) -> Vec<OwnedUserId> {
        let idle = Duration::from_secs(self.config.idle_timeout_secs);
        let offline_after = Duration::from_secs(self.config.offline_after_secs);
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due = Vec::new();
        users.retain(|user_id, p| {
            if p.syncing == 0
                && p.state != "offline"
                && p.last_sync_end.is_none_or(|end| end.elapsed() >= offline_after)
                && p.last_active.elapsed() >= offline_after
            {
                p.state = "offline".to_owned();
                p.explicit = false;
            }
            if p.state == "online" && !p.explicit && p.last_active.elapsed() >= idle {
                p.state = "unavailable".to_owned();
            }
            if p.published.as_ref() != Some(&p.current()) {
                due.push(user_id.clone());
            }
            // Offline and published: nothing left to track in memory.
            !(p.state == "offline" && p.syncing == 0 && p.published.as_ref().is_some_and(|pb| pb.state == "offline"))
        });
        due
    }
}
