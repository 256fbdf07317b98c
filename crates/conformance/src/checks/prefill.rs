//! C-PREFILL-1..8. Each check takes an optional context: C-CONF-2 runs them again on a cache
//! with `sheaf_capacity = 0`, where every prefill is oversize.

use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc, Prefill};

use super::{
    Ctx, FLAG_SETS, Fixture, Hand, Scope, describe, drain_cache, empty_sheaf, join, move_to_cpu,
    needs_page_source, prefill, standard_config,
};
use crate::Verdict;
use crate::objects;
use crate::rng::Rng;

mod failed;

pub(crate) use failed::failed_prefill;

/// The configuration for a prefill check: the standard one, or capacity 0 under C-CONF-2.
pub(crate) fn config_for(context: Option<&'static str>) -> CacheConfig {
    match context {
        Some("C-CONF-2") => standard_config().with_sheaf_capacity(0),
        _ => standard_config(),
    }
}

fn scope_for<'a>(ctx: &'a Ctx<'_>, context: Option<&'static str>, repro: String) -> Scope<'a> {
    match context {
        Some(context) => ctx.scope_in(context, repro),
        None => ctx.scope(repro),
    }
}

/// Request sizes around the capacity, oversize included.
fn counts(capacity: usize) -> Vec<usize> {
    let mut counts = vec![
        0,
        1,
        2,
        capacity.saturating_sub(1),
        capacity,
        capacity + 1,
        2 * capacity + 3,
        100,
    ];
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// Allocates and frees objects so the cache has some cached and some pages held.
fn prime<A: ObjectAlloc>(fixture: &Fixture<A>, scope: &Scope<'_>, count: usize) {
    let mut hand = Hand::for_config(&fixture.config, 99);
    for _ in 0..count {
        if let Some(object) = fixture.cache.alloc(AllocFlags::empty()) {
            hand.take(scope, object);
        }
    }
    hand.free_all(scope, &fixture.cache);
}

/// The request of a seeded fault run, shared by the checks that make requests under page
/// faults: half the runs drain the cache first, so that even small requests need pages; then
/// faults are armed (`fault`: probability and seed), and the request is drawn: `min..=4 *
/// capacity + 8` or `min..=400` objects (several slabs' worth), `NOWAIT` one time in four.
/// Returns the scope (noting what was drained), the count and the flags. The draws keep this
/// order, so that a seed repeats its run.
pub(crate) fn faulted_request<'a, A: ObjectAlloc>(
    fixture: &Fixture<A>,
    scope: &Scope<'a>,
    hand: &mut Hand,
    rng: &mut Rng,
    fault: (f64, u64),
    min: usize,
) -> (Scope<'a>, usize, AllocFlags) {
    let drained = if rng.chance(1, 2) {
        drain_cache(fixture, scope, hand, 4096)
    } else {
        0
    };
    fixture.pages.fail_with_probability(fault.0, fault.1);
    let capacity = fixture.capacity();
    let count = if rng.chance(1, 2) {
        rng.range(min, 4 * capacity + 8)
    } else {
        rng.range(min, 400)
    };
    let scope = scope.with(format!("{drained} objects drained first"));
    let flags = if rng.chance(1, 4) {
        AllocFlags::NOWAIT
    } else {
        AllocFlags::empty()
    };
    (scope, count, flags)
}

/// C-PREFILL-1: prefill(n) over sizes and flags, fresh, primed and with the budget exhausted:
/// a sheaf holds at least n, or the call errs. Several sheaves are outstanding at once.
pub(crate) fn holds_n<A: ObjectAlloc>(ctx: &Ctx<'_>, context: Option<&'static str>) -> Verdict {
    let fixture = Fixture::<A>::new(config_for(context));
    let scope = scope_for(ctx, context, describe(&fixture.config));
    let mut hand = Hand::for_config(&fixture.config, 1);
    let (mut ok, mut errors) = (0usize, 0usize);
    for phase in 0..3 {
        if phase == 1 {
            prime(&fixture, &scope, 3 * fixture.capacity() + 10);
        }
        if phase == 2 {
            fixture.freeze_pages(0);
        }
        let mut outstanding = Vec::new();
        for &count in &counts(fixture.capacity()) {
            for flags in FLAG_SETS {
                let scope = scope.with(format!(
                    "phase {phase} (0 fresh, 1 primed, 2 budget exhausted)"
                ));
                match prefill(&fixture.cache, &scope, flags, count) {
                    Ok(sheaf) => {
                        ok += 1;
                        outstanding.push(sheaf);
                    }
                    Err(_) => errors += 1,
                }
            }
            if outstanding.len() > 12 {
                // Every other sheaf is emptied: its size() must be backed by real objects.
                for (i, mut sheaf) in outstanding.drain(..).enumerate() {
                    if i % 2 == 0 {
                        empty_sheaf(&mut sheaf, &mut hand, &scope, AllocFlags::empty());
                    }
                }
            }
        }
        drop(outstanding);
    }
    fixture.pages.set_limit(usize::MAX);
    hand.free_all(&scope, &fixture.cache);
    Verdict::Ran(format!(
        "prefill(n) for n in {:?} x 4 flag sets, fresh, primed and with the budget exhausted: {ok} sheaves \
         all of size() >= n, {errors} errors",
        counts(fixture.capacity())
    ))
}

/// C-PREFILL-2: sheaves prefilled to n, then the page source is exhausted and another thread
/// takes every object it can; the n allocations (cycling through the flag sets) must succeed.
pub(crate) fn n_allocs_never_fail<A: ObjectAlloc>(
    ctx: &Ctx<'_>,
    context: Option<&'static str>,
) -> Verdict {
    let fixture = Fixture::<A>::new(config_for(context));
    let capacity = fixture.capacity();
    let scope = scope_for(ctx, context, describe(&fixture.config));
    let counts: Vec<usize> = [1, capacity, capacity + 3, 3 * capacity + 1]
        .into_iter()
        .filter(|&n| n > 0)
        .collect();
    let mut served = 0usize;
    for round in 0..ctx.options.rounds(40).max(2) {
        let scope = scope.with(format!("round {round}"));
        let mut sheaves = Vec::new();
        for &count in &counts {
            if let Ok(sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), count) {
                sheaves.push((count, sheaf));
            }
        }
        if A::CAPABILITIES.uses_page_source {
            fixture.freeze_pages(0);
        }
        let hog = std::thread::scope(|s| {
            let hog = s.spawn(|| {
                move_to_cpu(1);
                let mut hog = Hand::for_config(&fixture.config, 50);
                let limit = if A::CAPABILITIES.uses_page_source {
                    100_000
                } else {
                    2_000
                };
                for _ in 0..limit {
                    match fixture.cache.alloc(AllocFlags::empty()) {
                        Some(object) => {
                            hog.take(&scope, object);
                        }
                        None => break,
                    }
                }
                hog
            });
            join(hog)
        });
        let mut hand = Hand::for_config(&fixture.config, 1);
        for (count, mut sheaf) in sheaves {
            for i in 0..count.min(sheaf.size()) {
                let flags = FLAG_SETS[i % FLAG_SETS.len()];
                match sheaf.alloc(flags) {
                    Some(object) => {
                        served += 1;
                        // SAFETY: just allocated, `size` bytes readable.
                        let nonzero = unsafe { objects::first_nonzero(object, fixture.size()) };
                        if flags.zero()
                            && let Some((offset, byte)) = nonzero
                        {
                            scope.violation(
                                "C-OBJ-3",
                                format!("sheaf alloc({flags:?}) returned an object with byte {offset} = {byte:#04x}"),
                            );
                        }
                        hand.take(&scope, object);
                    }
                    None => {
                        scope.violation(
                            "C-PREFILL-2",
                            format!(
                                "alloc({flags:?}) #{} from a sheaf prefilled to {count} failed after the page \
                                 source was exhausted and another thread took {} objects",
                                i + 1,
                                hog.len()
                            ),
                        );
                        break;
                    }
                }
            }
        }
        fixture.pages.set_limit(usize::MAX);
        let mut hog = hog;
        hog.free_all(&scope, &fixture.cache);
        hand.free_all(&scope, &fixture.cache);
    }
    Verdict::Ran(format!(
        "{served} allocations from sheaves prefilled to {counts:?} with every flag set, while the page source \
         was exhausted{} and another thread drained the cache: none failed",
        needs_page_source::<A>().map_or(String::new(), |_| " (budget n/a: no page source)"
            .to_owned())
    ))
}

/// C-PREFILL-3: after a sheaf is emptied, alloc with every flag set fails, fresh and with the
/// budget exhausted, for sheaves of several sizes.
pub(crate) fn empty_fails<A: ObjectAlloc>(ctx: &Ctx<'_>, context: Option<&'static str>) -> Verdict {
    let fixture = Fixture::<A>::new(config_for(context));
    let capacity = fixture.capacity();
    let scope = scope_for(ctx, context, describe(&fixture.config));
    let mut hand = Hand::for_config(&fixture.config, 1);
    let mut tries = 0usize;
    for phase in 0..2 {
        if phase == 1 {
            fixture.freeze_pages(0);
        }
        for count in [0, 1, capacity, 2 * capacity + 1] {
            let Ok(mut sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), count) else {
                continue;
            };
            empty_sheaf(&mut sheaf, &mut hand, &scope, AllocFlags::empty());
            if sheaf.size() != 0 {
                continue;
            }
            for flags in FLAG_SETS {
                tries += 1;
                if let Some(object) = sheaf.alloc(flags) {
                    scope.violation(
                        "C-PREFILL-3",
                        format!(
                            "alloc({flags:?}) on an emptied sheaf (prefilled to {count}, phase {phase}: \
                             0 unlimited, 1 budget exhausted) returned {:#x}",
                            object.as_ptr() as usize
                        ),
                    );
                    hand.take(&scope, object);
                }
            }
        }
    }
    fixture.pages.set_limit(usize::MAX);
    hand.free_all(&scope, &fixture.cache);
    Verdict::Ran(format!(
        "{tries} allocations on emptied sheaves (prefilled to 0, 1, capacity, 2 x capacity + 1), unlimited and \
         exhausted budget, every flag set: all returned None"
    ))
}

/// C-PREFILL-4: size() falls by exactly one per successful alloc, with cache traffic between.
pub(crate) fn size_drops_by_one<A: ObjectAlloc>(
    ctx: &Ctx<'_>,
    context: Option<&'static str>,
) -> Verdict {
    let fixture = Fixture::<A>::new(config_for(context));
    let capacity = fixture.capacity();
    let scope = scope_for(ctx, context, describe(&fixture.config));
    let mut hand = Hand::for_config(&fixture.config, 1);
    let mut rng = ctx.rng("size");
    let mut steps = 0usize;
    for round in 0..ctx.options.rounds(150).max(3) {
        let count = rng.range(0, 3 * capacity.max(3));
        let Ok(mut sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), count) else {
            continue;
        };
        while sheaf.size() > 0 {
            let before = sheaf.size();
            let flags = FLAG_SETS[rng.below(FLAG_SETS.len())];
            // Cache traffic between sheaf allocations must not touch the sheaf.
            if rng.chance(1, 3) {
                if let Some(object) = fixture.cache.alloc(AllocFlags::empty()) {
                    hand.take(&scope, object);
                }
                if sheaf.size() != before {
                    scope.violation(
                        "C-PREFILL-4",
                        format!("round {round}: a cache alloc changed the sheaf's size() from {before} to {}", sheaf.size()),
                    );
                }
            }
            match sheaf.alloc(flags) {
                Some(object) => {
                    steps += 1;
                    hand.take(&scope, object);
                    if sheaf.size() + 1 != before {
                        scope.violation(
                            "C-PREFILL-4",
                            format!(
                                "round {round} (prefilled to {count}): alloc({flags:?}) succeeded but size() went \
                                 from {before} to {}",
                                sheaf.size()
                            ),
                        );
                        break;
                    }
                }
                None => {
                    scope.violation(
                        "C-PREFILL-2",
                        format!("round {round}: alloc({flags:?}) failed on a sheaf of size() {before} (prefilled to {count})"),
                    );
                    break;
                }
            }
        }
        if hand.len() > 200 {
            hand.free_all(&scope, &fixture.cache);
        }
    }
    hand.free_all(&scope, &fixture.cache);
    Verdict::Ran(format!(
        "{steps} sheaf allocations, each lowering size() by one, with cache traffic between"
    ))
}

/// C-PREFILL-5: oversize prefills hold n; after the return (drop, return_with(empty),
/// return_with(NOWAIT)) the unused objects are free in stats() and, after free-all and shrink,
/// no page is held.
pub(crate) fn oversize<A: ObjectAlloc>(ctx: &Ctx<'_>, context: Option<&'static str>) -> Verdict {
    let fixture = Fixture::<A>::new(config_for(context));
    let capacity = fixture.capacity();
    let scope = scope_for(ctx, context, describe(&fixture.config));
    let mut hand = Hand::for_config(&fixture.config, 1);
    let mut rng = ctx.rng("oversize");
    let mut returned = 0usize;
    for round in 0..ctx.options.rounds(100).max(3) {
        let count = capacity + 1 + rng.below(4 * capacity + 20);
        let scope = scope.with(format!("round {round}, oversize prefill({count})"));
        let mut sheaf = match prefill(&fixture.cache, &scope, AllocFlags::empty(), count) {
            Ok(sheaf) => sheaf,
            Err(error) => {
                scope.violation(
                    "C-PREFILL-5",
                    format!("oversize prefill({count}) failed with unlimited memory: {error}"),
                );
                continue;
            }
        };
        if sheaf.capacity() < sheaf.size() {
            scope.violation(
                "C-PREFILL-5",
                format!(
                    "oversize sheaf has size() {} above capacity() {}",
                    sheaf.size(),
                    sheaf.capacity()
                ),
            );
        }
        let use_count = rng.below(count + 1).min(sheaf.size());
        for _ in 0..use_count {
            match sheaf.alloc(AllocFlags::empty()) {
                Some(object) => {
                    hand.take(&scope, object);
                }
                None => break,
            }
        }
        let left = sheaf.size();
        match round % 3 {
            0 => drop(sheaf),
            1 => sheaf.return_with(AllocFlags::empty()),
            _ => sheaf.return_with(AllocFlags::NOWAIT),
        }
        returned += left;
        fixture.cache.barrier();
        fixture.check_live(
            &scope,
            "C-PREFILL-5",
            &format!(
                "after returning an oversize sheaf with {left} unused objects (return mode {})",
                round % 3
            ),
            hand.len(),
            0,
        );
        if hand.len() > 300 {
            hand.free_all(&scope, &fixture.cache);
        }
    }
    hand.free_all(&scope, &fixture.cache);
    fixture.expect_empty(
        &scope,
        "C-PREFILL-5",
        "after oversize sheaves were returned and every object freed",
    );
    Verdict::Ran(format!(
        "oversize prefills (capacity + 1 .. 5 x capacity + 20) held n; {returned} unused objects returned by \
         drop, return_with(empty) and return_with(NOWAIT) counted free; nothing held after shrink"
    ))
}

/// C-PREFILL-7: prefill(0) succeeds with every flag set: on a fresh cache, with the budget at 0,
/// and many at once.
pub(crate) fn prefill_zero<A: ObjectAlloc>(
    ctx: &Ctx<'_>,
    context: Option<&'static str>,
) -> Verdict {
    let fixture = Fixture::<A>::new(config_for(context));
    let scope = scope_for(ctx, context, describe(&fixture.config));
    let mut hand = Hand::for_config(&fixture.config, 1);
    let mut calls = 0usize;
    for phase in 0..3 {
        match phase {
            0 => fixture.pages.set_limit(0),
            1 => fixture.pages.set_limit(usize::MAX),
            _ => {
                prime(&fixture, &scope, 3 * fixture.capacity() + 3);
                fixture.freeze_pages(0);
            }
        }
        let mut outstanding = Vec::new();
        for i in 0..20 {
            let flags = FLAG_SETS[i % FLAG_SETS.len()];
            calls += 1;
            match fixture.cache.prefill(flags, 0) {
                Ok(sheaf) => outstanding.push(sheaf),
                Err(error) => scope.violation(
                    "C-PREFILL-7",
                    format!(
                        "prefill({flags:?}, 0) #{i} failed (phase {phase}: 0 budget 0 on a fresh cache, 1 unlimited, \
                         2 budget frozen after priming, {} outstanding): {error}",
                        outstanding.len()
                    ),
                ),
            }
        }
        for mut sheaf in outstanding {
            empty_sheaf(&mut sheaf, &mut hand, &scope, AllocFlags::empty());
        }
    }
    fixture.pages.set_limit(usize::MAX);
    hand.free_all(&scope, &fixture.cache);
    Verdict::Ran(format!(
        "{calls} prefill(0) calls with every flag set (budget 0 on a fresh cache, unlimited, frozen after \
         priming; up to 20 outstanding): all succeeded"
    ))
}

/// C-PREFILL-8: objects from sheaves freed with free (here), free_bulk (another thread) and
/// free_deferred (a third thread); accounting and pages after a barrier.
pub(crate) fn ordinary_objects<A: ObjectAlloc>(
    ctx: &Ctx<'_>,
    context: Option<&'static str>,
) -> Verdict {
    let fixture = Fixture::<A>::new(config_for(context));
    let capacity = fixture.capacity();
    let scope = scope_for(ctx, context, describe(&fixture.config));
    let rounds = ctx.options.rounds(40).max(2);
    let mut freed = 0usize;
    for round in 0..rounds {
        let mut hand = Hand::for_config(&fixture.config, 1);
        for count in [capacity.max(1), 3 * capacity + 2] {
            if let Ok(mut sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), count) {
                empty_sheaf(&mut sheaf, &mut hand, &scope, AllocFlags::empty());
            }
        }
        let all = hand.drain(&scope);
        freed += all.len();
        let third = all.len() / 3;
        let (local, rest) = all.split_at(third);
        let (bulk, deferred) = rest.split_at(third);
        for stamped in local {
            // SAFETY: live, from this cache, freed once.
            unsafe { fixture.cache.free(stamped.object) };
        }
        std::thread::scope(|s| {
            let bulk_thread = s.spawn(|| {
                move_to_cpu(round + 1);
                let objects: Vec<_> = bulk.iter().map(|s| s.object).collect();
                // SAFETY: live, from this cache, listed once.
                unsafe { fixture.cache.free_bulk(&objects) };
            });
            let deferring_thread = s.spawn(|| {
                move_to_cpu(round);
                for stamped in deferred {
                    // SAFETY: live, from this cache, no reader holds it.
                    unsafe { fixture.cache.free_deferred(stamped.object) };
                }
            });
            join(bulk_thread);
            join(deferring_thread);
        });
        fixture.cache.barrier();
        fixture.check_live(
            &scope,
            "C-PREFILL-8",
            &format!("round {round}: after sheaf objects were freed every way"),
            0,
            0,
        );
    }
    fixture.expect_empty(
        &scope,
        "C-PREFILL-8",
        "after sheaf objects were freed with free, free_bulk and free_deferred",
    );
    Verdict::Ran(format!(
        "{freed} objects from prefilled sheaves freed by free (same thread), free_bulk and free_deferred (other \
         threads and CPUs); accounting and pages held after barrier"
    ))
}
