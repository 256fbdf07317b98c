//! Cached sheaves on their way to the slabs, moved by a thread other than the caller.
//!
//! An adoption (see `Shared::adopt_orphans`) unregisters exited threads' slots under the
//! registry lock, then flushes their `main` and `spare` sheaves after releasing it, because a
//! flush may call the page source, which may call this cache. Between the two, the objects in
//! those sheaves are in no slot, no barn and not yet in the slabs. The hand-over thread's
//! ageing of held `rcu_free` sheaves (`CacheCore::age_held`) takes them out of the barn and
//! flushes them the same way, at any time, quiescent points included, and counts itself in
//! transit too. Any thread may be the
//! adopter, the rcu module's hand-over thread included, which the user never sees; so the
//! operations that report on the whole cache (`shrink` returns everything cached, the
//! accounting check finds every object) first wait until no adoption by another thread is in
//! transit, for a bounded time: an adopter may be descheduled, or blocked in the page source,
//! for as long as it likes, and no operation waits for it to run (C-CONC-4). Past the wait,
//! `shrink` leaves those sheaves to the adopter (whose flush gives them to the slabs, for the
//! next shrink to return) and the accounting check does not check. An adoption by the calling
//! thread itself (the flush called a page source that called `shrink`) is not waited for: it
//! cannot finish before the call returns.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The adoptions of one cache whose sheaves are in transit.
#[derive(Debug, Default)]
pub(crate) struct InTransit {
    /// Adoptions in transit, by every thread.
    count: AtomicUsize,
    /// Adoptions begun so far: a reader that finds none in transit and the same number before
    /// and after its reads saw no object in transit.
    begun: AtomicU64,
}

/// How many nested adoptions one thread tracks (a page source called by a flush may use a
/// cache and adopt again, up to this depth in all); deeper ones are not known as its own.
const NESTED: usize = 8;

thread_local! {
    /// The caches (the addresses of their `InTransit`) whose adopted sheaves this thread is
    /// flushing, innermost last; 0 marks a free entry.
    static MINE: Cell<[usize; NESTED]> = const { Cell::new([0; NESTED]) };
}

impl InTransit {
    fn key(&self) -> usize {
        self as *const Self as usize
    }

    /// This thread's adoptions of this cache in transit.
    fn mine(&self) -> usize {
        MINE.try_with(|mine| mine.get().iter().filter(|&&key| key == self.key()).count())
            .unwrap_or(0)
    }

    /// Marks an adoption by this thread as in transit, until the returned guard drops. Must
    /// be called before the adopted slots leave the registry (under its lock), so that a
    /// waiter finds their objects either in a slot or in transit.
    pub(crate) fn begin(&self) -> Transit<'_> {
        // SeqCst: ordered before the registry lock's release, and read by waiters after they
        // took (and released) that lock in their own adoption.
        self.count.fetch_add(1, Ordering::SeqCst);
        self.begun.fetch_add(1, Ordering::SeqCst);
        let entry = MINE
            .try_with(|mine| {
                let mut keys = mine.get();
                let free = keys.iter().position(|&key| key == 0)?;
                keys[free] = self.key();
                mine.set(keys);
                Some(free)
            })
            .ok()
            .flatten();
        Transit {
            transit: self,
            entry,
        }
    }

    /// Waits (yielding) until no other thread has an adoption of this cache in transit, for
    /// at most `patience`; returns how many other adoptions are still in transit (0: none).
    pub(crate) fn wait_for_others(&self, patience: Duration) -> usize {
        let mine = self.mine();
        let others = || self.count.load(Ordering::SeqCst).saturating_sub(mine);
        if others() == 0 {
            return 0;
        }
        let start = Instant::now();
        loop {
            let left = others();
            if left == 0 || start.elapsed() >= patience {
                return left;
            }
            std::thread::yield_now();
        }
    }

    /// Adoptions begun so far, by every thread (see [`InTransit::begun`]'s field).
    pub(crate) fn begun(&self) -> u64 {
        self.begun.load(Ordering::SeqCst)
    }

    /// In a child process after `fork`: only the forking thread's own adoptions can still
    /// finish (when it forked from a page source called by one); the other threads' are lost
    /// with them, their objects counted among those lost at the fork.
    #[cfg(not(loom))]
    pub(crate) fn fork_child(&self) {
        self.count.store(self.mine(), Ordering::SeqCst);
    }
}

/// An adoption in transit (see [`InTransit::begin`]); ends when dropped, after the flush.
#[must_use]
pub(crate) struct Transit<'a> {
    transit: &'a InTransit,
    /// This thread's entry for it, if it got one.
    entry: Option<usize>,
}

impl Drop for Transit<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry {
            let _ = MINE.try_with(|mine| {
                let mut keys = mine.get();
                keys[entry] = 0;
                mine.set(keys);
            });
        }
        self.transit.count.fetch_sub(1, Ordering::SeqCst);
    }
}
