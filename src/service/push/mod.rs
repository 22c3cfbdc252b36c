//! Push notifications: push rules, their evaluation per event and recipient (with ruma's
//! evaluator), unread counts, pushers and delivery to push gateways.
//!
//! Evaluation runs inside the room's append path (see [`crate::service::rooms::PushEvaluator`]),
//! so an event's push actions and its queued notifications commit in the event's own
//! transaction: a crash can lose neither.

mod counts;
pub mod delivery;
mod evaluate;
pub mod gateway;
pub mod pushers;
pub mod rules;

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
};

use lru::LruCache;
use ruma::{OwnedUserId, UserId, push::Ruleset};
use tokio::sync::Notify;

use super::{account_data::AccountDataService, rooms::Rooms};
use crate::{
    config::Config,
    error::Result,
    storage::{Storage, push::PusherRow},
};

pub struct PushService {
    config: Arc<Config>,
    storage: Storage,
    rooms: Arc<Rooms>,
    /// Rule sets of the `push.cached_users` users evaluated most recently: every message is
    /// evaluated for every member, so these are read constantly; the least recently used go.
    rulesets: Mutex<LruCache<OwnedUserId, Arc<Ruleset>>>,
    /// Pushers of as many users, kept the same way.
    pushers: Mutex<LruCache<OwnedUserId, Arc<Vec<PusherRow>>>>,
    /// Wakes the delivery worker when notifications are queued.
    pub(crate) queued: Arc<Notify>,
}

impl PushService {
    pub fn new(config: Arc<Config>, storage: Storage, rooms: Arc<Rooms>) -> Arc<Self> {
        let capacity = NonZeroUsize::new(config.push.cached_users).unwrap_or(NonZeroUsize::MIN);
        Arc::new(Self {
            config,
            storage,
            rooms,
            rulesets: Mutex::new(LruCache::new(capacity)),
            pushers: Mutex::new(LruCache::new(capacity)),
            queued: Arc::new(Notify::new()),
        })
    }

    /// (users with a cached rule set, users with cached pushers), for tests and metrics.
    pub fn cached_users(&self) -> (usize, usize) {
        let rulesets = self.rulesets.lock().unwrap_or_else(PoisonError::into_inner).len();
        (rulesets, self.pushers.lock().unwrap_or_else(PoisonError::into_inner).len())
    }

    /// The user's rule set, from memory when cached.
    pub async fn ruleset(&self, account_data: &AccountDataService, user_id: &UserId) -> Result<Arc<Ruleset>> {
        if let Some(ruleset) = self.rulesets.lock().unwrap_or_else(PoisonError::into_inner).get(user_id) {
            return Ok(Arc::clone(ruleset));
        }
        let ruleset = Arc::new(rules::load(account_data, user_id).await?);
        self.rulesets.lock().unwrap_or_else(PoisonError::into_inner).put(user_id.to_owned(), Arc::clone(&ruleset));
        Ok(ruleset)
    }

    /// Stores a changed rule set and refreshes the cache.
    pub async fn store_ruleset(
        &self,
        account_data: &AccountDataService,
        user_id: &UserId,
        ruleset: Ruleset,
    ) -> Result<()> {
        rules::store(account_data, user_id, &ruleset).await?;
        self.rulesets.lock().unwrap_or_else(PoisonError::into_inner).put(user_id.to_owned(), Arc::new(ruleset));
        Ok(())
    }

    /// The user's pushers, from memory when cached.
    pub async fn pushers_of(&self, user_id: &UserId) -> Result<Arc<Vec<PusherRow>>> {
        if let Some(pushers) = self.pushers.lock().unwrap_or_else(PoisonError::into_inner).get(user_id) {
            return Ok(Arc::clone(pushers));
        }
        let pushers = Arc::new(self.storage.push.pushers(user_id).await?);
        self.pushers.lock().unwrap_or_else(PoisonError::into_inner).put(user_id.to_owned(), Arc::clone(&pushers));
        Ok(pushers)
    }

    /// Forgets cached pushers (after any change to them).
    fn forget_pushers(&self) {
        self.pushers.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

/// Connects push evaluation to the rooms' append path.
pub struct PushHook {
    pub push: Arc<PushService>,
    pub account_data: Arc<AccountDataService>,
}

#[async_trait::async_trait]
impl crate::service::rooms::PushEvaluator for PushHook {
    async fn evaluate(
        &self,
        head: &crate::service::rooms::RoomHead,
        pdu: &crate::service::rooms::Pdu,
    ) -> Result<crate::service::rooms::PushOutcome> {
        self.push.evaluate_event(&self.account_data, head, pdu).await
    }

    fn queued(&self) {
        self.push.queued.notify_one();
    }
}
