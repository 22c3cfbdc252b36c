//! Memberships: who is in which room, and whom an event in a room concerns.
//!
//! Owns: the audience cache (per room, the users an event there concerns: joined, invited,
//! knocking). The timeline changes memberships in the same transaction as the event that
//! changes them, then applies the same change here, under a write generation.

use std::{collections::HashSet, sync::Arc};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

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

pub struct Members {
    storage: Storage,
    audiences: BoundedLru<OwnedRoomId, Arc<HashSet<OwnedUserId>>>,
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
    pub async fn audience_of(&self, room_id: &RoomId) -> Result<Arc<HashSet<OwnedUserId>>> {
        if let Some(users) = self.audiences.get(&room_id.to_owned()) {
            return Ok(users);
        }
        let snapshot = self.generations.snapshot(room_id);
        let users: HashSet<OwnedUserId> = self
            .storage
            .state
            .room_members(room_id, &["join", "invite", "knock"])
            .await?
            .into_iter()
            .map(|m| m.user_id)
            .collect();
        let users = Arc::new(users);
        if self.generations.unchanged(snapshot) {
            self.audiences.put(room_id.to_owned(), Arc::clone(&users), users.len().max(1));
        }
        Ok(users)
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
        self.audiences.update(&room_id.to_owned(), |users| {
            let mut next = (**users).clone();
            for (user, membership, _) in changes {
                if is_audience(membership) {
                    next.insert(user.clone());
                } else {
                    next.remove(user);
                }
            }
            *users = Arc::new(next);
            users.len().max(1)
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
