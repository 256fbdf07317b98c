//! Running one measurement: a validated [`Workload`] at one thread count on one allocator.
//!
//! [`measure`] creates the cache, builds the kind's threads (the `engine` module drives them;
//! what each kind does is in `kinds` for `churn`, `burst` and `prefill-burst`,
//! `producer_consumer`, `deferred` for `deferred-churn`, and `tree_kinds` for the range-tree
//! kinds `maple-tree` and `trace-replay`), and turns what the threads found into a
//! [`Measurement`]: throughput per run, merged latency percentiles, counters, memory, the
//! design's counters over the measured runs, the pinning check and warnings.

mod cross_cpu;
mod deferred;
mod engine;
mod hogs;
mod kinds;
mod lifetimes;
mod memory;
mod producer_consumer;
mod sampler;
mod sched;
mod tree_kinds;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use object_alloc::{AllocStats, ObjectAlloc};
use thiserror::Error;

use crate::counters::{CounterOpener, open_perf_counter};
use crate::cpus::{CpuPinner, measurement_cpus, pin_current_thread, probe_pinning};
use crate::histogram::LatencyFigures;
use crate::machine::peak_rss_bytes;
use crate::result::{
    ChangeApplied, ChangeWindow, Latency, LimitChangeResult, Measurement, Memory, RunConfig,
    RunSample,
};
use crate::spec::{Kind, RunLength, Workload, WorkloadSpec};
use crate::timer;
use deferred::{Published, Reader, Writer};
use engine::{ChangeDone, ChangePlan, DrivePlan, NoWork, WindowFigures, drive};
use kinds::{Burst, Churn, PrefillBurst, Rng};
pub use kinds::{churn_lifo_pairs, churn_lifo_round_robin};
pub use producer_consumer::HANDOFF_SPIN;
use producer_consumer::{Consumer, Producer, Ring, WaitCounts};
use tree_kinds::{PreparedStream, TraceWriter, TreeFigures, TreeReader, TreeWriter};

/// Why a measurement produced no result.
#[derive(Debug, Error)]
pub enum MeasureError {
    /// The allocator refused the workload's cache configuration.
    #[error("allocator `{allocator}` refused the configuration of workload `{workload}`: {source}")]
    Config {
        /// Allocator.
        allocator: String,
        /// Workload.
        workload: String,
        /// The refusal.
        source: object_alloc::ConfigError,
    },
    /// Pinning was asked for but the CPUs could not be listed or are too few.
    #[error(
        "cannot pin {needed} threads: {available} CPUs available to this process; use `pinned: false` (--set pinned=false)"
    )]
    Pinning {
        /// Threads to pin.
        needed: usize,
        /// CPUs available.
        available: usize,
    },
    /// Pinning was asked for but a chosen CPU refused the calling thread.
    #[error(
        "cannot pin a thread to CPU {cpu}: {error}; check the process's CPU affinity (taskset) and cpuset, or use `pinned: false` (--set pinned=false)"
    )]
    PinningRefused {
        /// The CPU.
        cpu: usize,
        /// What `sched_setaffinity` said.
        error: String,
    },
    /// The workload's input could not be prepared (a trace file changed since validation,
    /// a stream without writes, a tree that could not be created).
    #[error("workload `{workload}` on allocator `{allocator}`: {what}")]
    Input {
        /// Allocator.
        allocator: String,
        /// Workload.
        workload: String,
        /// What went wrong.
        what: String,
    },
    /// The workload saw a broken guarantee of the allocator.
    #[error("allocator `{allocator}` broke a guarantee in workload `{workload}`: {what}")]
    Broken {
        /// Allocator.
        allocator: String,
        /// Workload.
        workload: String,
        /// What was seen.
        what: String,
    },
}

/// Options of a measurement that are not part of the workload.
#[derive(Clone, Copy, Debug)]
pub struct MeasureOptions {
    /// How counters are opened (tests inject failures).
    pub open_counters: CounterOpener,
    /// Clock reads used to measure the clock's cost.
    pub timer_calibration_reads: u32,
    /// Pins a thread to a CPU (tests inject failures).
    pub pin: CpuPinner,
    /// Runs the memory sampler (the result's `timeline`) at the spec's `sample_interval`;
    /// off only to measure what the sampler costs.
    pub timeline: bool,
    /// This measurement as task `index` of `tasks` identical ones, each in a process of its
    /// own (`sheafbench scale --mode process`): pinned, it takes the `index`-th share of the
    /// CPUs that all the tasks' threads together would be given, so that the processes never
    /// share a CPU. `None`: the measurement is alone.
    pub task: Option<(usize, usize)>,
    /// Called on the coordinating thread once the cache, the kind's input (streams, trees)
    /// and the threads are set up, just before the warm-up; the warm-up starts when it
    /// returns. Several processes measured together wait here for each other.
    pub start_gate: Option<fn()>,
}

impl Default for MeasureOptions {
    fn default() -> Self {
        Self {
            open_counters: open_perf_counter,
            timer_calibration_reads: 200_000,
            pin: pin_current_thread,
            timeline: true,
            task: None,
            start_gate: None,
        }
    }
}

/// Runs `workload` with `threads` worker threads on a new cache of design `A`.
pub fn measure<A: ObjectAlloc>(
    workload: &Workload,
    threads: u32,
    options: &MeasureOptions,
) -> Result<Measurement, MeasureError> {
    let spec = &workload.spec;
    let os_threads = workload.kind.os_threads(threads);
    // Checked before anything runs: a measurement asked to be pinned is pinned or refused.
    // The CPUs of every task measured together, kept free of this process's coordinator.
    let mut all_tasks = None;
    let cpus = if spec.pinned {
        let (index, tasks) = options.task.map_or((0, 1), |(i, n)| (i, n.max(1)));
        let needed = os_threads * tasks;
        let Some(mut cpus) = measurement_cpus(needed) else {
            return Err(MeasureError::Pinning {
                needed,
                available: crate::cpus::allowed_cpus().len(),
            });
        };
        all_tasks = Some(
            cpus.iter()
                .map(|&id| core_affinity::CoreId { id })
                .collect::<Vec<_>>(),
        );
        // This task's share: the other tasks' processes take the rest.
        cpus.drain(..os_threads * index.min(tasks - 1));
        cpus.truncate(os_threads);
        probe_pinning(&cpus, options.pin).map_err(|(cpu, e)| MeasureError::PinningRefused {
            cpu,
            error: e.to_string(),
        })?;
        Some(
            cpus.into_iter()
                .map(|id| core_affinity::CoreId { id })
                .collect(),
        )
    } else {
        None
    };
    let timer_overhead_ns = timer::instant_overhead_ns(options.timer_calibration_reads);
    // The range-tree kinds time each write themselves: their samples hold no bookkeeping.
    let bookkeeping_ns = if matches!(
        workload.kind,
        Kind::MapleTree { .. } | Kind::TraceReplay { .. }
    ) {
        0.0
    } else {
        engine::bookkeeping_overhead_ns(options.timer_calibration_reads, spec.pinned)
    };
    let config = workload.cache_config();
    let cache = A::new(&config).map_err(|source| MeasureError::Config {
        allocator: A::NAME.to_owned(),
        workload: workload.spec.name.clone(),
        source,
    })?;
    let threads_usize = threads as usize;
    let secondaries = os_threads - threads_usize;
    // The task number of the first worker thread: as one task of several processes, its
    // seeds (and a tree's stream) are those that worker would have had as a thread of one
    // process running them all.
    let first_task = options.task.map_or(0, |(index, _)| index * threads_usize);
    // `lifetimes` has a cache per object size; every other kind the one above.
    let sized: Vec<(A, usize)> = match &workload.kind {
        Kind::Lifetimes { sizes, .. } => sizes
            .iter()
            .map(|&size| {
                let mut sized = config.clone();
                sized.object_size = size;
                A::new(&sized).map(|cache| (cache, size))
            })
            .collect::<Result<_, _>>()
            .map_err(|source| MeasureError::Config {
                allocator: A::NAME.to_owned(),
                workload: workload.spec.name.clone(),
                source,
            })?,
        _ => Vec::new(),
    };
    let caches: Vec<(&A, usize)> = if sized.is_empty() {
        vec![(&cache, config.object_size)]
    } else {
        sized.iter().map(|(cache, size)| (cache, *size)).collect()
    };
    // Run-time changes: refused before anything runs by a design that cannot make them;
    // applied by the coordinator to every cache of the measurement.
    if !spec.phases.is_empty() && !A::LIMIT_CHANGES {
        let (field, value) = spec.phases[0]
            .change()
            .first_field()
            .unwrap_or(("sheaf_capacity", 0));
        return Err(MeasureError::Config {
            allocator: A::NAME.to_owned(),
            workload: spec.name.clone(),
            source: object_alloc::ConfigError::new(
                field,
                value,
                format!("{} cannot change it at run time (phases[0])", A::NAME),
            ),
        });
    }
    let apply_change = |i: usize| -> Result<u64, String> {
        let change = spec.phases[i].change();
        let mut flushed = 0;
        for (cache, _) in &caches {
            flushed += cache
                .change_limits(&change)
                .map_err(|e| e.to_string())?
                .flushed_objects;
        }
        Ok(flushed)
    };
    let starting = object_alloc::LimitChange {
        sheaf_capacity: Some(config.effective_sheaf_capacity()),
        barn_max_full: Some(config.barn_max_full),
        barn_max_empty: Some(config.barn_max_empty),
    };
    let reset_changes = || -> Result<u64, String> {
        let mut flushed = 0;
        for (cache, _) in &caches {
            flushed += cache
                .change_limits(&starting)
                .map_err(|e| e.to_string())?
                .flushed_objects;
        }
        Ok(flushed)
    };
    let read = || memory::read_caches(&caches);
    let probe = || memory::pages_touched(caches[0].0).unwrap_or(u64::MAX);
    let plan = DrivePlan {
        primaries: threads_usize,
        secondaries,
        cpus,
        warmup: spec.warmup.0,
        length: workload.length,
        runs: spec.runs,
        open_counters: options.open_counters,
        pin: options.pin,
        hogs: spec.hogs as usize,
        sampler: options.timeline.then_some(sampler::SamplerPlan {
            interval: spec.sample_interval.0,
            read: &read,
        }),
        probe: Some(&probe),
        start_gate: options.start_gate,
        all_tasks,
        changes: (!spec.phases.is_empty()).then(|| ChangePlan {
            at: spec.phases.iter().map(|p| p.at.0).collect(),
            apply: &apply_change,
            reset: &reset_changes,
        }),
    };
    let snapshot = || read().stats;
    let seed = spec.seed;
    let cache = &cache;
    let mut extra = BTreeMap::new();
    let input = |what: String| MeasureError::Input {
        allocator: A::NAME.to_owned(),
        workload: spec.name.clone(),
        what,
    };
    let broken = |what: String| MeasureError::Broken {
        allocator: A::NAME.to_owned(),
        workload: spec.name.clone(),
        what,
    };
    let figures = TreeFigures::default();
    // Producer-consumer: the hand-off waits over the measured runs (producer, consumer).
    let mut handoff_waits: Option<(WaitCounts, WaitCounts)> = None;
    // Cross-cpu with NOWAIT: allocations that failed and were retried without it (warm-up
    // included).
    let mut nowait_fallbacks: Option<u64> = None;
    let cycle_log = lifetimes::CycleLog::new();
    let outcome = match workload.kind.clone() {
        Kind::Lifetimes {
            lifetime,
            working_set,
            ramp,
            hold,
            drain,
            remote_frees,
            batch,
            ..
        } => {
            let cycle = lifetimes::Cycle {
                lifetime,
                working_set,
                ramp,
                hold,
                drain,
                batch,
            };
            let mailboxes: Vec<lifetimes::Mailbox> = (0..threads_usize)
                .map(|_| lifetimes::Mailbox::default())
                .collect();
            let caches = &caches;
            let read: sampler::ReadFn<'_> = &read;
            drive(
                &plan,
                |t| {
                    lifetimes::Lifetimes::new(
                        caches,
                        cycle,
                        Rng::new(seed, (first_task + t) as u64),
                        remote_frees.then(|| &mailboxes[t]),
                        (t == 0).then_some((&cycle_log, read)),
                    )
                },
                |r| lifetimes::Freer::new(caches, &mailboxes[r]),
                snapshot,
            )
        }
        Kind::Churn {
            order,
            working_set,
            batch,
            caches,
        } => {
            // The other caches, made like the first; stats and memory figures are the
            // first one's (a general-purpose design reports its process-wide figures from
            // each, so a sum would count them several times).
            let others = (1..caches)
                .map(|_| A::new(&config))
                .collect::<Result<Vec<A>, _>>()
                .map_err(|source| MeasureError::Config {
                    allocator: A::NAME.to_owned(),
                    workload: workload.spec.name.clone(),
                    source,
                })?;
            let all: Vec<&A> = std::iter::once(cache).chain(&others).collect();
            drive(
                &plan,
                |t| {
                    let rng = Rng::new(seed, (first_task + t) as u64);
                    Churn::new(all.clone(), order, working_set, batch, rng)
                },
                |_| -> NoWork { unreachable!("churn has no helper threads") },
                snapshot,
            )
        }
        Kind::Burst { burst } => drive(
            &plan,
            |_| Burst::new(cache, burst),
            |_| -> NoWork { unreachable!("burst has no helper threads") },
            snapshot,
        ),
        Kind::PrefillBurst {
            reserve,
            used,
            batch,
        } => drive(
            &plan,
            |_| PrefillBurst::new(cache, reserve, used, batch),
            |_| -> NoWork { unreachable!("prefill-burst has no helper threads") },
            snapshot,
        ),
        Kind::ProducerConsumer { .. } | Kind::CrossCpu { .. } => {
            let (queue, batch, nowait) = match workload.kind {
                Kind::ProducerConsumer { queue, batch } => (queue, batch, false),
                Kind::CrossCpu {
                    ring,
                    batch,
                    nowait,
                } => (ring, batch, nowait),
                _ => unreachable!("matched above"),
            };
            let rings: Vec<Ring> = (0..threads_usize).map(|_| Ring::new(queue)).collect();
            let out_of_sequence = AtomicU64::new(0);
            let fallbacks = AtomicU64::new(0);
            let waits = || {
                rings.iter().map(Ring::waits).fold(
                    (WaitCounts::default(), WaitCounts::default()),
                    |(p, c), (rp, rc)| (p.plus(rp), c.plus(rc)),
                )
            };
            let outcome = drive(
                &plan,
                |t| {
                    let producer = Producer::new(cache, &rings[t], batch);
                    if nowait {
                        producer.nowait(&fallbacks)
                    } else {
                        producer
                    }
                },
                |t| Consumer::new(cache, &rings[t], batch, &out_of_sequence),
                || (snapshot(), waits()),
            );
            let ((_, (p0, c0)), (_, (p1, c1))) = &outcome.snapshots;
            handoff_waits = Some((p1.since(*p0), c1.since(*c0)));
            let outcome = outcome.map_snapshots(|(stats, _)| stats);
            if nowait {
                nowait_fallbacks = Some(fallbacks.load(Ordering::Relaxed));
            }
            let corrupted = out_of_sequence.load(Ordering::Relaxed);
            if corrupted > 0 {
                return Err(broken(format!(
                    "{corrupted} objects arrived with a sequence number other than the one written (corrupted while live)"
                )));
            }
            outcome
        }
        Kind::DeferredChurn {
            slots,
            batch,
            reads_per_section,
            ..
        } => {
            let published = Published::new(cache, slots);
            let outcome = drive(
                &plan,
                |t| {
                    Writer::new(
                        cache,
                        &published,
                        (t, threads_usize),
                        batch,
                        Rng::new(seed, (first_task + t) as u64),
                    )
                },
                |r| {
                    Reader::new(
                        &published,
                        reads_per_section,
                        Rng::new(seed ^ 0xa5a5, r as u64),
                    )
                },
                snapshot,
            );
            published.free_all(cache);
            cache.barrier();
            let reused = published.broken_reads.load(Ordering::Relaxed);
            if reused > 0 {
                return Err(broken(format!(
                    "{reused} reads inside read-side sections found an object already reused (C-DEFER-1)"
                )));
            }
            outcome
        }
        Kind::MapleTree {
            stream,
            reads_per_section,
            single_node_alloc,
            ..
        } => {
            // Streams are generated before anything is timed, one per writer.
            let mut streams = Vec::with_capacity(threads_usize);
            for t in 0..threads_usize {
                let spec_t = maple::StreamSpec {
                    seed: stream.seed.wrapping_add((first_task + t) as u64),
                    ..stream.clone()
                };
                let ops = maple::ops::generate(&spec_t).map_err(|e| input(e.to_string()))?;
                let prepared = PreparedStream::new(&ops);
                if prepared.is_empty() {
                    return Err(input("the generated stream writes nothing".into()));
                }
                streams.push(prepared);
            }
            let write_config = maple::WriteConfig { single_node_alloc };
            let trees = (0..threads_usize)
                .map(|_| maple::MapleTree::with_config(cache, write_config))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| input(format!("cannot allocate a tree's root node: {e}")))?;
            let range = stream.lookup_range();
            let outcome = drive(
                &plan,
                |t| TreeWriter::new(&trees[t], &streams[t], &figures),
                |r| {
                    TreeReader::new(
                        &trees[r % threads_usize],
                        range.clone(),
                        reads_per_section,
                        Rng::new(seed ^ 0xa5a5, r as u64),
                    )
                },
                snapshot,
            );
            let outside: u64 = trees.iter().map(|t| t.stats().nodes_outside_reserve).sum();
            drop(trees);
            cache.barrier();
            if let Some(what) = figures.failure() {
                return Err(broken(what));
            }
            if outside > 0 {
                return Err(broken(format!(
                    "{outside} tree nodes were allocated outside the writes' reserves (the worst-case prefill was too small)"
                )));
            }
            extra.insert("nodes_outside_reserve".to_owned(), outside as f64);
            outcome
        }
        Kind::TraceReplay {
            trace,
            single_node_alloc,
        } => {
            let parsed = crate::spec::load_trace(&trace)
                .map_err(|e| input(format!("{}: {e}", trace.display())))?;
            let write_config = maple::WriteConfig { single_node_alloc };
            // One checked replay before timing: every tree against its model, on this
            // allocator.
            maple::run::replay(
                cache,
                &parsed,
                write_config,
                true,
                &mut maple::run::NoRecorder,
            )
            .map_err(|e| broken(format!("checked replay of {}: {e}", trace.display())))?;
            cache.barrier();
            let outcome = drive(
                &plan,
                |_| TraceWriter::new(cache, &parsed, write_config, &figures),
                |_| -> NoWork { unreachable!("trace-replay has no helper threads") },
                snapshot,
            );
            cache.barrier();
            if let Some(what) = figures.failure() {
                return Err(broken(what));
            }
            extra.insert("nodes_outside_reserve".to_owned(), 0.0);
            outcome
        }
    };
    if let Some(error) = outcome
        .changes
        .iter()
        .flatten()
        .find_map(|done| done.error.clone())
    {
        return Err(broken(format!("a run-time change failed: {error}")));
    }
    let peak_rss = peak_rss_bytes();
    // Every kind has freed its objects by now (the threads' work was dropped, the trees
    // and published objects freed); deferred frees are waited for.
    for (cache, _) in &caches {
        cache.barrier();
    }
    let after_free = read();
    for (cache, _) in &caches {
        cache.shrink();
    }
    let after_shrink = read();

    let samples: Vec<RunSample> = outcome
        .runs
        .iter()
        .map(|run| RunSample {
            ops: run.primary_ops,
            seconds: run.measured,
            throughput_ops_per_s: if run.measured > 0.0 {
                run.primary_ops as f64 / run.measured
            } else {
                0.0
            },
            round: None,
            position: None,
            latency_ns: None,
            cpu_seconds: None,
        })
        .collect();
    let ops: u64 = samples.iter().map(|s| s.ops).sum();
    let seconds: f64 = samples.iter().map(|s| s.seconds).sum();
    // The threads' shares and the secondaries' rates are of the wall time: secondaries work
    // through the primaries' upkeep.
    let wall_seconds: f64 = outcome.runs.iter().map(|r| r.wall).sum();
    if wall_seconds > seconds {
        extra.insert("upkeep_seconds".to_owned(), wall_seconds - seconds);
    }
    let secondary_ops: u64 = outcome.runs.iter().map(|r| r.secondary_ops).sum();
    match workload.kind {
        Kind::MapleTree { .. } | Kind::TraceReplay { .. } => {
            let writes = figures.writes.load(Ordering::Relaxed).max(1) as f64;
            let per_write = |total: &AtomicU64| total.load(Ordering::Relaxed) as f64 / writes;
            extra.insert(
                "nodes_reserved_per_write".to_owned(),
                per_write(&figures.reserved),
            );
            extra.insert("nodes_used_per_write".to_owned(), per_write(&figures.used));
            extra.insert(
                "passes".to_owned(),
                figures.passes.load(Ordering::Relaxed) as f64,
            );
            extra.insert(
                "tree_height_max".to_owned(),
                figures.height.load(Ordering::Relaxed) as f64,
            );
            if matches!(workload.kind, Kind::MapleTree { readers, .. } if readers > 0) {
                extra.insert("lookups".to_owned(), secondary_ops as f64);
                extra.insert(
                    "lookups_per_s".to_owned(),
                    secondary_ops as f64 / wall_seconds,
                );
            }
        }
        Kind::DeferredChurn { readers, .. } if readers > 0 => {
            extra.insert("reads".to_owned(), secondary_ops as f64);
            extra.insert(
                "reads_per_s".to_owned(),
                secondary_ops as f64 / wall_seconds,
            );
        }
        Kind::ProducerConsumer { .. } | Kind::CrossCpu { .. } => {
            extra.insert("objects_freed_remotely".to_owned(), secondary_ops as f64);
        }
        Kind::Lifetimes { remote_frees, .. } => {
            if remote_frees {
                extra.insert("objects_freed_remotely".to_owned(), secondary_ops as f64);
            }
            cycle_figures(&cycle_log.tally(), &mut extra);
        }
        _ => {}
    }
    if let Some((producer, consumer)) = handoff_waits {
        let per_op = |n: u64| if ops > 0 { n as f64 / ops as f64 } else { 0.0 };
        let spun = producer.spun + consumer.spun;
        let blocked = producer.blocked + consumer.blocked;
        for (name, value) in [
            ("producer_waits_spun", producer.spun),
            ("producer_waits_blocked", producer.blocked),
            ("consumer_waits_spun", consumer.spun),
            ("consumer_waits_blocked", consumer.blocked),
        ] {
            extra.insert(name.to_owned(), value as f64);
        }
        extra.insert("handoff_waits_per_op".to_owned(), per_op(spun + blocked));
        extra.insert("handoff_blocked_per_op".to_owned(), per_op(blocked));
        if spun + blocked > 0 {
            extra.insert(
                "handoff_blocked_share".to_owned(),
                blocked as f64 / (spun + blocked) as f64,
            );
        }
        let blocked_seconds = (producer.blocked_ns + consumer.blocked_ns) as f64 * 1e-9;
        extra.insert("handoff_blocked_seconds".to_owned(), blocked_seconds);
        if wall_seconds > 0.0 {
            // Of the pairs' threads' measured time, the share spent blocked in hand-offs.
            extra.insert(
                "handoff_blocked_time_share".to_owned(),
                blocked_seconds / (wall_seconds * os_threads as f64),
            );
        }
    }
    if let Some(threads) = outcome.thread_sched
        && wall_seconds > 0.0
    {
        // Shares of the measured threads' wall time: on a CPU, and runnable but waiting.
        let thread_seconds = wall_seconds * os_threads as f64 * 1e9;
        extra.insert(
            "threads_cpu_share".to_owned(),
            threads.run_ns as f64 / thread_seconds,
        );
        extra.insert(
            "threads_runqueue_share".to_owned(),
            threads.wait_ns as f64 / thread_seconds,
        );
    }
    if let Some(hogs) = outcome.hog_sched {
        extra.insert("hog_cpu_seconds".to_owned(), hogs.run_ns as f64 * 1e-9);
    }
    if let Some(percent) = outcome.ticks.and_then(|ticks| ticks.steal_percent()) {
        extra.insert("steal_percent".to_owned(), percent);
    }
    if let Some((voluntary, involuntary)) = outcome.switches {
        extra.insert("switches_voluntary".to_owned(), voluntary as f64);
        extra.insert("switches_involuntary".to_owned(), involuntary as f64);
    }
    let counters = outcome.counters.report(ops);
    let figures = memory::figures(
        &outcome.phase_ends,
        outcome.timeline.as_ref(),
        &after_free,
        &after_shrink,
        outcome.probe.filter(|&p| p != u64::MAX),
        &counters,
    );
    let (before, after): (AllocStats, AllocStats) = outcome.snapshots;
    if let Some(fallbacks) = nowait_fallbacks {
        extra.insert("nowait_fallbacks".to_owned(), fallbacks as f64);
        cross_cpu::nowait_shares(&before, &after, ops, &mut extra);
    }
    let stats = after
        .counters
        .iter()
        .map(|(name, &value)| {
            (
                name.clone(),
                value.saturating_sub(before.counters.get(name).copied().unwrap_or(0)),
            )
        })
        .collect();
    let mut measurement = Measurement {
        workload: spec.name.clone(),
        kind: workload.kind.name().as_str().to_owned(),
        allocator: A::NAME.to_owned(),
        config: RunConfig {
            object_size: config.object_size,
            align: config.align,
            sheaf_capacity: config.effective_sheaf_capacity(),
            barn_max_full: config.barn_max_full,
            barn_max_empty: config.barn_max_empty,
            deferred_batching: config.deferred_batching,
            barn_partial: config.barn_partial,
            rcu_hold_ticks: config.rcu_hold_ticks,
            nowait_no_refill: config.nowait_no_refill,
            refill_one_slab: config.refill_one_slab,
            resize_by_flush: config.resize_by_flush,
            threads,
            os_threads,
            pinned: spec.pinned,
            hogs: spec.hogs,
        },
        op_unit: workload.kind.op_unit().to_owned(),
        ops,
        seconds,
        throughput_ops_per_s: if seconds > 0.0 {
            ops as f64 / seconds
        } else {
            0.0
        },
        samples,
        latency_ns: Latency {
            unit: workload.kind.sample_unit(),
            clock: timer::CLOCK.to_owned(),
            timer_overhead_ns,
            bookkeeping_ns,
            figures: LatencyFigures::of(&outcome.histogram),
        },
        counters,
        memory: Memory {
            peak_rss_bytes: peak_rss,
            slab_bytes: after.slab_bytes,
            cached_objects: after.cached_objects,
            live_objects: after.live_objects,
            figures: Some(figures),
        },
        timeline: outcome.timeline,
        stats,
        extra,
        pinning: outcome.pinning,
        warnings: Vec::new(),
        spec: spec.clone(),
        changes: change_results(spec, workload.length, &outcome.windows, &outcome.changes),
    };
    measurement.warnings = crate::warnings::for_measurement(&measurement);
    Ok(measurement)
}

/// The `lifetimes` figures of the first worker's cycle notes: `cycles` (drains completed),
/// the slab bytes and resident set at the end of the drains (`drain_floor_*`: first, lowest,
/// highest) and the least-squares slopes of both over the ends of the holds
/// (`hold_*_slope_bytes_per_s`), in `extra`.
fn cycle_figures(tally: &lifetimes::CycleTally, extra: &mut BTreeMap<String, f64>) {
    extra.insert("cycles".to_owned(), tally.drains as f64);
    for (i, name) in lifetimes::CycleTally::METRICS.iter().enumerate() {
        if let Some((first, low, high)) = tally.floors[i].seen {
            extra.insert(format!("drain_floor_{name}_first"), first);
            extra.insert(format!("drain_floor_{name}_min"), low);
            extra.insert(format!("drain_floor_{name}_max"), high);
        }
        if let Some(slope) = tally.holds[i].slope() {
            extra.insert(format!("hold_{name}_slope_bytes_per_s"), slope);
        }
    }
}

/// The result's `changes`: each phase, what it did in each run, and the windows around it.
fn change_results(
    spec: &WorkloadSpec,
    length: RunLength,
    windows: &[WindowFigures],
    done: &[Vec<ChangeDone>],
) -> Vec<LimitChangeResult> {
    let RunLength::Duration(run) = length else {
        return Vec::new();
    };
    let plan_windows = ChangePlan {
        at: spec.phases.iter().map(|p| p.at.0).collect(),
        apply: &|_| Ok(0),
        reset: &|| Ok(0),
    }
    .windows(run);
    let runs = done.len().max(1) as f64;
    let window = |w: usize| {
        let (from, to) = plan_windows[w];
        let figures = windows.get(w);
        let samples = figures.map_or(0, |f| f.histogram.len());
        let seconds = (to - from).as_secs_f64() * runs;
        let ops = figures.map_or(0, |f| f.ops);
        ChangeWindow {
            from_s: from.as_secs_f64(),
            to_s: to.as_secs_f64(),
            ops,
            throughput_ops_per_s: if seconds > 0.0 {
                ops as f64 / seconds
            } else {
                0.0
            },
            samples,
            p999_ns: figures
                .filter(|_| samples > 0)
                .map(|f| f.histogram.value_at_quantile(0.999)),
        }
    };
    spec.phases
        .iter()
        .enumerate()
        .map(|(i, phase)| {
            let before = window(2 * i);
            let after = window(2 * i + 1);
            let p999_ratio = match (before.p999_ns, after.p999_ns) {
                (Some(b), Some(a)) if b > 0 => Some(a as f64 / b as f64),
                _ => None,
            };
            LimitChangeResult {
                at_s: phase.at.0.as_secs_f64(),
                sheaf_capacity: phase.sheaf_capacity,
                barn_max_full: phase.barn_max_full,
                barn_max_empty: phase.barn_max_empty,
                applied: done
                    .iter()
                    .filter_map(|run| run.get(i))
                    .map(|d| ChangeApplied {
                        applied_at_s: d.applied_at,
                        took_s: d.took,
                        flushed_objects: d.flushed,
                    })
                    .collect(),
                before,
                after,
                p999_ratio,
            }
        })
        .collect()
}
