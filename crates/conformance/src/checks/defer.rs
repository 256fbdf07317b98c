//! C-DEFER-1/2/3: deferred frees wait for readers, then become reusable, and neither a barrier
//! nor a grace period waits for the thread that freed them.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex, mpsc};
use std::time::{Duration, Instant};

use object_alloc::{AllocFlags, ObjectAlloc, Prefill, rcu};

use super::{
    Ctx, Fixture, Hand, alloc_bulk, describe, join, move_to_cpu, prefill, standard_config,
};
use crate::Verdict;
use crate::objects::{self, Stamped};
use crate::pages::HeldBytes;

/// C-DEFER-1: a reader (on another CPU) enters a read-side section and holds pointers to
/// sentinel-stamped objects; they are freed with free_deferred; then thousands of objects are
/// allocated (alloc, alloc_bulk, sheaves) and freed again while the reader keeps checking its
/// sentinels. No allocation may return a deferred object's address, and no sentinel may change.
pub(crate) fn not_reused_while_read<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let churn = ctx.options.rounds(4000);
    let mut allocations = 0usize;
    for batching in [true, false] {
        move_to_cpu(0);
        let fixture = Fixture::<A>::new(standard_config().with_deferred_batching(batching));
        let size = fixture.size();
        let capacity = fixture.capacity();
        let scope = ctx.scope(format!(
            "{}, {churn} allocations during the section",
            describe(&fixture.config)
        ));
        let mut victims_hand = Hand::for_config(&fixture.config, 7);
        for i in 0..24 {
            let object = if i % 3 == 0 {
                prefill(&fixture.cache, &scope, AllocFlags::empty(), 2)
                    .ok()
                    .and_then(|mut sheaf| sheaf.alloc(AllocFlags::empty()))
            } else {
                fixture.cache.alloc(AllocFlags::empty())
            };
            if let Some(object) = object {
                victims_hand.take(&scope, object);
            }
        }
        // Only intact objects are watched: one spoiled while all were live is an overlap
        // (filed under C-OBJ-2 by `verify`), not a reuse.
        let victims: Vec<Stamped> = victims_hand
            .live
            .iter()
            .copied()
            .filter(|&v| victims_hand.verify(&scope, v))
            .collect();
        let all_victims: Vec<Stamped> = victims_hand.live.clone();
        let ranges: Vec<(usize, usize)> = all_victims
            .iter()
            .map(|v| {
                (
                    v.object.as_ptr() as usize,
                    v.object.as_ptr() as usize + size,
                )
            })
            .collect();
        let entered = Barrier::new(2);
        let stop = AtomicBool::new(false);
        let corrupted = Mutex::new(Vec::<String>::new());
        let mut overlapped = false;
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                move_to_cpu(1);
                let section = rcu::read();
                entered.wait();
                let mut passes = 0u64;
                while !stop.load(Ordering::Acquire) || passes == 0 {
                    for victim in &victims {
                        if let Err(what) =
                            // SAFETY: the reader's section began before the deferred free, so the object
                            // must stay readable and intact until the section ends.
                            unsafe { objects::verify(victim.object, size, victim.stamp) }
                        {
                            corrupted
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(what);
                            return;
                        }
                    }
                    passes += 1;
                    std::hint::spin_loop();
                }
                drop(section);
            });
            entered.wait();
            for victim in &all_victims {
                // SAFETY: live, from this cache; the reader only reads it inside its section.
                unsafe { fixture.cache.free_deferred(victim.object) };
            }
            victims_hand.live.clear();
            rcu::flush();
            let mut hand = Hand::for_config(&fixture.config, 1);
            let mut done = 0usize;
            let mut round = 0usize;
            while done < churn {
                round += 1;
                let mut fresh: Vec<(NonNull<u8>, &str)> = Vec::new();
                match round % 3 {
                    0 => {
                        for _ in 0..capacity * 2 {
                            if let Some(object) = fixture.cache.alloc(AllocFlags::empty()) {
                                fresh.push((object, "alloc"));
                            }
                        }
                    }
                    1 => {
                        if let Ok(objects) = alloc_bulk(
                            &fixture.cache,
                            &scope,
                            AllocFlags::empty(),
                            capacity * 2 + 1,
                        ) {
                            fresh.extend(objects.into_iter().map(|o| (o, "alloc_bulk")));
                        }
                    }
                    _ => {
                        if let Ok(mut sheaf) =
                            prefill(&fixture.cache, &scope, AllocFlags::empty(), capacity * 2)
                        {
                            for _ in 0..sheaf.size() {
                                match sheaf.alloc(AllocFlags::empty()) {
                                    Some(object) => fresh.push((object, "a prefilled sheaf")),
                                    None => break,
                                }
                            }
                        }
                    }
                }
                if fresh.is_empty() {
                    break;
                }
                for (object, how) in fresh {
                    done += 1;
                    let start = object.as_ptr() as usize;
                    for &(low, high) in &ranges {
                        if start == low {
                            scope.violation(
                                "C-DEFER-1",
                                format!(
                                    "{how} handed out {start:#x} (allocation {done}) while a read-side section that \
                                     was active when it was freed with free_deferred had not ended"
                                ),
                            );
                            overlapped = true;
                        } else if start < high && low < start + size {
                            scope.violation(
                                "C-OBJ-2",
                                format!("{how} handed out {start:#x}, overlapping the still-live deferred object {low:#x}"),
                            );
                            overlapped = true;
                        }
                    }
                    hand.take(&scope, object);
                }
                hand.free_all(&scope, &fixture.cache);
                if round.is_multiple_of(16) {
                    rcu::flush();
                }
            }
            allocations += done;
            stop.store(true, Ordering::Release);
            join(reader);
        });
        let corrupted = corrupted.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = corrupted.first()
            && !overlapped
        {
            scope.violation(
                "C-DEFER-1",
                format!("a deferred object changed while a reader that saw it was still in its section: {first}"),
            );
        }
        fixture.cache.barrier();
    }
    Verdict::Ran(format!(
        "24 deferred objects (batched and unbatched deferral) watched by a reader on another CPU during {allocations} \
         allocations (alloc, alloc_bulk, sheaves): none handed out again, every sentinel intact"
    ))
}

/// C-DEFER-2: two threads free objects deferred while readers come and go; then the readers end,
/// barrier and shrink: no object live, no page held; and the deferred objects fit again within
/// the pages held while they were pending.
pub(crate) fn reusable_after_barrier<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let caps = A::CAPABILITIES;
    if !caps.tracks_live_objects && !caps.uses_page_source {
        return Verdict::NotApplicable(format!(
            "{} reports no live-object count and takes no page source: whether deferred objects come back cannot \
             be observed",
            A::NAME
        ));
    }
    let per_thread = ctx.options.rounds(2000).max(100);
    let mut total = 0usize;
    for batching in [true, false] {
        let fixture = Fixture::<A>::new(standard_config().with_deferred_batching(batching));
        let scope = ctx.scope(format!(
            "{}, 2 threads x {per_thread} deferred frees, readers active",
            describe(&fixture.config)
        ));
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                while !stop.load(Ordering::Acquire) {
                    let section = rcu::read();
                    for _ in 0..100 {
                        std::hint::spin_loop();
                    }
                    drop(section);
                }
            });
            let workers: Vec<_> = (0..2usize)
                .map(|t| {
                    let (fixture, scope) = (&fixture, &scope);
                    s.spawn(move || {
                        move_to_cpu(t);
                        let mut hand = Hand::for_config(&fixture.config, t as u64 + 1);
                        for i in 0..per_thread {
                            let object = if i % 4 == 0 {
                                prefill(&fixture.cache, scope, AllocFlags::empty(), 1)
                                    .ok()
                                    .and_then(|mut sheaf| sheaf.alloc(AllocFlags::empty()))
                            } else {
                                fixture.cache.alloc(AllocFlags::empty())
                            };
                            if let Some(object) = object {
                                hand.take(scope, object);
                            }
                            if hand.len() > 16 {
                                for stamped in hand.drain(scope) {
                                    // SAFETY: live, from this cache, unpublished.
                                    unsafe { fixture.cache.free_deferred(stamped.object) };
                                }
                            }
                        }
                        for stamped in hand.drain(scope) {
                            // SAFETY: as above.
                            unsafe { fixture.cache.free_deferred(stamped.object) };
                        }
                    })
                })
                .collect();
            workers.into_iter().for_each(join);
            stop.store(true, Ordering::Release);
            join(reader);
        });
        total += 2 * per_thread;
        let held_while_pending = fixture.pages.held_bytes();
        fixture.cache.barrier();
        fixture.check_live(
            &scope,
            "C-DEFER-2",
            "after the readers ended and barrier()",
            0,
            0,
        );
        fixture.cache.shrink();
        if caps.uses_page_source {
            move_to_cpu(0);
            fixture
                .pages
                .set_limit(held_while_pending.max(fixture.pages.held_bytes()));
            let mut hand = Hand::for_config(&fixture.config, 3);
            let want = per_thread
                .min(500)
                .min(held_while_pending / fixture.config.stride() / 2);
            for i in 0..want {
                match fixture.cache.alloc(AllocFlags::empty()) {
                    Some(object) => {
                        hand.take(&scope, object);
                    }
                    None => {
                        scope.violation(
                            "C-DEFER-2",
                            format!(
                                "after barrier() and shrink(), allocation {} of {want} failed within the {held_while_pending} \
                                 bytes held while the deferred objects were pending: they were not reusable",
                                i + 1
                            ),
                        );
                        break;
                    }
                }
            }
            fixture.pages.set_limit(usize::MAX);
            hand.free_all(&scope, &fixture.cache);
        }
        fixture.expect_empty(
            &scope,
            "C-DEFER-2",
            "after deferred frees, readers ended, barrier and shrink",
        );
    }
    Verdict::Ran(format!(
        "{total} deferred frees from 2 threads (batched and unbatched) with readers active: after barrier and shrink, \
         nothing live, nothing held, reusable within the pages held while pending"
    ))
}

/// How long C-DEFER-3 lets a barrier, or a grace period's start, take with the freeing thread
/// blocked: far above any documented bound, far below "never".
const LIVENESS_LIMIT: Duration = Duration::from_secs(2);

/// C-DEFER-3: a thread on another CPU frees objects with free_deferred (a few, and more than a
/// sheaf group) and then blocks on a channel that the checking thread releases only afterwards,
/// or keeps running (spinning, without calling the allocator) until then. Meanwhile (1) a
/// barrier must return, with every one of those objects completed (no longer live), within
/// 2 s; (2) in a second round with no barrier at all, the objects must stop being live within
/// 2 s (their grace period started without the freeing thread). Both batched and unbatched
/// deferral.
pub(crate) fn barrier_liveness<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let mut worst_barrier = Duration::ZERO;
    let mut worst_unaided: Option<Duration> = None;
    let mut rounds = 0;
    for batching in [true, false] {
        for count in [5, 8 * 4 * 2 + 3] {
            for (with_barrier, running) in
                [(true, false), (false, false), (true, true), (false, true)]
            {
                let fixture = Fixture::<A>::new(standard_config().with_deferred_batching(batching));
                let scope = ctx.scope(format!(
                    "{}, {count} objects freed deferred by a thread on another CPU that then {}, {}",
                    describe(&fixture.config),
                    if running { "keeps running" } else { "blocks" },
                    if with_barrier { "barrier on a third thread" } else { "no barrier" }
                ));
                match blocked_freer(&fixture, &scope, count, with_barrier, running) {
                    Some(waited) if with_barrier => worst_barrier = worst_barrier.max(waited),
                    Some(waited) => {
                        worst_unaided = Some(worst_unaided.unwrap_or_default().max(waited));
                    }
                    None => {}
                }
                rounds += 1;
                fixture.cache.barrier();
                fixture.expect_empty(
                    &scope,
                    "C-DEFER-3",
                    "after the freeing thread was released and a barrier",
                );
            }
        }
    }
    let unaided = match worst_unaided {
        Some(worst) => format!("without a barrier they completed within {worst:?}"),
        None => format!(
            "{} reports no live count, so completion without a barrier is not observed",
            A::NAME
        ),
    };
    Verdict::Ran(format!(
        "{rounds} rounds (batched and unbatched, 5 and 67 objects) with the freeing thread blocked on the checker \
         or running: barrier returned within {worst_barrier:?} with every object completed; {unaided}"
    ))
}

/// One round of [`barrier_liveness`]: how long the wait took, `None` if it did not end within
/// [`LIVENESS_LIMIT`] (filed) or was not observable. With `running`, the freeing thread spins
/// instead of blocking (it is inside no operation of the allocator, but on a CPU).
fn blocked_freer<A: ObjectAlloc>(
    fixture: &Fixture<A>,
    scope: &super::Scope<'_>,
    count: usize,
    with_barrier: bool,
    running: bool,
) -> Option<Duration> {
    move_to_cpu(0);
    let mut hand = Hand::for_config(&fixture.config, 5);
    for _ in 0..count {
        if let Some(object) = fixture.cache.alloc(AllocFlags::empty()) {
            hand.take(scope, object);
        }
    }
    let objects: Vec<usize> = hand
        .drain(scope)
        .iter()
        .map(|stamped| stamped.object.as_ptr() as usize)
        .collect();
    let freed = objects.len() as u64;
    let live_before = fixture
        .live(scope, "C-DEFER-3")
        .map(|live| live.saturating_sub(freed));
    let state = if running { "running" } else { "blocked" };
    let (freed_tx, freed_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let freer = s.spawn(move || {
            move_to_cpu(1);
            for object in objects {
                let object = NonNull::new(object as *mut u8).expect("an allocated object");
                // SAFETY: live, from this cache, unpublished, freed once.
                unsafe { fixture.cache.free_deferred(object) };
            }
            let _ = freed_tx.send(());
            // Blocked on the checker, or running until it says so, which it does only after
            // its wait (or a backstop, so that a design that never returns still lets the run
            // end).
            if running {
                let start = Instant::now();
                while start.elapsed() < LIVENESS_LIMIT * 10 {
                    if !matches!(release_rx.try_recv(), Err(mpsc::TryRecvError::Empty)) {
                        break;
                    }
                    std::hint::spin_loop();
                }
            } else {
                let _ = release_rx.recv_timeout(LIVENESS_LIMIT * 10);
            }
        });
        let _ = freed_rx.recv();
        let start = Instant::now();
        let waited = if with_barrier {
            s.spawn(move || {
                fixture.cache.barrier();
                let _ = done_tx.send(start.elapsed());
            });
            match done_rx.recv_timeout(LIVENESS_LIMIT) {
                Ok(waited) => {
                    if let (Some(before), Some(live)) =
                        (live_before, fixture.live(scope, "C-DEFER-3"))
                        && live != before
                    {
                        scope.violation(
                            "C-DEFER-3",
                            format!(
                                "barrier() returned while the freeing thread was {state}, but {} of the {freed} objects \
                                 freed before it began were still live",
                                live.saturating_sub(before)
                            ),
                        );
                    }
                    Some(waited)
                }
                Err(_) => {
                    scope.violation(
                        "C-DEFER-3",
                        format!(
                            "barrier() had not returned after {LIVENESS_LIMIT:?}: it waits for the thread that freed \
                             the objects, which was {state} waiting for the barrier's caller"
                        ),
                    );
                    None
                }
            }
        } else {
            match live_before {
                None => None,
                Some(before) => loop {
                    let live = fixture.live(scope, "C-DEFER-3").unwrap_or(before);
                    if live == before {
                        break Some(start.elapsed());
                    }
                    if start.elapsed() >= LIVENESS_LIMIT {
                        scope.violation(
                            "C-DEFER-3",
                            format!(
                                "{} of {freed} objects freed deferred were still live {LIVENESS_LIMIT:?} later, with no \
                                 reader active and the freeing thread {state}: their grace period never started \
                                 without that thread",
                                live - before
                            ),
                        );
                        break None;
                    }
                    std::thread::sleep(Duration::from_micros(500));
                },
            }
        };
        // Released either way: a barrier stuck on the blocked thread then finishes.
        let _ = release_tx.send(());
        join(freer);
        waited
    })
}
