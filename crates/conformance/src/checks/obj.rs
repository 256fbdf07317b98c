//! C-OBJ-1..5: alignment and size, no overlap, ZERO on reused memory, remote frees,
//! accounting.

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::Mutex;

use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc, Prefill};

use super::{
    Ctx, Fixture, Hand, Scope, alloc_bulk, describe, join, move_to_cpu, needs_page_source, prefill,
    standard_config,
};
use crate::Verdict;
use crate::objects::{self, Stamped};
use crate::pages::HeldBytes;
use crate::rng::Rng;

/// The configurations C-OBJ-1 walks: odd sizes, every alignment class, large objects.
fn shapes() -> Vec<CacheConfig> {
    [
        (1, 1),
        (8, 8),
        (24, 8),
        (48, 16),
        (100, 4),
        (200, 64),
        (1000, 8),
        (4096, 4096),
        (16384, 8),
        (object_alloc::MAX_OBJECT_SIZE, 8),
    ]
    .into_iter()
    .map(|(size, align)| CacheConfig::new(size).with_align(align))
    .collect()
}

/// C-OBJ-1: every object from alloc, alloc_bulk and a prefilled sheaf is aligned and writable
/// over its whole size (written and read back at once, so an overlap is not reported here).
pub(crate) fn alignment_and_size<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let mut objects_checked = 0usize;
    let shapes = shapes();
    for config in &shapes {
        let fixture = Fixture::<A>::new(config.clone());
        let scope = ctx.scope(describe(&fixture.config));
        let size = config.object_size;
        let align = config.align;
        let mut taken: Vec<NonNull<u8>> = Vec::new();
        let check = |object: NonNull<u8>, how: &str, taken: &mut Vec<NonNull<u8>>| {
            let address = object.as_ptr() as usize;
            if !address.is_multiple_of(align) {
                scope.violation(
                    "C-OBJ-1",
                    format!("{how} returned {address:#x}, not aligned to {align}"),
                );
            }
            let stamp = address as u64 ^ 0xC0B1;
            // SAFETY: the object was just handed out, so its `size` bytes are ours.
            unsafe { objects::stamp(object, size, stamp) };
            // SAFETY: as above; read back at once, before any other object is written.
            if let Err(what) = unsafe { objects::verify(object, size, stamp) } {
                scope.violation(
                    "C-OBJ-1",
                    format!("{how}: bytes written did not read back: {what}"),
                );
            }
            taken.push(object);
        };
        let rounds = if size >= 4096 { 4 } else { 40 };
        for round in 0..rounds {
            let flags = if round % 2 == 0 {
                AllocFlags::empty()
            } else {
                AllocFlags::ZERO
            };
            match fixture.cache.alloc(flags) {
                Some(object) => check(object, "alloc", &mut taken),
                None => scope.violation(
                    "C-OBJ-1",
                    format!("alloc({flags:?}) returned None with unlimited memory"),
                ),
            }
        }
        match alloc_bulk(&fixture.cache, &scope, AllocFlags::empty(), rounds / 2 + 1) {
            Ok(bulk) => bulk
                .into_iter()
                .for_each(|o| check(o, "alloc_bulk", &mut taken)),
            Err(error) => scope.violation(
                "C-OBJ-1",
                format!(
                    "alloc_bulk({}) failed with unlimited memory: {error}",
                    rounds / 2 + 1
                ),
            ),
        }
        let count = fixture.capacity() + 1;
        match prefill(&fixture.cache, &scope, AllocFlags::empty(), count) {
            Ok(mut sheaf) => {
                for _ in 0..sheaf.size() {
                    match sheaf.alloc(AllocFlags::empty()) {
                        Some(object) => check(object, "a prefilled sheaf's alloc", &mut taken),
                        None => break,
                    }
                }
            }
            Err(error) => scope.violation(
                "C-OBJ-1",
                format!("prefill({count}) failed with unlimited memory: {error}"),
            ),
        }
        objects_checked += taken.len();
        for object in taken {
            // SAFETY: allocated above, live, freed once.
            unsafe { fixture.cache.free(object) };
        }
    }
    Verdict::Ran(format!(
        "{objects_checked} objects over {} shapes (sizes 1..{} bytes, alignments 1..4096) from alloc, \
         alloc_bulk and prefilled sheaves: aligned, every byte written and read back",
        shapes.len(),
        object_alloc::MAX_OBJECT_SIZE
    ))
}

/// One random step of a churn scenario on `hand`: alloc, bulk, prefill, free, free_bulk,
/// remote hand-off through `exchange`. Returns the objects allocated.
pub(crate) fn churn_step<A: ObjectAlloc>(
    cache: &A,
    scope: &Scope<'_>,
    rng: &mut Rng,
    hand: &mut Hand,
    exchange: Option<&Mutex<Vec<Stamped>>>,
    capacity: usize,
    size: usize,
) -> usize {
    match rng.below(9) {
        0..=2 => {
            if let Some(object) = cache.alloc(AllocFlags::empty()) {
                hand.take(scope, object);
                return 1;
            }
        }
        3 => {
            let count = rng.range(1, 3 * capacity.max(4));
            if let Ok(objects) = alloc_bulk(cache, scope, AllocFlags::empty(), count) {
                for object in objects {
                    hand.take(scope, object);
                }
                return count;
            }
        }
        4 => {
            let count = rng.range(0, 2 * capacity.max(2));
            if let Ok(mut sheaf) = prefill(cache, scope, AllocFlags::empty(), count) {
                let take = rng.range(0, count);
                let mut taken = 0;
                for _ in 0..take {
                    match sheaf.alloc(AllocFlags::empty()) {
                        Some(object) => {
                            hand.take(scope, object);
                            taken += 1;
                        }
                        None => break,
                    }
                }
                return taken;
            }
        }
        5 | 6 => {
            for _ in 0..rng.range(1, 8) {
                if let Some(stamped) = hand.pop_random(scope, rng) {
                    // SAFETY: allocated by `cache`, live, taken out of the hand.
                    unsafe { cache.free(stamped.object) };
                }
            }
        }
        7 => {
            let count = rng.range(1, 2 * capacity.max(4)).min(hand.len());
            let batch: Vec<NonNull<u8>> = (0..count)
                .filter_map(|_| hand.pop_random(scope, rng))
                .map(|s| s.object)
                .collect();
            // SAFETY: each object is live, from `cache`, listed once, and dropped from the hand.
            unsafe { cache.free_bulk(&batch) };
        }
        _ => {
            if let Some(exchange) = exchange {
                exchange_step(cache, scope, rng, hand, exchange, size);
            }
        }
    }
    0
}

/// One remote hand-off step: with even odds, moves up to 7 of `hand`'s objects into
/// `exchange` for other threads, or frees every object other threads left there, verifying
/// each pattern first (C-OBJ-2, C-OBJ-4).
pub(crate) fn exchange_step<A: ObjectAlloc>(
    cache: &A,
    scope: &Scope<'_>,
    rng: &mut Rng,
    hand: &mut Hand,
    exchange: &Mutex<Vec<Stamped>>,
    size: usize,
) {
    let mut shared = exchange.lock().unwrap_or_else(|e| e.into_inner());
    if rng.chance(1, 2) {
        for _ in 0..rng.range(1, 8) {
            if let Some(stamped) = hand.pop_random(scope, rng) {
                shared.push(stamped);
            }
        }
    } else {
        let remote: Vec<Stamped> = shared.drain(..).collect();
        drop(shared);
        for stamped in remote {
            if let Err(what) =
                // SAFETY: the object is live and was stamped by its allocating thread.
                unsafe { objects::verify(stamped.object, size, stamped.stamp) }
            {
                scope.violation("C-OBJ-2", what);
            }
            // SAFETY: allocated by `cache` on another thread, live, handed over once.
            unsafe { cache.free(stamped.object) };
        }
    }
}

/// Every object live at a quiescent point: those in `hands` and those left in `exchange`.
pub(crate) fn live_objects(hands: &[Hand], exchange: &Mutex<Vec<Stamped>>) -> Vec<NonNull<u8>> {
    let mut all: Vec<NonNull<u8>> = hands.iter().flat_map(Hand::addresses).collect();
    all.extend(
        exchange
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|s| s.object),
    );
    all
}

/// Frees the objects left in `exchange`, verifying each.
pub(crate) fn drain_exchange<A: ObjectAlloc>(
    cache: &A,
    scope: &Scope<'_>,
    exchange: &Mutex<Vec<Stamped>>,
    size: usize,
) {
    let remote: Vec<Stamped> = exchange
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for stamped in remote {
        // SAFETY: live and stamped by its allocating thread.
        if let Err(what) = unsafe { objects::verify(stamped.object, size, stamped.stamp) } {
            scope.violation("C-OBJ-2", what);
        }
        // SAFETY: allocated by `cache`, live, handed over once.
        unsafe { cache.free(stamped.object) };
    }
}

/// C-OBJ-2: threads churn stamped objects (alloc, bulk, prefill, local and remote frees,
/// moving between CPUs); every pattern is verified before its free, and at quiescent points
/// the address ranges of all live objects are checked for overlap.
pub(crate) fn no_overlap<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let steps = ctx.options.rounds(3000);
    let mut total = 0usize;
    for &threads in &ctx.options.threads {
        let fixture = Fixture::<A>::new(standard_config());
        let repro = format!(
            "{}, threads {threads}, steps {steps}",
            describe(&fixture.config)
        );
        let scope = if threads > 1 {
            ctx.scope_in("C-CONC-1", repro)
        } else {
            ctx.scope(repro)
        };
        let exchange = Mutex::new(Vec::new());
        let capacity = fixture.capacity();
        let size = fixture.size();
        let hands: Vec<Hand> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (fixture, scope, exchange) = (&fixture, &scope, &exchange);
                    let mut rng = ctx.rng(&format!("overlap {threads} {t}"));
                    s.spawn(move || {
                        let mut hand = Hand::for_config(&fixture.config, t as u64 + 1);
                        for step in 0..steps {
                            if step % 97 == 0 {
                                move_to_cpu(t + step / 97);
                            }
                            churn_step(
                                &fixture.cache,
                                scope,
                                &mut rng,
                                &mut hand,
                                (threads > 1).then_some(exchange),
                                capacity,
                                size,
                            );
                            if hand.len() > 400 {
                                hand.free_all(scope, &fixture.cache);
                            }
                        }
                        hand
                    })
                })
                .collect();
            workers.into_iter().map(join).collect()
        });
        let all = live_objects(&hands, &exchange);
        total += all.len();
        if let Some((a, b)) = objects::first_overlap(&all, size) {
            scope.violation(
                "C-OBJ-2",
                format!("live objects {a:#x} and {b:#x} overlap ({size}-byte objects)"),
            );
        }
        for mut hand in hands {
            hand.free_all(&scope, &fixture.cache);
        }
        drain_exchange(&fixture.cache, &scope, &exchange, size);
    }
    Verdict::Ran(format!(
        "{steps} churn steps per thread under {:?} threads (alloc, alloc_bulk, prefill, free, free_bulk, \
         remote free, CPU moves); every object's pattern verified before its free; {total} objects \
         live at the quiescent points, none overlapping",
        ctx.options.threads
    ))
}

/// C-OBJ-3: objects are filled, freed and allocated again with ZERO (alloc, alloc_bulk,
/// sheaf alloc), many times; each must read as zero. Reuse of freed addresses is counted.
pub(crate) fn zero_on_reuse<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let rounds = ctx.options.rounds(150);
    let mut zero_allocs = 0usize;
    let mut reused = 0usize;
    for config in [
        standard_config(),
        CacheConfig::new(200),
        CacheConfig::new(24).with_align(8),
    ] {
        let fixture = Fixture::<A>::new(config);
        let scope = ctx.scope(format!("{}, rounds {rounds}", describe(&fixture.config)));
        let size = fixture.size();
        let capacity = fixture.capacity();
        let mut rng = ctx.rng(&format!("zero {size}"));
        let mut freed: HashSet<usize> = HashSet::new();
        let mut hand = Hand::for_config(&fixture.config, 1);
        for round in 0..rounds {
            let count = rng.range(1, 3 * capacity.max(4));
            for _ in 0..count {
                if let Some(object) = fixture.cache.alloc(AllocFlags::empty()) {
                    hand.take(&scope, object);
                }
            }
            for stamped in hand.drain(&scope) {
                freed.insert(stamped.object.as_ptr() as usize);
                // SAFETY: allocated above, live, freed once.
                unsafe { fixture.cache.free(stamped.object) };
            }
            let mut zeroed: Vec<(NonNull<u8>, &str)> = Vec::new();
            let want = rng.range(1, 2 * capacity.max(4));
            match round % 3 {
                0 => {
                    for _ in 0..want {
                        if let Some(object) = fixture.cache.alloc(AllocFlags::ZERO) {
                            zeroed.push((object, "alloc(ZERO)"));
                        }
                    }
                }
                1 => {
                    if let Ok(objects) = alloc_bulk(&fixture.cache, &scope, AllocFlags::ZERO, want)
                    {
                        zeroed.extend(objects.into_iter().map(|o| (o, "alloc_bulk(ZERO)")));
                    }
                }
                _ => {
                    if let Ok(mut sheaf) =
                        prefill(&fixture.cache, &scope, AllocFlags::empty(), want)
                    {
                        for _ in 0..sheaf.size() {
                            match sheaf.alloc(AllocFlags::ZERO) {
                                Some(object) => zeroed.push((object, "sheaf alloc(ZERO)")),
                                None => break,
                            }
                        }
                    }
                }
            }
            for &(object, how) in &zeroed {
                zero_allocs += 1;
                let address = object.as_ptr() as usize;
                let was_used = freed.contains(&address);
                reused += usize::from(was_used);
                // SAFETY: just allocated; `size` bytes readable.
                if let Some((offset, byte)) = unsafe { objects::first_nonzero(object, size) } {
                    scope.violation(
                        "C-OBJ-3",
                        format!(
                            "{how} in round {round} returned {address:#x} (memory {}used before) whose byte \
                             {offset} is {byte:#04x}",
                            if was_used { "" } else { "not " }
                        ),
                    );
                }
            }
            // Stamped only after every zero check: stamping one object must not be able to spoil
            // the zero check of a neighbour (that would be an overlap, C-OBJ-2's business).
            for (object, _) in zeroed {
                hand.take(&scope, object);
            }
            hand.free_all(&scope, &fixture.cache);
        }
    }
    Verdict::Ran(format!(
        "{zero_allocs} ZERO allocations over 3 shapes, {reused} of them on memory this check had \
         filled and freed, all read as zero"
    ))
}

/// C-OBJ-4: two threads on different CPUs pass objects to each other and free them remotely,
/// for many rounds; with a page budget of twice the warmed-up footprint, remote-freed objects
/// must be reusable (otherwise the budget runs out).
pub(crate) fn remote_free<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let fixture = Fixture::<A>::new(standard_config());
    let per_round = 3 * fixture.capacity();
    let stride = fixture.config.stride();
    let warmup = 5;
    // Enough rounds that a leak of every remote free overflows the budget four times over.
    let budget_rounds = (4 * 256 * 1024) / (per_round * stride * 2) + 1;
    let rounds = warmup + ctx.options.rounds(budget_rounds.max(40)).max(budget_rounds);
    let scope = ctx.scope(format!(
        "{}, 2 threads on different CPUs, {per_round} objects each way per round, {rounds} rounds",
        describe(&fixture.config)
    ));
    let (to_b, from_a) = std::sync::mpsc::channel::<Vec<Stamped>>();
    let (to_a, from_b) = std::sync::mpsc::channel::<Vec<Stamped>>();
    let size = fixture.size();
    let addresses_freed = Mutex::new(HashSet::<usize>::new());
    let reuses = Mutex::new(0usize);
    let budget = Mutex::new(None::<usize>);
    let note_alloc = |object: NonNull<u8>| {
        if addresses_freed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(object.as_ptr() as usize))
        {
            *reuses.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        }
    };
    let free_remote = |batch: Vec<Stamped>| {
        let mut freed = addresses_freed.lock().unwrap_or_else(|e| e.into_inner());
        for stamped in batch {
            // SAFETY: live, stamped by the other thread.
            if let Err(what) = unsafe { objects::verify(stamped.object, size, stamped.stamp) } {
                scope.violation("C-OBJ-2", what);
            }
            freed.insert(stamped.object.as_ptr() as usize);
            // SAFETY: allocated by the cache on the other thread, handed over once.
            unsafe { fixture.cache.free(stamped.object) };
        }
    };
    std::thread::scope(|s| {
        let (fixture, scope, note_alloc, free_remote, budget) =
            (&fixture, &scope, &note_alloc, &free_remote, &budget);
        let side = move |cpu: usize,
                         tag: u64,
                         to: std::sync::mpsc::Sender<Vec<Stamped>>,
                         from: std::sync::mpsc::Receiver<Vec<Stamped>>| {
            move_to_cpu(cpu);
            for round in 0..rounds {
                if tag == 1 && round == warmup && A::CAPABILITIES.uses_page_source {
                    let held = fixture.pages.held_bytes();
                    let limit = 2 * held + 64 * 1024;
                    fixture.pages.set_limit(limit);
                    *budget.lock().unwrap_or_else(|e| e.into_inner()) = Some(limit);
                }
                let mut hand = Hand::for_config(&fixture.config, tag);
                for i in 0..per_round {
                    let from_sheaf = if i % 3 == 2 {
                        prefill(&fixture.cache, scope, AllocFlags::empty(), 1)
                            .ok()
                            .filter(|sheaf| sheaf.size() > 0)
                            .and_then(|mut sheaf| sheaf.alloc(AllocFlags::empty()))
                    } else {
                        None
                    };
                    let object = from_sheaf.or_else(|| fixture.cache.alloc(AllocFlags::empty()));
                    match object {
                        Some(object) => {
                            note_alloc(object);
                            hand.take(scope, object);
                        }
                        None => {
                            let limit = *budget.lock().unwrap_or_else(|e| e.into_inner());
                            scope.violation(
                                "C-OBJ-4",
                                format!(
                                    "thread {tag} round {round}: allocation failed{}: objects freed \
                                     remotely were not reused",
                                    limit.map_or(String::new(), |l| format!(
                                        " under a budget of {l} bytes (twice the footprint after \
                                         {warmup} rounds, plus 64 KiB)"
                                    ))
                                ),
                            );
                            break;
                        }
                    }
                }
                let batch = std::mem::take(&mut hand.live);
                if to.send(batch).is_err() {
                    return;
                }
                match from.recv() {
                    Ok(batch) => free_remote(batch),
                    Err(_) => return,
                }
            }
        };
        let a = s.spawn(move || side(0, 1, to_b, from_b));
        let b = s.spawn(move || side(1, 2, to_a, from_a));
        join(a);
        join(b);
    });
    let remote_reuses = *reuses.lock().unwrap_or_else(|e| e.into_inner());
    let scope_accounting = ctx.scope_in(
        "C-OBJ-4",
        format!("{}, after remote frees", describe(&fixture.config)),
    );
    fixture.check_live(
        &scope_accounting,
        "C-OBJ-5",
        "after every object was freed remotely",
        0,
        0,
    );
    fixture.expect_empty(&scope_accounting, "C-OBJ-5", "after remote frees");
    let budget_note = if A::CAPABILITIES.uses_page_source {
        "under a page budget of twice the warmed-up footprint".to_owned()
    } else {
        needs_page_source::<A>().map_or(String::new(), |r| format!("no page budget ({r})"))
    };
    Verdict::Ran(format!(
        "{rounds} rounds of {per_round} objects each way between 2 threads on different CPUs, all freed \
         remotely and allocated again ({remote_reuses} allocations reused a remotely freed address), \
         {budget_note}"
    ))
}

/// C-OBJ-5: random single and bulk operations, deferred frees and prefill use; at quiescent
/// points (after a barrier, no sheaf outstanding) live objects must match `stats()`; at the
/// end, after free-all, barrier and shrink, no page may be held.
pub(crate) fn accounting<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let caps = A::CAPABILITIES;
    if !caps.tracks_live_objects && !caps.uses_page_source {
        return Verdict::NotApplicable(format!(
            "{} reports no live-object count and takes no page source: accounting cannot be observed",
            A::NAME
        ));
    }
    let points = ctx.options.rounds(40);
    let steps_per_point = 50;
    let mut checked = 0;
    for config in [standard_config(), CacheConfig::new(200)] {
        let fixture = Fixture::<A>::new(config);
        let scope = ctx.scope(format!(
            "{}, {points} quiescent points every {steps_per_point} steps",
            describe(&fixture.config)
        ));
        let mut rng = ctx.rng(&format!("accounting {}", fixture.size()));
        let mut hand = Hand::for_config(&fixture.config, 1);
        let (capacity, size) = (fixture.capacity(), fixture.size());
        for point in 0..points {
            for _ in 0..steps_per_point {
                if rng.chance(1, 10) {
                    if let Some(stamped) = hand.pop_random(&scope, &mut rng) {
                        // SAFETY: live, from this cache, no longer used.
                        unsafe { fixture.cache.free_deferred(stamped.object) };
                    }
                } else {
                    churn_step(
                        &fixture.cache,
                        &scope,
                        &mut rng,
                        &mut hand,
                        None,
                        capacity,
                        size,
                    );
                }
            }
            fixture.cache.barrier();
            checked += 1;
            fixture.check_live(
                &scope,
                "C-OBJ-5",
                &format!("quiescent point {point}"),
                hand.len(),
                0,
            );
        }
        hand.free_all(&scope, &fixture.cache);
        fixture.expect_empty(&scope, "C-OBJ-5", "end of the accounting scenario");
    }
    let halves = match (caps.tracks_live_objects, caps.uses_page_source) {
        (true, true) => "live objects vs stats() and pages held after shrink",
        (true, false) => "live objects vs stats(); page half n/a (no page source)",
        _ => "pages held after shrink; live-object half n/a (stats() has no live count)",
    };
    Verdict::Ran(format!(
        "{checked} quiescent points over 2 shapes: {halves}"
    ))
}
