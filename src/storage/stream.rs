//! Stream positions: the single, totally ordered sequence that `/sync` tokens index into.
//!
//! Database sequences are not used, because transactions commit out of order: a reader that
//! saw position 7 committed could skip position 6 if it committed a moment later. Instead
//! positions are handed out in-process, and a "persisted up to" watermark advances past N only
//! once every position up to N has either committed or been abandoned. Readers never look
//! beyond the watermark, so they never skip anything.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::watch;

/// Allocates positions and publishes the watermark.
#[derive(Debug)]
pub struct StreamAllocator {
    inner: Mutex<Inner>,
    watermark: watch::Sender<i64>,
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
        let inner = Inner { last: current, in_flight: BTreeSet::new(), pending: BTreeMap::new() };
        Arc::new(Self { inner: Mutex::new(inner), watermark })
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

    /// Waits until readers can see position `pos`: every position up to it is committed or
    /// abandoned. A writer that answers its client only then gives read-your-writes: the
    /// client's next read includes what it wrote, even while an unrelated earlier write is
    /// still committing.
    pub async fn visible(&self, pos: i64) {
        let mut watermark = self.watermark.subscribe();
        // The sender lives as long as `self`, so this ends when the position is visible.
        let _ = watermark.wait_for(|mark| *mark >= pos).await;
    }

    /// Notified whenever the watermark moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.watermark.subscribe()
    }

    fn complete(&self, pos: i64, on_visible: Vec<OnVisible>) {
        let ready = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.in_flight.remove(&pos);
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
