//! Wakes waiting `/sync` requests, per user.
//!
//! A sync that finds nothing new waits on its user's `Notify`. Writes name the users they
//! concern (a room event: the room's members; account data: its owner) and wake only those,
//! once the write is visible to readers (see `StreamPosition::on_visible`). An idle wait
//! costs one map entry per user and a parked future: no polling, no database.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use ruma::{OwnedUserId, UserId};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Notifier {
    users: Mutex<HashMap<OwnedUserId, Arc<Notify>>>,
    /// What was written where: lets a sync skip queries for what cannot have changed.
    latest: super::latest::LatestIndex,
}

/// A user's wake-up handle, held while a sync waits.
pub struct Listener {
    notifier: Arc<Notifier>,
    user_id: OwnedUserId,
    notify: Arc<Notify>,
}

impl Listener {
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut users = self.notifier.users.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and ours: nobody else waits for this user any more.
        if Arc::strong_count(&self.notify) <= 2 {
            users.remove(&self.user_id);
        }
    }
}

impl Notifier {
    pub fn listen(self: &Arc<Self>, user_id: &UserId) -> Listener {
        let notify = Arc::clone(
            self.users.lock().unwrap_or_else(PoisonError::into_inner).entry(user_id.to_owned()).or_default(),
        );
        Listener { notifier: Arc::clone(self), user_id: user_id.to_owned(), notify }
    }

    /// Wakes every sync waiting for any of `users`. Users with no waiting sync cost a lookup.
    pub fn notify_users<'a>(&self, users: impl IntoIterator<Item = &'a UserId>) {
        let waiting = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.is_empty() {
            return;
        }
        for user in users {
            if let Some(notify) = waiting.get(user) {
                notify.notify_waiters();
            }
        }
    }

    /// The index of the latest positions written, which every writer that wakes syncs also
    /// notes its writes in.
    pub fn latest(&self) -> &super::latest::LatestIndex {
        &self.latest
    }

    /// Whether a sync of `user_id` is registered for wake-ups: a write for them from now on
    /// either shows in the response being built or wakes the wait (for tests and metrics).
    pub fn is_waiting(&self, user_id: &UserId) -> bool {
        self.users.lock().unwrap_or_else(PoisonError::into_inner).contains_key(user_id)
    }

    /// How many users have a sync waiting (for metrics and tests).
    pub fn waiting_users(&self) -> usize {
        self.users.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ruma::user_id;

    use super::*;

    #[tokio::test]
    async fn wakes_only_the_users_named() {
        let notifier = Arc::new(Notifier::default());
        let alice = notifier.listen(user_id!("@alice:x"));
        let bob = notifier.listen(user_id!("@bob:x"));
        {
            let alice_woken = alice.notify().notified();
            let bob_woken = bob.notify().notified();
            tokio::pin!(alice_woken, bob_woken);
            alice_woken.as_mut().enable();
            bob_woken.as_mut().enable();
            notifier.notify_users([user_id!("@alice:x")]);
            assert!(tokio::time::timeout(Duration::from_millis(100), alice_woken).await.is_ok());
            assert!(tokio::time::timeout(Duration::from_millis(50), bob_woken).await.is_err(), "bob was not concerned");
        }
        assert_eq!(notifier.waiting_users(), 2);
        drop(alice);
        drop(bob);
        assert_eq!(notifier.waiting_users(), 0, "entries go with their last listener");
    }
}
