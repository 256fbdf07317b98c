//! Interleaved rounds: each round measures every allocator once, in an order rotated from
//! round to round, so that drift of the machine (another process, a frequency change, a
//! noisy neighbour on the host) reaches every allocator alike instead of whichever one ran
//! while it lasted. The rounds of one allocator are then merged into one measurement (medians
//! over the rounds), and each allocator is set against the reference allocators round by
//! round: the paired ratios and their bootstrap intervals.

use harness::Measurement;
use harness::histogram::LatencyFigures;
use harness::result::{PairedRatio, RatioRounds, RunSample};
use harness::stats::{self, Bootstrap, CONFIDENCE};
use rayon::prelude::*;

/// Seed of the paired-ratio intervals (fixed: the same rounds always give the same interval).
pub(crate) const SEED: u64 = 0x5EAF_2B0D;

/// The order of `allocators` in round `round`: rotated left by `round`, so that over as
/// many rounds as there are allocators each one is measured once in every place.
pub(crate) fn order<T: Clone>(allocators: &[T], round: u32) -> Vec<T> {
    let mut order = allocators.to_vec();
    if !order.is_empty() {
        let shift = round as usize % order.len();
        order.rotate_left(shift);
    }
    order
}

/// One allocator's measurement of one round, as a child process returned it.
#[derive(Clone, Debug)]
pub(crate) struct RoundResult {
    /// Round index.
    pub(crate) round: u32,
    /// Place in the round's order.
    pub(crate) position: u32,
    /// The child's measurement (one measured run).
    pub(crate) measurement: Measurement,
}

/// Warnings of a one-run child that say nothing once its rounds are merged: the run-to-run
/// spread is that of the rounds, judged again on the merged samples.
pub(crate) const PER_CHILD_ONLY: [&str; 2] = ["one run only", "high variance"];

fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    let values: Vec<f64> = values.map(|v| v as f64).collect();
    stats::median(&values).map_or(0, |m| m.round() as u64)
}

/// The rounds' run-time changes as one: every round's applications, the windows' operations
/// and samples summed, their throughputs and 99.9th percentiles (and the ratio) the medians
/// over the rounds (percentiles of separate rounds cannot be merged exactly).
fn merge_changes(rounds: &[RoundResult]) -> Vec<harness::result::LimitChangeResult> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    let window =
        |i: usize,
         pick: fn(&harness::result::LimitChangeResult) -> &harness::result::ChangeWindow| {
            let all: Vec<&harness::result::ChangeWindow> = rounds
                .iter()
                .filter_map(|r| r.measurement.changes.get(i).map(pick))
                .collect();
            let throughputs: Vec<f64> = all.iter().map(|w| w.throughput_ops_per_s).collect();
            let p999: Vec<u64> = all.iter().filter_map(|w| w.p999_ns).collect();
            harness::result::ChangeWindow {
                ops: all.iter().map(|w| w.ops).sum(),
                samples: all.iter().map(|w| w.samples).sum(),
                throughput_ops_per_s: stats::median(&throughputs).unwrap_or(0.0),
                p999_ns: (!p999.is_empty()).then(|| median_u64(p999.into_iter())),
                ..all.first().map(|w| (*w).clone()).unwrap_or_default()
            }
        };
    first
        .measurement
        .changes
        .iter()
        .enumerate()
        .map(|(i, change)| {
            let ratios: Vec<f64> = rounds
                .iter()
                .filter_map(|r| r.measurement.changes.get(i)?.p999_ratio)
                .collect();
            harness::result::LimitChangeResult {
                applied: rounds
                    .iter()
                    .filter_map(|r| r.measurement.changes.get(i))
                    .flat_map(|c| c.applied.iter().cloned())
                    .collect(),
                before: window(i, |c| &c.before),
                after: window(i, |c| &c.after),
                p999_ratio: stats::median(&ratios),
                ..change.clone()
            }
        })
        .collect()
}

fn median_figures(figures: &[&LatencyFigures]) -> LatencyFigures {
    let pick = |f: fn(&LatencyFigures) -> u64| median_u64(figures.iter().map(|x| f(x)));
    let means: Vec<f64> = figures.iter().map(|f| f.mean).collect();
    LatencyFigures {
        samples: figures.iter().map(|f| f.samples).sum(),
        mean: stats::median(&means).unwrap_or(0.0),
        p50: pick(|f| f.p50),
        p90: pick(|f| f.p90),
        p99: pick(|f| f.p99),
        p999: pick(|f| f.p999),
        p9999: pick(|f| f.p9999),
        max: figures.iter().map(|f| f.max).max().unwrap_or(0),
    }
}

/// The CPU time of a one-run measurement's threads: their `task-clock` counters (enabled
/// around the timed loop only), or where those were not counted (no perf events), the run
/// time the scheduler gave the threads over the run's wall time (`threads_cpu_share`, read
/// from their schedstat before and after the run, so around their barriers too).
fn cpu_seconds(m: &Measurement) -> Option<f64> {
    if let Some(harness::counters::CounterReading::Ok { value, .. }) = m.counters.get("task-clock")
        && *value > 0.0
    {
        return Some(value / 1e9);
    }
    let share = m.extra.get("threads_cpu_share")?;
    let wall = m.seconds + m.extra.get("upkeep_seconds").copied().unwrap_or(0.0);
    Some(share * wall * m.config.os_threads as f64).filter(|cpu| *cpu > 0.0)
}

/// Merges the rounds of one (workload, allocator, threads) into one measurement: one sample
/// per round (with its round, place and latency figures), throughput and latency
/// percentiles the medians over the rounds (the maximum latency the maximum), ops and
/// seconds the sums, peak RSS the highest; counters, design stats, memory, the timeline and
/// kind figures those of the round with the median throughput. `spec` is the spec as planned (its
/// `runs` is the number of rounds). `None` when there is no round.
pub(crate) fn merge(rounds: &[RoundResult], spec: &harness::WorkloadSpec) -> Option<Measurement> {
    let first = &rounds.first()?.measurement;
    let mut samples = Vec::new();
    for r in rounds {
        for s in &r.measurement.samples {
            samples.push(RunSample {
                round: Some(r.round),
                position: Some(r.position),
                latency_ns: Some(r.measurement.latency_ns.figures.clone()),
                cpu_seconds: cpu_seconds(&r.measurement),
                ..s.clone()
            });
        }
    }
    let throughputs: Vec<f64> = rounds
        .iter()
        .map(|r| r.measurement.throughput_ops_per_s)
        .collect();
    // The round whose throughput is the median (the lower middle one for an even count).
    let mut by_throughput: Vec<usize> = (0..rounds.len()).collect();
    by_throughput.sort_by(|&a, &b| throughputs[a].total_cmp(&throughputs[b]));
    let middle = &rounds[by_throughput[(rounds.len() - 1) / 2]].measurement;
    let figures: Vec<&LatencyFigures> = rounds
        .iter()
        .map(|r| &r.measurement.latency_ns.figures)
        .collect();
    let mut merged = Measurement {
        ops: rounds.iter().map(|r| r.measurement.ops).sum(),
        seconds: rounds.iter().map(|r| r.measurement.seconds).sum(),
        throughput_ops_per_s: stats::median(&throughputs).unwrap_or(0.0),
        samples,
        latency_ns: harness::result::Latency {
            figures: median_figures(&figures),
            ..first.latency_ns.clone()
        },
        counters: middle.counters.clone(),
        memory: harness::result::Memory {
            peak_rss_bytes: rounds
                .iter()
                .filter_map(|r| r.measurement.memory.peak_rss_bytes)
                .max(),
            ..middle.memory.clone()
        },
        stats: middle.stats.clone(),
        timeline: middle.timeline.clone(),
        extra: middle.extra.clone(),
        pinning: harness::result::Pinning {
            samples: rounds.iter().map(|r| r.measurement.pinning.samples).sum(),
            off_cpu_samples: rounds
                .iter()
                .map(|r| r.measurement.pinning.off_cpu_samples)
                .sum(),
            threads_moved: rounds
                .iter()
                .map(|r| r.measurement.pinning.threads_moved)
                .max()
                .unwrap_or(0),
            ..first.pinning.clone()
        },
        warnings: Vec::new(),
        spec: spec.clone(),
        changes: merge_changes(rounds),
        ..first.clone()
    };
    let mut warnings: Vec<String> = Vec::new();
    let fresh = harness::warnings::for_measurement(&merged);
    let kept = rounds
        .iter()
        .flat_map(|r| &r.measurement.warnings)
        .filter(|w| !PER_CHILD_ONLY.iter().any(|p| w.starts_with(p)))
        .chain(
            fresh
                .iter()
                .filter(|w| PER_CHILD_ONLY.iter().any(|p| w.starts_with(p))),
        );
    for w in kept {
        // One warning of each kind: the first round's details stand for the others.
        let kind = w.split_once(": ").map_or(w.as_str(), |(k, _)| k);
        if !warnings.iter().any(|k| k.starts_with(kind)) {
            warnings.push(w.clone());
        }
    }
    merged.warnings = warnings;
    Some(merged)
}

/// The reference allocators of the ratio columns: the baseline, then `sheaf` and `mimalloc`
/// where they ran, each once.
pub(crate) fn references<'a>(baseline: Option<&'a str>, ran: &[&'a str]) -> Vec<&'a str> {
    let mut refs: Vec<&str> = Vec::new();
    for name in baseline.into_iter().chain(["sheaf", "mimalloc"]) {
        if let Some(&r) = ran.iter().find(|r| **r == name)
            && !refs.contains(&r)
        {
            refs.push(r);
        }
    }
    refs
}

/// A figure of each sample by round: `figure` of the samples that have a round.
fn by_round(m: &Measurement, figure: impl Fn(&RunSample) -> Option<f64>) -> Vec<(u32, f64)> {
    m.samples
        .iter()
        .filter_map(|s| Some((s.round?, figure(s)?)))
        .collect()
}

/// Operations per CPU-second of the measured threads in one round; `None` without its CPU time.
pub(crate) fn ops_per_cpu_second(s: &RunSample) -> Option<f64> {
    s.cpu_seconds
        .filter(|cpu| *cpu > 0.0)
        .map(|cpu| s.ops as f64 / cpu)
}

/// `a / b` for every round both have a positive figure of, in the order of `a`.
pub(crate) fn round_ratios(a: &[(u32, f64)], b: &[(u32, f64)]) -> Vec<f64> {
    a.iter()
        .filter_map(|&(round, x)| {
            let &(_, y) = b.iter().find(|(r, _)| *r == round)?;
            (x > 0.0 && y > 0.0).then(|| x / y)
        })
        .collect()
}

/// The ratio of `a` over `b` paired by round, with its interval; `None` without a round both
/// have.
pub(crate) fn ratio_rounds(a: &[(u32, f64)], b: &[(u32, f64)]) -> Option<RatioRounds> {
    ratio_of_rounds(round_ratios(a, b))
}

/// A ratio from its per-round values: their geometric mean, with its bootstrap interval;
/// `None` without a round.
pub(crate) fn ratio_of_rounds(rounds: Vec<f64>) -> Option<RatioRounds> {
    let estimate = stats::geometric_mean(&rounds)?;
    let interval = Bootstrap::with_seed(SEED)
        .geometric_mean(&rounds)
        .map(|i| (i.low, i.high));
    Some(RatioRounds {
        rounds,
        estimate,
        interval,
    })
}

/// The paired ratio of `m` over `versus`: one ratio per round both completed, of throughput
/// and, where every round of both has its CPU time, of operations per CPU-second.
pub(crate) fn paired(m: &Measurement, versus: &Measurement) -> Option<PairedRatio> {
    let wall = |s: &RunSample| Some(s.throughput_ops_per_s);
    let throughput = ratio_rounds(&by_round(m, wall), &by_round(versus, wall))?;
    let per_cpu_second = ratio_rounds(
        &by_round(m, ops_per_cpu_second),
        &by_round(versus, ops_per_cpu_second),
    )
    .filter(|cpu| cpu.rounds.len() == throughput.rounds.len());
    Some(PairedRatio {
        workload: m.workload.clone(),
        threads: m.config.threads,
        allocator: m.allocator.clone(),
        versus: versus.allocator.clone(),
        rounds: throughput.rounds,
        estimate: throughput.estimate,
        interval: throughput.interval,
        confidence: CONFIDENCE,
        per_cpu_second,
    })
}

/// Every paired ratio of `runs` against each of `references`, per (workload, threads), in
/// the order of `runs`. The intervals are computed in parallel (each has its own fixed seed,
/// so they are the same on any number of threads); call it between measurements, never
/// while one runs.
pub(crate) fn all_paired(runs: &[Measurement], references: &[&str]) -> Vec<PairedRatio> {
    let mut pairs: Vec<(&Measurement, &Measurement)> = Vec::new();
    for m in runs {
        for &reference in references {
            if m.allocator == reference {
                continue;
            }
            let versus = runs.iter().find(|o| {
                o.allocator == reference
                    && o.workload == m.workload
                    && o.config.threads == m.config.threads
            });
            if let Some(v) = versus {
                pairs.push((m, v));
            }
        }
    }
    pairs
        .into_par_iter()
        .filter_map(|(m, v)| paired(m, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allocator_takes_every_place_over_as_many_rounds() {
        let allocators = ["a", "b", "c"];
        let orders: Vec<Vec<&str>> = (0..3).map(|r| order(&allocators, r)).collect();
        assert_eq!(orders[0], ["a", "b", "c"]);
        assert_eq!(orders[1], ["b", "c", "a"]);
        assert_eq!(orders[2], ["c", "a", "b"]);
        for name in allocators {
            let mut places: Vec<usize> = orders
                .iter()
                .map(|o| o.iter().position(|a| *a == name).unwrap())
                .collect();
            places.sort_unstable();
            assert_eq!(places, [0, 1, 2], "{name}");
        }
        assert_eq!(order(&allocators, 4), orders[1]);
    }

    #[test]
    fn drift_common_to_a_round_cancels_in_its_ratio() {
        // Both allocators slow down together from round to round; `a` is always 20% faster.
        let drift = [1.0, 0.6, 1.3, 0.8];
        let b: Vec<(u32, f64)> = (0..4).map(|r| (r, 100.0 * drift[r as usize])).collect();
        let a: Vec<(u32, f64)> = b.iter().map(|&(r, y)| (r, 1.2 * y)).collect();
        let ratios = round_ratios(&a, &b);
        assert_eq!(ratios.len(), 4);
        assert!(ratios.iter().all(|r| (r - 1.2).abs() < 1e-12), "{ratios:?}");
        // A round only one side completed gives no ratio.
        let ratios = round_ratios(&a, &b[1..]);
        assert_eq!(ratios.len(), 3);
    }

    #[test]
    fn references_are_the_baseline_then_sheaf_and_mimalloc_where_they_ran() {
        assert_eq!(
            references(Some("system"), &["system", "mimalloc", "sheaf"]),
            ["system", "sheaf", "mimalloc"]
        );
        assert_eq!(references(Some("sheaf"), &["sheaf", "system"]), ["sheaf"]);
        assert_eq!(references(None, &["system"]), Vec::<&str>::new());
    }

    /// A measurement of `allocator` with one sample per round: (throughput, CPU seconds of
    /// its threads for 1,000 ops).
    fn measurement(workload: &str, allocator: &str, rounds: &[(f64, Option<f64>)]) -> Measurement {
        let figures = serde_json::json!({
            "samples": 1, "mean": 1.0, "p50": 1, "p90": 1, "p99": 1, "p999": 1, "p9999": 1, "max": 1,
            "unit": "op", "clock": "tsc", "timer_overhead_ns": 1.0
        });
        serde_json::from_value(serde_json::json!({
            "workload": workload, "kind": "churn", "allocator": allocator,
            "config": {"object_size": 64, "align": 8, "sheaf_capacity": 32, "barn_max_full": 4,
                "barn_max_empty": 4, "deferred_batching": false, "threads": 1,
                "os_threads": 1, "pinned": true},
            "op_unit": "op", "ops": 1000, "seconds": 0.5, "throughput_ops_per_s": rounds[0].0,
            "samples": rounds.iter().enumerate().map(|(i, (t, cpu))| serde_json::json!({
                "ops": 1000, "seconds": 0.5, "throughput_ops_per_s": t, "round": i,
                "cpu_seconds": cpu
            })).collect::<Vec<_>>(),
            "latency_ns": figures,
            "counters": {}, "memory": {"peak_rss_bytes": null, "slab_bytes": null,
                "cached_objects": null, "live_objects": null},
            "stats": {}, "extra": {},
            "pinning": {"pinned": true, "cpus": [0], "samples": 0, "off_cpu_samples": 0,
                "threads_moved": 0},
            "warnings": [],
            "spec": {"name": workload, "kind": "churn", "object_size": 64, "duration": "500ms"},
        }))
        .unwrap()
    }

    #[test]
    fn the_cpu_second_ratio_is_paired_beside_the_wall_clock_one() {
        // `a` lost half of round 1's wall time waiting for a CPU: its wall-clock ratio
        // wobbles, its CPU-second ratio does not.
        let a = measurement(
            "w",
            "a",
            &[
                (200.0, Some(0.001)),
                (100.0, Some(0.001)),
                (200.0, Some(0.001)),
            ],
        );
        let b = measurement(
            "w",
            "b",
            &[
                (100.0, Some(0.002)),
                (100.0, Some(0.002)),
                (100.0, Some(0.002)),
            ],
        );
        let p = paired(&a, &b).unwrap();
        assert_eq!(p.rounds, [2.0, 1.0, 2.0]);
        let cpu = p.per_cpu_second.unwrap();
        assert_eq!(cpu.rounds, [2.0, 2.0, 2.0]);
        assert!((cpu.estimate - 2.0).abs() < 1e-12);
        let (low, high) = cpu.interval.unwrap();
        assert!((low - 2.0).abs() < 1e-12 && (high - 2.0).abs() < 1e-12);
        // A round without its CPU time gives no CPU-second ratio at all (not one of fewer
        // rounds than the wall-clock one).
        let c = measurement(
            "w",
            "c",
            &[(100.0, Some(0.002)), (100.0, None), (100.0, Some(0.002))],
        );
        assert!(paired(&a, &c).unwrap().per_cpu_second.is_none());
    }

    #[test]
    fn without_task_clock_the_cpu_time_is_the_schedulers() {
        let mut m = measurement("w", "a", &[(100.0, None)]);
        m.config.os_threads = 2;
        assert_eq!(cpu_seconds(&m), None);
        // Two threads on a CPU for 40% of a 0.5 s run and 0.1 s of upkeep.
        m.extra.insert("threads_cpu_share".into(), 0.4);
        m.extra.insert("upkeep_seconds".into(), 0.1);
        assert!((cpu_seconds(&m).unwrap() - 0.48).abs() < 1e-12);
        // A counted task-clock wins.
        m.counters.insert(
            "task-clock".into(),
            harness::counters::CounterReading::Ok {
                value: 2.5e8,
                per_op: 0.0,
                note: None,
            },
        );
        assert!((cpu_seconds(&m).unwrap() - 0.25).abs() < 1e-12);
    }

    #[test]
    fn the_intervals_are_the_same_on_any_number_of_threads() {
        // Many pairs of noisy rounds: computed on one thread and on four, every interval is
        // the same to the bit.
        let mut runs = Vec::new();
        let mut state = 0x1234_5678_u64;
        let mut noise = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            1.0 + ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.2
        };
        for w in 0..8 {
            for alloc in ["sheaf", "mimalloc", "system"] {
                let rounds: Vec<(f64, Option<f64>)> = (0..7)
                    .map(|_| (100.0 * noise(), Some(0.01 * noise())))
                    .collect();
                runs.push(measurement(&format!("w{w}"), alloc, &rounds));
            }
        }
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| all_paired(&runs, &["sheaf", "mimalloc"]))
        };
        let one = on(1);
        assert_eq!(one.len(), 8 * 4);
        assert!(
            one.iter()
                .all(|p| p.interval.is_some() && p.per_cpu_second.is_some())
        );
        assert_eq!(one, on(4));
        // In the order of the runs, then of the references.
        assert_eq!(
            (one[0].allocator.as_str(), one[0].versus.as_str()),
            ("sheaf", "mimalloc")
        );
        assert_eq!(
            (one[1].allocator.as_str(), one[1].versus.as_str()),
            ("mimalloc", "sheaf")
        );
    }
}
