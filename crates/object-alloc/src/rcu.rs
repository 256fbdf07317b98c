//! Read-side sections and deferred frees: the userspace rendering of RCU and `kfree_rcu`.
//!
//! A *reader* enters a read-side section with [`read`] and may dereference objects it finds
//! through shared pointers until the returned [`ReadGuard`] is dropped. A *writer* that
//! unpublishes an object hands it to [`ObjectAlloc::free_deferred`](crate::ObjectAlloc), which
//! must not reuse it until every section that was active at that moment has ended (C-DEFER-1).
//!
//! The grace periods come from a `crossbeam-epoch`
//! [`Collector`](crossbeam_epoch::Collector) owned by this module: [`read`] pins it, and
//! every design defers on it through a [`Deferrer`]. Workloads written against
//! the trait are therefore correct on every design.
//!
//! # Where a deferred callback waits
//!
//! A deferred callback joins the calling thread's *queue*, stamped with a clock value read
//! after the deferral began. Asking for a grace period moves the clock on; once the grace
//! period has passed, a *collection* marks every callback stamped before the move as
//! expired. Expired callbacks run on the thread that queued them, at its next request for a
//! grace period (every [`BUFFER_CALLBACKS`] deferrals, or at [`flush`] or thread exit), so
//! that objects go back where they were freed, as plain frees do; those that their thread
//! leaves for a whole [`HANDOVER_TICK`] (it stopped deferring, or sleeps) are run by the
//! hand-over thread, and a barrier runs whatever it needs itself. A callback is never in one
//! thread's private hands: from its push on, its queue is reachable by every other thread,
//! so nothing waits for the deferring thread to run again.
//!
//! A grace period is asked for when a thread's queue holds [`BUFFER_CALLBACKS`] callbacks not
//! yet covered by one, for a batch deferred with `flush` ([`Deferrer::defer_with`]), when a
//! thread exits, at [`flush`], at [`Deferrer::barrier`], and at the latest one
//! [`HANDOVER_TICK`] after the deferral, by the hand-over thread. A design that batches
//! deferred objects itself (in sheaves) arms its [`Deferrer`] ([`Deferrer::arm`]); while
//! armed, the hand-over thread calls [`DeferTarget::hand_over`] every tick.
//!
//! The hand-over thread is started by the first deferral of the process (a process that
//! never defers has none) and sleeps while nothing is queued, armed, or waiting for its
//! grace period; while deferrals go on it wakes once per [`HANDOVER_TICK`]. It also runs
//! expired collections, and the expired callbacks their threads have left for a tick, so
//! that memory deferred by threads that then go idle is reused. Its
//! cost: one thread with a 256 KiB stack, and while deferrals go on, 100 wake-ups a second,
//! each reading every thread's queue counts and, for each armed sheaf cache, taking each CPU
//! slot once.
//!
//! # Stamps
//!
//! A design that keeps deferred work where a barrier can find it, instead of handing it to a
//! callback, reads a [`stamp`] once the work's objects are unpublished, and does the work once
//! [`expired`] says the stamp's grace period has passed (after a [`request`], or any deferral's
//! own request). [`barrier`] makes every stamp read before it expire, and runs every callback
//! deferred before it; [`defer_raw`] defers plain work, counted by no [`Deferrer`].
//!
//! # Fork
//!
//! A child of a multithreaded process gets a fresh collector (a `pthread_atfork` handler,
//! installed with the first collector): in the child the parent's other threads no longer
//! exist, and one of them pinned at the fork would stop every grace period for ever. The
//! parent's collector, queues and hand-over thread are abandoned in the child, never
//! touched again (the child's clock starts past the parent's, so stamps read in the parent
//! expire at the child's first grace period); callbacks pending at the fork are lost to the child (their objects stay
//! counted as live, and are never reused) and no longer count in [`Deferrer::pending`].
//!
//! # Pending count
//!
//! A [`Deferrer`] owns a design's shared state in an `Arc`. Its pending callbacks are counted
//! (and the [`Reservation`]s apart), with the generation as a tag, so that those a fork left
//! behind, which never run in the child, read as zero there. While any is pending the
//! callbacks hold one reference to the `Arc` together, so the state outlives them even if the
//! cache is dropped first. A consumer gives back the counts of a run of one design's
//! callbacks with one atomic operation: a deferral costs one atomic increment, and its run a
//! share of one decrement.
//!
//! # Modules
//!
//! - this file: the reader side ([`read`], [`flush`]) and the public constants;
//! - `generation`: the collector of the current fork generation, each thread's registration
//!   in it, the stamping clock and the collections; owns "a generation is never freed, only
//!   abandoned at a fork" and "a callback runs only once a grace period requested after its
//!   stamp has passed";
//! - `queue`: per-thread callback queues (one producer, one consumer at a time) and the list
//!   of a generation's queues; owns "a pushed callback is reachable by every collection";
//! - `handover`: the hand-over thread and its tick; owns "no callback waits for its own
//!   thread to run again";
//! - `thread`: starts the hand-over thread without `std::thread`, whose start takes a
//!   process-wide lock that a fork can leave held in the child;
//! - `deferrer`: [`Deferrer`], [`Reservation`], [`DeferTarget`]; owns the pending count.

mod deferrer;
mod generation;
mod handover;
mod queue;
#[cfg(test)]
mod tests;
mod thread;

use std::time::{Duration, Instant};

use crossbeam_epoch as epoch;

pub use deferrer::{DeferTarget, Deferrer, Reservation};

use generation::with_thread;

/// The longest a deferred callback waits before its grace period starts, when neither its
/// queue fills nor a barrier comes first (plus the time the hand-over thread takes to be
/// scheduled and, for a design that batches in sheaves, to take each CPU slot, which an
/// operation holds only for its own length).
pub const HANDOVER_TICK: Duration = Duration::from_millis(10);

/// Callbacks a thread queues before it asks for a grace period for them itself.
pub const BUFFER_CALLBACKS: usize = 64;

/// An active read-side section. Objects reached through shared pointers stay valid until it
/// is dropped.
#[derive(Debug)]
#[must_use = "the read-side section ends when the guard is dropped"]
pub struct ReadGuard {
    guard: epoch::Guard,
}

impl ReadGuard {
    /// The underlying epoch guard, for loading `crossbeam_epoch::Atomic` pointers.
    pub fn epoch_guard(&self) -> &epoch::Guard {
        &self.guard
    }
}

/// Enters a read-side section (`rcu_read_lock`). Sections nest.
#[inline]
pub fn read() -> ReadGuard {
    ReadGuard {
        guard: with_thread(|_, handle, _| handle.pin()),
    }
}

/// Asks for a grace period for the calling thread's queued callbacks, runs expired
/// collections, and then the calling thread's callbacks whose grace period has passed.
pub fn flush() {
    with_thread(|generation, handle, queue| {
        if let Some(queue) = queue
            && queue.take_unrequested()
        {
            generation.request(handle);
        }
        handle.pin().flush();
        if let Some(queue) = queue {
            generation.run_own(queue);
        }
    });
}

/// A stamp for work whose deferral began before this call (its object unpublished): the
/// clock, read after a fence. Work stamped `s` may be done once [`expired`]`(s)` says so. For
/// a design that keeps deferred work where a barrier finds it (sheaf's stamped chains) rather
/// than in a callback.
#[inline]
pub fn stamp() -> u64 {
    generation::current().stamp()
}

/// Whether a grace period requested after the clock moved past `stamp` has passed: every
/// read-side section that could see work stamped `stamp` has ended. Becomes true by a
/// [`request`] (or any deferral's own request) made after the stamp, once its grace period
/// has passed, and for every stamp read before a [`Deferrer::barrier`] once it returns.
#[inline]
pub fn expired(stamp: u64) -> bool {
    generation::current().expired(stamp)
}

/// Asks for a grace period that covers every stamp read before this call; [`expired`] turns
/// true for them once it has passed (a few microseconds to milliseconds later, when a thread
/// runs expired work: a deferral, [`flush`], the hand-over thread).
pub fn request() {
    with_thread(|generation, handle, _| generation.request(handle));
}

/// Waits until every callback deferred before this call (by any design, [`defer_raw`]
/// included) has run, and every stamp read before it has [`expired`]: the process-wide
/// `rcu_barrier`, with [`Deferrer::barrier`]'s guarantees and limits. Must not be called
/// inside a read-side section, nor from a deferred callback.
pub fn barrier() {
    with_thread(
        |generation, handle, _| {
            while !generation.collect_all(handle, Instant::now() + Duration::from_secs(1)) {}
        },
    );
}

/// Runs `f(payload)` on some thread once a grace period that starts after this call has
/// passed, like a deferred callback (it joins the calling thread's queue), but counted in no
/// [`Deferrer`]'s pending callbacks. For freeing memory that lock-free readers may still be
/// looking at.
///
/// # Safety
///
/// - `f(payload)` must be sound to run on any thread, at any later time, after every
///   read-side section active now has ended.
pub unsafe fn defer_raw(payload: std::ptr::NonNull<()>, f: unsafe fn(std::ptr::NonNull<()>)) {
    unsafe fn run(callback: &queue::Callback) {
        // SAFETY: `f` came from an `unsafe fn(NonNull<()>)` in `defer_raw`, whose caller
        // made it sound to run now.
        unsafe {
            let f = std::mem::transmute::<*const (), unsafe fn(std::ptr::NonNull<()>)>(callback.f);
            f(callback.payload);
        }
    }
    /// Counted nowhere.
    unsafe fn release(_: *const (), _: usize) {}
    let callback = queue::Callback {
        run,
        release,
        inner: std::ptr::null(),
        payload,
        f: f as *const (),
    };
    with_thread(|generation, handle, queue| generation.push(handle, queue, callback, false));
}

/// Tries `done` until it returns `true` (then `true`) or `deadline` has passed after a try
/// (then `false`), waiting between tries for another thread: a yield for the first rounds,
/// then a short sleep, which lets a thread of lower priority run (a yield does not, under a
/// real-time policy).
fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    let mut round = 0_u32;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        if round < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
        round += 1;
    }
}
