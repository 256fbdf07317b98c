//! Per-thread scheduler times from `/proc/self/task/<tid>/schedstat`: how long a thread ran
//! and how long it waited, runnable, for a CPU.
//!
//! The coordinator reads them for every thread of a measurement at the phase boundaries,
//! while the measured threads wait at the barrier, so the reads take no CPU from a measured
//! run.

/// Scheduler times of one thread, or a sum over threads, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SchedTimes {
    /// Time on a CPU.
    pub(crate) run_ns: u64,
    /// Time runnable but waiting for a CPU (on a run queue).
    pub(crate) wait_ns: u64,
}

impl SchedTimes {
    /// Adds `other` to `self`.
    pub(crate) fn add(&mut self, other: SchedTimes) {
        self.run_ns += other.run_ns;
        self.wait_ns += other.wait_ns;
    }

    /// The times from `earlier` to `self`.
    pub(crate) fn since(self, earlier: SchedTimes) -> SchedTimes {
        SchedTimes {
            run_ns: self.run_ns.saturating_sub(earlier.run_ns),
            wait_ns: self.wait_ns.saturating_sub(earlier.wait_ns),
        }
    }
}

/// Parses the text of a `schedstat` file: run time, run-queue wait, time slices.
pub(crate) fn parse_sched(text: &str) -> Option<SchedTimes> {
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    Some(SchedTimes {
        run_ns: fields.next()??,
        wait_ns: fields.next()??,
    })
}

/// The scheduler times of thread `tid` of this process; `None` where the kernel does not
/// keep them (built without `CONFIG_SCHED_INFO`) or the thread has exited.
pub(crate) fn read_sched(tid: i32) -> Option<SchedTimes> {
    parse_sched(&std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?)
}

/// The calling thread's id, for [`read_sched`].
pub(crate) fn current_tid() -> i32 {
    rustix::thread::gettid().as_raw_pid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_text_parses() {
        assert_eq!(
            parse_sched("123 45 6\n"),
            Some(SchedTimes {
                run_ns: 123,
                wait_ns: 45
            })
        );
        assert_eq!(parse_sched("12\n"), None);
        assert_eq!(parse_sched("x 1 2"), None);
    }

    #[test]
    fn a_busy_thread_accumulates_run_time() {
        let tid = current_tid();
        let before = read_sched(tid).expect("schedstat of this thread");
        let start = std::time::Instant::now();
        let mut x = 1u64;
        while start.elapsed() < std::time::Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_mul(3));
        }
        let ran = read_sched(tid).unwrap().since(before);
        assert!(ran.run_ns > 0, "{ran:?}");
    }
}
