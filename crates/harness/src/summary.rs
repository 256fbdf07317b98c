//! The summary of a result file: per (workload, threads), the allocator with the highest
//! median throughput, its paired ratio over the runner-up with the interval, and whether the
//! machine was busy while it ran. The CLI prints it above the tables and the reports put it at
//! the top of their Markdown.

use crate::result::{Measurement, PairedRatio, ResultFile};
use crate::stats::{self, Bootstrap};

/// Warning kinds that say the machine was not quiet during a measurement.
pub const LOADED: [&str; 2] = ["machine busy", "hypervisor steal"];

/// Seed of the bootstrap of a winner/runner-up pair the file holds no paired ratio of.
const SEED: u64 = 0x5EAF_2B0D;

/// One (workload, threads) of the summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Workload name.
    pub workload: String,
    /// Worker threads.
    pub threads: u32,
    /// Rounds (the most any allocator completed).
    pub rounds: usize,
    /// Length of one measured run as the spec gives it (`500ms`, or `100000 ops`).
    pub run_length: String,
    /// The allocator with the highest median throughput.
    pub winner: String,
    /// The one with the next highest (`None` when one allocator ran).
    pub runner_up: Option<String>,
    /// The winner's throughput over the runner-up's, paired by round.
    pub ratio: Option<PairedRatio>,
    /// The kinds of [`LOADED`] warnings of any measurement of this (workload, threads).
    pub loaded: Vec<&'static str>,
}

impl Row {
    /// Whether the interval of the ratio lies above 1 (a winner the rounds support).
    pub fn resolved(&self) -> bool {
        self.ratio
            .as_ref()
            .and_then(|r| r.interval)
            .is_some_and(|(low, _)| low > 1.0)
    }

    /// The ratio cell: `1.14 [1.08..1.21]`, with `, not resolved` where the interval holds 1.
    pub fn ratio_text(&self) -> String {
        match &self.ratio {
            None => "-".to_owned(),
            Some(p) => match p.interval {
                Some((low, high)) => format!(
                    "{:.2} [{:.2}..{:.2}]{}",
                    p.estimate,
                    low,
                    high,
                    if self.resolved() { "" } else { " (tie)" }
                ),
                None => format!("{:.2} (one round)", p.estimate),
            },
        }
    }

    /// `quiet`, or the loaded kinds joined.
    pub fn machine_text(&self) -> String {
        if self.loaded.is_empty() {
            "quiet".to_owned()
        } else {
            self.loaded.join(", ")
        }
    }
}

/// The summary rows of `results`, in the order the measurements appear.
pub fn rows(results: &ResultFile) -> Vec<Row> {
    let mut keys: Vec<(&str, u32)> = Vec::new();
    for m in &results.runs {
        let key = (m.workload.as_str(), m.config.threads);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .filter_map(|(workload, threads)| {
            let mut group: Vec<&Measurement> = results
                .runs
                .iter()
                .filter(|m| m.workload == workload && m.config.threads == threads)
                .collect();
            group.sort_by(|a, b| b.throughput_ops_per_s.total_cmp(&a.throughput_ops_per_s));
            let winner = *group.first()?;
            let runner_up = group.get(1).copied();
            let ratio = runner_up.and_then(|r| ratio(winner, r, &results.paired));
            let mut loaded = Vec::new();
            for kind in LOADED {
                let hit = group.iter().any(|m| {
                    m.warnings
                        .iter()
                        .any(|w| w.split_once(": ").map_or(w.as_str(), |(k, _)| k) == kind)
                });
                if hit {
                    loaded.push(kind);
                }
            }
            let spec = &winner.spec;
            let run_length = match (spec.duration, spec.ops) {
                (Some(d), _) => d.to_string(),
                (None, Some(ops)) => format!("{ops} ops"),
                (None, None) => "-".to_owned(),
            };
            Some(Row {
                workload: workload.to_owned(),
                threads,
                rounds: group.iter().map(|m| m.samples.len()).max().unwrap_or(0),
                run_length,
                winner: winner.allocator.clone(),
                runner_up: runner_up.map(|r| r.allocator.clone()),
                ratio,
                loaded,
            })
        })
        .collect()
}

/// The paired ratio of `a` over `b`: from the file (either way round: the geometric mean and
/// its percentile interval invert exactly), else from the rounds of their samples.
fn ratio(a: &Measurement, b: &Measurement, paired: &[PairedRatio]) -> Option<PairedRatio> {
    let find = |x: &Measurement, y: &Measurement| {
        paired.iter().find(|p| {
            p.workload == x.workload
                && p.threads == x.config.threads
                && p.allocator == x.allocator
                && p.versus == y.allocator
        })
    };
    if let Some(p) = find(a, b) {
        return Some(p.clone());
    }
    if let Some(p) = find(b, a) {
        return Some(PairedRatio {
            allocator: a.allocator.clone(),
            versus: b.allocator.clone(),
            rounds: p.rounds.iter().map(|r| 1.0 / r).collect(),
            estimate: 1.0 / p.estimate,
            interval: p.interval.map(|(low, high)| (1.0 / high, 1.0 / low)),
            per_cpu_second: p.per_cpu_second.as_ref().map(|c| c.inverted()),
            ..p.clone()
        });
    }
    let rounds: Vec<f64> = a
        .samples
        .iter()
        .filter_map(|s| {
            let round = s.round?;
            let other = b.samples.iter().find(|o| o.round == Some(round))?;
            (s.throughput_ops_per_s > 0.0 && other.throughput_ops_per_s > 0.0)
                .then(|| s.throughput_ops_per_s / other.throughput_ops_per_s)
        })
        .collect();
    let estimate = stats::geometric_mean(&rounds)?;
    let bootstrap = Bootstrap::with_seed(SEED);
    Some(PairedRatio {
        workload: a.workload.clone(),
        threads: a.config.threads,
        allocator: a.allocator.clone(),
        versus: b.allocator.clone(),
        interval: bootstrap.geometric_mean(&rounds).map(|i| (i.low, i.high)),
        rounds,
        estimate,
        confidence: bootstrap.confidence,
        per_cpu_second: None,
    })
}

/// The summary as Markdown: a `## Summary` section with one table (one row per (workload,
/// threads)), the notes on what was left out, and a line on how to read it.
pub fn markdown(results: &ResultFile) -> String {
    let rows = rows(results);
    let mut md = String::from("## Summary\n\n");
    if rows.is_empty() {
        md.push_str("No measurement finished.\n\n");
    } else {
        md.push_str(
            "Winner: the highest median throughput over the rounds. Ratio: its throughput over the runner-up's, paired by round (geometric mean, 95% bootstrap interval; `tie` where the interval holds 1). Machine: `quiet`, or the load warnings of any of its measurements.\n\n",
        );
        md.push_str(
            "| workload | threads | rounds × run | winner | runner-up | ratio [95%] | machine |\n",
        );
        md.push_str("|---|---:|---|---|---|---|---|\n");
        for r in &rows {
            md.push_str(&format!(
                "| {} | {} | {} × {} | {} | {} | {} | {} |\n",
                r.workload,
                r.threads,
                r.rounds,
                r.run_length,
                r.winner,
                r.runner_up.as_deref().unwrap_or("-"),
                r.ratio_text(),
                r.machine_text()
            ));
        }
        md.push('\n');
    }
    if !results.notes.is_empty() {
        md.push_str("Not measured:\n\n");
        for note in &results.notes {
            md.push_str(&format!("- {note}\n"));
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Machine;

    /// A measurement of `allocator` with one sample per round of the given throughputs, its
    /// figure their median.
    fn measurement(
        workload: &str,
        threads: u32,
        allocator: &str,
        rounds: &[f64],
        warnings: &[&str],
    ) -> Measurement {
        let mut sorted = rounds.to_vec();
        sorted.sort_by(f64::total_cmp);
        let figures = serde_json::json!({
            "samples": 1, "mean": 1.0, "p50": 1, "p90": 1, "p99": 1, "p999": 1, "p9999": 1, "max": 1
        });
        let mut latency = figures.clone();
        latency["unit"] = "op".into();
        latency["clock"] = "tsc".into();
        latency["timer_overhead_ns"] = 1.0.into();
        serde_json::from_value(serde_json::json!({
            "workload": workload, "kind": "churn", "allocator": allocator,
            "config": {"object_size": 64, "align": 8, "sheaf_capacity": 32, "barn_max_full": 4,
                "barn_max_empty": 4, "deferred_batching": false, "threads": threads,
                "os_threads": threads, "pinned": true},
            "op_unit": "op", "ops": 1, "seconds": 0.5,
            "throughput_ops_per_s": sorted[sorted.len() / 2],
            "samples": rounds.iter().enumerate().map(|(i, t)| serde_json::json!({
                "ops": 1, "seconds": 0.5, "throughput_ops_per_s": t, "round": i
            })).collect::<Vec<_>>(),
            "latency_ns": latency,
            "counters": {}, "memory": {"peak_rss_bytes": null, "slab_bytes": null,
                "cached_objects": null, "live_objects": null},
            "stats": {}, "extra": {},
            "pinning": {"pinned": true, "cpus": [0], "samples": 0, "off_cpu_samples": 0,
                "threads_moved": 0},
            "warnings": warnings,
            "spec": {"name": workload, "kind": "churn", "object_size": 64, "duration": "500ms"},
        }))
        .unwrap()
    }

    #[test]
    fn names_the_winner_with_its_paired_ratio_over_the_runner_up_and_the_load() {
        let mut file = ResultFile::new(Machine::detect());
        file.runs = vec![
            measurement("burst", 1, "sheaf", &[110.0, 121.0, 99.0], &[]),
            measurement("burst", 1, "mimalloc", &[100.0, 110.0, 90.0], &[]),
            measurement("burst", 1, "system", &[50.0, 50.0, 50.0], &[]),
            measurement("burst", 2, "sheaf", &[100.0, 100.0, 100.0], &[]),
            measurement(
                "burst",
                2,
                "mimalloc",
                &[120.0, 90.0, 130.0],
                &["machine busy: 900 involuntary context switches"],
            ),
        ];
        // The file holds sheaf over mimalloc at 2 threads, where mimalloc wins: inverted.
        file.paired = vec![PairedRatio {
            workload: "burst".into(),
            threads: 2,
            allocator: "sheaf".into(),
            versus: "mimalloc".into(),
            rounds: vec![100.0 / 120.0, 100.0 / 90.0, 100.0 / 130.0],
            estimate: 0.8,
            interval: Some((0.5, 1.25)),
            confidence: 0.95,
            per_cpu_second: None,
        }];
        file.notes = vec!["pc: 4 threads left out: too many".into()];
        let rows = rows(&file);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].winner, "sheaf");
        assert_eq!(rows[0].runner_up.as_deref(), Some("mimalloc"));
        // Every round is 1.1: computed from the rounds, the interval is that one point.
        let ratio = rows[0].ratio.as_ref().unwrap();
        assert!((ratio.estimate - 1.1).abs() < 1e-9, "{ratio:?}");
        assert!(rows[0].resolved());
        assert_eq!(rows[1].winner, "mimalloc");
        assert_eq!(rows[1].ratio.as_ref().unwrap().interval, Some((0.8, 2.0)));
        assert!(!rows[1].resolved());
        assert_eq!(
            markdown(&file),
            "## Summary\n\n\
             Winner: the highest median throughput over the rounds. Ratio: its throughput over the runner-up's, paired by round (geometric mean, 95% bootstrap interval; `tie` where the interval holds 1). Machine: `quiet`, or the load warnings of any of its measurements.\n\n\
             | workload | threads | rounds × run | winner | runner-up | ratio [95%] | machine |\n\
             |---|---:|---|---|---|---|---|\n\
             | burst | 1 | 3 × 500ms | sheaf | mimalloc | 1.10 [1.10..1.10] | quiet |\n\
             | burst | 2 | 3 × 500ms | mimalloc | sheaf | 1.25 [0.80..2.00] (tie) | machine busy |\n\n\
             Not measured:\n\n\
             - pc: 4 threads left out: too many\n\n"
        );
    }
}
