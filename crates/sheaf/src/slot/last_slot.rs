//! The per-thread slot cache ([`LAST_SLOTS`], thread-local): how a per-thread fast path finds
//! its slot with thread-local loads, and how a hold is marked.
//!
//! Two levels, neither with a destructor:
//!
//! - `last`: the slot this thread claimed or held last, at a fixed thread-local address, so
//!   that a thread that uses one cache finds its slot with one load and a compare whose
//!   address depends on nothing else. It doubles as the re-entry guard (code run from inside
//!   an operation, such as a page source, may call into a cache again on the same thread).
//! - `table`: a direct-mapped table of [`ENTRIES`] more `(id, slot)` entries; cache `c` uses
//!   entry `c` modulo [`ENTRIES`] ([`entry_index`]). A thread that alternates between caches
//!   finds each slot there when `last` names another cache (an inline probe), and pays
//!   for the lookup's slow path only when two of its caches share an entry. Cache ids are
//!   handed out in sequence, so caches with up to [`ENTRIES`] consecutive ids never share one.
//!
//! States of `last` (the table's entries hold only the first and last):
//!
//! - `id` is a cache's id: `slot` is that cache's slot for this thread, and this thread does
//!   not hold it.
//! - `id` is 0 and `slot` is not null: this thread *holds* `slot`, and every attempt to find
//!   a slot on this thread (of any cache, through `last` or the table) fails and takes the
//!   path that needs no slot, as a busy per-CPU slot does. Holds therefore never nest.
//! - `id` is 0 and `slot` is null: nothing cached, nothing held (a new thread; the table is
//!   not used until `last` has been claimed once).
//! - `id` is [`REVOKED`]: a taker asked for `slot` (see `per_thread`); the next lookup of its
//!   cache takes the slow path. A table entry is revoked the same way.
//!
//! The owner marks a per-thread slot of cache `c` in use only in `last` and in entry
//! `entry_index(c)`, so a taker looks at those two (the slot records the thread-local's
//! address). An entry is filled only by the slow path, together with a claim of `last`
//! ([`LastSlots::claim`]), which backs off when a taker holds the slot.
//!
//! The fast paths (pop or push on `main`, take or give back the spare for a prefill) compare
//! `last`'s id (or, when `last` names another cache and holds nothing, the entry's id) with
//! the cache's id and use the slot without marking it held: they call no code that could
//! re-enter, so nothing can observe the slot in use ([`FastSlot`](super::FastSlot)). Before
//! anything that may call out (the barn, the slabs, the page source), a path marks the slot
//! held by storing it into `last` with id 0 ([`FastSlot::hold`](super::FastSlot::hold)), and
//! the release stores the id back, which leaves the slot in `last`: the fast path writes no
//! flag. A miss in both levels looks the slot up in the thread's list (`registry`), creating
//! it on the cache's first use, and claims `last` and the entry for it.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::Slot;
use slab::rseq::FREE;

/// Entries of the per-thread slot cache's table: a power of two, 16 bytes each.
pub(super) const ENTRIES: usize = 16;

/// One `(id, slot)` entry of the per-thread slot cache (see the module docs for its states).
///
/// Atomics so that a taker on another thread may revoke `id`; the owner's accesses are
/// relaxed loads and stores, the same plain moves as a `Cell`'s, except where stated.
pub(super) struct LastSlot {
    /// The id of the cache whose slot `slot` is, 0 while `slot` is held (or absent), or
    /// [`REVOKED`].
    pub(super) id: AtomicU64,
    /// The slot of that cache, or null.
    pub(super) slot: AtomicPtr<Slot>,
}

/// The calling thread's slot cache: `last` and the table.
pub(super) struct LastSlots {
    /// The slot claimed or held last, and the hold marker.
    pub(super) last: LastSlot,
    /// One entry per [`entry_index`].
    table: [LastSlot; ENTRIES],
}

/// A thread-local id that no cache has: a taker stored it to send the owner's next operation
/// through the lookup's slow path.
pub(super) const REVOKED: u64 = u64::MAX;

/// The table entry that cache `id` uses.
#[inline(always)]
pub(super) const fn entry_index(id: u64) -> usize {
    // Truncation keeps the low bits, which are all the index needs.
    (id as usize) & (ENTRIES - 1)
}

impl LastSlot {
    // Only ever copied into the thread-local's initialiser, where each use is a fresh entry.
    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY: Self = Self {
        id: AtomicU64::new(0),
        slot: AtomicPtr::new(std::ptr::null_mut()),
    };

    /// `id` and `slot` now (relaxed: the owner's view).
    #[inline(always)]
    pub(super) fn get(&self) -> (u64, *mut Slot) {
        (
            self.id.load(Ordering::Relaxed),
            self.slot.load(Ordering::Relaxed),
        )
    }

    fn forget(&self) {
        self.id.store(0, Ordering::Relaxed);
        self.slot.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
}

impl LastSlots {
    /// The table entry of cache `id`.
    #[inline(always)]
    pub(super) fn entry(&self, id: u64) -> &LastSlot {
        &self.table[entry_index(id)]
    }

    /// The slot of cache `cache` that `last` names, else the one its table entry names
    /// unless this thread holds a slot (`last`'s id is 0); `None` for the lookup's slow path.
    /// Both probes are inline: a thread that alternates between caches pays a second
    /// compare, not a call.
    #[inline(always)]
    pub(super) fn find(&self, cache: u64) -> Option<*mut Slot> {
        let (id, slot) = self.last.get();
        if id == cache {
            return Some(slot);
        }
        if id == 0 {
            return None;
        }
        let (id, slot) = self.entry(cache).get();
        (id == cache).then_some(slot)
    }

    /// Whether this thread holds a slot now (an operation is in progress below us).
    #[inline]
    pub(super) fn holds_a_slot(&self) -> bool {
        let (id, slot) = self.last.get();
        id == 0 && !slot.is_null()
    }

    /// Marks `slot` held in `last`. The id store releases the slot store, so that a taker
    /// that reads the id 0 reads this slot with it.
    #[inline(always)]
    pub(super) fn hold(&self, slot: &Slot) {
        self.last
            .slot
            .store(slot as *const Slot as *mut Slot, Ordering::Relaxed);
        self.last.id.store(0, Ordering::Release);
    }

    /// Makes `slot` this thread's cached slot of cache `cache` (in `last` with its id, or
    /// held, with `id` 0, and in the cache's table entry), unless a taker holds it: then
    /// `last` and the entry are left revoked and `false` returned.
    ///
    /// The entry is written first and the swap of `last`'s id releases it; the swap and the
    /// load of the lock are ordered (sequentially consistent) against the taker's
    /// compare-exchange of the lock and its reads: either the taker reads `last` after the
    /// swap and sees the slot in use (and the entry), or this load sees the taker's lock.
    pub(super) fn claim(&self, cache: u64, id: u64, slot: &Slot) -> bool {
        let raw = slot as *const Slot as *mut Slot;
        let entry = self.entry(cache);
        entry.slot.store(raw, Ordering::Relaxed);
        entry.id.store(cache, Ordering::Relaxed);
        self.last.slot.store(raw, Ordering::Relaxed);
        self.last.id.swap(id, Ordering::SeqCst);
        if slot.lock.load(Ordering::SeqCst) != FREE {
            self.revoke(cache);
            return false;
        }
        true
    }

    /// Sends the next lookup of cache `cache` on this thread through the slow path.
    pub(super) fn revoke(&self, cache: u64) {
        self.last.id.store(REVOKED, Ordering::Relaxed);
        let entry = self.entry(cache);
        if entry.id.load(Ordering::Relaxed) == cache {
            entry.id.store(REVOKED, Ordering::Relaxed);
        }
    }

    /// Forgets every entry (the thread is exiting: no later thread-local destructor may reach
    /// a slot through the cache).
    pub(super) fn clear(&self) {
        self.last.forget();
        self.table.iter().for_each(LastSlot::forget);
    }
}

thread_local! {
    /// The slots this thread used last, and whether one is held: the per-thread fast path's
    /// lookup. No destructor, so access is a plain thread-local load.
    pub(super) static LAST_SLOTS: LastSlots = const {
        LastSlots { last: LastSlot::EMPTY, table: [LastSlot::EMPTY; ENTRIES] }
    };
}

#[cfg(test)]
thread_local! {
    /// How many times this thread's lookup missed both levels and searched its list (tests
    /// only).
    pub(super) static LIST_LOOKUPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}
