//! Interleaved rounds: each round measures every allocator once, in an order rotated from
//! round to round, so that drift of the machine (another process, a frequency change, a
//! noisy neighbour on the host) reaches every allocator alike instead of whichever one ran
//! while it lasted. The rounds of one allocator are then merged into one measurement (medians
//! over the rounds), and each allocator is set against the reference allocators round by
//! round: the paired ratios and their bootstrap intervals.

use harness::Measurement;
use harness::histogram::LatencyFigures;
use harness::result::{PairedRatio, RunSample};
use harness::stats::{self, Bootstrap, CONFIDENCE};

/// Seed of the paired-ratio intervals (fixed: the same rounds always give the same interval).
pub(crate) const SEED: u64 = 0x5EAF_2B0D;

/// The order of `allocators` in round `round`: rotated left by `round`, so that over as
/// many rounds as there are allocators each one is measured once in every place.
pub(crate) fn order<'a>(allocators: &[&'a str], round: u32) -> Vec<&'a str> {
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
const PER_CHILD_ONLY: [&str; 2] = ["one run only", "high variance"];

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

/// The CPU time of a one-run measurement's threads, from its `task-clock` counter (in ns).
fn cpu_seconds(m: &Measurement) -> Option<f64> {
    match m.counters.get("task-clock")? {
        harness::counters::CounterReading::Ok { value, .. } if *value > 0.0 => Some(value / 1e9),
        _ => None,
    }
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

/// The throughput of each sample by round.
fn by_round(m: &Measurement) -> Vec<(u32, f64)> {
    m.samples
        .iter()
        .filter_map(|s| Some((s.round?, s.throughput_ops_per_s)))
        .collect()
}

/// `a / b` for every round both have a positive figure of, in the order of `a`.
fn round_ratios(a: &[(u32, f64)], b: &[(u32, f64)]) -> Vec<f64> {
    a.iter()
        .filter_map(|&(round, x)| {
            let &(_, y) = b.iter().find(|(r, _)| *r == round)?;
            (x > 0.0 && y > 0.0).then(|| x / y)
        })
        .collect()
}

/// The paired ratio of `m` over `versus`: one ratio per round both completed.
pub(crate) fn paired(m: &Measurement, versus: &Measurement) -> Option<PairedRatio> {
    let rounds = round_ratios(&by_round(m), &by_round(versus));
    let estimate = stats::geometric_mean(&rounds)?;
    let interval = Bootstrap::with_seed(SEED)
        .geometric_mean(&rounds)
        .map(|i| (i.low, i.high));
    Some(PairedRatio {
        workload: m.workload.clone(),
        threads: m.config.threads,
        allocator: m.allocator.clone(),
        versus: versus.allocator.clone(),
        rounds,
        estimate,
        interval,
        confidence: CONFIDENCE,
    })
}

/// Every paired ratio of `runs` against each of `references`, per (workload, threads), in
/// the order of `runs`.
pub(crate) fn all_paired(runs: &[Measurement], references: &[&str]) -> Vec<PairedRatio> {
    let mut out = Vec::new();
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
            if let Some(p) = versus.and_then(|v| paired(m, v)) {
                out.push(p);
            }
        }
    }
    out
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
}
