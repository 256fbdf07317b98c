//! The workload kinds and their parameters, each declared once below: a kind's name, what it
//! does, and for each parameter its doc, resolved type, default and checks (a [`Rule`]).
//! [`declare_kinds!`] makes from this [`KindName`], [`Params`] (the spec's `params:` as
//! written) and [`Kind`] (resolved). Adding a parameter to a kind is one line in its block
//! (with `written as` if no kind before it takes a parameter of that name); the engine then
//! reads it from the kind's [`Kind`] variant.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::declare::declare_kinds;
use super::rules::{
    Param, Rule, at_most, lifetime, object_sizes, or, positive, stream, trace_file,
};
use super::{SpecError, WorkloadSpec};

declare_kinds! {
    resolve(spec, file);

    /// Alloc/free pairs over a per-thread working set, in LIFO or random order.
    Churn = "churn", "free+alloc pairs over a per-thread working set" {
        /// Order of frees.
        order: ChurnOrder = or(ChurnOrder::Lifo), written as ChurnOrder, values "lifo|random";
        /// Objects each thread keeps live.
        working_set: usize = positive(1024, 1 << 24), written as usize;
        /// Free+alloc pairs per latency sample.
        batch: usize = positive(256, 1 << 20), written as usize;
        /// Caches of the design that each thread's pairs go to in turn (round robin), each
        /// with a working set of its own: a thread that uses several caches, as the kernel
        /// uses one for maple nodes and one for VMAs. A design without per-cache state
        /// serves every one of them from the same heap. LIFO order only.
        caches: usize = positive(1, 64).check(
            |&caches| caches == 1 || order == ChurnOrder::Lifo,
            || "1 unless params.order is lifo".into(),
        ), written as usize;
    }

    /// `burst` allocations then as many frees, crossing the sheaf capacity.
    Burst = "burst", "`burst` allocations then `burst` frees, crossing the sheaf capacity" {
        /// Objects allocated then freed per burst.
        burst: usize = positive(256, 1 << 20), written as usize;
    }

    /// Objects allocated on one thread and freed on another (remote frees).
    ProducerConsumer = "producer-consumer",
        "per pair, one thread allocates and another frees (remote frees), handing objects over in batches through a bounded ring"
    {
        #[check(min_object_size(spec, file, "objects carry a sequence number"))]
        /// Capacity of each pair's ring of pointers.
        queue: usize = positive(1024, 1 << 20).check(
            |&queue| queue >= 2,
            || "at least 2 (the ring holds two hand-off batches)".into(),
        ), written as usize;
        /// Objects per hand-off and per latency sample (producer side): the producer
        /// allocates `batch` objects, then hands them over with one release of the ring's
        /// tail.
        batch: usize = positive(64, 1 << 20).check(
            |&batch| batch <= queue / 2,
            || format!(
                "at most half of params.queue ({}): the producer fills one hand-off batch while the consumer frees another",
                queue / 2
            ),
        );
    }

    /// Allocations that may not block, freed on other CPUs: the block layer's pattern.
    CrossCpu = "cross-cpu",
        "per pair, a pinned producer allocates (with NOWAIT if `nowait`) and hands objects over in batches through a ring to a consumer pinned on another CPU, which frees them"
    {
        #[check(min_object_size(spec, file, "objects carry a sequence number"))]
        /// Capacity of each pair's ring of pointers.
        ring: usize = positive(1024, 1 << 20).check(
            |&ring| ring >= 2,
            || "at least 2 (the ring holds two hand-off batches)".into(),
        ), written as usize;
        /// Objects per hand-off and per latency sample (producer side).
        batch: usize = positive(64, 1 << 20).check(
            |&batch| batch <= ring / 2,
            || format!(
                "at most half of params.ring ({}): the producer fills one hand-off batch while the consumer frees another",
                ring / 2
            ),
        );
        /// The producers allocate with `NOWAIT` (no new slab; a failed allocation is retried
        /// without it and counted as `nowait_fallbacks`).
        nowait: bool = or(true), written as bool;
    }

    /// The maple-tree pattern without the tree: prefill a worst case, use a few, return.
    PrefillBurst = "prefill-burst",
        "prefill `reserve`, allocate `used` from the sheaf, return it, free the used objects"
    {
        /// Objects reserved by each prefill (the worst case).
        reserve: usize = positive(13, 1 << 16), written as usize;
        /// Objects taken from each prefilled sheaf.
        used: usize = or(3).check(
            |&used| used <= reserve,
            || format!("at most params.reserve ({reserve})"),
        ), written as usize;
        /// Writes per latency sample.
        batch: usize = positive(16, 1 << 20);
    }

    /// Writers replace published objects and free the old ones deferred; readers read them.
    DeferredChurn = "deferred-churn",
        "writers replace published objects (each its own share of the slots, published with a release store) and free the old ones deferred; readers read them in read-side sections"
    {
        #[check(min_object_size(spec, file, "objects carry a sentinel"))]
        /// Published objects shared by writers and readers.
        slots: usize = positive(1024, 1 << 24).check(
            |&slots| slots >= largest_thread_count(spec),
            || format!(
                "at least the largest thread count ({}): each writer owns its share of the slots",
                largest_thread_count(spec)
            ),
        ), written as usize;
        /// Reader threads, beside the `threads` writers.
        readers: usize = at_most(1, 1024), written as usize;
        /// Replacements per latency sample.
        batch: usize = positive(64, 1 << 20);
        /// Objects a reader reads in one read-side section.
        reads_per_section: usize = positive(16, 1 << 20), written as usize;
    }

    /// Writes of a generated address-space operation stream to a range tree like the
    /// kernel's maple tree (worst-case prefill per write), with concurrent readers.
    MapleTree = "maple-tree",
        "writes of a generated mmap/munmap/mprotect/brk stream to a maple-like range tree, worst-case prefill per write, readers looking up addresses"
    {
        #[check(check_node_geometry(spec, file))]
        /// The generated operation stream ([`maple::StreamSpec`]: every field defaulted,
        /// unknown fields refused). Writer `t` uses the stream's seed plus `t`.
        stream: maple::StreamSpec = stream(), written as maple::StreamSpec;
        /// Reader threads, beside the `threads` writers.
        readers: usize = at_most(1, 1024);
        /// Lookups per read-side section.
        reads_per_section: usize = positive(16, 1 << 20);
        /// A write whose worst case is one node takes it with a plain allocation instead of
        /// a prefilled sheaf, as the kernel does.
        single_node_alloc: bool = or(false), written as bool;
    }

    /// Replays a recorded address-space trace into range trees, one per address space.
    TraceReplay = "trace-replay",
        "replays a recorded address-space trace into maple-like range trees, one per address space"
    {
        #[check(check_node_geometry(spec, file))]
        /// The trace file: written relative to the spec file's directory, resolved to an
        /// absolute path (parsed once at validation, read again by the measuring process
        /// before timing).
        trace: PathBuf = trace_file(), written as String;
        /// A write whose worst case is one node takes it with a plain allocation instead of
        /// a prefilled sheaf, as the kernel does.
        single_node_alloc: bool = or(false);
    }

    /// Objects that live for a drawn number of ticks, in cycles that ramp a working set
    /// up, hold it and drain it, over several object sizes (one cache per size).
    Lifetimes = "lifetimes",
        "per thread, cycles of ramp (the working set grows to `working_set`), hold and drain (to nothing); each tick frees the objects whose drawn lifetime ended and tops the set up (or drains it), objects of the `sizes` (one cache each), freed on a helper thread with `remote_frees`"
    {
        /// Object sizes in bytes, one cache each; every allocation picks one at random
        /// (default: the spec's `object_size` alone).
        sizes: Vec<usize> = object_sizes(spec.object_size), written as Vec<usize>;
        /// The lifetime distribution, in ticks: `{distribution: exponential, mean}` or
        /// `{distribution: pareto, shape, scale}` (shape above 1, so that the mean is finite).
        lifetime: Lifetime = lifetime(), written as Lifetime;
        /// Objects each thread holds during the hold phase.
        working_set: usize = positive(4096, 1 << 22);
        /// Ticks over which the working set grows from nothing to `working_set`.
        ramp: usize = positive(1024, 1 << 30), written as usize;
        /// Ticks the working set is held, dying objects replaced.
        hold: usize = positive(8192, 1 << 30), written as usize;
        /// Ticks over which the working set shrinks to nothing (the objects closest to
        /// their end first); a cycle must drain.
        drain: usize = at_most(1024, 1 << 30).check(
            |&drain| drain > 0,
            || "at least 1 tick: a cycle that never drains never gives its memory back".into(),
        ), written as usize;
        /// Objects are freed by a helper thread per worker (handed over in batches), not
        /// by the thread that allocated them.
        remote_frees: bool = or(false), written as bool;
        /// Ticks per latency sample.
        batch: usize = positive(64, 1 << 20);
    }
}

/// How long a `lifetimes` object lives, in ticks of its thread.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "distribution", rename_all = "snake_case", deny_unknown_fields)]
pub enum Lifetime {
    /// Exponential with mean `mean` ticks.
    Exponential {
        /// The mean lifetime in ticks, at least 1.
        mean: f64,
    },
    /// Pareto (type I): at least `scale` ticks, tail index `shape` (above 1).
    Pareto {
        /// Tail index: the larger, the lighter the tail; above 1 so the mean is finite.
        shape: f64,
        /// The shortest lifetime in ticks, at least 1.
        scale: f64,
    },
}

impl Lifetime {
    /// A lifetime drawn from `u`, uniform in (0, 1]: whole ticks, at least 1.
    pub fn draw(&self, u: f64) -> u64 {
        let ticks = match *self {
            Lifetime::Exponential { mean } => -mean * u.ln(),
            Lifetime::Pareto { shape, scale } => scale / u.powf(1.0 / shape),
        };
        // Far tails are cut at about 2^40 ticks (hours of a fast run): such an object
        // outlives every run and is freed by the drain.
        ticks.clamp(1.0, (1u64 << 40) as f64).ceil() as u64
    }

    /// The mean lifetime in ticks.
    pub fn mean(&self) -> f64 {
        match *self {
            Lifetime::Exponential { mean } => mean,
            Lifetime::Pareto { shape, scale } => shape * scale / (shape - 1.0),
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

/// The most worker threads the spec measures with.
fn largest_thread_count(spec: &WorkloadSpec) -> usize {
    spec.threads.0.iter().copied().max().unwrap_or(1) as usize
}

/// Kinds whose objects carry a word need objects of at least 8 bytes.
fn min_object_size(spec: &WorkloadSpec, file: &str, why: &str) -> Result<(), SpecError> {
    if spec.object_size < 8 {
        return Err(SpecError::Invalid {
            file: file.to_owned(),
            field: "object_size".to_owned(),
            value: spec.object_size.to_string(),
            expected: format!("at least 8 for {} ({why})", spec.kind),
        });
    }
    Ok(())
}

/// The tree kinds' objects are tree nodes: their size and alignment are fixed.
fn check_node_geometry(spec: &WorkloadSpec, file: &str) -> Result<(), SpecError> {
    for (field, value, expected) in [
        ("object_size", spec.object_size, maple::NODE_SIZE),
        ("align", spec.align, maple::NODE_ALIGN),
    ] {
        if value != expected {
            return Err(SpecError::Invalid {
                file: file.to_owned(),
                field: field.to_owned(),
                value: value.to_string(),
                expected: format!(
                    "{expected} for kind `{}` (the objects are tree nodes of {} bytes aligned to {})",
                    spec.kind,
                    maple::NODE_SIZE,
                    maple::NODE_ALIGN
                ),
            });
        }
    }
    Ok(())
}

impl Kind {
    /// OS threads a measurement with `threads` worker threads starts.
    pub fn os_threads(&self, threads: u32) -> usize {
        let threads = threads as usize;
        match self {
            Kind::ProducerConsumer { .. } | Kind::CrossCpu { .. } => 2 * threads,
            Kind::DeferredChurn { readers, .. } | Kind::MapleTree { readers, .. } => {
                threads + readers
            }
            Kind::Lifetimes {
                remote_frees: true, ..
            } => 2 * threads,
            _ => threads,
        }
    }

    /// What one operation is, for throughput figures.
    pub fn op_unit(&self) -> &'static str {
        match self {
            Kind::Churn { .. } => "free+alloc pair",
            Kind::Burst { .. } => "object allocated and freed",
            Kind::ProducerConsumer { .. } => "object allocated, passed and freed remotely",
            Kind::CrossCpu { .. } => "object allocated, passed to another CPU and freed there",
            Kind::PrefillBurst { .. } => "prefill burst (one write)",
            Kind::DeferredChurn { .. } => "replacement (alloc, publish, free_deferred)",
            Kind::MapleTree { .. } | Kind::TraceReplay { .. } => "write",
            Kind::Lifetimes { .. } => "allocation or free",
        }
    }

    /// What one latency sample covers.
    pub fn sample_unit(&self) -> String {
        match *self {
            Kind::Churn {
                batch,
                order,
                caches,
                ..
            } => {
                let order = match order {
                    ChurnOrder::Lifo => "LIFO",
                    ChurnOrder::Random => "random-order",
                };
                if caches > 1 {
                    format!(
                        "batch of {batch} {order} free+alloc pairs, round robin over {caches} caches"
                    )
                } else {
                    format!("batch of {batch} {order} free+alloc pairs")
                }
            }
            Kind::Burst { burst } => format!("burst of {burst} allocs then {burst} frees"),
            Kind::ProducerConsumer { batch, .. } => {
                format!("batch of {batch} allocs handed to the consumer (producer side)")
            }
            Kind::CrossCpu { batch, nowait, .. } => format!(
                "batch of {batch} allocs{} handed to the consumer (producer side)",
                if nowait { " (NOWAIT)" } else { "" }
            ),
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
            Kind::Lifetimes {
                batch,
                remote_frees,
                ..
            } => format!(
                "{batch} ticks (frees of ended lifetimes{}, allocations topping the working set up)",
                if remote_frees {
                    " handed to the helper"
                } else {
                    ""
                }
            ),
        }
    }
}
