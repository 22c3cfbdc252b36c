//! Stream positions: the single, totally ordered sequence that `/sync` tokens index into.
//!
//! Database sequences are not used, because transactions commit out of order: a reader that
//! saw position 7 committed could skip position 6 if it committed a moment later. Instead
//! positions are handed out in-process, and a "persisted up to" watermark advances past N only
//! once every position up to N has either committed or been abandoned. Readers never look
//! beyond the watermark, so they never skip anything.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{sync::watch, time::Instant};

/// How long a reader waits, at most, for writes below an already acknowledged one to finish.
/// Writes take milliseconds; this bounds the wait behind one that hangs.
pub const READ_YOUR_WRITES_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Allocates positions and publishes the watermark.
#[derive(Debug)]
pub struct StreamAllocator {
    inner: Mutex<Inner>,
    watermark: watch::Sender<i64>,
    /// Readers inside [`StreamAllocator::wait_for_finished`], for tests and metrics.
    waiting: AtomicUsize,
}

/// Work to run once readers can see a position (waking the syncs it concerns).
pub type OnVisible = Box<dyn FnOnce() + Send + Sync>;

struct Inner {
    /// The last position handed out.
    last: i64,
    /// Handed out, not yet committed or abandoned.
    in_flight: BTreeSet<i64>,
    /// Callbacks waiting for the watermark to reach their position.
    pending: BTreeMap<i64, Vec<OnVisible>>,
    /// The highest position whose writer has finished (committed or abandoned). Every write
    /// a client has been told succeeded is at or below it.
    finished: i64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("last", &self.last).field("in_flight", &self.in_flight).finish_non_exhaustive()
    }
}

impl StreamAllocator {
    /// Starts after `current`, the highest position already stored.
    pub fn new(current: i64) -> Arc<Self> {
        let (watermark, _) = watch::channel(current);
        let inner = Inner { last: current, in_flight: BTreeSet::new(), pending: BTreeMap::new(), finished: current };
        Arc::new(Self { inner: Mutex::new(inner), watermark, waiting: AtomicUsize::new(0) })
    }

    /// Hands out the next position. Keep the guard until the transaction that writes at this
    /// position has committed (or failed); dropping it lets the watermark move past it.
    pub fn allocate(self: &Arc<Self>) -> StreamPosition {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.last += 1;
        let pos = inner.last;
        inner.in_flight.insert(pos);
        StreamPosition { pos, allocator: Arc::clone(self), on_visible: Vec::new() }
    }

    /// Every position up to this one is committed or abandoned.
    pub fn watermark(&self) -> i64 {
        *self.watermark.borrow()
    }

    /// Notified whenever the watermark moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.watermark.subscribe()
    }

    /// Waits until readers can see every write that had finished when this was called, or
    /// until `deadline`. Positions finish out of order: a write acknowledged to its client can
    /// sit above the watermark while a lower position is still being written (by anyone). A
    /// reader that waits here first sees every write acknowledged before it started; the wait
    /// lasts only as long as the slowest write in flight below that point.
    pub async fn wait_for_finished(&self, deadline: Instant) {
        let target = self.inner.lock().unwrap_or_else(PoisonError::into_inner).finished;
        let mut watermark = self.watermark.subscribe();
        if *watermark.borrow_and_update() >= target {
            return;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _counted = WaitingGuard(&self.waiting);
        // The sender lives as long as `self`, so `wait_for` ends only by reaching the target.
        let _ = tokio::time::timeout_at(deadline, watermark.wait_for(|mark| *mark >= target)).await;
    }

    /// [`StreamAllocator::wait_for_finished`], bounded by [`READ_YOUR_WRITES_WAIT`]: what a
    /// read that answers a client does first, so that the client sees what it was told is done.
    pub async fn read_your_writes(&self) {
        self.wait_for_finished(Instant::now() + READ_YOUR_WRITES_WAIT).await;
    }

    /// How many readers wait in [`StreamAllocator::wait_for_finished`] now (for tests and
    /// metrics).
    pub fn readers_waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    fn complete(&self, pos: i64, on_visible: Vec<OnVisible>) {
        let ready = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.in_flight.remove(&pos);
            inner.finished = inner.finished.max(pos);
            if !on_visible.is_empty() {
                inner.pending.entry(pos).or_default().extend(on_visible);
            }
            let new_mark = match inner.in_flight.first() {
                Some(&lowest) => lowest - 1,
                None => inner.last,
            };
            // Publishing under the lock keeps the watermark monotonic.
            self.watermark.send_if_modified(|mark| {
                if new_mark > *mark {
                    *mark = new_mark;
                    true
                } else {
                    false
                }
            });
            let still_waiting = inner.pending.split_off(&(new_mark + 1));
            std::mem::replace(&mut inner.pending, still_waiting)
        };
        // Outside the lock: callbacks may take other locks.
        for callback in ready.into_values().flatten() {
            callback();
        }
    }
}

/// Counts a reader out of [`StreamAllocator::wait_for_finished`] however its wait ends,
/// including by being dropped.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A position being written. Proof, in types, that the holder allocated it.
pub struct StreamPosition {
    pos: i64,
    allocator: Arc<StreamAllocator>,
    on_visible: Vec<OnVisible>,
}

impl std::fmt::Debug for StreamPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamPosition").field("pos", &self.pos).finish_non_exhaustive()
    }
}

impl StreamPosition {
    pub fn get(&self) -> i64 {
        self.pos
    }

    /// Runs `callback` once every position up to this one is committed or abandoned, i.e.
    /// once a reader reading up to the watermark would see this write. Waking a waiting
    /// reader any earlier could make it look, find nothing, and sleep through the write.
    pub fn on_visible(&mut self, callback: impl FnOnce() + Send + Sync + 'static) {
        self.on_visible.push(Box::new(callback));
    }
}

impl Drop for StreamPosition {
    fn drop(&mut self) {
        self.allocator.complete(self.pos, std::mem::take(&mut self.on_visible));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_waits_for_the_lowest_open_position() {
        let alloc = StreamAllocator::new(10);
        let a = alloc.allocate();
        let b = alloc.allocate();
        let c = alloc.allocate();
        assert_eq!((a.get(), b.get(), c.get()), (11, 12, 13));
        drop(c);
        assert_eq!(alloc.watermark(), 10, "13 done but 11 and 12 still open");
        drop(a);
        assert_eq!(alloc.watermark(), 11);
        drop(b);
        assert_eq!(alloc.watermark(), 13);
    }

    #[test]
    fn callbacks_run_only_once_the_position_is_visible() {
        use std::sync::atomic::{AtomicI64, Ordering};
        let alloc = StreamAllocator::new(0);
        let seen = Arc::new(AtomicI64::new(0));
        let a = alloc.allocate();
        let mut b = alloc.allocate();
        let seen_b = Arc::clone(&seen);
        b.on_visible(move || seen_b.store(2, Ordering::SeqCst));
        drop(b);
        assert_eq!(seen.load(Ordering::SeqCst), 0, "position 1 is still open, so 2 is not visible yet");
        drop(a);
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn readers_wait_for_writes_that_finished_above_an_open_position() {
        let alloc = StreamAllocator::new(0);
        let slow = alloc.allocate();
        let fast = alloc.allocate();
        drop(fast);
        assert_eq!(alloc.watermark(), 0, "position 2 finished, but 1 is still open");
        let waiter = {
            let alloc = Arc::clone(&alloc);
            tokio::spawn(async move {
                alloc.wait_for_finished(Instant::now() + std::time::Duration::from_secs(30)).await;
                alloc.watermark()
            })
        };
        while alloc.readers_waiting() == 0 {
            assert!(!waiter.is_finished(), "returned before position 2 was visible");
            tokio::task::yield_now().await;
        }
        drop(slow);
        assert_eq!(waiter.await.ok(), Some(2));
        assert_eq!(alloc.readers_waiting(), 0);
        // Nothing in flight: no wait at all.
        alloc.wait_for_finished(Instant::now()).await;
    }

    #[test]
    fn watermark_is_monotonic_and_notifies() {
        let alloc = StreamAllocator::new(0);
        let mut rx = alloc.subscribe();
        let a = alloc.allocate();
        drop(a);
        assert!(rx.has_changed().unwrap_or(false));
        assert_eq!(*rx.borrow_and_update(), 1);
        let b = alloc.allocate();
        let c = alloc.allocate();
        drop(b);
        assert_eq!(alloc.watermark(), 2);
        drop(c);
        assert_eq!(alloc.watermark(), 3);
    }
}
