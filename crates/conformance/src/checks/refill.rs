//! C-REFILL-1..4: refill that changes nothing, tops up in place, replaces, or fails cleanly.

use object_alloc::{AllocFlags, ObjectAlloc, Prefill};

use super::{
    Ctx, FLAG_SETS, Fixture, Hand, Scope, describe, drain_cache, empty_sheaf, move_to_cpu, prefill,
    standard_config,
};
use crate::Verdict;
use crate::objects;

/// Takes `count` objects out of `sheaf` into `hand`.
fn take<P: Prefill>(sheaf: &mut P, hand: &mut Hand, scope: &Scope<'_>, count: usize) {
    for _ in 0..count {
        match sheaf.alloc(AllocFlags::empty()) {
            Some(object) => {
                hand.take(scope, object);
            }
            None => break,
        }
    }
}

/// Checks that every object now in `sheaf` is distinct from the live ones, by taking them all.
fn drain_and_check_distinct<P: Prefill>(
    sheaf: &mut P,
    hand: &mut Hand,
    scope: &Scope<'_>,
    size: usize,
) {
    empty_sheaf(sheaf, hand, scope, AllocFlags::empty());
    if let Some((a, b)) = objects::first_overlap(&hand.addresses(), size) {
        scope.violation(
            "C-OBJ-2",
            format!("after a refill, live objects {a:#x} and {b:#x} overlap (a refilled object was already live)"),
        );
    }
}

/// C-REFILL-1: refill(n) with size() >= n succeeds and changes neither size nor capacity, even
/// with the budget at 0 and NOWAIT.
pub(crate) fn no_op<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let fixture = Fixture::<A>::new(standard_config());
    let capacity = fixture.capacity();
    let scope = ctx.scope(describe(&fixture.config));
    let mut hand = Hand::for_config(&fixture.config, 1);
    let mut calls = 0usize;
    for count in [1, capacity, 3 * capacity + 1] {
        let Ok(mut sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), count) else {
            continue;
        };
        take(&mut sheaf, &mut hand, &scope, count / 3);
        fixture.freeze_pages(0);
        let size = sheaf.size();
        let cap = sheaf.capacity();
        for target in [0, size / 2, size] {
            for flags in FLAG_SETS {
                calls += 1;
                match sheaf.refill(flags, target) {
                    Ok(()) => {
                        if sheaf.size() != size || sheaf.capacity() != cap {
                            scope.violation(
                                "C-REFILL-1",
                                format!(
                                    "refill({flags:?}, {target}) on a sheaf of size() {size}, capacity() {cap} changed \
                                     them to {}, {}",
                                    sheaf.size(),
                                    sheaf.capacity()
                                ),
                            );
                        }
                    }
                    Err(error) => scope.violation(
                        "C-REFILL-1",
                        format!(
                            "refill({flags:?}, {target}) on a sheaf of size() {size} failed (budget at 0): {error}"
                        ),
                    ),
                }
            }
        }
        drain_and_check_distinct(&mut sheaf, &mut hand, &scope, fixture.size());
        fixture.pages.set_limit(usize::MAX);
    }
    hand.free_all(&scope, &fixture.cache);
    fixture.expect_empty(&scope, "C-REFILL-1", "after no-op refills");
    Verdict::Ran(format!(
        "{calls} refill(n <= size()) calls with every flag set and the budget at 0: all succeeded, size() and \
         capacity() unchanged, nothing leaked"
    ))
}

/// C-REFILL-2: sheaves partly used and topped up to n <= capacity(), many times: size() >= n,
/// capacity() unchanged, the objects distinct from live ones, nothing lost.
pub(crate) fn in_place<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let fixture = Fixture::<A>::new(standard_config());
    let capacity = fixture.capacity();
    let scope = ctx.scope(describe(&fixture.config));
    let mut rng = ctx.rng("in place");
    let mut hand = Hand::for_config(&fixture.config, 1);
    let mut refills = 0usize;
    for round in 0..ctx.options.rounds(150).max(4) {
        let Ok(mut sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), capacity) else {
            continue;
        };
        let cap = sheaf.capacity();
        for _ in 0..3 {
            take(&mut sheaf, &mut hand, &scope, rng.range(1, cap.max(1)));
            let size = sheaf.size();
            let target = rng.range(size + 1, cap.max(size + 1));
            let flags = if rng.chance(1, 3) {
                AllocFlags::ZERO
            } else {
                AllocFlags::empty()
            };
            refills += 1;
            match sheaf.refill(flags, target) {
                Ok(()) => {
                    if sheaf.size() < target || sheaf.capacity() != cap {
                        scope.violation(
                            "C-REFILL-2",
                            format!(
                                "round {round}: refill({flags:?}, {target}) from size() {size}, capacity() {cap} gave \
                                 size() {}, capacity() {}",
                                sheaf.size(),
                                sheaf.capacity()
                            ),
                        );
                    }
                    fixture.check_live(
                        &scope,
                        "C-REFILL-2",
                        &format!("round {round}: after refill({target}) in place from size() {size}"),
                        hand.len(),
                        sheaf.size(),
                    );
                }
                Err(error) => scope.violation(
                    "C-REFILL-2",
                    format!("round {round}: refill({flags:?}, {target}) failed with unlimited memory: {error}"),
                ),
            }
        }
        drain_and_check_distinct(&mut sheaf, &mut hand, &scope, fixture.size());
        drop(sheaf);
        if hand.len() > 200 {
            hand.free_all(&scope, &fixture.cache);
        }
    }
    hand.free_all(&scope, &fixture.cache);
    fixture.expect_empty(
        &scope,
        "C-REFILL-2",
        "after in-place refills (objects held before a refill lost?)",
    );
    Verdict::Ran(format!(
        "{refills} in-place refills of partly used sheaves: size() >= n, capacity() unchanged, objects distinct, \
         nothing lost"
    ))
}

/// C-REFILL-3: refill(n) with n > capacity(): size() >= n, capacity() >= n, and the old objects
/// back in the cache (accounting, and nothing held after shrink).
pub(crate) fn replace<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let fixture = Fixture::<A>::new(standard_config());
    let capacity = fixture.capacity();
    let scope = ctx.scope(describe(&fixture.config));
    let mut rng = ctx.rng("replace");
    let mut hand = Hand::for_config(&fixture.config, 1);
    let mut refills = 0usize;
    for round in 0..ctx.options.rounds(120).max(4) {
        let start = rng.range(0, capacity);
        let Ok(mut sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), start) else {
            continue;
        };
        take(&mut sheaf, &mut hand, &scope, rng.below(start + 1));
        let size = sheaf.size();
        let cap = sheaf.capacity();
        let target = cap + 1 + rng.below(3 * capacity + 5);
        refills += 1;
        match sheaf.refill(AllocFlags::empty(), target) {
            Ok(()) => {
                if sheaf.size() < target || sheaf.capacity() < target {
                    scope.violation(
                        "C-REFILL-3",
                        format!(
                            "round {round}: refill({target}) beyond capacity() {cap} (size() {size}) gave size() {}, \
                             capacity() {}",
                            sheaf.size(),
                            sheaf.capacity()
                        ),
                    );
                }
                fixture.check_live(
                    &scope,
                    "C-REFILL-3",
                    &format!("round {round}: after refill({target}) replaced a sheaf of size() {size}"),
                    hand.len(),
                    sheaf.size(),
                );
            }
            Err(error) => scope.violation(
                "C-REFILL-3",
                format!("round {round}: refill({target}) beyond capacity() {cap} failed with unlimited memory: {error}"),
            ),
        }
        let leave = rng.below(sheaf.size() + 1);
        let use_count = sheaf.size() - leave;
        take(&mut sheaf, &mut hand, &scope, use_count);
        drop(sheaf);
        fixture.cache.barrier();
        fixture.check_live(
            &scope,
            "C-REFILL-3",
            &format!("round {round}: after returning the replacement"),
            hand.len(),
            0,
        );
        if hand.len() > 200 {
            hand.free_all(&scope, &fixture.cache);
        }
    }
    hand.free_all(&scope, &fixture.cache);
    fixture.expect_empty(
        &scope,
        "C-REFILL-3",
        "after replacing refills (old objects not returned?)",
    );
    Verdict::Ran(format!(
        "{refills} refills beyond capacity(): size() and capacity() >= n, old objects back in the cache, nothing \
         held after shrink"
    ))
}

/// A failed refill must leave size() and capacity() as they were, with every object usable,
/// and the live count must then match the objects of `hand` and `elsewhere` more held outside
/// it, `when` naming the moment (C-REFILL-4).
#[allow(clippy::too_many_arguments)]
fn after_failed_refill<A: ObjectAlloc, P: Prefill>(
    fixture: &Fixture<A>,
    sheaf: &mut P,
    hand: &mut Hand,
    scope: &Scope<'_>,
    before: (usize, usize),
    what: &str,
    when: &str,
    elsewhere: usize,
) {
    let size = fixture.size();
    if (sheaf.size(), sheaf.capacity()) != before {
        scope.violation(
            "C-REFILL-4",
            format!(
                "{what} failed but changed size()/capacity() from {:?} to {:?}",
                before,
                (sheaf.size(), sheaf.capacity())
            ),
        );
    }
    let expected = sheaf.size();
    let start = hand.len();
    for i in 0..expected {
        match sheaf.alloc(AllocFlags::empty()) {
            Some(object) => {
                hand.take(scope, object);
            }
            None => {
                scope.violation(
                    "C-REFILL-4",
                    format!(
                        "after {what} failed, alloc #{} of the {expected} objects left failed",
                        i + 1
                    ),
                );
                break;
            }
        }
    }
    let taken: Vec<_> = hand.live[start..].to_vec();
    for stamped in taken {
        hand.verify(scope, stamped);
    }
    if let Some((a, b)) = objects::first_overlap(&hand.addresses(), size) {
        scope.violation(
            "C-OBJ-2",
            format!(
                "after {what} failed, objects left in the sheaf overlap live ones: {a:#x}, {b:#x}"
            ),
        );
    }
    fixture.check_live(
        scope,
        "C-REFILL-4",
        when,
        hand.len() + elsewhere,
        sheaf.size(),
    );
}

/// C-REFILL-4: refills that must fail (everything drained and the budget frozen; NOWAIT with
/// nothing cached; seeded faults) leave the sheaf as it was, its objects usable, nothing leaked.
pub(crate) fn failed_refill<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let caps = A::CAPABILITIES;
    if !caps.uses_page_source && !caps.honours_nowait {
        return Verdict::NotApplicable(format!(
            "{} takes no page source and does not honour NOWAIT: a refill cannot be made to fail",
            A::NAME
        ));
    }
    move_to_cpu(0);
    let mut failures = 0usize;
    let mut notes = Vec::new();
    // Drained cache: nothing cached anywhere, and no new page allowed (budget) or asked (NOWAIT).
    for mode in 0..2 {
        if (mode == 0 && !caps.uses_page_source) || (mode == 1 && !caps.honours_nowait) {
            continue;
        }
        let fixture = Fixture::<A>::new(standard_config());
        let capacity = fixture.capacity();
        let scope = ctx.scope(format!(
            "{}, {}",
            describe(&fixture.config),
            if mode == 0 {
                "cache drained, budget frozen"
            } else {
                "cache drained, NOWAIT"
            }
        ));
        let flags = if mode == 0 {
            AllocFlags::empty()
        } else {
            AllocFlags::NOWAIT
        };
        let mut hand = Hand::for_config(&fixture.config, 1);
        for target in [capacity, 4 * capacity + 3] {
            let Ok(mut sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), capacity)
            else {
                continue;
            };
            take(&mut sheaf, &mut hand, &scope, capacity / 2);
            fixture.freeze_pages(0);
            let mut drained = Hand::for_config(&fixture.config, 2);
            while drained.len() < 1_000_000 {
                match fixture.cache.alloc(AllocFlags::NOWAIT) {
                    Some(object) => {
                        drained.take(&scope, object);
                    }
                    None => break,
                }
            }
            if mode == 1 {
                fixture.pages.set_limit(usize::MAX);
            }
            let before = (sheaf.size(), sheaf.capacity());
            let chunks = fixture.chunks_allocated();
            let what = format!(
                "refill({flags:?}, {target}) with {} objects drained",
                drained.len()
            );
            match sheaf.refill(flags, target) {
                Ok(()) => {
                    if mode == 1
                        && let (Some(b), Some(a)) = (chunks, fixture.chunks_allocated())
                        && a > b
                    {
                        scope.violation(
                            "C-REFILL-4",
                            format!("{what} succeeded by taking {} new chunks", a - b),
                        );
                    }
                }
                Err(_) => {
                    failures += 1;
                    after_failed_refill(
                        &fixture,
                        &mut sheaf,
                        &mut hand,
                        &scope,
                        before,
                        &what,
                        &format!("after {what}"),
                        drained.len(),
                    );
                }
            }
            fixture.pages.set_limit(usize::MAX);
            drop(sheaf);
            drained.free_all(&scope, &fixture.cache);
        }
        hand.free_all(&scope, &fixture.cache);
        fixture.expect_empty(&scope, "C-REFILL-4", "after failed refills");
    }
    if failures > 0 {
        notes.push(format!("{failures} refills failed on a drained cache"));
    }
    if caps.uses_page_source {
        let runs = ctx.options.fault_runs;
        let mut fault_failures = 0usize;
        for run in 0..runs {
            let mut rng = ctx.rng(&format!("refill fault run {run}"));
            let fixture = Fixture::<A>::new(standard_config());
            let capacity = fixture.capacity();
            let p = [0.05, 0.2, 0.5, 1.0][rng.below(4)];
            let fault_seed = rng.next_u64();
            let repro = format!(
                "{}, fault run {run} of {runs} (p {p}, fault seed {fault_seed:#x})",
                describe(&fixture.config)
            );
            let scope = ctx.scope(repro.clone());
            let mut hand = Hand::for_config(&fixture.config, 1);
            let start = rng.range(0, 2 * capacity);
            let Ok(mut sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), start) else {
                continue;
            };
            take(&mut sheaf, &mut hand, &scope, rng.below(start + 1));
            // Half the runs drain the cache first, so that even an in-place refill needs pages;
            // targets reach several slabs' worth.
            let drained = if rng.chance(1, 2) {
                drain_cache(&fixture, &scope, &mut hand, 4096)
            } else {
                0
            };
            fixture.pages.fail_with_probability(p, fault_seed);
            let target = if rng.chance(1, 2) {
                rng.range(0, 4 * capacity + 8)
            } else {
                rng.range(0, 400)
            };
            let scope = scope.with(format!("{drained} objects drained first"));
            let flags = if rng.chance(1, 4) {
                AllocFlags::NOWAIT
            } else {
                AllocFlags::empty()
            };
            let before = (sheaf.size(), sheaf.capacity());
            let what = format!(
                "refill({flags:?}, {target}) from size() {}, capacity() {}",
                before.0, before.1
            );
            let failed = match sheaf.refill(flags, target) {
                Ok(()) => {
                    let clause = if target <= before.1 {
                        "C-REFILL-2"
                    } else {
                        "C-REFILL-3"
                    };
                    if sheaf.size() < target {
                        scope.violation(
                            clause,
                            format!("{what} succeeded with size() {}", sheaf.size()),
                        );
                    }
                    false
                }
                Err(_) => {
                    fault_failures += 1;
                    fixture.pages.fail_with_probability(0.0, 0);
                    after_failed_refill(
                        &fixture,
                        &mut sheaf,
                        &mut hand,
                        &scope,
                        before,
                        &what,
                        &format!("after {what} failed"),
                        0,
                    );
                    true
                }
            };
            fixture.pages.fail_with_probability(0.0, 0);
            empty_sheaf(&mut sheaf, &mut hand, &scope, AllocFlags::empty());
            drop(sheaf);
            hand.free_all(&scope, &fixture.cache);
            if failed {
                fixture.expect_empty(&scope, "C-REFILL-4", &format!("after {what} failed"));
            } else {
                let clause = if target <= before.1 {
                    "C-REFILL-2"
                } else {
                    "C-REFILL-3"
                };
                fixture.expect_empty(
                    &ctx.scope_in("C-REFILL-4", repro),
                    clause,
                    &format!("after {what} succeeded"),
                );
            }
        }
        notes.push(format!("{runs} seeded fault runs ({fault_failures} refills failed): sheaf unchanged, objects usable, nothing leaked"));
    }
    Verdict::Ran(notes.join("; "))
}
