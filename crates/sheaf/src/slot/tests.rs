//! Re-entry from a page source, and the slot's size.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use object_alloc::{AllocFlags, CacheConfig, PageError, PageSource, PageSourceStats};

use crate::{Cache, PerCpu, PerThread, SlotStrategy};

/// Pins the calling thread to CPU `cpu`; `false` if that is refused.
pub(super) fn pin(cpu: usize) -> bool {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).is_ok()
}

type Hook = Box<dyn Fn() + Send + Sync>;

/// Pages that run a hook (which calls back into caches) before handing out a chunk, as
/// a user's page source may: the hook runs while the caller's slot is held.
#[derive(Default)]
struct ReenteringPages {
    inner: slab::MmapPages,
    hook: OnceLock<Hook>,
}

impl std::fmt::Debug for ReenteringPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReenteringPages")
    }
}

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every chunk comes from `inner` and goes back to it.
unsafe impl PageSource for ReenteringPages {
    fn name(&self) -> &'static str {
        "reentering"
    }

    fn alloc_chunk(&self, bytes: usize) -> Result<NonNull<u8>, PageError> {
        if let Some(hook) = self.hook.get()
            && !IN_HOOK.with(|flag| flag.replace(true))
        {
            hook();
            IN_HOOK.with(|flag| flag.set(false));
        }
        self.inner.alloc_chunk(bytes)
    }

    unsafe fn free_chunk(&self, chunk: NonNull<u8>, bytes: usize) {
        // SAFETY: forwarded: the chunk came from `inner` through `alloc_chunk`.
        unsafe { self.inner.free_chunk(chunk, bytes) }
    }

    fn stats(&self) -> PageSourceStats {
        self.inner.stats()
    }
}

/// Whether restartable sequences are in use in this process (so that a test of the paths
/// they serve has something to test); fails under `SHEAF_REQUIRE_RSEQ=1` when they are not,
/// and otherwise says on stderr that the caller skips.
pub(super) fn sequences_usable() -> bool {
    let usable = matches!(slab::rseq::support(), slab::rseq::Support::Rseq { .. });
    assert!(
        usable || std::env::var_os("SHEAF_REQUIRE_RSEQ").is_none_or(|v| v != "1"),
        "SHEAF_REQUIRE_RSEQ=1 but restartable sequences are unusable"
    );
    if !usable {
        eprintln!("skipped: restartable sequences unsupported here");
    }
    usable
}

/// A counter of the cache's stats, 0 when it is not there.
pub(super) fn counter(cache: &Cache<impl SlotStrategy>, name: &str) -> u64 {
    cache.stats().counters.get(name).copied().unwrap_or(0)
}

/// While a slow path calls the page source, the page source allocates and frees on the
/// same cache and on another one: the operations are served (the allocation paths release
/// the slot around the page source, and a slot still held would be found busy), and every
/// object stays accounted.
fn reentry_is_served_without_the_held_slot<S: SlotStrategy>() {
    let pages = Arc::new(ReenteringPages::default());
    let config = CacheConfig::new(64).with_page_source(pages.clone());
    let outer: &'static Cache<S> = Box::leak(Box::new(Cache::new(&config).unwrap()));
    let other: &'static Cache<S> = Box::leak(Box::new(Cache::new(&CacheConfig::new(64)).unwrap()));
    let reentered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = reentered.clone();
    let hook: Hook = Box::new(move || {
        let a = outer.alloc(AllocFlags::ZERO).expect("memory");
        let b = other.alloc(AllocFlags::empty()).expect("memory");
        // SAFETY: allocated just above from these caches, freed once.
        unsafe {
            outer.free(a);
            other.free(b);
        }
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(pages.hook.set(hook).is_ok());

    // Touch `other` first so that its slot exists and is the thread's cached one.
    let warm = other.alloc(AllocFlags::empty()).unwrap();
    // SAFETY: allocated just above, freed once.
    unsafe { other.free(warm) };
    // The first bulk allocation of `outer` takes new slabs (with its slot released, as
    // every allocation path now calls the page source): the hook runs.
    let mut bulk = [std::mem::MaybeUninit::uninit(); 10];
    outer.alloc_bulk(AllocFlags::empty(), &mut bulk).unwrap();
    assert!(reentered.load(std::sync::atomic::Ordering::Relaxed) > 0);
    // SAFETY: every entry was written by the successful `alloc_bulk`; freed once.
    unsafe { outer.free_bulk(&bulk.map(|o| o.assume_init())) };
    let objects: Vec<_> = (0..200)
        .map(|_| outer.alloc(AllocFlags::empty()).unwrap())
        .collect();
    assert!(reentered.load(std::sync::atomic::Ordering::Relaxed) > 0);
    for object in objects {
        // SAFETY: allocated above from `outer`, freed once.
        unsafe { outer.free(object) };
    }
    assert_eq!(outer.stats().live_objects, Some(0));
    assert_eq!(other.stats().live_objects, Some(0));
    outer.check_invariants();
    other.check_invariants();
    // After the re-entry the fast path is usable again.
    let again = outer.alloc(AllocFlags::empty()).unwrap();
    let before = counter(outer, "alloc_fastpath");
    // SAFETY: allocated just above, freed once.
    unsafe { outer.free(again) };
    let next = outer.alloc(AllocFlags::empty()).unwrap();
    assert_eq!(counter(outer, "alloc_fastpath"), before + 1);
    // SAFETY: as above.
    unsafe { outer.free(next) };
}

/// What the page source of [`per_cpu_page_source_shrinks_and_checks_its_own_cache`] saw,
/// per re-entry: the check's result, and how long the shrink and the check took together.
type Reentries = std::sync::Mutex<Vec<(bool, std::time::Duration)>>;

/// A per-CPU cache's page source, while armed, shrinks and checks that same cache, as a page
/// source under memory pressure may (C-CONC-4): from inside an allocation's refill, which
/// calls the page source with the CPU slot released, and from inside a call to the slabs made
/// with the CPU slot held by the calling thread. No operation calls the page source with its
/// slot held any more; the test holds the slot as an operation does and takes new slabs
/// beneath it, so that the page source meets a slot its own caller holds. Both return: the
/// held slot is left as it is, and the check says it did not check. The operations run on
/// another thread under a deadline, so that a wait for the caller's own slot fails the test
/// instead of hanging the run.
#[test]
fn per_cpu_page_source_shrinks_and_checks_its_own_cache() {
    use std::mem::MaybeUninit;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let pages = Arc::new(ReenteringPages::default());
    let config = CacheConfig::new(64)
        .with_sheaf_capacity(8)
        .with_page_source(pages.clone());
    let cache: &'static Cache<PerCpu> = Box::leak(Box::new(Cache::new(&config).unwrap()));
    let armed: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let seen: &'static Reentries = Box::leak(Box::default());
    let hook: Hook = Box::new(move || {
        if armed.load(Ordering::SeqCst) {
            let start = Instant::now();
            cache.shrink();
            let checked = cache.check_invariants();
            seen.lock().unwrap().push((checked, start.elapsed()));
        }
    });
    assert!(pages.hook.set(hook).is_ok());
    let seen_now = || seen.lock().unwrap().clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The first allocation of the cache takes a new slab, with the slot released.
        armed.store(true, Ordering::SeqCst);
        let first = cache.alloc(AllocFlags::empty()).expect("memory");
        armed.store(false, Ordering::SeqCst);
        let in_alloc = seen_now();
        // The CPU slot held as a slow path holds it, and more objects than the slabs have
        // free taken beneath it: new slabs, with the slot held.
        let slot = loop {
            if let Some(slot) = cache.core().slots().acquire() {
                break slot;
            }
            std::thread::yield_now();
        };
        let node = slot.node();
        let mut taken = vec![MaybeUninit::uninit(); 1000];
        armed.store(true, Ordering::SeqCst);
        cache
            .core()
            .pool()
            .alloc_bulk(node, true, &mut taken)
            .expect("memory");
        armed.store(false, Ordering::SeqCst);
        drop(slot);
        // SAFETY: every entry was written by the successful `alloc_bulk`.
        let taken: Vec<NonNull<u8>> = taken.iter().map(|o| unsafe { o.assume_init() }).collect();
        // SAFETY: free objects of this cache taken from its slabs just above, each given back
        // once; no counter counted them out.
        unsafe { cache.core().pool().free_bulk(&taken) };
        let in_held = seen_now()[in_alloc.len()..].to_vec();
        done_tx
            .send((in_alloc, in_held, first.as_ptr() as usize))
            .unwrap();
    });
    let (in_alloc, in_held, first) = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a shrink or check from the page source waited for the slot its caller holds");
    eprintln!(
        "shrink and check from the page source: {in_alloc:?} in an allocation, {in_held:?} \
         beneath a held slot"
    );
    assert!(!in_alloc.is_empty(), "the first allocation took no slab");
    assert!(
        in_alloc.iter().all(|&(checked, _)| checked),
        "with no slot held the check is made"
    );
    assert!(
        !in_held.is_empty(),
        "no new slab was taken beneath the held slot"
    );
    assert!(
        in_held.iter().all(|&(checked, _)| !checked),
        "the check counted a slot that its caller holds"
    );
    // SAFETY: allocated by the other thread from this cache, handed over, freed once.
    unsafe { cache.free(NonNull::new(first as *mut u8).unwrap()) };
    cache.barrier();
    cache.shrink();
    assert!(cache.check_invariants());
    assert_eq!(cache.stats().live_objects, Some(0));
    assert_eq!(cache.stats().slab_bytes, Some(0));
}

/// A padded per-CPU slot is 256 bytes: the fast path finds it with one shift.
#[test]
fn a_padded_slot_is_256_bytes() {
    assert_eq!(
        std::mem::size_of::<crossbeam_utils::CachePadded<crate::slot::Slot>>(),
        256
    );
}

#[test]
fn per_thread_reentry_is_served_without_the_held_slot() {
    reentry_is_served_without_the_held_slot::<PerThread>();
}

#[test]
fn per_cpu_reentry_is_served_without_the_held_slot() {
    reentry_is_served_without_the_held_slot::<PerCpu>();
}

// The per-thread slot cache: `last`, then a direct-mapped table of (cache id, slot) entries.

use super::last_slot::{ENTRIES, LAST_SLOTS, LIST_LOOKUPS, REVOKED, entry_index};
use super::registry::THREAD_SLOTS;

/// Times this thread's per-thread lookup missed both levels and searched its list.
fn slow_lookups() -> u64 {
    LIST_LOOKUPS.with(std::cell::Cell::get)
}

fn id_of(cache: &Cache<PerThread>) -> u64 {
    cache.core().slots().id
}

/// What the calling thread's table entry for `cache` holds: (id, slot).
fn entry_of(cache: &Cache<PerThread>) -> (u64, *const super::Slot) {
    LAST_SLOTS.with(|slots| {
        let (id, slot) = slots.entry(id_of(cache)).get();
        (id, slot.cast_const())
    })
}

/// What the calling thread's `last` holds: (id, slot).
fn last() -> (u64, *const super::Slot) {
    LAST_SLOTS.with(|slots| {
        let (id, slot) = slots.last.get();
        (id, slot.cast_const())
    })
}

fn new_cache() -> Cache<PerThread> {
    Cache::new(&CacheConfig::new(64)).unwrap()
}

/// `n` caches that use `n` different entries (other tests create caches at the same time,
/// so consecutive creations need not have consecutive ids).
fn caches_with_distinct_entries(n: usize) -> Vec<Cache<PerThread>> {
    assert!(n <= ENTRIES);
    let mut caches: Vec<Cache<PerThread>> = Vec::new();
    while caches.len() < n {
        let cache = new_cache();
        if caches
            .iter()
            .all(|c| entry_index(id_of(c)) != entry_index(id_of(&cache)))
        {
            caches.push(cache);
        }
    }
    caches
}

/// A cache whose entry is `cache`'s.
fn colliding_with(cache: &Cache<PerThread>) -> Cache<PerThread> {
    loop {
        let other = new_cache();
        if entry_index(id_of(&other)) == entry_index(id_of(cache)) {
            return other;
        }
    }
}

fn pair(cache: &Cache<PerThread>) {
    let object = cache.alloc(AllocFlags::empty()).expect("memory");
    // SAFETY: allocated just above from this cache, freed once.
    unsafe { cache.free(object) };
}

/// Runs `f` on a new thread (a fresh slot cache) and returns its result.
fn on_new_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// A thread alternating between as many caches as the table has entries (each with an entry
/// of its own) finds every slot on the fast path after the first use of each.
#[test]
fn per_thread_alternating_caches_each_keep_their_entry() {
    let caches = caches_with_distinct_entries(ENTRIES);
    on_new_thread(|| {
        caches.iter().for_each(pair);
        let before = slow_lookups();
        for _ in 0..50 {
            caches.iter().for_each(pair);
        }
        assert_eq!(
            slow_lookups(),
            before,
            "a switch between caches missed the table"
        );
        for cache in &caches {
            assert_eq!(entry_of(cache).0, id_of(cache));
            assert_eq!(counter(cache, "alloc_fastpath"), 51);
        }
    });
    for cache in &caches {
        assert_eq!(cache.stats().live_objects, Some(0));
        assert!(cache.check_invariants());
    }
}

/// Two caches of one entry evict each other: each switch takes the slow lookup, and both
/// stay correct.
#[test]
fn per_thread_colliding_caches_share_an_entry_and_stay_correct() {
    let a = new_cache();
    let b = colliding_with(&a);
    on_new_thread(|| {
        pair(&a);
        pair(&b);
        let before = slow_lookups();
        for _ in 0..20 {
            let x = a.alloc(AllocFlags::empty()).unwrap();
            let y = b.alloc(AllocFlags::empty()).unwrap();
            // SAFETY: each allocated just above from its cache, freed once.
            unsafe {
                a.free(x);
                b.free(y);
            }
        }
        assert_eq!(slow_lookups(), before + 80);
        assert_eq!(entry_of(&b).0, id_of(&b));
    });
    for cache in [&a, &b] {
        assert_eq!(cache.stats().live_objects, Some(0));
        assert!(cache.check_invariants());
    }
}

/// While a slot is held (its table entry may name it too), every cache is served without a
/// slot, through its entry or not, the entries are left alone, and the release leaves the
/// held slot cached again.
#[test]
fn per_thread_a_held_slot_blocks_every_entry() {
    let a = new_cache();
    let colliding = colliding_with(&a);
    let other = caches_with_distinct_entries(2)
        .into_iter()
        .find(|c| entry_index(id_of(c)) != entry_index(id_of(&a)))
        .unwrap();
    on_new_thread(|| {
        pair(&other);
        pair(&a);
        let slot = entry_of(&a).1;
        let other_entry = entry_of(&other);
        assert_eq!(other_entry.0, id_of(&other));
        let held = a.core().slots().acquire().expect("the slot is free");
        assert_eq!(last(), (0, slot), "a hold marks `last`");
        for cache in [&colliding, &other, &a] {
            let busy = counter(cache, "cpu_slot_busy");
            pair(cache);
            assert!(counter(cache, "cpu_slot_busy") > busy, "served from a slot");
        }
        assert_eq!(last(), (0, slot), "the hold was overwritten");
        assert_eq!(entry_of(&a), (id_of(&a), slot));
        assert_eq!(entry_of(&other), other_entry);
        drop(held);
        assert_eq!(last(), (id_of(&a), slot));
        let before = slow_lookups();
        pair(&a);
        pair(&other);
        assert_eq!(slow_lookups(), before);
    });
    for cache in [&a, &colliding, &other] {
        assert_eq!(cache.stats().live_objects, Some(0));
        assert!(cache.check_invariants());
    }
}

/// A slot found in the table (`last` names another cache) is held through `last`, and its
/// release leaves it there.
#[test]
fn per_thread_a_slot_found_in_the_table_is_held_through_last() {
    let caches = caches_with_distinct_entries(2);
    let (a, b) = (&caches[0], &caches[1]);
    on_new_thread(|| {
        pair(a);
        pair(b);
        assert_eq!(last().0, id_of(b));
        let slot = entry_of(a).1;
        let held = a.core().slots().acquire().expect("the slot is free");
        assert_eq!(last(), (0, slot));
        let busy = counter(b, "cpu_slot_busy");
        pair(b);
        assert!(counter(b, "cpu_slot_busy") > busy);
        drop(held);
        assert_eq!(last(), (id_of(a), slot));
    });
    for cache in [a, b] {
        assert_eq!(cache.stats().live_objects, Some(0));
    }
}

/// A dropped cache's entry is never used again: a new cache of the same entry takes it, and
/// the thread's list drops dropped caches in batches, so that it stays short.
#[test]
fn per_thread_a_dropped_cache_leaves_its_entry_to_a_new_one() {
    on_new_thread(|| {
        let kept = new_cache();
        pair(&kept);
        let dropped = new_cache();
        pair(&dropped);
        let stale = entry_of(&dropped);
        assert_eq!(stale.0, id_of(&dropped));
        let heir = colliding_with(&dropped);
        drop(dropped);
        let object = heir.alloc(AllocFlags::empty()).unwrap();
        assert_ne!(
            entry_of(&heir).1,
            stale.1,
            "the dropped cache's slot was reused"
        );
        assert_eq!(entry_of(&heir).0, id_of(&heir));
        // SAFETY: allocated just above, freed once.
        unsafe { heir.free(object) };
        assert_eq!(heir.stats().live_objects, Some(0));
        for _ in 0..100 {
            pair(&new_cache());
        }
        let listed = THREAD_SLOTS.with(|slots| slots.entries.borrow().len());
        assert!(listed <= 16, "{listed} slots listed for 2 live caches");
        let before = slow_lookups();
        pair(&kept);
        pair(&heir);
        assert!(slow_lookups() - before <= 2);
        assert_eq!(kept.stats().live_objects, Some(0));
    });
}

/// A taker (a shrink on another thread) revokes the entry of its cache even when the owner
/// used another cache since: that entry is left alone, the revoked one sends the owner's
/// next operation on the cache through the slow path, and the objects are all accounted.
#[test]
fn per_thread_a_taker_revokes_an_entry_that_is_not_the_most_recent() {
    let caches = caches_with_distinct_entries(2);
    let (a, b) = (&caches[0], &caches[1]);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let owner = s.spawn(move || {
            let objects: Vec<_> = (0..20)
                .map(|_| a.alloc(AllocFlags::empty()).unwrap())
                .collect();
            for object in objects {
                // SAFETY: allocated above, freed once.
                unsafe { a.free(object) };
            }
            pair(b);
            ready_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            let (a_entry, b_entry, last) = (entry_of(a), entry_of(b), last());
            let before = slow_lookups();
            pair(b);
            let after_b = slow_lookups();
            pair(a);
            (
                a_entry.0,
                b_entry.0,
                last.0,
                after_b - before,
                slow_lookups() - after_b,
            )
        });
        ready_rx.recv().unwrap();
        // Let the owner fall asleep in `recv`, so that the shrink can take its slot.
        std::thread::sleep(std::time::Duration::from_millis(20));
        a.shrink();
        go_tx.send(()).unwrap();
        let (a_id, b_id, last_id, b_misses, a_misses) = owner.join().unwrap();
        assert_eq!(a_id, REVOKED, "the taker did not revoke the older entry");
        assert_eq!(b_id, id_of(b), "the taker touched another cache's entry");
        assert_eq!(
            last_id,
            id_of(b),
            "the taker touched `last`, which names another cache"
        );
        assert_eq!(b_misses, 0);
        assert_eq!(a_misses, 1);
    });
    for cache in [a, b] {
        assert_eq!(cache.stats().live_objects, Some(0));
        assert!(cache.check_invariants());
    }
}

/// A thread that exits with slots of several caches in its table (and one only in its
/// list, evicted by a colliding cache) leaves each as an orphan that its cache adopts.
#[test]
fn per_thread_exit_with_several_entries_orphans_every_slot() {
    let mut caches = caches_with_distinct_entries(5);
    let evicted = colliding_with(&caches[0]);
    caches.push(evicted);
    on_new_thread(|| {
        for cache in &caches {
            let objects: Vec<_> = (0..10)
                .map(|_| cache.alloc(AllocFlags::empty()).unwrap())
                .collect();
            for object in objects {
                // SAFETY: allocated above, freed once.
                unsafe { cache.free(object) };
            }
        }
        assert_ne!(entry_of(&caches[0]).0, id_of(&caches[0]), "not evicted");
    });
    for cache in &caches {
        assert_eq!(cache.core().slots().len(), 1, "the exited thread's slot");
        cache.shrink();
        assert_eq!(cache.core().slots().len(), 0, "the orphan was not adopted");
        assert_eq!(cache.stats().live_objects, Some(0));
        assert!(cache.check_invariants());
    }
}
