//! C-DEFER-3: a barrier never waits for another thread to run again, and a deferred free's
//! grace period starts within a bounded delay even when the freeing thread goes idle.

use std::ptr::NonNull;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use object_alloc::AllocFlags;
use object_alloc::rcu::HANDOVER_TICK;
use sheaf::{Cache, PerCpu, PerThread, SlotStrategy};

use crate::common::*;

/// What the checking thread does while the deferring thread is blocked.
#[derive(Clone, Copy)]
enum Wait {
    /// Calls `barrier` (on a helper thread, so that a hang is a failure, not a hung run).
    Barrier,
    /// Only watches the cache's live count fall to zero.
    Watch,
}

/// Another thread frees `count` objects deferred and then blocks until released; returns how
/// long the checking thread waited (`None`: not done within 2 s).
fn idle_deferrer<S: SlotStrategy>(batching: bool, count: usize, wait: Wait) -> Option<Duration> {
    let (pages, config) = limited_config(usize::MAX / 2);
    let cache: Cache<S> = Cache::new(
        &config
            .with_sheaf_capacity(8)
            .with_deferred_batching(batching),
    )
    .unwrap();
    let objects: Vec<usize> = bulk(&cache, AllocFlags::empty(), count)
        .iter()
        .map(|o| o.as_ptr() as usize)
        .collect();
    let (deferred_tx, deferred_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    let limit = Duration::from_secs(2);
    let waited = std::thread::scope(|s| {
        let cache = &cache;
        let freeing = s.spawn(move || {
            for o in objects {
                let o = NonNull::new(o as *mut u8).unwrap();
                // SAFETY: live objects, freed once.
                unsafe { cache.free_deferred(o) };
            }
            // SAFETY: a plain system call.
            deferred_tx.send(unsafe { libc::gettid() }).unwrap();
            // Blocked on the checking thread, which releases it only afterwards.
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
        });
        let tid = deferred_rx.recv().unwrap();
        // The scenario is a freeing thread that is blocked: wait until it is.
        wait_until_asleep(tid);
        let start = Instant::now();
        let waited = match wait {
            Wait::Barrier => {
                s.spawn(move || {
                    cache.barrier();
                    // What was deferred before it must have completed by now.
                    let _ = done_tx.send((start.elapsed(), live(cache)));
                });
                done_rx
                    .recv_timeout(limit)
                    .ok()
                    .filter(|&(_, left)| left == 0)
                    .map(|(waited, _)| waited)
            }
            Wait::Watch => {
                while live(cache) != 0 && start.elapsed() < limit {
                    std::thread::sleep(Duration::from_micros(200));
                }
                (live(cache) == 0).then(|| start.elapsed())
            }
        };
        // Released either way: a barrier stuck on the blocked thread then finishes.
        release_tx.send(()).unwrap();
        // Joined: its thread-local destructors have run, so its slot is an orphan.
        freeing.join().unwrap();
        waited
    });
    cache.barrier();
    free_all_and_check_empty(&pages, &cache, []);
    waited
}

/// Waits (up to 10 s) until thread `tid` of this process sleeps in the kernel.
fn wait_until_asleep(tid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // The state follows the command name, which is in parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state == Some('S') {
            return;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    panic!("thread {tid} never blocked");
}

/// The worst of `rounds` waits, each of which must end within the limit.
fn worst<S: SlotStrategy>(batching: bool, wait: Wait, what: &str) {
    let mut worst = Duration::ZERO;
    for count in [5, 8 * 4 * 2 + 3, 200] {
        for _ in 0..4 {
            let waited = idle_deferrer::<S>(batching, count, wait);
            let waited = waited.unwrap_or_else(|| {
                panic!("{what}, {count} objects: not all completed within 2 s with the freeing thread blocked")
            });
            worst = worst.max(waited);
        }
    }
    eprintln!("{what}: worst {worst:?} (tick {HANDOVER_TICK:?})");
}

#[test]
fn c_defer_3_barrier_with_a_blocked_freeing_thread_per_cpu() {
    worst::<PerCpu>(true, Wait::Barrier, "per-cpu, batched, barrier");
    worst::<PerCpu>(false, Wait::Barrier, "per-cpu, per-object, barrier");
}

#[test]
fn c_defer_3_grace_period_starts_with_the_freeing_thread_blocked_per_cpu() {
    worst::<PerCpu>(true, Wait::Watch, "per-cpu, batched, no barrier");
    worst::<PerCpu>(false, Wait::Watch, "per-cpu, per-object, no barrier");
}

#[test]
fn c_defer_3_per_object_per_thread() {
    worst::<PerThread>(false, Wait::Barrier, "per-thread, per-object, barrier");
    worst::<PerThread>(false, Wait::Watch, "per-thread, per-object, no barrier");
}

/// Batched per-thread deferrals sit in the freeing thread's own slot, which a barrier or the
/// hand-over thread takes from outside while that thread sleeps in the kernel.
#[test]
fn c_defer_3_batched_per_thread() {
    worst::<PerThread>(true, Wait::Barrier, "per-thread, batched, barrier");
    worst::<PerThread>(true, Wait::Watch, "per-thread, batched, no barrier");
}

/// Spins (running, never asleep in the kernel) for `time`.
fn spin(time: Duration) {
    let start = Instant::now();
    while start.elapsed() < time {
        std::hint::spin_loop();
    }
}

/// A per-thread deferral whose thread keeps running, so the hand-over thread cannot take its
/// `rcu_free` sheaf, and then exits without calling the cache again: the hand-over thread
/// keeps coming back and reaches the sheaf in the exited thread's slot. Its grace period
/// starts without any call on the cache.
#[test]
fn c_defer_3_batched_per_thread_deferral_of_a_thread_that_runs_then_exits() {
    let (pages, cache) = cache_with::<PerThread>(8);
    for _ in 0..4 {
        std::thread::scope(|s| {
            s.spawn(|| {
                let object = cache.alloc(AllocFlags::empty()).expect("memory");
                // SAFETY: allocated above, freed once, never shared.
                unsafe { cache.free_deferred(object) };
                // Running through several of the hand-over thread's ticks.
                spin(HANDOVER_TICK * 4);
            });
        });
        let start = Instant::now();
        while live(&cache) != 0 {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "a deferral of an exited thread did not complete within 2 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    cache.barrier();
    free_all_and_check_empty(&pages, &cache, []);
}

/// The hand-over thread wants only `rcu_free` sheaves: while it keeps a cache armed (another
/// thread defers now and then), a thread that runs without calling the cache keeps its
/// `main` and `spare` sheaves, and one it catches running hands over only its `rcu_free` ones.
#[test]
fn c_defer_3_hand_over_takes_only_rcu_sheaves_from_running_threads() {
    if !sequences_usable() {
        return;
    }
    let (pages, cache) = cache_with::<PerThread>(16);
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let cache = &cache;
        let deferring = s.spawn(move || {
            let objects: Vec<NonNull<u8>> = (0..400)
                .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
                .collect();
            let mut objects = objects.into_iter();
            while stop_rx.try_recv().is_err() {
                if let Some(object) = objects.next() {
                    // SAFETY: allocated above, freed once, never shared.
                    unsafe { cache.free_deferred(object) };
                }
                // Running, then asleep: caught both ways by the hand-over thread.
                spin(Duration::from_millis(1));
                std::thread::sleep(Duration::from_millis(1));
            }
            for object in objects {
                // SAFETY: as above.
                unsafe { cache.free(object) };
            }
        });
        let running = s.spawn(move || {
            let objects: Vec<NonNull<u8>> = (0..8)
                .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
                .collect();
            for &object in &objects {
                // SAFETY: allocated above, freed once.
                unsafe { cache.free(object) };
            }
            // Its `main` sheaf holds objects; it runs through many ticks of an armed cache,
            // until the hand-over thread has taken some of the other thread's deferrals.
            let start = Instant::now();
            while start.elapsed() < HANDOVER_TICK * 8
                || (counter(cache, "rcu_sheaf_submitted") == 0
                    && start.elapsed() < Duration::from_secs(5))
            {
                spin(HANDOVER_TICK);
            }
            let object = cache.alloc(AllocFlags::empty()).expect("memory");
            // SAFETY: allocated above, freed once.
            unsafe { cache.free(object) };
        });
        running.join().unwrap();
        stop_tx.send(()).unwrap();
        deferring.join().unwrap();
    });
    assert!(
        counter(&cache, "rcu_sheaf_submitted") > 0,
        "nothing was handed over in 5 s"
    );
    assert_eq!(
        counter(&cache, "slot_drained"),
        0,
        "a running thread's main and spare sheaves were taken from it"
    );
    cache.barrier();
    free_all_and_check_empty(&pages, &cache, []);
}
