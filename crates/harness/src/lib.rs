//! The workload engine of `sheafbench`: pinned threads, timing, histograms, counters, memory
//! and the result model, generic over [`ObjectAlloc`](object_alloc::ObjectAlloc).
//!
//! A measurement goes: [`spec`] (parse a YAML workload, apply `--set` overrides, validate)
//! → [`benchmark::measure`] (one cache of one design, threads spawned once and pinned,
//! warm-up, measured runs, per-thread histograms and counters merged) → [`result`] (the JSON
//! model, written atomically). The harness names no allocator: the `sheafbench`
//! CLI picks the monomorphized [`benchmark::measure::<A>`](benchmark::measure) by name.
//!
//! What the figures mean:
//! - **throughput**: operations (see [`spec::Kind::op_unit`]) per second of wall time, from
//!   the release of the threads to the end of the last one, one sample per measured run
//!   (`maple-tree` leaves each writer's per-pass model check and emptying store out of it);
//! - **latency**: one sample per unit of work (a batch of operations, one burst, one write;
//!   see [`spec::Kind::sample_unit`]), including one clock read and the engine's bookkeeping
//!   between units, both measured at start-up and reported ([`timer`],
//!   `latency_ns.bookkeeping_ns`); the range-tree kinds (`maple-tree`, `trace-replay`)
//!   time each tree write alone, one sample per write;
//! - **counters**: per-thread `perf_event` counters over the measured runs, or `unsupported`
//!   with the reason ([`counters`]).
//!
//! # Module map
//!
//! - [`spec`]: the workload file. `spec/kinds.rs` declares every kind and each of its
//!   parameters once (doc, type, default, checks); `spec/declare.rs` generates the name
//!   lists, the file's `params:` and the resolved [`spec::Kind`] from it; `spec/rules.rs`
//!   holds the defaults and checks a declaration names. Invariant: a [`Workload`] exists only
//!   after every field and parameter passed validation, so the engine never checks a value.
//! - [`benchmark`]: one measurement. `mod.rs` builds a kind's threads and turns what they
//!   found into a [`Measurement`]; `engine.rs` spawns, pins and releases them phase by phase
//!   (every thread is spawned once, and its histogram sized before the warm-up so recording
//!   a sample never allocates); `kinds.rs` (`churn`, `burst`, `prefill-burst`),
//!   `producer_consumer.rs`, `deferred.rs` (`deferred-churn`), `tree_kinds.rs`
//!   (`maple-tree`, `trace-replay`) and `lifetimes.rs` say what each kind's threads do, each
//!   object held by exactly one owner and freed once; `hogs.rs` runs busy threads beside a
//!   measurement, `sched.rs` reads the threads' scheduler times; `sampler.rs` is the memory
//!   sampler thread (the result's timeline) and `memory.rs` turns its readings, the readings
//!   after the work and the locality probe into the fragmentation, retention and locality
//!   figures.
//! - [`cpus`]: which CPUs a pinned measurement uses (one per physical core before SMT
//!   siblings) and pinning a thread to one.
//! - [`timer`]: the clock and its measured cost; [`histogram`]: per-thread latency histograms
//!   with fixed bounds, so recording never allocates; [`counters`]: per-thread `perf_event`
//!   counters and their fallbacks; [`steal`]: hypervisor steal time over a measurement.
//! - [`result`]: the JSON result model, written atomically; [`machine`]: what a result was
//!   measured on, with its [`environment`] (rseq, tunables, governor, SMT, THP, ASLR, NUMA,
//!   cgroup CPU limit); [`warnings`]: the caveats attached to a figure, each with what to do.

pub mod benchmark;
pub mod chart;
pub mod counters;
pub mod cpus;
pub mod environment;
pub mod histogram;
pub mod machine;
pub mod result;
pub mod spec;
pub mod stats;
pub mod steal;
pub mod summary;
pub mod timer;
pub mod warnings;

pub use benchmark::{MeasureError, MeasureOptions, measure};
pub use result::{Measurement, ResultFile};
pub use spec::{SpecError, Workload, WorkloadSpec};
