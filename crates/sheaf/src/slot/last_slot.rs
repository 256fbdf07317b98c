//! The per-thread one-entry cache `(id, slot)` ([`LastSlot`], thread-local): how a per-thread
//! fast path finds its slot with one thread-local load, and how a hold is marked.
//!
//! The cache has no destructor, and doubles as the re-entry guard (code run from inside an
//! operation, such as a page source, may call into a cache again on the same thread):
//!
//! - `id` is a cache's id: `slot` is that cache's slot for this thread, and this thread holds
//!   no slot.
//! - `id` is 0 and `slot` is not null: this thread *holds* `slot`, and every attempt to find
//!   a slot on this thread (of any cache) fails and takes the path that needs no slot, as a
//!   busy per-CPU slot does. Holds therefore never nest.
//! - `id` is 0 and `slot` is null: nothing cached, nothing held.
//! - `id` is [`REVOKED`]: a taker asked for `slot` (see `per_thread`); the next lookup takes
//!   the slow path.
//!
//! The fast paths (pop or push on `main`, take or give back the spare for a prefill) compare
//! `id` with the cache's id and use the slot without marking it held: they call no code that
//! could re-enter, so nothing can observe the slot in use ([`FastSlot`](super::FastSlot)).
//! Before anything that may call out (the barn, the slabs, the page source), a path marks the
//! slot held by storing 0 into `id` ([`FastSlot::hold`](super::FastSlot::hold)), and the
//! release stores the id back: the fast path costs one thread-local load and a compare, and
//! writes no flag. A miss (another cache was used last) looks the slot up in the thread's
//! list (`registry`), creating it on the cache's first use, and leaves it in the thread-local.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::Slot;
use slab::rseq::FREE;

/// The per-thread one-entry cache and hold marker (see the module docs for its states).
///
/// Atomics so that a taker on another thread may revoke `id`; the owner's accesses are
/// relaxed loads and stores, the same plain moves as a `Cell`'s.
pub(super) struct LastSlot {
    /// The id of the cache whose slot `slot` is, 0 while `slot` is held (or absent), or
    /// [`REVOKED`].
    pub(super) id: AtomicU64,
    /// The slot last used by this thread, or null.
    pub(super) slot: AtomicPtr<Slot>,
}

/// A thread-local id that no cache has: a taker stored it to send the owner's next operation
/// through the lookup's slow path.
pub(super) const REVOKED: u64 = u64::MAX;

impl LastSlot {
    /// Whether this thread holds a slot now (an operation is in progress below us).
    #[inline]
    pub(super) fn holds_a_slot(&self) -> bool {
        self.id.load(Ordering::Relaxed) == 0 && !self.slot.load(Ordering::Relaxed).is_null()
    }

    /// Makes `slot` this thread's cached slot under `id` (a cache id, or 0 to hold it),
    /// unless a taker holds it: then the thread-local is left revoked and `false` returned.
    ///
    /// The swap and the load are ordered (sequentially consistent) against the taker's
    /// compare-exchange of the lock and its read of `id`: either the taker reads `id` after
    /// the swap and sees the slot in use, or this load sees the taker's lock.
    pub(super) fn claim(&self, id: u64, slot: &Slot) -> bool {
        self.slot
            .store(slot as *const Slot as *mut Slot, Ordering::Relaxed);
        self.id.swap(id, Ordering::SeqCst);
        if slot.lock.load(Ordering::SeqCst) != FREE {
            self.id.store(REVOKED, Ordering::Relaxed);
            return false;
        }
        true
    }
}

thread_local! {
    /// The last slot this thread used, and whether it is held: the per-thread fast path's
    /// lookup. No destructor, so access is a plain thread-local load.
    pub(super) static LAST_SLOT: LastSlot = const {
        LastSlot { id: AtomicU64::new(0), slot: AtomicPtr::new(std::ptr::null_mut()) }
    };
}
