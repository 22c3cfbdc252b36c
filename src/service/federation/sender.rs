//! The outbound queue: one worker per destination, each sending its queue as `/send`
//! transactions (at most 50 PDUs and 100 EDUs), in order, one at a time.
//!
//! - **Durable.** PDUs enter the queue in the transaction that persists them, EDUs when they
//!   are made; entries leave only once the destination accepted the transaction carrying
//!   them. A transaction, once formed, is retried exactly as it was (same ID), so the
//!   destination can recognise a retry; a restart resumes every queue.
//! - **Backoff.** A failing destination waits 5 s, doubling up to an hour, persisted, so a
//!   restart does not hammer it.
//! - **Catch-up.** When a destination comes back after a long outage with a long backlog,
//!   only the latest PDU of each room is kept: the destination fetches what lies between
//!   with get_missing_events.
//! - **Isolation.** Each destination has its own task; a slow or dead destination holds up
//!   nothing but itself.

use std::{collections::HashMap, sync::Arc, time::Duration};

use ruma::{OwnedServerName, ServerName};
use serde_json::value::RawValue;
use tokio::sync::{Notify, watch};

use crate::{
    error::Result,
    service::{now_ms, rooms::events::Events},
    storage::{Storage, federation::OutboundTxn},
};

/// The spec's limits on one transaction.
pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;
/// Backlog beyond which a recovering destination gets only the latest PDU of each room.
const CATCH_UP_ABOVE: i64 = 500;
const FIRST_BACKOFF_MS: i64 = 5_000;
const MAX_BACKOFF_MS: i64 = 3_600_000;

/// What a destination said to a transaction.
#[derive(Debug)]
pub enum Delivery {
    /// Accepted (2xx): the transaction is done, whatever it said of each PDU.
    Accepted,
    /// Never (the destination refuses it): give it up, so it does not block the queue.
    Refused(String),
    /// Not now (unreachable, 5xx, 429, a timeout): retry later.
    Retry(String),
}

/// How transactions travel: federation's signed HTTP client, in production.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    async fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &str,
        pdus: Vec<Box<RawValue>>,
        edus: Vec<Box<RawValue>>,
    ) -> Delivery;
}

/// The queues of one server.
pub struct Sender {
    origin: OwnedServerName,
    storage: Storage,
    events: Arc<Events>,
    transport: Arc<dyn Transport>,
    /// One wake-up per destination with a running worker. Bounded by the destinations that
    /// have work: a worker ends, and leaves the map, when its queue is empty.
    workers: std::sync::Mutex<HashMap<OwnedServerName, Arc<Notify>>>,
    /// Destinations whose last attempt failed: a request from one of them shows it is up
    /// again. Bounded like the queues: an entry leaves when a transaction gets through.
    down: std::sync::Mutex<std::collections::HashSet<OwnedServerName>>,
    shutdown: watch::Receiver<bool>,
}

impl Sender {
    pub fn new(
        origin: OwnedServerName,
        storage: Storage,
        events: Arc<Events>,
        transport: Arc<dyn Transport>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            origin,
            storage,
            events,
            transport,
            workers: std::sync::Mutex::default(),
            down: std::sync::Mutex::default(),
            shutdown,
        })
    }

    /// Resumes the queues that have work (after a start).
    pub async fn resume(self: &Arc<Self>) -> Result<()> {
        for destination in self.storage.federation.destinations_with_work().await? {
            self.wake(&destination);
        }
        Ok(())
    }

    /// Queues an EDU for each destination, and wakes their workers.
    pub async fn send_edu(self: &Arc<Self>, destinations: &[OwnedServerName], edu: &serde_json::Value) -> Result<()> {
        let destinations: Vec<OwnedServerName> = destinations.iter().filter(|d| **d != self.origin).cloned().collect();
        if destinations.is_empty() {
            return Ok(());
        }
        self.storage.federation.enqueue_edu(&destinations, &edu.to_string(), now_ms()).await?;
        for destination in &destinations {
            self.wake(destination);
        }
        Ok(())
    }

    /// `server` just sent this server a signed request: if its queue was waiting out a
    /// failure, it retries now rather than at the end of its backoff (which may be an hour).
    pub fn server_up(self: &Arc<Self>, server: &ServerName) {
        if !self.down.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(server) {
            return;
        }
        let this = Arc::clone(self);
        let server = server.to_owned();
        tokio::spawn(async move {
            match this.storage.federation.retry_now(&server).await {
                Ok(()) => this.wake(&server),
                Err(e) => tracing::warn!(destination = %server, error = %e, "federation queue"),
            }
        });
    }

    fn mark_down(&self, destination: &ServerName, down: bool) {
        let mut set = self.down.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if down {
            set.insert(destination.to_owned());
        } else {
            set.remove(destination);
        }
    }

    /// Wakes the destination's worker, starting one if none runs.
    pub fn wake(self: &Arc<Self>, destination: &ServerName) {
        let mut workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(notify) = workers.get(destination) {
            notify.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        workers.insert(destination.to_owned(), Arc::clone(&notify));
        tokio::spawn(Arc::clone(self).run(destination.to_owned(), notify));
    }

    /// One destination's worker: sends until its queue is empty, then ends.
    async fn run(self: Arc<Self>, destination: OwnedServerName, notify: Arc<Notify>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.step(&destination).await {
                Ok(Step::Sent) => continue,
                Ok(Step::Empty) => {
                    // Leave the map first, then look once more: an entry queued in between
                    // would otherwise find a worker that is about to end.
                    self.remove_worker(&destination, &notify);
                    match self.storage.federation.backlog(&destination).await {
                        Ok(0) => return,
                        Ok(_) => {
                            self.wake(&destination);
                            return;
                        }
                        Err(e) => tracing::warn!(%destination, error = %e, "federation queue"),
                    }
                    return;
                }
                Ok(Step::Wait(wait)) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = notify.notified() => {}
                        _ = shutdown.changed() => break,
                    }
                }
                Err(e) => {
                    tracing::warn!(%destination, error = %e, "federation queue");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        self.remove_worker(&destination, &notify);
    }

    fn remove_worker(&self, destination: &ServerName, notify: &Arc<Notify>) {
        let mut workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if workers.get(destination).is_some_and(|n| Arc::ptr_eq(n, notify)) {
            workers.remove(destination);
        }
    }

    /// One transaction, or why not now.
    async fn step(&self, destination: &ServerName) -> Result<Step> {
        let federation = &self.storage.federation;
        let backoff = federation.backoff(destination).await?;
        let now = now_ms();
        if backoff.next_attempt_at > now {
            // After a restart, the failure is known only from the database.
            self.mark_down(destination, true);
            return Ok(Step::Wait(Duration::from_millis(u64::try_from(backoff.next_attempt_at - now).unwrap_or(0))));
        }
        if backoff.failures > 0 && federation.backlog(destination).await? > CATCH_UP_ABOVE {
            let dropped = federation.collapse_backlog(destination).await?;
            tracing::info!(%destination, dropped, "catching up: only the latest event of each room is sent");
        }
        let Some(txn) = federation.next_txn(destination, MAX_PDUS, MAX_EDUS).await? else { return Ok(Step::Empty) };
        let (pdus, edus) = self.contents(&txn).await?;
        match self.transport.send_transaction(destination, &txn.txn_id, pdus, edus).await {
            Delivery::Accepted => {
                self.mark_down(destination, false);
                federation.txn_sent(destination, &txn.txn_id, now_ms()).await?;
                Ok(Step::Sent)
            }
            Delivery::Refused(reason) => {
                tracing::warn!(%destination, %reason, txn_id = %txn.txn_id, "a transaction was refused; giving it up");
                federation.txn_sent(destination, &txn.txn_id, now_ms()).await?;
                Ok(Step::Sent)
            }
            Delivery::Retry(reason) => {
                let wait = backoff_after(backoff.failures + 1);
                tracing::info!(%destination, %reason, retry_in_ms = wait, "federation transaction failed");
                federation.txn_failed(destination, now_ms() + wait).await?;
                self.mark_down(destination, true);
                Ok(Step::Wait(Duration::from_millis(u64::try_from(wait).unwrap_or(0))))
            }
        }
    }

    /// The PDUs and EDUs of a transaction, as JSON. An event that no longer exists (a purged
    /// room) is left out.
    async fn contents(&self, txn: &OutboundTxn) -> Result<(Vec<Box<RawValue>>, Vec<Box<RawValue>>)> {
        let ids: Vec<_> = txn.entries.iter().filter_map(|e| e.event_id.clone()).collect();
        let by_id = self.events.pdu_map(&ids).await?;
        let mut pdus = Vec::new();
        let mut edus = Vec::new();
        for entry in &txn.entries {
            if let Some(id) = &entry.event_id {
                if let Some(pdu) = by_id.get(id) {
                    pdus.push(pdu.json.clone());
                }
            } else if let Some(edu) = &entry.edu {
                edus.push(RawValue::from_string(edu.clone())?);
            }
        }
        Ok((pdus, edus))
    }
}

/// The queue as the room pipeline's outbox: PDUs were queued, wake their destinations.
pub struct Waker(pub Arc<Sender>);

impl crate::service::rooms::timeline::Outbox for Waker {
    fn queued(&self, destinations: &[OwnedServerName]) {
        for destination in destinations {
            self.0.wake(destination);
        }
    }
}

enum Step {
    Sent,
    Empty,
    Wait(Duration),
}

/// Exponential backoff: 5 s after the first failure, doubling, at most an hour.
fn backoff_after(failures: i32) -> i64 {
    let doublings = u32::try_from(failures.saturating_sub(1)).unwrap_or(0).min(20);
    FIRST_BACKOFF_MS.saturating_mul(1_i64 << doublings).min(MAX_BACKOFF_MS)
}

#[cfg(test)]
mod tests {
    use super::backoff_after;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff_after(1), 5_000);
        assert_eq!(backoff_after(2), 10_000);
        assert_eq!(backoff_after(5), 80_000);
        assert_eq!(backoff_after(40), 3_600_000);
    }
}
