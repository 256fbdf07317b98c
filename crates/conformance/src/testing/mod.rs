//! The generic allocator test suite: the same short checks, run by `cargo test` on every design.
//!
//! Each function takes a design as a type parameter, builds its own caches (each on a fresh
//! `slab::LimitedPages`, as the conformance checks do), and panics with a message naming the
//! clause and the values involved when the design breaks it. The checks are short and
//! deterministic (a few thousand objects each), so they suit `cargo test` in debug builds; the
//! conformance suite ([`run`](crate::run)) is where clauses are checked under load, with
//! seeded fault injection and findings instead of panics. Tests of what one design alone does
//! live beside that design.
//!
//! Two macros expand to one `#[test]` per check, in the design's one integration-test binary:
//!
//! ```ignore
//! // tests/all/main.rs
//! mod generic {
//!     // Every design.
//!     conformance::allocator_tests!(my_design::MyCache);
//!     // Designs that take their pages from the page source, honour NOWAIT and count live
//!     // objects (the slab-based ones).
//!     conformance::page_source_tests!(my_design::MyCache);
//! }
//! ```
//!
//! What a check cannot observe it does not pretend to: live-object accounting is checked only
//! for designs whose [`Capabilities::tracks_live_objects`](object_alloc::Capabilities) is set,
//! page accounting only for designs that take pages from the page source, and a bulk
//! allocation's failure path only where a test can force a failure (a general-purpose allocator
//! cannot be made to fail on demand; see `object_alloc::bulk`'s tests for the shared failure
//! loop). The checks of [`page_source_tests!`](crate::page_source_tests) need all three
//! promises and refuse, by panicking, a design that does not make them.

use std::collections::HashSet;
use std::io::Read;
use std::mem::MaybeUninit;
use std::process::{Command, Stdio};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, PoisonError, RwLock, RwLockReadGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use object_alloc::{
    AllocError, AllocFlags, CacheConfig, DebugOptions, NodeMap, ObjectAlloc, PageSource, Prefill,
    rcu,
};

use crate::checks::Fixture;
use crate::objects::{self, Stamped};

/// Object sizes the layout checks cover, each with every alignment of [`ALIGNS`].
pub const SIZES: [usize; 4] = [8, 64, 256, 4096];
/// Alignments the layout checks cover.
pub const ALIGNS: [usize; 3] = [8, 64, 4096];
/// Further (size, alignment) pairs the layout checks cover: tiny, odd and large objects.
const MORE_LAYOUTS: [(usize, usize); 7] = [
    (1, 1),
    (24, 8),
    (100, 4),
    (192, 64),
    (256, 256),
    (3000, 16),
    (65536, 8),
];

/// Allocations after which a freed object is expected back: LIFO caches return it at once,
/// designs that batch frees (a page's local free list) within a page's worth of objects.
const REUSE_WINDOW: usize = 1 << 16;

/// How long a check run in a process of its own may take before it counts as hung.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment variable that tells a child test process which test it is there to run.
const ALONE: &str = "CONFORMANCE_TESTING_ALONE";

/// Held for reading by every check of the macros while it runs, and for writing while a check
/// runs in its own process, so that no other check of the suite loads the machine meanwhile.
static SUITE: RwLock<()> = RwLock::new(());

/// Held by each test of [`allocator_tests!`](crate::allocator_tests) and
/// [`page_source_tests!`](crate::page_source_tests) while it runs: a check that
/// [`in_own_process`] runs waits for these to end and keeps new ones from starting, so that
/// it runs as it would in a test binary of its own, on an otherwise idle suite.
pub fn suite_guard() -> RwLockReadGuard<'static, ()> {
    SUITE.read().unwrap_or_else(PoisonError::into_inner)
}

/// A cache of `A` over a fresh, unlimited `LimitedPages`.
fn new_cache<A: ObjectAlloc>(config: CacheConfig) -> Fixture<A> {
    Fixture::new(config)
}

/// Frees `objects`, waits for deferred frees and shrinks; then nothing is live (where the
/// design counts) and no page is held (where it takes pages from the page source) (C-OBJ-5).
fn release_all<A: ObjectAlloc>(fixture: &Fixture<A>, objects: &[NonNull<u8>]) {
    let cache = &fixture.cache;
    // SAFETY: the caller hands over live objects of `cache`, each once.
    unsafe { cache.free_bulk(objects) };
    cache.barrier();
    if A::CAPABILITIES.tracks_live_objects {
        assert_eq!(
            cache.stats().live_objects,
            Some(0),
            "{}: objects still live after every object was freed (C-OBJ-5)",
            A::NAME
        );
    }
    cache.shrink();
    if A::CAPABILITIES.uses_page_source {
        assert_eq!(
            fixture.pages.stats().held_bytes,
            0,
            "{}: pages still held after every object was freed and the cache shrunk (C-OBJ-5)",
            A::NAME
        );
        assert_eq!(cache.stats().slab_bytes, Some(0), "{}: slab bytes", A::NAME);
    }
}

/// Panics unless `A` makes the promises the checks of
/// [`page_source_tests!`](crate::page_source_tests) observe.
fn require_page_source<A: ObjectAlloc>() {
    let caps = A::CAPABILITIES;
    assert!(
        caps.uses_page_source && caps.honours_nowait && caps.tracks_live_objects,
        "{}: the page-source checks need a design that takes pages from the page source, \
         honours NOWAIT and counts live objects ({caps:?})",
        A::NAME
    );
}

/// `n` objects from one `alloc_bulk` call.
fn bulk<A: ObjectAlloc>(
    cache: &A,
    flags: AllocFlags,
    n: usize,
) -> Result<Vec<NonNull<u8>>, AllocError> {
    let mut out = vec![MaybeUninit::uninit(); n];
    cache.alloc_bulk(flags, &mut out)?;
    // SAFETY: a successful bulk allocation initialised every slot.
    Ok(out
        .into_iter()
        .map(|slot| unsafe { slot.assume_init() })
        .collect())
}

/// Writes the pattern of `tag` over all `size` bytes of `object`.
///
/// # Safety
///
/// - `object` points to at least `size` writable bytes owned by the caller.
unsafe fn fill(object: NonNull<u8>, size: usize, tag: usize) {
    // SAFETY: the caller's obligation.
    unsafe { objects::stamp(object, size, tag as u64) };
}

/// Checks that all `size` bytes of `object` hold the pattern of `tag`.
///
/// # Safety
///
/// - `object` points to at least `size` readable bytes owned by the caller.
unsafe fn verify(name: &str, object: NonNull<u8>, size: usize, tag: usize) {
    // SAFETY: the caller's obligation.
    if let Err(what) = unsafe { objects::verify(object, size, tag as u64) } {
        panic!("{name}: object #{tag}: {what} (C-OBJ-2)");
    }
}

/// Whether all `size` bytes of `object` are zero.
///
/// # Safety
///
/// - `object` points to at least `size` readable bytes owned by the caller.
unsafe fn is_zero(object: NonNull<u8>, size: usize) -> bool {
    // SAFETY: the caller's obligation.
    unsafe { objects::first_nonzero(object, size) }.is_none()
}

fn check_aligned(name: &str, object: NonNull<u8>, align: usize) {
    assert_eq!(
        object.as_ptr() as usize % align,
        0,
        "{name}: object {object:p} is not aligned to {align} (C-OBJ-1)"
    );
}

/// Runs `check`, the body of test `test` in the module `module_path` (as `module_path!()`
/// gives it), alone in a child process of the current test binary, and passes its failure on.
///
/// For checks that need the process to themselves: the read-side machinery of
/// [`object_alloc::rcu`] is process-wide, so another test's epoch collection could run a
/// deferred free on that test's thread, and a thread-caching allocator would then hand the
/// object out there, never to the check. The child is killed after two minutes, so a hang
/// fails the test instead of stalling the run.
pub fn in_own_process(module_path: &str, test: &str, check: impl FnOnce()) {
    // libtest names a test by its path without the crate's name.
    let name = match module_path.split_once("::") {
        Some((_, module)) => format!("{module}::{test}"),
        None => test.to_owned(),
    };
    if std::env::var_os(ALONE).is_some_and(|alone| alone == name.as_str()) {
        check();
        return;
    }
    // Timing matters to the check (whose thread runs a deferred free decides where a
    // thread-caching allocator keeps the object), so the suite's other checks wait.
    let _alone = SUITE.write().unwrap_or_else(PoisonError::into_inner);
    let binary = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(binary)
        .args([name.as_str(), "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE, &name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting a child process for {name}: {e}"));
    let readers = [
        child
            .stdout
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                // A read error leaves what was read; the exit status still decides.
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                // Best effort: the child may have exited meanwhile.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let [stdout, stderr] = readers.map(|reader| reader.join().unwrap_or_default());
    let Some(status) = status else {
        panic!("{name} did not finish within {CHILD_TIMEOUT:?}\n{stdout}\n{stderr}");
    };
    assert!(
        status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} failed in its own process ({status}):\n{stdout}\n{stderr}"
    );
}

/// C-CONF-1: creation refuses a zero size and a non-power-of-two alignment, naming the field.
pub fn config_is_validated<A: ObjectAlloc>() {
    let zero_size = A::new(&CacheConfig::new(0));
    assert_eq!(
        zero_size.err().map(|e| e.field),
        Some("object_size"),
        "{}: a zero object size must be refused naming `object_size`",
        A::NAME
    );
    let bad_align = A::new(&CacheConfig::new(64).with_align(24));
    assert_eq!(
        bad_align.err().map(|e| e.field),
        Some("align"),
        "{}: alignment 24 must be refused naming `align`",
        A::NAME
    );
}

/// C-OBJ-1: for every size of [`SIZES`] with every alignment of [`ALIGNS`], and for tiny, odd
/// and large layouts besides, objects are aligned and every byte of the configured size holds
/// what was written while a few slabs' worth of objects are live.
pub fn objects_are_aligned_and_writable<A: ObjectAlloc>() {
    const OBJECTS: usize = 300;
    let layouts = SIZES
        .into_iter()
        .flat_map(|size| ALIGNS.map(|align| (size, align)))
        .chain(MORE_LAYOUTS);
    for (size, align) in layouts {
        {
            let config = CacheConfig::new(size).with_align(align);
            let fixture = new_cache::<A>(config.clone());
            let cache = &fixture.cache;
            let objects: Vec<_> = (0..OBJECTS)
                .map(|_| {
                    cache
                        .alloc(AllocFlags::empty())
                        .unwrap_or_else(|| panic!("{}: allocation failed for {config:?}", A::NAME))
                })
                .collect();
            for (tag, &object) in objects.iter().enumerate() {
                check_aligned(A::NAME, object, align);
                // SAFETY: a live object of `size` bytes that this check owns.
                unsafe { fill(object, size, tag) };
            }
            for (tag, &object) in objects.iter().enumerate() {
                // SAFETY: as above.
                unsafe { verify(A::NAME, object, size, tag) };
            }
            release_all(&fixture, &objects);
        }
    }
}

/// C-OBJ-2: live objects never overlap, on one thread and across two threads allocating at the
/// same time (each object is filled with its own pattern, then, with every object still live,
/// every pattern is verified).
pub fn objects_do_not_overlap<A: ObjectAlloc>() {
    const OBJECTS: usize = 1000;
    for size in [8, 64, 4096] {
        let fixture = new_cache::<A>(CacheConfig::new(size));
        let cache = &fixture.cache;
        let start = Barrier::new(2);
        let per_thread: Vec<Vec<Stamped>> = thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|thread_index| {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        let objects: Vec<_> = (0..OBJECTS)
                            .map(|i| {
                                let object = cache
                                    .alloc(AllocFlags::empty())
                                    .unwrap_or_else(|| panic!("{}: allocation failed", A::NAME));
                                let stamp = thread_index * OBJECTS + i;
                                // SAFETY: a live object of `size` bytes owned by this thread.
                                unsafe { fill(object, size, stamp) };
                                Stamped {
                                    object,
                                    stamp: stamp as u64,
                                }
                            })
                            .collect();
                        objects
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut seen = HashSet::new();
        for object in per_thread.iter().flatten() {
            assert!(
                seen.insert(object.object),
                "{}: {:p} handed out twice while live (C-OBJ-2)",
                A::NAME,
                object.object
            );
            // SAFETY: live, `size` bytes, now owned by this thread.
            unsafe { verify(A::NAME, object.object, size, object.stamp as usize) };
        }
        let objects: Vec<_> = per_thread.iter().flatten().map(|o| o.object).collect();
        release_all(&fixture, &objects);
    }
}

/// C-OBJ-3: `ZERO` objects read as zero even when their memory held a pattern before, through
/// `alloc`, `alloc_bulk` and a prefilled sheaf. Each path allocates until it has been handed
/// back at least one of the dirtied objects (designs that reuse a page's freed objects only
/// once its fresh ones run out need more than one batch; a design whose bulk path bypasses its
/// per-thread cache gets one `shrink` after a window without reuse), so the check is never
/// vacuous.
pub fn zero_holds_on_reused_memory<A: ObjectAlloc>() {
    const OBJECTS: usize = 64;
    for size in SIZES {
        let fixture = new_cache::<A>(CacheConfig::new(size).with_sheaf_capacity(8));
        let cache = &fixture.cache;
        for (round, path) in ["alloc", "alloc_bulk", "prefill"].into_iter().enumerate() {
            let dirty: Vec<_> = (0..OBJECTS)
                .map(|i| {
                    let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
                    // SAFETY: a live object of `size` bytes that this check owns.
                    unsafe { fill(object, size, i) };
                    object
                })
                .collect();
            let dirty_set: HashSet<_> = dirty.iter().copied().collect();
            // SAFETY: each was allocated by `cache`, is live and appears once.
            unsafe { cache.free_bulk(&dirty) };
            let mut zeroed: Vec<NonNull<u8>> = Vec::new();
            let mut reused = 0;
            let mut shrunk = false;
            while reused == 0 && zeroed.len() < 2 * REUSE_WINDOW {
                if zeroed.len() >= REUSE_WINDOW && !shrunk {
                    // A design whose bulk path bypasses its per-thread cache (jemalloc's
                    // batch allocation takes slab regions, not the tcache) hands the freed
                    // objects back only once they have left that cache: shrink, and give
                    // it one more window.
                    cache.shrink();
                    shrunk = true;
                }
                let batch: Vec<NonNull<u8>> = match round {
                    0 => (0..OBJECTS)
                        .map(|_| cache.alloc(AllocFlags::ZERO).expect("allocation failed"))
                        .collect(),
                    1 => bulk(cache, AllocFlags::ZERO, OBJECTS).expect("bulk allocation failed"),
                    _ => {
                        let mut sheaf = cache
                            .prefill(AllocFlags::empty(), OBJECTS)
                            .expect("prefill failed");
                        (0..OBJECTS)
                            .map(|_| {
                                sheaf
                                    .alloc(AllocFlags::ZERO)
                                    .expect("prefilled alloc failed")
                            })
                            .collect()
                    }
                };
                for &object in &batch {
                    reused += usize::from(dirty_set.contains(&object));
                    // SAFETY: a live object of `size` bytes that this check owns.
                    if let Some((offset, byte)) = unsafe { objects::first_nonzero(object, size) } {
                        panic!(
                            "{}: ZERO object {object:p} from {path}, size {size}: byte {offset} \
                             is {byte:#x} (C-OBJ-3)",
                            A::NAME
                        );
                    }
                }
                zeroed.extend(batch);
            }
            // SAFETY: each was allocated by `cache`, is live and appears once.
            unsafe { cache.free_bulk(&zeroed) };
            assert!(
                reused > 0,
                "{}: no freed object came back through {path} within {REUSE_WINDOW} \
                 allocations, nor within as many more after a shrink (size {size}), so ZERO \
                 on reused memory was not exercised",
                A::NAME
            );
        }
        release_all(&fixture, &[]);
    }
}

/// C-OBJ-4: objects allocated on one thread are freed on another (with `free` and
/// `free_bulk`), and the other way round; contents cross intact, and accounting holds after
/// (C-OBJ-5).
pub fn remote_free_is_allowed<A: ObjectAlloc>() {
    const OBJECTS: usize = 1000;
    let size = 64;
    let fixture = new_cache::<A>(CacheConfig::new(size));
    let cache = &fixture.cache;
    for round in 0..3 {
        let objects: Vec<_> = (0..OBJECTS)
            .map(|i| {
                let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
                // SAFETY: a live object of `size` bytes that this thread owns.
                unsafe { fill(object, size, round * OBJECTS + i) };
                object
            })
            .collect();
        let sent: Vec<_> = objects
            .iter()
            .map(|&object| Stamped { object, stamp: 0 })
            .collect();
        let theirs = thread::scope(|s| {
            s.spawn(move || {
                let objects: Vec<_> = sent.iter().map(|s| s.object).collect();
                let (singles, batch) = objects.split_at(OBJECTS / 2);
                for (i, object) in objects.iter().enumerate() {
                    // SAFETY: live, `size` bytes, handed over to this thread.
                    unsafe { verify(A::NAME, *object, size, round * OBJECTS + i) };
                }
                for &object in singles {
                    // SAFETY: allocated by `cache` on another thread, live, freed once.
                    unsafe { cache.free(object) };
                }
                // SAFETY: as above, each appears once.
                unsafe { cache.free_bulk(batch) };
                let mine: Vec<_> = (0..OBJECTS)
                    .map(|i| {
                        let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
                        // SAFETY: a live object of `size` bytes that this thread owns.
                        unsafe { fill(object, size, i) };
                        Stamped {
                            object,
                            stamp: i as u64,
                        }
                    })
                    .collect();
                mine
            })
            .join()
            .unwrap()
        });
        for (i, object) in theirs.iter().enumerate() {
            // SAFETY: live, `size` bytes, handed over to this thread; the allocating thread
            // has exited.
            unsafe { verify(A::NAME, object.object, size, i) };
            // SAFETY: allocated by `cache` on another thread, live, freed once.
            unsafe { cache.free(object.object) };
        }
    }
    release_all(&fixture, &[]);
}

/// C-BULK-1 (success path) and C-BULK-2: `alloc_bulk` fills every slot with distinct, aligned,
/// writable objects, across sheaf-sized and larger requests; `free_bulk` takes back a mix of
/// objects from two bulk calls and single allocations.
pub fn bulk_alloc_fills_every_slot<A: ObjectAlloc>() {
    let size = 256;
    let align = 64;
    let fixture = new_cache::<A>(CacheConfig::new(size).with_align(align));
    let cache = &fixture.cache;
    for count in [0, 1, 7, 64, 1000] {
        let mut objects = bulk(cache, AllocFlags::empty(), count)
            .unwrap_or_else(|e| panic!("{}: alloc_bulk({count}) failed: {e}", A::NAME));
        let distinct: HashSet<_> = objects.iter().collect();
        assert_eq!(
            distinct.len(),
            count,
            "{}: alloc_bulk({count}) returned the same object twice (C-BULK-1)",
            A::NAME
        );
        for (tag, &object) in objects.iter().enumerate() {
            check_aligned(A::NAME, object, align);
            // SAFETY: a live object of `size` bytes that this check owns.
            unsafe { fill(object, size, tag) };
        }
        for (tag, &object) in objects.iter().enumerate() {
            // SAFETY: as above.
            unsafe { verify(A::NAME, object, size, tag) };
        }
        objects.extend((0..3).map(|_| cache.alloc(AllocFlags::empty()).expect("alloc failed")));
        objects.reverse();
        release_all(&fixture, &objects);
    }
}

/// Takes `count` objects from `sheaf`, checking that each succeeds and lowers the size by one,
/// and fills each with the pattern of its index in `taken`.
fn take<P: Prefill>(
    name: &str,
    size: usize,
    sheaf: &mut P,
    count: usize,
    taken: &mut Vec<NonNull<u8>>,
) {
    for _ in 0..count {
        let before = sheaf.size();
        let object = sheaf
            .alloc(AllocFlags::empty())
            .unwrap_or_else(|| panic!("{name}: alloc failed with size {before} (C-PREFILL-2)"));
        assert_eq!(
            sheaf.size(),
            before - 1,
            "{name}: size must drop by one (C-PREFILL-4)"
        );
        // SAFETY: a live object of `size` bytes that this check owns.
        unsafe { fill(object, size, taken.len()) };
        taken.push(object);
    }
}

/// C-PREFILL-1..5, 7, 8 and C-REFILL-1..3, through the design's `Prefill` handle (native or
/// [`BulkPrefill`](object_alloc::BulkPrefill)): sizes, exhaustion, refill in place and oversize,
/// return by call and by drop, and freeing the objects taken by every free path.
pub fn prefill_serves_what_it_promised<A: ObjectAlloc>() {
    let size = 64;
    let capacity = 8;
    let fixture = new_cache::<A>(CacheConfig::new(size).with_sheaf_capacity(capacity));
    let cache = &fixture.cache;
    let live_before = cache.stats().live_objects;
    let mut taken = Vec::new();

    let mut sheaf = cache
        .prefill(AllocFlags::empty(), 5)
        .expect("prefill(5) failed");
    assert!(
        sheaf.size() >= 5,
        "{}: prefill(5) holds {} (C-PREFILL-1)",
        A::NAME,
        sheaf.size()
    );
    take(A::NAME, size, &mut sheaf, 5, &mut taken);
    let rest = sheaf.size();
    take(A::NAME, size, &mut sheaf, rest, &mut taken);
    assert!(
        sheaf.alloc(AllocFlags::empty()).is_none(),
        "{}: alloc on an empty sheaf must fail (C-PREFILL-3)",
        A::NAME
    );
    assert_eq!(sheaf.size(), 0);

    sheaf
        .refill(AllocFlags::empty(), 6)
        .expect("refill(6) failed");
    assert!(
        sheaf.size() >= 6,
        "{}: refill(6) holds {} (C-REFILL-2)",
        A::NAME,
        sheaf.size()
    );
    take(A::NAME, size, &mut sheaf, 2, &mut taken);
    let before = sheaf.size();
    sheaf
        .refill(AllocFlags::empty(), 3)
        .expect("refill(3) failed");
    assert_eq!(
        sheaf.size(),
        before,
        "{}: refill below size must change nothing (C-REFILL-1)",
        A::NAME
    );
    let oversize = sheaf.capacity() + 5;
    sheaf
        .refill(AllocFlags::empty(), oversize)
        .expect("oversize refill failed");
    assert!(
        sheaf.size() >= oversize,
        "{}: refill({oversize}) holds {} (C-REFILL-3)",
        A::NAME,
        sheaf.size()
    );
    take(A::NAME, size, &mut sheaf, oversize, &mut taken);
    sheaf.return_with(AllocFlags::empty());

    let oversize = capacity * 3;
    let mut sheaf = cache
        .prefill(AllocFlags::empty(), oversize)
        .expect("oversize prefill failed");
    assert!(
        sheaf.size() >= oversize,
        "{}: prefill({oversize}) holds {} (C-PREFILL-5)",
        A::NAME,
        sheaf.size()
    );
    take(A::NAME, size, &mut sheaf, oversize - 4, &mut taken);
    drop(sheaf);

    let empty = cache
        .prefill(AllocFlags::empty(), 0)
        .expect("prefill(0) must succeed (C-PREFILL-7)");
    drop(empty);

    for (tag, &object) in taken.iter().enumerate() {
        // SAFETY: live, `size` bytes, owned by this check.
        unsafe { verify(A::NAME, object, size, tag) };
    }
    // C-PREFILL-8: every free path takes objects from a sheaf.
    let (singles, rest) = taken.split_at(taken.len() / 3);
    let (batch, deferred) = rest.split_at(rest.len() / 2);
    for &object in singles {
        // SAFETY: allocated through `cache`, live, freed once.
        unsafe { cache.free(object) };
    }
    // SAFETY: as above.
    unsafe { cache.free_bulk(batch) };
    for &object in deferred {
        // SAFETY: as above; no reader holds it.
        unsafe { cache.free_deferred(object) };
    }
    cache.barrier();
    if A::CAPABILITIES.tracks_live_objects {
        assert_eq!(
            cache.stats().live_objects,
            live_before,
            "{}: live objects after returning every sheaf and freeing every object (C-OBJ-5)",
            A::NAME
        );
    }
    release_all(&fixture, &[]);
}

/// C-DEFER-1 and C-DEFER-2: an object passed to `free_deferred` while another thread is inside
/// a read-side section keeps its contents and is not handed out again (over
/// many allocations and epoch flushes); after the reader leaves and `barrier` returns, it is
/// handed out again. The same holds when the reader is the freeing thread itself, and a
/// pending object counts as live (where the design counts).
///
/// Run it alone in its process ([`allocator_tests!`](crate::allocator_tests) does, through
/// [`in_own_process`]): the read-side machinery is process-wide, so another test's epoch
/// collection could run the deferred free on that test's thread, and a thread-caching
/// allocator would then hand the object out there, never here.
pub fn deferred_free_waits_for_readers<A: ObjectAlloc>() {
    let size = 64;
    let sentinel = 0x5eed;
    let fixture = new_cache::<A>(CacheConfig::new(size));
    let cache = &fixture.cache;
    // Settle the allocator's per-thread state first: glibc, for one, may move a thread to
    // another arena early in its life, and an object freed to the arena left behind is not
    // handed out to this thread again.
    let warm_up: Vec<_> = (0..REUSE_WINDOW)
        .map(|_| cache.alloc(AllocFlags::empty()).expect("allocation failed"))
        .collect();
    // SAFETY: each was allocated by `cache`, is live and appears once.
    unsafe { cache.free_bulk(&warm_up) };
    let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
    // SAFETY: a live object of `size` bytes that this check owns.
    unsafe { fill(object, size, sentinel) };
    let (entered_tx, entered) = mpsc::channel();
    let (leave, leave_rx) = mpsc::channel::<()>();
    thread::scope(|s| {
        // Owned by this closure, so that a failed check drops it and the reader leaves
        // instead of waiting forever.
        let leave = leave;
        s.spawn(move || {
            let section = rcu::read();
            entered_tx.send(()).unwrap();
            // Either the signal or the sender dropped by a failed check ends the section.
            let _ = leave_rx.recv();
            drop(section);
        });
        entered.recv().unwrap();
        // SAFETY: allocated by `cache`, live; the reader may still read it.
        unsafe { cache.free_deferred(object) };
        for _ in 0..1000 {
            rcu::flush();
        }
        let held: Vec<_> = (0..REUSE_WINDOW)
            .map(|_| cache.alloc(AllocFlags::empty()).expect("allocation failed"))
            .collect();
        assert!(
            !held.contains(&object),
            "{}: an object freed deferred was handed out while a reader was active (C-DEFER-1)",
            A::NAME
        );
        // SAFETY: the object is not yet freed (its grace period has not ended), so its memory is
        // still as a reader would see it.
        unsafe { verify(A::NAME, object, size, sentinel) };
        // SAFETY: each was allocated by `cache`, is live and appears once.
        unsafe { cache.free_bulk(&held) };
        leave.send(()).unwrap();
    });
    cache.barrier();
    let mut held = Vec::new();
    let mut found = false;
    while held.len() < REUSE_WINDOW && !found {
        let again = cache.alloc(AllocFlags::empty()).expect("allocation failed");
        found = again == object;
        held.push(again);
    }
    // SAFETY: each was allocated by `cache`, is live and appears once.
    unsafe { cache.free_bulk(&held) };
    assert!(
        found,
        "{}: after the reader left and barrier() returned, the deferred object was not handed \
         out again within {REUSE_WINDOW} allocations (C-DEFER-2)",
        A::NAME
    );

    // The reader is the thread that frees.
    let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
    let reader = rcu::read();
    // SAFETY: allocated by `cache`, live, freed once; this thread's own section may still read
    // it.
    unsafe { cache.free_deferred(object) };
    if A::CAPABILITIES.tracks_live_objects {
        assert_eq!(
            cache.stats().live_objects,
            Some(1),
            "{}: an object whose deferred free is pending counts as live",
            A::NAME
        );
    }
    let mut held = Vec::new();
    for _ in 0..2000 {
        let other = cache.alloc(AllocFlags::empty()).expect("allocation failed");
        assert_ne!(
            other,
            object,
            "{}: a deferred object was handed out while the freeing thread was still in its \
             read-side section (C-DEFER-1)",
            A::NAME
        );
        held.push(other);
        rcu::flush();
    }
    drop(reader);
    release_all(&fixture, &held);
}

/// C-OBJ-2, C-OBJ-4, C-CONC-1: threads (more than CPUs) allocate, stamp, hand objects to each
/// other and free them remotely; no stamp is ever overwritten, and at the end the live set has
/// no two overlapping objects.
pub fn objects_cross_threads_intact<A: ObjectAlloc>() {
    const SIZE: usize = 48;
    let fixture = new_cache::<A>(CacheConfig::new(SIZE));
    let cache = &fixture.cache;
    let threads = 4;
    let failed = AtomicBool::new(false);
    let mut survivors = Vec::new();
    std::thread::scope(|s| {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| mpsc::channel::<(usize, u8)>()).unzip();
        let mut handles = Vec::new();
        for (t, receiver) in receivers.into_iter().enumerate() {
            let next = senders[(t + 1) % threads].clone();
            let failed = &failed;
            handles.push(s.spawn(move || {
                let mut held: Vec<(usize, u8)> = Vec::new();
                for round in 0..3000usize {
                    let stamp = (t * 61 + round) as u8;
                    let object = cache.alloc(AllocFlags::empty()).expect("memory");
                    // SAFETY: `SIZE` writable bytes, ours.
                    unsafe { object.as_ptr().write_bytes(stamp, SIZE) };
                    held.push((object.as_ptr() as usize, stamp));
                    if round % 4 == 0 {
                        let (object, stamp) = held.swap_remove(round % held.len());
                        next.send((object, stamp))
                            .expect("the next thread drains its channel");
                    }
                    while let Ok(item) = receiver.try_recv() {
                        held.push(item);
                    }
                    if held.len() > 64 {
                        let (object, stamp) = held.swap_remove(round % held.len());
                        // SAFETY: live, ours.
                        let bytes =
                            unsafe { std::slice::from_raw_parts(object as *const u8, SIZE) };
                        if bytes.iter().any(|&b| b != stamp) {
                            failed.store(true, Ordering::Relaxed);
                        }
                        // SAFETY: live object of `cache`, freed once (maybe remotely).
                        unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
                    }
                }
                // Objects still in flight to this thread arrive until the previous thread is
                // done sending.
                drop(next);
                held.extend(receiver.iter());
                held
            }));
        }
        drop(senders);
        for handle in handles {
            survivors.extend(handle.join().unwrap());
        }
    });
    assert!(
        !failed.load(Ordering::Relaxed),
        "{}: an object's contents were overwritten: overlap (C-OBJ-2)",
        A::NAME
    );
    let mut spans: Vec<usize> = survivors.iter().map(|&(o, _)| o).collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(
            pair[0] + SIZE <= pair[1],
            "{:#x} and {:#x} overlap",
            pair[0],
            pair[1]
        );
    }
    for &(object, stamp) in &survivors {
        // SAFETY: live, ours.
        let bytes = unsafe { std::slice::from_raw_parts(object as *const u8, SIZE) };
        assert!(bytes.iter().all(|&b| b == stamp), "{object:#x} overwritten");
    }
    if A::CAPABILITIES.tracks_live_objects {
        assert_eq!(
            cache.stats().live_objects,
            Some(survivors.len() as u64),
            "{}: live objects at the quiescent point (C-OBJ-5)",
            A::NAME
        );
    }
    let objects: Vec<_> = survivors
        .into_iter()
        .map(|(o, _)| NonNull::new(o as *mut u8).unwrap())
        .collect();
    release_all(&fixture, &objects);
}

/// Simulated nodes: threads on different CPUs (hence nodes) allocate and free each other's
/// objects; every node's slabs are released in the end (C-OBJ-4, C-OBJ-5).
pub fn simulated_nodes<A: ObjectAlloc>() {
    let config = CacheConfig::new(64).with_nodes(NodeMap::Simulated { nodes: 2 });
    let fixture = new_cache::<A>(config);
    let cache = &fixture.cache;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (to_second, from_first) = mpsc::channel::<Vec<usize>>();
    let (to_first, from_second) = mpsc::channel::<Vec<usize>>();
    std::thread::scope(|s| {
        for (index, (sender, receiver)) in [(to_second, from_second), (to_first, from_first)]
            .into_iter()
            .enumerate()
        {
            let cores = &cores;
            s.spawn(move || {
                if let Some(&core) = cores.get(index % cores.len().max(1)) {
                    core_affinity::set_for_current(core);
                }
                for _ in 0..40 {
                    let batch = (0..150)
                        .map(|_| cache.alloc(AllocFlags::empty()).unwrap().as_ptr() as usize)
                        .collect();
                    sender.send(batch).unwrap();
                    if let Ok(batch) = receiver.recv() {
                        for object in batch {
                            // SAFETY: live objects received once each.
                            unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
                        }
                    }
                }
            });
        }
    });
    release_all(&fixture, &[]);
}

/// C-BULK-1 under an exhausted page source and under injected faults: failures allocate
/// nothing and leak nothing.
pub fn bulk_all_or_nothing<A: ObjectAlloc>() {
    require_page_source::<A>();
    let fixture = new_cache::<A>(CacheConfig::new(64));
    let (cache, pages) = (&fixture.cache, &fixture.pages);
    // Exhaustion: a budget of a few slabs, a request larger than it.
    let first = bulk(cache, AllocFlags::empty(), 10).unwrap();
    let held = pages.stats().held_bytes;
    pages.set_limit(held + 2 * slab::PAGE_SIZE);
    let before = cache.stats().live_objects;
    let error = bulk(cache, AllocFlags::empty(), 5000).unwrap_err();
    assert_eq!(error, AllocError::OutOfMemory);
    assert_eq!(
        cache.stats().live_objects,
        before,
        "a failed bulk allocation left objects live"
    );
    // What the failed request took is free again: the same budget serves a smaller request.
    let again = bulk(cache, AllocFlags::empty(), 64).unwrap();
    let distinct: HashSet<_> = first.iter().chain(&again).collect();
    assert_eq!(
        distinct.len(),
        first.len() + again.len(),
        "bulk handed out an object twice"
    );
    pages.set_limit(usize::MAX);
    let mut held_objects = first;
    held_objects.extend(again);
    release_all(&fixture, &held_objects);

    // Injected faults: each bulk request either fully succeeds or changes nothing.
    let fixture = new_cache::<A>(CacheConfig::new(128));
    let (cache, pages) = (&fixture.cache, &fixture.pages);
    pages.fail_with_probability(0.3, 42);
    let mut live = Vec::new();
    let mut failures = 0;
    for round in 0..200usize {
        let n = 1 + (round * 37) % 150;
        let before = cache.stats().live_objects.unwrap();
        match bulk(cache, AllocFlags::empty(), n) {
            Ok(objects) => {
                assert_eq!(objects.len(), n);
                live.extend(objects);
            }
            Err(error) => {
                assert_eq!(error, AllocError::OutOfMemory);
                assert_eq!(cache.stats().live_objects.unwrap(), before);
                failures += 1;
            }
        }
        if round % 7 == 0 {
            let keep = live.len() / 2;
            let freed: Vec<_> = live.drain(keep..).collect();
            // SAFETY: live objects, each once.
            unsafe { cache.free_bulk(&freed) };
        }
    }
    assert!(
        failures > 0,
        "no fault was injected, so the test proves nothing"
    );
    assert_eq!(cache.stats().live_objects, Some(live.len() as u64));
    let distinct: HashSet<_> = live.iter().collect();
    assert_eq!(distinct.len(), live.len());
    pages.fail_with_probability(0.0, 0);
    release_all(&fixture, &live);
}

/// C-PREFILL-1..6 and C-REFILL-3 with the page source exhausted: a prefilled sheaf serves
/// what it holds (even `NOWAIT`) without a page, an empty one does not fall back to the cache,
/// oversize sheaves refill beyond their capacity, and a prefill refused for want of pages
/// leaks nothing.
pub fn prefill_holds_when_pages_run_out<A: ObjectAlloc>() {
    require_page_source::<A>();
    let fixture = new_cache::<A>(CacheConfig::new(64).with_sheaf_capacity(16));
    let (cache, pages) = (&fixture.cache, &fixture.pages);
    let mut sheaf = cache.prefill(AllocFlags::empty(), 12).unwrap();
    assert!(sheaf.size() >= 12);
    assert!(sheaf.capacity() >= 12);
    pages.set_limit(0);
    let mut taken = Vec::new();
    for _ in 0..12 {
        let before = sheaf.size();
        taken.push(
            sheaf
                .alloc(AllocFlags::NOWAIT)
                .expect("a prefilled sheaf cannot fail"),
        );
        assert_eq!(sheaf.size(), before - 1);
    }
    while sheaf.size() > 0 {
        taken.push(sheaf.alloc(AllocFlags::empty()).unwrap());
    }
    assert!(
        sheaf.alloc(AllocFlags::empty()).is_none(),
        "an empty sheaf fell back to the cache"
    );
    drop(sheaf);
    pages.set_limit(usize::MAX);
    // Oversize: more than the capacity.
    let mut big = cache.prefill(AllocFlags::empty(), 100).unwrap();
    assert!(big.size() >= 100 && big.capacity() >= 100);
    taken.push(big.alloc(AllocFlags::ZERO).unwrap());
    big.refill(AllocFlags::empty(), 150).unwrap();
    assert!(big.size() >= 150);
    big.return_with(AllocFlags::empty());
    // A failed prefill leaks nothing.
    let live = cache.stats().live_objects;
    pages.set_limit(pages.stats().held_bytes);
    assert!(cache.prefill(AllocFlags::empty(), 5000).is_err());
    assert_eq!(cache.stats().live_objects, live);
    pages.set_limit(usize::MAX);
    let distinct: HashSet<_> = taken.iter().collect();
    assert_eq!(distinct.len(), taken.len());
    release_all(&fixture, &taken);
}

/// `NOWAIT` never takes a page: not for single, bulk or prefill requests; it is served from
/// the free objects the cache holds.
pub fn nowait_takes_no_page<A: ObjectAlloc>() {
    require_page_source::<A>();
    let fixture = new_cache::<A>(CacheConfig::new(64));
    let (cache, pages) = (&fixture.cache, &fixture.pages);
    assert!(cache.alloc(AllocFlags::NOWAIT).is_none());
    assert_eq!(
        bulk(cache, AllocFlags::NOWAIT, 4).unwrap_err(),
        AllocError::WouldGrow
    );
    assert!(cache.prefill(AllocFlags::NOWAIT, 4).is_err());
    assert_eq!(pages.requests(), 0, "a NOWAIT request took a page");
    // With cached free objects, NOWAIT is served from them, still without a page.
    let objects = bulk(cache, AllocFlags::empty(), 200).unwrap();
    let requests = pages.requests();
    // SAFETY: live objects, each once.
    unsafe { cache.free_bulk(&objects) };
    let mut again = Vec::new();
    while let Some(object) = cache.alloc(AllocFlags::NOWAIT) {
        again.push(object);
        assert!(again.len() <= 100_000, "NOWAIT allocations never ran out");
    }
    assert!(
        again.len() >= 100,
        "NOWAIT did not use the free objects at hand"
    );
    assert_eq!(pages.requests(), requests, "a NOWAIT request took a page");
    release_all(&fixture, &again);
}

/// `debug.poison`: a freed object reads as `slab::POISON_FREE` (the slab layer's poison, which
/// every slab-based design uses), and reuse still works (the slab layer checks the poison of
/// objects it hands out again in debug builds).
pub fn poison_on_free<A: ObjectAlloc>() {
    require_page_source::<A>();
    const SIZE: usize = 96;
    let debug = DebugOptions {
        poison: true,
        check_invariants: true,
    };
    let fixture = new_cache::<A>(CacheConfig::new(SIZE).with_debug(debug));
    let cache = &fixture.cache;
    let objects: Vec<_> = (0..300)
        .map(|_| cache.alloc(AllocFlags::empty()).unwrap())
        .collect();
    for object in &objects {
        // SAFETY: ours.
        unsafe { object.as_ptr().write_bytes(0x11, SIZE) };
    }
    let probe = objects[150];
    // SAFETY: live objects, each once.
    unsafe { cache.free_bulk(&objects) };
    // SAFETY: the cache still holds the object's slab (nothing was shrunk), and no other
    // thread runs; the bytes are read only to check the poison.
    let bytes = unsafe { std::slice::from_raw_parts(probe.as_ptr(), SIZE) };
    // The first word may hold a free-list link in some designs' slab layer.
    assert!(
        bytes[8..].iter().all(|&b| b == slab::POISON_FREE),
        "a freed object was not poisoned"
    );
    let again: Vec<_> = (0..600)
        .map(|_| cache.alloc(AllocFlags::ZERO).unwrap())
        .collect();
    for &object in &again {
        // SAFETY: a live object of `SIZE` bytes that this check owns.
        let zero = unsafe { is_zero(object, SIZE) };
        assert!(zero, "{}: ZERO object {object:p} not zero", A::NAME);
    }
    release_all(&fixture, &again);
}

/// Expands to one `#[test]` per check of [`conformance::testing`](crate::testing) that every
/// design runs, on the design `$alloc`; [`deferred_free_waits_for_readers`] runs alone in a
/// child process ([`in_own_process`]).
#[macro_export]
macro_rules! allocator_tests {
    ($alloc:ty) => {
        $crate::suite_tests!(
            $alloc;
            config_is_validated,
            objects_are_aligned_and_writable,
            objects_do_not_overlap,
            objects_cross_threads_intact,
            zero_holds_on_reused_memory,
            remote_free_is_allowed,
            simulated_nodes,
            bulk_alloc_fills_every_slot,
            prefill_serves_what_it_promised,
        );
        #[test]
        fn deferred_free_waits_for_readers() {
            $crate::testing::in_own_process(
                module_path!(),
                "deferred_free_waits_for_readers",
                $crate::testing::deferred_free_waits_for_readers::<$alloc>,
            );
        }
    };
}

/// Expands to one `#[test]` per check of [`conformance::testing`](crate::testing) that needs a
/// design taking its pages from the page source, honouring `NOWAIT` and counting live objects
/// (the slab-based designs), on the design `$alloc`.
#[macro_export]
macro_rules! page_source_tests {
    ($alloc:ty) => {
        $crate::suite_tests!(
            $alloc;
            bulk_all_or_nothing,
            prefill_holds_when_pages_run_out,
            nowait_takes_no_page,
            poison_on_free,
        );
    };
}

/// One `#[test]` per named check of [`conformance::testing`](crate::testing), each holding
/// [`suite_guard`] while it runs; the building block of the two macros above.
#[doc(hidden)]
#[macro_export]
macro_rules! suite_tests {
    ($alloc:ty; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let _suite = $crate::testing::suite_guard();
                $crate::testing::$check::<$alloc>();
            }
        )*
    };
}
