//! Typing notifications: in memory only, with a serial number that `/sync` tokens carry.
//!
//! A typing entry lasts for the client's timeout (capped), and ends early when the user says
//! so or sends a message. Expiry is driven by one task that sleeps until the next deadline,
//! so an idle server does no work.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use crate::service::{notifier::Notifier, rooms::Rooms};

/// The longest a typing notification lasts without being renewed.
pub const MAX_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct State {
    /// Bumped on every change; a sync token carries the serial it has seen.
    serial: u64,
    rooms: HashMap<OwnedRoomId, RoomTyping>,
}

#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    /// The serial of the room's latest change.
    changed: u64,
}

pub struct TypingService {
    state: Mutex<State>,
    rooms: Arc<Rooms>,
    notifier: Arc<Notifier>,
    /// Tells the expiry task that the earliest deadline may have moved.
    reschedule: Notify,
}

impl TypingService {
    pub fn new(rooms: Arc<Rooms>, notifier: Arc<Notifier>) -> Arc<Self> {
        Arc::new(Self { state: Mutex::default(), rooms, notifier, reschedule: Notify::new() })
    }

    /// The current serial, for a sync token.
    pub fn serial(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).serial
    }

    /// Starts (`Some(timeout)`) or stops (`None`) the user's typing in the room.
    pub async fn set(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) {
        let changed = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let serial = state.serial + 1;
            let room = state.rooms.entry(room_id.to_owned()).or_default();
            let changed = match timeout {
                Some(timeout) => {
                    let was_typing = room
                        .users
                        .insert(user_id.to_owned(), Instant::now() + timeout.min(MAX_TYPING_TIMEOUT))
                        .is_some();
                    !was_typing
                }
                None => room.users.remove(user_id).is_some(),
            };
            if changed {
                room.changed = serial;
                state.serial = serial;
            }
            changed
        };
        if timeout.is_some() {
            self.reschedule.notify_one();
        }
        if changed {
            self.wake(room_id).await;
        }
    }

    /// The users typing in the room, if that changed after `since` (always, when `None`).
    pub fn typing_since(&self, room_id: &RoomId, since: Option<u64>) -> Option<Vec<OwnedUserId>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let room = state.rooms.get(room_id)?;
        if since.is_some_and(|s| room.changed <= s) || (since.is_none() && room.users.is_empty()) {
            return None;
        }
        let mut users: Vec<OwnedUserId> = room.users.keys().cloned().collect();
        users.sort();
        Some(users)
    }

    async fn wake(&self, room_id: &RoomId) {
        match self.rooms.members.audience_of(room_id).await {
            Ok(users) => self.notifier.notify_users(users.iter().map(|u| &**u)),
            Err(e) => tracing::warn!(%room_id, error = %e, "could not wake syncs for typing"),
        }
    }

    /// Ends expired typing notifications, until the server shuts down.
    pub async fn run_expiry(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = {
                let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.rooms.values().flat_map(|r| r.users.values()).min().copied()
            };
            let sleep = async {
                match next {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => self.expire().await,
                () = self.reschedule.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn expire(&self) {
        let now = Instant::now();
        let expired: Vec<OwnedRoomId> = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let serial = state.serial + 1;
            let mut expired = Vec::new();
            for (room_id, room) in &mut state.rooms {
                let before = room.users.len();
                room.users.retain(|_, deadline| *deadline > now);
                if room.users.len() != before {
                    room.changed = serial;
                    expired.push(room_id.clone());
                }
            }
            if !expired.is_empty() {
                state.serial = serial;
            }
            expired
        };
        for room_id in expired {
            self.wake(&room_id).await;
        }
    }
}
