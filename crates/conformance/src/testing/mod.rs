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
//!
//! Where things live: this module holds the fixtures every check shares (a cache on its own
//! page source, freeing everything and checking that nothing is left, patterns, the suite
//! guard and [`in_own_process`]) and the macros; `obj` the object checks (layout, overlap,
//! `ZERO`, remote frees, nodes), `sheaves` the bulk and prefill checks, `defer` the
//! deferred-free check, `pages` the checks that need the page source.

use std::io::Read;
use std::mem::MaybeUninit;
use std::process::{Command, Stdio};
use std::ptr::NonNull;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};

use object_alloc::{AllocError, AllocFlags, CacheConfig, ObjectAlloc, PageSource};

use crate::checks::Fixture;
use crate::objects;

mod defer;
mod obj;
mod pages;
mod sheaves;

pub use defer::deferred_free_waits_for_readers;
pub use obj::{
    config_is_validated, objects_are_aligned_and_writable, objects_cross_threads_intact,
    objects_do_not_overlap, remote_free_is_allowed, simulated_nodes, zero_holds_on_reused_memory,
};
pub use pages::{
    bulk_all_or_nothing, nowait_takes_no_page, poison_on_free, prefill_holds_when_pages_run_out,
};
pub use sheaves::{bulk_alloc_fills_every_slot, prefill_serves_what_it_promised};

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
