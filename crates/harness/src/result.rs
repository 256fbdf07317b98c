//! The result model: what one measurement found, and the result file that gathers many.
//! `docs/results.md` documents the JSON form field by field; a change to it changes that page
//! and, unless it only adds a field with a default, raises [`SCHEMA`].
//!
//! The JSON form: one object per file with `schema`, `machine` and `runs`, one entry per
//! (workload, allocator, threads) (config, ops, seconds, throughput, latency, counters,
//! memory, stats), extended with one sample per round, the full spec, pinning checks and
//! warnings, and `paired`: the per-round ratios of each allocator to the reference
//! allocators measured in the same rounds, with their bootstrap intervals.
//!
//! Schema 2 (this one) measures in interleaved rounds: each round runs every allocator once,
//! in an order rotated from round to round, so that drift of the machine reaches every
//! allocator alike. A measurement's `samples` hold one entry per round (with the round's
//! index, the allocator's place in the round's order, and the round's latency figures), its
//! `throughput_ops_per_s` and latency figures are medians over the rounds, and `paired`
//! holds the ratios. Schema 1 had one child process per measurement whose `samples` were
//! back-to-back runs and no `paired`; it is not read. Files are written atomically (a
//! temporary file in the same directory, then a rename), so a reader never sees half a file
//! and an interrupted run keeps every measurement written before it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::counters::CounterReading;
use crate::histogram::LatencyFigures;
use crate::machine::Machine;
use crate::spec::WorkloadSpec;

/// Version of the result-file schema.
pub const SCHEMA: u32 = 2;

/// A result file: the machine and every measurement of one invocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultFile {
    /// [`SCHEMA`].
    pub schema: u32,
    /// When the invocation started (UTC).
    pub date: String,
    /// Where it ran.
    pub machine: Machine,
    /// Finished measurements.
    pub runs: Vec<Measurement>,
    /// Measurements that crashed, timed out or were refused.
    #[serde(default)]
    pub failures: Vec<Failure>,
    /// Per-round ratios of throughput between allocators measured in the same rounds.
    #[serde(default)]
    pub paired: Vec<PairedRatio>,
    /// Notes on what was planned but not measured (a thread count left out, and why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The points of scaling curves (`sheafbench scale`), each allocator at each task count
    /// in each mode; empty for other commands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scaling: Vec<ScalePoint>,
    /// Real programs run with each allocator preloaded (`sheafbench programs`); `None` for
    /// other commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programs: Option<ProgramsResult>,
}

/// What `sheafbench programs` found: every program's figures under every allocator, round by
/// round, with the ratios to the baseline allocator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramsResult {
    /// The manifest the programs came from.
    pub manifest: String,
    /// Rounds planned: each round runs every allocator once per program, in an order rotated
    /// from round to round.
    pub rounds: u32,
    /// The allocator the ratios are relative to.
    pub baseline: String,
    /// The allocator whose output every other allocator's must match (glibc when it runs).
    pub reference: String,
    /// The allocators that ran, with the library preloaded for each.
    pub allocators: Vec<PreloadedAllocator>,
    /// One entry per program that ran (skipped programs are in the file's `notes`).
    pub programs: Vec<ProgramResult>,
    /// Per allocator, the geometric mean over the programs of its ratios to the baseline.
    pub geomean: Vec<ProgramsGeomean>,
}

/// An allocator of a `programs` run and the library that was preloaded for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreloadedAllocator {
    /// Its name (`glibc`, `sheaf-malloc`, `mimalloc`, `jemalloc`, `tcmalloc`).
    pub name: String,
    /// The shared library set in `LD_PRELOAD` (`None` for glibc: nothing preloaded).
    pub library: Option<String>,
    /// The Debian package that provides it, for the packaged allocators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Its version: the package's version, or this build's for `sheaf-malloc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One program of a `programs` run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramResult {
    /// Its name in the manifest.
    pub name: String,
    /// Its suite (`stress` or `packaged`).
    pub suite: String,
    /// What it exercises.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub about: String,
    /// The measured command as run, placeholders expanded (`{work}` and `{port}` left as
    /// they are: they change with every run).
    pub command: Vec<String>,
    /// Whether it is a client/server program: the figures other than wall time are the
    /// server's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub server: bool,
    /// One entry per allocator, in the order of `--alloc`.
    pub allocators: Vec<ProgramAllocator>,
}

/// One program under one allocator: every round's figures, their medians, and the ratios to
/// the baseline allocator paired by round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramAllocator {
    /// The allocator.
    pub allocator: String,
    /// Every round it completed, in round order.
    pub rounds: Vec<ProgramRound>,
    /// Median over the rounds of the wall time (seconds).
    pub wall_seconds: Option<f64>,
    /// Median over the rounds of the user CPU time (seconds).
    pub user_seconds: Option<f64>,
    /// Median over the rounds of the system CPU time (seconds).
    pub sys_seconds: Option<f64>,
    /// Median over the rounds of the peak resident set (bytes).
    pub peak_rss_bytes: Option<u64>,
    /// Wall time over the baseline's, paired by round (`None` for the baseline itself, or
    /// without a round both completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ratio: Option<RatioRounds>,
    /// Peak resident set over the baseline's, paired by round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_ratio: Option<RatioRounds>,
    /// Why it failed (exit status, signal, time-out, output differing from the reference's),
    /// with the round; `None` when every round passed. Later rounds do not run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// One run of a program under one allocator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramRound {
    /// Round index.
    pub round: u32,
    /// Place of the allocator in the round's order.
    pub position: u32,
    /// Wall time of the measured command, from its start to its exit (seconds).
    pub wall_seconds: f64,
    /// User CPU time of the preloaded process and the children it waited for (seconds).
    pub user_seconds: f64,
    /// System CPU time of the preloaded process and the children it waited for (seconds).
    pub sys_seconds: f64,
    /// Peak resident set of the preloaded process (bytes, from its resource usage).
    pub peak_rss_bytes: u64,
}

/// One allocator's ratios to the baseline, as the geometric mean over the programs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramsGeomean {
    /// The allocator.
    pub allocator: String,
    /// The baseline allocator.
    pub versus: String,
    /// The programs whose ratios it covers (those both allocators completed).
    pub programs: Vec<String>,
    /// Wall time: per round, the geometric mean over the programs of that round's ratios; the
    /// estimate is their geometric mean and the interval bootstraps the rounds.
    pub wall: Option<RatioRounds>,
    /// Peak resident set, the same way.
    pub rss: Option<RatioRounds>,
}

/// One point of a scaling curve: one allocator running `tasks` copies of a workload's work
/// at once, as threads of one process sharing one cache (`thread` mode) or as processes with
/// a cache each (`process` mode), measured in interleaved rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalePoint {
    /// Workload name.
    pub workload: String,
    /// Allocator name.
    pub allocator: String,
    /// `thread` or `process`.
    pub mode: String,
    /// Tasks run at once.
    pub tasks: u32,
    /// Whether the tasks' threads were pinned, one per CPU.
    pub pinned: bool,
    /// More threads than CPUs: measured unpinned, the tasks sharing CPUs.
    pub oversubscribed: bool,
    /// What one operation is.
    pub op_unit: String,
    /// Every round's figures, in round order.
    pub rounds: Vec<ScaleRound>,
    /// Geometric mean over the rounds of the tasks' summed throughput (ops/s).
    pub total_ops_per_s: f64,
    /// `total_ops_per_s` per task.
    pub per_task_ops_per_s: f64,
    /// Per-task throughput over that of the same allocator and mode at the smallest task
    /// count, paired by round (1.0: perfect scaling); `None` at the smallest count itself.
    pub efficiency: Option<ScaleRatio>,
    /// This point's throughput over each other allocator's at the same mode and task count,
    /// and (process mode) over the same allocator's in thread mode, paired by round.
    pub versus: Vec<ScaleRatio>,
    /// Warnings of the measurements, one of each kind.
    pub warnings: Vec<String>,
}

/// One round of a [`ScalePoint`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleRound {
    /// Round index.
    pub round: u32,
    /// Place of the point in the round's order.
    pub position: u32,
    /// Summed throughput of the tasks (ops/s).
    pub total_ops_per_s: f64,
    /// One entry per measuring process: one in thread mode, one per task in process mode.
    pub processes: Vec<ScaleProcess>,
}

/// One measuring process of a [`ScaleRound`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleProcess {
    /// Its process id.
    pub pid: u32,
    /// Operations of its measured run.
    pub ops: u64,
    /// Length of its measured run.
    pub seconds: f64,
    /// `ops / seconds`.
    pub throughput_ops_per_s: f64,
}

/// A ratio of two points' throughput, paired by round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleRatio {
    /// The point in the denominator: an allocator name, `thread` (the same allocator in
    /// thread mode) or `N tasks` (the same allocator and mode at N tasks).
    pub versus: String,
    /// One ratio per round both points completed, in round order.
    pub rounds: Vec<f64>,
    /// Geometric mean of `rounds`.
    pub estimate: f64,
    /// Bootstrap interval of the geometric mean (`None` with fewer than two rounds).
    pub interval: Option<(f64, f64)>,
    /// Confidence level of `interval`.
    pub confidence: f64,
}

/// The throughput of `allocator` over that of `versus`, round by round, for one (workload,
/// threads): both were measured in each round, so drift common to the round cancels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedRatio {
    /// Workload name.
    pub workload: String,
    /// Worker threads.
    pub threads: u32,
    /// The allocator in the numerator.
    pub allocator: String,
    /// The reference allocator in the denominator.
    pub versus: String,
    /// One ratio per round both completed, in round order.
    pub rounds: Vec<f64>,
    /// Geometric mean of `rounds`.
    pub estimate: f64,
    /// Bootstrap interval of the geometric mean (`None` with fewer than two rounds).
    pub interval: Option<(f64, f64)>,
    /// Confidence level of `interval`.
    pub confidence: f64,
    /// The same ratio of operations per CPU-second of the measured threads (their CPU time
    /// in each round, from the `task-clock` counter): blind to the time a thread waited for a
    /// CPU, which a loaded machine adds to the wall time of one side and not the other.
    /// `None` where a round has no CPU time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_cpu_second: Option<RatioRounds>,
}

/// A ratio paired by round: one ratio per round, their geometric mean and its bootstrap
/// interval (at the confidence of the [`PairedRatio`] that holds it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatioRounds {
    /// One ratio per round both sides have a figure of, in round order.
    pub rounds: Vec<f64>,
    /// Geometric mean of `rounds`.
    pub estimate: f64,
    /// Bootstrap interval of the geometric mean (`None` with fewer than two rounds).
    pub interval: Option<(f64, f64)>,
}

impl RatioRounds {
    /// The ratio the other way round: the geometric mean and its percentile interval invert
    /// exactly.
    pub fn inverted(&self) -> Self {
        Self {
            rounds: self.rounds.iter().map(|r| 1.0 / r).collect(),
            estimate: 1.0 / self.estimate,
            interval: self.interval.map(|(low, high)| (1.0 / high, 1.0 / low)),
        }
    }
}

impl ResultFile {
    /// An empty result file for this machine, dated now.
    pub fn new(machine: Machine) -> Self {
        Self {
            schema: SCHEMA,
            date: crate::machine::utc_now(),
            machine,
            runs: Vec::new(),
            failures: Vec::new(),
            paired: Vec::new(),
            notes: Vec::new(),
            scaling: Vec::new(),
            programs: None,
        }
    }

    /// Reads a result file.
    pub fn load(path: &Path) -> Result<Self, ResultError> {
        let text = std::fs::read_to_string(path).map_err(|source| ResultError::Read {
            file: path.display().to_string(),
            source,
        })?;
        let file: Self = serde_json::from_str(&text).map_err(|e| ResultError::Parse {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        if file.schema != SCHEMA {
            return Err(ResultError::Parse {
                file: path.display().to_string(),
                message: format!("schema {} (this build reads schema {SCHEMA})", file.schema),
            });
        }
        Ok(file)
    }
}

/// Why a result file could not be read or written.
#[derive(Debug, Error)]
pub enum ResultError {
    /// Reading failed.
    #[error("{file}: cannot read result file: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a result file of this schema.
    #[error("{file}: not a sheafbench result file: {message}")]
    Parse {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// Writing failed.
    #[error("{file}: cannot write: {source} (check that the directory exists and is writable)")]
    Write {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, synced,
/// then renamed over `path`. The file gets mode 0666 less the umask (0644 under the usual
/// 022), like any file a program creates, so result files and charts read alike.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ResultError> {
    let err = |source| ResultError::Write {
        file: path.display().to_string(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // A temporary file is created 0600 by default; the mode given here is filtered by the
    // umask when the file is opened.
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(err)?;
    tmp.write_all(contents).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// The configuration a measurement ran with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Bytes per object.
    pub object_size: usize,
    /// Object alignment.
    pub align: usize,
    /// Sheaf capacity in force (the configured one or the default for the size).
    pub sheaf_capacity: usize,
    /// Barn limit of full sheaves per node.
    pub barn_max_full: usize,
    /// Barn limit of empty sheaves per node.
    pub barn_max_empty: usize,
    /// Whether deferred frees are batched.
    pub deferred_batching: bool,
    /// sheaf's barn partial sheaf for prefill top-ups (`barn_partial`; off in files written
    /// before the switch existed, which is how those runs ran).
    #[serde(default)]
    pub barn_partial: bool,
    /// sheaf's hold, in hand-over ticks, of recycled `rcu_free` sheaves beyond the barn limit
    /// (`rcu_hold_ticks`; 0 in files written before it existed, which is how those ran).
    #[serde(default)]
    pub rcu_hold_ticks: u32,
    /// sheaf's model of a `NOWAIT` allocation that may not refill its sheaf
    /// (`nowait_no_refill`).
    #[serde(default)]
    pub nowait_no_refill: bool,
    /// sheaf's one-slab refill (`refill_one_slab`; off in files written before it existed).
    #[serde(default)]
    pub refill_one_slab: bool,
    /// sheaf's flush-everything run-time changes (`resize_by_flush`; off in files written
    /// before it existed).
    #[serde(default)]
    pub resize_by_flush: bool,
    /// Worker threads.
    pub threads: u32,
    /// OS threads, counting consumers and readers.
    pub os_threads: usize,
    /// Whether threads were pinned.
    pub pinned: bool,
    /// Busy threads run beside the measurement (the spec's `hogs`, `--hogs`).
    #[serde(default)]
    pub hogs: u32,
}

/// One measured run's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSample {
    /// Operations done.
    pub ops: u64,
    /// Wall time from the release of the threads until the last one finished, less the
    /// workers' untimed upkeep where a kind has some (`maple-tree`: the model check and the
    /// emptying store at the end of each pass; `extra.upkeep_seconds` sums what was left out).
    pub seconds: f64,
    /// `ops / seconds`.
    pub throughput_ops_per_s: f64,
    /// The round this run belongs to (`None`: a run of a measurement not made in rounds).
    #[serde(default)]
    pub round: Option<u32>,
    /// The allocator's place in its round's order (0: measured first).
    #[serde(default)]
    pub position: Option<u32>,
    /// The round's latency figures (`None`: not made in rounds; the measurement's
    /// figures cover every run).
    #[serde(default)]
    pub latency_ns: Option<LatencyFigures>,
    /// CPU time of the measuring threads over the run, summed over threads (the
    /// `task-clock` counter of the round, else the scheduler's run time of its threads;
    /// `None`: not made in rounds, or neither known). On a loaded machine
    /// `ops / cpu_seconds` leaves out the time the threads waited for a CPU.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
}

/// Latency of units of work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// What one sample covers (for example "batch of 256 LIFO free+alloc pairs").
    pub unit: String,
    /// The clock used.
    pub clock: String,
    /// Mean cost of one clock read, measured at start-up; each sample includes one.
    pub timer_overhead_ns: f64,
    /// Mean cost of the engine's bookkeeping between two units (the stop-flag load, the
    /// histogram record and, for pinned threads, the CPU check), measured at start-up; each
    /// engine-timed sample includes it once. 0 for the kinds that time each operation
    /// themselves (the range-tree kinds), whose samples hold no bookkeeping.
    #[serde(default)]
    pub bookkeeping_ns: f64,
    /// The percentiles, in nanoseconds per sample.
    #[serde(flatten)]
    pub figures: LatencyFigures,
}

/// Memory held by the measuring process and the cache.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Peak resident set size of the measuring process (`VmHWM`).
    pub peak_rss_bytes: Option<u64>,
    /// Bytes of slab pages the cache held after the last run (`None`: not reported by the design).
    pub slab_bytes: Option<u64>,
    /// Free objects cached above the slabs after the last run.
    pub cached_objects: Option<u64>,
    /// Live objects after the last run (the workload's working set).
    pub live_objects: Option<u64>,
    /// Fragmentation, retention and locality figures (absent in files written before they
    /// were measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<MemoryFigures>,
}

/// A figure a design may be unable to give: its value, or why it has none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Figure {
    /// The value.
    Value(f64),
    /// Why there is no value.
    Unsupported {
        /// The reason.
        unsupported: String,
    },
}

impl Figure {
    /// `value`, or unsupported for `reason` when it is `None`.
    pub fn or_unsupported(value: Option<f64>, reason: &str) -> Self {
        match value {
            Some(v) if v.is_finite() => Figure::Value(v),
            _ => Figure::Unsupported {
                unsupported: reason.to_owned(),
            },
        }
    }

    /// The value, if there is one.
    pub fn value(&self) -> Option<f64> {
        match self {
            Figure::Value(v) => Some(*v),
            Figure::Unsupported { .. } => None,
        }
    }
}

/// Fragmentation of a cache at one point: how much of its slab memory live objects use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fragmentation {
    /// Where the figures were taken: `warmup`, `run N` (the end of that measured phase) or
    /// `peak` (the timeline sample with the most slab bytes).
    pub at: String,
    /// Bytes of slab pages held over bytes of live objects (1 is no waste; above 1, pages
    /// hold free objects or cached ones).
    pub slab_over_live: Figure,
    /// Slabs with both used and free objects over all slabs held.
    pub partial_share: Figure,
}

/// Memory still held by the cache (and the process) at one point after the work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retention {
    /// Bytes of slab pages the cache still held.
    pub slab_bytes: Figure,
    /// Slabs still held.
    pub slabs: Figure,
    /// Free objects still cached above the slabs.
    pub cached_objects: Figure,
    /// Resident set of the whole process (`/proc/self/statm`).
    pub rss_bytes: Figure,
}

/// Fragmentation, retention and locality of one measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryFigures {
    /// At the end of each phase (warm-up, then each measured run) and at the peak.
    pub fragmentation: Vec<Fragmentation>,
    /// After the workload freed every object it held.
    pub retained_after_free: Retention,
    /// After that, and `shrink()`.
    pub retained_after_shrink: Retention,
    /// Distinct 4 KiB pages holding 1,000 objects allocated back to back on one measuring
    /// thread after the last run (the cache's state as the workload left it); freed again
    /// at once, outside any timed interval.
    pub pages_per_1000_allocs: Figure,
    /// dTLB load misses per operation over the measured runs, where the hardware counts them.
    pub dtlb_misses_per_op: Figure,
}

/// Memory over time: what a sampler thread (not one of the measured threads) read every
/// `interval_ns` during the warm-up and the measured runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The sampling interval, in nanoseconds.
    pub interval_ns: u64,
    /// Nanoseconds the sampler spent reading, summed over its samples (its own CPU time
    /// is not the measured threads' unless they share a CPU).
    pub sampling_ns: u64,
    /// One entry per sample, in time order.
    pub samples: Vec<TimelineSample>,
}

/// One reading of the sampler.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineSample {
    /// Seconds since the warm-up was released.
    pub t: f64,
    /// The phase under way (or last ended): 0 the warm-up, `n` the n-th measured run.
    pub phase: u32,
    /// Resident set of the process in bytes (`/proc/self/statm`).
    pub rss_bytes: Option<u64>,
    /// Bytes of slab pages the cache held.
    pub slab_bytes: Option<u64>,
    /// Slabs held.
    pub slabs: Option<u64>,
    /// Slabs with both used and free objects.
    pub partial_slabs: Option<u64>,
    /// Objects handed out and not yet freed.
    pub live_objects: Option<u64>,
    /// Bytes of those objects (object size times live objects, summed over the caches).
    pub live_bytes: Option<u64>,
    /// Free objects cached above the slabs (sheaves and barn, magazines and depot).
    pub cached_objects: Option<u64>,
    /// The design's counters that changed since the previous sample, by how much (gauges
    /// among them may go down).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub moved: BTreeMap<String, i64>,
}

/// Whether pinned threads got and stayed on their CPUs: the result of pinning each, and the
/// CPU sampled at every unit boundary (`cpu-migrations` cannot be trusted on every kernel).
/// The CPUs are one per physical core first, SMT siblings after (see [`crate::cpus`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinning {
    /// Whether threads were pinned.
    pub pinned: bool,
    /// CPU of each OS thread, in spawn order (empty when unpinned).
    pub cpus: Vec<usize>,
    /// CPU samples taken.
    pub samples: u64,
    /// Samples that found a thread off its CPU.
    pub off_cpu_samples: u64,
    /// Threads seen off their CPU at least once.
    pub threads_moved: u64,
    /// The CPU the coordinating thread was pinned to, away from the measured threads'
    /// (`None`: no CPU was left over, or the threads were unpinned; the coordinator then
    /// shares their CPUs, waking twice per run).
    #[serde(default)]
    pub coordinator_cpu: Option<usize>,
    /// Threads that could not be pinned to their CPU (`thread T to CPU C: error`, or `hog H
    /// to CPU C: error` for a busy thread); they ran wherever the scheduler put them, and a
    /// measuring thread's CPU was not sampled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

/// One (workload, allocator, threads) measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Workload name.
    pub workload: String,
    /// Workload kind.
    pub kind: String,
    /// Allocator name.
    pub allocator: String,
    /// Configuration.
    pub config: RunConfig,
    /// What one operation is.
    pub op_unit: String,
    /// Operations over all measured runs.
    pub ops: u64,
    /// Seconds over all measured runs.
    pub seconds: f64,
    /// `ops / seconds`.
    pub throughput_ops_per_s: f64,
    /// One sample per measured run.
    pub samples: Vec<RunSample>,
    /// Latency of units of work, over all measured runs and worker threads.
    pub latency_ns: Latency,
    /// Event counters over all measured runs and threads.
    pub counters: BTreeMap<String, CounterReading>,
    /// Memory.
    pub memory: Memory,
    /// Memory over time (absent when the sampler was off, and in files written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
    /// The design's counters over the measured runs (`stats()` after minus before).
    pub stats: BTreeMap<String, u64>,
    /// Kind-specific figures (for example `reads_per_s`) and thread context switches.
    pub extra: BTreeMap<String, f64>,
    /// Pinning check.
    pub pinning: Pinning,
    /// Caveats a reader should know (see the `warnings` of the CLI).
    pub warnings: Vec<String>,
    /// The spec as run.
    pub spec: WorkloadSpec,
    /// The run-time changes of the spec's `phases`, in order, with the figures around each
    /// (absent without phases).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<LimitChangeResult>,
}

/// One run-time change of the cache's limits (a phase of the spec) and the figures around it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitChangeResult {
    /// The phase's offset into each measured run, in seconds.
    pub at_s: f64,
    /// The new sheaf capacity, if the phase sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheaf_capacity: Option<usize>,
    /// The new full-sheaf limit, if the phase sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barn_max_full: Option<usize>,
    /// The new empty-sheaf limit, if the phase sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barn_max_empty: Option<usize>,
    /// Per measured run: when it was applied, how long it took, what it flushed.
    pub applied: Vec<ChangeApplied>,
    /// The window before the change (up to 100 ms, not before the previous change).
    pub before: ChangeWindow,
    /// The window after the change (up to 100 ms, not past the next change or the run's end).
    pub after: ChangeWindow,
    /// `after.p999_ns / before.p999_ns`, where both have samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p999_ratio: Option<f64>,
}

/// What one change did in one measured run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeApplied {
    /// Seconds from the run's start to the change's start.
    pub applied_at_s: f64,
    /// Seconds the change took (on the coordinator thread, which measures nothing).
    pub took_s: f64,
    /// Objects the change gave back to the slabs.
    pub flushed_objects: u64,
}

/// The measured threads' figures in a window around a change, over every measured run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeWindow {
    /// Start of the window, seconds into each run.
    pub from_s: f64,
    /// End of the window, seconds into each run.
    pub to_s: f64,
    /// Operations of the samples that ended in the window, all runs and workers.
    pub ops: u64,
    /// `ops` over the window's length times the runs.
    pub throughput_ops_per_s: f64,
    /// Latency samples that ended in the window.
    pub samples: u64,
    /// Their 99.9th percentile, in nanoseconds per sample (`None` without samples, and for
    /// kinds that time their own operations, whose samples are not split by window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p999_ns: Option<u64>,
}

impl Measurement {
    /// Mean and sample standard deviation of the per-run throughputs.
    pub fn throughput_mean_sd(&self) -> (f64, f64) {
        mean_sd(self.samples.iter().map(|s| s.throughput_ops_per_s))
    }
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_sd(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let values: Vec<f64> = values.into_iter().collect();
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// A measurement that produced no result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Workload name.
    pub workload: String,
    /// Allocator name.
    pub allocator: String,
    /// Worker threads.
    pub threads: u32,
    /// What happened (exit status, time-out).
    pub error: String,
    /// The end of the measuring process's stderr.
    pub stderr: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sd_of_samples() {
        let (mean, sd) = mean_sd([1.0, 2.0, 3.0, 4.0]);
        assert_eq!(mean, 2.5);
        assert!((sd - 1.2909944).abs() < 1e-6);
        assert_eq!(mean_sd([5.0]), (5.0, 0.0));
        assert_eq!(mean_sd([]), (0.0, 0.0));
    }

    #[test]
    fn atomic_write_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let err = write_atomic(&dir.path().join("missing/r.json"), b"x").unwrap_err();
        assert!(err.to_string().contains("missing/r.json"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn atomic_write_gives_the_mode_of_a_created_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_atomic(&path, b"x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // A file created the ordinary way gets 0666 less the umask.
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let expected = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, expected,
            "mode {mode:o}, a created file gets {expected:o}"
        );
    }
}
