//! The hand-over thread: asks for grace periods for callbacks waiting in queues and hands
//! armed deferrers' batches over, and runs expired collections, once per [`HANDOVER_TICK`]
//! while there is work.

use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use crossbeam_epoch::LocalHandle;

use super::HANDOVER_TICK;
use super::generation::Generation;

/// Collector flushes driven per tick of the hand-over thread (each runs at most a few expired
/// collections).
const COLLECTS_PER_TICK: usize = 4;

#[derive(Default)]
pub(super) struct Monitor {
    state: Mutex<MonitorState>,
    wake: Condvar,
    /// Set while the thread is between ticks (it will tick again); read by deferrals to
    /// decide whether to wake it.
    awake: AtomicBool,
}

#[derive(Default)]
pub(super) struct MonitorState {
    started: bool,
    work: bool,
    pub(super) armed: Vec<Weak<dyn Armed>>,
}

impl Generation {
    pub(super) fn monitor_state(&self) -> MutexGuard<'_, MonitorState> {
        self.monitor.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something was queued, armed or requested: wakes (or starts) the hand-over thread
    /// unless it is awake.
    pub(super) fn kick(&'static self) {
        // Pairs with the fence of a thread going idle: either it sees what the caller did,
        // or the caller sees it idle.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.monitor.awake.load(Ordering::SeqCst) {
            return;
        }
        let mut state = self.monitor_state();
        state.work = true;
        if state.started {
            self.monitor.wake.notify_one();
            return;
        }
        state.started = true;
        self.monitor.awake.store(true, Ordering::SeqCst);
        // If the thread cannot be started, callbacks still get their grace period when a
        // thread has queued enough of them, exits, or flushes, or a barrier runs. It runs deferred callbacks (design code, page
        // sources), nothing deeper than 256 KiB of stack.
        let _ =
            super::thread::spawn_detached(c"rcu-hand-over", 256 << 10, move || self.monitor_loop());
    }

    fn monitor_loop(&'static self) {
        #[cfg(test)]
        super::generation::IS_HANDOVER.with(|flag| flag.set(true));
        let handle = self.collector.register();
        // `safe` as the previous tick read it.
        let mut stale = 0;
        loop {
            {
                let mut state = self.monitor_state();
                while !state.work {
                    state = self
                        .monitor
                        .wake
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
                state.work = false;
                self.monitor.awake.store(true, Ordering::SeqCst);
            }
            loop {
                std::thread::sleep(HANDOVER_TICK);
                if self.tick(&handle, &mut stale) {
                    continue;
                }
                // Going idle: deferrals from now on see it and wake the thread; one more look
                // catches those that did not.
                self.monitor.awake.store(false, Ordering::SeqCst);
                std::sync::atomic::fence(Ordering::SeqCst);
                if !self.tick(&handle, &mut stale) {
                    break;
                }
                self.monitor.awake.store(true, Ordering::SeqCst);
            }
        }
    }

    /// One tick: asks for a grace period for every queued callback, hands every armed
    /// deferrer's batches over, runs expired collections, and then the callbacks that their
    /// own threads left for a tick (`stale`: see [`Generation::run_expired`]); whether
    /// anything is left to do.
    fn tick(&'static self, handle: &LocalHandle, stale: &mut u64) -> bool {
        let mut busy = self.has_queued();
        if busy {
            self.request(handle);
        }
        let armed = mem::take(&mut self.monitor_state().armed);
        let mut keep = Vec::with_capacity(armed.len());
        for entry in armed {
            if let Some(deferrer) = entry.upgrade()
                && deferrer.tick(self.id)
            {
                keep.push(entry);
            }
        }
        if !keep.is_empty() {
            busy = true;
            self.monitor_state().armed.extend(keep);
        }
        for _ in 0..COLLECTS_PER_TICK {
            if self.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            handle.pin().flush();
        }
        *stale = self.run_expired(*stale);
        busy || self.in_flight.load(Ordering::Acquire) != 0
    }
}

/// A deferrer the hand-over thread calls every tick while it is armed.
pub(super) trait Armed: Send + Sync {
    /// Hands the design's batches over; whether it stays armed.
    fn tick(self: Arc<Self>, generation: u32) -> bool;
}
