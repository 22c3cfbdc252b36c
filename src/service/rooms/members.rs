//! Memberships: who is in which room, and whom an event in a room concerns.
//!
//! Owns: the audience cache (per room, the users an event there concerns: joined, invited,
//! knocking). The timeline changes memberships in the same transaction as the event that
//! changes them, then applies the same change here, under a write generation.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId};

use crate::{
    error::{Error, Result},
    service::cache::{BoundedLru, Generations, WriteGuard},
    storage::{Membership, Storage},
};

/// Room members kept in the audience cache, counted in users.
const AUDIENCE_CACHE_USERS: usize = 1_000_000;

/// The memberships an event concerns the user of.
pub fn is_audience(membership: &str) -> bool {
    matches!(membership, "join" | "invite" | "knock")
}

/// The memberships that put a user's server in the room: it receives the room's events.
pub fn is_member_server(membership: &str) -> bool {
    membership == "join"
}

/// Whom a room's events concern: its joined, invited and knocking users, and the servers of
/// its joined users (which federation sends its events to).
#[derive(Clone, Debug, Default)]
pub struct RoomAudience {
    /// Each user, and whether they are joined.
    users: HashMap<OwnedUserId, bool>,
    /// Joined users per server.
    servers: HashMap<OwnedServerName, usize>,
}

impl RoomAudience {
    pub fn iter(&self) -> impl Iterator<Item = &OwnedUserId> {
        self.users.keys()
    }

    pub fn contains(&self, user_id: &UserId) -> bool {
        self.users.contains_key(user_id)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The servers with a joined user.
    pub fn servers(&self) -> impl Iterator<Item = &OwnedServerName> {
        self.servers.keys()
    }

    fn set(&mut self, user: &OwnedUserId, membership: &str) {
        let was_joined = self.users.get(user).copied().unwrap_or(false);
        let joined = is_member_server(membership);
        if is_audience(membership) {
            self.users.insert(user.clone(), joined);
        } else {
            self.users.remove(user);
        }
        match (was_joined, joined) {
            (false, true) => *self.servers.entry(user.server_name().to_owned()).or_default() += 1,
            (true, false) => {
                if let Some(count) = self.servers.get_mut(user.server_name()) {
                    *count -= 1;
                    if *count == 0 {
                        self.servers.remove(user.server_name());
                    }
                }
            }
            _ => {}
        }
    }
}

pub struct Members {
    storage: Storage,
    audiences: BoundedLru<OwnedRoomId, Arc<RoomAudience>>,
    generations: Generations,
}

impl Members {
    pub fn new(storage: Storage) -> Self {
        Self { storage, audiences: BoundedLru::new(AUDIENCE_CACHE_USERS), generations: Generations::default() }
    }

    /// A user's current membership of a room, if any.
    pub async fn membership(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<Membership>> {
        Ok(self.storage.state.membership(room_id, user_id).await?)
    }

    /// Whether the user is joined to the room now.
    pub async fn is_joined(&self, room_id: &RoomId, user_id: &UserId) -> Result<bool> {
        Ok(self.membership(room_id, user_id).await?.is_some_and(|m| m.membership == "join"))
    }

    /// The rooms where the user's membership is one of `memberships`.
    pub async fn user_rooms(&self, user_id: &UserId, memberships: &[&str]) -> Result<Vec<Membership>> {
        Ok(self.storage.state.user_rooms(user_id, memberships).await?)
    }

    /// The room's members whose membership is one of `memberships`.
    pub async fn room_members(&self, room_id: &RoomId, memberships: &[&str]) -> Result<Vec<Membership>> {
        Ok(self.storage.state.room_members(room_id, memberships).await?)
    }

    /// The users an event in the room concerns.
    pub async fn audience_of(&self, room_id: &RoomId) -> Result<Arc<RoomAudience>> {
        if let Some(audience) = self.audiences.get(&room_id.to_owned()) {
            return Ok(audience);
        }
        let snapshot = self.generations.snapshot(room_id);
        let mut audience = RoomAudience::default();
        for member in self.storage.state.room_members(room_id, &["join", "invite", "knock"]).await? {
            audience.set(&member.user_id, &member.membership);
        }
        let audience = Arc::new(audience);
        if self.generations.unchanged(snapshot) {
            self.audiences.put(room_id.to_owned(), Arc::clone(&audience), audience.len().max(1));
        }
        Ok(audience)
    }

    /// The servers with a user joined to the room.
    pub async fn servers_of(&self, room_id: &RoomId) -> Result<HashSet<OwnedServerName>> {
        Ok(self.audience_of(room_id).await?.servers().cloned().collect())
    }

    /// Marks a change of the room's memberships under way; see `cache::Generations`.
    pub(super) fn write(&self, room_id: &RoomId) -> WriteGuard<'_> {
        self.generations.write(room_id)
    }

    /// Applies committed membership changes to the cache. Call under [`Members::write`].
    pub(super) fn apply(&self, room_id: &RoomId, changes: &[(OwnedUserId, String, ruma::OwnedEventId)]) {
        if changes.is_empty() {
            return;
        }
        self.audiences.update(&room_id.to_owned(), |audience| {
            let mut next = (**audience).clone();
            for (user, membership, _) in changes {
                next.set(user, membership);
            }
            *audience = Arc::new(next);
            audience.len().max(1)
        });
    }

    /// Drops a room's cached audience, when the database may hold a newer one.
    pub(super) fn forget_room(&self, room_id: &RoomId) {
        self.audiences.remove(&room_id.to_owned());
    }

    /// Hides a room the user has left (or never joined) from their room lists.
    pub async fn forget(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        match self.membership(room_id, user_id).await? {
            Some(m) if is_audience(&m.membership) => Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::BadState,
                "You must leave the room before forgetting it",
            )),
            Some(_) => {
                self.storage.state.forget(room_id, user_id).await?;
                Ok(())
            }
            None => Err(Error::not_found("You have never been in this room")),
        }
    }
}
