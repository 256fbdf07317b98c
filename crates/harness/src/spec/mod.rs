//! Workload specs: the YAML files of `workloads/`, parsed, overridden and validated.
//!
//! A spec is read in three steps, and nothing runs until all three have passed:
//!
//! 1. **Parse** the file with `yaml_serde` into [`WorkloadSpec`]. Unknown fields are refused
//!    (`deny_unknown_fields`); type errors keep `yaml_serde`'s field path, line and column.
//! 2. **Override** fields named by `--set key=value` ([`WorkloadSpec::apply_overrides`]): the
//!    spec goes through a YAML value tree, so an override is typed exactly like the file.
//! 3. **Validate** ([`WorkloadSpec::validate`]): zero or impossible values, parameters that do
//!    not apply to the kind, and pinned threads beyond the CPUs this process may use. The
//!    result is a [`Workload`] with every kind parameter resolved to its default.
//!
//! Every error is a [`SpecError`] naming the file (or `--set`), the field and what is expected.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use thiserror::Error;

use object_alloc::{CacheConfig, MAX_OBJECT_SIZE, PAGE_SIZE};

/// Why a workload spec was refused. Each message says what to change.
#[derive(Debug, Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{file}: cannot read workload spec: {source}")]
    Read {
        /// The spec file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown field or a value of the wrong type.
    #[error("{file}: {message}")]
    Yaml {
        /// The spec file.
        file: String,
        /// `yaml_serde`'s message, with field path, line and column.
        message: String,
    },
    /// A field holds a value the harness cannot run.
    #[error("{file}: `{field}` = {value}: expected {expected}")]
    Invalid {
        /// The spec file, or `--set` for an override.
        file: String,
        /// The field, as a dotted path (`params.working_set`).
        field: String,
        /// The value given.
        value: String,
        /// What would be accepted.
        expected: String,
    },
    /// A kind parameter was given to a kind that does not take it.
    #[error("{file}: `params.{param}` does not apply to kind `{kind}`; it takes: {takes}")]
    NotApplicable {
        /// The spec file.
        file: String,
        /// The parameter.
        param: String,
        /// The spec's kind.
        kind: String,
        /// The parameters the kind takes.
        takes: String,
    },
    /// The trace named by `params.trace` could not be read or parsed.
    #[error("{file}: `params.trace` = {trace}: {message}")]
    Trace {
        /// The spec file.
        file: String,
        /// The trace file, as resolved against the spec's directory.
        trace: String,
        /// What is wrong (a parse error names the trace's line).
        message: String,
    },
    /// A `--set` argument is not of the form `key=value` or names no field.
    #[error("--set {arg}: {message}")]
    Override {
        /// The argument as given.
        arg: String,
        /// What is wrong and what would be accepted.
        message: String,
    },
}

/// The workload kinds the harness implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KindName {
    /// Alloc/free pairs over a per-thread working set, in LIFO or random order.
    Churn,
    /// `burst` allocations then as many frees, crossing the sheaf capacity.
    Burst,
    /// Objects allocated on one thread and freed on another (remote frees).
    ProducerConsumer,
    /// The maple-tree pattern without the tree: prefill a worst case, use a few, return.
    PrefillBurst,
    /// Writers replace published objects and free the old ones deferred; readers read them.
    DeferredChurn,
    /// Writes of a generated address-space operation stream to a range tree like the
    /// kernel's maple tree (worst-case prefill per write), with concurrent readers.
    MapleTree,
    /// Replays a recorded address-space trace into range trees, one per address space.
    TraceReplay,
}

impl KindName {
    /// Every kind, in the order `list` shows them.
    pub const ALL: [KindName; 7] = [
        KindName::Churn,
        KindName::Burst,
        KindName::ProducerConsumer,
        KindName::PrefillBurst,
        KindName::DeferredChurn,
        KindName::MapleTree,
        KindName::TraceReplay,
    ];

    /// The name used in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            KindName::Churn => "churn",
            KindName::Burst => "burst",
            KindName::ProducerConsumer => "producer-consumer",
            KindName::PrefillBurst => "prefill-burst",
            KindName::DeferredChurn => "deferred-churn",
            KindName::MapleTree => "maple-tree",
            KindName::TraceReplay => "trace-replay",
        }
    }

    /// One line on what the kind does.
    pub fn description(self) -> &'static str {
        match self {
            KindName::Churn => {
                "free+alloc pairs over a per-thread working set (params: order lifo|random, working_set, batch)"
            }
            KindName::Burst => {
                "`burst` allocations then `burst` frees, crossing the sheaf capacity (params: burst)"
            }
            KindName::ProducerConsumer => {
                "per pair, one thread allocates and another frees (remote frees), handing objects over in batches through a bounded ring (params: queue, batch)"
            }
            KindName::PrefillBurst => {
                "prefill `reserve`, allocate `used` from the sheaf, return it, free the used objects (params: reserve, used, batch)"
            }
            KindName::DeferredChurn => {
                "writers replace published objects (each its own share of the slots, published with a release store) and free the old ones deferred; readers read them in read-side sections (params: slots, readers, batch, reads_per_section)"
            }
            KindName::MapleTree => {
                "writes of a generated mmap/munmap/mprotect/brk stream to a maple-like range tree, worst-case prefill per write, readers looking up addresses (params: stream, readers, reads_per_section, single_node_alloc)"
            }
            KindName::TraceReplay => {
                "replays a recorded address-space trace into maple-like range trees, one per address space (params: trace, single_node_alloc)"
            }
        }
    }

    /// The parameters that apply to the kind.
    fn params(self) -> &'static [&'static str] {
        match self {
            KindName::Churn => &["order", "working_set", "batch"],
            KindName::Burst => &["burst"],
            KindName::ProducerConsumer => &["queue", "batch"],
            KindName::PrefillBurst => &["reserve", "used", "batch"],
            KindName::DeferredChurn => &["slots", "readers", "batch", "reads_per_section"],
            KindName::MapleTree => &[
                "stream",
                "readers",
                "reads_per_section",
                "single_node_alloc",
            ],
            KindName::TraceReplay => &["trace", "single_node_alloc"],
        }
    }
}

impl fmt::Display for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Order in which `churn` frees objects of its working set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChurnOrder {
    /// Free the most recently allocated object, then allocate its replacement.
    Lifo,
    /// Free an object chosen at random in the working set, then allocate its replacement.
    Random,
}

/// A duration written as text: `250ms`, `2s`, `1.5s`, `100us`, `1m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecDuration(pub Duration);

impl FromStr for SpecDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration such as 250ms, 2s or 1m"))?;
        let seconds = match unit.trim() {
            "ns" => value * 1e-9,
            "us" | "µs" => value * 1e-6,
            "ms" => value * 1e-3,
            "s" | "" => value,
            "m" | "min" => value * 60.0,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{text}` (use ns, us, ms, s or m)"
                ));
            }
        };
        if !seconds.is_finite() || seconds > 24.0 * 3600.0 {
            return Err(format!("`{text}` is not a duration of at most a day"));
        }
        Ok(SpecDuration(Duration::from_secs_f64(seconds)))
    }
}

impl fmt::Display for SpecDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", nanos / 1_000_000_000)
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{}us", nanos / 1_000)
        } else {
            write!(f, "{nanos}ns")
        }
    }
}

impl Serialize for SpecDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpecDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = SpecDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 250ms, 2s or 1m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SpecDuration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SpecDuration, E> {
                self.visit_str(&format!("{v}s"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<SpecDuration, E> {
                self.visit_str(&format!("{v}s"))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Thread counts to measure: one number or a list (`threads: 2` or `threads: [1, 2]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadCounts(pub Vec<u32>);

impl Serialize for ThreadCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ThreadCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountsVisitor;
        impl<'de> Visitor<'de> for CountsVisitor {
            type Value = ThreadCounts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a thread count or a list of thread counts")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ThreadCounts, E> {
                u32::try_from(v)
                    .map(|v| ThreadCounts(vec![v]))
                    .map_err(|_| E::custom(format!("thread count {v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ThreadCounts, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("thread count {v} is negative")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<ThreadCounts, S::Error> {
                let mut counts = Vec::new();
                while let Some(count) = seq.next_element::<u32>()? {
                    counts.push(count);
                }
                Ok(ThreadCounts(counts))
            }
        }
        deserializer.deserialize_any(CountsVisitor)
    }
}

/// Kind parameters as written in the spec; each applies to some kinds only (see
/// [`KindName::description`]), and [`WorkloadSpec::validate`] refuses one that does not apply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// `churn`: order of frees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<ChurnOrder>,
    /// `churn`: objects each thread keeps live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set: Option<usize>,
    /// Operations timed together as one latency sample (`churn`, `producer-consumer`,
    /// `prefill-burst`, `deferred-churn`). For `producer-consumer` it is also the hand-off
    /// batch: the producer allocates `batch` objects, then hands them over with one release
    /// of the ring's tail; at most half of `queue` (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// `burst`: objects allocated then freed per burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<usize>,
    /// `producer-consumer`: capacity of each pair's ring of pointers (at least 2, default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
    /// `prefill-burst`: objects reserved by each prefill (the worst case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve: Option<usize>,
    /// `prefill-burst`: objects taken from each prefilled sheaf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<usize>,
    /// `deferred-churn`: published objects shared by writers and readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<usize>,
    /// `deferred-churn`, `maple-tree`: reader threads (beside the `threads` writers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readers: Option<usize>,
    /// `deferred-churn`: objects a reader reads in one read-side section; `maple-tree`:
    /// lookups per read-side section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads_per_section: Option<usize>,
    /// `maple-tree`: the generated operation stream ([`maple::StreamSpec`]: every field
    /// defaulted, unknown fields refused). Writer `t` uses the stream's seed plus `t`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<maple::StreamSpec>,
    /// `maple-tree`, `trace-replay`: a write whose worst case is one node takes it with a
    /// plain allocation instead of a prefilled sheaf, as the kernel does (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_node_alloc: Option<bool>,
    /// `trace-replay`: the trace file, relative to the spec file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

impl Params {
    fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        let fields: [(&'static str, bool); 13] = [
            ("order", self.order.is_some()),
            ("working_set", self.working_set.is_some()),
            ("batch", self.batch.is_some()),
            ("burst", self.burst.is_some()),
            ("queue", self.queue.is_some()),
            ("reserve", self.reserve.is_some()),
            ("used", self.used.is_some()),
            ("slots", self.slots.is_some()),
            ("readers", self.readers.is_some()),
            ("reads_per_section", self.reads_per_section.is_some()),
            ("stream", self.stream.is_some()),
            ("single_node_alloc", self.single_node_alloc.is_some()),
            ("trace", self.trace.is_some()),
        ];
        for (name, set) in fields {
            if set {
                given.push(name);
            }
        }
        given
    }

    /// Names of every parameter, for `--set` lookups.
    const NAMES: [&'static str; 13] = [
        "order",
        "working_set",
        "batch",
        "burst",
        "queue",
        "reserve",
        "used",
        "slots",
        "readers",
        "reads_per_section",
        "stream",
        "single_node_alloc",
        "trace",
    ];
}

fn default_align() -> usize {
    8
}
fn default_barn_limit() -> usize {
    10
}
fn default_threads() -> ThreadCounts {
    ThreadCounts(vec![1])
}
fn default_true() -> bool {
    true
}
fn default_warmup() -> SpecDuration {
    SpecDuration(Duration::from_millis(200))
}
fn default_seed() -> u64 {
    0x5eaf_5eed
}
fn default_runs() -> u32 {
    5
}

/// The most busy threads (`hogs`) a spec may ask for.
pub const MAX_HOGS: u32 = 256;

/// One workload spec, as written in a YAML file of `workloads/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Stable name used in result files and tables.
    pub name: String,
    /// The kind implemented in Rust.
    pub kind: KindName,
    /// Suite the workload belongs to (`default` is run by `cargo xtask bench`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// Bytes per object.
    pub object_size: usize,
    /// Alignment of every object (a power of two).
    #[serde(default = "default_align")]
    pub align: usize,
    /// Objects per sheaf; absent for the kernel's default for the object size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheaf_capacity: Option<usize>,
    /// Most full sheaves a barn keeps per node.
    #[serde(default = "default_barn_limit")]
    pub barn_max_full: usize,
    /// Most empty sheaves a barn keeps per node.
    #[serde(default = "default_barn_limit")]
    pub barn_max_empty: usize,
    /// Whether deferred frees are batched (designs that can switch it).
    #[serde(default = "default_true")]
    pub deferred_batching: bool,
    /// Thread counts to measure (worker threads; see the kind for extra threads).
    #[serde(default = "default_threads")]
    pub threads: ThreadCounts,
    /// Pin each thread to its own CPU.
    #[serde(default = "default_true")]
    pub pinned: bool,
    /// Warm-up before the measured runs.
    #[serde(default = "default_warmup")]
    pub warmup: SpecDuration,
    /// Length of each measured run (exclusive with `ops`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<SpecDuration>,
    /// Operations per measured run, split over the worker threads (exclusive with `duration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<u64>,
    /// Seed of every random choice.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Measured runs (each gives one throughput sample).
    #[serde(default = "default_runs")]
    pub runs: u32,
    /// Busy threads run beside the measurement, to reproduce an oversubscribed machine:
    /// each spins without allocating, pinned round-robin to the measured CPUs (to every CPU
    /// this process may use when the measurement is unpinned), busy during the warm-up and
    /// every measured run and idle between them. They are never counted in the figures;
    /// their CPU time is reported (`hog_cpu_seconds`). At most [`MAX_HOGS`].
    #[serde(default)]
    pub hogs: u32,
    /// The kind's parameters.
    #[serde(default)]
    pub params: Params,
}

/// How each measured run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunLength {
    /// Run for this long.
    Duration(#[serde(with = "duration_text")] Duration),
    /// Run until this many operations are done, over all worker threads.
    Ops(u64),
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::SpecDuration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        SpecDuration(*d).serialize(s)
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        SpecDuration::deserialize(d).map(|d| d.0)
    }
}

/// A kind with its parameters resolved to their defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Kind {
    /// See [`KindName::Churn`].
    Churn {
        /// Order of frees.
        order: ChurnOrder,
        /// Objects each thread keeps live.
        working_set: usize,
        /// Free+alloc pairs per latency sample.
        batch: usize,
    },
    /// See [`KindName::Burst`].
    Burst {
        /// Objects per burst.
        burst: usize,
    },
    /// See [`KindName::ProducerConsumer`].
    ProducerConsumer {
        /// Ring capacity per pair.
        queue: usize,
        /// Objects per hand-off and per latency sample (producer side).
        batch: usize,
    },
    /// See [`KindName::PrefillBurst`].
    PrefillBurst {
        /// Objects reserved per prefill.
        reserve: usize,
        /// Objects used per prefill.
        used: usize,
        /// Writes per latency sample.
        batch: usize,
    },
    /// See [`KindName::DeferredChurn`].
    DeferredChurn {
        /// Published objects.
        slots: usize,
        /// Reader threads.
        readers: usize,
        /// Replacements per latency sample.
        batch: usize,
        /// Objects read per read-side section.
        reads_per_section: usize,
    },
    /// See [`KindName::MapleTree`].
    MapleTree {
        /// The generated stream (writer `t` uses seed `stream.seed + t`).
        stream: maple::StreamSpec,
        /// Reader threads.
        readers: usize,
        /// Lookups per read-side section.
        reads_per_section: usize,
        /// Single-node writes take a plain allocation instead of a prefilled sheaf.
        single_node_alloc: bool,
    },
    /// See [`KindName::TraceReplay`].
    TraceReplay {
        /// The trace file, absolute (parsed once at validation, read again by the measuring
        /// process before timing).
        trace: PathBuf,
        /// Single-node writes take a plain allocation instead of a prefilled sheaf.
        single_node_alloc: bool,
    },
}

impl Kind {
    /// The kind's name.
    pub fn name(&self) -> KindName {
        match self {
            Kind::Churn { .. } => KindName::Churn,
            Kind::Burst { .. } => KindName::Burst,
            Kind::ProducerConsumer { .. } => KindName::ProducerConsumer,
            Kind::PrefillBurst { .. } => KindName::PrefillBurst,
            Kind::DeferredChurn { .. } => KindName::DeferredChurn,
            Kind::MapleTree { .. } => KindName::MapleTree,
            Kind::TraceReplay { .. } => KindName::TraceReplay,
        }
    }

    /// OS threads a measurement with `threads` worker threads starts.
    pub fn os_threads(&self, threads: u32) -> usize {
        let threads = threads as usize;
        match self {
            Kind::ProducerConsumer { .. } => 2 * threads,
            Kind::DeferredChurn { readers, .. } | Kind::MapleTree { readers, .. } => {
                threads + readers
            }
            _ => threads,
        }
    }

    /// What one operation is, for throughput figures.
    pub fn op_unit(&self) -> &'static str {
        match self {
            Kind::Churn { .. } => "free+alloc pair",
            Kind::Burst { .. } => "object allocated and freed",
            Kind::ProducerConsumer { .. } => "object allocated, passed and freed remotely",
            Kind::PrefillBurst { .. } => "prefill burst (one write)",
            Kind::DeferredChurn { .. } => "replacement (alloc, publish, free_deferred)",
            Kind::MapleTree { .. } | Kind::TraceReplay { .. } => "write",
        }
    }

    /// What one latency sample covers.
    pub fn sample_unit(&self) -> String {
        match *self {
            Kind::Churn { batch, order, .. } => {
                let order = match order {
                    ChurnOrder::Lifo => "LIFO",
                    ChurnOrder::Random => "random-order",
                };
                format!("batch of {batch} {order} free+alloc pairs")
            }
            Kind::Burst { burst } => format!("burst of {burst} allocs then {burst} frees"),
            Kind::ProducerConsumer { batch, .. } => {
                format!("batch of {batch} allocs handed to the consumer (producer side)")
            }
            Kind::PrefillBurst {
                reserve,
                used,
                batch,
            } => format!(
                "{batch} write(s), each: prefill of {reserve}, {used} allocs from it, return, {used} frees"
            ),
            Kind::DeferredChurn { batch, .. } => {
                format!("batch of {batch} replacements (alloc, publish, free_deferred)")
            }
            Kind::MapleTree {
                single_node_alloc, ..
            }
            | Kind::TraceReplay {
                single_node_alloc, ..
            } => format!(
                "one tree write (prefill of its worst case{}, copy-on-write, publish, free_deferred of replaced nodes)",
                if single_node_alloc {
                    "; a single node by plain alloc"
                } else {
                    ""
                }
            ),
        }
    }
}

/// A validated workload, ready to run at any of its thread counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// The spec as given (after overrides).
    pub spec: WorkloadSpec,
    /// The kind with every parameter resolved.
    pub kind: Kind,
    /// How each measured run ends.
    pub length: RunLength,
}

impl Workload {
    /// The cache configuration the spec asks for.
    ///
    /// The tree kinds start from [`maple::node_cache_config`] (the spec's `object_size` and
    /// `align` were checked to be the node's); the other fields come from the spec.
    pub fn cache_config(&self) -> CacheConfig {
        let base = match self.kind {
            Kind::MapleTree { .. } | Kind::TraceReplay { .. } => maple::node_cache_config(),
            _ => CacheConfig::new(self.spec.object_size).with_align(self.spec.align),
        };
        let mut config = base
            .with_barn_limits(self.spec.barn_max_full, self.spec.barn_max_empty)
            .with_deferred_batching(self.spec.deferred_batching);
        if let Some(capacity) = self.spec.sheaf_capacity {
            config = config.with_sheaf_capacity(capacity);
        }
        config
    }
}

impl WorkloadSpec {
    /// Reads and parses a spec file (no overrides, no validation).
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_yaml(&file, &text)
    }

    /// Parses spec text; `file` names it in errors.
    pub fn from_yaml(file: &str, text: &str) -> Result<Self, SpecError> {
        yaml_serde::from_str(text).map_err(|e| SpecError::Yaml {
            file: file.to_owned(),
            message: one_line(&e.to_string()),
        })
    }

    /// Applies `key=value` overrides. A key is a top-level field (`sheaf_capacity`), a kind
    /// parameter (`working_set` or `params.working_set`) or a field nested in one
    /// (`stream.ops`, `params.stream.mix.brk`); the value is YAML (`threads=[1,2]`). Setting
    /// `ops` clears `duration` and setting `duration` clears `ops` (a run has one length).
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<(), SpecError> {
        if overrides.is_empty() {
            return Ok(());
        }
        let mut tree = yaml_serde::to_value(&*self).map_err(|e| SpecError::Override {
            arg: overrides.join(","),
            message: e.to_string(),
        })?;
        for arg in overrides {
            let Some((key, value)) = arg.split_once('=') else {
                return Err(SpecError::Override {
                    arg: arg.clone(),
                    message: "expected key=value, for example sheaf_capacity=32".into(),
                });
            };
            let key = key.trim();
            // A nested parameter is a dotted path (`stream.ops`, `params.stream.mix.brk`).
            let first = key.split('.').next().unwrap_or(key);
            let path: Vec<&str> = if let Some(param) = key.strip_prefix("params.") {
                std::iter::once("params").chain(param.split('.')).collect()
            } else if TOP_LEVEL_FIELDS.contains(&key) {
                vec![key]
            } else if Params::NAMES.contains(&first) {
                std::iter::once("params").chain(key.split('.')).collect()
            } else {
                return Err(SpecError::Override {
                    arg: arg.clone(),
                    message: format!(
                        "unknown field `{key}`; fields: {}; kind parameters: {}",
                        TOP_LEVEL_FIELDS.join(", "),
                        Params::NAMES.join(", ")
                    ),
                });
            };
            if path[0] == "params" && !Params::NAMES.contains(&path[1]) {
                return Err(SpecError::Override {
                    arg: arg.clone(),
                    message: format!(
                        "unknown kind parameter `{}`; parameters: {}",
                        path[1],
                        Params::NAMES.join(", ")
                    ),
                });
            }
            let parsed: yaml_serde::Value =
                yaml_serde::from_str(value).map_err(|e| SpecError::Override {
                    arg: arg.clone(),
                    message: one_line(&e.to_string()),
                })?;
            let mapping = tree
                .as_mapping_mut()
                .expect("a spec serializes to a mapping");
            // A run is either timed or counted: setting one length clears the other, so
            // `--set ops=N` works on a spec that gives a `duration` (and the reverse).
            let other_length = match key {
                "ops" => Some("duration"),
                "duration" => Some("ops"),
                _ => None,
            };
            if let Some(other) = other_length
                && !parsed.is_null()
            {
                mapping.remove(other);
            }
            let (last, parents) = path.split_last().expect("a path has a field");
            let mut node = mapping;
            for &parent in parents {
                let child = node
                    .entry(parent.into())
                    .or_insert_with(|| yaml_serde::Value::Mapping(Default::default()));
                if !child.is_mapping() {
                    *child = yaml_serde::Value::Mapping(Default::default());
                }
                node = child.as_mapping_mut().expect("just made a mapping");
            }
            node.insert((*last).into(), parsed);
            *self = yaml_serde::from_value(tree.clone()).map_err(|e| SpecError::Override {
                arg: arg.clone(),
                message: one_line(&e.to_string()),
            })?;
        }
        Ok(())
    }

    /// Shortens the spec for a smoke run: 20 ms warm-up, 2 runs of 50 ms.
    pub fn make_quick(&mut self) {
        self.warmup = SpecDuration(Duration::from_millis(20));
        self.duration = Some(SpecDuration(Duration::from_millis(50)));
        self.ops = None;
        self.runs = 2;
    }

    /// Checks every field; `file` names the spec in errors and `cpus` is the number of CPUs
    /// this process may be pinned to.
    pub fn validate(&self, file: &str, cpus: usize) -> Result<Workload, SpecError> {
        let invalid = |field: &str, value: &dyn fmt::Display, expected: &str| SpecError::Invalid {
            file: file.to_owned(),
            field: field.to_owned(),
            value: value.to_string(),
            expected: expected.to_owned(),
        };
        if self.name.trim().is_empty() {
            return Err(invalid("name", &"\"\"", "a non-empty name"));
        }
        if self.object_size == 0 || self.object_size > MAX_OBJECT_SIZE {
            return Err(invalid(
                "object_size",
                &self.object_size,
                &format!("between 1 and {MAX_OBJECT_SIZE} bytes"),
            ));
        }
        if !self.align.is_power_of_two() || self.align > PAGE_SIZE {
            return Err(invalid(
                "align",
                &self.align,
                &format!("a power of two between 1 and {PAGE_SIZE}"),
            ));
        }
        if self.runs == 0 || self.runs > 1000 {
            return Err(invalid("runs", &self.runs, "between 1 and 1000"));
        }
        if self.hogs > MAX_HOGS {
            return Err(invalid(
                "hogs",
                &self.hogs,
                &format!("a number of busy threads between 0 and {MAX_HOGS}"),
            ));
        }
        if self.threads.0.is_empty() {
            return Err(invalid("threads", &"[]", "at least one thread count"));
        }
        for &t in &self.threads.0 {
            if t == 0 || t > 1024 {
                return Err(invalid("threads", &t, "between 1 and 1024"));
            }
        }
        let length = match (self.duration, self.ops) {
            (Some(_), Some(ops)) => {
                return Err(invalid(
                    "ops",
                    &ops,
                    "either `duration` or `ops`, not both (remove one)",
                ));
            }
            (Some(d), None) => {
                if d.0 < Duration::from_millis(1) {
                    return Err(invalid("duration", &d, "at least 1ms"));
                }
                RunLength::Duration(d.0)
            }
            (None, Some(ops)) => {
                if ops == 0 {
                    return Err(invalid("ops", &ops, "at least 1"));
                }
                RunLength::Ops(ops)
            }
            (None, None) => RunLength::Duration(Duration::from_secs(1)),
        };
        let allowed = self.kind.params();
        if let Some(stray) = self
            .params
            .given()
            .into_iter()
            .find(|p| !allowed.contains(p))
        {
            return Err(SpecError::NotApplicable {
                file: file.to_owned(),
                param: stray.to_owned(),
                kind: self.kind.to_string(),
                takes: allowed.join(", "),
            });
        }
        let positive = |field: &str, value: Option<usize>, default: usize, max: usize| {
            let value = value.unwrap_or(default);
            if value == 0 || value > max {
                Err(invalid(
                    &format!("params.{field}"),
                    &value,
                    &format!("between 1 and {max}"),
                ))
            } else {
                Ok(value)
            }
        };
        let p = &self.params;
        let kind = match self.kind {
            KindName::Churn => Kind::Churn {
                order: p.order.unwrap_or(ChurnOrder::Lifo),
                working_set: positive("working_set", p.working_set, 1024, 1 << 24)?,
                batch: positive("batch", p.batch, 256, 1 << 20)?,
            },
            KindName::Burst => Kind::Burst {
                burst: positive("burst", p.burst, 256, 1 << 20)?,
            },
            KindName::ProducerConsumer => {
                let queue = positive("queue", p.queue, 1024, 1 << 20)?;
                if queue < 2 {
                    return Err(invalid(
                        "params.queue",
                        &queue,
                        "at least 2 (the ring holds two hand-off batches)",
                    ));
                }
                let batch = positive("batch", p.batch, 64, 1 << 20)?;
                if batch > queue / 2 {
                    return Err(invalid(
                        "params.batch",
                        &batch,
                        &format!(
                            "at most half of params.queue ({}): the producer fills one hand-off batch while the consumer frees another",
                            queue / 2
                        ),
                    ));
                }
                if self.object_size < 8 {
                    return Err(invalid(
                        "object_size",
                        &self.object_size,
                        "at least 8 for producer-consumer (objects carry a sequence number)",
                    ));
                }
                Kind::ProducerConsumer { queue, batch }
            }
            KindName::PrefillBurst => {
                let reserve = positive("reserve", p.reserve, 13, 1 << 16)?;
                let used = p.used.unwrap_or(3);
                if used > reserve {
                    return Err(invalid(
                        "params.used",
                        &used,
                        &format!("at most params.reserve ({reserve})"),
                    ));
                }
                Kind::PrefillBurst {
                    reserve,
                    used,
                    batch: positive("batch", p.batch, 16, 1 << 20)?,
                }
            }
            KindName::DeferredChurn => {
                let readers = p.readers.unwrap_or(1);
                if readers > 1024 {
                    return Err(invalid("params.readers", &readers, "between 0 and 1024"));
                }
                if self.object_size < 8 {
                    return Err(invalid(
                        "object_size",
                        &self.object_size,
                        "at least 8 for deferred-churn (objects carry a sentinel)",
                    ));
                }
                let slots = positive("slots", p.slots, 1024, 1 << 24)?;
                let writers = self.threads.0.iter().copied().max().unwrap_or(1) as usize;
                if slots < writers {
                    return Err(invalid(
                        "params.slots",
                        &slots,
                        &format!(
                            "at least the largest thread count ({writers}): each writer owns its share of the slots"
                        ),
                    ));
                }
                Kind::DeferredChurn {
                    slots,
                    readers,
                    batch: positive("batch", p.batch, 64, 1 << 20)?,
                    reads_per_section: positive(
                        "reads_per_section",
                        p.reads_per_section,
                        16,
                        1 << 20,
                    )?,
                }
            }
            KindName::MapleTree => {
                self.check_node_geometry(file)?;
                let readers = p.readers.unwrap_or(1);
                if readers > 1024 {
                    return Err(invalid("params.readers", &readers, "between 0 and 1024"));
                }
                let stream = p.stream.clone().unwrap_or_default();
                stream.validate().map_err(|e| {
                    let value = yaml_serde::to_value(&stream)
                        .ok()
                        .and_then(|v| e.field.split('.').try_fold(v, |v, key| v.get(key).cloned()))
                        .and_then(|v| yaml_serde::to_string(&v).ok())
                        .map(|v| v.trim().to_owned())
                        .unwrap_or_else(|| "?".into());
                    invalid(&format!("params.stream.{}", e.field), &value, e.expected)
                })?;
                Kind::MapleTree {
                    stream,
                    readers,
                    reads_per_section: positive(
                        "reads_per_section",
                        p.reads_per_section,
                        16,
                        1 << 20,
                    )?,
                    single_node_alloc: p.single_node_alloc.unwrap_or(false),
                }
            }
            KindName::TraceReplay => {
                self.check_node_geometry(file)?;
                let Some(trace) = &p.trace else {
                    return Err(invalid(
                        "params.trace",
                        &"(missing)",
                        "the path of a trace file, relative to the spec file (e.g. traces/python-sqlite-json.trace)",
                    ));
                };
                let dir = Path::new(file).parent().unwrap_or(Path::new(""));
                let path = dir.join(trace);
                let path = std::path::absolute(&path).unwrap_or(path);
                load_trace(&path).map_err(|message| SpecError::Trace {
                    file: file.to_owned(),
                    trace: path.display().to_string(),
                    message,
                })?;
                Kind::TraceReplay {
                    trace: path,
                    single_node_alloc: p.single_node_alloc.unwrap_or(false),
                }
            }
        };
        if self.pinned {
            for &t in &self.threads.0 {
                let os_threads = kind.os_threads(t);
                if os_threads > cpus {
                    return Err(invalid(
                        "threads",
                        &t,
                        &format!(
                            "at most {cpus} pinned threads on this machine, but {t} means {os_threads} threads for kind `{}`; lower `threads` or set `pinned: false` (--set pinned=false) to oversubscribe",
                            self.kind
                        ),
                    ));
                }
            }
        }
        let workload = Workload {
            spec: self.clone(),
            kind,
            length,
        };
        workload.cache_config().validate().map_err(|e| {
            invalid(
                e.field,
                &e.value,
                &format!("{} (refused by the cache configuration)", e.expected),
            )
        })?;
        Ok(workload)
    }
}

impl WorkloadSpec {
    /// The tree kinds' objects are tree nodes: their size and alignment are fixed.
    fn check_node_geometry(&self, file: &str) -> Result<(), SpecError> {
        for (field, value, expected) in [
            ("object_size", self.object_size, maple::NODE_SIZE),
            ("align", self.align, maple::NODE_ALIGN),
        ] {
            if value != expected {
                return Err(SpecError::Invalid {
                    file: file.to_owned(),
                    field: field.to_owned(),
                    value: value.to_string(),
                    expected: format!(
                        "{expected} for kind `{}` (the objects are tree nodes of {} bytes aligned to {})",
                        self.kind,
                        maple::NODE_SIZE,
                        maple::NODE_ALIGN
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Reads and parses a trace file; the error says what is wrong (a parse error names the
/// line). A trace without any tree write is refused: replaying it would measure nothing.
pub fn load_trace(path: &Path) -> Result<maple::Trace, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the trace: {e}"))?;
    let trace = maple::Trace::parse(&text).map_err(|e| e.to_string())?;
    if !trace.ops().any(|op| op.store().is_some()) {
        return Err("the trace holds no operation that writes to a tree".into());
    }
    Ok(trace)
}

/// Top-level spec fields, for `--set` lookups.
const TOP_LEVEL_FIELDS: [&str; 17] = [
    "name",
    "kind",
    "suite",
    "object_size",
    "align",
    "sheaf_capacity",
    "barn_max_full",
    "barn_max_empty",
    "deferred_batching",
    "threads",
    "pinned",
    "warmup",
    "duration",
    "ops",
    "seed",
    "runs",
    "hogs",
];

/// Joins a possibly multi-line message into one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHURN: &str = "name: churn-lifo\nkind: churn\nsuite: default\nobject_size: 64\nthreads: [1, 2]\nduration: 1s\nparams:\n  order: lifo\n  working_set: 512\n";

    #[test]
    fn parses_a_spec_with_defaults() {
        let spec = WorkloadSpec::from_yaml("churn.yaml", CHURN).unwrap();
        assert_eq!(spec.threads, ThreadCounts(vec![1, 2]));
        assert_eq!(spec.align, 8);
        assert_eq!(spec.runs, 5);
        let workload = spec.validate("churn.yaml", 2).unwrap();
        assert_eq!(
            workload.kind,
            Kind::Churn {
                order: ChurnOrder::Lifo,
                working_set: 512,
                batch: 256
            }
        );
        assert_eq!(workload.length, RunLength::Duration(Duration::from_secs(1)));
    }

    #[test]
    fn a_single_thread_count_is_accepted() {
        let text = CHURN.replace("threads: [1, 2]", "threads: 2");
        let spec = WorkloadSpec::from_yaml("x", &text).unwrap();
        assert_eq!(spec.threads, ThreadCounts(vec![2]));
    }

    #[test]
    fn yaml_errors_keep_path_line_and_column() {
        let text = CHURN.replace("threads: [1, 2]", "threads: four");
        let err = WorkloadSpec::from_yaml("churn.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("churn.yaml: threads: "), "{err}");
        assert!(err.contains("line 5 column 10"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = format!("{CHURN}colour: blue\n");
        let err = WorkloadSpec::from_yaml("c.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
        let text = format!("{CHURN}  colour: blue\n");
        let err = WorkloadSpec::from_yaml("c.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("params: unknown field `colour`"), "{err}");
    }

    #[test]
    fn zero_and_impossible_values_name_the_field() {
        for (from, to, field) in [
            ("object_size: 64", "object_size: 0", "`object_size` = 0"),
            (
                "working_set: 512",
                "working_set: 0",
                "`params.working_set` = 0",
            ),
            ("threads: [1, 2]", "threads: [0]", "`threads` = 0"),
            ("duration: 1s", "duration: 0s", "`duration` = 0s"),
        ] {
            let spec = WorkloadSpec::from_yaml("c.yaml", &CHURN.replace(from, to)).unwrap();
            let err = spec.validate("c.yaml", 2).unwrap_err().to_string();
            assert!(err.starts_with(&format!("c.yaml: {field}")), "{err}");
        }
        let spec = WorkloadSpec::from_yaml("c.yaml", &format!("{CHURN}align: 3\n")).unwrap();
        let err = spec.validate("c.yaml", 2).unwrap_err().to_string();
        assert!(
            err.contains("`align` = 3: expected a power of two"),
            "{err}"
        );
    }

    #[test]
    fn parameters_of_another_kind_are_refused() {
        let text = format!("{CHURN}  reserve: 13\n");
        let spec = WorkloadSpec::from_yaml("c.yaml", &text).unwrap();
        let err = spec.validate("c.yaml", 2).unwrap_err().to_string();
        assert!(
            err.contains("`params.reserve` does not apply to kind `churn`")
                && err.contains("order, working_set, batch"),
            "{err}"
        );
    }

    #[test]
    fn pinned_threads_beyond_the_cpus_are_refused() {
        let spec = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
        let err = spec.validate("c.yaml", 1).unwrap_err().to_string();
        assert!(
            err.contains("`threads` = 2") && err.contains("pinned=false"),
            "{err}"
        );
        let mut unpinned = spec.clone();
        unpinned.pinned = false;
        assert!(unpinned.validate("c.yaml", 1).is_ok());
    }

    #[test]
    fn deferred_churn_needs_a_slot_per_writer() {
        let yaml = "name: d\nkind: deferred-churn\nobject_size: 64\nthreads: [1, 4]\npinned: false\nparams:\n  slots: 3\n";
        let spec = WorkloadSpec::from_yaml("d.yaml", yaml).unwrap();
        let err = spec.validate("d.yaml", 8).unwrap_err().to_string();
        assert!(
            err.contains("params.slots") && err.contains("largest thread count (4)"),
            "{err}"
        );
        let mut enough = spec.clone();
        enough.apply_overrides(&["slots=4".into()]).unwrap();
        assert!(enough.validate("d.yaml", 8).is_ok());
    }

    #[test]
    fn setting_one_run_length_clears_the_other() {
        let mut spec = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
        spec.apply_overrides(&["ops=5000".into()]).unwrap();
        assert_eq!((spec.ops, spec.duration), (Some(5000), None));
        let workload = spec.validate("c.yaml", 8).unwrap();
        assert_eq!(workload.length, RunLength::Ops(5000));
        spec.apply_overrides(&["duration=20ms".into()]).unwrap();
        assert_eq!(spec.ops, None);
        assert_eq!(spec.duration, Some(SpecDuration(Duration::from_millis(20))));
        // Both in the file is still refused.
        let both = format!("{CHURN}ops: 10\n");
        let err = WorkloadSpec::from_yaml("c.yaml", &both)
            .unwrap()
            .validate("c.yaml", 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn overrides_reach_fields_and_params() {
        let mut spec = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
        spec.apply_overrides(&[
            "sheaf_capacity=8".into(),
            "working_set=64".into(),
            "params.order=random".into(),
            "threads=[2]".into(),
        ])
        .unwrap();
        assert_eq!(spec.sheaf_capacity, Some(8));
        assert_eq!(spec.params.working_set, Some(64));
        assert_eq!(spec.params.order, Some(ChurnOrder::Random));
        assert_eq!(spec.threads, ThreadCounts(vec![2]));
    }

    #[test]
    fn bad_overrides_name_the_argument() {
        let mut spec = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
        let err = spec
            .apply_overrides(&["colour=blue".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--set colour=blue: unknown field `colour`"),
            "{err}"
        );
        let err = spec
            .apply_overrides(&["threads=many".into()])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--set threads=many: "), "{err}");
        let err = spec
            .apply_overrides(&["sheaf_capacity".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected key=value"), "{err}");
    }

    const MAPLE: &str = "name: maple\nkind: maple-tree\nobject_size: 256\nalign: 256\nthreads: 1\nparams:\n  readers: 1\n  stream: {ops: 1000, seed: 3}\n";

    #[test]
    fn maple_tree_resolves_its_stream_and_node_cache() {
        let spec = WorkloadSpec::from_yaml("m.yaml", MAPLE).unwrap();
        let workload = spec.validate("m.yaml", 2).unwrap();
        let Kind::MapleTree {
            stream,
            readers,
            reads_per_section,
            single_node_alloc,
        } = &workload.kind
        else {
            panic!("{:?}", workload.kind)
        };
        assert_eq!((stream.ops, stream.seed), (1000, 3));
        assert_eq!(stream.max_pages, maple::StreamSpec::default().max_pages);
        assert_eq!(
            (*readers, *reads_per_section, *single_node_alloc),
            (1, 16, false)
        );
        assert_eq!(workload.kind.os_threads(1), 2);
        let config = workload.cache_config();
        assert_eq!(config.object_size, maple::NODE_SIZE);
        assert_eq!(config.align, maple::NODE_ALIGN);
    }

    #[test]
    fn tree_kinds_refuse_other_object_sizes() {
        for (from, to, field) in [
            ("object_size: 256", "object_size: 64", "`object_size` = 64"),
            ("align: 256", "align: 8", "`align` = 8"),
        ] {
            let spec = WorkloadSpec::from_yaml("m.yaml", &MAPLE.replace(from, to)).unwrap();
            let err = spec.validate("m.yaml", 2).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "m.yaml: {field}: expected 256 for kind `maple-tree`"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn a_bad_stream_names_the_nested_field() {
        let text = MAPLE.replace("{ops: 1000, seed: 3}", "{fixed_fraction: 2.0}");
        let spec = WorkloadSpec::from_yaml("m.yaml", &text).unwrap();
        let err = spec.validate("m.yaml", 2).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "m.yaml: `params.stream.fixed_fraction` = 2.0: expected between 0 and 1"
            ),
            "{err}"
        );
        let text = MAPLE.replace("{ops: 1000, seed: 3}", "{colour: blue}");
        let err = WorkloadSpec::from_yaml("m.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn nested_overrides_reach_the_stream() {
        let mut spec = WorkloadSpec::from_yaml("m.yaml", MAPLE).unwrap();
        spec.apply_overrides(&["stream.ops=77".into(), "params.stream.mix.brk=9".into()])
            .unwrap();
        let stream = spec.params.stream.as_ref().unwrap();
        assert_eq!((stream.ops, stream.seed, stream.mix.brk), (77, 3, 9));
    }

    fn trace_spec(dir: &Path, trace: &str) -> (String, WorkloadSpec) {
        let file = dir.join("t.yaml").display().to_string();
        let text = format!(
            "name: t\nkind: trace-replay\nobject_size: 256\nalign: 256\nparams:\n  trace: {trace}\n"
        );
        let spec = WorkloadSpec::from_yaml(&file, &text).unwrap();
        (file, spec)
    }

    #[test]
    fn trace_replay_reads_its_trace_relative_to_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("traces")).unwrap();
        std::fs::write(
            dir.path().join("traces/ok.trace"),
            "sheaftrace 1\n0 mmap 7f0000000000 2000 rw-\n0 exit\n",
        )
        .unwrap();
        let (file, spec) = trace_spec(dir.path(), "traces/ok.trace");
        let workload = spec.validate(&file, 2).unwrap();
        assert_eq!(
            workload.kind,
            Kind::TraceReplay {
                trace: std::path::absolute(dir.path().join("traces/ok.trace")).unwrap(),
                single_node_alloc: false
            }
        );
    }

    #[test]
    fn a_missing_or_bad_trace_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let (file, spec) = trace_spec(dir.path(), "missing.trace");
        let err = spec.validate(&file, 2).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{file}: `params.trace` = "))
                && err.contains("missing.trace: cannot read the trace"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("bad.trace"),
            "sheaftrace 1\n0 mmap 7f0000000000 2000 rw-\n0 mmap zz 1000 r--\n",
        )
        .unwrap();
        let (file, spec) = trace_spec(dir.path(), "bad.trace");
        let err = spec.validate(&file, 2).unwrap_err().to_string();
        assert!(
            err.contains("bad.trace: trace line 3: start `zz` is not a hexadecimal number"),
            "{err}"
        );
        let mut spec = spec;
        spec.params.trace = None;
        let err = spec.validate(&file, 2).unwrap_err().to_string();
        assert!(err.contains("`params.trace` = (missing)"), "{err}");
    }

    #[test]
    fn hogs_parse_override_and_are_range_checked() {
        let spec = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
        assert_eq!(spec.hogs, 0, "no busy threads unless asked for");
        let spec = WorkloadSpec::from_yaml("c.yaml", &format!("{CHURN}hogs: 2\n")).unwrap();
        assert_eq!(spec.hogs, 2);
        assert!(spec.validate("c.yaml", 2).is_ok());
        let mut set = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
        set.apply_overrides(&["hogs=3".into()]).unwrap();
        assert_eq!(set.hogs, 3);
        let err = set
            .apply_overrides(&["hogs=-1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--set hogs=-1: ") && err.contains("u32"),
            "{err}"
        );
        let err = WorkloadSpec::from_yaml("c.yaml", &format!("{CHURN}hogs: lots\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("hogs: invalid type"), "{err}");
        let mut many = spec.clone();
        many.hogs = MAX_HOGS + 1;
        let err = many.validate("c.yaml", 2).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("c.yaml: `hogs` = {}: expected", MAX_HOGS + 1)),
            "{err}"
        );
    }

    #[test]
    fn producer_consumer_batches_fit_twice_in_the_ring() {
        let pc = |params: &str| {
            let text = format!(
                "name: pc\nkind: producer-consumer\nobject_size: 64\npinned: false\nparams: {params}\n"
            );
            WorkloadSpec::from_yaml("pc.yaml", &text)
                .unwrap()
                .validate("pc.yaml", 2)
        };
        assert_eq!(
            pc("{}").unwrap().kind,
            Kind::ProducerConsumer {
                queue: 1024,
                batch: 64
            }
        );
        assert!(pc("{queue: 64, batch: 32}").is_ok());
        let err = pc("{queue: 64, batch: 33}").unwrap_err().to_string();
        assert!(
            err.contains("`params.batch` = 33: expected at most half of params.queue (32)"),
            "{err}"
        );
        let err = pc("{queue: 1, batch: 1}").unwrap_err().to_string();
        assert!(
            err.contains("`params.queue` = 1: expected at least 2"),
            "{err}"
        );
    }

    #[test]
    fn durations_parse_and_print() {
        for (text, ms) in [("250ms", 250), ("2s", 2000), ("1.5s", 1500), ("1m", 60_000)] {
            let d: SpecDuration = text.parse().unwrap();
            assert_eq!(d.0, Duration::from_millis(ms), "{text}");
        }
        assert_eq!(
            SpecDuration(Duration::from_millis(250)).to_string(),
            "250ms"
        );
        assert!("fast".parse::<SpecDuration>().is_err());
        assert!("2h".parse::<SpecDuration>().is_err());
    }
}
