//! The page source: where slab-based designs get their memory.
//!
//! A page source hands out naturally aligned chunks whose size is a power of two no smaller
//! than [`PAGE_SIZE`]: a chunk of `bytes` is aligned to `bytes`, so an object finds the start
//! of its slab by masking its address. The trait lives here, in the seam, so that a
//! [`CacheConfig`](crate::CacheConfig) can carry one to any design; the `slab` crate provides
//! the implementations (an mmap source for production, a limited and fault-injecting one for
//! tests) and re-exports the trait.
//!
//! Page sources are called on slow paths only (a new slab, a released slab), so designs hold
//! them as `Arc<dyn PageSource>`: the dynamic call never sits in a measured fast path.

use std::fmt;
use std::ptr::NonNull;

use thiserror::Error;

/// The smallest chunk a page source hands out, and the unit of page accounting.
pub const PAGE_SIZE: usize = 4096;

/// Why a page source refused a chunk.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageError {
    /// The source's budget of bytes is spent.
    #[error("page budget exhausted: {held} of {limit} bytes already handed out")]
    Exhausted {
        /// Bytes handed out and not yet returned.
        held: usize,
        /// The budget.
        limit: usize,
    },
    /// A fault was injected (tests).
    #[error("injected page fault on request #{request}")]
    Injected {
        /// The 1-based index of the refused request.
        request: u64,
    },
    /// The operating system refused the mapping.
    #[error("the operating system refused a mapping of {bytes} bytes (errno {errno})")]
    Os {
        /// Bytes requested.
        bytes: usize,
        /// The raw OS error.
        errno: i32,
    },
    /// The request was not a power of two of at least [`PAGE_SIZE`] bytes.
    #[error("chunk size {bytes} is not a power of two of at least 4096 bytes")]
    BadSize {
        /// Bytes requested.
        bytes: usize,
    },
}

/// Counters a page source keeps about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageSourceStats {
    /// Bytes handed out and not yet returned.
    pub held_bytes: usize,
    /// The most bytes ever held at once.
    pub peak_bytes: usize,
    /// Chunks handed out, over the source's life.
    pub chunks_allocated: u64,
    /// Chunks returned, over the source's life.
    pub chunks_freed: u64,
    /// Requests refused (budget, injected fault or OS error).
    pub refusals: u64,
}

/// A supplier of naturally aligned, power-of-two sized chunks of memory.
///
/// Implementations must be thread-safe: any thread may allocate or free at any time.
///
/// # Safety
///
/// Allocators write their slab headers and objects into the chunks they are given, trusting
/// the source, so an implementation promises that every chunk returned by
/// [`alloc_chunk`](PageSource::alloc_chunk)`(bytes)` is `bytes` bytes of readable and
/// writable memory, aligned to `bytes`, that nothing else uses until it is given back with
/// [`free_chunk`](PageSource::free_chunk). A source that cannot keep that promise returns an
/// error instead.
pub unsafe trait PageSource: Send + Sync + fmt::Debug {
    /// A short name for reports (`"mmap"`, `"limited"`).
    fn name(&self) -> &'static str;

    /// Hands out a chunk of `bytes` bytes aligned to `bytes`.
    ///
    /// `bytes` must be a power of two of at least [`PAGE_SIZE`]; other sizes are refused with
    /// [`PageError::BadSize`]. The memory is readable and writable; its contents are
    /// unspecified (fresh anonymous mappings read as zero, recycled chunks may not).
    fn alloc_chunk(&self, bytes: usize) -> Result<NonNull<u8>, PageError>;

    /// Takes back a chunk.
    ///
    /// # Safety
    ///
    /// - `chunk` was returned by `alloc_chunk(bytes)` on this same source, with this `bytes`.
    /// - It has not been freed since, and nothing accesses it after this call.
    unsafe fn free_chunk(&self, chunk: NonNull<u8>, bytes: usize);

    /// The source's counters.
    fn stats(&self) -> PageSourceStats;
}
