//! C-DEFER-3 and C-CONC-4 with per-CPU slots: a thread that holds a CPU slot's lock and is
//! descheduled (parked here with the lock held, as a slow path preempted in the middle would
//! be) holds up no barrier, and a shrink's hand-over of `rcu_free` sheaves does not wait for
//! it either. The deferred frees made on that CPU before the barrier began complete while the
//! holder still holds the slot. A shrink and an accounting check do not wait for the holder
//! either: they leave its slot as it is. With restartable sequences the same holds for a
//! thread parked inside a deferred free's slow path on that CPU: it holds no lock there.
//!
//! And the converse: a thread parked in a page source that sleeps, in a prefilled sheaf's
//! refill (per-CPU) or giving back the slabs an adoption emptied (per-thread), does not hold
//! its slot meanwhile, so the other threads and a shrink find it free.

use std::cell::Cell;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use object_alloc::{AllocFlags, CacheConfig};

use super::per_cpu::{AFTER_RCU_START, BEFORE_RCU_START, FORCE_ATOMIC_LOCKS};
use super::tests::{counter, pin};
use crate::{Cache, PerCpu};

/// How long the barrier may take before the test gives up on it: far beyond a grace period
/// on a loaded machine, far below "until the holder runs again".
const WATCHDOG: Duration = Duration::from_secs(5);

/// After every object was freed: a barrier and a shrink leave no live object and no slab,
/// and the accounting check runs (no slot is held any more).
fn assert_everything_returned<S: crate::SlotStrategy>(cache: &Cache<S>) {
    cache.barrier();
    cache.shrink();
    assert!(cache.check_invariants(), "the equation was not checked");
    assert_eq!(cache.stats().live_objects, Some(0));
    assert_eq!(
        cache.stats().slab_bytes,
        Some(0),
        "slabs held after a shrink"
    );
}

/// Sheaves of 8; 19 deferred frees: two full `rcu_free` sheaves waiting on the slot and a
/// partly filled one. Then another thread on the same CPU takes the slot's lock and parks;
/// a barrier runs on a third thread under a watchdog. With `atomic` the slots are locked by
/// compare-exchange (the fallback where restartable sequences are unavailable), and the
/// deferred frees are made one by one, with no sheaf in the slot. With
/// `shrink`, a shrink runs on a fourth thread first: it submits the `rcu_free` sheaves and
/// then tries the held slot's `main` and `spare` for a while, and the barrier must not wait
/// for it.
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
            if atomic {
                // Where no sequence serves, deferred frees take no sheaf (and no lock): each
                // is deferred on its own, and the barrier finds it in a queue.
                assert_eq!(
                    in_slot, 0,
                    "a deferred free took a sheaf under compare-exchange locks"
                );
            } else if in_slot == 0 {
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
    // Without sequences every deferred free goes on its own, and no sheaf waits in a slot:
    // the `_compare_exchange_locks` variant tests that path.
    if !super::tests::sequences_usable() {
        return;
    }
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
    // As for the barrier: without sequences no sheaf waits in a slot.
    if !super::tests::sequences_usable() {
        return;
    }
    let waited = descheduled_holder(false, true);
    eprintln!("barrier beside a shrink, with a descheduled slot holder: {waited:?}");
}

/// What [`shrink_beside_a_parked_holder`] measured on the checking thread.
struct BesideHolder {
    /// How long `shrink` took.
    shrink: Duration,
    /// How long `check_invariants` took, and what it returned.
    check: Duration,
    checked: bool,
}

/// C-CONC-4 for `shrink` and the accounting check: a thread leaves objects in its CPU slot's
/// `main` and `spare`, then takes the slot's main lock (as a slow path does) and parks with
/// it, as a thread preempted or stopped there would be. A shrink and an accounting check on
/// another thread return under a watchdog without it; the check says it did not check. Once
/// the holder lets go, a barrier and a shrink reach the slot: the equation is checked and,
/// everything freed, the cache holds no slab (C-OBJ-5). With `atomic` the slots are locked by
/// compare-exchange.
fn shrink_beside_a_parked_holder(atomic: bool) -> BesideHolder {
    let cpu = slab::cpu::current_cpu(slab::cpu::cpu_source());
    FORCE_ATOMIC_LOCKS.with(|force| force.set(atomic));
    let cache = Cache::<PerCpu>::new(&CacheConfig::new(64).with_sheaf_capacity(8)).expect("config");
    FORCE_ATOMIC_LOCKS.with(|force| force.set(false));
    let cache = &cache;
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    let kept = std::thread::scope(|s| {
        let holder = s.spawn(move || {
            assert!(pin(cpu), "pinning to CPU {cpu}");
            let objects: Vec<NonNull<u8>> = (0..20)
                .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
                .collect();
            let (kept, freed) = objects.split_at(5);
            for &object in freed {
                // SAFETY: allocated above, freed once, not used afterwards.
                unsafe { cache.free(object) };
            }
            let slots = cache.core().slots();
            let slot = loop {
                if let Some(slot) = slots.acquire() {
                    break slot;
                }
                std::thread::yield_now();
            };
            held_tx.send(()).unwrap();
            // Descheduled with the lock held, until the test lets it go.
            let _ = release_rx.recv();
            drop(slot);
            kept.iter().map(|o| o.as_ptr() as usize).collect::<Vec<_>>()
        });
        held_rx.recv().unwrap();
        let checker = s.spawn(move || {
            let start = Instant::now();
            cache.shrink();
            let shrink = start.elapsed();
            let start = Instant::now();
            let checked = cache.check_invariants();
            let _ = done_tx.send(BesideHolder {
                shrink,
                check: start.elapsed(),
                checked,
            });
        });
        let outcome = done_rx.recv_timeout(WATCHDOG);
        // Released either way, so that a failing run ends.
        drop(release_tx);
        let kept = holder.join().unwrap();
        checker.join().unwrap();
        let outcome = outcome.unwrap_or_else(|_| {
            panic!("shrink or check_invariants still waiting after {WATCHDOG:?} for a parked slot holder")
        });
        assert!(
            !outcome.checked,
            "the accounting check counted a slot that an operation holds"
        );
        (kept, outcome)
    });
    let (kept, outcome) = kept;
    for object in kept {
        // SAFETY: allocated by the holder from this cache, handed over, freed once.
        unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
    }
    assert_everything_returned(cache);
    outcome
}

#[test]
fn c_conc_4_shrink_and_check_beside_a_parked_slot_holder() {
    let waited = shrink_beside_a_parked_holder(false);
    eprintln!(
        "beside a parked slot holder: shrink {:?}, check {:?}",
        waited.shrink, waited.check
    );
}

#[test]
fn c_conc_4_shrink_and_check_beside_a_parked_slot_holder_compare_exchange_locks() {
    let waited = shrink_beside_a_parked_holder(true);
    eprintln!(
        "beside a parked slot holder (compare-exchange locks): shrink {:?}, check {:?}",
        waited.shrink, waited.check
    );
}

/// Pages whose next `alloc_chunk` after [`ParkingPages::arm`] (or next `free_chunk` after
/// [`ParkingPages::arm_free`]) parks its caller until [`ParkingPages::open`] (or 10 s, so
/// that a failing test ends): a page source that sleeps.
#[derive(Debug, Default)]
struct ParkingPages {
    inner: slab::MmapPages,
    armed: std::sync::atomic::AtomicBool,
    armed_free: std::sync::atomic::AtomicBool,
    /// (a caller is parked inside, the gate is open)
    state: std::sync::Mutex<(bool, bool)>,
    changed: std::sync::Condvar,
}

impl ParkingPages {
    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn arm_free(&self) {
        self.armed_free
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Parks the caller until the gate opens (at most 10 s).
    fn park(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(10), |(_, open)| !*open)
            .unwrap();
        state.0 = false;
    }

    fn is_armed(&self) -> bool {
        self.armed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a caller is parked inside now.
    fn parked(&self) -> bool {
        self.state.lock().unwrap().0
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

// SAFETY: every chunk comes from `inner` and goes back to it.
unsafe impl object_alloc::PageSource for ParkingPages {
    fn name(&self) -> &'static str {
        "parking"
    }

    fn alloc_chunk(&self, bytes: usize) -> Result<NonNull<u8>, object_alloc::PageError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.park();
        }
        self.inner.alloc_chunk(bytes)
    }

    unsafe fn free_chunk(&self, chunk: NonNull<u8>, bytes: usize) {
        if self
            .armed_free
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.park();
        }
        // SAFETY: forwarded: the chunk came from `inner`.
        unsafe { self.inner.free_chunk(chunk, bytes) }
    }

    fn stats(&self) -> object_alloc::PageSourceStats {
        self.inner.stats()
    }
}

/// C-CONC-4 for a prefilled sheaf's refill: a thread whose refill needs a new slab parks in
/// the page source. Meanwhile another thread on the same CPU allocates, frees, prefills and
/// returns without finding the CPU slot busy, and a shrink reaches every slot: the refill
/// called the page source with the slot released. Once the page source returns, the refill
/// has its count.
#[test]
fn c_conc_4_a_thread_parked_in_a_prefill_refill_holds_up_no_one() {
    use std::sync::Arc;

    let cpu = slab::cpu::current_cpu(slab::cpu::cpu_source());
    let pages = Arc::new(ParkingPages::default());
    let config = CacheConfig::new(64)
        .with_sheaf_capacity(8)
        .with_page_source(pages.clone());
    let cache = Cache::<PerCpu>::new(&config).expect("config");
    let (cache, pages) = (&cache, &*pages);
    assert!(pin(cpu), "pinning to CPU {cpu}");
    std::thread::scope(|s| {
        let refiller = s.spawn(move || {
            assert!(pin(cpu), "pinning to CPU {cpu}");
            let mut objects = Vec::new();
            let mut sheaf = cache.prefill(AllocFlags::empty(), 8).expect("memory");
            // Emptied and refilled until a refill needs a new slab and parks there.
            for _ in 0..1000 {
                while let Some(object) = sheaf.alloc(AllocFlags::empty()) {
                    objects.push(object.as_ptr() as usize);
                }
                pages.arm();
                sheaf.refill(AllocFlags::empty(), 8).expect("memory");
                if !pages.is_armed() {
                    break;
                }
            }
            let size = sheaf.size();
            while let Some(object) = sheaf.alloc(AllocFlags::empty()) {
                objects.push(object.as_ptr() as usize);
            }
            (size, objects)
        });
        let start = Instant::now();
        while !pages.parked() {
            assert!(
                start.elapsed() < WATCHDOG && !refiller.is_finished(),
                "no refill reached the page source"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // A fork made by another test of this process holds every slot of every cache for a
        // moment (`slab::fork`): tried a few times, a slot that the parked thread held would
        // be busy every time.
        let mut slot_busy = 0;
        for _ in 0..20 {
            let before = counter(cache, "cpu_slot_busy");
            let object = cache.alloc(AllocFlags::empty()).expect("memory");
            // SAFETY: allocated just above, freed once.
            unsafe { cache.free(object) };
            let mut sheaf = cache.prefill(AllocFlags::empty(), 5).expect("memory");
            let object = sheaf.alloc(AllocFlags::empty()).expect("reserved");
            drop(sheaf);
            // SAFETY: allocated from the prefilled sheaf, freed once.
            unsafe { cache.free(object) };
            slot_busy = counter(cache, "cpu_slot_busy") - before;
            if slot_busy == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let unreached = cache.core().shrink();
        let still_parked = pages.parked();
        pages.open();
        let (size, objects) = refiller.join().unwrap();
        assert!(
            still_parked,
            "the page source's gate timed out: something waited"
        );
        assert_eq!(
            slot_busy, 0,
            "the CPU slot stayed held through the refill's page source call"
        );
        assert_eq!(unreached, 0, "the shrink did not reach the CPU slot");
        assert_eq!(size, 8, "the refill did not reach its count");
        for object in objects {
            // SAFETY: allocated by the refilling thread from this cache, handed over, freed
            // once.
            unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
        }
    });
    assert_everything_returned(cache);
}

/// C-CONC-4 for the adoption an allocation makes with its own per-thread slot held: an
/// exited thread left two full sheaves over many slabs; the next allocation of another thread
/// adopts them, and the slabs their flush empties go back to the page source, which parks
/// that thread. It gives them back after letting its slot go: a shrink from a third thread
/// meanwhile finds no adoption in transit and takes the parked thread's slot (it is asleep,
/// outside every operation), so it reaches everything.
#[test]
fn c_conc_4_a_thread_parked_releasing_adopted_slabs_holds_its_slot_no_longer() {
    use std::sync::Arc;

    use crate::PerThread;

    let pages = Arc::new(ParkingPages::default());
    let config = CacheConfig::new(512)
        .with_sheaf_capacity(256)
        .with_barn_limits(0, 0)
        .with_page_source(pages.clone());
    let cache = Cache::<PerThread>::new(&config).expect("config");
    let (cache, pages) = (&cache, &*pages);
    std::thread::scope(|s| {
        s.spawn(|| {
            // With the slot emptied first, the first half freed fills `spare` and the second
            // `main`: two full sheaves over many slabs, left to adoption at the exit.
            let objects: Vec<NonNull<u8>> = (0..512)
                .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
                .collect();
            cache.shrink();
            for &object in &objects {
                // SAFETY: allocated above, freed once.
                unsafe { cache.free(object) };
            }
        });
    });
    // A scoped thread's thread-local destructors, which orphan its slot, may still be
    // running when the scope returns.
    let start = Instant::now();
    while !cache.core().slots().has_orphans() {
        assert!(start.elapsed() < WATCHDOG, "the exited thread left no slot");
        std::thread::sleep(Duration::from_millis(1));
    }
    pages.arm_free();
    std::thread::scope(|s| {
        let adopter = s.spawn(|| {
            // Its slot's `main` is empty: the refill adopts the exited thread's slot.
            cache.alloc(AllocFlags::empty()).expect("memory").as_ptr() as usize
        });
        let start = Instant::now();
        while !pages.parked() {
            assert!(
                start.elapsed() < WATCHDOG && !adopter.is_finished(),
                "the adoption gave no slab back"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let unreached = cache.core().shrink();
        let still_parked = pages.parked();
        pages.open();
        let object = adopter.join().unwrap();
        assert!(
            still_parked,
            "the page source's gate timed out: something waited"
        );
        assert_eq!(
            unreached, 0,
            "the shrink did not reach the slot of a thread parked in the page source"
        );
        // SAFETY: allocated by the adopting thread from this cache, handed over, freed once.
        unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
    });
    assert_everything_returned(cache);
}

/// C-DEFER-3 and C-CONC-4 with restartable sequences: a thread parked inside a deferred
/// free's slow path, at the point where it holds a prepared sheaf with its object in it and
/// is about to put it in place (a preemption can land there), holds up no barrier. The
/// deferred frees made before the barrier began complete while it is parked; its own free
/// completes after it resumes, the object neither lost nor freed twice.
#[test]
fn c_defer_3_barrier_with_an_owner_parked_in_a_deferred_free() {
    barrier_with_an_owner_parked_at(&BEFORE_RCU_START, 3, false);
}

/// C-DEFER-3 and C-CONC-4 with restartable sequences: a thread parked right after its
/// deferred free started a sheaf, which sealed the full ones before it, and before it
/// stamped or collected them, holds up no barrier: the sealed sheaves stay in the slot
/// (the stamped chain), where the barrier seals, stamps and completes them, together with
/// the parked free's own object, already in the slot. With four full sheaves chained first,
/// the deferred-free path used to take them out of the slot as a group under a reservation
/// in this very free, and hand them to a grace period only after this point, so a barrier
/// waited for the parked thread there.
#[test]
fn c_defer_3_barrier_with_an_owner_parked_after_sealing_sheaves() {
    barrier_with_an_owner_parked_at(&AFTER_RCU_START, 4, true);
}

/// The two tests above: an owner pinned to this CPU defers `full` sheaves' worth, then
/// defers until a free reaches `hook` (run where a sheaf is started), where it parks until
/// a barrier from another thread has returned (or the watchdog fires). With
/// `object_in_slot`, the parked free's object is already in the slot when it parks, and the
/// barrier must complete it too.
fn barrier_with_an_owner_parked_at(
    hook: &'static std::thread::LocalKey<super::per_cpu::Hook>,
    full: usize,
    object_in_slot: bool,
) {
    if !super::tests::sequences_usable() {
        return;
    }
    const CAPACITY: usize = 8;
    let cpu = slab::cpu::current_cpu(slab::cpu::cpu_source());
    let cache =
        Cache::<PerCpu>::new(&CacheConfig::new(64).with_sheaf_capacity(CAPACITY)).expect("config");
    let cache = &cache;
    std::thread::scope(|s| {
        let (parked_tx, parked_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let owner = s.spawn(move || {
            assert!(pin(cpu), "pinning to CPU {cpu}");
            // Full sheaves, then deferred frees until one starts a sheaf (the hand-over
            // thread may seal the chain at any point, so not always the next).
            let objects: Vec<NonNull<u8>> = (0..(full + 1) * CAPACITY + 2)
                .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
                .collect();
            let (early, late) = objects.split_at(full * CAPACITY);
            let late_len = late.len();
            for &object in early {
                // SAFETY: allocated above, freed once, not used afterwards.
                unsafe { cache.free_deferred(object) };
            }
            let parked = Rc::new(Cell::new(false));
            let current = Rc::new(Cell::new(0));
            let mut once = Some((parked_tx, release_rx));
            let (flag, index) = (Rc::clone(&parked), Rc::clone(&current));
            hook.with(|hook| {
                *hook.borrow_mut() = Some(Box::new(move || {
                    if let Some((parked_tx, release_rx)) = once.take() {
                        flag.set(true);
                        // The objects still live: those not freed yet, and this free's unless
                        // it is in the slot already.
                        let pending = late_len - index.get() - usize::from(object_in_slot);
                        parked_tx.send(pending).unwrap();
                        // Descheduled here until the test lets it go.
                        let _ = release_rx.recv();
                    }
                }));
            });
            let mut freed = 0;
            for (i, &object) in late.iter().enumerate() {
                current.set(i);
                // SAFETY: as above.
                unsafe { cache.free_deferred(object) };
                freed += 1;
                if parked.get() {
                    break;
                }
            }
            hook.with(|hook| *hook.borrow_mut() = None);
            assert!(parked.get(), "no deferred free started a sheaf");
            for &object in &late[freed..] {
                // SAFETY: allocated above, not freed yet.
                unsafe { cache.free(object) };
            }
        });
        let expected_live = parked_rx
            .recv_timeout(WATCHDOG)
            .expect("the owner reached the sequence that starts a sheaf");
        let (done_tx, done_rx) = mpsc::channel();
        let waiter = s.spawn(move || {
            let start = Instant::now();
            cache.barrier();
            let waited = start.elapsed();
            // Live: the objects the owner has not freed yet (and the parked free's, unless it
            // is in the slot); every other deferred free was made before the barrier began.
            done_tx.send((waited, cache.stats().live_objects)).unwrap();
        });
        let outcome = done_rx.recv_timeout(WATCHDOG);
        // Released either way, so that a failing run ends.
        drop(release_tx);
        owner.join().unwrap();
        waiter.join().unwrap();
        let (waited, live) = outcome.unwrap_or_else(|_| {
            panic!("still waiting after {WATCHDOG:?} for an owner parked in a deferred free")
        });
        eprintln!("barrier with an owner parked in a deferred free: {waited:?}");
        assert_eq!(
            live,
            Some(expected_live as u64),
            "objects live after the barrier"
        );
        cache.barrier();
        assert!(cache.check_invariants());
        assert_eq!(cache.stats().live_objects, Some(0));
    });
}
