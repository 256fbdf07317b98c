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
//! A callback deferred one at a time ([`Deferrer::defer_free`]) joins the calling thread's
//! *buffer*, which any thread can empty: it is handed to the collector (its grace period
//! starts) when the buffer holds [`BUFFER_CALLBACKS`], when any thread calls
//! [`Deferrer::barrier`], or at the latest one [`HANDOVER_TICK`] after it was deferred, by
//! the hand-over thread. A design that batches deferred objects itself (in sheaves) arms its
//! [`Deferrer`] ([`Deferrer::arm`]); while armed, the hand-over thread calls
//! [`DeferTarget::hand_over`] every tick. No callback waits for its own thread to run again.
//!
//! The hand-over thread is started by the first deferral of the process (a process that
//! never defers has none) and sleeps while nothing is buffered, armed, or waiting for its
//! grace period; while deferrals go on it wakes once per [`HANDOVER_TICK`]. It also runs
//! callbacks whose grace period has passed, so that memory deferred by threads that then go
//! idle is reused. Its cost: one thread with a 256 KiB stack, and while deferrals go on, 100
//! wake-ups a second, each taking every thread's buffer lock and, for each armed sheaf cache,
//! each CPU slot once.
//!
//! # Fork
//!
//! A child of a multithreaded process gets a fresh collector (a `pthread_atfork` handler,
//! installed with the first collector): in the child the parent's other threads no longer
//! exist, and one of them pinned at the fork would stop every grace period for ever. The
//! parent's collector, buffers and hand-over thread are abandoned in the child, never
//! touched again; callbacks pending at the fork are lost to the child (their objects stay
//! counted as live, and are never reused) and no longer count in [`Deferrer::pending`].
//!
//! # Pending count
//!
//! A [`Deferrer`] owns a design's shared state in an `Arc`; each deferred callback holds a
//! clone, so the state outlives every pending callback even if the cache is dropped first, and
//! the number of pending callbacks (counting those announced by a [`Reservation`]) is the
//! `Arc`'s count less the owner's, less the clones a fork left behind in callbacks that never
//! run in the child (counted once, by the first use of the deferrer in the child).
//!
//! # Modules
//!
//! - this file: the reader side ([`read`], [`flush`]) and the public constants;
//! - `generation`: the collector of the current fork generation and each thread's
//!   registration in it; owns "a generation is never freed, only abandoned at a fork";
//! - `buffer`: per-thread callback buffers and the hand-over of a batch to the collector;
//!   owns "one side at a time holds a buffer" and the in-flight count;
//! - `handover`: the hand-over thread and its tick; owns "no callback waits for its own
//!   thread to run again";
//! - `thread`: starts the hand-over thread without `std::thread`, whose start takes a
//!   process-wide lock that a fork can leave held in the child;
//! - `deferrer`: [`Deferrer`], [`Reservation`], [`DeferTarget`]; owns the pending count.

mod buffer;
mod deferrer;
mod generation;
mod handover;
#[cfg(test)]
mod tests;
mod thread;

use std::time::Duration;

use crossbeam_epoch as epoch;

pub use deferrer::{DeferTarget, Deferrer, Reservation};

use buffer::hand_over_batch;
use generation::with_thread;

/// The longest a deferred callback waits before its grace period starts, when neither its
/// buffer fills nor a barrier comes first (plus the time the hand-over thread takes to be
/// scheduled and, for a design that batches in sheaves, to take each CPU slot, which an
/// operation holds only for its own length).
pub const HANDOVER_TICK: Duration = Duration::from_millis(10);

/// Callbacks a thread's buffer holds before the thread hands them to the collector itself.
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

/// Hands the calling thread's buffered callbacks to the collector (their grace period
/// starts), and runs those whose grace period has passed.
pub fn flush() {
    with_thread(|generation, handle, buffer| {
        if let Some(buffer) = buffer {
            let batch = buffer.take();
            if !batch.is_empty() {
                hand_over_batch(generation, handle, batch);
            }
        }
        handle.pin().flush();
    });
}
