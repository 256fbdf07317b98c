//! C-BULK-1/2: all-or-nothing bulk allocation (success path on every design; failure path by
//! page budget, NOWAIT and seeded fault injection) and free_bulk of mixed objects.

use std::ptr::NonNull;
use std::sync::Mutex;

use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc, PageSource};

use super::{
    Ctx, Fixture, Hand, alloc_bulk, describe, join, move_to_cpu, prefill, standard_config,
};
use crate::Verdict;
use crate::objects::{self, Stamped};
use crate::pages::HeldBytes;

/// C-BULK-1.
pub(crate) fn all_or_nothing<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    // Success path, every design.
    let mut successes = 0usize;
    for config in [
        standard_config(),
        CacheConfig::new(24).with_align(8),
        CacheConfig::new(1000),
    ] {
        let fixture = Fixture::<A>::new(config);
        let scope = ctx.scope(describe(&fixture.config));
        let capacity = fixture.capacity();
        let mut hand = Hand::for_config(&fixture.config, 1);
        for (i, count) in [1, 2, capacity, capacity + 1, 3 * capacity + 5, 100, 257]
            .into_iter()
            .enumerate()
        {
            let flags = if i % 2 == 0 {
                AllocFlags::empty()
            } else {
                AllocFlags::ZERO
            };
            match alloc_bulk(&fixture.cache, &scope, flags, count) {
                Ok(objects) => {
                    successes += 1;
                    for object in objects {
                        hand.take(&scope, object);
                    }
                    if let Some((a, b)) = objects::first_overlap(&hand.addresses(), fixture.size())
                    {
                        scope.violation(
                            "C-OBJ-2",
                            format!(
                                "after alloc_bulk({count}) live objects {a:#x} and {b:#x} overlap"
                            ),
                        );
                    }
                }
                Err(error) => scope.violation(
                    "C-BULK-1",
                    format!("alloc_bulk({flags:?}, {count}) failed with unlimited memory: {error}"),
                ),
            }
        }
        hand.free_all(&scope, &fixture.cache);
    }
    let mut notes = vec![format!(
        "{successes} bulk allocations (1..257 objects, 3 shapes) gave distinct, disjoint objects"
    )];
    // Failure path.
    if A::CAPABILITIES.uses_page_source {
        let (failures, runs) = bulk_failure_runs::<A>(ctx);
        notes.push(format!(
            "{runs} runs with an exhausted budget or seeded faults ({failures} failed bulk allocations): \
             nothing allocated, nothing leaked"
        ));
    } else {
        notes.push(format!(
            "failure path n/a: {} takes no page source, so a bulk allocation cannot be made to fail",
            A::NAME
        ));
    }
    Verdict::Ran(notes.join("; "))
}

/// Budget and fault-injection runs of the failure path: (failed bulk allocations, runs).
fn bulk_failure_runs<A: ObjectAlloc>(ctx: &Ctx<'_>) -> (usize, usize) {
    let mut failures = 0usize;
    // Exhausted budget: a request larger than all the memory held must fail cleanly.
    {
        let fixture = Fixture::<A>::new(standard_config());
        let scope = ctx.scope(format!(
            "{}, budget frozen after priming",
            describe(&fixture.config)
        ));
        let mut hand = Hand::for_config(&fixture.config, 1);
        for _ in 0..2 * fixture.capacity() {
            if let Some(object) = fixture.cache.alloc(AllocFlags::empty()) {
                hand.take(&scope, object);
            }
        }
        fixture.freeze_pages(0);
        // More distinct aligned addresses than the held bytes contain: no design can serve it
        // without a new page, whatever its object layout.
        let count = fixture.pages.held_bytes() / fixture.config.align + 1;
        let before = hand.len();
        match alloc_bulk(&fixture.cache, &scope, AllocFlags::empty(), count) {
            Ok(objects) => {
                scope.violation(
                    "C-BULK-1",
                    format!(
                        "alloc_bulk({count}) succeeded although the budget held only {} bytes",
                        fixture.pages.held_bytes()
                    ),
                );
                objects.into_iter().for_each(|o| {
                    hand.take(&scope, o);
                });
            }
            Err(_) => {
                failures += 1;
                fixture.check_live(&scope, "C-BULK-1", "after a failed alloc_bulk", before, 0);
            }
        }
        hand.free_all(&scope, &fixture.cache);
        fixture.expect_empty(
            &scope,
            "C-BULK-1",
            "after a failed alloc_bulk on an exhausted budget",
        );
    }
    // NOWAIT on a fresh cache: nothing is cached, so a large request may not grow it.
    if A::CAPABILITIES.honours_nowait {
        let fixture = Fixture::<A>::new(standard_config());
        let scope = ctx.scope(format!(
            "{}, NOWAIT on a fresh cache",
            describe(&fixture.config)
        ));
        let before = fixture.pages.stats().chunks_allocated;
        match alloc_bulk(&fixture.cache, &scope, AllocFlags::NOWAIT, 500) {
            Ok(objects) => {
                let after = fixture.pages.stats().chunks_allocated;
                if after > before {
                    scope.violation(
                        "C-BULK-1",
                        format!(
                            "alloc_bulk(NOWAIT, 500) on a fresh cache took {} new chunks",
                            after - before
                        ),
                    );
                }
                // SAFETY: just allocated, live, listed once.
                unsafe { fixture.cache.free_bulk(&objects) };
            }
            Err(_) => failures += 1,
        }
        fixture.expect_empty(
            &scope,
            "C-BULK-1",
            "after alloc_bulk(NOWAIT) on a fresh cache",
        );
    }
    // Seeded fault injection.
    let runs = ctx.options.fault_runs;
    for run in 0..runs {
        let mut rng = ctx.rng(&format!("bulk fault run {run}"));
        let fixture = Fixture::<A>::new(standard_config());
        let p = [0.05, 0.2, 0.5, 1.0][rng.below(4)];
        let fault_seed = rng.next_u64();
        let scope = ctx.scope(format!(
            "{}, fault run {run} of {runs} (p {p}, fault seed {fault_seed:#x})",
            describe(&fixture.config)
        ));
        let mut hand = Hand::for_config(&fixture.config, 1);
        for _ in 0..rng.below(40) {
            if let Some(object) = fixture.cache.alloc(AllocFlags::empty()) {
                hand.take(&scope, object);
            }
        }
        for _ in 0..rng.below(hand.len() + 1) {
            if let Some(stamped) = hand.pop_random(&scope, &mut rng) {
                // SAFETY: live, from this cache.
                unsafe { fixture.cache.free(stamped.object) };
            }
        }
        fixture.pages.fail_with_probability(p, fault_seed);
        let mut failed_here = false;
        for attempt in 0..rng.range(1, 4) {
            let count = rng.range(1, 300);
            let flags = if rng.chance(1, 4) {
                AllocFlags::NOWAIT
            } else {
                AllocFlags::empty()
            };
            let before = hand.len();
            match alloc_bulk(&fixture.cache, &scope, flags, count) {
                Ok(objects) => objects.into_iter().for_each(|o| {
                    hand.take(&scope, o);
                }),
                Err(_) => {
                    failures += 1;
                    failed_here = true;
                    fixture.check_live(
                        &scope,
                        "C-BULK-1",
                        &format!("after failed alloc_bulk({flags:?}, {count}) (attempt {attempt})"),
                        before,
                        0,
                    );
                }
            }
        }
        fixture.pages.fail_with_probability(0.0, 0);
        hand.free_all(&scope, &fixture.cache);
        if failed_here {
            fixture.expect_empty(&scope, "C-BULK-1", "after failed bulk allocations");
        } else {
            fixture.expect_empty(
                &scope.clone(),
                "C-OBJ-5",
                "after bulk allocations under faults",
            );
        }
    }
    (failures, runs + 2)
}

/// C-BULK-2: objects allocated on two threads on different CPUs (alloc, alloc_bulk, sheaf),
/// shuffled together, freed with free_bulk in random batches from a third thread and the main
/// one; then accounting and pages.
pub(crate) fn free_any_mix<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let rounds = ctx.options.rounds(20);
    let fixture = Fixture::<A>::new(standard_config());
    let scope = ctx.scope_in(
        "C-BULK-2",
        format!(
            "{}, 2 allocating threads, {rounds} rounds",
            describe(&fixture.config)
        ),
    );
    let size = fixture.size();
    let capacity = fixture.capacity();
    let mut rng = ctx.rng("mix");
    let mut freed = 0usize;
    for round in 0..rounds {
        let pool: Mutex<Vec<Stamped>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            let mut workers = Vec::new();
            for t in 0..2usize {
                let (fixture, scope, pool) = (&fixture, &scope, &pool);
                workers.push(s.spawn(move || {
                    move_to_cpu(t);
                    let mut hand = Hand::for_config(&fixture.config, t as u64 + 1);
                    for i in 0..3 * (capacity + 30) {
                        let object = match i % 3 {
                            0 => fixture.cache.alloc(AllocFlags::empty()),
                            1 => alloc_bulk(&fixture.cache, scope, AllocFlags::empty(), 1)
                                .ok()
                                .and_then(|v| v.first().copied()),
                            _ => prefill(&fixture.cache, scope, AllocFlags::empty(), 2)
                                .ok()
                                .and_then(|mut sheaf| {
                                    object_alloc::Prefill::alloc(&mut sheaf, AllocFlags::empty())
                                }),
                        };
                        if let Some(object) = object {
                            hand.take(scope, object);
                        }
                    }
                    pool.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(hand.live);
                }));
            }
            workers.into_iter().for_each(join);
        });
        let mut mix = pool.into_inner().unwrap_or_else(|e| e.into_inner());
        for i in (1..mix.len()).rev() {
            mix.swap(i, rng.below(i + 1));
        }
        for stamped in &mix {
            // SAFETY: live, stamped by its allocating thread.
            if let Err(what) = unsafe { objects::verify(stamped.object, size, stamped.stamp) } {
                scope.violation("C-OBJ-2", what);
            }
        }
        let split = rng.below(mix.len() + 1);
        let (here, there) = mix.split_at(split);
        let batch_sizes: Vec<usize> = (0..64).map(|_| rng.range(1, 64)).collect();
        let free_batches = |stamped: &[Stamped]| {
            let objects: Vec<NonNull<u8>> = stamped.iter().map(|s| s.object).collect();
            let mut rest = &objects[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = batch_sizes[i % batch_sizes.len()].min(rest.len());
                // SAFETY: each object is live, from this cache, listed once.
                unsafe { fixture.cache.free_bulk(&rest[..n]) };
                rest = &rest[n..];
                i += 1;
            }
        };
        std::thread::scope(|s| {
            let other = s.spawn(|| free_batches(there));
            free_batches(here);
            join(other);
        });
        freed += mix.len();
        if round % 5 == 4 {
            fixture.cache.barrier();
            fixture.check_live(
                &scope.clone(),
                "C-BULK-2",
                &format!("after round {round}'s free_bulk"),
                0,
                0,
            );
        }
    }
    fixture.expect_empty(&scope, "C-OBJ-5", "after free_bulk of mixed objects");
    Verdict::Ran(format!(
        "{freed} objects from 2 threads on different CPUs (alloc, alloc_bulk, sheaves) freed with free_bulk \
         in shuffled batches of 1..64 from 2 threads; accounting and pages checked"
    ))
}
