//! Busy threads beside a measurement (`hogs`), to reproduce an oversubscribed machine.
//!
//! Each hog is pinned to one CPU (round-robin over the CPUs it is given) and, while active,
//! spins on arithmetic that touches no memory beyond its own stack, so it competes for the
//! CPU only: no cache, memory bandwidth or allocator state is shared with the measurement.
//! The coordinator activates the hogs before it releases each phase (warm-up and measured
//! runs) and pauses them once the phase has ended; a paused hog blocks in `park`.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;

use super::sched::{SchedTimes, read_sched};
use crate::cpus::CpuPinner;

struct Control {
    active: AtomicBool,
    quit: AtomicBool,
}

/// Running hogs; dropping them stops and joins every one.
pub(crate) struct Hogs {
    control: Arc<Control>,
    handles: Vec<JoinHandle<()>>,
    tids: Vec<Arc<AtomicI32>>,
    /// Hogs that could not be pinned (`hog I to CPU C: error`).
    pin_failures: Arc<Mutex<Vec<String>>>,
}

impl Hogs {
    /// Starts `count` paused hogs, hog `i` pinned to `cpus[i % cpus.len()]` (unpinned when
    /// `cpus` is empty) with `pin`. Returns once every hog has pinned itself and published
    /// its thread id, so that the scheduler times of the first phase include them all (on a
    /// loaded machine a hog could otherwise start after the phase, and the measurement would
    /// report no hog time).
    pub(crate) fn start(count: usize, cpus: &[core_affinity::CoreId], pin: CpuPinner) -> Self {
        let started = Arc::new(Barrier::new(count + 1));
        let pin_failures = Arc::new(Mutex::new(Vec::new()));
        let control = Arc::new(Control {
            active: AtomicBool::new(false),
            quit: AtomicBool::new(false),
        });
        let mut handles = Vec::with_capacity(count);
        let mut tids = Vec::with_capacity(count);
        for i in 0..count {
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            let control = Arc::clone(&control);
            let tid = Arc::new(AtomicI32::new(0));
            tids.push(Arc::clone(&tid));
            let failures = Arc::clone(&pin_failures);
            let started = Arc::clone(&started);
            let handle = std::thread::Builder::new()
                .name(format!("hog-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu
                        && let Err(e) = pin(cpu.id)
                    {
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("hog {i} to CPU {}: {e}", cpu.id));
                    }
                    tid.store(rustix::thread::gettid().as_raw_pid(), Ordering::Release);
                    started.wait();
                    spin(&control);
                })
                .expect("spawning a hog thread");
            handles.push(handle);
        }
        started.wait();
        Self {
            control,
            handles,
            tids,
            pin_failures,
        }
    }

    /// The hogs that could not be pinned so far.
    pub(crate) fn pin_failures(&self) -> Vec<String> {
        self.pin_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes every hog busy.
    pub(crate) fn activate(&self) {
        self.control.active.store(true, Ordering::Release);
        for handle in &self.handles {
            handle.thread().unpark();
        }
    }

    /// Lets every hog go idle (each notices within a few microseconds).
    pub(crate) fn pause(&self) {
        self.control.active.store(false, Ordering::Release);
    }

    /// The hogs' scheduler times so far, summed; `None` where a hog's could not be read.
    pub(crate) fn sched(&self) -> Option<SchedTimes> {
        let mut sum = SchedTimes::default();
        for tid in &self.tids {
            let tid = tid.load(Ordering::Acquire);
            if tid == 0 {
                return None;
            }
            sum.add(read_sched(tid)?);
        }
        Some(sum)
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.control.quit.store(true, Ordering::Release);
        for handle in &self.handles {
            handle.thread().unpark();
        }
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

fn spin(control: &Control) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while !control.quit.load(Ordering::Acquire) {
        if control.active.load(Ordering::Acquire) {
            // A few microseconds of work between checks of the flags.
            for _ in 0..4096 {
                x = std::hint::black_box(x.rotate_left(7) ^ 0x2545_f491_4f6c_dd1d);
            }
        } else {
            // A stale token only costs one more check; `activate` unparks after storing.
            std::thread::park();
        }
    }
    std::hint::black_box(x);
}
