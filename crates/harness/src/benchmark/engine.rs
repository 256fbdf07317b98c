//! The thread engine: spawn once, pin, release together, warm up, measure, merge.
//!
//! A measurement has *primary* threads (the workers whose operations are counted: churners,
//! producers, writers) and *secondary* threads (consumers, readers) that serve them. Every
//! thread is spawned once, pinned to its own CPU (the CPU ids are read before any thread is
//! pinned; a thread that cannot be pinned says so in the result), opens its counters and allocates its histogram, and then runs the phases: a
//! warm-up, then each measured run. A phase starts when the coordinator and every thread
//! have reached the barrier, and ends at the same barrier; the coordinator's clock between
//! the two is the run's wall time.
//!
//! Within a phase a primary runs units of work until the coordinator raises `stop` (runs of
//! a fixed duration) or until its share of the operations is done (runs of a fixed count).
//! No primary starts its first unit before every secondary has checked in to the phase, so
//! that the measured work always runs beside the helpers its spec names (released from the
//! barrier, a secondary may otherwise wait for a CPU until a short run is over). A secondary
//! runs at least one unit, then until every primary has finished the phase and it has
//! nothing left (a consumer drains its queue). Each unit of an engine-timed primary ends with
//! one clock read, which is also the start of the next unit; in measured phases a primary records the unit's time in its
//! histogram, which was sized up front so recording never allocates. A sample therefore
//! covers the unit, one clock read and the engine's bookkeeping between two units (the
//! stop-flag load, the histogram record and, pinned, the CPU check); both costs are measured
//! at start-up and reported beside the figures (`timer_overhead_ns`, `bookkeeping_ns`).
//! Secondaries and self-timed work read no clock in the loop. Self-timed work
//! ([`Work::SELF_TIMED`], the tree kinds) records one sample per operation itself, timing
//! only the operation, and hands its samples over at the end of each measured phase.
//!
//! The coordinator stays off the measured CPUs' time where it can: when the threads are
//! pinned and a CPU is left over, it pins itself there; between the release and the end of
//! a phase it blocks on a condition variable with the phase's deadline as its time-out (the
//! last primary to finish wakes it early), so it wakes once per phase instead of polling. At
//! the phase boundaries, while the measured threads wait at the barrier, it reads their
//! scheduler times (run time and time waiting for a CPU) and, with `hogs`, activates the
//! busy threads before a release and pauses them after the end.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::counters::{CounterOpener, CounterTotals, ThreadCounters, thread_switches};
use crate::cpus::CpuPinner;
use crate::histogram::{merge, new_latency_histogram};
use crate::result::{Pinning, Timeline};
use crate::spec::RunLength;
use crate::steal::{self, CpuTicks};

use super::hogs::Hogs;
use super::sampler::{Reading, SamplerPlan, SamplerState};
use super::sched::{SchedTimes, current_tid, read_sched};

/// One thread's work, one unit at a time.
pub(crate) trait Work {
    /// Does one unit of work; returns the operations it completed.
    fn unit(&mut self) -> u64;

    /// Secondary threads: whether nothing is left once the primaries have finished.
    fn drained(&mut self) -> bool {
        true
    }

    /// Called when the thread leaves a phase's loop, before it reports the phase finished.
    fn end_phase(&mut self) {}

    /// Primaries: nanoseconds of this phase's units spent on upkeep that is not the measured
    /// work (a check, a reset), since the last call. The run's measured time leaves it out.
    fn take_upkeep_ns(&mut self) -> u64 {
        0
    }

    /// Whether the work records its own latency samples (one per operation, timing only the
    /// operation) instead of the engine timing each unit.
    const SELF_TIMED: bool = false;

    /// Self-timed work: moves the samples recorded since the last call into `histogram`
    /// when `keep` (a measured phase), or drops them (the warm-up).
    fn take_samples(&mut self, keep: bool, histogram: &mut Histogram<u64>) {
        let _ = (keep, histogram);
    }
}

/// A `Work` for kinds without secondary threads.
pub(crate) enum NoWork {}

impl Work for NoWork {
    fn unit(&mut self) -> u64 {
        match *self {}
    }
}

/// How to drive the threads.
pub(crate) struct DrivePlan<'a> {
    pub(crate) primaries: usize,
    pub(crate) secondaries: usize,
    /// CPU for each OS thread (primaries first), or `None` when unpinned.
    pub(crate) cpus: Option<Vec<core_affinity::CoreId>>,
    pub(crate) warmup: Duration,
    pub(crate) length: RunLength,
    pub(crate) runs: u32,
    pub(crate) open_counters: CounterOpener,
    /// Pins a thread to a CPU of `cpus`.
    pub(crate) pin: CpuPinner,
    /// Busy threads to run beside every phase, pinned round-robin to `cpus` (to every CPU
    /// this process may use when unpinned).
    pub(crate) hogs: usize,
    /// The memory sampler, if the timeline is recorded: it runs on its own thread from
    /// before the warm-up to the end of the last run, and the coordinator takes one more
    /// reading at the end of each phase, while the threads wait.
    pub(crate) sampler: Option<SamplerPlan<'a>>,
    /// Run by the first primary after the last phase (outside every timed interval and
    /// after the last snapshot), before its work is dropped; its figure is returned.
    pub(crate) probe: Option<&'a (dyn Fn() -> u64 + Sync)>,
    /// Called by the coordinator before it releases the threads into the warm-up (see
    /// `MeasureOptions::start_gate`).
    pub(crate) start_gate: Option<fn()>,
    /// Pinned as one task of several processes: the CPUs of all of them, where the
    /// coordinator (and the sampler, which inherits its affinity) must not sit; `None`: the
    /// measurement's own `cpus`.
    pub(crate) all_tasks: Option<Vec<core_affinity::CoreId>>,
    /// Run-time changes of the cache's limits in each measured run (the spec's `phases`).
    pub(crate) changes: Option<ChangePlan<'a>>,
}

/// Changes applied by the coordinator (never a measured thread) during each measured run of
/// a timed plan, and the windows around them whose samples the primaries keep apart.
pub(crate) struct ChangePlan<'a> {
    /// Offsets of the changes into each measured run, increasing.
    pub(crate) at: Vec<Duration>,
    /// Applies change `i`; returns the objects it flushed, or why it failed.
    pub(crate) apply: &'a (dyn Fn(usize) -> Result<u64, String> + Sync),
    /// Restores the starting values before each measured run after the first (while every
    /// thread waits); returns the objects it flushed.
    pub(crate) reset: &'a (dyn Fn() -> Result<u64, String> + Sync),
}

/// How long the windows before and after each change are, at most.
pub(crate) const CHANGE_WINDOW: Duration = Duration::from_millis(100);

impl ChangePlan<'_> {
    /// For each change, the window before it (up to [`CHANGE_WINDOW`], not before the
    /// previous change) and the window after it (up to [`CHANGE_WINDOW`], not past the next
    /// change or the end of the run), as offsets into the run: `2 * at.len()` windows.
    pub(crate) fn windows(&self, run: Duration) -> Vec<(Duration, Duration)> {
        let mut windows = Vec::with_capacity(2 * self.at.len());
        for (i, &at) in self.at.iter().enumerate() {
            let previous = if i == 0 {
                Duration::ZERO
            } else {
                self.at[i - 1]
            };
            let next = self.at.get(i + 1).copied().unwrap_or(run);
            windows.push((at.saturating_sub(CHANGE_WINDOW).max(previous), at));
            windows.push((at, (at + CHANGE_WINDOW).min(next)));
        }
        windows
    }
}

/// What one change did in one measured run.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ChangeDone {
    /// Seconds from the run's start to the start of the change.
    pub(crate) applied_at: f64,
    /// Seconds the change took.
    pub(crate) took: f64,
    /// Objects it flushed.
    pub(crate) flushed: u64,
    /// Why it failed, if it did.
    pub(crate) error: Option<String>,
}

/// The primaries' samples inside one window of a [`ChangePlan`], over every measured run.
pub(crate) struct WindowFigures {
    /// Operations of units that ended inside the window.
    pub(crate) ops: u64,
    /// Their samples.
    pub(crate) histogram: Histogram<u64>,
}

/// What the threads found.
pub(crate) struct DriveOutcome<R> {
    /// Per measured run.
    pub(crate) runs: Vec<RunFigures>,
    pub(crate) histogram: Histogram<u64>,
    pub(crate) counters: CounterTotals,
    pub(crate) pinning: Pinning,
    pub(crate) switches: Option<(u64, u64)>,
    /// Ticks of the measurement's CPUs (all CPUs when unpinned) over the measured runs, and
    /// how many the hypervisor stole; `None` where `/proc/stat` has no steal column.
    pub(crate) ticks: Option<CpuTicks>,
    /// What the coordinator's `between` returned after the warm-up and after the last run.
    pub(crate) snapshots: (R, R),
    /// Scheduler times of the measured threads over the measured runs, summed; `None`
    /// where the kernel does not report them.
    pub(crate) thread_sched: Option<SchedTimes>,
    /// Scheduler times of the hogs over the measured runs, summed (`None` without hogs).
    pub(crate) hog_sched: Option<SchedTimes>,
    /// The sampler's timeline (`None` without a sampler).
    pub(crate) timeline: Option<Timeline>,
    /// With a sampler: a reading at the end of each phase (the warm-up first).
    pub(crate) phase_ends: Vec<Reading>,
    /// What the plan's probe returned.
    pub(crate) probe: Option<u64>,
    /// Per window of the change plan (see [`ChangePlan::windows`]), merged over primaries
    /// and runs; empty without one.
    pub(crate) windows: Vec<WindowFigures>,
    /// Per measured run, what each change did; empty without a change plan.
    pub(crate) changes: Vec<Vec<ChangeDone>>,
    /// Objects flushed by the restores between runs.
    pub(crate) reset_flushed: u64,
}

impl<R> DriveOutcome<R> {
    /// The same outcome with its snapshots mapped by `f`.
    pub(crate) fn map_snapshots<T>(self, mut f: impl FnMut(R) -> T) -> DriveOutcome<T> {
        let (warm, last) = self.snapshots;
        DriveOutcome {
            runs: self.runs,
            histogram: self.histogram,
            counters: self.counters,
            pinning: self.pinning,
            switches: self.switches,
            ticks: self.ticks,
            snapshots: (f(warm), f(last)),
            thread_sched: self.thread_sched,
            hog_sched: self.hog_sched,
            timeline: self.timeline,
            phase_ends: self.phase_ends,
            probe: self.probe,
            windows: self.windows,
            changes: self.changes,
            reset_flushed: self.reset_flushed,
        }
    }
}

/// What one measured run found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RunFigures {
    /// Operations of the primaries.
    pub(crate) primary_ops: u64,
    /// Operations of the secondaries.
    pub(crate) secondary_ops: u64,
    /// Seconds from the release of the threads to the end of the last one.
    pub(crate) wall: f64,
    /// The seconds the primaries' operations took, their upkeep left out: `primary_ops`
    /// over the sum of each primary's rate over its own time (`wall` less its upkeep);
    /// `wall` when no primary reported upkeep.
    pub(crate) measured: f64,
}

impl RunFigures {
    /// The figures of a run of `wall` seconds whose primaries did `(ops, upkeep_ns)` each.
    fn of(wall: f64, primaries: &[(u64, u64)], secondary_ops: u64) -> Self {
        let primary_ops = primaries.iter().map(|&(ops, _)| ops).sum();
        let measured = if primaries.iter().all(|&(_, upkeep)| upkeep == 0) {
            wall
        } else {
            let rate: f64 = primaries
                .iter()
                .map(|&(ops, upkeep)| {
                    let own = wall - upkeep as f64 * 1e-9;
                    if own > 0.0 { ops as f64 / own } else { 0.0 }
                })
                .sum();
            if rate > 0.0 {
                primary_ops as f64 / rate
            } else {
                wall
            }
        };
        Self {
            primary_ops,
            secondary_ops,
            wall,
            measured,
        }
    }
}

struct Control {
    barrier: Barrier,
    stop: AtomicBool,
    primaries_running: AtomicUsize,
    /// Secondaries in the plan.
    secondaries: usize,
    /// Secondaries that have entered the current phase.
    secondaries_in: AtomicUsize,
    /// The last primary to finish a phase notifies `finished` under this lock.
    finished_lock: Mutex<()>,
    finished: Condvar,
    /// Each OS thread's id, for its scheduler times.
    tids: Vec<AtomicI32>,
    /// The change plan's windows (offsets into a measured run); empty without one.
    windows: Vec<(Duration, Duration)>,
}

struct ThreadReport {
    /// Why the thread could not be pinned to its CPU, if it could not.
    pin_error: Option<String>,
    phase_ops: Vec<u64>,
    /// Upkeep nanoseconds per phase (primaries).
    phase_upkeep: Vec<u64>,
    histogram: Histogram<u64>,
    counters: CounterTotals,
    samples: u64,
    off_cpu: u64,
    switches: Option<(u64, u64)>,
    /// Per window: operations and samples (primaries, engine-timed work).
    windows: Vec<(u64, Histogram<u64>)>,
}

/// Runs the plan. `make_primary(i)` and `make_secondary(i)` build each thread's work on that
/// thread (after pinning, so first-touch and per-CPU caches see the right CPU). `snapshot`
/// runs on the coordinator while every thread waits: after the warm-up and after the last
/// measured run.
pub(crate) fn drive<P, S, R>(
    plan: &DrivePlan<'_>,
    make_primary: impl Fn(usize) -> P + Sync,
    make_secondary: impl Fn(usize) -> S + Sync,
    snapshot: impl Fn() -> R,
) -> DriveOutcome<R>
where
    P: Work,
    S: Work,
{
    let control = Control {
        barrier: Barrier::new(plan.primaries + plan.secondaries + 1),
        stop: AtomicBool::new(false),
        primaries_running: AtomicUsize::new(0),
        secondaries: plan.secondaries,
        secondaries_in: AtomicUsize::new(0),
        finished_lock: Mutex::new(()),
        finished: Condvar::new(),
        tids: (0..plan.primaries + plan.secondaries)
            .map(|_| AtomicI32::new(0))
            .collect(),
        windows: match (&plan.changes, plan.length) {
            (Some(changes), RunLength::Duration(run)) => changes.windows(run),
            _ => Vec::new(),
        },
    };
    let coordinator = CoordinatorCpu::pin_apart(plan.all_tasks.as_deref().or(plan.cpus.as_deref()));
    let hog_cpus = plan
        .cpus
        .clone()
        .or_else(core_affinity::get_core_ids)
        .unwrap_or_default();
    let hogs = (plan.hogs > 0).then(|| Hogs::start(plan.hogs, &hog_cpus, plan.pin));
    let phases = plan.runs as usize + 1;
    // Spawned below by the coordinator once it sits on its own CPU, whose affinity the
    // sampler thread inherits.
    let sampler = plan.sampler.map(|s| (s, SamplerState::new(s.interval)));
    let probed = AtomicU64::new(u64::MAX);
    let quotas: Vec<Option<u64>> = (0..plan.primaries)
        .map(|i| match plan.length {
            RunLength::Duration(_) => None,
            RunLength::Ops(total) => {
                let share = total / plan.primaries as u64;
                let extra = u64::from(i < (total % plan.primaries as u64) as usize);
                Some(share + extra)
            }
        })
        .collect();

    std::thread::scope(|scope| {
        let control = &control;
        let sampler_thread = sampler.as_ref().map(|(plan, state)| {
            std::thread::Builder::new()
                .name("sampler".into())
                .spawn_scoped(scope, move || state.run(*plan))
                .expect("spawning the memory sampler")
        });
        let probed = &probed;
        let mut handles = Vec::new();
        for t in 0..plan.primaries + plan.secondaries {
            let cpu = plan.cpus.as_ref().map(|cpus| cpus[t]);
            let primary = t < plan.primaries;
            let quota = if primary { quotas[t] } else { None };
            let make_primary = &make_primary;
            let make_secondary = &make_secondary;
            let open = plan.open_counters;
            let pin = plan.pin;
            let probe = if t == 0 { plan.probe } else { None };
            let handle = std::thread::Builder::new()
                .name(format!("{}-{t}", if primary { "worker" } else { "helper" }))
                .spawn_scoped(scope, move || {
                    // A thread that could not be pinned runs where the scheduler puts it: its
                    // CPU is not checked (every sample would count as a move), and the
                    // failure is reported instead.
                    let (cpu, pin_error) = match cpu {
                        Some(core) => match pin(core.id) {
                            Ok(()) => (Some(core), None),
                            Err(e) => (None, Some(format!("thread {t} to CPU {}: {e}", core.id))),
                        },
                        None => (None, None),
                    };
                    control.tids[t].store(current_tid(), Ordering::Relaxed);
                    let counters = ThreadCounters::open(open);
                    let mut report = if primary {
                        let role = Role::Primary {
                            quota,
                            probe: probe.map(|probe| (probe, probed)),
                        };
                        run_phases(control, phases, role, cpu, counters, make_primary(t))
                    } else {
                        let s = t - plan.primaries;
                        let work = make_secondary(s);
                        run_phases(control, phases, Role::Secondary, cpu, counters, work)
                    };
                    report.pin_error = pin_error;
                    report
                })
                .expect("spawning a measuring thread");
            handles.push(handle);
        }

        let mut walls = Vec::with_capacity(phases);
        let mut after_warmup = None;
        let stat_cpus: Option<Vec<usize>> = plan
            .cpus
            .as_ref()
            .map(|cpus| cpus.iter().map(|core| core.id).collect());
        let mut ticks = Some(CpuTicks::default());
        let mut thread_sched = Some(SchedTimes::default());
        let mut hog_sched = hogs.as_ref().map(|_| SchedTimes::default());
        let mut phase_ends = Vec::new();
        let mut changes_done = Vec::new();
        let mut reset_flushed = 0u64;
        let mut reset_error = None;
        for phase in 0..phases {
            if phase >= 2
                && let Some(changes) = &plan.changes
            {
                match (changes.reset)() {
                    Ok(flushed) => reset_flushed += flushed,
                    Err(e) => reset_error = Some(e),
                }
            }
            if let Some((_, state)) = &sampler {
                state.phase.store(phase as u32, Ordering::Relaxed);
            }
            // Read before the threads are released and after they have stopped, so that the
            // read itself takes no CPU from a measured thread.
            let ticks_before = if phase == 0 {
                None
            } else {
                steal::read(stat_cpus.as_deref())
            };
            let sched_before = if phase == 0 {
                (None, None)
            } else {
                (
                    threads_sched(&control.tids),
                    hogs.as_ref().and_then(Hogs::sched),
                )
            };
            if phase == 0
                && let Some(gate) = plan.start_gate
            {
                gate();
            }
            if let Some(hogs) = &hogs {
                hogs.activate();
            }
            control.stop.store(false, Ordering::Relaxed);
            control.secondaries_in.store(0, Ordering::Relaxed);
            control
                .primaries_running
                .store(plan.primaries, Ordering::Relaxed);
            control.barrier.wait();
            let start = Instant::now();
            let length = if phase == 0 {
                RunLength::Duration(plan.warmup)
            } else {
                plan.length
            };
            if let RunLength::Duration(d) = length {
                if phase > 0
                    && let Some(changes) = &plan.changes
                {
                    changes_done.push(apply_changes(changes, start, control));
                }
                sleep_until(start + d, control);
                control.stop.store(true, Ordering::Relaxed);
            }
            control.barrier.wait();
            walls.push(start.elapsed().as_secs_f64());
            if let Some(hogs) = &hogs {
                hogs.pause();
            }
            if let Some((plan, _)) = &sampler {
                phase_ends.push((plan.read)());
            }
            if phase > 0 {
                thread_sched =
                    add_since(thread_sched, sched_before.0, threads_sched(&control.tids));
                hog_sched = add_since(
                    hog_sched,
                    sched_before.1,
                    hogs.as_ref().and_then(Hogs::sched),
                );
                ticks = match (ticks, ticks_before, steal::read(stat_cpus.as_deref())) {
                    (Some(mut sum), Some(before), Some(after)) => {
                        sum.add(after.since(before));
                        Some(sum)
                    }
                    _ => None,
                };
            }
            if phase == 0 {
                after_warmup = Some(snapshot());
            }
        }
        let last = snapshot();
        let timeline = sampler.as_ref().map(|(_, state)| {
            state.stop();
            if let Some(thread) = sampler_thread {
                thread.thread().unpark();
                if let Err(panic) = thread.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            state.take()
        });
        // The threads wait for this last release before they drop their work and exit, so
        // the readings and the snapshot above saw them all alive and idle.
        control.barrier.wait();
        let hog_pin_failures = hogs.as_ref().map(Hogs::pin_failures).unwrap_or_default();
        drop(hogs);
        let coordinator_cpu = coordinator.cpu;
        drop(coordinator);

        let reports: Vec<ThreadReport> = handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(report) => report,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect();

        let mut runs = Vec::with_capacity(plan.runs as usize);
        for (phase, &wall) in walls.iter().enumerate().skip(1) {
            let primaries: Vec<(u64, u64)> = reports[..plan.primaries]
                .iter()
                .map(|r| (r.phase_ops[phase], r.phase_upkeep[phase]))
                .collect();
            let secondary_ops = reports[plan.primaries..]
                .iter()
                .map(|r| r.phase_ops[phase])
                .sum();
            runs.push(RunFigures::of(wall, &primaries, secondary_ops));
        }
        let mut counters = CounterTotals::default();
        let mut pinning = Pinning {
            pinned: plan.cpus.is_some(),
            cpus: plan
                .cpus
                .as_ref()
                .map(|c| c.iter().map(|c| c.id).collect())
                .unwrap_or_default(),
            coordinator_cpu,
            ..Pinning::default()
        };
        let mut switches = Some((0, 0));
        for r in &reports {
            counters.merge(r.counters.clone());
            pinning.samples += r.samples;
            pinning.off_cpu_samples += r.off_cpu;
            pinning.threads_moved += u64::from(r.off_cpu > 0);
            pinning.failures.extend(r.pin_error.clone());
            switches = match (switches, r.switches) {
                (Some((a, b)), Some((c, d))) => Some((a + c, b + d)),
                _ => None,
            };
        }
        pinning.failures.extend(hog_pin_failures);
        let histogram = merge(reports[..plan.primaries].iter().map(|r| &r.histogram));
        let windows = (0..control.windows.len())
            .map(|w| WindowFigures {
                ops: reports[..plan.primaries]
                    .iter()
                    .map(|r| r.windows[w].0)
                    .sum(),
                histogram: merge(reports[..plan.primaries].iter().map(|r| &r.windows[w].1)),
            })
            .collect();
        // A failed restore voids the measurement like a failed change.
        if let Some(error) = reset_error
            && let Some(run) = changes_done.first_mut()
            && let Some(first) = run.first_mut()
        {
            first
                .error
                .get_or_insert(format!("restoring the starting values: {error}"));
        }
        DriveOutcome {
            windows,
            changes: changes_done,
            reset_flushed,
            runs,
            histogram,
            counters,
            pinning,
            switches,
            ticks,
            snapshots: (after_warmup.expect("the warm-up phase always runs"), last),
            thread_sched,
            hog_sched,
            timeline,
            phase_ends,
            probe: match probed.load(Ordering::Relaxed) {
                u64::MAX => None,
                figure => Some(figure),
            },
        }
    })
}

/// Applies each change of `changes` at its offset from `start` (or at once when the primaries
/// have all finished, which a timed run does not do before its end).
fn apply_changes(changes: &ChangePlan<'_>, start: Instant, control: &Control) -> Vec<ChangeDone> {
    let mut done = Vec::with_capacity(changes.at.len());
    for (i, &at) in changes.at.iter().enumerate() {
        sleep_until(start + at, control);
        let began = Instant::now();
        let outcome = (changes.apply)(i);
        let took = began.elapsed().as_secs_f64();
        let applied_at = (began - start).as_secs_f64();
        done.push(match outcome {
            Ok(flushed) => ChangeDone {
                applied_at,
                took,
                flushed,
                error: None,
            },
            Err(error) => ChangeDone {
                applied_at,
                took,
                flushed: 0,
                error: Some(error),
            },
        });
    }
    done
}

/// Blocks until `deadline`, or until every primary has finished the phase (the last one
/// notifies under the lock, after its decrement, so the check below cannot miss it).
fn sleep_until(deadline: Instant, control: &Control) {
    let mut guard = control
        .finished_lock
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let now = Instant::now();
        if now >= deadline || control.primaries_running.load(Ordering::Acquire) == 0 {
            return;
        }
        guard = control
            .finished
            .wait_timeout(guard, deadline - now)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
    }
}

/// The scheduler times of every measuring thread, summed; `None` if one cannot be read.
fn threads_sched(tids: &[AtomicI32]) -> Option<SchedTimes> {
    let mut sum = SchedTimes::default();
    for tid in tids {
        sum.add(read_sched(tid.load(Ordering::Relaxed))?);
    }
    Some(sum)
}

/// `total` plus the times from `before` to `after`, or `None` once a reading is missing.
fn add_since(
    total: Option<SchedTimes>,
    before: Option<SchedTimes>,
    after: Option<SchedTimes>,
) -> Option<SchedTimes> {
    let (mut total, before, after) = (total?, before?, after?);
    total.add(after.since(before));
    Some(total)
}

/// The coordinator's own CPU: a CPU the measurement's pinned threads leave free, if any.
/// Dropping it gives the coordinator its former affinity back.
struct CoordinatorCpu {
    cpu: Option<usize>,
    saved: Option<rustix::thread::CpuSet>,
}

impl CoordinatorCpu {
    fn pin_apart(measured: Option<&[core_affinity::CoreId]>) -> Self {
        let none = Self {
            cpu: None,
            saved: None,
        };
        let Some(measured) = measured else {
            return none;
        };
        let Some(free) = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .find(|core| !measured.contains(core))
        else {
            return none;
        };
        let Ok(saved) = rustix::thread::sched_getaffinity(None) else {
            return none;
        };
        if !core_affinity::set_for_current(free) {
            return none;
        }
        Self {
            cpu: Some(free.id),
            saved: Some(saved),
        }
    }
}

impl Drop for CoordinatorCpu {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = rustix::thread::sched_setaffinity(None, saved);
        }
    }
}

/// What a thread of the measurement is.
enum Role<'p> {
    /// A measured worker: its share of a counted run's operations, and the probe to run
    /// after the last phase with where to put its figure.
    Primary {
        quota: Option<u64>,
        probe: Option<(&'p (dyn Fn() -> u64 + Sync), &'p AtomicU64)>,
    },
    /// A helper (consumer, reader).
    Secondary,
}

fn run_phases<W: Work>(
    control: &Control,
    phases: usize,
    role: Role<'_>,
    cpu: Option<core_affinity::CoreId>,
    mut counters: ThreadCounters,
    mut work: W,
) -> ThreadReport {
    let (primary, quota, probe) = match role {
        Role::Primary { quota, probe } => (true, quota, probe),
        Role::Secondary => (false, None, None),
    };
    let mut histogram = new_latency_histogram();
    let mut windows: Vec<(u64, Histogram<u64>)> = control
        .windows
        .iter()
        .map(|_| (0, new_latency_histogram()))
        .collect();
    let mut phase_ops = vec![0; phases];
    let mut phase_upkeep = vec![0; phases];
    let mut cpu_check = CpuCheck::default();
    let mut switches = Some((0u64, 0u64));
    for (phase, phase_ops) in phase_ops.iter_mut().enumerate() {
        let measured = phase > 0;
        let quota = if measured { quota } else { None };
        let switches_before = thread_switches();
        control.barrier.wait();
        if primary {
            while control.secondaries_in.load(Ordering::Acquire) < control.secondaries {
                std::thread::yield_now();
            }
        } else {
            control.secondaries_in.fetch_add(1, Ordering::Release);
        }
        // Counted from here to the end of the loop: neither barrier nor the wait for the
        // helpers is the measured work.
        if measured {
            counters.enable();
        }
        let mut ops = 0u64;
        let mut units = 0u64;
        let timed = primary && !W::SELF_TIMED;
        let mut last = Instant::now();
        // Only with a change plan, engine-timed primaries in measured runs: which window
        // each unit's end falls in.
        let windowed = timed && measured && !windows.is_empty();
        let phase_start = last;
        loop {
            let done = if primary {
                control.stop.load(Ordering::Relaxed) || quota.is_some_and(|q| ops >= q)
            } else {
                units > 0
                    && control.primaries_running.load(Ordering::Acquire) == 0
                    && work.drained()
            };
            if done {
                break;
            }
            let unit_ops = work.unit();
            ops += unit_ops;
            units += 1;
            let mut sample = None;
            if timed {
                let now = Instant::now();
                sample = measured.then(|| now - last);
                if windowed {
                    record_window(
                        &control.windows,
                        &mut windows,
                        now - phase_start,
                        now - last,
                        unit_ops,
                    );
                }
                last = now;
            }
            after_unit(&mut histogram, sample, cpu.map(|c| c.id), &mut cpu_check);
        }
        if measured {
            counters.disable();
        }
        work.end_phase();
        if primary && W::SELF_TIMED {
            work.take_samples(measured, &mut histogram);
        }
        if primary && control.primaries_running.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _guard = control
                .finished_lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            control.finished.notify_one();
        }
        control.barrier.wait();
        if measured {
            switches = match (switches, switches_before, thread_switches()) {
                (Some((v, i)), Some((v0, i0)), Some((v1, i1))) => {
                    Some((v + (v1 - v0), i + (i1 - i0)))
                }
                _ => None,
            };
        }
        *phase_ops = ops;
        phase_upkeep[phase] = work.take_upkeep_ns();
    }
    control.barrier.wait();
    if let Some((probe, figure)) = probe {
        figure.store(probe(), Ordering::Relaxed);
    }
    drop(work);
    ThreadReport {
        pin_error: None,
        phase_ops,
        phase_upkeep,
        histogram,
        counters: counters.read(),
        samples: cpu_check.samples,
        off_cpu: cpu_check.off_cpu,
        switches,
        windows,
    }
}

/// Adds a unit that ended `t` into the run, taking `sample` for `ops` operations, to every
/// window it ended in (the window after one change may be the one before the next).
fn record_window(
    bounds: &[(Duration, Duration)],
    windows: &mut [(u64, Histogram<u64>)],
    t: Duration,
    sample: Duration,
    ops: u64,
) {
    let nanos = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
    for (&(from, to), window) in bounds.iter().zip(windows.iter_mut()) {
        if from <= t && t < to {
            window.0 += ops;
            window.1.saturating_record(nanos.max(1));
        }
    }
}

/// Samples of a pinned thread's CPU, and those that found it elsewhere.
#[derive(Default)]
struct CpuCheck {
    samples: u64,
    off_cpu: u64,
}

/// A timed thread's work between two clock reads besides its unit: recording the `sample`
/// (measured phases), checking the CPU (pinned threads). With the loop's stop-flag load it
/// is inside every engine-timed sample; [`bookkeeping_overhead_ns`] measures it.
#[inline(always)]
fn after_unit(
    histogram: &mut Histogram<u64>,
    sample: Option<Duration>,
    cpu: Option<usize>,
    check: &mut CpuCheck,
) {
    if let Some(sample) = sample {
        let nanos = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
        histogram.saturating_record(nanos.max(1));
    }
    if let Some(cpu) = cpu {
        check.samples += 1;
        check.off_cpu += u64::from(rustix::thread::sched_getcpu() != cpu);
    }
}

/// Mean cost in nanoseconds of the engine's bookkeeping inside one engine-timed sample, beside
/// its clock read: the stop-flag load, the histogram record and, when `pinned`, the CPU check
/// (the best of three rounds of `rounds` iterations, as for the clock).
pub(crate) fn bookkeeping_overhead_ns(rounds: u32, pinned: bool) -> f64 {
    let rounds = rounds.max(1);
    let stop = AtomicBool::new(false);
    let mut histogram = new_latency_histogram();
    let mut check = CpuCheck::default();
    let cpu = pinned.then(rustix::thread::sched_getcpu);
    // A plausible sample: its size changes which histogram bucket is touched, not the cost.
    let sample = Duration::from_nanos(1000);
    (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..rounds {
                if std::hint::black_box(&stop).load(Ordering::Relaxed) {
                    break;
                }
                after_unit(
                    &mut histogram,
                    Some(std::hint::black_box(sample)),
                    cpu,
                    &mut check,
                );
            }
            start.elapsed().as_nanos() as f64 / f64::from(rounds)
        })
        .fold(f64::INFINITY, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn no_counters(_: crate::counters::CounterEvent, _: bool) -> io::Result<perf_event::Counter> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// A primary of one operation per unit.
    struct One;

    impl Work for One {
        fn unit(&mut self) -> u64 {
            1
        }
    }

    #[test]
    fn every_secondary_works_in_every_run_however_short() {
        // Runs of one operation each, unpinned: without the check-in, a secondary released
        // from the barrier could find the run already over and do nothing.
        let plan = DrivePlan {
            primaries: 1,
            secondaries: 2,
            cpus: None,
            warmup: Duration::ZERO,
            length: RunLength::Ops(1),
            runs: 200,
            open_counters: no_counters,
            pin: crate::cpus::pin_current_thread,
            hogs: 0,
            sampler: None,
            probe: None,
            start_gate: None,
            all_tasks: None,
            changes: None,
        };
        let outcome = drive(&plan, |_| One, |_| One, || ());
        assert_eq!(outcome.runs.len(), 200);
        for (run, figures) in outcome.runs.iter().enumerate() {
            let (primary, secondary) = (figures.primary_ops, figures.secondary_ops);
            assert_eq!(primary, 1, "run {run}");
            assert!(
                secondary >= 2,
                "run {run}: the secondaries did {secondary} units"
            );
        }
    }

    /// One operation per unit, then a phase end of `spins` iterations of CPU work (a fixed
    /// amount of CPU time however loaded the machine is).
    struct BusyEnd {
        spins: u64,
    }

    impl Work for BusyEnd {
        fn unit(&mut self) -> u64 {
            1
        }

        fn end_phase(&mut self) {
            let mut x = 0u64;
            for i in 0..self.spins {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
    }

    #[test]
    fn counters_count_the_measured_work_not_the_phase_boundaries() {
        let plan = DrivePlan {
            primaries: 1,
            secondaries: 0,
            cpus: None,
            warmup: Duration::ZERO,
            length: RunLength::Ops(1),
            runs: 3,
            open_counters: crate::counters::open_perf_counter,
            pin: crate::cpus::pin_current_thread,
            hogs: 0,
            sampler: None,
            probe: None,
            start_gate: None,
            all_tasks: None,
            changes: None,
        };
        let outcome = drive(
            &plan,
            |_| BusyEnd { spins: 10_000_000 },
            |_| -> NoWork { unreachable!() },
            || (),
        );
        match &outcome.counters.report(3)["task-clock"] {
            crate::counters::CounterReading::Ok { value, .. } => {
                // Three runs of one trivial operation each (about 0.1 ms counted); the busy
                // phase ends (tens of ms of CPU each) lie outside the counted window.
                assert!(
                    *value < 3e6,
                    "task-clock counted {value} ns of three one-operation runs"
                );
            }
            other => eprintln!("note: task-clock cannot be counted here ({other:?}); skipped"),
        }
    }

    #[test]
    fn a_thread_that_could_not_be_pinned_is_reported() {
        fn refuse_second(cpu: usize) -> std::io::Result<()> {
            if cpu == 1 {
                Err(std::io::Error::from_raw_os_error(22))
            } else {
                Ok(())
            }
        }
        let plan = DrivePlan {
            primaries: 2,
            secondaries: 0,
            cpus: Some(vec![
                core_affinity::CoreId { id: 0 },
                core_affinity::CoreId { id: 1 },
            ]),
            warmup: Duration::ZERO,
            length: RunLength::Ops(2),
            runs: 1,
            open_counters: no_counters,
            pin: refuse_second,
            hogs: 2,
            sampler: None,
            probe: None,
            start_gate: None,
            all_tasks: None,
            changes: None,
        };
        let outcome = drive(&plan, |_| One, |_| -> NoWork { unreachable!() }, || ());
        let failures = &outcome.pinning.failures;
        assert_eq!(failures.len(), 2, "{:?}", outcome.pinning);
        assert!(
            failures[0].starts_with("thread 1 to CPU 1: "),
            "{failures:?}"
        );
        assert!(failures[1].starts_with("hog 1 to CPU 1: "), "{failures:?}");
    }

    #[test]
    fn upkeep_is_left_out_of_each_primarys_time() {
        // One primary: its own time is the wall less its upkeep.
        let one = RunFigures::of(1.0, &[(1000, 250_000_000)], 7);
        assert!((one.measured - 0.75).abs() < 1e-12, "{one:?}");
        assert_eq!(
            (one.primary_ops, one.secondary_ops, one.wall),
            (1000, 7, 1.0)
        );
        // Two: 1000 ops in 0.5 s and 1000 in 1 s are 3000 ops/s, so 2000 ops take 2/3 s.
        let two = RunFigures::of(1.0, &[(1000, 500_000_000), (1000, 0)], 0);
        assert!((two.measured - 2.0 / 3.0).abs() < 1e-12, "{two:?}");
        // No upkeep: the wall time.
        assert_eq!(RunFigures::of(0.5, &[(10, 0), (20, 0)], 0).measured, 0.5);
    }

    /// One operation per unit, and a reported upkeep of 2 ms after each.
    struct Upkeep {
        pending: u64,
    }

    impl Work for Upkeep {
        fn unit(&mut self) -> u64 {
            std::thread::sleep(Duration::from_millis(2));
            self.pending += 2_000_000;
            1
        }

        fn take_upkeep_ns(&mut self) -> u64 {
            std::mem::take(&mut self.pending)
        }
    }

    #[test]
    fn a_runs_measured_time_leaves_the_upkeep_out() {
        let plan = DrivePlan {
            primaries: 1,
            secondaries: 0,
            cpus: None,
            warmup: Duration::ZERO,
            length: RunLength::Ops(5),
            runs: 2,
            open_counters: no_counters,
            pin: crate::cpus::pin_current_thread,
            hogs: 0,
            sampler: None,
            probe: None,
            start_gate: None,
            all_tasks: None,
            changes: None,
        };
        let outcome = drive(
            &plan,
            |_| Upkeep { pending: 0 },
            |_| -> NoWork { unreachable!() },
            || (),
        );
        for run in &outcome.runs {
            assert!(run.wall >= 0.010, "{run:?}");
            assert!(
                (run.measured - (run.wall - 0.010)).abs() < 1e-9,
                "{run:?}: 10 ms of upkeep"
            );
        }
    }
}

#[cfg(test)]
mod change_tests {
    use super::*;

    fn plan(at: &[u64]) -> Vec<(Duration, Duration)> {
        ChangePlan {
            at: at.iter().map(|&ms| Duration::from_millis(ms)).collect(),
            apply: &|_| Ok(0),
            reset: &|| Ok(0),
        }
        .windows(Duration::from_secs(1))
    }

    #[test]
    fn windows_are_100_ms_either_side_clipped_by_the_neighbours_and_the_run() {
        let ms = Duration::from_millis;
        assert_eq!(
            plan(&[400, 450, 980]),
            vec![
                (ms(300), ms(400)),
                (ms(400), ms(450)),
                (ms(400), ms(450)),
                (ms(450), ms(550)),
                (ms(880), ms(980)),
                (ms(980), ms(1000)),
            ]
        );
        assert_eq!(plan(&[50])[0], (ms(0), ms(50)));
    }

    #[test]
    fn a_unit_counts_in_every_window_it_ended_in_and_in_no_other() {
        let ms = Duration::from_millis;
        let bounds = plan(&[400, 450]);
        let mut windows: Vec<(u64, Histogram<u64>)> = bounds
            .iter()
            .map(|_| (0, new_latency_histogram()))
            .collect();
        record_window(&bounds, &mut windows, ms(420), Duration::from_micros(5), 16);
        record_window(&bounds, &mut windows, ms(350), Duration::from_micros(7), 16);
        record_window(&bounds, &mut windows, ms(600), Duration::from_micros(9), 16);
        let ops: Vec<u64> = windows.iter().map(|w| w.0).collect();
        assert_eq!(ops, [16, 16, 16, 0]);
        let samples: Vec<u64> = windows.iter().map(|w| w.1.len()).collect();
        assert_eq!(samples, [1, 1, 1, 0]);
        // The unit that ended at 350 ms, of 7 µs, is the one before the first change.
        assert!(windows[0].1.equivalent(windows[0].1.max(), 7_000));
    }
}
