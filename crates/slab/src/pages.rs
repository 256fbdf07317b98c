//! Page sources: anonymous `mmap` for production, a limited and fault-injecting one for tests.
//!
//! Both hand out naturally aligned power-of-two chunks (a chunk of `bytes` starts at a
//! multiple of `bytes`), which is what lets an object find its slab by masking its address.
//! `mmap` only promises page alignment, so [`MmapPages`] maps `2 * bytes - PAGE_SIZE`, keeps
//! the aligned `bytes` inside and unmaps the head and tail it does not need.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use object_alloc::{CacheConfig, PAGE_SIZE, PageError, PageSource, PageSourceStats};

/// The page source a config asks for: `config.page_source`, or a new [`MmapPages`].
pub fn page_source_for(config: &CacheConfig) -> Arc<dyn PageSource> {
    match &config.page_source {
        Some(source) => Arc::clone(source),
        None => Arc::new(MmapPages::new()),
    }
}

fn check_chunk_size(bytes: usize) -> Result<(), PageError> {
    if bytes >= PAGE_SIZE && bytes.is_power_of_two() {
        Ok(())
    } else {
        Err(PageError::BadSize { bytes })
    }
}

/// Anonymous, private `mmap` pages, naturally aligned by over-mapping and trimming.
///
/// Counters are atomics: the source is shared by every node of a cache and called from any
/// thread, always on slow paths.
///
/// ```
/// use slab::{MmapPages, PageSource};
///
/// let pages = MmapPages::new();
/// let chunk = pages.alloc_chunk(64 * 1024).unwrap();
/// assert_eq!(chunk.as_ptr() as usize % (64 * 1024), 0);
/// assert_eq!(pages.stats().held_bytes, 64 * 1024);
/// // SAFETY: `chunk` came from this source with this size and is freed once.
/// unsafe { pages.free_chunk(chunk, 64 * 1024) };
/// assert_eq!(pages.stats().held_bytes, 0);
/// ```
#[derive(Debug, Default)]
pub struct MmapPages {
    held: AtomicUsize,
    peak: AtomicUsize,
    allocated: AtomicU64,
    freed: AtomicU64,
    refusals: AtomicU64,
}

impl MmapPages {
    /// A source with zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    fn map_aligned(bytes: usize) -> Result<NonNull<u8>, PageError> {
        use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous, munmap};
        let span = if bytes == PAGE_SIZE {
            bytes
        } else {
            // No mapping this large can exist; refuse it as the kernel would (ENOMEM).
            match bytes
                .checked_mul(2)
                .filter(|&span| span <= isize::MAX as usize)
            {
                Some(span) => span - PAGE_SIZE,
                None => return Err(PageError::Os { bytes, errno: 12 }),
            }
        };
        // SAFETY: a fresh anonymous private mapping at an address the kernel chooses aliases
        // nothing.
        let raw = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                span,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .map_err(|errno| PageError::Os {
            bytes,
            errno: errno.raw_os_error(),
        })?;
        let start = raw.addr();
        let head = start.next_multiple_of(bytes) - start;
        let aligned = raw.cast::<u8>().wrapping_add(head);
        let tail = span - head - bytes;
        // `start` and `aligned` are page aligned, so `head` and `tail` are whole pages. A
        // failed trim (the kernel short of memory for the split) leaves them mapped and unused:
        // a leak, never a fault, since nothing refers to them.
        if head > 0 {
            // SAFETY: `[start, aligned)` lies inside the mapping just made, and nothing refers
            // to it.
            let _ = unsafe { munmap(raw, head) };
        }
        if tail > 0 {
            // SAFETY: `[aligned + bytes, start + span)` lies inside the mapping just made, and
            // nothing refers to it.
            let _ = unsafe { munmap(aligned.wrapping_add(bytes).cast(), tail) };
        }
        // Address 0 can be mapped only where `vm.mmap_min_addr` is 0; a chunk there would be
        // indistinguishable from a null link, so it is refused (and stays mapped: rare, and
        // unmapping it would let the next call get it again).
        NonNull::new(aligned).ok_or(PageError::Os { bytes, errno: 12 })
    }
}

// SAFETY: a chunk is the naturally aligned `bytes` kept from a fresh private anonymous
// mapping of read-write memory, unmapped only by `free_chunk`.
unsafe impl PageSource for MmapPages {
    fn name(&self) -> &'static str {
        "mmap"
    }

    fn alloc_chunk(&self, bytes: usize) -> Result<NonNull<u8>, PageError> {
        match check_chunk_size(bytes).and_then(|()| Self::map_aligned(bytes)) {
            Ok(chunk) => {
                let held = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
                self.peak.fetch_max(held, Ordering::Relaxed);
                self.allocated.fetch_add(1, Ordering::Relaxed);
                Ok(chunk)
            }
            Err(err) => {
                self.refusals.fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    unsafe fn free_chunk(&self, chunk: NonNull<u8>, bytes: usize) {
        // SAFETY: the caller guarantees `chunk` is a live mapping of `bytes` bytes made by
        // `alloc_chunk`, which nothing accesses any more.
        let result = unsafe { rustix::mm::munmap(chunk.as_ptr().cast(), bytes) };
        if result.is_err() {
            // The kernel can refuse to split the mapping that neighbouring chunks merged into
            // (ENOMEM at `vm.max_map_count`). The chunk then stays mapped, unused, and is
            // still counted as held: a leak that the page counts show, not a panic.
            return;
        }
        self.held.fetch_sub(bytes, Ordering::Relaxed);
        self.freed.fetch_add(1, Ordering::Relaxed);
    }

    fn stats(&self) -> PageSourceStats {
        PageSourceStats {
            held_bytes: self.held.load(Ordering::Relaxed),
            peak_bytes: self.peak.load(Ordering::Relaxed),
            chunks_allocated: self.allocated.load(Ordering::Relaxed),
            chunks_freed: self.freed.load(Ordering::Relaxed),
            refusals: self.refusals.load(Ordering::Relaxed),
        }
    }
}

/// A budgeted, fault-injecting page source for tests; it takes its chunks from a
/// [`MmapPages`].
///
/// A request is refused, in this order, when it is the one chosen by [`LimitedPages::fail_nth`],
/// when the seeded coin of [`LimitedPages::fail_with_probability`] says so, or when it would
/// take the bytes held above the budget. Injected faults are deterministic: the same seed and
/// the same sequence of requests refuse the same requests.
///
/// ```
/// use slab::{LimitedPages, PAGE_SIZE, PageError, PageSource};
///
/// let pages = LimitedPages::new(2 * PAGE_SIZE);
/// let chunk = pages.alloc_chunk(2 * PAGE_SIZE).unwrap();
/// assert!(matches!(pages.alloc_chunk(PAGE_SIZE), Err(PageError::Exhausted { .. })));
/// // SAFETY: `chunk` came from this source with this size and is freed once.
/// unsafe { pages.free_chunk(chunk, 2 * PAGE_SIZE) };
///
/// pages.fail_nth(1);
/// assert_eq!(pages.alloc_chunk(PAGE_SIZE), Err(PageError::Injected { request: 3 }));
/// assert_eq!(pages.requests(), 3);
/// assert_eq!(pages.stats().refusals, 2);
/// assert_eq!(pages.stats().held_bytes, 0);
/// ```
#[derive(Debug)]
pub struct LimitedPages {
    inner: MmapPages,
    state: Mutex<LimitState>,
}

#[derive(Debug)]
struct LimitState {
    limit: usize,
    held: usize,
    requests: u64,
    fail_at: Option<u64>,
    probability: f64,
    rng: u64,
    refusals: u64,
}

/// One step of splitmix64: a small, well-mixed, seedable generator.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl LimitedPages {
    /// A source that hands out at most `limit_bytes` bytes at once.
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            inner: MmapPages::new(),
            state: Mutex::new(LimitState {
                limit: limit_bytes,
                held: 0,
                requests: 0,
                fail_at: None,
                probability: 0.0,
                rng: 0,
                refusals: 0,
            }),
        }
    }

    /// A source with no budget (faults can still be injected).
    pub fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LimitState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the budget; `set_limit(0)` refuses every request from now on. Chunks already
    /// handed out stay valid.
    pub fn set_limit(&self, limit_bytes: usize) {
        self.state().limit = limit_bytes;
    }

    /// Refuses the `n`-th request counted from now (1-based), once. `n = 0` cancels a pending
    /// one.
    pub fn fail_nth(&self, n: u64) {
        let mut state = self.state();
        state.fail_at = (n > 0).then(|| state.requests + n);
    }

    /// Refuses each request with probability `p`, drawn from a generator seeded with `seed`;
    /// `p = 0.0` disables it. Values outside `[0, 1]` are clamped.
    pub fn fail_with_probability(&self, p: f64, seed: u64) {
        let mut state = self.state();
        state.probability = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        state.rng = seed;
    }

    /// `alloc_chunk` calls so far, refused ones included.
    pub fn requests(&self) -> u64 {
        self.state().requests
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.state().limit
    }
}

impl Default for LimitedPages {
    fn default() -> Self {
        Self::unlimited()
    }
}

// SAFETY: every chunk comes from the inner `MmapPages` and goes back to it.
unsafe impl PageSource for LimitedPages {
    fn name(&self) -> &'static str {
        "limited"
    }

    fn alloc_chunk(&self, bytes: usize) -> Result<NonNull<u8>, PageError> {
        let mut state = self.state();
        state.requests += 1;
        let request = state.requests;
        if state.fail_at == Some(request) {
            state.fail_at = None;
            state.refusals += 1;
            return Err(PageError::Injected { request });
        }
        if state.probability > 0.0 {
            let draw = (splitmix64(&mut state.rng) >> 11) as f64 / (1u64 << 53) as f64;
            if draw < state.probability {
                state.refusals += 1;
                return Err(PageError::Injected { request });
            }
        }
        if bytes > state.limit.saturating_sub(state.held) {
            state.refusals += 1;
            return Err(PageError::Exhausted {
                held: state.held,
                limit: state.limit,
            });
        }
        let chunk = self.inner.alloc_chunk(bytes)?;
        state.held += bytes;
        Ok(chunk)
    }

    unsafe fn free_chunk(&self, chunk: NonNull<u8>, bytes: usize) {
        let mut state = self.state();
        state.held -= bytes;
        // SAFETY: forwarded from the caller; every chunk of this source came from `inner`.
        unsafe { self.inner.free_chunk(chunk, bytes) };
    }

    fn stats(&self) -> PageSourceStats {
        let refusals = self.state().refusals;
        let inner = self.inner.stats();
        PageSourceStats {
            refusals: inner.refusals + refusals,
            ..inner
        }
    }
}
