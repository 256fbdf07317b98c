//! Per-thread event counters (`perf_event_open`) and the `/proc` fallbacks.
//!
//! Each measuring thread opens its own counters after it is pinned; they count only while
//! that thread runs, are enabled around each measured run and read once at the end; the
//! threads' readings are summed. A counter is opened with kernel-side counting first; where
//! that is refused (`EACCES`, as for non-root users under `perf_event_paranoid` 2) it is
//! opened again counting user space only, and the reading says so. A counter that cannot be
//! opened at all (`ENOENT` on a machine without a PMU) is reported as unsupported, with the
//! reason — never as 0. A counter that opened but never ran (`time_running` 0: the kernel
//! could not schedule it, for example a PMU taken by another user) is reported as not counted,
//! not as 0. The measuring threads enable their counters once a measured run has started
//! (after the start barrier and the wait for helper threads) and disable them as soon as their
//! work ends, so neither barrier is counted. Context switches and CPU migrations happen in the kernel: counted in
//! user space only they always read 0, so that fallback is reported as unsupported too, and
//! the `/proc/thread-self/status` switch counts (the figures `getrusage` gives) stand in.

use std::collections::BTreeMap;
use std::io;

use perf_event::events::{Hardware, Software};
use perf_event::{Builder, Counter};
use serde::{Deserialize, Serialize};

/// An event the harness counts per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CounterEvent {
    /// CPU cycles (hardware).
    Cycles,
    /// Instructions retired (hardware).
    Instructions,
    /// Last-level cache misses (hardware).
    CacheMisses,
    /// Mispredicted branches (hardware).
    BranchMisses,
    /// CPU time of the thread, in nanoseconds (software).
    TaskClock,
    /// Page faults (software).
    PageFaults,
    /// Context switches (software, kernel-side).
    ContextSwitches,
    /// Moves of the thread between CPUs (software, kernel-side).
    CpuMigrations,
}

impl CounterEvent {
    /// Every event, in report order.
    pub const ALL: [CounterEvent; 8] = [
        CounterEvent::Cycles,
        CounterEvent::Instructions,
        CounterEvent::CacheMisses,
        CounterEvent::BranchMisses,
        CounterEvent::TaskClock,
        CounterEvent::PageFaults,
        CounterEvent::ContextSwitches,
        CounterEvent::CpuMigrations,
    ];

    /// The name in result files (`perf stat`'s).
    pub fn name(self) -> &'static str {
        match self {
            CounterEvent::Cycles => "cycles",
            CounterEvent::Instructions => "instructions",
            CounterEvent::CacheMisses => "cache-misses",
            CounterEvent::BranchMisses => "branch-misses",
            CounterEvent::TaskClock => "task-clock",
            CounterEvent::PageFaults => "page-faults",
            CounterEvent::ContextSwitches => "context-switches",
            CounterEvent::CpuMigrations => "cpu-migrations",
        }
    }

    /// Whether the event happens only in the kernel (user-only counting reads 0).
    fn kernel_only(self) -> bool {
        matches!(
            self,
            CounterEvent::ContextSwitches | CounterEvent::CpuMigrations
        )
    }

    fn builder(self) -> Builder<'static> {
        match self {
            CounterEvent::Cycles => Builder::new(Hardware::CPU_CYCLES),
            CounterEvent::Instructions => Builder::new(Hardware::INSTRUCTIONS),
            CounterEvent::CacheMisses => Builder::new(Hardware::CACHE_MISSES),
            CounterEvent::BranchMisses => Builder::new(Hardware::BRANCH_MISSES),
            CounterEvent::TaskClock => Builder::new(Software::TASK_CLOCK),
            CounterEvent::PageFaults => Builder::new(Software::PAGE_FAULTS),
            CounterEvent::ContextSwitches => Builder::new(Software::CONTEXT_SWITCHES),
            CounterEvent::CpuMigrations => Builder::new(Software::CPU_MIGRATIONS),
        }
    }
}

/// Opens a counter of `event` for the calling thread, counting kernel-side events too when
/// `include_kernel` is set. The harness uses [`open_perf_counter`]; tests inject failures.
pub type CounterOpener = fn(CounterEvent, bool) -> io::Result<Counter>;

/// Opens a real `perf_event` counter on the calling thread, disabled.
pub fn open_perf_counter(event: CounterEvent, include_kernel: bool) -> io::Result<Counter> {
    let mut builder = event.builder();
    builder.observe_self().any_cpu();
    if include_kernel {
        builder.include_kernel();
    }
    builder.build()
}

/// One counter of one thread.
#[derive(Debug)]
enum Slot {
    Open {
        counter: Box<Counter>,
        user_only: bool,
    },
    Unsupported {
        reason: String,
    },
}

/// The counters of one measuring thread.
#[derive(Debug)]
pub struct ThreadCounters {
    slots: Vec<(CounterEvent, Slot)>,
}

impl ThreadCounters {
    /// Opens every event of [`CounterEvent::ALL`] on the calling thread with `open`.
    pub fn open(open: CounterOpener) -> Self {
        let slots = CounterEvent::ALL
            .iter()
            .map(|&event| (event, open_slot(event, open)))
            .collect();
        Self { slots }
    }

    /// Starts counting.
    pub fn enable(&mut self) {
        for (_, slot) in &mut self.slots {
            if let Slot::Open { counter, .. } = slot {
                // A counter that cannot be enabled simply reads less; its read reports it.
                let _ = counter.enable();
            }
        }
    }

    /// Stops counting.
    pub fn disable(&mut self) {
        for (_, slot) in &mut self.slots {
            if let Slot::Open { counter, .. } = slot {
                let _ = counter.disable();
            }
        }
    }

    /// Reads every counter (scaled if the kernel multiplexed it).
    pub fn read(&mut self) -> CounterTotals {
        let mut totals = CounterTotals::default();
        for (event, slot) in &mut self.slots {
            let entry = match slot {
                Slot::Unsupported { reason } => Total::Unsupported(reason.clone()),
                Slot::Open { counter, user_only } => match counter.read_count_and_time() {
                    Ok(reading) => total_of(
                        reading.count,
                        reading.time_enabled,
                        reading.time_running,
                        *user_only,
                    ),
                    Err(e) => Total::Unsupported(format!("reading the counter failed: {e}")),
                },
            };
            totals.events.insert(event.name(), entry);
        }
        totals
    }
}

/// One thread's reading of a counter that was open: `count` over `running` of the `enabled`
/// nanoseconds, scaled up where the kernel multiplexed it, and not counted where it never ran.
fn total_of(count: u64, enabled: u64, running: u64, user_only: bool) -> Total {
    if running == 0 {
        return Total::NotCounted(if enabled == 0 {
            "the counter was never enabled during a measured run".to_owned()
        } else {
            "the kernel never ran the counter while it was enabled (time_running 0: the PMU may be in use by another user, e.g. the NMI watchdog or another perf session)".to_owned()
        });
    }
    let mut value = count as f64;
    let mut notes = Vec::new();
    if user_only {
        notes.push(USER_ONLY_NOTE.to_owned());
    }
    if running < enabled {
        value *= enabled as f64 / running as f64;
        notes.push("scaled: the kernel multiplexed this counter".to_owned());
    }
    Total::Counted { value, notes }
}

const USER_ONLY_NOTE: &str = "user-space only: kernel-side counting was refused (EACCES; see /proc/sys/kernel/perf_event_paranoid)";

fn open_slot(event: CounterEvent, open: CounterOpener) -> Slot {
    match open(event, true) {
        Ok(counter) => Slot::Open {
            counter: Box::new(counter),
            user_only: false,
        },
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            if event.kernel_only() {
                return Slot::Unsupported {
                    reason: format!(
                        "kernel-side counting refused ({e}) and this event happens only in the kernel, so user-only counting would always read 0; see `switches_voluntary`/`switches_involuntary` for context switches and `pinning` for migrations"
                    ),
                };
            }
            match open(event, false) {
                Ok(counter) => Slot::Open {
                    counter: Box::new(counter),
                    user_only: true,
                },
                Err(e) => Slot::Unsupported {
                    reason: open_failure(&e),
                },
            }
        }
        Err(e) => Slot::Unsupported {
            reason: open_failure(&e),
        },
    }
}

fn open_failure(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => {
            format!("the machine exposes no such event ({e}): no PMU, e.g. in a VM")
        }
        io::ErrorKind::PermissionDenied => format!("perf_event_open refused ({e})"),
        _ => format!("perf_event_open failed: {e}"),
    }
}

/// One counter's reading, summed over threads.
#[derive(Clone, Debug, PartialEq)]
enum Total {
    Counted {
        value: f64,
        notes: Vec<String>,
    },
    /// Opened, but it never ran on this thread: its 0 would be no reading at all.
    NotCounted(String),
    Unsupported(String),
}

/// Counter readings, summed over the threads of a measurement.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CounterTotals {
    events: BTreeMap<&'static str, Total>,
}

impl CounterTotals {
    /// Adds another thread's readings. An event unsupported on any thread is unsupported; one
    /// not counted on any thread is not counted (a sum missing a thread would be too low).
    pub fn merge(&mut self, other: CounterTotals) {
        for (name, theirs) in other.events {
            match self.events.get_mut(name) {
                None => {
                    self.events.insert(name, theirs);
                }
                Some(ours) => {
                    let merged = match (
                        std::mem::replace(ours, Total::Unsupported(String::new())),
                        theirs,
                    ) {
                        (Total::Unsupported(r), _) | (_, Total::Unsupported(r)) => {
                            Total::Unsupported(r)
                        }
                        (Total::NotCounted(r), _) | (_, Total::NotCounted(r)) => {
                            Total::NotCounted(r)
                        }
                        (
                            Total::Counted {
                                value: a,
                                mut notes,
                            },
                            Total::Counted {
                                value: b,
                                notes: more,
                            },
                        ) => {
                            for note in more {
                                if !notes.contains(&note) {
                                    notes.push(note);
                                }
                            }
                            Total::Counted {
                                value: a + b,
                                notes,
                            }
                        }
                    };
                    *ours = merged;
                }
            }
        }
    }

    /// The result-file form, with per-operation figures for `ops` operations.
    pub fn report(&self, ops: u64) -> BTreeMap<String, CounterReading> {
        self.events
            .iter()
            .map(|(name, total)| {
                let reading = match total {
                    Total::Unsupported(reason) => CounterReading::Unsupported {
                        reason: reason.clone(),
                    },
                    Total::NotCounted(reason) => CounterReading::NotCounted {
                        reason: reason.clone(),
                    },
                    Total::Counted { value, notes } => CounterReading::Ok {
                        value: *value,
                        per_op: if ops > 0 { value / ops as f64 } else { 0.0 },
                        note: (!notes.is_empty()).then(|| notes.join("; ")),
                    },
                };
                ((*name).to_owned(), reading)
            })
            .collect()
    }
}

/// A counter in a result file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum CounterReading {
    /// Counted.
    Ok {
        /// Total over the measured runs and threads.
        value: f64,
        /// `value` per operation.
        per_op: f64,
        /// How it was counted, where that matters (user-only, multiplexed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Opened, but the kernel never ran it during the measured runs (`time_running` 0 on at
    /// least one thread): there is no reading, not a reading of 0.
    NotCounted {
        /// Why.
        reason: String,
    },
    /// The machine cannot provide it.
    Unsupported {
        /// Why.
        reason: String,
    },
}

/// Voluntary and involuntary context switches of the calling thread so far, from
/// `/proc/thread-self/status` (the figures `getrusage(RUSAGE_THREAD)` gives); `None` where
/// the file cannot be read.
pub fn thread_switches() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().parse::<u64>().ok())
    };
    Some((
        field("voluntary_ctxt_switches:")?,
        field("nonvoluntary_ctxt_switches:")?,
    ))
}

/// Whether each event can be counted on this machine by this user, for `list`.
pub fn probe() -> Vec<(CounterEvent, Result<Option<&'static str>, String>)> {
    CounterEvent::ALL
        .iter()
        .map(|&event| {
            let status = match open_slot(event, open_perf_counter) {
                Slot::Open {
                    user_only: false, ..
                } => Ok(None),
                Slot::Open {
                    user_only: true, ..
                } => Ok(Some("user-space only")),
                Slot::Unsupported { reason } => Err(reason),
            };
            (event, status)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_such_event(_: CounterEvent, _: bool) -> io::Result<Counter> {
        Err(io::Error::from_raw_os_error(2))
    }

    fn kernel_refused(event: CounterEvent, include_kernel: bool) -> io::Result<Counter> {
        if include_kernel {
            Err(io::Error::from_raw_os_error(13))
        } else {
            open_perf_counter(event, false)
        }
    }

    #[test]
    fn a_counter_that_cannot_be_opened_is_reported_unsupported_not_zero() {
        let mut counters = ThreadCounters::open(no_such_event);
        counters.enable();
        counters.disable();
        let report = counters.read().report(1000);
        assert_eq!(report.len(), CounterEvent::ALL.len());
        for (name, reading) in &report {
            match reading {
                CounterReading::Unsupported { reason } => {
                    assert!(reason.contains("no such event"), "{name}: {reason}")
                }
                other => panic!("{name} reported {other:?}"),
            }
        }
        let json = serde_json::to_value(&report["cycles"]).unwrap();
        assert_eq!(json["status"], "unsupported");
        assert!(json.get("value").is_none());
    }

    #[test]
    fn refused_kernel_counting_falls_back_to_user_only_and_says_so() {
        let mut counters = ThreadCounters::open(kernel_refused);
        counters.enable();
        let mut x = 0u64;
        for i in 0..100_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        counters.disable();
        let report = counters.read().report(1);
        match &report["context-switches"] {
            CounterReading::Unsupported { reason } => {
                assert!(reason.contains("only in the kernel"), "{reason}")
            }
            other => panic!("context-switches: {other:?}"),
        }
        // task-clock is a software event every Linux kernel provides; where perf_event_open
        // is unavailable altogether (seccomp, paranoid 3) it must be reported unsupported.
        match &report["task-clock"] {
            CounterReading::Ok { note, .. } => {
                assert!(note.as_deref().unwrap_or("").contains("user-space only"))
            }
            CounterReading::Unsupported { reason } => assert!(!reason.is_empty()),
            CounterReading::NotCounted { reason } => panic!("task-clock enabled but {reason}"),
        }
    }

    #[test]
    fn merging_sums_and_unsupported_wins() {
        let mut a = CounterTotals::default();
        a.events.insert(
            "task-clock",
            Total::Counted {
                value: 10.0,
                notes: vec![],
            },
        );
        a.events.insert(
            "cycles",
            Total::Counted {
                value: 5.0,
                notes: vec![],
            },
        );
        let mut b = CounterTotals::default();
        b.events.insert(
            "task-clock",
            Total::Counted {
                value: 30.0,
                notes: vec![],
            },
        );
        b.events.insert("cycles", Total::Unsupported("gone".into()));
        a.merge(b);
        let report = a.report(4);
        assert_eq!(
            report["task-clock"],
            CounterReading::Ok {
                value: 40.0,
                per_op: 10.0,
                note: None
            }
        );
        assert!(matches!(
            report["cycles"],
            CounterReading::Unsupported { .. }
        ));
    }

    #[test]
    fn a_counter_that_never_ran_is_not_counted_rather_than_zero() {
        assert_eq!(
            total_of(0, 5_000, 0, false),
            Total::NotCounted(
                "the kernel never ran the counter while it was enabled (time_running 0: the PMU may be in use by another user, e.g. the NMI watchdog or another perf session)".to_owned()
            )
        );
        assert!(matches!(total_of(0, 0, 0, false), Total::NotCounted(_)));
        assert_eq!(
            total_of(10, 200, 100, false),
            Total::Counted {
                value: 20.0,
                notes: vec!["scaled: the kernel multiplexed this counter".to_owned()]
            }
        );
        // A sum over threads is not counted when one thread's counter never ran.
        let mut a = CounterTotals::default();
        a.events.insert("cycles", total_of(7, 100, 100, false));
        let mut b = CounterTotals::default();
        b.events.insert("cycles", total_of(0, 100, 0, false));
        a.merge(b);
        let report = a.report(1);
        assert!(
            matches!(report["cycles"], CounterReading::NotCounted { .. }),
            "{report:?}"
        );
        let json = serde_json::to_value(&report["cycles"]).unwrap();
        assert_eq!(json["status"], "not-counted");
        assert!(json.get("value").is_none());
    }

    #[test]
    fn an_open_counter_never_enabled_reads_as_not_counted() {
        // Real software counters: opened, never enabled, read.
        let mut counters = ThreadCounters::open(open_perf_counter);
        let report = counters.read().report(1);
        for (name, reading) in &report {
            assert!(
                matches!(
                    reading,
                    CounterReading::NotCounted { .. } | CounterReading::Unsupported { .. }
                ),
                "{name}: {reading:?}"
            );
        }
    }

    #[test]
    fn thread_switches_are_readable_on_linux() {
        let (voluntary, involuntary) = thread_switches().expect("/proc/thread-self/status");
        assert!(voluntary.checked_add(involuntary).is_some());
    }
}
