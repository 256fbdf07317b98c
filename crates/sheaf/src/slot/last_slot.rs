//! The per-thread slot cache ([`LAST_SLOTS`], thread-local): how a per-thread fast path finds
//! its slot with one thread-local load, and how a hold is marked.
//!
//! The thread-local is a direct-mapped table of [`ENTRIES`] entries `(id, slot)`
//! ([`LastSlot`]); a cache always uses the entry at its id modulo [`ENTRIES`]
//! ([`entry_index`]), so a thread that alternates between caches whose ids differ in those
//! bits finds each slot in its own entry, and pays for the lookup's slow path only when two
//! of its caches share an entry. Cache ids are handed out in sequence, so up to [`ENTRIES`]
//! caches created one after another never share one. The table has no destructor, and each
//! entry doubles as the re-entry guard for the caches that map to it (code run from inside an
//! operation, such as a page source, may call into a cache again on the same thread):
//!
//! - `id` is a cache's id: `slot` is that cache's slot for this thread, and this thread does
//!   not hold it.
//! - `id` is 0 and `slot` is not null: this thread *holds* `slot`, and every attempt to find
//!   a slot through this entry (the same cache, or another that maps to it) fails and takes
//!   the path that needs no slot, as a busy per-CPU slot does. Holds of one entry therefore
//!   never nest; a cache of another entry may be used and held meanwhile, as another cache's
//!   CPU slot may be locked while one is held per-CPU.
//! - `id` is 0 and `slot` is null: nothing cached, nothing held.
//! - `id` is [`REVOKED`]: a taker asked for `slot` (see `per_thread`); the next lookup through
//!   the entry takes the slow path.
//!
//! A slot of cache `c` is only ever named by entry `entry_index(c)`, so "this thread holds
//! the slot" is exactly "its entry holds `(0, slot)`", and a taker needs to look at that one
//! entry only (the slot records its address).
//!
//! The fast paths (pop or push on `main`, take or give back the spare for a prefill) compare
//! the entry's `id` with the cache's id and use the slot without marking it held: they call
//! no code that could re-enter, so nothing can observe the slot in use
//! ([`FastSlot`](super::FastSlot)). Before anything that may call out (the barn, the slabs,
//! the page source), a path marks the slot held by storing 0 into the entry's `id`
//! ([`FastSlot::hold`](super::FastSlot::hold)), and the release stores the id back: the fast
//! path costs one thread-local load and a compare, and writes no flag. A miss (another cache
//! of the same entry was used last, or the entry was revoked) looks the slot up in the
//! thread's list (`registry`), creating it on the cache's first use, and leaves it in the
//! entry.

use std::mem;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::Slot;
use slab::rseq::FREE;

/// Entries of the per-thread slot cache: a power of two, 16 bytes each.
pub(super) const ENTRIES: usize = 16;

/// One entry of the per-thread slot cache and its hold marker (see the module docs for its
/// states).
///
/// Atomics so that a taker on another thread may revoke `id`; the owner's accesses are
/// relaxed loads and stores, the same plain moves as a `Cell`'s.
pub(super) struct LastSlot {
    /// The id of the cache whose slot `slot` is, 0 while `slot` is held (or absent), or
    /// [`REVOKED`].
    pub(super) id: AtomicU64,
    /// The slot last used through this entry, or null.
    pub(super) slot: AtomicPtr<Slot>,
}

/// The calling thread's slot cache: one [`LastSlot`] per [`entry_index`].
pub(super) struct LastSlots {
    entries: [LastSlot; ENTRIES],
}

/// A thread-local id that no cache has: a taker stored it to send the owner's next operation
/// through the lookup's slow path.
pub(super) const REVOKED: u64 = u64::MAX;

/// The entry of [`LAST_SLOTS`] that cache `id` uses.
#[inline(always)]
pub(super) const fn entry_index(id: u64) -> usize {
    // Truncation keeps the low bits, which are all the index needs.
    (id as usize) & (ENTRIES - 1)
}

/// Where a cache's entry lies in [`LastSlots`]: its byte offset, computed once per cache, so
/// that the fast path adds it to the thread-local's address instead of scaling an index.
#[derive(Clone, Copy, Debug)]
pub(super) struct EntryAt(usize);

impl EntryAt {
    /// The entry of cache `id`.
    pub(super) const fn of(id: u64) -> Self {
        Self(entry_index(id) * mem::size_of::<LastSlot>())
    }
}

impl LastSlots {
    /// The entry of cache `id`.
    #[inline(always)]
    pub(super) fn entry(&self, id: u64) -> &LastSlot {
        &self.entries[entry_index(id)]
    }

    /// The entry at `at` (the fast path's form of [`LastSlots::entry`]).
    #[inline(always)]
    pub(super) fn entry_at(&self, at: EntryAt) -> &LastSlot {
        // SAFETY: `EntryAt::of` makes the offset of an element of `entries` (an index below
        // `ENTRIES` times the element size), so the pointer is in bounds and aligned.
        unsafe {
            &*self
                .entries
                .as_ptr()
                .cast::<u8>()
                .add(at.0)
                .cast::<LastSlot>()
        }
    }

    /// Forgets every entry (the thread is exiting: no later thread-local destructor may reach
    /// a slot through the table).
    pub(super) fn clear(&self) {
        for entry in &self.entries {
            entry.id.store(0, Ordering::Relaxed);
            entry.slot.store(std::ptr::null_mut(), Ordering::Relaxed);
        }
    }
}

impl LastSlot {
    /// Whether this thread holds the slot this entry names now (an operation is in progress
    /// below us on a cache of this entry).
    #[inline]
    pub(super) fn holds_a_slot(&self) -> bool {
        self.id.load(Ordering::Relaxed) == 0 && !self.slot.load(Ordering::Relaxed).is_null()
    }

    /// Makes `slot` this entry's cached slot under `id` (a cache id, or 0 to hold it),
    /// unless a taker holds it: then the entry is left revoked and `false` returned.
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
    /// The slots this thread used last, one per entry, and whether each is held: the
    /// per-thread fast path's lookup. No destructor, so access is a plain thread-local load.
    pub(super) static LAST_SLOTS: LastSlots = const {
        LastSlots {
            entries: [const { LastSlot { id: AtomicU64::new(0), slot: AtomicPtr::new(std::ptr::null_mut()) } }; ENTRIES],
        }
    };
}

#[cfg(test)]
thread_local! {
    /// How many times this thread took the lookup's slow path (tests only).
    pub(super) static SLOW_LOOKUPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}
