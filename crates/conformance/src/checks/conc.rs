//! C-CONC-1/2: the clauses under concurrency (threads moved between CPUs, remote frees, an
//! exhausted page budget), and threads that exit holding sheaves and cached objects.

use std::ptr::NonNull;
use std::sync::Mutex;

use object_alloc::{AllocFlags, ObjectAlloc, Prefill};

use super::obj::{exchange_step, live_objects};
use super::{
    Ctx, Fixture, Hand, alloc_bulk, cpus, describe, join, move_to_cpu, prefill, standard_config,
};
use crate::Verdict;
use crate::objects::{self, Stamped};

/// Operation groups of the concurrent mix, with the clauses whose own failure leaves them out.
const GROUPS: [(&str, &[&str]); 5] = [
    (
        "prefill",
        &[
            "C-PREFILL-1",
            "C-PREFILL-2",
            "C-PREFILL-3",
            "C-PREFILL-4",
            "C-PREFILL-5",
            "C-PREFILL-7",
            "C-PREFILL-8",
            "C-RETURN-1",
            "C-RETURN-4",
        ],
    ),
    (
        "refill",
        &["C-REFILL-1", "C-REFILL-2", "C-REFILL-3", "C-REFILL-4"],
    ),
    ("bulk", &["C-BULK-1", "C-BULK-2"]),
    // Overlapping objects make another thread's writes show up as non-zero bytes.
    ("zero", &["C-OBJ-3", "C-OBJ-2"]),
    ("deferred", &["C-DEFER-1", "C-DEFER-2"]),
];

/// Which operation groups run: a group is left out when one of its clauses already fails on
/// its own, so the failure is not reported again as a concurrency failure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Enabled {
    pub(crate) prefill: bool,
    refill: bool,
    pub(crate) bulk: bool,
    pub(crate) zero: bool,
    deferred: bool,
}

pub(crate) fn enabled(ctx: &Ctx<'_>) -> (Enabled, Vec<String>) {
    let mut on = [true; 5];
    let mut left_out = Vec::new();
    for (i, (name, clauses)) in GROUPS.iter().enumerate() {
        let failing: Vec<&str> = clauses
            .iter()
            .copied()
            .filter(|c| ctx.findings.fails_on_its_own(c))
            .collect();
        if !failing.is_empty() {
            on[i] = false;
            left_out.push(format!(
                "{name} left out ({} fail on their own)",
                failing.join(", ")
            ));
        }
    }
    on[1] &= on[0];
    (
        Enabled {
            prefill: on[0],
            refill: on[1],
            bulk: on[2],
            zero: on[3],
            deferred: on[4],
        },
        left_out,
    )
}

/// C-CONC-1: 1, 2 and 4 threads (options.threads) run a mix of every operation, moving between
/// CPUs, passing objects to each other for remote frees, once with unlimited memory and once
/// under a tight page budget; every clause checked inline is filed in the C-CONC-1 context.
pub(crate) fn concurrent_mix<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let (on, left_out) = enabled(ctx);
    let steps = ctx.options.rounds(3000);
    let mut summary = Vec::new();
    for &threads in &ctx.options.threads {
        for budget in [None, Some(192 * 1024usize)] {
            if budget.is_some() && !A::CAPABILITIES.uses_page_source {
                continue;
            }
            // The budget run also spreads the CPUs over two simulated nodes, so frees cross
            // nodes.
            let config = match budget {
                Some(_) => {
                    standard_config().with_nodes(object_alloc::NodeMap::Simulated { nodes: 2 })
                }
                None => standard_config(),
            };
            let fixture = Fixture::<A>::new(config);
            if let Some(bytes) = budget {
                fixture.pages.set_limit(bytes);
            }
            let capacity = fixture.capacity();
            let size = fixture.size();
            let scope = ctx.scope_in(
                "C-CONC-1",
                format!(
                    "{}, threads {threads} on {} CPUs, {steps} steps each, budget {}",
                    describe(&fixture.config),
                    cpus(),
                    budget.map_or("unlimited".to_owned(), |b| format!("{b} bytes"))
                ),
            );
            let exchange: Mutex<Vec<Stamped>> = Mutex::new(Vec::new());
            let hands: Vec<Hand> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads)
                    .map(|t| {
                        let (fixture, scope, exchange) = (&fixture, &scope, &exchange);
                        let mut rng = ctx.rng(&format!("mix {threads} {budget:?} {t}"));
                        s.spawn(move || {
                            let mut hand = Hand::for_config(&fixture.config, t as u64 + 1);
                            for step in 0..steps {
                                if step % 50 == 0 {
                                    move_to_cpu(t + step / 50);
                                }
                                match rng.below(12) {
                                    0..=2 => {
                                        let flags = if on.zero && rng.chance(1, 3) {
                                            AllocFlags::ZERO
                                        } else {
                                            AllocFlags::empty()
                                        };
                                        if let Some(object) = fixture.cache.alloc(flags) {
                                            if flags.zero()
                                                // SAFETY: just allocated.
                                                && let Some((offset, byte)) = unsafe { objects::first_nonzero(object, size) }
                                            {
                                                scope.violation(
                                                    "C-OBJ-3",
                                                    format!("thread {t} step {step}: alloc(ZERO) byte {offset} = {byte:#04x}"),
                                                );
                                            }
                                            hand.take(scope, object);
                                        }
                                    }
                                    3 | 4 => {
                                        for _ in 0..rng.range(1, 6) {
                                            if let Some(stamped) = hand.pop_random(scope, &mut rng) {
                                                // SAFETY: live, from this cache.
                                                unsafe { fixture.cache.free(stamped.object) };
                                            }
                                        }
                                    }
                                    5 if on.bulk => {
                                        let count = rng.range(1, 3 * capacity);
                                        if let Ok(objects) = alloc_bulk(&fixture.cache, scope, AllocFlags::empty(), count) {
                                            objects.into_iter().for_each(|o| {
                                                hand.take(scope, o);
                                            });
                                        }
                                        let n = rng.below(hand.len() + 1).min(40);
                                        let batch: Vec<NonNull<u8>> =
                                            (0..n).filter_map(|_| hand.pop_random(scope, &mut rng)).map(|s| s.object).collect();
                                        // SAFETY: live, from this cache, listed once.
                                        unsafe { fixture.cache.free_bulk(&batch) };
                                    }
                                    6 | 7 if on.prefill => {
                                        let count = rng.range(0, 3 * capacity + 2);
                                        let Ok(mut sheaf) = prefill(&fixture.cache, scope, AllocFlags::empty(), count) else {
                                            continue;
                                        };
                                        let mut target = count;
                                        if on.refill && rng.chance(1, 3) {
                                            let take = rng.below(sheaf.size() + 1);
                                            for _ in 0..take {
                                                if let Some(object) = sheaf.alloc(AllocFlags::empty()) {
                                                    hand.take(scope, object);
                                                }
                                            }
                                            let want = rng.range(0, 2 * sheaf.capacity() + 1);
                                            let before = sheaf.capacity();
                                            match sheaf.refill(AllocFlags::empty(), want) {
                                                Ok(()) if sheaf.size() < want => scope.violation(
                                                    if want <= before { "C-REFILL-2" } else { "C-REFILL-3" },
                                                    format!("thread {t} step {step}: refill({want}) left size() {}", sheaf.size()),
                                                ),
                                                Ok(()) => target = want,
                                                Err(_) => target = sheaf.size(),
                                            }
                                        }
                                        let target = target.min(sheaf.size());
                                        for i in 0..target {
                                            let before = sheaf.size();
                                            match sheaf.alloc(AllocFlags::empty()) {
                                                Some(object) => {
                                                    hand.take(scope, object);
                                                    if sheaf.size() + 1 != before {
                                                        scope.violation(
                                                            "C-PREFILL-4",
                                                            format!("thread {t} step {step}: size() {before} -> {}", sheaf.size()),
                                                        );
                                                    }
                                                }
                                                None => {
                                                    scope.violation(
                                                        "C-PREFILL-2",
                                                        format!(
                                                            "thread {t} step {step}: alloc #{} of a sheaf holding {target} failed",
                                                            i + 1
                                                        ),
                                                    );
                                                    break;
                                                }
                                            }
                                        }
                                        match rng.below(3) {
                                            0 => drop(sheaf),
                                            1 => sheaf.return_with(AllocFlags::empty()),
                                            _ => sheaf.return_with(AllocFlags::NOWAIT),
                                        }
                                    }
                                    8 if on.deferred => {
                                        let guard = object_alloc::rcu::read();
                                        if let Some(stamped) = hand.pop_random(scope, &mut rng) {
                                            // SAFETY: live, from this cache; this section reads it
                                            // no more after the call.
                                            unsafe { fixture.cache.free_deferred(stamped.object) };
                                        }
                                        drop(guard);
                                    }
                                    9..=11 => {
                                        exchange_step(&fixture.cache, scope, &mut rng, &mut hand, exchange, size);
                                    }
                                    _ => {}
                                }
                                if hand.len() > 300 {
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
            if let Some((a, b)) = objects::first_overlap(&all, size) {
                scope.violation(
                    "C-OBJ-2",
                    format!("at the quiescent point live objects {a:#x} and {b:#x} overlap"),
                );
            }
            fixture.cache.barrier();
            fixture.check_live(
                &scope,
                "C-OBJ-5",
                "at the quiescent point after the threads joined",
                all.len(),
                0,
            );
            for mut hand in hands {
                hand.free_all(&scope, &fixture.cache);
            }
            super::obj::drain_exchange(&fixture.cache, &scope, &exchange, size);
            fixture.expect_empty(&scope, "C-OBJ-5", "after the concurrent mix");
        }
        summary.push(threads.to_string());
    }
    let mut text = format!(
        "{steps} mixed steps per thread under {} thread(s), CPUs changed every 50 steps, remote frees, unlimited (1 node) \
         and {}",
        summary.join("/"),
        if A::CAPABILITIES.uses_page_source {
            "192 KiB budgets (2 simulated nodes)"
        } else {
            "(no page source: budget runs n/a)"
        }
    );
    if !left_out.is_empty() {
        text.push_str(&format!("; {}", left_out.join("; ")));
    }
    Verdict::Ran(text)
}

/// C-CONC-2: in each round, threads allocate (alloc, alloc_bulk), free part of what they took
/// locally (free, free_bulk, free_deferred), free objects the previous round's threads left
/// behind (remote frees), and exit while holding a partly used prefilled sheaf, so their CPU or
/// thread sheaves are partly filled when they go. After each round, a barrier: the live count
/// must be what the exited threads left; at the end, nothing live or held after shrink.
pub(crate) fn thread_exit<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let rounds = ctx.options.rounds(30).max(3);
    let mut exited = 0usize;
    for &threads in &ctx.options.threads {
        let fixture = Fixture::<A>::new(standard_config());
        let capacity = fixture.capacity();
        let scope = ctx.scope_in(
            "C-CONC-2",
            format!(
                "{}, threads {threads}, {rounds} rounds",
                describe(&fixture.config)
            ),
        );
        let (on, _) = enabled(ctx);
        let mut left_behind: Vec<Stamped> = Vec::new();
        for round in 0..rounds {
            let shares: Vec<Vec<Stamped>> = {
                let mut shares = vec![Vec::new(); threads];
                for (i, stamped) in left_behind.drain(..).enumerate() {
                    shares[i % threads].push(stamped);
                }
                shares
            };
            left_behind = std::thread::scope(|s| {
                let workers: Vec<_> = shares
                    .into_iter()
                    .enumerate()
                    .map(|(t, share)| {
                        let (fixture, scope) = (&fixture, &scope);
                        let mut rng = ctx.rng(&format!("exit {threads} {round} {t}"));
                        s.spawn(move || {
                            move_to_cpu(t + round);
                            let mut hand = Hand::for_config(&fixture.config, t as u64 + 1);
                            for _ in 0..rng.range(1, 3 * capacity + 3) {
                                if let Some(object) = fixture.cache.alloc(AllocFlags::empty()) {
                                    hand.take(scope, object);
                                }
                            }
                            if on.bulk
                                && let Ok(objects) = alloc_bulk(
                                    &fixture.cache,
                                    scope,
                                    AllocFlags::empty(),
                                    rng.range(1, 2 * capacity + 1),
                                )
                            {
                                objects.into_iter().for_each(|o| {
                                    hand.take(scope, o);
                                });
                            }
                            let held = if on.prefill {
                                let count = rng.range(1, 2 * capacity + 1);
                                prefill(&fixture.cache, scope, AllocFlags::empty(), count)
                                    .ok()
                                    .map(|mut sheaf| {
                                        for _ in 0..rng.below(count) {
                                            if let Some(object) = sheaf.alloc(AllocFlags::empty()) {
                                                hand.take(scope, object);
                                            }
                                        }
                                        sheaf
                                    })
                            } else {
                                None
                            };
                            // Remote frees of what earlier threads left behind.
                            for stamped in share {
                                hand.verify(scope, stamped);
                                // SAFETY: allocated by an exited thread, live, handed over once.
                                unsafe { fixture.cache.free(stamped.object) };
                            }
                            for _ in 0..hand.len() / 4 {
                                if let Some(stamped) = hand.pop_random(scope, &mut rng) {
                                    // SAFETY: live, from this cache.
                                    unsafe { fixture.cache.free(stamped.object) };
                                }
                            }
                            if on.bulk {
                                let batch: Vec<NonNull<u8>> = (0..hand.len() / 3)
                                    .filter_map(|_| hand.pop_random(scope, &mut rng))
                                    .map(|s| s.object)
                                    .collect();
                                // SAFETY: live, from this cache, listed once.
                                unsafe { fixture.cache.free_bulk(&batch) };
                            }
                            if on.deferred {
                                for _ in 0..hand.len() / 4 {
                                    if let Some(stamped) = hand.pop_random(scope, &mut rng) {
                                        // SAFETY: live, from this cache, unpublished.
                                        unsafe { fixture.cache.free_deferred(stamped.object) };
                                    }
                                }
                            }
                            move_to_cpu(t + round + 1);
                            let live = std::mem::take(&mut hand.live);
                            // The sheaf is still held here and goes back as the thread exits.
                            let _held_until_exit = held;
                            live
                        })
                    })
                    .collect();
                workers.into_iter().flat_map(join).collect()
            });
            exited += threads;
            fixture.cache.barrier();
            fixture.check_live(
                &scope,
                "C-OBJ-5",
                &format!("round {round}: after the threads exited and barrier()"),
                left_behind.len(),
                0,
            );
        }
        let last = Hand::for_config(&fixture.config, 0);
        for stamped in left_behind {
            last.verify(&scope, stamped);
            // SAFETY: allocated by an exited thread, live, handed over once.
            unsafe { fixture.cache.free(stamped.object) };
        }
        fixture.expect_empty(
            &scope,
            "C-OBJ-5",
            "after threads exited holding sheaves and cached objects",
        );
    }
    Verdict::Ran(format!(
        "{exited} threads exited after alloc, alloc_bulk, free, free_bulk, free_deferred and remote frees of objects \
         left by earlier threads, holding a partly used prefilled sheaf (after moving CPU); nothing live or held \
         after barrier and shrink"
    ))
}

/// C-CONC-4: threads allocate, free most of what they took, keep a few objects live for the
/// main thread, and then stay alive and idle (blocked on a channel), so their CPU or thread
/// sheaves hold cached objects. From the main thread, a barrier and a shrink must bring the
/// live count to the objects really live; once the main thread has freed those too, a
/// barrier and a shrink must leave nothing live and no page held, while the threads are
/// still alive. Each barrier and shrink must return while the threads stay idle (it may not
/// wait for them to run). Deferred frees left by idle threads are C-DEFER-3's: a design whose
/// barrier waits for them would hang here and be reported under the wrong clause.
pub(crate) fn live_idle_threads<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let caps = A::CAPABILITIES;
    if !caps.tracks_live_objects && !caps.uses_page_source {
        return Verdict::NotApplicable(format!(
            "{} reports no live-object count and takes no page source: what idle threads hold cannot be observed",
            A::NAME
        ));
    }
    let mut idle = 0usize;
    for &threads in &ctx.options.threads {
        let fixture = Fixture::<A>::new(standard_config());
        let capacity = fixture.capacity();
        let scope = ctx.scope_in(
            "C-CONC-4",
            format!("{}, {threads} idle threads", describe(&fixture.config)),
        );
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let stopped = Mutex::new(stopped);
        std::thread::scope(|s| {
            let (done, ready) = std::sync::mpsc::channel();
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (fixture, scope, done, stopped) =
                        (&fixture, &scope, done.clone(), &stopped);
                    let mut rng = ctx.rng(&format!("idle {threads} {t}"));
                    s.spawn(move || {
                        move_to_cpu(t);
                        let mut hand = Hand::for_config(&fixture.config, t as u64 + 1);
                        for _ in 0..rng.range(capacity + 1, 3 * capacity + 3) {
                            if let Some(object) = fixture.cache.alloc(AllocFlags::empty()) {
                                hand.take(scope, object);
                            }
                        }
                        let keep = rng.range(1, 4);
                        while hand.len() > keep {
                            let Some(stamped) = hand.pop_random(scope, &mut rng) else {
                                break;
                            };
                            // SAFETY: live, from this cache.
                            unsafe { fixture.cache.free(stamped.object) };
                        }
                        done.send(std::mem::take(&mut hand.live)).unwrap();
                        // Alive and idle until the main thread is done; every worker waits
                        // on the one receiver in turn.
                        let _ = stopped.lock().map(|receiver| receiver.recv());
                    })
                })
                .collect();
            drop(done);
            let kept: Vec<Stamped> = ready.iter().take(threads).flatten().collect();
            // Let the workers fall asleep on the channel.
            std::thread::sleep(std::time::Duration::from_millis(20));
            let started = std::time::Instant::now();
            fixture.cache.barrier();
            fixture.cache.shrink();
            let took = started.elapsed();
            fixture.check_live(
                &scope,
                "C-CONC-4",
                "after barrier() and shrink() from another thread while the threads idle",
                kept.len(),
                0,
            );
            let last = Hand::for_config(&fixture.config, 0);
            for stamped in kept {
                last.verify(&scope, stamped);
                // SAFETY: allocated by an idle thread, live, handed over once.
                unsafe { fixture.cache.free(stamped.object) };
            }
            fixture.expect_empty(
                &scope,
                "C-CONC-4",
                "after freeing every object, with the threads that cached them alive and idle",
            );
            if took > std::time::Duration::from_secs(5) {
                scope.violation(
                    "C-CONC-4",
                    format!("barrier() and shrink() took {took:?} while the other threads idled"),
                );
            }
            drop(stop);
            workers.into_iter().for_each(join);
        });
        idle += threads;
    }
    Verdict::Ran(format!(
        "{idle} threads kept sheaves of cached objects alive and idle; barrier and shrink from another thread \
         brought live to what was live, then nothing live or held (deferred frees of idle threads: C-DEFER-3)"
    ))
}
