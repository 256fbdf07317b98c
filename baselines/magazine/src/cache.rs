//! The cache proper: per-CPU magazines, the depot, resizing, and the slab layer below.

use std::mem::{self, MaybeUninit};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Instant;

use crossbeam_utils::CachePadded;
use object_alloc::{AllocFlags, CacheConfig, ConfigError};
use slab::SlabPool;

use crate::MagazineTuning;
use crate::lock::{CpuGuard, CpuLock};
use slab::cpu::{self, CpuSource};

mod bulk;
mod magazine;
mod resize;
mod stat;

use magazine::{Mag, Round, as_objects, initial_rounds, next_rounds};
use stat::Stat;

/// One CPU's cache (`umem_cpu_cache_t`): loaded and previous magazines and the size of a
/// full one. `previous` is always full or empty (or absent).
#[derive(Debug)]
struct CpuMags {
    loaded: Mag,
    previous: Mag,
    /// Rounds in a full magazine (`cc_magsize`); 0 with magazines disabled.
    magsize: usize,
    /// Event counters, exact: only bumped under this CPU's lock.
    stats: [u64; Stat::ALL.len()],
}

impl CpuMags {
    #[inline]
    fn count(&mut self, stat: Stat, n: u64) {
        self.stats[stat as usize] += n;
    }

    /// Both magazines, emptied of their rounds.
    fn purge(&mut self, into: &mut Vec<NonNull<u8>>) {
        into.extend_from_slice(as_objects(&self.loaded));
        into.extend_from_slice(as_objects(&self.previous));
        self.loaded = Vec::new();
        self.previous = Vec::new();
    }
}

/// One CPU's slot, padded: other CPUs take its lock only when they collide with it, and must
/// not share its line otherwise.
#[derive(Debug)]
struct CpuCache {
    mags: CpuLock<CpuMags>,
    node: usize,
}

/// The depot (`cache_full`, `cache_empty` and their bookkeeping), behind one lock.
#[derive(Debug)]
struct Depot {
    full: Vec<Mag>,
    empty: Vec<Mag>,
    /// Acquisitions that found the lock held (`cache_depot_contention`).
    contention: u64,
    /// `contention` at the last update (`cache_depot_contention_prev`).
    contention_prev: u64,
    last_update: Instant,
    full_high_water: usize,
    empty_high_water: usize,
    resizes: u64,
}

/// The cache.
#[derive(Debug)]
pub(crate) struct Cache {
    pool: SlabPool,
    object_size: usize,
    chunk: usize,
    /// How this machine tells the calling thread's CPU (rseq or `sched_getcpu`).
    cpu_source: CpuSource,
    cpus: Box<[CachePadded<CpuCache>]>,
    depot: CachePadded<Mutex<Depot>>,
    /// Mirror of `Depot::contention` readable without the lock.
    depot_contended: AtomicU64,
    /// The magazine size in force (rounds), for stats.
    magsize: AtomicUsize,
    resize_pending: AtomicBool,
    max_full: usize,
    max_empty: usize,
    tuning: MagazineTuning,
    /// `debug.poison`: freed objects are filled with `slab::POISON_FREE` as they enter a
    /// magazine (the slab layer poisons what reaches it).
    poison: bool,
}

/// A fork takes every CPU lock (under which the depot and the slab pool are reached), then the
/// depot's, so the child finds every magazine and list whole. In the child a CPU lock still
/// held was held by a thread that is gone: its magazines are dropped unread (their objects
/// are lost) and the lock is released; forked from inside a page source, it is left to its
/// holder, which may be the forking thread.
impl slab::fork::AtFork for Cache {
    fn flag_locks(&self, out: &mut Vec<slab::fork::FlagLock>) {
        out.extend(
            self.cpus
                .iter()
                .map(|cpu| slab::fork::FlagLock(cpu.mags.flag())),
        );
    }

    fn lock_all(&self, held: &mut slab::fork::Held) {
        // SAFETY: the cache is registered from its creation to its drop.
        unsafe { held.hold(lock(&self.depot)) };
    }

    fn child(&self, fork: slab::fork::ChildFork) {
        if fork.in_page_source {
            return;
        }
        for cpu in self.cpus.iter() {
            if cpu.mags.flag().load(Ordering::Relaxed) {
                let fresh = CpuMags {
                    loaded: Vec::new(),
                    previous: Vec::new(),
                    magsize: self.magsize.load(Ordering::Relaxed),
                    stats: [0; Stat::ALL.len()],
                };
                // SAFETY: only the forking thread exists, and it is inside no operation (not
                // inside a page source), so the holder is gone.
                unsafe { cpu.mags.reset_after_fork(fresh) };
            }
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // First: a fork being prepared may hold the locks (this waits for it to finish).
        slab::fork::unregister(self);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Depot operations are pushes and pops that cannot panic halfway; a poisoned lock still
    // guards consistent lists.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// Refuses an invalid `config` with an error naming the field.
    pub(crate) fn new(config: &CacheConfig, tuning: MagazineTuning) -> Result<Self, ConfigError> {
        let pool = SlabPool::new(config)?;
        let chunk = pool.layout().stride;
        let magsize = match config.sheaf_capacity {
            Some(rounds) => rounds,
            None => initial_rounds(chunk),
        };
        let cpus = (0..slab::possible_cpus().max(1))
            .map(|cpu| {
                CachePadded::new(CpuCache {
                    mags: CpuLock::new(CpuMags {
                        loaded: Vec::new(),
                        previous: Vec::new(),
                        magsize,
                        stats: [0; Stat::ALL.len()],
                    }),
                    node: slab::node_of_cpu(config.nodes, cpu),
                })
            })
            .collect();
        Ok(Self {
            pool,
            object_size: config.object_size,
            chunk,
            cpus,
            cpu_source: cpu::cpu_source(),
            depot: CachePadded::new(Mutex::new(Depot {
                full: Vec::new(),
                empty: Vec::new(),
                contention: 0,
                contention_prev: 0,
                last_update: Instant::now(),
                full_high_water: 0,
                empty_high_water: 0,
                resizes: 0,
            })),
            depot_contended: AtomicU64::new(0),
            magsize: AtomicUsize::new(magsize),
            resize_pending: AtomicBool::new(false),
            max_full: config.barn_max_full,
            max_empty: config.barn_max_empty,
            tuning,
            poison: config.debug.poison,
        })
    }

    pub(crate) fn pool(&self) -> &SlabPool {
        &self.pool
    }

    #[inline]
    fn cpu(&self) -> &CpuCache {
        &self.cpus[cpu::current_cpu_below(self.cpu_source, self.cpus.len())]
    }

    #[inline]
    fn lock_cpu<'a>(&self, cpu: &'a CpuCache) -> CpuGuard<'a, CpuMags> {
        let (mut mags, contended) = cpu.mags.lock();
        if contended {
            mags.count(Stat::CpuLockContended, 1);
        }
        mags
    }

    // ---------------------------------------------------------------------------------
    // The depot.

    /// Takes the depot lock, counting contention (`umem_depot_alloc`'s `mutex_tryenter`),
    /// and runs the periodic update (`umem_cache_update`): if contention since the last
    /// update exceeds the threshold, a magazine resize is due.
    fn lock_depot(&self) -> MutexGuard<'_, Depot> {
        let mut depot = match self.depot.try_lock() {
            Ok(depot) => depot,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.depot_contended.fetch_add(1, Ordering::Relaxed);
                let mut depot = lock(&self.depot);
                depot.contention += 1;
                depot
            }
        };
        let now = Instant::now();
        if now.duration_since(depot.last_update) >= self.tuning.update_interval {
            let contended = depot.contention - depot.contention_prev;
            depot.contention_prev = depot.contention;
            depot.last_update = now;
            if contended > self.tuning.contention_threshold
                && next_rounds(self.magsize.load(Ordering::Relaxed), self.chunk).is_some()
            {
                self.resize_pending.store(true, Ordering::Release);
            }
        }
        depot
    }

    /// Puts a full magazine in the depot, or, at `max_full`, returns it to be emptied.
    fn depot_put_full(&self, depot: &mut Depot, mags: &mut CpuMags, mag: Mag) -> Option<Mag> {
        if depot.full.len() < self.max_full {
            depot.full.push(mag);
            depot.full_high_water = depot.full_high_water.max(depot.full.len());
            mags.count(Stat::DepotPut, 1);
            None
        } else {
            mags.count(Stat::DepotPutFail, 1);
            Some(mag)
        }
    }

    /// Puts an empty magazine in the depot, or frees it at `max_empty`.
    fn depot_put_empty(&self, depot: &mut Depot, mags: &mut CpuMags, mag: Mag) {
        debug_assert!(mag.is_empty());
        if depot.empty.len() < self.max_empty {
            depot.empty.push(mag);
            depot.empty_high_water = depot.empty_high_water.max(depot.empty.len());
            mags.count(Stat::DepotPutEmpty, 1);
        } else {
            mags.count(Stat::DepotPutEmptyFail, 1);
        }
    }

    // ---------------------------------------------------------------------------------
    // Allocation.

    #[inline]
    pub(crate) fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        let cpu = self.cpu();
        let mut mags = self.lock_cpu(cpu);
        let object = if let Some(round) = mags.loaded.pop() {
            mags.count(Stat::AllocFastpath, 1);
            drop(mags);
            round.0
        } else {
            self.alloc_miss(cpu, mags, flags.may_grow())?
        };
        if flags.zero() {
            // SAFETY: the object is `object_size` writable bytes now owned by the caller.
            unsafe { object.as_ptr().write_bytes(0, self.object_size) };
        }
        Some(object)
    }

    /// The loaded magazine is empty: previous, then the depot, then the slab layer.
    #[cold]
    fn alloc_miss(
        &self,
        cpu: &CpuCache,
        mut mags: CpuGuard<'_, CpuMags>,
        may_grow: bool,
    ) -> Option<NonNull<u8>> {
        if self.reload_for_alloc(&mut mags) {
            let round = mags.loaded.pop().expect("reloaded with rounds");
            mags.count(Stat::AllocFastpath, 1);
            drop(mags);
            self.resize_if_due();
            return Some(round.0);
        }
        mags.count(Stat::AllocSlowpath, 1);
        drop(mags);
        self.resize_if_due();
        let mut slot = [MaybeUninit::uninit()];
        self.pool.alloc_bulk(cpu.node, may_grow, &mut slot).ok()?;
        // SAFETY: a successful `alloc_bulk` wrote the slot.
        Some(unsafe { slot[0].assume_init() })
    }

    /// Makes the loaded magazine non-empty if the magazine layer can: swap with a full
    /// previous, or exchange the empty previous for a full magazine of the depot.
    fn reload_for_alloc(&self, mags: &mut CpuMags) -> bool {
        if !mags.loaded.is_empty() {
            return true;
        }
        if !mags.previous.is_empty() {
            mem::swap(&mut mags.loaded, &mut mags.previous);
            mags.count(Stat::MagazineSwap, 1);
            return true;
        }
        if mags.magsize == 0 {
            return false;
        }
        let mut depot = self.lock_depot();
        let Some(full) = depot.full.pop() else {
            drop(depot);
            mags.count(Stat::DepotGetFail, 1);
            return false;
        };
        mags.count(Stat::DepotGet, 1);
        // Both magazines are empty: previous goes to the depot, loaded becomes previous.
        let empty = mem::replace(&mut mags.previous, mem::replace(&mut mags.loaded, full));
        if empty.capacity() > 0 {
            self.depot_put_empty(&mut depot, mags, empty);
        }
        true
    }

    // ---------------------------------------------------------------------------------
    // Free.

    #[inline]
    pub(crate) unsafe fn free(&self, object: NonNull<u8>) {
        if self.poison {
            // SAFETY: the object is the caller's until it is in a magazine.
            unsafe {
                object
                    .as_ptr()
                    .write_bytes(slab::POISON_FREE, self.object_size)
            };
        }
        let cpu = self.cpu();
        let mut mags = self.lock_cpu(cpu);
        if mags.loaded.len() < mags.magsize && mags.loaded.capacity() > 0 {
            mags.loaded.push(Round(object));
            mags.count(Stat::FreeFastpath, 1);
            return;
        }
        // SAFETY: the caller's contract.
        unsafe { self.free_miss(mags, object) };
    }

    /// The loaded magazine is full (or absent): previous, then the depot, then a new
    /// magazine; the slab layer only with magazines disabled.
    ///
    /// # Safety
    ///
    /// As [`Cache::free`].
    #[cold]
    unsafe fn free_miss(&self, mut mags: CpuGuard<'_, CpuMags>, object: NonNull<u8>) {
        if self.reload_for_free(&mut mags) {
            mags.loaded.push(Round(object));
            mags.count(Stat::FreeFastpath, 1);
            drop(mags);
        } else {
            mags.count(Stat::FreeSlowpath, 1);
            drop(mags);
            // SAFETY: a live object of the pool, handed over by the caller.
            unsafe { self.pool.free(object) };
        }
        self.resize_if_due();
    }

    /// Makes room in the loaded magazine if the magazine layer can: swap with an empty
    /// previous, or exchange the full previous for an empty magazine (from the depot, or a
    /// new one).
    fn reload_for_free(&self, mags: &mut CpuMags) -> bool {
        if mags.loaded.capacity() > 0 && mags.loaded.len() < mags.magsize {
            return true;
        }
        if mags.previous.capacity() > 0 && mags.previous.is_empty() {
            mem::swap(&mut mags.loaded, &mut mags.previous);
            mags.count(Stat::MagazineSwap, 1);
            return true;
        }
        if mags.magsize == 0 {
            return false;
        }
        let mut depot = self.lock_depot();
        let empty = match depot.empty.pop() {
            Some(empty) => {
                mags.count(Stat::DepotGetEmpty, 1);
                empty
            }
            None => {
                drop(depot);
                mags.count(Stat::MagazineAlloc, 1);
                let empty = Vec::with_capacity(mags.magsize);
                depot = self.lock_depot();
                empty
            }
        };
        // Loaded is full (or absent), previous full (or absent): previous goes to the depot,
        // loaded becomes previous, the empty one is loaded.
        let full = mem::replace(&mut mags.previous, mem::replace(&mut mags.loaded, empty));
        let refused = if full.capacity() > 0 {
            self.depot_put_full(&mut depot, mags, full)
        } else {
            None
        };
        drop(depot);
        if let Some(mut full) = refused {
            // The depot is at its limit: the rounds go back to their slabs.
            // SAFETY: rounds are free objects of the pool, each held once.
            unsafe { self.pool.free_bulk(as_objects(&full)) };
            full.clear();
            let mut depot = self.lock_depot();
            self.depot_put_empty(&mut depot, mags, full);
        }
        true
    }
}
