//! `cargo xtask overhead`: does the harness's own loop dominate what it measures?
//!
//! For each allocator, `sheafbench run workloads/churn-lifo.yaml` at one thread and the
//! criterion benchmark `churn-lifo64/<name>` (crates/cli/benches/pair.rs, same revision,
//! same release profile) are run back to back, and their time per free+alloc pair is set
//! side by side. Both run the same loop body, the harness's out-of-line
//! `churn_lifo_pairs` (the spec's batch of pairs per call), so the two figures differ by their measuring
//! loops, not by two compilations of the pair: the harness adds what a unit of work costs it
//! (the clock read and the histogram record per batch, the check for the end of the run, the
//! CPU check); criterion adds one clock read per sample. Rounds alternate the allocators'
//! order so that a slow drift of the machine does not land on one of them; the figure of each
//! side is the median over rounds (harness: the median run of each round; criterion: its
//! slope estimate, or the mean when it has none).
//!
//! Both sides run on CPU 0: the spec pins the harness's thread there, and the criterion
//! binary runs under `taskset -c 0`.
//!
//! Writes `results/runs/<time>/overhead.json` and prints a table: allocator, criterion
//! ns/pair and harness ns/pair (medians over rounds) and their difference; `paired`, the
//! geometric mean over rounds of each round's harness/criterion ratio (the two sides of a
//! round run back to back, so a drift of the machine that lasts longer than a round cancels
//! out) with its 95% percentile-bootstrap interval; `fastest`, each side's fastest round
//! against the other's (interference only adds time); and the verdict, read from the paired
//! interval: `yes` when the whole interval lies within 5% of parity, `NO` when it lies wholly
//! outside, `unresolved` when it straddles the limit (more rounds or a quieter machine
//! would decide).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use harness::stats::{self, Bootstrap, Interval, Verdict};

use crate::util::{self, Names, TaskError, TaskResult};

/// The allowed difference between the two figures, a fraction.
const WITHIN: f64 = 0.05;

/// The paired interval: the default resamples and confidence, from the task's own seed.
const BOOTSTRAP: Bootstrap = Bootstrap::with_seed(0x0FE4_11EA);

/// The workload both sides run.
const WORKLOAD: &str = "churn-lifo.yaml";

/// sheafbench's churn-lifo figure beside criterion's for the same loop, per allocator.
#[derive(Debug, Parser)]
pub(crate) struct Options {
    /// Allocators.
    #[arg(
        long = "alloc",
        value_name = "LIST",
        value_parser = util::allocator_list,
        default_value = "sheaf,sheaf-thread,mimalloc,jemalloc,system"
    )]
    allocators: Names,
    /// Alternating rounds, each running both sides once.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = util::positive::<usize>)]
    rounds: usize,
    /// criterion's measurement time per benchmark, seconds.
    #[arg(
        long = "measurement-time",
        value_name = "SECS",
        default_value_t = 3,
        value_parser = util::positive::<u32>
    )]
    measurement_secs: u32,
}

/// `cargo xtask overhead`.
pub(crate) fn overhead(options: Options) -> TaskResult {
    let allocators = &options.allocators.0;
    let exe = util::build_sheafbench(None)?;
    let bench_exe = build_pair_bench()?;
    let dir = util::new_run_dir()?;
    let criterion_home = dir.join("criterion");
    let spec = util::root().join("workloads").join(WORKLOAD);

    let mut order = allocators.clone();
    let mut harness: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut criterion: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..options.rounds {
        for name in &order {
            eprintln!(
                "xtask: overhead round {}/{}: {name}",
                round + 1,
                options.rounds
            );
            let json = dir.join(format!("harness-{name}-{round}.json"));
            harness
                .entry(name.clone())
                .or_default()
                .push(harness_ns_per_pair(&exe, &spec, name, &json)?);
            criterion
                .entry(name.clone())
                .or_default()
                .push(criterion_ns_per_pair(
                    &bench_exe,
                    name,
                    options.measurement_secs,
                    &criterion_home,
                )?);
        }
        order.rotate_left(1);
    }

    let rows: Vec<Row> = allocators
        .iter()
        .map(|name| Row::new(name, &criterion[name], &harness[name]))
        .collect();
    let table = render(&rows);
    print!("{table}");
    let report = serde_json::json!({
        "provenance": util::provenance(),
        "workload": WORKLOAD,
        "unit": "ns per free+alloc pair, one thread",
        "within": WITHIN,
        "rounds": options.rounds,
        "criterion_measurement_secs": options.measurement_secs,
        "allocators": rows.iter().map(|r| serde_json::json!({
            "allocator": r.allocator,
            "criterion_ns": r.criterion_ns,
            "harness_ns": r.harness_ns,
            "difference": r.difference(),
            "paired_ratio": r.paired.map(|i| serde_json::json!({
                "estimate": i.estimate,
                "low": i.low,
                "high": i.high,
                "confidence": BOOTSTRAP.confidence,
                "statistic": "geometric mean of per-round harness/criterion ratios",
            })),
            "fastest_difference": r.best,
            "verdict": r.verdict().label(),
            "criterion_rounds": criterion[&r.allocator],
            "harness_rounds": harness[&r.allocator],
        })).collect::<Vec<_>>(),
    });
    let path = dir.join("overhead.json");
    let mut text = serde_json::to_string_pretty(&report).unwrap_or_else(|_| report.to_string());
    text.push('\n');
    util::write_atomic(&path, &text)?;
    util::write_atomic(&dir.join("overhead.md"), &table)?;
    println!("\nfigures in {}", path.display());
    Ok(())
}

/// One `sheafbench run` of the workload for `name` at one thread: ns per pair of its median run.
fn harness_ns_per_pair(exe: &Path, spec: &Path, name: &str, json: &Path) -> TaskResult<f64> {
    let mut run = Command::new(exe);
    run.current_dir(util::root())
        .arg("run")
        .arg(spec)
        .args(["--alloc", name, "--threads", "1", "--json"])
        .arg(json)
        .stdout(std::process::Stdio::null());
    util::run(run)?;
    let result = util::read_json(json)?;
    util::median_run_throughput(&result["runs"][0])
        .map(|ops| 1e9 / ops)
        .ok_or_else(|| {
            TaskError::Failed(format!(
                "{}: no throughput sample for {name} (did the measurement fail?)",
                json.display()
            ))
        })
}

/// criterion's `churn-lifo64/<name>`: ns per iteration (one pair).
///
/// The benchmark binary runs pinned to CPU 0 (with `taskset`), where the harness pins its one
/// thread, so that both sides run under the same placement; without `taskset` it runs
/// unpinned and the task says so.
fn criterion_ns_per_pair(
    bench_exe: &Path,
    name: &str,
    measurement_secs: u32,
    home: &Path,
) -> TaskResult<f64> {
    let id = format!("churn-lifo64/{name}");
    let mut bench = if util::fact("taskset", &["-V"]).is_some() {
        let mut taskset = Command::new("taskset");
        taskset.args(["-c", "0"]).arg(bench_exe);
        taskset
    } else {
        eprintln!("xtask: taskset not found: the criterion side runs unpinned");
        Command::new(bench_exe)
    };
    bench
        .current_dir(util::root())
        .args(["--bench", "--exact", &id, "--warm-up-time", "1", "--noplot"])
        .arg("--measurement-time")
        .arg(measurement_secs.to_string())
        .env("CRITERION_HOME", home)
        .stdout(std::process::Stdio::null());
    util::run(bench)?;
    // criterion names the directory after the id with `/` replaced by `_`.
    let estimates: PathBuf = home
        .join(id.replace('/', "_"))
        .join("new")
        .join("estimates.json");
    let json = util::read_json(&estimates)?;
    criterion_estimate(&json).ok_or_else(|| {
        TaskError::Failed(format!(
            "{}: neither a slope nor a mean estimate",
            estimates.display()
        ))
    })
}

/// Builds the `pair` criterion benchmark (bench profile) and returns its executable.
fn build_pair_bench() -> TaskResult<PathBuf> {
    util::build_executable(
        &["bench", "-p", "sheafbench", "--bench", "pair", "--no-run"],
        "pair",
    )
}

/// criterion's headline estimate: the slope of its linear sampling, else the mean.
fn criterion_estimate(estimates: &serde_json::Value) -> Option<f64> {
    ["slope", "mean"]
        .iter()
        .find_map(|key| estimates[*key]["point_estimate"].as_f64())
        .filter(|ns| ns.is_finite() && *ns > 0.0)
}

/// One allocator's two figures.
#[derive(Debug)]
struct Row {
    allocator: String,
    criterion_ns: Option<f64>,
    harness_ns: Option<f64>,
    /// The geometric mean over rounds of each round's `harness / criterion` ratio, with its
    /// bootstrap interval: the two sides of a round run back to back, so a slow drift of the
    /// machine cancels out. `None` with fewer than two complete rounds.
    paired: Option<Interval>,
    /// `fastest harness round / fastest criterion round - 1`: interference from other work
    /// only adds time, so the fastest round of each side is its least disturbed one.
    best: Option<f64>,
}

impl Row {
    fn new(allocator: &str, criterion: &[f64], harness: &[f64]) -> Self {
        let fastest = |values: &[f64]| values.iter().copied().min_by(f64::total_cmp);
        let ratios: Vec<f64> = criterion
            .iter()
            .zip(harness)
            .filter(|(c, _)| **c > 0.0)
            .map(|(c, h)| h / c)
            .collect();
        Self {
            allocator: allocator.to_owned(),
            criterion_ns: stats::median(criterion),
            harness_ns: stats::median(harness),
            paired: BOOTSTRAP.geometric_mean(&ratios),
            best: match (fastest(criterion), fastest(harness)) {
                (Some(c), Some(h)) if c > 0.0 => Some(h / c - 1.0),
                _ => None,
            },
        }
    }

    /// `harness / criterion - 1` of the medians: above zero when the harness measures the
    /// pair slower.
    fn difference(&self) -> Option<f64> {
        match (self.criterion_ns, self.harness_ns) {
            (Some(c), Some(h)) if c > 0.0 => Some(h / c - 1.0),
            _ => None,
        }
    }

    fn verdict(&self) -> Verdict {
        Verdict::read(self.paired, 1.0 - WITHIN..=1.0 + WITHIN)
    }
}

fn render(rows: &[Row]) -> String {
    let mut text = format!(
        "{:<14} {:>13} {:>11} {:>11} {:>24} {:>8}  within {:.0}%\n",
        "allocator",
        "criterion ns",
        "harness ns",
        "difference",
        "paired [95% interval]",
        "fastest",
        WITHIN * 100.0,
    );
    let percent = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{:+.1}%", v * 100.0));
    let ns = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
    for row in rows {
        let paired = row.paired.map_or_else(
            || "-".into(),
            |i| {
                format!(
                    "{:+.1}% [{:+.1}, {:+.1}]",
                    (i.estimate - 1.0) * 100.0,
                    (i.low - 1.0) * 100.0,
                    (i.high - 1.0) * 100.0
                )
            },
        );
        text.push_str(&format!(
            "{:<14} {:>13} {:>11} {:>11} {:>24} {:>8}  {}\n",
            row.allocator,
            ns(row.criterion_ns),
            ns(row.harness_ns),
            percent(row.difference()),
            paired,
            percent(row.best),
            row.verdict().label(),
        ));
    }
    text.push_str(&format!(
        "difference: of the medians over rounds; paired: geometric mean of each round's harness/criterion ratio, \
         with its {:.0}% bootstrap interval; fastest: fastest harness round against fastest criterion round\n\
         within {:.0}%: yes when the paired interval lies within {:.0}% of parity, NO when it lies beyond, \
         unresolved when it straddles the limit\n",
        BOOTSTRAP.confidence * 100.0,
        WITHIN * 100.0,
        WITHIN * 100.0,
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> TaskResult<Options> {
        crate::parse_task_args(args)
    }

    #[test]
    fn options_parse_and_refuse_bad_values() {
        let o = parse(&["--alloc", "sheaf, mimalloc", "--rounds", "5"]).expect("valid");
        assert_eq!(o.allocators.0, ["sheaf", "mimalloc"]);
        assert_eq!(o.rounds, 5);
        assert_eq!(o.measurement_secs, 3);
        let o = parse(&[]).expect("defaults");
        assert_eq!(o.allocators.0.len(), 5);
        crate::assert_usage_errors::<Options>(&[
            (&["--rounds", "0"][..], "expected a whole number above 0"),
            (&["--alloc", ","], "at least one allocator name"),
            (&["--measurement-time"], "a value is required"),
            (&["--fast"], "--fast"),
        ]);
    }

    #[test]
    fn criterion_estimate_prefers_the_slope() {
        let both =
            serde_json::json!({"slope": {"point_estimate": 4.0}, "mean": {"point_estimate": 5.0}});
        assert_eq!(criterion_estimate(&both), Some(4.0));
        let mean = serde_json::json!({"slope": null, "mean": {"point_estimate": 5.0}});
        assert_eq!(criterion_estimate(&mean), Some(5.0));
        assert_eq!(criterion_estimate(&serde_json::json!({})), None);
        let zero = serde_json::json!({"mean": {"point_estimate": 0.0}});
        assert_eq!(criterion_estimate(&zero), None);
    }

    #[test]
    fn rows_compare_medians_and_pair_rounds() {
        let row = Row::new("sheaf", &[10.0, 11.0, 30.0], &[10.4, 10.0, 9.0]);
        assert_eq!(row.criterion_ns, Some(11.0));
        assert_eq!(row.harness_ns, Some(10.0));
        let difference = row.difference().expect("both figures");
        assert!((difference - (10.0 / 11.0 - 1.0)).abs() < 1e-12);
        // Rounds' ratios 1.04, 10/11 and 0.3: geometric mean (1.04 * 10/11 * 0.3)^(1/3).
        let paired = row.paired.expect("three rounds");
        let expected = (1.04_f64 * 10.0 / 11.0 * 0.3).powf(1.0 / 3.0);
        assert!((paired.estimate - expected).abs() < 1e-12);
        assert!(paired.low <= paired.estimate && paired.estimate <= paired.high);
        // Fastest: 9.0 against 10.0.
        assert!((row.best.unwrap() - (9.0 / 10.0 - 1.0)).abs() < 1e-12);
        let table = render(&[row, Row::new("none", &[], &[1.0])]);
        assert!(table.lines().any(|l| l.starts_with("none")), "{table}");
        let none = table.lines().find(|l| l.starts_with("none")).unwrap();
        assert!(none.ends_with("  -"), "{table}");
    }

    #[test]
    fn the_verdict_reads_the_whole_interval() {
        // Every round within 2%: the interval lies inside the limit.
        let close = Row::new(
            "close",
            &[10.0, 10.0, 10.0, 10.0, 10.0],
            &[10.1, 10.2, 9.9, 10.0, 10.1],
        );
        assert_eq!(close.verdict(), Verdict::Yes);
        assert!(render(&[close]).lines().nth(1).unwrap().ends_with("  yes"));
        // Every round 20-30% slower: wholly beyond.
        let slow = Row::new("slow", &[10.0; 4], &[12.0, 13.0, 12.5, 12.2]);
        assert_eq!(slow.verdict(), Verdict::No);
        assert!(render(&[slow]).lines().nth(1).unwrap().ends_with("  NO"));
        // Every round 20% faster: beyond on the other side.
        let fast = Row::new("fast", &[10.0; 3], &[8.0, 8.0, 8.0]);
        assert_eq!(fast.verdict(), Verdict::No);
        // Rounds from -10% to +10%: the interval straddles the limit.
        let noisy = Row::new("noisy", &[10.0; 4], &[9.0, 11.0, 9.2, 10.8]);
        assert_eq!(noisy.verdict(), Verdict::Unresolved);
        assert!(
            render(&[noisy])
                .lines()
                .nth(1)
                .unwrap()
                .ends_with("  unresolved")
        );
        // One round gives no interval.
        assert_eq!(
            Row::new("one", &[10.0], &[10.1]).verdict(),
            Verdict::NoInterval
        );
    }
}
