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
//!   the release of the threads to the end of the last one, one sample per measured run;
//! - **latency**: one sample per unit of work (a batch of operations, one burst, one write;
//!   see [`spec::Kind::sample_unit`]), including one clock read whose cost is measured at
//!   start-up and reported ([`timer`]); the range-tree kinds (`maple-tree`, `trace-replay`)
//!   time each tree write alone, one sample per write;
//! - **counters**: per-thread `perf_event` counters over the measured runs, or `unsupported`
//!   with the reason ([`counters`]).

pub mod benchmark;
pub mod chart;
pub mod counters;
pub mod histogram;
pub mod machine;
pub mod result;
pub mod spec;
pub mod stats;
pub mod steal;
pub mod timer;
pub mod warnings;

pub use benchmark::{MeasureError, MeasureOptions, measure};
pub use result::{Measurement, ResultFile};
pub use spec::{SpecError, Workload, WorkloadSpec};
