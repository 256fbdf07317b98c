use std::ptr::{self, NonNull};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::queue::{CHUNK, Callback, QueueList};
use super::*;

#[derive(Default)]
struct Log(Mutex<Vec<usize>>);

impl DeferTarget for Log {
    unsafe fn free_now(&self, object: NonNull<u8>) {
        self.0.lock().unwrap().push(object.as_ptr() as usize);
    }
}

#[test]
fn deferred_free_waits_for_an_active_reader() {
    let deferrer = Deferrer::new(Log::default());
    let reader = read();
    let object = NonNull::new(0x1000 as *mut u8).unwrap();
    // SAFETY: the "object" is a token that `Log` only records.
    unsafe { deferrer.defer_free(object) };
    for _ in 0..1000 {
        flush();
    }
    assert_eq!(
        deferrer.pending(),
        1,
        "ran while a reader was still inside its section"
    );
    assert!(deferrer.get().0.lock().unwrap().is_empty());
    drop(reader);
    deferrer.barrier_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(*deferrer.get().0.lock().unwrap(), vec![0x1000]);
}

#[test]
fn barrier_reaches_callbacks_of_exited_threads() {
    let deferrer = Deferrer::new(Log::default());
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=10 {
                let object = NonNull::new((i * 16) as *mut u8).unwrap();
                // SAFETY: tokens only recorded by `Log`.
                unsafe { deferrer.defer_free(object) };
            }
        });
    });
    deferrer.barrier_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(deferrer.get().0.lock().unwrap().len(), 10);
}

/// A thread that defers and then blocks until the barrier returns: the barrier must not
/// need it to run again (C-DEFER-3).
fn barrier_with_a_blocked_deferrer(count: usize) -> Duration {
    let deferrer = Deferrer::new(Log::default());
    let (deferred_tx, deferred_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=count {
                let object = NonNull::new((i * 16) as *mut u8).unwrap();
                // SAFETY: tokens only recorded by `Log`.
                unsafe { deferrer.defer_free(object) };
            }
            deferred_tx.send(()).unwrap();
            let release_rx = release_rx;
            // Blocked until the barrier has returned (or given up).
            let _ = release_rx.recv_timeout(Duration::from_secs(20));
        });
        deferred_rx.recv().unwrap();
        let start = Instant::now();
        let result = deferrer.barrier_timeout(Duration::from_secs(2));
        let waited = start.elapsed();
        release_tx.send(()).unwrap();
        assert_eq!(result, Ok(()), "the barrier waited for a blocked thread");
        assert_eq!(deferrer.get().0.lock().unwrap().len(), count);
        waited
    })
}

#[test]
fn barrier_does_not_wait_for_a_blocked_deferring_thread() {
    // Fewer callbacks than make a thread ask for a grace period, and more.
    for count in [5, BUFFER_CALLBACKS + 5] {
        let waited = barrier_with_a_blocked_deferrer(count);
        eprintln!("barrier with {count} callbacks of a blocked thread: {waited:?}");
    }
}

#[test]
fn callbacks_of_an_idle_thread_run_without_anyone_calling_in() {
    let deferrer = Deferrer::new(Log::default());
    let (deferred_tx, deferred_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=5 {
                let object = NonNull::new((i * 16) as *mut u8).unwrap();
                // SAFETY: tokens only recorded by `Log`.
                unsafe { deferrer.defer_free(object) };
            }
            deferred_tx.send(Instant::now()).unwrap();
            let release_rx = release_rx;
            let _ = release_rx.recv_timeout(Duration::from_secs(20));
        });
        let deferred_at = deferred_rx.recv().unwrap();
        // Nobody reads, defers, flushes or waits: only the hand-over thread acts.
        while deferrer.pending() != 0 && deferred_at.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let took = deferred_at.elapsed();
        release_tx.send(()).unwrap();
        eprintln!("callbacks of an idle thread ran after {took:?}");
        assert_eq!(deferrer.pending(), 0, "stranded in an idle thread's queue");
        assert_eq!(deferrer.get().0.lock().unwrap().len(), 5);
    });
}

#[test]
fn hand_over_thread_ticks_an_armed_deferrer_until_it_has_nothing() {
    #[derive(Default)]
    struct Batches {
        calls: AtomicUsize,
        left: AtomicUsize,
    }
    impl DeferTarget for Batches {
        unsafe fn free_now(&self, _: NonNull<u8>) {}
        fn hand_over(&self, _: &Deferrer<Self>) -> bool {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        }
    }
    let deferrer = Deferrer::new(Batches::default());
    deferrer.get().left.store(3, Ordering::SeqCst);
    deferrer.arm();
    let start = Instant::now();
    while deferrer.get().left.load(Ordering::SeqCst) != 0
        && start.elapsed() < Duration::from_secs(2)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(deferrer.get().left.load(Ordering::SeqCst), 0);
    deferrer.close();
    let calls = deferrer.get().calls.load(Ordering::SeqCst);
    std::thread::sleep(HANDOVER_TICK * 5);
    assert_eq!(
        deferrer.get().calls.load(Ordering::SeqCst),
        calls,
        "called after close"
    );
}

/// Waits for `child` for up to `limit`; kills it after that. Its exit status, or `None`.
fn wait_or_kill(child: libc::pid_t, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `child` is our child process; `status` is a valid out-pointer.
        let done = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if done == child {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        if start.elapsed() > limit {
            // SAFETY: as above; the child is reaped after the kill.
            unsafe {
                libc::kill(child, libc::SIGKILL);
                libc::waitpid(child, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Counts its callbacks without a lock: a lock held by a parent thread at a fork would stay
/// held in the child.
#[derive(Default)]
struct Count(AtomicUsize);

impl DeferTarget for Count {
    unsafe fn free_now(&self, _: NonNull<u8>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn queues_collected_by_barriers_while_their_owners_defer_lose_and_repeat_nothing() {
    const PER_THREAD: usize = 20_000;
    let deferrer = Deferrer::new(Count::default());
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for i in 1..=PER_THREAD {
                    let object = NonNull::new((i * 16) as *mut u8).unwrap();
                    // SAFETY: tokens only counted by `Count`.
                    unsafe { deferrer.defer_free(object) };
                }
                done.fetch_add(1, Ordering::Release);
            });
        }
        // Collects both queues again and again while their owners push.
        while done.load(Ordering::Acquire) < 2 {
            let _ = deferrer.barrier_timeout(Duration::from_millis(1));
        }
    });
    deferrer.barrier_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(deferrer.get().0.load(Ordering::Relaxed), 2 * PER_THREAD);
}

/// The next entry a queue test expects to run, how many ran out of order, and how many
/// counts the consumers gave back.
#[derive(Default)]
struct Order {
    next: AtomicUsize,
    wrong: AtomicUsize,
    released: AtomicUsize,
}

/// An entry of the queue tests: its payload is its index plus one, `inner` an `Order`.
fn entry(order: &Order, index: usize) -> Callback {
    unsafe fn check(callback: &Callback) {
        // SAFETY: `inner` is the `Order` the test keeps alive past every consume.
        let order = unsafe { &*callback.inner.cast::<Order>() };
        let index = callback.payload.as_ptr() as usize - 1;
        if order.next.fetch_add(1, Ordering::Relaxed) != index {
            order.wrong.fetch_add(1, Ordering::Relaxed);
        }
    }
    unsafe fn release(inner: *const (), n: usize) {
        // SAFETY: as in `check`.
        let order = unsafe { &*inner.cast::<Order>() };
        order.released.fetch_add(n, Ordering::Relaxed);
    }
    Callback {
        run: check,
        release,
        inner: (order as *const Order).cast(),
        payload: NonNull::new((index + 1) as *mut ()).unwrap(),
        f: ptr::null(),
    }
}

#[test]
fn a_queue_runs_each_entry_once_in_push_order_across_chunks_while_its_owner_pushes() {
    // Entry i is stamped i / 10: consumers run up to a stamp that trails the pushes.
    const PUSHES: usize = 2_000 * CHUNK + 7;
    let list = QueueList::default();
    let queue = list.claim();
    let order = Order::default();
    let stamped = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..PUSHES {
                // SAFETY: this thread is the queue's only producer while it runs.
                unsafe { queue.push(entry(&order, i), (i / 10) as u64) };
                stamped.store((i / 10) as u64, Ordering::Release);
            }
        });
        // Two consumers that trail the pushes' stamps and a third that takes everything
        // published, one at a time by the queue's flag.
        for _ in 0..2 {
            s.spawn(|| {
                while order.next.load(Ordering::Relaxed) < PUSHES {
                    let upto = stamped.load(Ordering::Acquire).saturating_sub(1);
                    queue.consume(upto);
                }
            });
        }
        s.spawn(|| {
            while order.next.load(Ordering::Relaxed) < PUSHES {
                queue.consume(u64::MAX);
                std::thread::yield_now();
            }
        });
    });
    assert_eq!(
        order.next.load(Ordering::Relaxed),
        PUSHES,
        "an entry was lost or run twice"
    );
    assert_eq!(
        order.wrong.load(Ordering::Relaxed),
        0,
        "entries ran out of push order"
    );
    assert_eq!(
        order.released.load(Ordering::Relaxed),
        PUSHES,
        "a count was not given back, or twice"
    );
    assert!(queue.is_empty());
    QueueList::release(queue);
}

#[test]
fn a_consumer_stops_at_the_first_entry_stamped_after_its_collection() {
    let list = QueueList::default();
    let queue = list.claim();
    let order = Order::default();
    for (i, stamp) in [1, 1, 2, 3, 3].into_iter().enumerate() {
        // SAFETY: this thread owns the queue.
        unsafe { queue.push(entry(&order, i), stamp) };
    }
    assert!(queue.consume(0));
    assert_eq!(order.next.load(Ordering::Relaxed), 0);
    assert!(queue.consume(2));
    assert_eq!(order.next.load(Ordering::Relaxed), 3);
    assert!(!queue.is_empty());
    assert!(queue.consume(3));
    assert_eq!(order.next.load(Ordering::Relaxed), 5);
    assert_eq!(order.released.load(Ordering::Relaxed), 5);
    assert!(queue.is_empty());
    // A released queue is claimed again, with its counts, by the next owner.
    QueueList::release(queue);
    assert!(std::ptr::eq(list.claim(), queue));
}

/// Records which tokens ran.
#[derive(Default)]
struct Seen(Mutex<std::collections::HashSet<usize>>);

impl DeferTarget for Seen {
    unsafe fn free_now(&self, object: NonNull<u8>) {
        self.0.lock().unwrap().insert(object.as_ptr() as usize);
    }
}

#[test]
fn barrier_returns_while_another_thread_defers_without_pause() {
    let deferrer = Deferrer::new(Seen::default());
    let (stop, deferred) = (AtomicBool::new(false), AtomicUsize::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 1;
            while !stop.load(Ordering::Relaxed) {
                let object = NonNull::new((i * 16) as *mut u8).unwrap();
                // SAFETY: tokens only recorded by `Seen`.
                unsafe { deferrer.defer_free(object) };
                deferred.store(i, Ordering::Release);
                i += 1;
            }
        });
        let mut worst = Duration::ZERO;
        for _ in 0..5 {
            while deferred.load(Ordering::Acquire) < 1000 {
                std::thread::yield_now();
            }
            let before = deferred.load(Ordering::Acquire);
            let start = Instant::now();
            let result = deferrer.barrier_timeout(Duration::from_secs(5));
            worst = worst.max(start.elapsed());
            assert_eq!(
                result.map_err(|_| ()),
                Ok(()),
                "waited for deferrals made after it began"
            );
            let seen = deferrer.get().0.lock().unwrap();
            let missing = (1..=before).filter(|i| !seen.contains(&(i * 16))).count();
            assert_eq!(
                missing, 0,
                "deferred before the barrier, not run when it returned"
            );
        }
        stop.store(true, Ordering::Relaxed);
        eprintln!("barrier beside a thread deferring without pause: worst of 5 {worst:?}");
    });
}

/// Counts callbacks by the thread they run on: the thread that deferred them, a barrier
/// (any thread's, other tests' included), the hand-over thread, or another thread.
#[derive(Default)]
struct RunsWhere {
    owner: Mutex<Option<std::thread::ThreadId>>,
    own: AtomicUsize,
    barriers: AtomicUsize,
    handover: AtomicUsize,
    other: AtomicUsize,
}

impl DeferTarget for RunsWhere {
    unsafe fn free_now(&self, _object: NonNull<u8>) {
        let counter = if *self.owner.lock().unwrap() == Some(std::thread::current().id()) {
            &self.own
        } else if super::generation::in_barrier() {
            &self.barriers
        } else if super::generation::is_handover() {
            &self.handover
        } else {
            &self.other
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A thread that keeps deferring gets its objects back itself, as it would with plain frees,
/// even while a reader pins without pause (whose pins run expired collections): a design's
/// local free path stays local.
#[test]
fn callbacks_of_a_thread_that_keeps_deferring_run_on_that_thread() {
    const DEFERRALS: usize = 200_000;
    let deferrer = &Deferrer::new(RunsWhere::default());
    let stop = &AtomicBool::new(false);
    let (deferred_tx, deferred_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                drop(read());
            }
        });
        s.spawn(move || {
            *deferrer.get().owner.lock().unwrap() = Some(std::thread::current().id());
            for i in 1..=DEFERRALS {
                let object = NonNull::new((i * 16) as *mut u8).unwrap();
                // SAFETY: tokens only counted by `RunsWhere`.
                unsafe { deferrer.defer_free(object) };
            }
            deferred_tx.send(()).unwrap();
            // Alive until the barrier has run: an exiting thread releases its queue, and
            // another test's new thread may take it over with what is left in it.
            let _ = exit_rx.recv_timeout(Duration::from_secs(20));
        });
        deferred_rx.recv().unwrap();
        stop.store(true, Ordering::Relaxed);
        deferrer.barrier_timeout(Duration::from_secs(10)).unwrap();
        exit_tx.send(()).unwrap();
    });
    let counts = deferrer.get();
    let own = counts.own.load(Ordering::Relaxed);
    let barriers = counts.barriers.load(Ordering::Relaxed);
    let handover = counts.handover.load(Ordering::Relaxed);
    let other = counts.other.load(Ordering::Relaxed);
    assert_eq!(own + barriers + handover + other, DEFERRALS);
    // Besides the owner, only barriers (this test's last one, and other tests' running in
    // this process meanwhile) and the hand-over thread (callbacks the owner left for a whole
    // tick, which on a loaded machine can be most of them) may run them; never the reader,
    // whose pins run expired collections. When collections ran every queue on whichever
    // thread ran them, 152,448-158,528 of the 200,000 ran on other threads on a quiet machine.
    assert_eq!(
        other, 0,
        "{other} of {DEFERRALS} callbacks ran on other threads \
         ({own} on the owner, {barriers} in barriers, {handover} on the hand-over thread)"
    );
}

#[test]
fn barrier_waits_for_a_reservation_taken_before_it_until_its_callback_is_queued() {
    let deferrer = Deferrer::new(Log::default());
    let (reserved_tx, reserved_rx) = mpsc::channel();
    let queued = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let reservation = deferrer.reserve();
            reserved_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            unsafe fn free(log: &Log, object: NonNull<()>) {
                // SAFETY: a token only recorded by `Log`.
                unsafe { log.free_now(object.cast()) }
            }
            queued.store(true, Ordering::Release);
            let token = NonNull::new(0x2000 as *mut ()).unwrap();
            // SAFETY: the token is only recorded by `Log`.
            unsafe { deferrer.defer_reserved(reservation, token, free, false) };
        });
        reserved_rx.recv().unwrap();
        deferrer.barrier_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            queued.load(Ordering::Acquire),
            "returned before the reserved callback existed"
        );
        assert_eq!(*deferrer.get().0.lock().unwrap(), vec![0x2000]);
    });
}

#[test]
fn a_forked_child_defers_and_barriers_while_parent_threads_were_pinned() {
    let deferrer = Deferrer::new(Count::default());
    let stop = AtomicBool::new(false);
    let (pinned_tx, pinned_rx) = mpsc::channel();
    std::thread::scope(|s| {
        // A reader pinned across the fork: it does not exist in the child.
        s.spawn(|| {
            let _reader = read();
            pinned_tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        // Deferrers busy at the fork, in the middle of hand-overs.
        for t in 0..2_usize {
            let (deferrer, stop) = (&deferrer, &stop);
            s.spawn(move || {
                let mut i = 1;
                while !stop.load(Ordering::Relaxed) {
                    let object = NonNull::new(((t << 40) | (i * 16)) as *mut u8).unwrap();
                    // SAFETY: tokens only recorded by `Log`.
                    unsafe { deferrer.defer_free(object) };
                    i += 1;
                }
            });
        }
        pinned_rx.recv().unwrap();
        // The forking thread has used the collector too.
        drop(read());
        std::thread::sleep(Duration::from_millis(20));
        for _ in 0..5 {
            // SAFETY: the child only runs the code below and leaves with `_exit`.
            let child = unsafe { libc::fork() };
            if child == 0 {
                let ok = std::panic::catch_unwind(|| {
                    let before = deferrer.get().0.load(Ordering::Relaxed);
                    for i in 1..=100 {
                        let object = NonNull::new((i * 16) as *mut u8).unwrap();
                        // SAFETY: tokens only recorded by `Log`.
                        unsafe { deferrer.defer_free(object) };
                    }
                    deferrer.barrier();
                    deferrer.pending() == 0
                        && deferrer.get().0.load(Ordering::Relaxed) == before + 100
                });
                // SAFETY: leaves the child at once, running nothing of the parent's.
                unsafe { libc::_exit(if matches!(ok, Ok(true)) { 0 } else { 1 }) };
            }
            assert!(child > 0, "fork failed");
            let status = wait_or_kill(child, Duration::from_secs(5));
            assert_eq!(status, Some(0), "the child hung or failed after the fork");
        }
        stop.store(true, Ordering::Relaxed);
    });
    deferrer.barrier_timeout(Duration::from_secs(10)).unwrap();
}

/// A model of the queue under loom: every interleaving (up to three preemptions) of a
/// producer that crosses a chunk boundary and two consumers runs each entry once, in push
/// order, none past the consumer's stamp, and frees every chunk (`RUSTFLAGS="--cfg loom"
/// cargo test -p object-alloc --lib loom`, in `.ci/loom.sh`). Under that flag the queue's
/// atomics and cells are loom's and a chunk holds 2 entries; `Order` keeps `std` counters,
/// which only a consumer holding the queue's flag touches.
#[cfg(loom)]
mod loom_model {
    use super::super::queue::Queue;
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn loom_a_producer_and_two_consumers_run_each_entry_once_in_push_order() {
        const PUSHES: usize = CHUNK + 1;
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let list = Arc::new(QueueList::default());
            let order = Arc::new(Order::default());
            // Shared by address: the list (and so the queue) outlives both threads.
            let queue = list.claim() as *const Queue as usize;
            let producer = {
                let (list, order) = (Arc::clone(&list), Arc::clone(&order));
                loom::thread::spawn(move || {
                    // SAFETY: `list` keeps the queue alive; this thread is its producer.
                    let queue = unsafe { &*(queue as *const Queue) };
                    for i in 0..PUSHES {
                        // The last entry is stamped after the consumers' collections.
                        let stamp = u64::from(i + 1 == PUSHES);
                        // SAFETY: as above.
                        unsafe { queue.push(entry(&order, i), stamp) };
                    }
                    drop(list);
                })
            };
            let consumer = {
                let list = Arc::clone(&list);
                loom::thread::spawn(move || {
                    // SAFETY: `list` keeps the queue alive.
                    let queue = unsafe { &*(queue as *const Queue) };
                    queue.consume(0);
                    drop(list);
                })
            };
            // SAFETY: `list` keeps the queue alive.
            let mine = unsafe { &*(queue as *const Queue) };
            mine.consume(0);
            producer.join().unwrap();
            consumer.join().unwrap();
            // Nobody else consumes now: what is left runs here.
            assert!(mine.consume(0));
            assert_eq!(
                order.next.load(Ordering::Relaxed),
                PUSHES - 1,
                "ran past its stamp"
            );
            assert!(mine.consume(1));
            assert_eq!(order.next.load(Ordering::Relaxed), PUSHES);
            assert_eq!(order.wrong.load(Ordering::Relaxed), 0);
            assert_eq!(order.released.load(Ordering::Relaxed), PUSHES);
            assert!(mine.is_settled());
        });
    }
}

/// Stamps: not expired while a reader that began before them is inside its section, expired
/// once a grace period asked for afterwards has passed (by a request, or a barrier).
#[test]
fn a_stamp_expires_after_a_grace_period_asked_for_after_it() {
    let reader = read();
    let first = stamp();
    request();
    for _ in 0..1000 {
        flush();
    }
    assert!(
        !expired(first),
        "expired while a reader was inside its section"
    );
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(10);
    assert!(
        wait_until(deadline, || {
            flush();
            expired(first)
        }),
        "not expired after its grace period"
    );
    // A barrier makes every stamp read before it expire.
    let second = stamp();
    barrier();
    assert!(expired(second));
    // `safe` is always a value the clock has passed.
    assert!(!expired(stamp() + 1));
}

/// `defer_raw` runs once a grace period has passed; `rcu::barrier` waits for it.
#[test]
fn raw_deferrals_wait_for_readers_and_run_by_a_barrier() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    unsafe fn count(payload: NonNull<()>) {
        RAN.fetch_add(payload.as_ptr() as usize, Ordering::Relaxed);
    }
    let reader = read();
    // SAFETY: `count` only adds the payload's address to a counter.
    unsafe { defer_raw(NonNull::new(3 as *mut ()).unwrap(), count) };
    for _ in 0..1000 {
        flush();
    }
    assert_eq!(
        RAN.load(Ordering::Relaxed),
        0,
        "ran inside a reader's section"
    );
    drop(reader);
    barrier();
    assert_eq!(RAN.load(Ordering::Relaxed), 3);
}

/// A stamp read in the parent expires in a forked child at the child's first grace period
/// (its clock starts past the parent's), even with a parent reader pinned at the fork.
#[test]
fn a_parent_stamp_expires_in_a_forked_child() {
    let (pinned_tx, pinned_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _reader = read();
            pinned_tx.send(()).unwrap();
            let _ = stop_rx.recv_timeout(Duration::from_secs(20));
        });
        pinned_rx.recv().unwrap();
        let parent = stamp();
        // SAFETY: the child only uses this crate's lock-free paths and exits with `_exit`.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let ok = !expired(parent) && {
                request();
                let deadline = Instant::now() + Duration::from_secs(5);
                wait_until(deadline, || {
                    flush();
                    expired(parent)
                })
            };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        assert_eq!(wait_or_kill(child, Duration::from_secs(20)), Some(0));
        stop_tx.send(()).unwrap();
    });
}

/// The state outlives its owner while callbacks are pending (their counts hold it), and is
/// dropped once, right after the last of them has run and been released.
#[test]
fn the_state_is_dropped_once_after_its_last_pending_callback() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    struct Tracked;
    impl Drop for Tracked {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
    impl DeferTarget for Tracked {
        unsafe fn free_now(&self, _: NonNull<u8>) {
            RAN.fetch_add(1, Ordering::Relaxed);
        }
    }
    const DEFERRALS: usize = 200;
    let deferrer = Deferrer::new(Tracked);
    let reader = read();
    for i in 1..=DEFERRALS {
        // SAFETY: tokens only counted by `Tracked`.
        unsafe { deferrer.defer_free(NonNull::new((i * 16) as *mut u8).unwrap()) };
    }
    assert_eq!(deferrer.pending(), DEFERRALS);
    drop(deferrer);
    assert_eq!(
        DROPPED.load(Ordering::Relaxed),
        0,
        "dropped under pending callbacks"
    );
    drop(reader);
    barrier();
    assert_eq!(RAN.load(Ordering::Relaxed), DEFERRALS);
    assert_eq!(DROPPED.load(Ordering::Relaxed), 1);
}
