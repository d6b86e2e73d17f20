//! A bounded free list shared across threads, emptied when idle.
//!
//! Buffers that are allocated and freed at a high rate on different
//! threads (span bodies, gzip compressors) are recycled here instead of
//! going back to glibc, whose per-thread arenas fragment under that churn.
//! A pool that nobody took from for a whole heap-trim interval is emptied
//! ([`Pool::release_if_unused`], called by `app::trim_heap`), so an idle
//! agent holds none of it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Pool<T> {
    items: Mutex<Vec<T>>,
    /// Whether an item was taken since the last `release_if_unused`.
    used: AtomicBool,
    /// Items kept at most; beyond that, given items are dropped.
    max: usize,
}

impl<T> Pool<T> {
    pub const fn new(max: usize) -> Self {
        Pool {
            items: Mutex::new(Vec::new()),
            used: AtomicBool::new(false),
            max,
        }
    }

    /// A pooled item, if any (marks the pool used either way).
    pub fn take(&self) -> Option<T> {
        self.used.store(true, Ordering::Relaxed);
        self.items.lock().ok().and_then(|mut items| items.pop())
    }

    /// Keeps `item` for reuse, or drops it if the pool is full.
    pub fn give(&self, item: T) {
        if let Ok(mut items) = self.items.lock()
            && items.len() < self.max
        {
            items.push(item);
        }
    }

    /// Drops every pooled item if none was taken since the last call.
    pub fn release_if_unused(&self) {
        if !self.used.swap(false, Ordering::Relaxed)
            && let Ok(mut items) = self.items.lock()
        {
            items.clear();
        }
    }

    /// Items held now.
    pub fn len(&self) -> usize {
        self.items.lock().map_or(0, |items| items.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;

    #[test]
    fn bounded_and_emptied_only_after_an_interval_without_use() {
        let pool = Pool::new(2);
        for i in 0..3 {
            pool.give(i);
        }
        assert_eq!(pool.len(), 2, "the third item is dropped");
        assert_eq!(pool.take(), Some(1));
        // Taken from since the last call: kept.
        pool.release_if_unused();
        assert_eq!(pool.len(), 1);
        // A whole interval without a take: emptied.
        pool.release_if_unused();
        assert!(pool.is_empty());
        assert_eq!(pool.take(), None);
    }
}
