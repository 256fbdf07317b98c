//! C-PREFILL-6: prefills that must fail, on an exhausted budget, with NOWAIT on a fresh cache
//! and under seeded page faults.

use object_alloc::{AllocFlags, ObjectAlloc, Prefill};

use super::{config_for, faulted_request, scope_for};
use crate::Verdict;
use crate::checks::{Ctx, Fixture, Hand, Scope, describe, move_to_cpu, prefill};
use crate::pages::HeldBytes;

/// Allocates every object the cache can give without new pages (budget frozen), frees them all
/// again, and returns how many there were.
fn available_objects<A: ObjectAlloc>(fixture: &Fixture<A>, scope: &Scope<'_>) -> usize {
    let mut hand = Hand::for_config(&fixture.config, 77);
    while hand.len() < 1_000_000 {
        match fixture.cache.alloc(AllocFlags::empty()) {
            Some(object) => {
                hand.take(scope, object);
            }
            None => break,
        }
    }
    let count = hand.len();
    hand.free_all(scope, &fixture.cache);
    count
}

/// C-PREFILL-6: prefills that must fail (budget exhausted; NOWAIT with nothing cached; seeded
/// faults) return an error, leave the live count alone and lose no cached object.
pub(crate) fn failed_prefill<A: ObjectAlloc>(
    ctx: &Ctx<'_>,
    context: Option<&'static str>,
) -> Verdict {
    let caps = A::CAPABILITIES;
    if !caps.uses_page_source && !caps.honours_nowait {
        return Verdict::NotApplicable(format!(
            "{} takes no page source and does not honour NOWAIT: a prefill cannot be made to fail",
            A::NAME
        ));
    }
    let mut notes = Vec::new();
    let mut failures = 0usize;
    if caps.uses_page_source {
        move_to_cpu(0);
        let fixture = Fixture::<A>::new(config_for(context));
        let scope = scope_for(
            ctx,
            context,
            format!("{}, budget frozen after priming", describe(&fixture.config)),
        );
        let capacity = fixture.capacity();
        let mut hand = Hand::for_config(&fixture.config, 1);
        for _ in 0..2 * capacity + 5 {
            if let Some(object) = fixture.cache.alloc(AllocFlags::empty()) {
                hand.take(&scope, object);
            }
        }
        fixture.freeze_pages(0);
        let before_available = available_objects(&fixture, &scope);
        for flags in [AllocFlags::empty(), AllocFlags::NOWAIT] {
            // More distinct aligned addresses than the held bytes contain: no design can serve it
            // without a new page, whatever its object layout.
            let count = fixture.pages.held_bytes() / fixture.config.align + 1;
            match prefill(&fixture.cache, &scope, flags, count) {
                Ok(sheaf) => scope.violation(
                    "C-PREFILL-6",
                    format!(
                        "prefill({flags:?}, {count}) succeeded (size() {}) although the budget of {} bytes cannot \
                         hold {count} objects",
                        sheaf.size(),
                        fixture.pages.held_bytes()
                    ),
                ),
                Err(_) => {
                    failures += 1;
                    fixture.check_live(&scope, "C-PREFILL-6", &format!("after a failed prefill({flags:?}, {count})"), hand.len(), 0);
                }
            }
            let after_available = available_objects(&fixture, &scope);
            if after_available < before_available {
                scope.violation(
                    "C-PREFILL-6",
                    format!(
                        "a failed prefill({flags:?}, {count}) lost objects: {before_available} could be allocated \
                         without new pages before, {after_available} after"
                    ),
                );
            }
        }
        hand.free_all(&scope, &fixture.cache);
        fixture.expect_empty(
            &scope,
            "C-PREFILL-6",
            "after failed prefills on an exhausted budget",
        );
        notes
            .push("exhausted budget: errors, no object lost, nothing held after shrink".to_owned());
    }
    if caps.honours_nowait {
        let fixture = Fixture::<A>::new(config_for(context));
        let scope = scope_for(
            ctx,
            context,
            format!("{}, NOWAIT on a fresh cache", describe(&fixture.config)),
        );
        let capacity = fixture.capacity();
        for count in [1, capacity.max(1), 3 * capacity + 2] {
            let before = fixture.chunks_allocated();
            match prefill(&fixture.cache, &scope, AllocFlags::NOWAIT, count) {
                Ok(sheaf) => {
                    if let (Some(before), Some(after)) = (before, fixture.chunks_allocated())
                        && after > before
                    {
                        scope.violation(
                            "C-PREFILL-6",
                            format!(
                                "prefill(NOWAIT, {count}) on a fresh cache succeeded by taking {} new chunks",
                                after - before
                            ),
                        );
                    }
                    drop(sheaf);
                }
                Err(_) => failures += 1,
            }
        }
        fixture.expect_empty(
            &scope,
            "C-PREFILL-6",
            "after NOWAIT prefills on a fresh cache",
        );
        notes.push("NOWAIT with nothing cached: no new pages taken".to_owned());
    }
    if caps.uses_page_source {
        let runs = ctx.options.fault_runs;
        let mut fault_failures = 0usize;
        for run in 0..runs {
            let mut rng = ctx.rng(&format!("prefill fault run {run}"));
            let fixture = Fixture::<A>::new(config_for(context));
            let capacity = fixture.capacity();
            let p = [0.05, 0.2, 0.5, 1.0][rng.below(4)];
            let fault_seed = rng.next_u64();
            let scope = scope_for(
                ctx,
                context,
                format!(
                    "{}, fault run {run} of {runs} (p {p}, fault seed {fault_seed:#x})",
                    describe(&fixture.config)
                ),
            );
            let mut hand = Hand::for_config(&fixture.config, 1);
            for _ in 0..rng.below(3 * capacity + 10) {
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
            let (scope, count, flags) =
                faulted_request(&fixture, &scope, &mut hand, &mut rng, (p, fault_seed), 1);
            let failed = match prefill(&fixture.cache, &scope, flags, count) {
                Ok(mut sheaf) => {
                    let take = rng.below(count + 1).min(sheaf.size());
                    for i in 0..take {
                        match sheaf.alloc(AllocFlags::empty()) {
                            Some(object) => {
                                hand.take(&scope, object);
                            }
                            None => {
                                scope.violation(
                                    "C-PREFILL-2",
                                    format!("alloc #{} from a sheaf prefilled to {count} failed under faults", i + 1),
                                );
                                break;
                            }
                        }
                    }
                    fixture.pages.fail_with_probability(0.0, 0);
                    drop(sheaf);
                    false
                }
                Err(_) => {
                    fault_failures += 1;
                    fixture.check_live(
                        &scope,
                        "C-PREFILL-6",
                        &format!("after a failed prefill({flags:?}, {count})"),
                        hand.len(),
                        0,
                    );
                    true
                }
            };
            fixture.pages.fail_with_probability(0.0, 0);
            hand.free_all(&scope, &fixture.cache);
            if failed {
                fixture.expect_empty(&scope, "C-PREFILL-6", "after a failed prefill under faults");
            } else {
                let scope = ctx.scope_in(
                    "C-PREFILL-6",
                    format!("{}, fault run {run}", describe(&fixture.config)),
                );
                fixture.expect_empty(
                    &scope,
                    "C-RETURN-1",
                    "after a prefill under faults was used and returned",
                );
            }
        }
        failures += fault_failures;
        notes.push(format!(
            "{runs} seeded fault runs ({fault_failures} prefills failed): nothing leaked"
        ));
    }
    Verdict::Ran(format!("{failures} failed prefills; {}", notes.join("; ")))
}
