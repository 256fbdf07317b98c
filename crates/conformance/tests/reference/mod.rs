//! A simple, correct reference design, and the same design with one deliberate bug each.
//!
//! Objects are carved from naturally aligned chunks of the configured page source; free objects
//! sit in a `Vec` behind one mutex (no in-object links, so a bug that overlaps objects cannot
//! corrupt the allocator itself). Prefill is native: a sheaf is a `Vec` of objects; returned
//! sheaves of regular capacity are kept in a small "barn" within its limits. Every bug is a
//! const of the [`Bugs`] parameter, so the correct design and each broken one share all code.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use object_alloc::rcu::{DeferTarget, Deferrer};
use object_alloc::{
    AllocError, AllocFlags, AllocStats, CacheConfig, Capabilities, ConfigError, ObjectAlloc,
    PageSource, Prefill,
};

/// The deliberate bugs of a variant; all off in the correct design.
pub(crate) trait Bugs: Send + Sync + 'static {
    const NAME: &'static str;
    /// prefill(n) gathers n - 1 objects.
    const SHORT_PREFILL: bool = false;
    /// alloc on an empty sheaf falls back to the cache.
    const EMPTY_SHEAF_FALLBACK: bool = false;
    /// A failing alloc_bulk drops the objects it gathered.
    const BULK_LEAK_ON_FAILURE: bool = false;
    /// Objects are carved `align` bytes closer than their size allows.
    const OVERLAP: bool = false;
    /// ZERO is ignored (fresh chunks still read as zero; reused memory does not).
    const ZERO_IGNORED: bool = false;
    /// An in-place refill replaces the held objects by new ones and loses the old.
    const REFILL_LOSES_OLD: bool = false;
    /// Oversize sheaves are kept in the barn and handed out again.
    const KEEP_OVERSIZE: bool = false;
    /// Every refill panics.
    const PANIC_IN_REFILL: bool = false;
    /// barrier() takes three seconds.
    const SLOW_BARRIER: bool = false;
    /// Objects larger than `MAX_OBJECT_SIZE` are accepted.
    const HUGE_OBJECTS: bool = false;
    /// Deferred frees wait in a list of the freeing thread's, handed over only when that
    /// thread defers 64 of them, calls barrier, or has exited.
    const STRANDED_DEFERRALS: bool = false;
}

macro_rules! variant {
    ($name:ident, $label:literal $(, $bug:ident)?) => {
        #[derive(Debug)]
        pub(crate) struct $name;
        impl Bugs for $name {
            const NAME: &'static str = $label;
            $(const $bug: bool = true;)?
        }
    };
}

variant!(Correct, "reference");
variant!(ShortPrefill, "short-prefill", SHORT_PREFILL);
variant!(EmptyFallback, "empty-sheaf-fallback", EMPTY_SHEAF_FALLBACK);
variant!(BulkLeak, "bulk-leak", BULK_LEAK_ON_FAILURE);
variant!(Overlap, "overlap", OVERLAP);
variant!(ZeroIgnored, "zero-ignored", ZERO_IGNORED);
variant!(RefillLoses, "refill-loses", REFILL_LOSES_OLD);
variant!(KeepOversize, "keep-oversize", KEEP_OVERSIZE);
variant!(PanicInRefill, "panic-in-refill", PANIC_IN_REFILL);
variant!(SlowBarrier, "slow-barrier", SLOW_BARRIER);
variant!(HugeObjects, "huge-objects", HUGE_OBJECTS);
variant!(StrandedDeferrals, "stranded-deferrals", STRANDED_DEFERRALS);

thread_local! {
    /// Dropped when the thread exits: its `Weak`s then tell that the thread is gone.
    static ALIVE: Arc<()> = Arc::new(());
}

/// Per thread, the deferred frees it has not handed over yet, and whether it still runs.
type Stranded = Mutex<HashMap<std::thread::ThreadId, (std::sync::Weak<()>, Vec<usize>)>>;

#[derive(Debug, Default)]
struct State {
    free: Vec<usize>,
    /// Chunk base -> objects carved from it.
    chunks: HashMap<usize, usize>,
    live: u64,
    barn_full: Vec<Vec<usize>>,
    barn_empty: usize,
}

/// The shared state that deferred frees act on.
pub(crate) struct Shared {
    state: Mutex<State>,
    pages: Arc<dyn PageSource>,
    size: usize,
    carve: usize,
    chunk_bytes: usize,
    capacity: usize,
    max_full: usize,
    max_empty: usize,
    zero_ignored: bool,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("size", &self.size).finish()
    }
}

impl DeferTarget for Shared {
    unsafe fn free_now(&self, object: NonNull<u8>) {
        let mut state = self.lock();
        state.live -= 1;
        state.free.push(object.as_ptr() as usize);
    }
}

/// The one lock is held across a fork, so that a child finds the lists whole (C-CONC-3).
impl slab::fork::AtFork for Shared {
    fn lock_all(&self, held: &mut slab::fork::Held) {
        // SAFETY: registered from the design's creation until the shared state is dropped.
        unsafe { held.hold(self.lock()) };
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        slab::fork::unregister(self);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn objects_per_chunk(&self) -> usize {
        (self.chunk_bytes - self.size) / self.carve + 1
    }

    /// Adds one chunk's objects to the free list.
    fn grow(&self, state: &mut State) -> Result<(), AllocError> {
        let chunk = self
            .pages
            .alloc_chunk(self.chunk_bytes)
            .map_err(|_| AllocError::OutOfMemory)?;
        let base = chunk.as_ptr() as usize;
        let count = self.objects_per_chunk();
        state.chunks.insert(base, count);
        state
            .free
            .extend((0..count).rev().map(|i| base + i * self.carve));
        Ok(())
    }

    /// Makes sure `count` objects are free, growing unless NOWAIT.
    fn ensure(&self, state: &mut State, flags: AllocFlags, count: usize) -> Result<(), AllocError> {
        while state.free.len() < count {
            if !flags.may_grow() {
                return Err(AllocError::WouldGrow);
            }
            self.grow(state)?;
        }
        Ok(())
    }

    fn zero(&self, object: usize, flags: AllocFlags) {
        if flags.zero() && !self.zero_ignored {
            // SAFETY: the object is `size` bytes inside a chunk we hold, and now the caller's.
            unsafe { (object as *mut u8).write_bytes(0, self.size) };
        }
    }

    fn shrink(&self) {
        let mut state = self.lock();
        let kept: Vec<Vec<usize>> = std::mem::take(&mut state.barn_full);
        for sheaf in kept {
            state.free.extend(sheaf);
        }
        state.barn_empty = 0;
        let mask = !(self.chunk_bytes - 1);
        let mut free_per_chunk: HashMap<usize, usize> = HashMap::new();
        for &object in &state.free {
            *free_per_chunk.entry(object & mask).or_default() += 1;
        }
        let empty: Vec<usize> = free_per_chunk
            .into_iter()
            .filter(|(base, free)| state.chunks.get(base) == Some(free))
            .map(|(base, _)| base)
            .collect();
        if empty.is_empty() {
            return;
        }
        state.free.retain(|o| !empty.contains(&(o & mask)));
        for base in empty {
            state.chunks.remove(&base);
            // SAFETY: `base` came from `alloc_chunk(chunk_bytes)` on this source, and none of
            // its objects is live or cached any more.
            unsafe {
                self.pages.free_chunk(
                    NonNull::new(base as *mut u8).expect("chunk"),
                    self.chunk_bytes,
                )
            };
        }
    }
}

/// The reference design with bugs `B`.
pub(crate) struct Reference<B: Bugs> {
    deferrer: Deferrer<Shared>,
    stranded: Stranded,
    _bugs: PhantomData<B>,
}

impl<B: Bugs> fmt::Debug for Reference<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reference").field("name", &B::NAME).finish()
    }
}

impl<B: Bugs> Reference<B> {
    fn shared(&self) -> &Shared {
        self.deferrer.get()
    }

    fn hand_over(&self, objects: Vec<usize>) {
        for object in objects {
            // SAFETY: live objects of this cache handed to `free_deferred`, never handed over
            // before.
            unsafe {
                self.deferrer
                    .defer_free(NonNull::new(object as *mut u8).expect("an object"))
            };
        }
    }
}

impl<B: Bugs> Drop for Reference<B> {
    fn drop(&mut self) {
        self.deferrer.barrier();
        let shared = self.shared();
        let chunks: Vec<usize> = shared.lock().chunks.drain().map(|(base, _)| base).collect();
        for base in chunks {
            // SAFETY: every chunk came from `alloc_chunk(chunk_bytes)`; the cache is going away
            // and its objects with it.
            unsafe {
                shared.pages.free_chunk(
                    NonNull::new(base as *mut u8).expect("chunk"),
                    shared.chunk_bytes,
                )
            };
        }
    }
}

/// The native prefilled sheaf of [`Reference`].
pub(crate) struct RefSheaf<'a, B: Bugs> {
    cache: &'a Reference<B>,
    objects: Vec<usize>,
    capacity: usize,
    returned: bool,
}

impl<B: Bugs> fmt::Debug for RefSheaf<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefSheaf")
            .field("size", &self.objects.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<B: Bugs> RefSheaf<'_, B> {
    fn give_back(&mut self, flags: AllocFlags) {
        if self.returned {
            return;
        }
        self.returned = true;
        let shared = self.cache.shared();
        let mut state = shared.lock();
        let objects = std::mem::take(&mut self.objects);
        let oversize = self.capacity > shared.capacity;
        let _ = flags;
        if !objects.is_empty()
            && (!oversize || B::KEEP_OVERSIZE)
            && state.barn_full.len() < shared.max_full
        {
            state.barn_full.push(objects);
            return;
        }
        state.free.extend(objects);
        if !oversize && state.barn_empty < shared.max_empty {
            state.barn_empty += 1;
        }
    }
}

impl<B: Bugs> Prefill for RefSheaf<'_, B> {
    fn alloc(&mut self, flags: AllocFlags) -> Option<NonNull<u8>> {
        match self.objects.pop() {
            Some(object) => {
                let shared = self.cache.shared();
                shared.lock().live += 1;
                shared.zero(object, flags);
                NonNull::new(object as *mut u8)
            }
            None if B::EMPTY_SHEAF_FALLBACK => self.cache.alloc(flags),
            None => None,
        }
    }

    fn size(&self) -> usize {
        self.objects.len()
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn refill(&mut self, flags: AllocFlags, count: usize) -> Result<(), AllocError> {
        assert!(!B::PANIC_IN_REFILL, "refill is broken on purpose");
        let size = self.objects.len();
        if size >= count {
            return Ok(());
        }
        let shared = self.cache.shared();
        let mut state = shared.lock();
        if count <= self.capacity && !B::REFILL_LOSES_OLD {
            shared.ensure(&mut state, flags, count - size)?;
            let at = state.free.len() - (count - size);
            let fresh: Vec<usize> = state.free.drain(at..).collect();
            self.objects.extend(fresh);
        } else {
            // Replacement: a new set of `count` objects; the old ones go back (or, with the
            // bug, are lost when the refill was in place).
            shared.ensure(&mut state, flags, count)?;
            let at = state.free.len() - count;
            let fresh: Vec<usize> = state.free.drain(at..).collect();
            let old = std::mem::replace(&mut self.objects, fresh);
            if !(B::REFILL_LOSES_OLD && count <= self.capacity) {
                state.free.extend(old);
            }
            self.capacity = self.capacity.max(count);
        }
        Ok(())
    }

    fn return_with(mut self, flags: AllocFlags) {
        self.give_back(flags);
    }
}

impl<B: Bugs> Drop for RefSheaf<'_, B> {
    fn drop(&mut self) {
        self.give_back(AllocFlags::empty());
    }
}

impl<B: Bugs> ObjectAlloc for Reference<B> {
    const NAME: &'static str = B::NAME;
    const DESCRIPTION: &'static str =
        "a mutex-guarded free list over page-source chunks (self-test)";
    const CAPABILITIES: Capabilities = Capabilities {
        native_prefill: true,
        honours_nowait: true,
        uses_page_source: true,
        tracks_live_objects: true,
        sheaf_layer: true,
    };

    type Prefill<'a> = RefSheaf<'a, B>;

    fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        if !(B::HUGE_OBJECTS && config.object_size > object_alloc::MAX_OBJECT_SIZE) {
            config.validate()?;
        }
        let stride = config.stride();
        let carve = if B::OVERLAP && stride >= 2 * config.align {
            stride - config.align
        } else {
            stride
        };
        let chunk_bytes = (stride * 4)
            .next_power_of_two()
            .max(4 * object_alloc::PAGE_SIZE);
        let pages = config
            .page_source
            .clone()
            .unwrap_or_else(|| slab::page_source_for(config));
        let cache = Self {
            deferrer: Deferrer::new(Shared {
                state: Mutex::new(State::default()),
                pages,
                size: config.object_size,
                carve,
                chunk_bytes,
                capacity: config.effective_sheaf_capacity(),
                max_full: config.barn_max_full,
                max_empty: config.barn_max_empty,
                zero_ignored: B::ZERO_IGNORED,
            }),
            stranded: Mutex::default(),
            _bugs: PhantomData,
        };
        // SAFETY: the shared state stays behind the deferrer's `Arc` until dropped, and its
        // `drop` unregisters it first.
        unsafe { slab::fork::register(cache.deferrer.get()) };
        Ok(cache)
    }

    fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        let shared = self.shared();
        let mut state = shared.lock();
        shared.ensure(&mut state, flags, 1).ok()?;
        let object = state.free.pop()?;
        state.live += 1;
        drop(state);
        shared.zero(object, flags);
        NonNull::new(object as *mut u8)
    }

    unsafe fn free(&self, object: NonNull<u8>) {
        let mut state = self.shared().lock();
        state.live -= 1;
        state.free.push(object.as_ptr() as usize);
    }

    fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        let shared = self.shared();
        let mut state = shared.lock();
        if let Err(error) = shared.ensure(&mut state, flags, out.len()) {
            if B::BULK_LEAK_ON_FAILURE {
                let lost = state.free.len().min(out.len());
                let at = state.free.len() - lost;
                state.free.truncate(at);
            }
            return Err(error);
        }
        for slot in out.iter_mut() {
            let object = state.free.pop().expect("ensured");
            state.live += 1;
            shared.zero(object, flags);
            slot.write(NonNull::new(object as *mut u8).expect("non-null"));
        }
        Ok(())
    }

    unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        let mut state = self.shared().lock();
        state.live -= objects.len() as u64;
        state
            .free
            .extend(objects.iter().map(|o| o.as_ptr() as usize));
    }

    unsafe fn free_deferred(&self, object: NonNull<u8>) {
        if B::STRANDED_DEFERRALS {
            let mut stranded = self.stranded.lock().unwrap();
            let alive = ALIVE.with(Arc::downgrade);
            let (_, list) = stranded
                .entry(std::thread::current().id())
                .or_insert_with(|| (alive, Vec::new()));
            list.push(object.as_ptr() as usize);
            if list.len() >= 64 {
                let list = std::mem::take(list);
                drop(stranded);
                self.hand_over(list);
            }
            return;
        }
        // SAFETY: the caller hands over a live object of this cache.
        unsafe { self.deferrer.defer_free(object) };
    }

    fn prefill(&self, flags: AllocFlags, count: usize) -> Result<Self::Prefill<'_>, AllocError> {
        if count > object_alloc::BULK_PREFILL_MAX {
            return Err(AllocError::TooLarge {
                requested: count,
                limit: object_alloc::BULK_PREFILL_MAX,
            });
        }
        let shared = self.shared();
        let capacity = shared.capacity;
        let mut state = shared.lock();
        let want = if B::SHORT_PREFILL {
            count.saturating_sub(1)
        } else {
            count
        };
        if count <= capacity
            && let Some(index) = state.barn_full.iter().position(|s| s.len() >= want)
        {
            let objects = state.barn_full.swap_remove(index);
            let kept_capacity = capacity.max(objects.len());
            return Ok(RefSheaf {
                cache: self,
                objects,
                capacity: kept_capacity,
                returned: false,
            });
        }
        shared.ensure(&mut state, flags, want)?;
        if count <= capacity && state.barn_empty > 0 {
            state.barn_empty -= 1;
        }
        let at = state.free.len() - want;
        let objects: Vec<usize> = state.free.drain(at..).collect();
        Ok(RefSheaf {
            cache: self,
            objects,
            capacity: capacity.max(count),
            returned: false,
        })
    }

    fn barrier(&self) {
        if B::SLOW_BARRIER {
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
        if B::STRANDED_DEFERRALS {
            // Only the caller's own list and those of exited threads are reachable.
            let me = std::thread::current().id();
            let mut reachable = Vec::new();
            self.stranded
                .lock()
                .unwrap()
                .retain(|&thread, (alive, list)| {
                    if thread == me || alive.strong_count() == 0 {
                        reachable.append(list);
                    }
                    alive.strong_count() != 0
                });
            self.hand_over(reachable);
        }
        self.deferrer.barrier();
    }

    fn shrink(&self) {
        self.shared().shrink();
    }

    fn stats(&self) -> AllocStats {
        let shared = self.shared();
        let state = shared.lock();
        let mut stats = AllocStats {
            live_objects: Some(state.live),
            cached_objects: Some(state.barn_full.iter().map(|s| s.len() as u64).sum()),
            slab_bytes: Some((state.chunks.len() * shared.chunk_bytes) as u64),
            ..AllocStats::default()
        };
        stats.add("barn_full_sheaves", state.barn_full.len() as u64);
        stats.add("barn_empty_sheaves", state.barn_empty as u64);
        stats
    }
}
