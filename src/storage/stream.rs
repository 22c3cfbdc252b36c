//! Stream positions: the single, totally ordered sequence that `/sync` tokens index into.
//!
//! Database sequences are not used, because transactions commit out of order: a reader that
//! saw position 7 committed could skip position 6 if it committed a moment later. Instead
//! positions are handed out in-process, and a "persisted up to" watermark advances past N only
//! once every position up to N has either committed or been abandoned. Readers never look
//! beyond the watermark, so they never skip anything.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::watch;

/// Allocates positions and publishes the watermark.
#[derive(Debug)]
pub struct StreamAllocator {
    inner: Mutex<Inner>,
    watermark: watch::Sender<i64>,
}

#[derive(Debug)]
struct Inner {
    /// The last position handed out.
    last: i64,
    /// Handed out, not yet committed or abandoned.
    in_flight: BTreeSet<i64>,
}

impl StreamAllocator {
    /// Starts after `current`, the highest position already stored.
    pub fn new(current: i64) -> Arc<Self> {
        let (watermark, _) = watch::channel(current);
        Arc::new(Self { inner: Mutex::new(Inner { last: current, in_flight: BTreeSet::new() }), watermark })
    }

    /// Hands out the next position. Keep the guard until the transaction that writes at this
    /// position has committed (or failed); dropping it lets the watermark move past it.
    pub fn allocate(self: &Arc<Self>) -> StreamPosition {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.last += 1;
        let pos = inner.last;
        inner.in_flight.insert(pos);
        StreamPosition { pos, allocator: Arc::clone(self) }
    }

    /// Every position up to this one is committed or abandoned.
    pub fn watermark(&self) -> i64 {
        *self.watermark.borrow()
    }

    /// Notified whenever the watermark moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.watermark.subscribe()
    }

    fn complete(&self, pos: i64) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.in_flight.remove(&pos);
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
    }
}

/// A position being written. Proof, in types, that the holder allocated it.
#[derive(Debug)]
pub struct StreamPosition {
    pos: i64,
    allocator: Arc<StreamAllocator>,
}

impl StreamPosition {
    pub fn get(&self) -> i64 {
        self.pos
    }
}

impl Drop for StreamPosition {
    fn drop(&mut self) {
        self.allocator.complete(self.pos);
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
