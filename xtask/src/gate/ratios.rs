//! The wall-clock signal: throughput ratios of sheaf against fixed comparators, measured in
//! one run as interleaved rounds.
//!
//! One round is one `sheafbench run` of every gate workload with every allocator, one short
//! measured run each, one thread, pinned. The allocator order rotates from round to round,
//! so that no allocator always runs first (or last) in a round. From each round and workload
//! comes one ratio per comparator, `sheaf / comparator` throughput; the rounds then give a
//! bootstrap interval of the ratio (see `harness::stats`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, TaskResult};

/// The allocator the gate guards.
pub(crate) const SUBJECT: &str = "sheaf";
/// Fixed comparators: a general-purpose allocator and the pre-sheaves SLUB design.
pub(crate) const COMPARATORS: [&str; 2] = ["mimalloc", "slub-cpu-slab"];
/// Workload specs (in `workloads/`): the fast path, crossing the sheaf capacity, and the
/// prefill pattern.
pub(crate) const WORKLOADS: [&str; 3] = ["churn-lifo.yaml", "burst.yaml", "prefill-burst.yaml"];

/// How the ratios are measured.
#[derive(Clone, Debug)]
pub(crate) struct RatioPlan {
    /// Interleaved rounds (one ratio sample per figure each).
    pub(crate) rounds: usize,
    /// Measured duration of each run, as the CLI's `--duration` takes it.
    pub(crate) duration: String,
}

/// Name of the figure for `workload` and `comparator`.
pub(crate) fn figure_name(workload: &str, comparator: &str) -> String {
    format!("{workload}: {SUBJECT} / {comparator}")
}

/// Measures every round; returns the ratio samples of each figure.
pub(crate) fn measure(
    sheafbench: &Path,
    plan: &RatioPlan,
    scratch: &Path,
) -> TaskResult<BTreeMap<String, Vec<f64>>> {
    let specs: Vec<PathBuf> = WORKLOADS
        .iter()
        .map(|w| util::root().join("workloads").join(w))
        .collect();
    let mut allocators: Vec<&str> = std::iter::once(SUBJECT).chain(COMPARATORS).collect();
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..plan.rounds {
        eprintln!("xtask: gate ratios, round {}/{}", round + 1, plan.rounds);
        let json = scratch.join(format!("ratio-round-{round}.json"));
        let mut run = Command::new(sheafbench);
        run.current_dir(util::root())
            .arg("run")
            .arg("--no-history")
            .args(&specs)
            .arg("--alloc")
            .arg(allocators.join(","))
            .args(["--threads", "1", "--runs", "1", "--quick", "--duration"])
            .arg(&plan.duration)
            .arg("--json")
            .arg(&json)
            .stdout(std::process::Stdio::null());
        util::run(run)?;
        let result = util::read_json(&json)?;
        for (figure, ratio) in round_ratios(&result) {
            samples.entry(figure).or_default().push(ratio);
        }
        allocators.rotate_left(1);
    }
    Ok(samples)
}

/// The ratios one round's result file gives: for each workload measured with the subject,
/// `subject / comparator` throughput for each comparator measured too. A measurement that
/// failed (absent from `runs`) or has no positive throughput gives no ratio.
pub(crate) fn round_ratios(result: &serde_json::Value) -> Vec<(String, f64)> {
    let mut throughput: BTreeMap<(String, String), f64> = BTreeMap::new();
    for run in result["runs"].as_array().into_iter().flatten() {
        let (Some(workload), Some(allocator), Some(ops)) = (
            run["workload"].as_str(),
            run["allocator"].as_str(),
            run["throughput_ops_per_s"].as_f64(),
        ) else {
            continue;
        };
        if ops.is_finite() && ops > 0.0 {
            throughput.insert((workload.to_owned(), allocator.to_owned()), ops);
        }
    }
    let mut ratios = Vec::new();
    for ((workload, allocator), subject) in &throughput {
        if allocator != SUBJECT {
            continue;
        }
        for comparator in COMPARATORS {
            if let Some(other) = throughput.get(&(workload.clone(), comparator.to_owned())) {
                ratios.push((figure_name(workload, comparator), subject / other));
            }
        }
    }
    ratios
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_pair_the_subject_with_each_comparator_of_the_same_workload() {
        let result = serde_json::json!({
            "runs": [
                {"workload": "churn-lifo", "allocator": "sheaf", "throughput_ops_per_s": 300.0},
                {"workload": "churn-lifo", "allocator": "mimalloc", "throughput_ops_per_s": 200.0},
                {"workload": "churn-lifo", "allocator": "slub-cpu-slab", "throughput_ops_per_s": 150.0},
                {"workload": "burst", "allocator": "sheaf", "throughput_ops_per_s": 100.0},
                // slub-cpu-slab failed on burst: absent; mimalloc has a zero figure.
                {"workload": "burst", "allocator": "mimalloc", "throughput_ops_per_s": 0.0},
                {"workload": "other", "allocator": "mimalloc", "throughput_ops_per_s": 5.0},
            ],
            "failures": [{"workload": "burst", "allocator": "slub-cpu-slab"}]
        });
        let ratios = round_ratios(&result);
        assert_eq!(
            ratios,
            vec![
                ("churn-lifo: sheaf / mimalloc".to_owned(), 1.5),
                ("churn-lifo: sheaf / slub-cpu-slab".to_owned(), 2.0),
            ]
        );
    }

    #[test]
    fn an_empty_or_malformed_result_gives_no_ratio() {
        assert!(round_ratios(&serde_json::json!({})).is_empty());
        assert!(round_ratios(&serde_json::json!({"runs": [{"workload": 3}]})).is_empty());
    }
}
