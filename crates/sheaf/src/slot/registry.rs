//! The per-thread registry: every per-thread slot of a cache, each thread's list of its slots
//! across caches, and what exited threads (orphans) and drained ones leave for adoption.

use std::cell::{Cell, RefCell};
use std::mem;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::last_slot::{LAST_SLOTS, LastSlots};
use super::{Moved, Slot, SlotSheaves, SlotStrategy, SlotTable};
use crate::stats::Counters;
use slab::rseq::{FREE, LOCAL};

/// Per-thread slots of one cache, and the orphans of exited threads.
#[derive(Debug, Default)]
pub(super) struct ThreadRegistry {
    /// Every slot of a live thread, and every orphan not yet adopted.
    pub(super) slots: Mutex<Vec<Arc<Slot>>>,
    /// Orphaned slots and handed-over sheaves waiting to be adopted.
    pub(super) orphans: AtomicUsize,
    /// Sheaves that live threads handed over on a drain request, with their slot's node.
    pub(super) handed: Mutex<Vec<(SlotSheaves, usize)>>,
    /// Drain requests for every sheaf that owners honoured (`slot_drained` in the stats;
    /// a counter of its own, as a slot's counter block has no room left in its 256 bytes).
    pub(super) drained: AtomicU64,
}

/// One entry of a thread's list: its slot of the cache `cache_id`, and that cache's registry
/// (dead once the cache is dropped).
pub(super) struct ThreadEntry {
    pub(super) cache_id: u64,
    pub(super) slot: Arc<Slot>,
    registry: Weak<ThreadRegistry>,
}

/// The calling thread's per-thread slots, across caches.
pub(super) struct ThreadSlots {
    /// Sorted by `cache_id`, so that a lookup is a binary search whatever the number of
    /// caches the thread has used. May name dropped caches until the next sweep.
    pub(super) entries: RefCell<Vec<ThreadEntry>>,
    /// The length of `entries` at which the next insertion first drops the entries of
    /// dropped caches: twice the live length after the last sweep, so that sweeps cost a
    /// constant amount per insertion however many caches the thread has seen.
    sweep_at: Cell<usize>,
}

/// The smallest `ThreadSlots::sweep_at`.
const MIN_SWEEP: usize = 8;

impl ThreadSlots {
    /// The slot of cache `id`, if this thread has one.
    pub(super) fn find(entries: &[ThreadEntry], id: u64) -> Result<usize, usize> {
        entries.binary_search_by_key(&id, |entry| entry.cache_id)
    }
}

impl Drop for ThreadSlots {
    fn drop(&mut self) {
        // Later thread-local destructors must not reach a slot through the slot cache.
        let _ = LAST_SLOTS.try_with(|last| last.clear());
        for entry in self.entries.get_mut().drain(..) {
            if let Some(registry) = entry.registry.upgrade() {
                // A taker reads this thread's thread-local while it holds the slot's lock and
                // finds the slot not orphaned: wait out the one at work (a short section that
                // runs no operation of ours) before the thread-local can go away.
                while entry
                    .slot
                    .lock
                    .compare_exchange(FREE, LOCAL, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    std::thread::yield_now();
                }
                // Release: the adopter that sees the flag sees every write this thread made
                // to the slot.
                entry.slot.orphaned.store(true, Ordering::Release);
                entry.slot.unlock();
                registry.orphans.fetch_add(1, Ordering::Release);
            }
        }
    }
}

thread_local! {
    pub(super) static THREAD_SLOTS: ThreadSlots = const {
        ThreadSlots { entries: RefCell::new(Vec::new()), sweep_at: Cell::new(MIN_SWEEP) }
    };
}

impl Slot {
    /// Per-thread: a slot owned by the calling thread.
    pub(super) fn for_this_thread(node: usize) -> Self {
        let slot = Self::new(node);
        let owner = LAST_SLOTS.with(|slots| (slots as *const LastSlots).expose_provenance());
        slot.aux[1].store(owner as u64, Ordering::Relaxed);
        #[cfg(not(loom))]
        slot.aux[0].store(
            rustix::thread::gettid().as_raw_nonzero().get() as u32 as u64,
            Ordering::Relaxed,
        );
        slot
    }
}

impl<S: SlotStrategy> SlotTable<S> {
    /// Per-thread: the calling thread's slot, from its list (created and registered when
    /// `create` is set and there is none). A binary search; entries of dropped caches are
    /// swept when an insertion finds the list twice as long as after the last sweep.
    pub(super) fn thread_slot_lookup(&self, create: bool) -> Option<*const Slot> {
        THREAD_SLOTS
            .try_with(|slots| {
                let mut entries = slots.entries.try_borrow_mut().ok()?;
                let at = match ThreadSlots::find(&entries, self.id) {
                    Ok(found) => return Some(Arc::as_ptr(&entries[found].slot)),
                    Err(_) if !create => return None,
                    Err(at) => at,
                };
                let at = if entries.len() >= slots.sweep_at.get() {
                    entries.retain(|entry| entry.registry.strong_count() > 0);
                    slots.sweep_at.set((entries.len() * 2).max(MIN_SWEEP));
                    // Still absent: the sweep removed only dropped caches' entries.
                    let (Ok(at) | Err(at)) = ThreadSlots::find(&entries, self.id);
                    at
                } else {
                    at
                };
                let slot = Arc::new(Slot::for_this_thread(self.current_node()));
                self.threads
                    .slots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Arc::clone(&slot));
                let raw = Arc::as_ptr(&slot);
                entries.insert(
                    at,
                    ThreadEntry {
                        cache_id: self.id,
                        slot,
                        registry: Arc::downgrade(&self.threads),
                    },
                );
                Some(raw)
            })
            .ok()
            .flatten()
    }

    /// Whether exited threads left slots to adopt (one load).
    #[inline]
    pub(crate) fn has_orphans(&self) -> bool {
        // Acquire, paired with the adopter's release: one that finds no orphans left sees
        // what their adopter did.
        !S::PER_CPU && self.threads.orphans.load(Ordering::Acquire) != 0
    }

    /// Per-thread: runs `f` on each orphaned slot, then unregisters it. Its counters are
    /// passed to `f` so the caller can fold them into the shared block. Its deferred-free
    /// chain moves to the orphan chain first (`SlotTable::adopt_chain`), under the `detach`
    /// locks, which are only tried here (the registry lock is held, and a fork's prepare
    /// takes `detach` flags before the registry): an orphan whose lock is held stays, for the
    /// next adoption. Sheaves that live threads handed over on a drain request are passed
    /// too, with an empty counter block (their counters stay in the live slot). `count` adds
    /// what moved to the orphan chain to the counters.
    pub(crate) fn adopt_orphans(
        &self,
        f: &mut impl FnMut(&mut SlotSheaves, &Counters, usize),
        count: &mut impl FnMut(Moved),
    ) {
        if !self.has_orphans() {
            return;
        }
        let mut slots = self.threads.slots.lock().unwrap_or_else(|p| p.into_inner());
        let handed = mem::take(
            &mut *self
                .threads
                .handed
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut adopted = handed.len();
        let none = Counters::default();
        for (mut sheaves, node) in handed {
            f(&mut sheaves, &none, node);
        }
        slots.retain(|slot| {
            if !slot.orphaned.load(Ordering::Acquire) {
                return true;
            }
            if !self.adopt_chain(slot, count) {
                return true;
            }
            // SAFETY: the owner thread has exited (Acquire pairs with its Release store), and
            // adoption runs under the registry mutex, so no one else touches the slot.
            let sheaves = unsafe { slot.sheaves_mut() };
            f(sheaves, &slot.counters, slot.node());
            adopted += 1;
            false
        });
        self.threads.orphans.fetch_sub(adopted, Ordering::Release);
    }
}
