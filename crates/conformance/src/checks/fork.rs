//! C-CONC-3: a process that forks while other threads use a cache gets a child that can use,
//! shrink and drop it.

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc, Prefill};
use slab::fork::{ChildOutcome, in_child};

use super::conc::{Enabled, enabled};
use super::{Ctx, Hand, Scope, alloc_bulk, describe, join, prefill, standard_config};
use crate::Verdict;

/// A child that has not finished by then is hung.
const CHILD_TIMEOUT: Duration = Duration::from_secs(5);

/// C-CONC-3: two threads run a mix of every operation on one cache while the checking thread,
/// itself holding stamped objects, forks again and again. Each child allocates (single, bulk,
/// prefilled) and checks that no object it gets is one the forking thread holds or one it got
/// already, and that the forking thread's objects kept their stamps; then it frees everything,
/// shrinks, waits for a barrier and drops the cache. A child that panics, finds a violation or
/// does not finish within 5 s fails the clause.
///
/// The cache uses the default page source (mmap, lock-free): a page source with locks of its
/// own must be fork-safe itself. Operations whose clauses already fail on their own (bulk,
/// prefill, C-OBJ-2's distinctness and stamps) are left out, so that a design is caught here
/// only for what the fork breaks.
pub(crate) fn fork_child<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let (on, left_out) = enabled(ctx);
    let forks = ctx.options.rounds(40).max(4);
    let config = standard_config();
    let cache = match A::new(&config) {
        Ok(cache) => cache,
        Err(error) => panic!("{}::new refused {}: {error}", A::NAME, describe(&config)),
    };
    let scope = ctx.scope_in(
        "C-CONC-3",
        format!(
            "{}, 2 threads, {forks} forks, default page source",
            describe(&config)
        ),
    );
    let stop = AtomicBool::new(false);
    let mut finished = 0;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let (cache, stop) = (&cache, &stop);
                s.spawn(move || hammer(cache, stop, t, on))
            })
            .collect();
        let mut hand = Hand::for_config(&config, 0xf0);
        for fork in 0..forks {
            for _ in 0..4 {
                if let Some(object) = cache.alloc(AllocFlags::empty()) {
                    hand.take(&scope, object);
                }
            }
            let outcome = in_child(CHILD_TIMEOUT, || child(&cache, &config, &scope, &hand, on));
            match outcome {
                ChildOutcome::Passed => finished += 1,
                ChildOutcome::Failed => {
                    scope.violation(
                        "C-CONC-3",
                        format!(
                            "child {} panicked or found an object handed out twice (or a \
                             stamp overwritten)",
                            fork + 1
                        ),
                    );
                    break;
                }
                ChildOutcome::Hung => {
                    scope.violation(
                        "C-CONC-3",
                        format!("child {} did not finish within 5 s (killed)", fork + 1),
                    );
                    break;
                }
            }
            if hand.len() > 32 {
                hand.free_all(&scope, &cache);
            }
        }
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().for_each(join);
        hand.free_all(&scope, &cache);
    });
    cache.barrier();
    cache.shrink();
    let mut text = format!("{finished} of {forks} children used, shrank and dropped the cache");
    if !left_out.is_empty() {
        text.push_str(&format!("; {}", left_out.join("; ")));
    }
    Verdict::Ran(text)
}

/// A worker's mix: single, bulk and prefilled allocations, single and bulk frees, some
/// objects kept across rounds.
fn hammer<A: ObjectAlloc>(cache: &A, stop: &AtomicBool, t: usize, on: Enabled) {
    let mut kept: Vec<NonNull<u8>> = Vec::new();
    let mut round = t;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        kept.extend((0..round % 29).filter_map(|_| cache.alloc(AllocFlags::empty())));
        let mut bulk = vec![std::mem::MaybeUninit::uninit(); 1 + round % 20];
        if on.bulk && cache.alloc_bulk(AllocFlags::empty(), &mut bulk).is_ok() {
            // SAFETY: filled by the successful `alloc_bulk`.
            kept.extend(bulk.iter().map(|slot| unsafe { slot.assume_init() }));
        }
        if on.prefill
            && let Ok(mut sheaf) = cache.prefill(AllocFlags::empty(), 1 + round % 12)
        {
            kept.extend((0..2).filter_map(|_| sheaf.alloc(AllocFlags::empty())));
        }
        if kept.len() > 64 {
            let gone = kept.split_off(round % 32);
            let (bulk, single) = gone.split_at(if on.bulk { gone.len() / 2 } else { 0 });
            // SAFETY: allocated above from this cache, each freed once.
            unsafe {
                cache.free_bulk(bulk);
                single.iter().for_each(|&object| cache.free(object));
            }
        }
    }
    for object in kept {
        // SAFETY: as above.
        unsafe { cache.free(object) };
    }
}

/// The child's part; `true` when every operation worked and every object was distinct.
fn child<A: ObjectAlloc>(
    cache: &A,
    config: &CacheConfig,
    scope: &Scope<'_>,
    hand: &Hand,
    on: Enabled,
) -> bool {
    let held: HashSet<NonNull<u8>> = hand.addresses().into_iter().collect();
    let mut mine = Hand::for_config(config, 0xc1);
    let mut fresh = Vec::new();
    fresh.extend((0..100).map_while(|_| cache.alloc(AllocFlags::ZERO)));
    if fresh.len() != 100 {
        return false;
    }
    if on.bulk {
        let Ok(bulk) = alloc_bulk(cache, scope, AllocFlags::empty(), 24) else {
            return false;
        };
        fresh.extend(bulk);
    }
    if on.prefill {
        let Ok(mut sheaf) = prefill(cache, scope, AllocFlags::empty(), 12) else {
            return false;
        };
        fresh.extend((0..12).map_while(|_| sheaf.alloc(AllocFlags::empty())));
    }
    let mut seen = HashSet::new();
    for object in fresh {
        if on.zero && (held.contains(&object) || !seen.insert(object)) {
            return false;
        }
        mine.take(scope, object);
    }
    // The forking thread's objects, and the child's own, kept their contents.
    if on.zero
        && !hand.live.iter().chain(&mine.live).all(|&stamped| {
            let owner = if held.contains(&stamped.object) {
                hand
            } else {
                &mine
            };
            owner.verify(scope, stamped)
        })
    {
        return false;
    }
    mine.free_all(scope, cache);
    for stamped in &hand.live {
        // SAFETY: the forking thread's objects are live and, in this process, its own to free.
        unsafe { cache.free(stamped.object) };
    }
    cache.shrink();
    cache.barrier();
    // SAFETY: only this thread exists in the child and nothing uses the cache afterwards (the
    // child leaves with `_exit`): the value is dropped where it is.
    unsafe { drop(std::ptr::read(cache)) };
    true
}
