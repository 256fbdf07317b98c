//! A slab pool used directly is usable in a child process whatever the parent's threads were
//! doing at the fork (C-CONC-3): node locks are taken by the fork's prepare handler.

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object_alloc::{CacheConfig, PageError, PageSource, PageSourceStats};
use slab::fork::{ChildOutcome, in_child};
use slab::{MmapPages, SlabPool};

const FORKS: usize = if cfg!(debug_assertions) { 100 } else { 200 };

/// Pages that take a while to come and go.
#[derive(Debug, Default)]
struct SlowPages(MmapPages);

// SAFETY: every chunk comes from `inner` and goes back to it.
unsafe impl PageSource for SlowPages {
    fn name(&self) -> &'static str {
        "slow"
    }

    fn alloc_chunk(&self, bytes: usize) -> Result<NonNull<u8>, PageError> {
        std::thread::sleep(Duration::from_micros(30));
        self.0.alloc_chunk(bytes)
    }

    unsafe fn free_chunk(&self, chunk: NonNull<u8>, bytes: usize) {
        // SAFETY: forwarded: the chunk came from the inner source.
        unsafe { self.0.free_chunk(chunk, bytes) }
    }

    fn stats(&self) -> PageSourceStats {
        self.0.stats()
    }
}

fn take(pool: &SlabPool, count: usize) -> Option<Vec<NonNull<u8>>> {
    let mut out = vec![MaybeUninit::uninit(); count];
    pool.alloc_bulk(0, true, &mut out).ok()?;
    // SAFETY: filled by the successful `alloc_bulk`.
    Some(
        out.iter()
            .map(|slot| unsafe { slot.assume_init() })
            .collect(),
    )
}

fn hammer(pool: &SlabPool, stop: &AtomicBool, shrinks: bool) {
    let mut kept = Vec::new();
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        kept.extend(take(pool, 1 + round % 40 * 50).unwrap());
        let mut sheaf = [MaybeUninit::uninit(); 16];
        let got = pool.refill(0, true, 4, &mut sheaf).unwrap();
        // SAFETY: `refill` wrote the first `got` slots.
        kept.extend(
            sheaf[..got]
                .iter()
                .map(|slot| unsafe { slot.assume_init() }),
        );
        if kept.len() > 4000 {
            let gone = kept.split_off(round % 1000);
            // SAFETY: taken from this pool above, freed once.
            unsafe { pool.free_bulk(&gone) };
        }
        if shrinks && round.is_multiple_of(32) {
            pool.shrink();
        }
    }
    // SAFETY: as above.
    unsafe { pool.free_bulk(&kept) };
}

fn child_body(pool: &Arc<SlabPool>, mine: &[NonNull<u8>]) -> bool {
    let held: HashSet<_> = mine.iter().copied().collect();
    let Some(objects) = take(pool, 500) else {
        return false;
    };
    let distinct: HashSet<_> = objects.iter().copied().collect();
    if distinct.len() != objects.len() || objects.iter().any(|object| held.contains(object)) {
        return false;
    }
    // SAFETY: taken above (or, `mine`, by the forking thread before the fork), freed once.
    unsafe {
        pool.free_bulk(&objects);
        pool.free_bulk(mine);
    }
    pool.shrink();
    pool.check_invariants();
    // SAFETY: only this thread exists in the child, and nothing uses the pool afterwards (the
    // child leaves with `_exit`).
    unsafe { drop(std::ptr::read(Arc::as_ptr(pool))) };
    true
}

#[test]
fn c_conc_3_fork_slab_pool() {
    let config = CacheConfig::new(64).with_page_source(Arc::new(SlowPages::default()));
    let pool = Arc::new(SlabPool::new(&config).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|worker| {
            let (pool, stop) = (pool.clone(), stop.clone());
            std::thread::spawn(move || hammer(&pool, &stop, worker == 0))
        })
        .collect();
    let mut finished = 0;
    let mut failure = None;
    for fork in 0..FORKS {
        let mine = take(&pool, 8).unwrap();
        match in_child(Duration::from_secs(5), || child_body(&pool, &mine)) {
            ChildOutcome::Passed => finished += 1,
            outcome => {
                failure = Some((fork + 1, outcome));
                break;
            }
        }
        // SAFETY: taken above, freed once (in this process).
        unsafe { pool.free_bulk(&mine) };
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    eprintln!("slab pool: {finished} of {FORKS} children finished");
    assert_eq!(failure, None, "{finished} children finished before");
    pool.check_invariants();
}
