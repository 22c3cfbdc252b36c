//! Typing notifications: in memory only, with a serial number that `/sync` tokens carry.
//!
//! A typing entry lasts for the client's timeout (capped), and ends early when the user says
//! so or sends a message. Expiry is driven by one task that sleeps until the next deadline,
//! so an idle server does no work.
//!
//! - **Restarts.** Serials start over with each process, and clients keep their tokens. So
//!   every serial belongs to an epoch, a random number drawn at start and carried in tokens
//!   ([`TypingMark`]). A token from another epoch (or none that can be trusted) gets every
//!   joined room's current typing, empty lists included: what it saw typing before is over.
//! - **Bounded memory.** Rooms with nobody typing are kept only to tell older tokens that
//!   typing stopped there. Past [`MAX_IDLE_ROOMS`] of them, the older half is forgotten and
//!   the serial they reached becomes a floor: a token below it gets every room's typing again,
//!   as after a restart (one larger response for a client that was away, no lost update).

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

use serde_json::json;

use crate::service::{federation::EduOut, notifier::Notifier, rooms::Rooms};

/// The longest a typing notification lasts without being renewed.
pub const MAX_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

/// Rooms with nobody typing kept in memory, at most, before the older half is forgotten.
pub const MAX_IDLE_ROOMS: usize = 10_000;

/// How far a client has seen typing: a serial, within the epoch of one server process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypingMark {
    pub epoch: u32,
    pub serial: u64,
}

/// The typing state of every room, without the waking: pure, so it is tested directly.
struct State {
    epoch: u32,
    /// Bumped on every change; a sync token carries the serial it has seen.
    serial: u64,
    rooms: HashMap<OwnedRoomId, RoomTyping>,
    /// How many of `rooms` have nobody typing.
    idle: usize,
    /// Rooms whose last change is at or below this serial may have been forgotten.
    floor: u64,
}

#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    /// The serial of the room's latest change.
    changed: u64,
}

impl State {
    fn new(epoch: u32) -> Self {
        Self { epoch, serial: 0, rooms: HashMap::new(), idle: 0, floor: 0 }
    }

    fn mark(&self) -> TypingMark {
        TypingMark { epoch: self.epoch, serial: self.serial }
    }

    /// Starts (`Some(deadline)`) or stops (`None`) a user's typing; whether that changed
    /// anything.
    fn set(&mut self, room_id: &RoomId, user_id: &UserId, deadline: Option<Instant>) -> bool {
        let serial = self.serial + 1;
        if !self.rooms.contains_key(room_id) {
            if deadline.is_none() {
                return false;
            }
            // A new room starts idle, and stops being so below.
            self.rooms.insert(room_id.to_owned(), RoomTyping::default());
            self.idle += 1;
        }
        let Some(room) = self.rooms.get_mut(room_id) else { return false };
        let was_idle = room.users.is_empty();
        let changed = match deadline {
            Some(deadline) => room.users.insert(user_id.to_owned(), deadline).is_none(),
            None => room.users.remove(user_id).is_some(),
        };
        if changed {
            room.changed = serial;
            self.serial = serial;
        }
        let idle_now = room.users.is_empty();
        self.count_idle(was_idle, idle_now);
        changed
    }

    /// Ends the typing that is past its deadline; the rooms where that changed something.
    fn expire(&mut self, now: Instant) -> Vec<OwnedRoomId> {
        let serial = self.serial + 1;
        let mut expired = Vec::new();
        let mut newly_idle = 0;
        for (room_id, room) in &mut self.rooms {
            let before = room.users.len();
            room.users.retain(|_, deadline| *deadline > now);
            if room.users.len() != before {
                room.changed = serial;
                expired.push(room_id.clone());
                newly_idle += usize::from(room.users.is_empty());
            }
        }
        if !expired.is_empty() {
            self.serial = serial;
        }
        self.idle += newly_idle;
        self.forget_idle_rooms();
        expired
    }

    fn count_idle(&mut self, was_idle: bool, idle_now: bool) {
        match (was_idle, idle_now) {
            (false, true) => {
                self.idle += 1;
                self.forget_idle_rooms();
            }
            (true, false) => self.idle = self.idle.saturating_sub(1),
            _ => {}
        }
    }

    /// Past the limit, forgets the older half of the idle rooms and raises the floor to the
    /// last change among them. Runs once per `MAX_IDLE_ROOMS / 2` rooms going idle, so its
    /// linear cost is constant per change.
    fn forget_idle_rooms(&mut self) {
        if self.idle <= MAX_IDLE_ROOMS {
            return;
        }
        let mut changes: Vec<u64> =
            self.rooms.values().filter(|room| room.users.is_empty()).map(|room| room.changed).collect();
        let middle = changes.len() / 2;
        let (_, cutoff, _) = changes.select_nth_unstable(middle);
        let cutoff = *cutoff;
        self.rooms.retain(|_, room| !room.users.is_empty() || room.changed > cutoff);
        self.idle = self.rooms.values().filter(|room| room.users.is_empty()).count();
        self.floor = self.floor.max(cutoff);
    }

    /// The users typing in the room, if a client at `since` has not seen them (`None`: an
    /// initial sync, which hears only of rooms where someone types).
    fn since(&self, room_id: &RoomId, since: Option<TypingMark>) -> Option<Vec<OwnedUserId>> {
        let room = self.rooms.get(room_id);
        let known =
            since.map(|mark| mark.epoch == self.epoch && mark.serial >= self.floor && mark.serial <= self.serial);
        let users = match (since, known) {
            // The token's serials mean nothing here: send the room's state, whatever it is.
            (Some(_), Some(false)) => room.map(|room| &room.users),
            (Some(mark), _) => Some(&room.filter(|room| room.changed > mark.serial)?.users),
            (None, _) => Some(&room.filter(|room| !room.users.is_empty())?.users),
        };
        let mut users: Vec<OwnedUserId> = users.map(|users| users.keys().cloned().collect()).unwrap_or_default();
        users.sort();
        Some(users)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.rooms.values().flat_map(|r| r.users.values()).min().copied()
    }
}

pub struct TypingService {
    state: Mutex<State>,
    rooms: Arc<Rooms>,
    notifier: Arc<Notifier>,
    /// Tells other servers in the room about local users' typing.
    edus: EduOut,
    /// Tells the expiry task that the earliest deadline may have moved.
    reschedule: Notify,
}

impl TypingService {
    pub fn new(rooms: Arc<Rooms>, notifier: Arc<Notifier>, edus: EduOut) -> Arc<Self> {
        // Zero is what tokens from before epochs existed parse as; never use it.
        let epoch = rand::random::<u32>().max(1);
        Arc::new(Self { state: Mutex::new(State::new(epoch)), rooms, notifier, edus, reschedule: Notify::new() })
    }

    /// How far typing has changed, for a sync token.
    pub fn mark(&self) -> TypingMark {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).mark()
    }

    /// Starts (`Some(timeout)`) or stops (`None`) a local user's typing in the room, and tells
    /// the other servers in the room (each start renews it there too).
    pub async fn set(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) {
        let changed = self.apply(room_id, user_id, timeout).await;
        if (changed || timeout.is_some()) && !self.edus.is_remote(user_id) {
            let content = json!({ "room_id": room_id, "user_id": user_id, "typing": timeout.is_some() });
            if let Err(e) = self.edus.to_room(room_id, "m.typing", content).await {
                tracing::warn!(%room_id, error = %e, "could not queue a typing notification for other servers");
            }
        }
    }

    /// A remote user's typing, as their server reported it. It lasts until they stop, or
    /// [`MAX_TYPING_TIMEOUT`] without renewal, since the EDU carries no timeout.
    pub async fn set_remote(&self, room_id: &RoomId, user_id: &UserId, typing: bool) {
        self.apply(room_id, user_id, typing.then_some(MAX_TYPING_TIMEOUT)).await;
    }

    /// Records the change; returns whether the room's typing users changed.
    async fn apply(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|timeout| Instant::now() + timeout.min(MAX_TYPING_TIMEOUT));
        let changed = self.state.lock().unwrap_or_else(PoisonError::into_inner).set(room_id, user_id, deadline);
        if timeout.is_some() {
            self.reschedule.notify_one();
        }
        if changed {
            self.wake(room_id).await;
        }
        changed
    }

    /// The users typing in the room, if a client at `since` has not seen them (always when
    /// someone types and `since` is `None`).
    pub fn typing_since(&self, room_id: &RoomId, since: Option<TypingMark>) -> Option<Vec<OwnedUserId>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).since(room_id, since)
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
            let next = self.state.lock().unwrap_or_else(PoisonError::into_inner).next_deadline();
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
        let expired = self.state.lock().unwrap_or_else(PoisonError::into_inner).expire(Instant::now());
        for room_id in expired {
            self.wake(&room_id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_room_id, user_id};

    use super::*;

    fn room(n: usize) -> OwnedRoomId {
        OwnedRoomId::try_from(format!("!r{n}:x")).unwrap_or_else(|_| owned_room_id!("!r:x"))
    }

    #[test]
    fn tokens_of_another_epoch_get_every_room() {
        let mut state = State::new(7);
        let alice = user_id!("@alice:x");
        let later = Instant::now() + Duration::from_secs(30);
        assert!(state.set(&room(1), alice, Some(later)));
        let seen = state.mark();
        assert_eq!(state.since(&room(1), Some(seen)), None, "nothing new");
        assert_eq!(state.since(&room(1), None), Some(vec![alice.to_owned()]));
        assert_eq!(state.since(&room(2), None), None, "an initial sync hears of typing only");
        // A restarted server: same serials, another epoch.
        let restarted = State::new(8);
        assert_eq!(restarted.since(&room(1), Some(seen)), Some(vec![]), "what it saw typing is over");
        assert_eq!(restarted.since(&room(1), Some(TypingMark { epoch: 8, serial: 0 })), None);
    }

    #[test]
    fn idle_rooms_are_bounded_and_old_tokens_still_hear_the_end() {
        let mut state = State::new(1);
        let alice = user_id!("@alice:x");
        let later = Instant::now() + Duration::from_secs(30);
        let start = state.mark();
        for n in 0..(3 * MAX_IDLE_ROOMS) {
            state.set(&room(n), alice, Some(later));
            state.set(&room(n), alice, None);
        }
        assert!(state.rooms.len() <= MAX_IDLE_ROOMS + 1, "{} rooms kept", state.rooms.len());
        // A forgotten room: a token from before is told that typing there is over.
        assert_eq!(state.since(&room(0), Some(start)), Some(vec![]));
        // A recent token is not bothered with rooms it saw end.
        let now = state.mark();
        assert_eq!(state.since(&room(0), Some(now)), None);
        assert_eq!(state.since(&room(3 * MAX_IDLE_ROOMS - 1), Some(now)), None);
    }

    #[test]
    fn expiry_counts_rooms_going_idle() {
        let mut state = State::new(1);
        let alice = user_id!("@alice:x");
        let now = Instant::now();
        for n in 0..(2 * MAX_IDLE_ROOMS) {
            state.set(&room(n), alice, Some(now));
        }
        let expired = state.expire(now + Duration::from_secs(1));
        assert_eq!(expired.len(), 2 * MAX_IDLE_ROOMS);
        assert!(state.rooms.len() <= MAX_IDLE_ROOMS + 1, "{} rooms kept", state.rooms.len());
        assert_eq!(state.next_deadline(), None);
    }
}
