//! C-DEFER-3 and C-CONC-4 with per-CPU slots: a thread that holds a CPU slot's lock and is
//! descheduled (parked here with the lock held, as a slow path preempted in the middle would
//! be) holds up no barrier, and a shrink's hand-over of `rcu_free` sheaves does not wait for
//! it either. The deferred frees made on that CPU before the barrier began complete while the
//! holder still holds the slot.

use std::ptr::NonNull;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use object_alloc::{AllocFlags, CacheConfig};

use super::per_cpu::FORCE_ATOMIC_LOCKS;
use super::tests::{counter, pin};
use crate::{Cache, PerCpu};

/// How long the barrier may take before the test gives up on it: far beyond a grace period
/// on a loaded machine, far below "until the holder runs again".
const WATCHDOG: Duration = Duration::from_secs(5);

/// Sheaves of 8; 19 deferred frees: two full `rcu_free` sheaves waiting on the slot and a
/// partly filled one. Then another thread on the same CPU takes the slot's lock and parks;
/// a barrier runs on a third thread under a watchdog. With `atomic` the slots are locked by
/// compare-exchange (the fallback where restartable sequences are unavailable). With
/// `shrink`, a shrink runs on a fourth thread first: it submits the `rcu_free` sheaves and
/// then waits for the held slot's `main` and `spare`, and the barrier must not wait for it.
fn descheduled_holder(atomic: bool, shrink: bool) -> Duration {
    const DEFERRED: usize = 19;
    let cpu = slab::cpu::current_cpu(slab::cpu::cpu_source());
    FORCE_ATOMIC_LOCKS.with(|force| force.set(atomic));
    let cache = Cache::<PerCpu>::new(&CacheConfig::new(64).with_sheaf_capacity(8)).expect("config");
    FORCE_ATOMIC_LOCKS.with(|force| force.set(false));
    let cache = &cache;
    std::thread::scope(|s| {
        // The hand-over thread takes `rcu_free` sheaves once a tick: retried until the holder
        // finds some left in the slot when it takes the lock.
        for attempt in 0.. {
            assert!(
                attempt < 50,
                "the hand-over thread always emptied the slot first"
            );
            // Before the deferrals: the hand-over thread may complete them before the barrier.
            let completed = counter(cache, "rcu_objects_completed");
            let deferrer = s.spawn(move || {
                assert!(pin(cpu), "pinning to CPU {cpu}");
                let objects: Vec<NonNull<u8>> = (0..DEFERRED)
                    .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
                    .collect();
                for object in objects {
                    // SAFETY: allocated above, freed once, not used afterwards.
                    unsafe { cache.free_deferred(object) };
                }
            });
            deferrer.join().unwrap();
            let (held_tx, held_rx) = mpsc::channel();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let holder = s.spawn(move || {
                assert!(pin(cpu), "pinning to CPU {cpu}");
                let slots = cache.core().slots();
                let slot = loop {
                    if let Some(slot) = slots.acquire() {
                        break slot;
                    }
                    std::thread::yield_now();
                };
                let in_slot = slots.deferred_in_slot_of(&slot);
                held_tx.send(in_slot).unwrap();
                // Descheduled with the lock held, until the test lets it go.
                let _ = release_rx.recv();
                drop(slot);
            });
            let in_slot = held_rx.recv().unwrap();
            if in_slot == 0 {
                drop(release_tx);
                holder.join().unwrap();
                cache.barrier();
                continue;
            }
            let shrinker = shrink.then(|| {
                let shrinker = s.spawn(move || cache.shrink());
                // Until it has taken the `rcu_free` sheaves (or the hand-over thread has).
                let start = Instant::now();
                while counter(cache, "rcu_sheaf_submitted") < 3 && start.elapsed() < WATCHDOG {
                    std::thread::sleep(Duration::from_millis(1));
                }
                shrinker
            });
            let (done_tx, done_rx) = mpsc::channel();
            let waiter = s.spawn(move || {
                let start = Instant::now();
                cache.barrier();
                done_tx.send(start.elapsed()).unwrap();
            });
            let outcome = done_rx.recv_timeout(WATCHDOG);
            // Released either way, so that a failing run ends.
            drop(release_tx);
            holder.join().unwrap();
            waiter.join().unwrap();
            if let Some(shrinker) = shrinker {
                shrinker.join().unwrap();
            }
            let waited = outcome.unwrap_or_else(|_| {
                panic!(
                    "still waiting after {WATCHDOG:?} for a descheduled slot holder \
                     ({in_slot} deferred objects in its slot)"
                )
            });
            assert!(
                counter(cache, "rcu_objects_completed") >= completed + in_slot as u64,
                "the slot's {in_slot} deferred objects did not complete"
            );
            cache.barrier();
            cache.shrink();
            assert!(cache.check_invariants());
            assert_eq!(cache.stats().live_objects, Some(0));
            return waited;
        }
        unreachable!()
    })
}

#[test]
fn c_defer_3_barrier_with_a_descheduled_slot_holder() {
    let waited = descheduled_holder(false, false);
    eprintln!("barrier with a descheduled slot holder: {waited:?}");
}

#[test]
fn c_defer_3_barrier_with_a_descheduled_slot_holder_compare_exchange_locks() {
    let waited = descheduled_holder(true, false);
    eprintln!("barrier with a descheduled slot holder (compare-exchange locks): {waited:?}");
}

#[test]
fn c_conc_4_shrink_with_a_descheduled_slot_holder() {
    let waited = descheduled_holder(false, true);
    eprintln!("barrier beside a shrink, with a descheduled slot holder: {waited:?}");
}
