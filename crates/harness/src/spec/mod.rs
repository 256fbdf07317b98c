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
//!
//! Where things live:
//! - this file: [`WorkloadSpec`] (the top-level fields, with their defaults), the three steps
//!   and [`Workload`];
//! - `kinds`: each kind and each of its parameters, declared once (doc, type, default,
//!   checks), from which `declare` generates [`KindName`], [`Params`] and [`Kind`]; a new
//!   parameter is one line there;
//! - `rules`: the defaults and checks a parameter's declaration can name (`positive`,
//!   `at_most`, `or`, `.check(..)`, the stream and the trace file);
//! - `values`: durations and thread counts as written in a spec; `error`: [`SpecError`].

mod declare;
mod error;
mod kinds;
mod rules;
#[cfg(test)]
mod tests;
mod values;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use object_alloc::{CacheConfig, LimitChange, MAX_OBJECT_SIZE, PAGE_SIZE};

pub use error::SpecError;
pub use kinds::{ChurnOrder, Kind, KindName, Lifetime, Params};
pub use values::{SpecDuration, ThreadCounts};

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
fn default_barn_partial() -> bool {
    CacheConfig::new(8).barn_partial
}

fn default_rcu_hold_ticks() -> u32 {
    CacheConfig::new(8).rcu_hold_ticks
}
fn default_seed() -> u64 {
    0x5eaf_5eed
}
fn default_runs() -> u32 {
    5
}
fn default_sample_interval() -> SpecDuration {
    SpecDuration(DEFAULT_SAMPLE_INTERVAL)
}

/// The memory sampler's interval when a spec gives none.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

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
    /// sheaf: a `NOWAIT` allocation may not refill the CPU's sheaf (the model of a kernel
    /// regression; `CacheConfig::nowait_no_refill`). Designs without sheaves ignore it.
    #[serde(default)]
    pub nowait_no_refill: bool,
    /// sheaf: prefills top up through the barn's partial sheaf (`CacheConfig::barn_partial`).
    /// Designs without sheaves ignore it.
    #[serde(default = "default_barn_partial")]
    pub barn_partial: bool,
    /// sheaf: full `rcu_free` sheaves back from a grace period that find the barn at its
    /// limit are held for up to this many hand-over ticks (`CacheConfig::rcu_hold_ticks`; 0:
    /// flushed at once). Designs without sheaves ignore it.
    #[serde(default = "default_rcu_hold_ticks")]
    pub rcu_hold_ticks: u32,
    /// sheaf: a refill from the slabs takes its objects from one slab where it can
    /// (`CacheConfig::refill_one_slab`). Designs without sheaves ignore it.
    #[serde(default)]
    pub refill_one_slab: bool,
    /// sheaf: a run-time change (`phases`) first waits for the deferred frees and flushes
    /// every sheaf to the slabs, the flush-everything way (`CacheConfig::resize_by_flush`).
    /// Designs without sheaves ignore it.
    #[serde(default)]
    pub resize_by_flush: bool,
    /// Run-time changes of the cache's sheaf capacity and barn limits during each measured
    /// run, in order of time (see [`Phase`]). Each measured run starts from the spec's own
    /// values (restored between runs, outside the measured time) and applies every phase at
    /// its offset; the warm-up applies none. Needs a `duration` (a counted run has no known
    /// length) and a design that supports changes (`ObjectAlloc::LIMIT_CHANGES`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
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
    /// Interval of the memory sampler that records the result's `timeline` (RSS, slab
    /// pages, live and cached objects, the counters that moved): at least the clock's
    /// resolution; shorter intervals cost the sampler's CPU more time.
    #[serde(default = "default_sample_interval")]
    pub sample_interval: SpecDuration,
    /// The kind's parameters.
    #[serde(default)]
    pub params: Params,
}

/// One run-time change of a `phases:` list: at `at` into each measured run, a non-measured
/// control thread (the engine's coordinator) sets the fields given; the others keep their
/// value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Offset from the start of the measured run: after the run's start and the previous
    /// phase, before the run's end.
    pub at: SpecDuration,
    /// The new objects per sheaf (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheaf_capacity: Option<usize>,
    /// The new most full sheaves per barn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barn_max_full: Option<usize>,
    /// The new most empty sheaves per barn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barn_max_empty: Option<usize>,
}

impl Phase {
    /// The change the phase asks for.
    pub fn change(&self) -> LimitChange {
        LimitChange {
            sheaf_capacity: self.sheaf_capacity,
            barn_max_full: self.barn_max_full,
            barn_max_empty: self.barn_max_empty,
        }
    }
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
            .with_deferred_batching(self.spec.deferred_batching)
            .with_nowait_no_refill(self.spec.nowait_no_refill)
            .with_barn_partial(self.spec.barn_partial)
            .with_rcu_hold_ticks(self.spec.rcu_hold_ticks)
            .with_refill_one_slab(self.spec.refill_one_slab)
            .with_resize_by_flush(self.spec.resize_by_flush);
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

    /// Shortens the spec for a smoke run: 20 ms warm-up, 2 runs of 50 ms; `phases` keep
    /// their places in the run (their offsets scaled by the same factor as its length).
    pub fn make_quick(&mut self) {
        const QUICK: Duration = Duration::from_millis(50);
        if let Some(SpecDuration(run)) = self.duration
            && !run.is_zero()
        {
            let factor = QUICK.as_secs_f64() / run.as_secs_f64();
            for phase in &mut self.phases {
                phase.at = SpecDuration(phase.at.0.mul_f64(factor));
            }
        }
        self.warmup = SpecDuration(Duration::from_millis(20));
        self.duration = Some(SpecDuration(QUICK));
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
        let resolution = crate::timer::resolution();
        if self.sample_interval.0.is_zero() || self.sample_interval.0 < resolution {
            return Err(invalid(
                "sample_interval",
                &self.sample_interval,
                &format!(
                    "a duration of at least the clock's resolution ({}ns), such as 10ms",
                    resolution.as_nanos()
                ),
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
        self.validate_phases(file, length)?;
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
        let kind = Kind::resolve(self, file)?;
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
    /// Checks `phases`: each one after the run's start and the previous one, before the run's
    /// end, changing something valid, on a cache that has sheaves.
    fn validate_phases(&self, file: &str, length: RunLength) -> Result<(), SpecError> {
        let invalid =
            |field: String, value: &dyn fmt::Display, expected: String| SpecError::Invalid {
                file: file.to_owned(),
                field,
                value: value.to_string(),
                expected,
            };
        let mut previous = Duration::ZERO;
        for (i, phase) in self.phases.iter().enumerate() {
            let at = phase.at.0;
            let RunLength::Duration(run) = length else {
                return Err(invalid(
                    format!("phases[{i}].at"),
                    &phase.at,
                    "a run with a `duration` (a run of `ops` has no known length to place a \
                     phase in)"
                        .into(),
                ));
            };
            if at <= previous {
                let after = if i == 0 {
                    "the start of the run (0s)".to_owned()
                } else {
                    format!("phases[{}].at ({})", i - 1, SpecDuration(previous))
                };
                return Err(invalid(
                    format!("phases[{i}].at"),
                    &phase.at,
                    format!("a time after {after}"),
                ));
            }
            if at >= run {
                return Err(invalid(
                    format!("phases[{i}].at"),
                    &phase.at,
                    format!(
                        "a time before the end of the run (duration {})",
                        SpecDuration(run)
                    ),
                ));
            }
            previous = at;
            let change = phase.change();
            let Some((field, value)) = change.first_field() else {
                return Err(invalid(
                    format!("phases[{i}]"),
                    &"{}",
                    "at least one of sheaf_capacity, barn_max_full, barn_max_empty".into(),
                ));
            };
            if self.sheaf_capacity == Some(0) {
                return Err(invalid(
                    format!("phases[{i}].{field}"),
                    &value,
                    "no change: the spec's sheaf_capacity 0 means a cache without sheaves".into(),
                ));
            }
            if let Err(e) = change.validate() {
                return Err(invalid(
                    format!("phases[{i}].{}", e.field),
                    &e.value,
                    e.expected,
                ));
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
const TOP_LEVEL_FIELDS: [&str; 24] = [
    "name",
    "kind",
    "suite",
    "object_size",
    "align",
    "sheaf_capacity",
    "barn_max_full",
    "barn_max_empty",
    "deferred_batching",
    "nowait_no_refill",
    "barn_partial",
    "rcu_hold_ticks",
    "refill_one_slab",
    "resize_by_flush",
    "phases",
    "threads",
    "pinned",
    "warmup",
    "duration",
    "ops",
    "seed",
    "runs",
    "hogs",
    "sample_interval",
];

/// Joins a possibly multi-line message into one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
