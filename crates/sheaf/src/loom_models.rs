//! loom models of the concurrency-critical structures: the CPU slot's try-lock, its separate
//! lock for deferred-free sheaves, the barn, the adoption of exited threads' slots, the
//! deferrer's reservation protocol, and (`stamped_chain`) the stamped chain of a slot's
//! deferred-free sheaves changed by restartable sequences (the CPU's atomicity stood for by a
//! mutex). An earlier model of the chain with groups of full sheaves taken under a
//! reservation went with that protocol.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p sheaf --release loom` (use a separate
//! `CARGO_TARGET_DIR`: the flag rebuilds every dependency).

mod stamped_chain;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use crate::barn::Barn;
use crate::sheaf::OwnedSheaf;
use crate::slot::Slot;

/// Two threads race for one slot: whoever wins the try-lock has exclusive access (loom
/// checks every access to the guarded cell for a data race), the loser never waits, and
/// every successful critical section is counted exactly once.
#[test]
fn loom_slot_try_lock_is_exclusive_and_never_waits() {
    loom::model(|| {
        let slot = Arc::new(Slot::new(0));
        let guarded = Arc::new(UnsafeCell::new(0u32));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let slot = slot.clone();
                let guarded = guarded.clone();
                thread::spawn(move || {
                    let mut entered = 0;
                    for _ in 0..2 {
                        if slot.try_lock() {
                            guarded.with_mut(|value| {
                                // SAFETY: the slot lock is held, so no other access exists.
                                unsafe { *value += 1 };
                            });
                            slot.unlock();
                            entered += 1;
                        }
                    }
                    entered
                })
            })
            .collect();
        let entered: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(slot.try_lock(), "lock left held");
        // SAFETY: all threads have joined and we hold the lock.
        let total = guarded.with(|value| unsafe { *value });
        assert_eq!(total, entered);
        assert!(
            entered >= 2,
            "the first attempt of the first thread to run always succeeds"
        );
        slot.unlock();
    });
}

/// Defers `object` as a per-CPU deferred free does: under the slot's `rcu_lock` alone into
/// the slot's deferred-free sheaf (`rcu`), or, when the lock is held, on its own (`alone`).
fn defer_under_rcu_lock(
    slot: &Slot,
    rcu: &UnsafeCell<Vec<u32>>,
    alone: &mut Vec<u32>,
    object: u32,
) {
    if slot.try_lock_rcu() {
        // SAFETY: `rcu_lock` is held, so no other access exists.
        rcu.with_mut(|objects| unsafe { (*objects).push(object) });
        slot.unlock_rcu();
    } else {
        alone.push(object);
    }
}

/// The per-CPU slot's two locks. One thread takes the slot's main lock (a slow path), defers
/// an object from inside it, and never releases the lock (it is descheduled for good).
/// Another thread defers two objects under `rcu_lock` alone. The barrier takes the
/// deferred-free sheaf under `rcu_lock` alone, waiting only for that lock. In every
/// interleaving the barrier returns (one that needed the main lock would spin for ever, and
/// loom would fail), no access to the sheaf races, the deferrals that finished before the
/// barrier began are in what it took (or were deferred on their own), and every object ends
/// up in exactly one place.
#[test]
fn loom_barrier_takes_deferred_frees_past_a_held_slot_lock() {
    use loom::sync::atomic::{AtomicBool, Ordering};
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let slot = Arc::new(Slot::new(0));
        let rcu = Arc::new(UnsafeCell::new(Vec::new()));
        let deferred = Arc::new(AtomicBool::new(false));
        let holder = {
            let (slot, rcu) = (slot.clone(), rcu.clone());
            thread::spawn(move || {
                let mut alone = Vec::new();
                assert!(slot.try_lock(), "only this thread takes the main lock");
                defer_under_rcu_lock(&slot, &rcu, &mut alone, 1);
                // Descheduled here with the main lock held, for good.
                alone
            })
        };
        let deferrer = {
            let (slot, rcu, deferred) = (slot.clone(), rcu.clone(), deferred.clone());
            thread::spawn(move || {
                let mut alone = Vec::new();
                defer_under_rcu_lock(&slot, &rcu, &mut alone, 10);
                defer_under_rcu_lock(&slot, &rcu, &mut alone, 11);
                deferred.store(true, Ordering::Release);
                alone
            })
        };
        // The barrier.
        let began_after = deferred.load(Ordering::Acquire);
        let taken = loop {
            if slot.try_lock_rcu() {
                // SAFETY: `rcu_lock` is held.
                let taken = rcu.with_mut(|objects| unsafe { std::mem::take(&mut *objects) });
                slot.unlock_rcu();
                break taken;
            }
            thread::yield_now();
        };
        let mut alone = holder.join().unwrap();
        let deferrer_alone = deferrer.join().unwrap();
        if began_after {
            for object in [10, 11] {
                assert!(
                    taken.contains(&object) || deferrer_alone.contains(&object),
                    "object {object}, deferred before the barrier began, was not reached"
                );
            }
        }
        alone.extend(deferrer_alone);
        // SAFETY: every thread has joined.
        let left = rcu.with_mut(|objects| unsafe { std::mem::take(&mut *objects) });
        let mut all: Vec<u32> = taken.into_iter().chain(alone).chain(left).collect();
        all.sort_unstable();
        assert_eq!(all, [1, 10, 11], "objects lost or taken twice");
    });
}

fn sheaf(capacity: usize, full: bool) -> OwnedSheaf {
    let mut sheaf = OwnedSheaf::new(capacity);
    if full {
        for i in 0..capacity {
            let token = std::ptr::NonNull::new((0x1000 + 64 * i) as *mut u8).unwrap();
            sheaf.push(token).unwrap();
        }
    }
    sheaf
}

fn release(mut sheaf: OwnedSheaf) {
    sheaf.clear();
    sheaf.free();
}

/// Two CPUs trade sheaves at one barn at once: one exchanges an empty sheaf for a full one,
/// the other a full sheaf for an empty one. Limits hold in every interleaving, and no
/// sheaf is lost or duplicated.
#[test]
fn loom_barn_exchanges_keep_limits_and_sheaves() {
    loom::model(|| {
        let barn = Arc::new(Barn::new(1, 1));
        barn.put_full(sheaf(2, true)).unwrap();
        barn.put_empty(sheaf(2, false)).unwrap();
        let a = {
            let barn = barn.clone();
            thread::spawn(move || match barn.exchange_empty(sheaf(2, false)) {
                Ok((full, refused)) => {
                    assert!(full.is_full());
                    let mut out = vec![full];
                    out.extend(refused);
                    out
                }
                Err(empty) => vec![empty],
            })
        };
        let b = {
            let barn = barn.clone();
            thread::spawn(move || match barn.exchange_full(sheaf(2, true)) {
                Ok(empty) => empty.into_iter().collect(),
                Err(full) => vec![full],
            })
        };
        let mut held: Vec<OwnedSheaf> = a.join().unwrap();
        held.extend(b.join().unwrap());
        let snapshot = barn.snapshot();
        assert!(snapshot.full <= 1 && snapshot.empty <= 1, "{snapshot:?}");
        let in_barn = barn.drain();
        // Four sheaves existed: two in the barn, one brought by each thread.
        assert_eq!(held.len() + in_barn.len(), 4);
        for s in held.into_iter().chain(in_barn) {
            release(s);
        }
    });
}

/// A return racing a free path for the last full slot of the barn: exactly one wins.
#[test]
fn loom_barn_put_full_respects_the_limit_under_a_race() {
    loom::model(|| {
        let barn = Arc::new(Barn::new(1, 0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let barn = barn.clone();
                thread::spawn(move || barn.put_full(sheaf(1, true)).err())
            })
            .collect();
        let refused: Vec<OwnedSheaf> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(refused.len(), 1);
        assert_eq!(barn.snapshot().full, 1);
        for s in refused.into_iter().chain(barn.drain()) {
            release(s);
        }
    });
}

// ----- orphan adoption ------------------------------------------------------------------
//
// The per-thread registry cannot run under loom as it is (thread-locals, `std` locks and
// `Arc`s), so this model repeats its exact sequence of synchronising operations on loom's
// types; each step names the code it stands for, so a change there is mirrored here.
//
// | model                    | `crate::slot` / `crate::cache_core`                           |
// |--------------------------|---------------------------------------------------------------|
// | `OrphanSlot::objects`    | `Slot`'s sheaves (plain memory, owner-only while live)        |
// | `OrphanSlot::counter`    | `Slot::counters` (relaxed atomics written by the owner)        |
// | `OrphanSlot::exit`       | `ThreadSlots::drop`: `orphaned` Release, `orphans` += 1 Release |
// | `Orphans::adopt`         | `SlotTable::adopt_orphans` + `CacheCore::adopt_orphans`'s callback |
// | `Orphans::take_rcu`      | a visit of the orphan chain (`SlotTable::visit_chains`)          |
// | `Orphans::sum`           | `SlotTable::sum_counters`                                      |

use loom::sync::Mutex;
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};

/// A per-thread slot: what its thread cached, and its event counter.
struct OrphanSlot {
    orphaned: AtomicBool,
    objects: UnsafeCell<Vec<u32>>,
    counter: AtomicU64,
}

impl OrphanSlot {
    /// The owner's operations while it lives: objects cached, events counted.
    fn use_it(&self, objects: &[u32]) {
        // SAFETY: only the owning thread touches a live slot's sheaves.
        self.objects
            .with_mut(|cached| unsafe { (*cached).extend_from_slice(objects) });
        self.counter
            .fetch_add(objects.len() as u64, Ordering::Relaxed);
    }

    /// The owner exits.
    fn exit(&self, registry: &Orphans) {
        self.orphaned.store(true, Ordering::Release);
        registry.orphans.fetch_add(1, Ordering::Release);
    }
}

/// A variant of adoption, for the model to show what its orderings are for.
#[derive(Clone, Copy)]
struct Adoption {
    /// The adopter reads the orphan count and each slot's `orphaned` flag with Acquire (the
    /// real order) rather than Relaxed. (With one exiting thread, as modelled, the count's
    /// Acquire alone would do; the flag's matters when another thread's exit raised the
    /// count, which would take one more thread to model.)
    acquire: bool,
    /// The slot's counters are folded into the shared block before it leaves the registry,
    /// under the registry lock (the real order), rather than after the lock is dropped.
    fold_under_lock: bool,
}

const REAL_ADOPTION: Adoption = Adoption {
    acquire: true,
    fold_under_lock: true,
};

/// A cache's registry of per-thread slots, its orphan chain (adopted deferred objects) and its shared
/// counter block.
struct Orphans {
    adoption: Adoption,
    slots: Mutex<Vec<Arc<OrphanSlot>>>,
    orphans: AtomicUsize,
    orphan_chain: Mutex<Vec<u32>>,
    shared_counter: AtomicU64,
}

impl Orphans {
    fn adopt(&self) {
        let order = if self.adoption.acquire {
            Ordering::Acquire
        } else {
            Ordering::Relaxed
        };
        if self.orphans.load(order) == 0 {
            return;
        }
        let mut slots = self.slots.lock().unwrap();
        let mut adopted = 0;
        let mut fold_later = 0;
        slots.retain(|slot| {
            if !slot.orphaned.load(order) {
                return true;
            }
            // SAFETY: the owner has exited (the Acquire load above pairs with its Release
            // store) and adoption runs under the registry lock.
            let objects = slot
                .objects
                .with_mut(|cached| unsafe { std::mem::take(&mut *cached) });
            self.orphan_chain.lock().unwrap().extend(objects);
            let events = slot.counter.load(Ordering::Relaxed);
            if self.adoption.fold_under_lock {
                self.shared_counter.fetch_add(events, Ordering::Relaxed);
            } else {
                fold_later += events;
            }
            adopted += 1;
            false
        });
        drop(slots);
        self.shared_counter.fetch_add(fold_later, Ordering::Relaxed);
        self.orphans.fetch_sub(adopted, Ordering::Release);
    }

    fn take_rcu(&self) -> Vec<u32> {
        self.adopt();
        std::mem::take(&mut *self.orphan_chain.lock().unwrap())
    }

    /// The counter total, and how many slots were still registered when it was taken.
    fn sum(&self) -> (u64, usize) {
        let slots = self.slots.lock().unwrap();
        let mut total = self.shared_counter.load(Ordering::Relaxed);
        for slot in slots.iter() {
            total += slot.counter.load(Ordering::Relaxed);
        }
        (total, slots.len())
    }
}

/// A thread caches two objects in its slot and exits while one thread adopts orphans (a
/// barrier taking `rcu_free` sheaves) and another adopts too, then sums the counters. In
/// every interleaving the adopters read the slot only after its owner's last write (loom
/// checks the plain accesses), each object is taken exactly once, and no sum counts the
/// slot's events twice or loses them once the slot is gone.
fn orphan_model(adoption: Adoption) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        let slot = Arc::new(OrphanSlot {
            orphaned: AtomicBool::new(false),
            objects: UnsafeCell::new(Vec::new()),
            counter: AtomicU64::new(0),
        });
        let cache = Arc::new(Orphans {
            adoption,
            slots: Mutex::new(vec![slot.clone()]),
            orphans: AtomicUsize::new(0),
            orphan_chain: Mutex::new(Vec::new()),
            shared_counter: AtomicU64::new(0),
        });
        let owner = {
            let cache = cache.clone();
            thread::spawn(move || {
                slot.use_it(&[1, 2]);
                slot.exit(&cache);
            })
        };
        let adopter = {
            let cache = cache.clone();
            thread::spawn(move || cache.take_rcu())
        };
        let mut taken = cache.take_rcu();
        let (sum, registered) = cache.sum();
        assert!(sum == 0 || sum == 2, "counted {sum} events of 2");
        if registered == 0 {
            assert_eq!(sum, 2, "an adopted slot's events were lost");
        }
        owner.join().unwrap();
        taken.extend(adopter.join().unwrap());
        taken.extend(cache.take_rcu());
        taken.sort_unstable();
        assert_eq!(taken, [1, 2], "objects lost or taken twice");
        assert_eq!(cache.sum(), (2, 0));
    });
}

#[test]
fn loom_orphan_adoption_takes_everything_once() {
    orphan_model(REAL_ADOPTION);
}

/// An adopter that reads the orphan count and flag with Relaxed loads may read the slot's
/// sheaves before the exiting thread's last writes to them: the model must catch it.
#[test]
#[should_panic]
fn loom_adopting_without_acquire_races_with_the_exiting_thread() {
    orphan_model(Adoption {
        acquire: false,
        ..REAL_ADOPTION
    });
}

/// Folding an adopted slot's counters after it has left the registry lets a concurrent sum
/// miss them: the model must catch it.
#[test]
#[should_panic]
fn loom_folding_counters_outside_the_lock_loses_events_in_a_sum() {
    orphan_model(Adoption {
        fold_under_lock: false,
        ..REAL_ADOPTION
    });
}

// ----- the deferrer's reservation protocol ----------------------------------------------
//
// A design that takes a batch of deferred objects out of where a barrier looks, and hands it
// to a grace period afterwards, reserves the grace period first (`Deferrer::reserve`,
// `defer_reserved`); sheaf did so for its `rcu_free` sheaves before the stamped chain kept
// them in their slots, and still does when a cache is dropped. `Deferrer` counts pending
// callbacks as the strong count of an `Arc` (less the owner's), and crossbeam-epoch runs the
// callbacks; neither runs under loom, so the model repeats the atomic operations they
// perform, in the order a design performs them:
//
// | model                   | real code                                                       |
// |-------------------------|-----------------------------------------------------------------|
// | `reserve`               | `Deferrer::reserve`: `Arc::clone`, a Relaxed increment          |
// | `slot` (a mutex)        | the CPU slot's lock around its `rcu_free` sheaf                  |
// | `take_and_submit`       | taking the batch out, then `defer_reserved` (sheaf: `Cache::drop`) |
// | `complete`              | the callback after its grace period: objects back, `Arc` dropped |
// |                         | (a Release decrement)                                            |
// | `all_run`               | `Deferrer::all_run`: `strong_count` (a Relaxed load), then an     |
// |                         | Acquire fence                                                    |
//
// The grace period itself is not modelled: a callback runs on the thread that submitted it,
// at any point the scheduler picks, which is one of the orders crossbeam allows.

/// A variant of the protocol, for the model to show what each of its steps is for.
#[derive(Clone, Copy)]
struct Protocol {
    /// Reserve before taking sheaves out of the slot (the real order).
    reserve_first: bool,
    /// The Acquire fence after finding nothing pending.
    fence: bool,
}

const REAL: Protocol = Protocol {
    reserve_first: true,
    fence: true,
};

struct Deferred {
    protocol: Protocol,
    /// The slot's partly filled `rcu_free` sheaf.
    slot: Mutex<Vec<usize>>,
    /// Callbacks announced and not yet run.
    pending: AtomicUsize,
    /// What a callback does to an object: plain writes, which a barrier that returned must
    /// see.
    freed: Vec<UnsafeCell<bool>>,
}

impl Deferred {
    fn reserve(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    fn complete(&self, objects: Vec<usize>) {
        for object in objects {
            // SAFETY: each object is in exactly one submitted group, whose callback is the
            // only writer of its flag.
            self.freed[object].with_mut(|freed| unsafe { *freed = true });
        }
        self.pending.fetch_sub(1, Ordering::Release);
    }

    /// Shrink or the first half of barrier: take the slot's `rcu_free` objects and submit
    /// them under a reservation.
    fn take_and_submit(&self) {
        if self.protocol.reserve_first {
            self.reserve();
        }
        let taken = std::mem::take(&mut *self.slot.lock().unwrap());
        if !self.protocol.reserve_first {
            self.reserve();
        }
        self.complete(taken);
    }

    fn all_run(&self) -> bool {
        if self.pending.load(Ordering::Relaxed) != 0 {
            return false;
        }
        if self.protocol.fence {
            fence(Ordering::Acquire);
        }
        true
    }

    /// `Cache::barrier`.
    fn barrier(&self) {
        self.take_and_submit();
        while !self.all_run() {
            thread::yield_now();
        }
    }
}

/// An object was deferred (it sits in the slot's `rcu_free` sheaf) before a barrier began,
/// while a shrink takes that sheaf out of the slot: when the barrier returns, the object's
/// callback has run and its effects are visible (loom checks the plain read), whoever
/// submitted it.
fn reservation_model(protocol: Protocol) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        let deferred = Arc::new(Deferred {
            protocol,
            slot: Mutex::new(vec![0]),
            pending: AtomicUsize::new(0),
            freed: (0..2).map(|_| UnsafeCell::new(false)).collect(),
        });
        let shrink = {
            let deferred = deferred.clone();
            thread::spawn(move || deferred.take_and_submit())
        };
        let late = {
            // A free_deferred that begins while the barrier runs: it may or may not be
            // waited for, but it must not disturb the rest.
            let deferred = deferred.clone();
            thread::spawn(move || deferred.slot.lock().unwrap().push(1))
        };
        deferred.barrier();
        // SAFETY: a plain read, which loom checks against the callback's write.
        let freed = deferred.freed[0].with(|freed| unsafe { *freed });
        assert!(
            freed,
            "barrier returned before the object deferred before it was freed"
        );
        shrink.join().unwrap();
        late.join().unwrap();
    });
}

#[test]
fn loom_barrier_waits_for_sheaves_taken_by_a_concurrent_shrink() {
    reservation_model(REAL);
}

/// Reserving only after the sheaf has left the slot opens a window in which a barrier finds
/// neither the sheaf nor a pending callback: the model must catch it.
#[test]
#[should_panic]
fn loom_reserving_after_taking_lets_a_barrier_return_early() {
    reservation_model(Protocol {
        reserve_first: false,
        ..REAL
    });
}

/// Without the fence, the relaxed count that reads zero does not order the callback's
/// writes before what the barrier's caller does next: the model must catch it.
#[test]
#[should_panic]
fn loom_a_barrier_without_the_fence_races_with_the_callback() {
    reservation_model(Protocol {
        fence: false,
        ..REAL
    });
}
