//! Helpers shared by the tests.

use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use object_alloc::{AllocFlags, CacheConfig, PageError, PageSource, PageSourceStats};
use sheaf::{Cache, SlotStrategy};
use slab::LimitedPages;

/// Runs a generic test body on both slot strategies.
macro_rules! both_strategies {
    ($(#[$meta:meta])* fn $name:ident<$s:ident>() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run<$s: sheaf::SlotStrategy>() $body

            #[test]
            $(#[$meta])*
            fn per_cpu() {
                run::<sheaf::PerCpu>();
            }

            #[test]
            $(#[$meta])*
            fn per_thread() {
                run::<sheaf::PerThread>();
            }
        }
    };
}
pub(crate) use both_strategies;

/// Whether restartable sequences are in use in this process. Without them (valgrind, an old
/// kernel, `SHEAF_RSEQ=0`) deferred frees go one by one and no sheaf is ever deferred, so a
/// test of the deferred-free sheaves has nothing to test: it calls this first and returns
/// when it is `false`, having said so on stderr. Under `SHEAF_REQUIRE_RSEQ=1` (CI) it fails
/// instead.
pub(crate) fn sequences_usable() -> bool {
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

/// A config of 64-byte objects on a fresh limited page source.
pub(crate) fn limited_config(limit_bytes: usize) -> (Arc<LimitedPages>, CacheConfig) {
    let pages = Arc::new(LimitedPages::new(limit_bytes));
    let config = CacheConfig::new(64).with_page_source(pages.clone() as Arc<dyn PageSource>);
    (pages, config)
}

/// A cache of 64-byte objects with `capacity`, on an unlimited, observable page source.
pub(crate) fn cache_with<S: SlotStrategy>(capacity: usize) -> (Arc<LimitedPages>, Cache<S>) {
    let (pages, config) = limited_config(usize::MAX / 2);
    let cache = Cache::new(&config.with_sheaf_capacity(capacity)).expect("valid config");
    (pages, cache)
}

/// Live objects reported.
pub(crate) fn live<S: SlotStrategy>(cache: &Cache<S>) -> u64 {
    cache
        .stats()
        .live_objects
        .expect("sheaf reports live objects")
}

/// The cache's counter `name` now (0 when the design does not report it).
pub(crate) fn counter<S: SlotStrategy>(cache: &Cache<S>, name: &str) -> u64 {
    cache.stats().counters.get(name).copied().unwrap_or(0)
}

/// Bytes the page source still holds.
pub(crate) fn held(pages: &LimitedPages) -> usize {
    pages.stats().held_bytes
}

/// Frees every object, barriers, shrinks, and checks that no page is held (C-OBJ-5).
pub(crate) fn free_all_and_check_empty<S: SlotStrategy>(
    pages: &LimitedPages,
    cache: &Cache<S>,
    objects: impl IntoIterator<Item = NonNull<u8>>,
) {
    for object in objects {
        // SAFETY: test objects come from `cache` and are live.
        unsafe { cache.free(object) };
    }
    cache.barrier();
    assert!(
        cache.check_invariants(),
        "the accounting equation was not checked"
    );
    assert_eq!(live(cache), 0, "live objects after freeing all");
    cache.shrink();
    cache.barrier();
    cache.shrink();
    assert!(
        cache.check_invariants(),
        "the accounting equation was not checked"
    );
    assert_eq!(held(pages), 0, "pages held after freeing all and shrinking");
    assert_eq!(cache.stats().slab_bytes, Some(0));
}

/// After threads that used `cache` have exited: barriers and shrinks until no page is held,
/// and fails if that takes more than five seconds. An exited thread's slot may be adopted,
/// and held recycled sheaves aged out, by the hand-over thread at any moment; a `shrink`
/// made while those sheaves are in its hands passes them by (C-CONC-4: no operation waits
/// for another thread), so one pass right after the joins may leave their slabs held. The
/// accounting check says when nothing was in transit.
pub(crate) fn settle_empty<S: SlotStrategy>(pages: &LimitedPages, cache: &Cache<S>) {
    let start = std::time::Instant::now();
    loop {
        cache.barrier();
        cache.shrink();
        let checked = cache.check_invariants();
        if checked && held(pages) == 0 {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "after 5 s: {} bytes held, {} live, accounting checked: {checked}",
            held(pages),
            live(cache)
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// `n` objects from `alloc_bulk`.
pub(crate) fn bulk<S: SlotStrategy>(
    cache: &Cache<S>,
    flags: AllocFlags,
    n: usize,
) -> Vec<NonNull<u8>> {
    let mut out = vec![MaybeUninit::uninit(); n];
    cache.alloc_bulk(flags, &mut out).expect("bulk allocation");
    // SAFETY: every entry was written on success.
    out.into_iter()
        .map(|o| unsafe { o.assume_init() })
        .collect()
}

/// Writes a recognisable pattern over an object.
pub(crate) fn scribble(object: NonNull<u8>, size: usize, byte: u8) {
    // SAFETY: test objects span `size` writable bytes that the test owns.
    unsafe { object.as_ptr().write_bytes(byte, size) };
}

/// Whether every byte of the object is zero.
pub(crate) fn is_zero(object: NonNull<u8>, size: usize) -> bool {
    // SAFETY: test objects span `size` readable bytes that the test owns.
    unsafe { std::slice::from_raw_parts(object.as_ptr(), size) }
        .iter()
        .all(|&b| b == 0)
}

/// Pages whose next `alloc_chunk` after [`GatedPages::arm`] (or next `free_chunk` after
/// [`GatedPages::arm_free`]) blocks until [`GatedPages::open`] (or a time-out, so that a
/// failing test cannot hang): the caller is descheduled inside the allocator, as a page
/// allocator that sleeps would leave it.
#[derive(Debug, Default)]
pub(crate) struct GatedPages {
    inner: slab::MmapPages,
    armed: AtomicBool,
    armed_free: AtomicBool,
    /// Where set, only a `free_chunk` on the thread of this name (`/proc/thread-self/comm`)
    /// meets the armed gate.
    free_thread: Mutex<Option<&'static str>>,
    /// (a caller is blocked inside, the gate is open)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl GatedPages {
    pub(crate) fn arm(&self) {
        *self.state.lock().unwrap() = (false, false);
        self.armed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn arm_free(&self) {
        *self.state.lock().unwrap() = (false, false);
        self.armed_free.store(true, Ordering::SeqCst);
    }

    /// [`GatedPages::arm_free`] for a `free_chunk` made on the thread named `thread` only.
    pub(crate) fn arm_free_on(&self, thread: &'static str) {
        *self.free_thread.lock().unwrap() = Some(thread);
        self.arm_free();
    }

    /// Whether a `free_chunk` on the calling thread meets the armed gate.
    fn free_here(&self) -> bool {
        self.free_thread.lock().unwrap().is_none_or(|thread| {
            std::fs::read_to_string("/proc/thread-self/comm")
                .is_ok_and(|name| name.trim_end() == thread)
        })
    }

    /// Blocks the caller until the gate opens (at most 10 s).
    fn block(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        self.changed.notify_all();
        let _ = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(10), |(_, open)| !*open)
            .unwrap();
    }

    /// Waits until a caller is blocked inside; `false` after 10 s.
    pub(crate) fn wait_blocked(&self) -> bool {
        self.wait_blocked_for(Duration::from_secs(10))
    }

    /// Waits until a caller is blocked inside; `false` after `time`.
    pub(crate) fn wait_blocked_for(&self, time: Duration) -> bool {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, time, |(inside, _)| !*inside)
            .unwrap();
        state.0
    }

    pub(crate) fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

// SAFETY: every chunk comes from `inner` and goes back to it.
unsafe impl PageSource for GatedPages {
    fn name(&self) -> &'static str {
        "gated"
    }

    fn alloc_chunk(&self, bytes: usize) -> Result<NonNull<u8>, PageError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.block();
        }
        self.inner.alloc_chunk(bytes)
    }

    unsafe fn free_chunk(&self, chunk: NonNull<u8>, bytes: usize) {
        if self.free_here() && self.armed_free.swap(false, Ordering::SeqCst) {
            self.block();
        }
        // SAFETY: forwarded: the chunk came from `inner`.
        unsafe { self.inner.free_chunk(chunk, bytes) }
    }

    fn stats(&self) -> PageSourceStats {
        self.inner.stats()
    }
}
