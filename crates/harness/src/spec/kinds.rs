//! The workload kinds and their parameters: as written in a spec ([`Params`]) and resolved
//! ([`Kind`]).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    pub(super) fn params(self) -> &'static [&'static str] {
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
    pub(super) fn given(&self) -> Vec<&'static str> {
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
    pub(super) const NAMES: [&'static str; 13] = [
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
