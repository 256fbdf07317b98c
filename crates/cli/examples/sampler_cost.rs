//! What the memory sampler costs the measured threads: one spec measured with the sampler on
//! and off in interleaved rounds (the order swapped every round), on one design, and the
//! paired ratios on/off with their bootstrap intervals, of the throughput and of the
//! operations per CPU-second of the measured threads (`task-clock`). On a machine whose
//! other processes compete for the CPUs, the first mostly measures the scheduler (a thread
//! that wakes every few milliseconds changes which runnable task gets a CPU); the second
//! leaves that out and keeps what the sampler does to the measured threads' own work (its
//! locks and cache lines). The sampler's own CPU time, the rest of its cost where it shares
//! a CPU with them, is printed as a share of the measured wall time.
//!
//! ```text
//! cargo run --release -p sheafbench --example sampler_cost -- sheaf workloads/churn-random.yaml 10 300ms [interval]
//! ```
//!
//! Arguments: the design, the spec, the rounds (default 10), each measured run's length
//! (default 300ms), the sampler's interval (default the spec's). Each round measures one
//! warm-up and one run per setting, in this process, at the spec's first thread count.
//! Prints each round's throughputs and the geometric mean of the on/off ratios with its
//! 95% interval (below 1: the sampler slows the measured threads down).

#![allow(dead_code, unreachable_pub, missing_docs)] // `registry.rs` is shared with the binary

use std::path::Path;
use std::process::ExitCode;

use harness::counters::CounterReading;
use harness::spec::{SpecDuration, WorkloadSpec};
use harness::stats::{Bootstrap, geometric_mean};
use harness::{MeasureOptions, Workload, measure};
use object_alloc::ObjectAlloc;

#[path = "../src/registry.rs"]
mod registry;

use registry::{AllocVisitor, with_allocator};

/// One measurement's figures.
#[derive(Clone, Copy, Debug)]
struct Figures {
    throughput: f64,
    per_cpu_second: f64,
    /// The sampler's reading time over the time it ran.
    sampler_share: f64,
}

struct Rounds<'a> {
    workload: &'a Workload,
    rounds: u32,
}

impl AllocVisitor for Rounds<'_> {
    type Output = Vec<(Figures, Figures)>;

    fn visit<A: ObjectAlloc>(self) -> Vec<(Figures, Figures)> {
        let threads = self.workload.spec.threads.0[0];
        let run = |timeline: bool| {
            let options = MeasureOptions {
                timeline,
                ..MeasureOptions::default()
            };
            let m = measure::<A>(self.workload, threads, &options).expect("the measurement runs");
            let cpu_ns = match m.counters.get("task-clock") {
                Some(CounterReading::Ok { value, .. }) => *value,
                _ => f64::NAN,
            };
            let sampler_share = m.timeline.as_ref().map_or(0.0, |t| {
                let span = t.samples.last().map_or(0.0, |s| s.t).max(1e-9);
                t.sampling_ns as f64 * 1e-9 / span
            });
            Figures {
                throughput: m.throughput_ops_per_s,
                per_cpu_second: m.ops as f64 / (cpu_ns * 1e-9),
                sampler_share,
            }
        };
        (0..self.rounds)
            .map(|round| {
                if round % 2 == 0 {
                    let on = run(true);
                    (on, run(false))
                } else {
                    let off = run(false);
                    (run(true), off)
                }
            })
            .collect()
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(design), Some(spec_path)) = (args.first(), args.get(1)) else {
        eprintln!("usage: sampler_cost DESIGN SPEC [ROUNDS] [DURATION] [INTERVAL]");
        return ExitCode::from(2);
    };
    let rounds: u32 = args.get(2).map_or(10, |r| r.parse().expect("rounds"));
    let mut spec = WorkloadSpec::from_file(Path::new(spec_path)).expect("a spec");
    let duration: SpecDuration = args
        .get(3)
        .map_or("300ms", String::as_str)
        .parse()
        .expect("a duration");
    spec.duration = Some(duration);
    spec.ops = None;
    spec.runs = 1;
    if let Some(interval) = args.get(4) {
        spec.sample_interval = interval.parse().expect("an interval");
    }
    let workload = spec
        .validate(spec_path, harness::machine::available_cpus())
        .expect("a valid spec");
    let Some(pairs) = with_allocator(
        design,
        Rounds {
            workload: &workload,
            rounds,
        },
    ) else {
        eprintln!("unknown design `{design}`");
        return ExitCode::from(2);
    };
    for (round, (on, off)) in pairs.iter().enumerate() {
        println!(
            "round {round}: throughput on {:.2} off {:.2} M/s; per CPU-second on {:.2} off {:.2} M; sampler {:.3}% of its time",
            on.throughput / 1e6,
            off.throughput / 1e6,
            on.per_cpu_second / 1e6,
            off.per_cpu_second / 1e6,
            on.sampler_share * 100.0
        );
    }
    let paired = |what: &str, figure: fn(&Figures) -> f64| {
        let ratios: Vec<f64> = pairs
            .iter()
            .map(|(on, off)| figure(on) / figure(off))
            .collect();
        let estimate = geometric_mean(&ratios).unwrap_or(f64::NAN);
        match Bootstrap::with_seed(0x5A3B_1E00).geometric_mean(&ratios) {
            Some(i) => println!("{what} on/off {estimate:.4} [{:.4}..{:.4}]", i.low, i.high),
            None => println!("{what} on/off {estimate:.4} (too few rounds for an interval)"),
        }
    };
    println!(
        "{design} {} at {} threads, {rounds} rounds, interval {}:",
        workload.spec.name, workload.spec.threads.0[0], workload.spec.sample_interval
    );
    paired("throughput", |f| f.throughput);
    paired("operations per CPU-second", |f| f.per_cpu_second);
    let shares: Vec<f64> = pairs.iter().map(|(on, _)| on.sampler_share).collect();
    println!(
        "sampler reading time: {:.3}% of the wall time (median)",
        harness::stats::median(&shares).unwrap_or(f64::NAN) * 100.0
    );
    ExitCode::SUCCESS
}
