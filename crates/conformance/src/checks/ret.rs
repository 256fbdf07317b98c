//! C-RETURN-1..4: returns lose nothing, NOWAIT returns never grow, barn limits hold, oversize
//! sheaves are not kept.

use object_alloc::{AllocFlags, AllocStats, NodeMap, ObjectAlloc, PageSource, Prefill};

use super::{
    Ctx, Fixture, Hand, Scope, describe, join, move_to_cpu, needs_page_source, prefill,
    standard_config,
};
use crate::Verdict;

/// Returns `sheaf` in one of three ways, by `mode`: drop, return_with(empty),
/// return_with(NOWAIT).
fn give_back<P: Prefill>(sheaf: P, mode: usize) {
    match mode % 3 {
        0 => drop(sheaf),
        1 => sheaf.return_with(AllocFlags::empty()),
        _ => sheaf.return_with(AllocFlags::NOWAIT),
    }
}

const RETURN_MODES: [&str; 3] = ["drop", "return_with(empty)", "return_with(NOWAIT)"];

/// C-RETURN-1: sheaves returned with every size from 0 to capacity, in every way, lose none of
/// their objects (accounting after each, nothing held after shrink); with a page source, also
/// under seeded faults during the return.
pub(crate) fn any_size<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let fixture = Fixture::<A>::new(standard_config());
    let capacity = fixture.capacity();
    let scope = ctx.scope(describe(&fixture.config));
    let mut hand = Hand::for_config(&fixture.config, 1);
    let mut returns = 0usize;
    for round in 0..ctx.options.rounds(20).max(2) {
        for left in 0..=capacity {
            for (mode, mode_name) in RETURN_MODES.iter().enumerate() {
                let Ok(mut sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), capacity)
                else {
                    continue;
                };
                let cap = sheaf.capacity();
                while sheaf.size() > left {
                    match sheaf.alloc(AllocFlags::empty()) {
                        Some(object) => {
                            hand.take(&scope, object);
                        }
                        None => break,
                    }
                }
                let size = sheaf.size();
                give_back(sheaf, mode);
                returns += 1;
                fixture.check_live(
                    &scope,
                    "C-RETURN-1",
                    &format!("round {round}: after {mode_name} of a sheaf of size() {size}, capacity() {cap}"),
                    hand.len(),
                    0,
                );
            }
            if hand.len() > 200 {
                hand.free_all(&scope, &fixture.cache);
            }
        }
    }
    hand.free_all(&scope, &fixture.cache);
    fixture.expect_empty(
        &scope,
        "C-RETURN-1",
        "after sheaves of every size were returned",
    );
    let mut notes = vec![format!(
        "{returns} returns (sizes 0..={capacity}, by drop, return_with(empty), return_with(NOWAIT)): no object lost"
    )];
    if A::CAPABILITIES.uses_page_source {
        let runs = ctx.options.fault_runs;
        for run in 0..runs {
            let mut rng = ctx.rng(&format!("return fault run {run}"));
            let fixture = Fixture::<A>::new(standard_config());
            let p = [0.05, 0.2, 0.5, 1.0][rng.below(4)];
            let fault_seed = rng.next_u64();
            let scope = ctx.scope(format!(
                "{}, fault run {run} of {runs} (p {p}, fault seed {fault_seed:#x})",
                describe(&fixture.config)
            ));
            let mut hand = Hand::for_config(&fixture.config, 1);
            let mut sheaves = Vec::new();
            for _ in 0..rng.range(1, 4) {
                let count = rng.range(0, 2 * capacity);
                if let Ok(mut sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), count) {
                    for _ in 0..rng.below(count + 1) {
                        if let Some(object) = sheaf.alloc(AllocFlags::empty()) {
                            hand.take(&scope, object);
                        }
                    }
                    sheaves.push(sheaf);
                }
            }
            for _ in 0..rng.below(3 * capacity) {
                if let Some(object) = fixture.cache.alloc(AllocFlags::empty()) {
                    hand.take(&scope, object);
                }
            }
            fixture.pages.fail_with_probability(p, fault_seed);
            while let Some(sheaf) = sheaves.pop() {
                give_back(sheaf, rng.below(3));
                // Objects still in outstanding sheaves may count as live or as cached.
                let outstanding: usize = sheaves.iter().map(Prefill::size).sum();
                fixture.check_live(
                    &scope,
                    "C-RETURN-1",
                    "after a return under faults",
                    hand.len(),
                    outstanding,
                );
            }
            fixture.pages.fail_with_probability(0.0, 0);
            hand.free_all(&scope, &fixture.cache);
            fixture.expect_empty(&scope, "C-RETURN-1", "after returns under faults");
        }
        notes.push(format!(
            "{runs} seeded fault runs failing page requests during returns: nothing lost"
        ));
    } else if let Some(reason) = needs_page_source::<A>() {
        notes.push(format!("fault runs n/a: {reason}"));
    }
    Verdict::Ran(notes.join("; "))
}

/// C-RETURN-2: a partly used sheaf is returned with NOWAIT when no object is free anywhere, so
/// keeping it full would need new pages; no chunk may be taken (also with every page request
/// failing), and no object lost.
pub(crate) fn nowait_return<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    if !A::CAPABILITIES.honours_nowait {
        return Verdict::NotApplicable(format!("{} does not honour NOWAIT", A::NAME));
    }
    if let Some(reason) = needs_page_source::<A>() {
        return Verdict::NotApplicable(format!("growth cannot be observed: {reason}"));
    }
    move_to_cpu(0);
    let fixture = Fixture::<A>::new(standard_config());
    let capacity = fixture.capacity();
    let scope = ctx.scope(describe(&fixture.config));
    let accounting = ctx.scope_in("C-RETURN-2", describe(&fixture.config));
    let mut hand = Hand::for_config(&fixture.config, 1);
    let mut returns = 0usize;
    for round in 0..ctx.options.rounds(150).max(3) {
        let mut sheaves = Vec::new();
        for _ in 0..3 {
            if let Ok(sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), capacity) {
                sheaves.push(sheaf);
            }
        }
        for (i, sheaf) in sheaves.iter_mut().enumerate() {
            for _ in 0..(i + round) % (capacity + 1) {
                if let Some(object) = sheaf.alloc(AllocFlags::empty()) {
                    hand.take(&scope, object);
                }
            }
        }
        // Take every free object, so that keeping a sheaf would need a refill from new pages.
        fixture.freeze_pages(0);
        let mut drained = Hand::for_config(&fixture.config, 2);
        while drained.len() < 1_000_000 {
            match fixture.cache.alloc(AllocFlags::empty()) {
                Some(object) => {
                    drained.take(&scope, object);
                }
                None => break,
            }
        }
        fixture.pages.set_limit(usize::MAX);
        if round % 2 == 1 {
            fixture.pages.fail_with_probability(1.0, round as u64);
        }
        while let Some(sheaf) = sheaves.pop() {
            let size = sheaf.size();
            let before = fixture.pages.stats().chunks_allocated;
            sheaf.return_with(AllocFlags::NOWAIT);
            let outstanding: usize = sheaves.iter().map(Prefill::size).sum();
            returns += 1;
            let after = fixture.pages.stats().chunks_allocated;
            if after > before {
                scope.violation(
                    "C-RETURN-2",
                    format!(
                        "round {round}: return_with(NOWAIT) of a sheaf of size() {size} with the cache drained took {} \
                         new chunks",
                        after - before
                    ),
                );
            }
            fixture.check_live(
                &accounting,
                "C-RETURN-1",
                &format!("round {round}: after return_with(NOWAIT) of a sheaf of size() {size}"),
                hand.len() + drained.len(),
                outstanding,
            );
        }
        fixture.pages.fail_with_probability(0.0, 0);
        drained.free_all(&scope, &fixture.cache);
        if hand.len() > 200 {
            hand.free_all(&scope, &fixture.cache);
        }
    }
    hand.free_all(&scope, &fixture.cache);
    fixture.expect_empty(&accounting, "C-RETURN-1", "after NOWAIT returns");
    Verdict::Ran(format!(
        "{returns} return_with(NOWAIT) of partly used sheaves with every free object taken (half of them with every \
         page request failing): no chunk taken, no object lost"
    ))
}

/// The barn gauges of `stats`: (full, empty), or `None` when either is missing.
fn barn_gauges(stats: &AllocStats) -> Option<(u64, u64)> {
    Some((
        *stats.counters.get("barn_full_sheaves")?,
        *stats.counters.get("barn_empty_sheaves")?,
    ))
}

/// C-RETURN-3: several threads (moved between CPUs) churn objects and prefill, use and return
/// sheaves of every size; after every step the barn gauges must stay within limits x nodes.
pub(crate) fn barn_limits<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    if !A::CAPABILITIES.sheaf_layer {
        return Verdict::NotApplicable(format!("{} has no sheaf layer (no barn)", A::NAME));
    }
    let probe = Fixture::<A>::new(standard_config());
    if barn_gauges(&probe.cache.stats()).is_none() {
        let scope = ctx.scope(describe(&probe.config));
        scope.violation(
            "C-RETURN-3",
            "the design declares a sheaf layer but stats() has no barn_full_sheaves/barn_empty_sheaves gauges",
        );
        return Verdict::Ran("gauges missing".to_owned());
    }
    drop(probe);
    let steps = ctx.options.rounds(600);
    let mut peaks = Vec::new();
    for (max_full, max_empty, nodes) in [(2, 1, 1), (0, 0, 1), (3, 2, 2)] {
        for &threads in &ctx.options.threads {
            let config = standard_config()
                .with_barn_limits(max_full, max_empty)
                .with_nodes(NodeMap::Simulated { nodes });
            let fixture = Fixture::<A>::new(config);
            let capacity = fixture.capacity();
            let repro = format!(
                "{}, threads {threads}, steps {steps}",
                describe(&fixture.config)
            );
            let scope = if threads > 1 {
                ctx.scope_in("C-CONC-1", repro)
            } else {
                ctx.scope(repro)
            };
            let limit_full = (max_full * nodes) as u64;
            let limit_empty = (max_empty * nodes) as u64;
            let watch = |scope: &Scope<'_>, step: usize, peak: &mut (u64, u64)| {
                if let Some((full, empty)) = barn_gauges(&fixture.cache.stats()) {
                    peak.0 = peak.0.max(full);
                    peak.1 = peak.1.max(empty);
                    if full > limit_full || empty > limit_empty {
                        scope.violation(
                            "C-RETURN-3",
                            format!(
                                "step {step}: the barn holds {full} full and {empty} empty sheaves; limits are \
                                 {limit_full} full, {limit_empty} empty ({max_full}/{max_empty} per node x {nodes} nodes)"
                            ),
                        );
                    }
                }
            };
            let peak = std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads)
                    .map(|t| {
                        let (fixture, scope, watch) = (&fixture, &scope, &watch);
                        let mut rng = ctx.rng(&format!(
                            "barn {max_full} {max_empty} {nodes} {threads} {t}"
                        ));
                        s.spawn(move || {
                            let mut peak = (0, 0);
                            let mut hand = Hand::for_config(&fixture.config, t as u64 + 1);
                            for step in 0..steps {
                                if step % 13 == 0 {
                                    move_to_cpu(t + step / 13);
                                }
                                match rng.below(4) {
                                    0 => {
                                        for _ in 0..rng.range(1, 4 * capacity) {
                                            if let Some(object) =
                                                fixture.cache.alloc(AllocFlags::empty())
                                            {
                                                hand.take(scope, object);
                                            }
                                        }
                                    }
                                    1 => hand.free_all(scope, &fixture.cache),
                                    _ => {
                                        let count = if rng.chance(1, 8) {
                                            capacity + 1 + rng.below(capacity + 1)
                                        } else {
                                            rng.range(0, capacity)
                                        };
                                        let mut sheaves = Vec::new();
                                        for _ in 0..rng.range(1, 3) {
                                            if let Ok(mut sheaf) =
                                                fixture.cache.prefill(AllocFlags::empty(), count)
                                            {
                                                for _ in 0..rng.below(count + 1) {
                                                    if let Some(object) =
                                                        sheaf.alloc(AllocFlags::empty())
                                                    {
                                                        hand.take(scope, object);
                                                    }
                                                }
                                                sheaves.push(sheaf);
                                            }
                                        }
                                        for sheaf in sheaves {
                                            give_back(sheaf, rng.below(3));
                                            watch(scope, step, &mut peak);
                                        }
                                    }
                                }
                                watch(scope, step, &mut peak);
                            }
                            hand.free_all(scope, &fixture.cache);
                            watch(scope, steps, &mut peak);
                            peak
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(join)
                    .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)))
            });
            fixture.cache.barrier();
            fixture.cache.shrink();
            watch(&scope, steps + 1, &mut (0, 0));
            peaks.push(format!(
                "limits {limit_full}/{limit_empty} ({nodes} node(s), {threads} thread(s)): peak {}/{}",
                peak.0, peak.1
            ));
        }
    }
    Verdict::Ran(format!(
        "barn gauges sampled after every step and return of {steps} churn/prefill/return steps per thread, \
         full/empty: {}",
        peaks.join(", ")
    ))
}

/// C-RETURN-4: oversize sheaves are returned (every way, partly used); prefills of at most the
/// capacity afterwards, and prefill(0), never yield a sheaf with capacity() above the configured
/// capacity.
pub(crate) fn oversize_not_kept<A: ObjectAlloc>(
    ctx: &Ctx<'_>,
    context: Option<&'static str>,
) -> Verdict {
    let caps = A::CAPABILITIES;
    if !caps.native_prefill && !caps.sheaf_layer {
        return Verdict::NotApplicable(format!(
            "{} emulates prefill with bulk calls (BulkPrefill): it keeps no sheaf anywhere",
            A::NAME
        ));
    }
    let fixture = Fixture::<A>::new(standard_config());
    let capacity = fixture.capacity();
    let scope = match context {
        Some(context) => ctx.scope_in(context, describe(&fixture.config)),
        None => ctx.scope(describe(&fixture.config)),
    };
    let mut rng = ctx.rng("oversize kept");
    let mut hand = Hand::for_config(&fixture.config, 1);
    let mut probes = 0usize;
    for round in 0..ctx.options.rounds(60).max(3) {
        let count = capacity + 1 + rng.below(3 * capacity + 4);
        if let Ok(mut sheaf) = prefill(&fixture.cache, &scope, AllocFlags::empty(), count) {
            for _ in 0..rng.below(count / 2 + 1) {
                if let Some(object) = sheaf.alloc(AllocFlags::empty()) {
                    hand.take(&scope, object);
                }
            }
            give_back(sheaf, round);
        }
        let mut outstanding = Vec::new();
        for k in [0, 1, capacity / 2, capacity, 0] {
            if k == 0 && capacity == 0 {
                continue;
            }
            probes += 1;
            if let Ok(sheaf) = fixture.cache.prefill(AllocFlags::empty(), k) {
                if sheaf.capacity() > capacity {
                    scope.violation(
                        "C-RETURN-4",
                        format!(
                            "round {round}: after an oversize sheaf (prefill({count})) was returned by {}, prefill({k}) \
                             handed out a sheaf of capacity() {} > the configured {capacity}: the oversize sheaf was kept",
                            RETURN_MODES[round % 3],
                            sheaf.capacity()
                        ),
                    );
                }
                outstanding.push(sheaf);
            }
        }
        for mut sheaf in outstanding {
            if let Some(object) = sheaf.alloc(AllocFlags::empty()) {
                hand.take(&scope, object);
            }
        }
        for _ in 0..rng.below(2 * capacity + 1) {
            if let Some(object) = fixture.cache.alloc(AllocFlags::empty()) {
                hand.take(&scope, object);
            }
        }
        if rng.chance(1, 2) {
            hand.free_all(&scope, &fixture.cache);
        }
    }
    hand.free_all(&scope, &fixture.cache);
    Verdict::Ran(format!(
        "{probes} prefills of 0..=capacity after oversize sheaves were returned: none exceeded capacity {capacity}"
    ))
}
