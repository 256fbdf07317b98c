//! The barn: one per memory node, a store of full and empty sheaves shared by the node's CPU
//! slots.
//!
//! A CPU slot whose `main` ran empty trades it here for a full sheaf; one whose `main` and
//! `spare` are both full trades a full sheaf for an empty one. Prefill takes a full (else an
//! empty) sheaf, and return puts a topped-up sheaf back. The barn never allocates and never
//! talks to the slabs: callers free what it refuses.
//!
//! # Invariants
//!
//! - `full.len <= max_full` and `empty.len <= max_empty` at every moment (C-RETURN-3): the
//!   limits change only under the lock, and [`Barn::set_limits`] hands back what is beyond
//!   new, lower ones.
//! - Every sheaf on `full` holds exactly its own capacity; every sheaf on `empty` holds
//!   nothing. No oversize sheaf is ever here (C-RETURN-4).
//! - `partial` (used with [`CacheConfig::barn_partial`](object_alloc::CacheConfig)) is
//!   absent or a sheaf holding at least one object and fewer than its capacity: what a
//!   prefill left of a full sheaf it opened ([`Barn::take_objects`]).
//! - Sheaves of several capacities may be here together after a run-time capacity change
//!   (the cache's `resize` module): the barn hands out whatever it holds, LIFO, whatever its
//!   capacity, and a full sheaf of an old capacity is as full as any. The taker deals with a
//!   sheaf of an old capacity: an empty one is freed instead of used, a full one serves until
//!   it runs empty, a prefill's is resized.
//! - `held` (used with [`CacheConfig::rcu_hold_ticks`](object_alloc::CacheConfig), one list
//!   per tick of the hold) keeps full sheaves that came back from a grace period when `full`
//!   was at its limit, grouped by the hand-over tick they came in. They are not counted
//!   against `max_full`; they serve takers of full sheaves before `full` does, oldest first,
//!   and [`Barn::age_held`], called once a tick, gives the oldest tick's back to be flushed,
//!   so none stays longer than `rcu_hold_ticks` ticks. The lists are made with the barn:
//!   holding allocates nothing.
//! - The lists are intrusive (the sheaf header's link), so a put or a get allocates nothing
//!   and the lock is held for a handful of instructions.
//!
//! # The lock and its contention
//!
//! One mutex guards both lists. Every acquisition first tries the lock; when that fails the
//! contention is counted (`barn_lock_contended`) before waiting. The kernel's first sheaves
//! release regressed on large machines from exactly this contention until the sheaf capacity
//! was raised, so a capacity sweep shows it here. `nr_full` mirrors `full.len` outside the
//! lock for the racy "is there room" check of a return, as the kernel's `data_race` read does.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::sheaf::OwnedSheaf;
use crate::sync::{self, Mutex, MutexGuard};

/// An intrusive LIFO list of owned sheaves.
struct SheafList {
    head: Option<NonNull<()>>,
    len: usize,
}

// SAFETY: the list owns the sheaves it links (each was an `OwnedSheaf`, which is `Send`).
unsafe impl Send for SheafList {}

impl SheafList {
    const fn new() -> Self {
        Self { head: None, len: 0 }
    }

    fn push(&mut self, mut sheaf: OwnedSheaf) {
        sheaf.set_next(self.head);
        self.head = Some(sheaf.into_raw());
        self.len += 1;
    }

    fn pop(&mut self) -> Option<OwnedSheaf> {
        let raw = self.head?;
        // SAFETY: every pointer on the list came from `OwnedSheaf::into_raw` in `push`, and
        // leaves the list here, once.
        let mut sheaf = unsafe { OwnedSheaf::from_raw(raw) };
        self.head = sheaf.next();
        sheaf.set_next(None);
        self.len -= 1;
        Some(sheaf)
    }
}

/// Counters kept under the barn lock (no atomic needed).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BarnCounters {
    /// Sheaves handed out.
    pub(crate) get: u64,
    /// Requests for a sheaf that found none.
    pub(crate) get_fail: u64,
    /// Sheaves taken in.
    pub(crate) put: u64,
    /// Sheaves refused because a list was at its limit.
    pub(crate) put_fail: u64,
    /// Objects handed to prefills through [`Barn::take_objects`].
    pub(crate) partial_objects: u64,
    /// Full sheaves taken onto the held list ([`Barn::hold`]).
    pub(crate) held: u64,
    /// Held sheaves handed out to takers of full sheaves.
    pub(crate) held_used: u64,
    /// Held sheaves given back by [`Barn::age_held`] unused (the caller flushes them).
    pub(crate) held_aged: u64,
}

struct BarnLists {
    full: SheafList,
    empty: SheafList,
    /// Leftover objects of a full sheaf opened by a prefill (see the invariants).
    partial: Option<OwnedSheaf>,
    /// Full sheaves back from a grace period beyond `max_full`, one list per tick of the
    /// hold, a ring whose oldest list is `oldest` (see the invariants); empty without a hold.
    held: Box<[SheafList]>,
    oldest: usize,
    counters: BarnCounters,
}

impl BarnLists {
    /// A full sheaf for a taker: held ones first, oldest first (they are flushed soonest if
    /// unused), then the full list.
    fn pop_full(&mut self) -> Option<OwnedSheaf> {
        let ticks = self.held.len();
        for i in 0..ticks {
            if let Some(sheaf) = self.held[(self.oldest + i) % ticks].pop() {
                self.counters.held_used += 1;
                return Some(sheaf);
            }
        }
        self.full.pop()
    }

    /// Held sheaves, every tick's.
    fn nr_held(&self) -> usize {
        self.held.iter().map(|list| list.len).sum()
    }

    /// Takes a held sheaf, any tick's (drain).
    fn pop_held(&mut self) -> Option<OwnedSheaf> {
        self.held.iter_mut().find_map(SheafList::pop)
    }
}

/// Emptied sheaves the barn had no room for, for the caller to free (at most two: the
/// partial sheaf and a full sheaf, both emptied by one [`Barn::take_objects`]).
pub(crate) type Refused = [Option<OwnedSheaf>; 2];

/// A snapshot of one barn.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BarnSnapshot {
    pub(crate) full: usize,
    pub(crate) empty: usize,
    /// Held full sheaves, every tick's.
    pub(crate) held: usize,
    pub(crate) objects: usize,
    pub(crate) counters: BarnCounters,
    pub(crate) contended: u64,
}

/// The full and empty sheaves of one node.
pub(crate) struct Barn {
    lists: Mutex<BarnLists>,
    nr_full: AtomicUsize,
    contended: AtomicU64,
    /// Written under the lock only; read outside it by the racy hint of `may_take_full`.
    max_full: AtomicUsize,
    /// Held sheaves, mirrored outside the lock for `may_have_full` and `has_held`.
    nr_held: AtomicUsize,
    max_empty: AtomicUsize,
}

impl Barn {
    /// An empty barn with the given limits and no hold.
    #[cfg(any(test, loom))]
    pub(crate) fn new(max_full: usize, max_empty: usize) -> Self {
        Self::with_hold(max_full, max_empty, 0)
    }

    /// An empty barn with the given limits that holds recycled sheaves beyond `max_full`
    /// for up to `hold_ticks` hand-over ticks (0: no hold).
    pub(crate) fn with_hold(max_full: usize, max_empty: usize, hold_ticks: usize) -> Self {
        Self {
            lists: Mutex::new(BarnLists {
                full: SheafList::new(),
                empty: SheafList::new(),
                partial: None,
                held: (0..hold_ticks).map(|_| SheafList::new()).collect(),
                oldest: 0,
                counters: BarnCounters::default(),
            }),
            nr_full: AtomicUsize::new(0),
            nr_held: AtomicUsize::new(0),
            contended: AtomicU64::new(0),
            max_full: AtomicUsize::new(max_full),
            max_empty: AtomicUsize::new(max_empty),
        }
    }

    fn max_full(&self) -> usize {
        self.max_full.load(Ordering::Relaxed)
    }

    fn max_empty(&self) -> usize {
        self.max_empty.load(Ordering::Relaxed)
    }

    /// The limits `(max_full, max_empty)`.
    pub(crate) fn limits(&self) -> (usize, usize) {
        (self.max_full(), self.max_empty())
    }

    /// Sets the limits at run time and takes out the sheaves beyond them (full ones first)
    /// for the caller to flush and free, so the limits hold from the moment they change.
    pub(crate) fn set_limits(&self, max_full: usize, max_empty: usize) -> Vec<OwnedSheaf> {
        let mut lists = self.lock();
        self.max_full.store(max_full, Ordering::Relaxed);
        self.max_empty.store(max_empty, Ordering::Relaxed);
        let mut out = Vec::new();
        while lists.full.len > max_full {
            out.extend(lists.full.pop());
        }
        while lists.empty.len > max_empty {
            out.extend(lists.empty.pop());
        }
        self.publish(&lists);
        out
    }

    fn lock(&self) -> MutexGuard<'_, BarnLists> {
        if let Some(guard) = sync::try_lock(&self.lists) {
            return guard;
        }
        self.contended.fetch_add(1, Ordering::Relaxed);
        sync::lock(&self.lists)
    }

    /// Locks the barn until a fork is over (see `slab::fork`); the lock is a leaf.
    ///
    /// # Safety
    ///
    /// - The cache that owns the barn is registered with `slab::fork`.
    #[cfg(not(loom))]
    pub(crate) unsafe fn hold_for_fork(&self, held: &mut slab::fork::Held) {
        // SAFETY: the caller's obligation: the barn lives while its cache is registered.
        unsafe { held.hold(sync::lock(&self.lists)) };
    }

    fn publish(&self, lists: &BarnLists) {
        self.nr_full.store(lists.full.len, Ordering::Relaxed);
        self.nr_held.store(lists.nr_held(), Ordering::Relaxed);
    }

    /// Whether the full list looked short of its limit a moment ago (racy, as a hint).
    pub(crate) fn may_take_full(&self) -> bool {
        self.nr_full.load(Ordering::Relaxed) < self.max_full()
    }

    /// Whether the full list looked non-empty a moment ago (racy, as a hint that saves
    /// taking the lock for nothing).
    pub(crate) fn may_have_full(&self) -> bool {
        self.nr_full.load(Ordering::Relaxed) > 0 || self.has_held()
    }

    /// Whether held sheaves looked present a moment ago (racy: the hand-over tick uses it
    /// to keep ticking while some wait to be aged).
    pub(crate) fn has_held(&self) -> bool {
        self.nr_held.load(Ordering::Relaxed) > 0
    }

    /// Keeps a full sheaf back from a grace period that `put_full` refused, in this tick's
    /// list (see the invariants); gives it back when the barn has no hold.
    pub(crate) fn hold(&self, sheaf: OwnedSheaf) -> Result<(), OwnedSheaf> {
        debug_assert!(sheaf.is_full() && !sheaf.is_none(), "hold of {sheaf:?}");
        let mut lists = self.lock();
        let ticks = lists.held.len();
        if ticks == 0 {
            return Err(sheaf);
        }
        let newest = (lists.oldest + ticks - 1) % ticks;
        lists.held[newest].push(sheaf);
        lists.counters.held += 1;
        self.publish(&lists);
        Ok(())
    }

    /// One hand-over tick: returns the oldest tick's held sheaves, unused, for the caller to
    /// flush; their list becomes the newest.
    pub(crate) fn age_held(&self) -> Vec<OwnedSheaf> {
        if !self.has_held() {
            return Vec::new();
        }
        let mut lists = self.lock();
        let ticks = lists.held.len();
        let oldest = lists.oldest;
        let mut out = Vec::with_capacity(lists.held[oldest].len);
        while let Some(sheaf) = lists.held[oldest].pop() {
            out.push(sheaf);
        }
        lists.counters.held_aged += out.len() as u64;
        lists.oldest = (oldest + 1) % ticks;
        self.publish(&lists);
        out
    }

    /// Takes an empty sheaf.
    pub(crate) fn get_empty(&self) -> Option<OwnedSheaf> {
        let mut lists = self.lock();
        let sheaf = lists.empty.pop();
        count_get(&mut lists.counters, sheaf.is_some());
        sheaf
    }

    /// Takes a full sheaf.
    pub(crate) fn get_full(&self) -> Option<OwnedSheaf> {
        let mut lists = self.lock();
        let sheaf = lists.pop_full();
        count_get(&mut lists.counters, sheaf.is_some());
        self.publish(&lists);
        sheaf
    }

    /// Takes a full sheaf, else an empty one (prefill).
    pub(crate) fn get_full_or_empty(&self) -> Option<OwnedSheaf> {
        let mut lists = self.lock();
        let sheaf = match lists.pop_full() {
            Some(sheaf) => Some(sheaf),
            None => lists.empty.pop(),
        };
        count_get(&mut lists.counters, sheaf.is_some());
        self.publish(&lists);
        sheaf
    }

    /// Stores a full sheaf, or gives it back when the full list is at its limit.
    pub(crate) fn put_full(&self, sheaf: OwnedSheaf) -> Result<(), OwnedSheaf> {
        debug_assert!(sheaf.is_full() && !sheaf.is_none(), "put_full of {sheaf:?}");
        let mut lists = self.lock();
        if lists.full.len >= self.max_full() {
            lists.counters.put_fail += 1;
            return Err(sheaf);
        }
        lists.full.push(sheaf);
        lists.counters.put += 1;
        self.publish(&lists);
        Ok(())
    }

    /// Stores an empty sheaf, or gives it back when the empty list is at its limit.
    pub(crate) fn put_empty(&self, sheaf: OwnedSheaf) -> Result<(), OwnedSheaf> {
        debug_assert!(
            sheaf.is_empty() && !sheaf.is_none(),
            "put_empty of {sheaf:?}"
        );
        let mut lists = self.lock();
        if lists.empty.len >= self.max_empty() {
            lists.counters.put_fail += 1;
            return Err(sheaf);
        }
        lists.empty.push(sheaf);
        lists.counters.put += 1;
        Ok(())
    }

    /// Trades an empty sheaf for a full one under one lock: `Ok((full, refused))` where
    /// `refused` is the empty sheaf when the empty list had no room (the caller frees it);
    /// `Err(empty)` when no full sheaf was there.
    pub(crate) fn exchange_empty(
        &self,
        empty: OwnedSheaf,
    ) -> Result<(OwnedSheaf, Option<OwnedSheaf>), OwnedSheaf> {
        let mut lists = self.lock();
        let Some(full) = lists.pop_full() else {
            lists.counters.get_fail += 1;
            return Err(empty);
        };
        lists.counters.get += 1;
        let refused = if empty.is_none() {
            Some(empty)
        } else if lists.empty.len < self.max_empty() {
            lists.empty.push(empty);
            lists.counters.put += 1;
            None
        } else {
            lists.counters.put_fail += 1;
            Some(empty)
        };
        self.publish(&lists);
        Ok((full, refused))
    }

    /// Trades a full sheaf for an empty one under one lock: `Ok(empty)` (or `Ok(None)` when
    /// the full sheaf was taken but no empty one was there); `Err(full)` when the full list
    /// is at its limit.
    pub(crate) fn exchange_full(&self, full: OwnedSheaf) -> Result<Option<OwnedSheaf>, OwnedSheaf> {
        debug_assert!(
            full.is_full() && !full.is_none(),
            "exchange_full of {full:?}"
        );
        let mut lists = self.lock();
        if lists.full.len >= self.max_full() {
            lists.counters.put_fail += 1;
            return Err(full);
        }
        lists.full.push(full);
        lists.counters.put += 1;
        let empty = lists.empty.pop();
        count_get(&mut lists.counters, empty.is_some());
        self.publish(&lists);
        Ok(empty)
    }

    /// Moves objects into `into` until it is full (a prefill's top-up): from the partial
    /// sheaf first, then from full sheaves, whose leftover becomes the partial sheaf. Returns
    /// how many moved, and the sheaves emptied here that the empty list had no room for.
    pub(crate) fn take_objects(&self, into: &mut OwnedSheaf) -> (usize, Refused) {
        let mut refused: Refused = [None, None];
        if into.room() == 0 {
            return (0, refused);
        }
        let mut lists = self.lock();
        let mut moved = 0;
        for refused in refused.iter_mut() {
            if into.room() == 0 {
                break;
            }
            let mut source = match lists.partial.take() {
                Some(partial) => partial,
                None => match lists.pop_full() {
                    Some(full) => {
                        lists.counters.get += 1;
                        full
                    }
                    None => break,
                },
            };
            moved += source.move_to(into, usize::MAX);
            if source.is_empty() {
                *refused = self.stash_empty_locked(&mut lists, source);
            } else {
                lists.partial = Some(source);
            }
        }
        lists.counters.partial_objects += moved as u64;
        self.publish(&lists);
        (moved, refused)
    }

    /// Keeps `sheaf` (of the cache's capacity, neither empty nor full) as the partial sheaf
    /// if there is none: objects a prefill gathered before it failed. Gives it back otherwise.
    pub(crate) fn put_partial(&self, sheaf: OwnedSheaf) -> Result<(), OwnedSheaf> {
        if sheaf.is_empty() || sheaf.is_full() {
            return Err(sheaf);
        }
        let mut lists = self.lock();
        if lists.partial.is_some() {
            return Err(sheaf);
        }
        lists.partial = Some(sheaf);
        Ok(())
    }

    /// An emptied sheaf goes on the empty list if it has room; else it is given back.
    fn stash_empty_locked(&self, lists: &mut BarnLists, sheaf: OwnedSheaf) -> Option<OwnedSheaf> {
        if lists.empty.len < self.max_empty() {
            lists.empty.push(sheaf);
            None
        } else {
            Some(sheaf)
        }
    }

    /// Takes every sheaf out (shrink, drop): the partial sheaf and full ones first.
    pub(crate) fn drain(&self) -> Vec<OwnedSheaf> {
        let mut lists = self.lock();
        let mut out = Vec::with_capacity(lists.full.len + lists.nr_held() + lists.empty.len + 1);
        out.extend(lists.partial.take());
        while let Some(sheaf) = lists.pop_held() {
            out.push(sheaf);
        }
        while let Some(sheaf) = lists.full.pop() {
            out.push(sheaf);
        }
        while let Some(sheaf) = lists.empty.pop() {
            out.push(sheaf);
        }
        self.publish(&lists);
        out
    }

    /// Counts and totals.
    pub(crate) fn snapshot(&self) -> BarnSnapshot {
        let lists = self.lock();
        let mut objects = 0;
        for list in std::iter::once(&lists.full).chain(lists.held.iter()) {
            let mut cursor = list.head;
            while let Some(raw) = cursor {
                // SAFETY: a list member; we borrow it under the lock without taking
                // ownership, and forget the handle so nothing is freed.
                let sheaf = std::mem::ManuallyDrop::new(unsafe { OwnedSheaf::from_raw(raw) });
                objects += sheaf.size();
                cursor = sheaf.next();
            }
        }
        objects += lists.partial.as_ref().map_or(0, OwnedSheaf::size);
        BarnSnapshot {
            full: lists.full.len,
            empty: lists.empty.len,
            held: lists.nr_held(),
            objects,
            counters: lists.counters,
            contended: self.contended.load(Ordering::Relaxed),
        }
    }
}

fn count_get(counters: &mut BarnCounters, got: bool) {
    if got {
        counters.get += 1;
    } else {
        counters.get_fail += 1;
    }
}

impl Drop for Barn {
    fn drop(&mut self) {
        let left = self.drain();
        debug_assert!(
            left.is_empty(),
            "barn dropped with {} sheaves: the cache must drain it first",
            left.len()
        );
    }
}

impl fmt::Debug for Barn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barn")
            .field("nr_full", &self.nr_full.load(Ordering::Relaxed))
            .field("max_full", &self.max_full())
            .field("max_empty", &self.max_empty())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::ptr::NonNull;

    use super::*;

    fn sheaf_of(capacity: usize, objects: std::ops::Range<usize>) -> OwnedSheaf {
        let mut sheaf = OwnedSheaf::new(capacity);
        for i in objects {
            sheaf
                .push(NonNull::new((i * 16) as *mut u8).unwrap())
                .unwrap();
        }
        sheaf
    }

    fn free_all(sheaves: impl IntoIterator<Item = OwnedSheaf>) {
        for mut sheaf in sheaves {
            // The tokens are not objects: forget them before freeing the sheaf.
            sheaf.clear();
            sheaf.free();
        }
    }

    #[test]
    fn take_objects_drains_the_partial_sheaf_then_opens_a_full_one_and_keeps_its_leftover() {
        let barn = Barn::new(4, 0);
        barn.put_full(sheaf_of(4, 1..5)).unwrap();
        barn.put_full(sheaf_of(4, 5..9)).unwrap();
        let mut into = sheaf_of(4, 100..101);
        let (moved, refused) = barn.take_objects(&mut into);
        assert_eq!(moved, 3);
        assert!(into.is_full());
        assert!(refused.iter().all(Option::is_none));
        let snapshot = barn.snapshot();
        // One full sheaf left, and the opened one's last object as the partial sheaf.
        assert_eq!((snapshot.full, snapshot.objects), (1, 5));
        assert_eq!(snapshot.counters.partial_objects, 3);
        // Next: the partial sheaf's object first, then the other full sheaf. With no room
        // on the empty list (limit 0), the emptied partial sheaf is handed back.
        let mut next = OwnedSheaf::new(4);
        let (moved, refused) = barn.take_objects(&mut next);
        assert_eq!(moved, 4);
        assert_eq!(refused.iter().flatten().count(), 1);
        assert_eq!(barn.snapshot().objects, 1);
        free_all([into, next]);
        free_all(refused.into_iter().flatten());
        free_all(barn.drain());
    }

    #[test]
    fn held_sheaves_stay_outside_the_limit_serve_takers_first_and_age_out_after_two_ticks() {
        let barn = Barn::with_hold(1, 4, 2);
        barn.put_full(sheaf_of(4, 1..5)).unwrap();
        let refused = barn.put_full(sheaf_of(4, 5..9)).unwrap_err();
        barn.hold(refused).unwrap();
        barn.hold(sheaf_of(4, 9..13)).unwrap();
        let snapshot = barn.snapshot();
        // The limit holds for the full list; the held ones are counted as cached.
        assert_eq!((snapshot.full, snapshot.held, snapshot.objects), (1, 2, 12));
        assert!(barn.may_have_full() && barn.has_held());
        // A taker gets a held sheaf before the full list's.
        let taken = barn.get_full().unwrap();
        assert_eq!(taken.objects()[0].as_ptr() as usize, 9 * 16);
        assert_eq!(barn.snapshot().counters.held_used, 1);
        // First tick: nothing was held since the tick before; this tick's are aged.
        assert!(barn.age_held().is_empty());
        assert_eq!(barn.snapshot().held, 1);
        // Second tick: the aged one, still unused, comes back for the caller to flush.
        let aged = barn.age_held();
        assert_eq!(aged.len(), 1);
        let snapshot = barn.snapshot();
        assert_eq!((snapshot.full, snapshot.held, snapshot.objects), (1, 0, 4));
        assert_eq!(
            (snapshot.counters.held, snapshot.counters.held_aged),
            (2, 1)
        );
        assert!(!barn.has_held());
        free_all([taken]);
        free_all(aged);
        free_all(barn.drain());
    }

    #[test]
    fn drain_takes_held_sheaves_too_and_a_barn_without_a_hold_refuses_to_hold() {
        let barn = Barn::with_hold(0, 0, 3);
        barn.hold(sheaf_of(4, 1..5)).unwrap();
        assert!(barn.age_held().is_empty());
        barn.hold(sheaf_of(4, 5..9)).unwrap();
        let drained = barn.drain();
        assert_eq!(drained.len(), 2);
        assert!(!barn.has_held());
        assert_eq!(barn.snapshot().objects, 0);
        free_all(drained);
        let refused = Barn::new(0, 0).hold(sheaf_of(4, 1..5)).unwrap_err();
        free_all([refused]);
    }

    #[test]
    fn put_partial_keeps_a_partly_filled_sheaf_only_where_there_is_none() {
        let barn = Barn::new(4, 4);
        let full = barn
            .put_partial(sheaf_of(4, 1..5))
            .expect_err("a full sheaf");
        let empty = barn
            .put_partial(OwnedSheaf::new(4))
            .expect_err("an empty sheaf");
        barn.put_partial(sheaf_of(4, 1..3)).unwrap();
        let refused = barn.put_partial(sheaf_of(4, 3..4)).unwrap_err();
        assert_eq!(barn.snapshot().objects, 2);
        let mut into = OwnedSheaf::new(4);
        assert_eq!(barn.take_objects(&mut into).0, 2);
        free_all([into, refused, full, empty]);
        free_all(barn.drain());
    }

    #[test]
    fn sheaves_of_two_capacities_are_kept_and_handed_out_alike_and_new_limits_hold_at_once() {
        let barn = Barn::new(4, 4);
        barn.put_full(sheaf_of(4, 1..5)).unwrap();
        barn.put_full(sheaf_of(8, 5..13)).unwrap();
        barn.put_empty(OwnedSheaf::new(4)).unwrap();
        barn.put_empty(OwnedSheaf::new(8)).unwrap();
        assert_eq!(barn.snapshot().objects, 12);
        // LIFO whatever the capacity: the taker decides what to do with an old one.
        let (full, refused) = barn.exchange_empty(OwnedSheaf::new(8)).unwrap();
        assert_eq!((full.capacity(), full.size()), (8, 8));
        assert!(refused.is_none());
        // Lowered limits: what is beyond them comes out at once, full sheaves first.
        let beyond = barn.set_limits(0, 1);
        assert_eq!(barn.limits(), (0, 1));
        assert_eq!(beyond.len(), 3, "one full, two of the three empty");
        let snapshot = barn.snapshot();
        assert_eq!((snapshot.full, snapshot.empty, snapshot.objects), (0, 1, 0));
        let refused = barn.put_full(sheaf_of(4, 20..24)).unwrap_err();
        free_all([full, refused]);
        free_all(beyond);
        free_all(barn.drain());
    }
}
