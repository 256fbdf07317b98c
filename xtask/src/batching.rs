//! `cargo xtask batching`: batched deferred frees against per-object ones, on the same
//! allocator, on `workloads/deferred-churn.yaml` with one writer thread.
//!
//! Each round runs, for every allocator, `sheafbench run` of the spec twice: with
//! `deferred_batching=true` (sheaf: full `rcu_free` sheaves handed to grace periods and
//! recycled into the barn) and with `deferred_batching=false` (one deferred destruction per
//! object). The two run back to back, in an order that alternates from round to round, and
//! the allocators' order rotates, so that a drift of the machine lands on neither side. A
//! round's ratio is batched throughput over per-object throughput (each the median run of its
//! measurement); the figure is the geometric mean of the rounds' ratios with its 95%
//! percentile-bootstrap interval, and the verdict on the target (at least 3x) reads the whole
//! interval: `yes` when it lies at or above, `NO` when it lies below, `unresolved` when it
//! straddles the target. Beside it, `fastest` sets each side's fastest round against the
//! other's: interference only slows a run, and this host has slow phases that can begin in
//! the middle of a round.
//!
//! An allocator without batching (any design but sheaf's) ignores the switch, so its ratio
//! should be 1: a control that the difference comes from the switch, not from the order of
//! the runs.
//!
//! From the batched runs' stats (counted over the measured runs), the task also reports the
//! `rcu_free` sheaves recycled into the barn per second (onto its full list, or its held list
//! without aging out of it: with `rcu_hold_ticks`, nearly every recycled sheaf of
//! `deferred-churn` is a held one), the share flushed to the slabs instead, and the
//! fallbacks to per-object deferral.
//!
//! Writes `results/runs/<time>/batching.json` (every round's figures) and `batching.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use harness::stats::{self, Bootstrap, Interval, Verdict};

use crate::util::{self, Names, TaskError, TaskResult};

/// The ratio the batched side must reach.
const TARGET: f64 = 3.0;

/// The paired interval: the default resamples and confidence, from the task's own seed.
const BOOTSTRAP: Bootstrap = Bootstrap::with_seed(0xBA7C_4ED0);

/// Spec fields the task sets itself, which `--set` may not override.
const RESERVED: [&str; 2] = ["deferred_batching", "threads"];

/// deferred-churn at one writer, deferred batching on against off, per allocator.
#[derive(Debug, Parser)]
pub(crate) struct Options {
    /// Allocators (mimalloc has no batching and is the control, ratio 1).
    #[arg(
        long = "alloc",
        value_name = "LIST",
        value_parser = util::allocator_list,
        default_value = "sheaf,sheaf-thread,mimalloc"
    )]
    allocators: Names,
    /// Rounds, each running every allocator batched and per-object.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = util::positive::<usize>)]
    rounds: usize,
    /// The deferred-churn spec (default workloads/deferred-churn.yaml).
    #[arg(long, value_name = "FILE", value_parser = util::existing_file)]
    spec: Option<PathBuf>,
    /// Spec override passed to every run (e.g. readers=0, sheaf_capacity=64; comma-separated
    /// or repeated); deferred_batching and threads are the task's own.
    #[arg(
        long = "set",
        value_name = "KEY=VALUE",
        value_delimiter = ',',
        value_parser = spec_override
    )]
    sets: Vec<String>,
}

impl Options {
    /// The spec: `--spec`, or the workspace's deferred-churn.yaml.
    fn spec(&self) -> TaskResult<PathBuf> {
        match &self.spec {
            Some(spec) => Ok(spec.clone()),
            None => {
                let default = util::root().join("workloads").join("deferred-churn.yaml");
                util::existing_file(&default.to_string_lossy())
                    .map_err(|e| TaskError::Failed(format!("{}: {e}", default.display())))
            }
        }
    }
}

/// Parses one `--set key=value`, refusing the fields the task sets itself.
fn spec_override(pair: &str) -> Result<String, String> {
    let pair = pair.trim();
    let Some((key, _)) = pair.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
        return Err("expected key=value".into());
    };
    if RESERVED.contains(&key.trim()) {
        return Err(format!("`{}` is set by the task itself", key.trim()));
    }
    Ok(pair.to_owned())
}

/// One measurement's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Measured {
    /// Median run's throughput, ops/s.
    ops_per_s: f64,
    /// Measured seconds (all runs).
    seconds: f64,
    /// `rcu_free` sheaves put back into the barn (its full list, or its held list and not aged
    /// out of it since), flushed to the slabs (at once, or aged out of the held list), and
    /// objects deferred one by one because no sheaf could be used, over the measured runs.
    recycled: u64,
    flushed: u64,
    fallbacks: u64,
}

impl Measured {
    /// Reads one `runs` entry of a `sheafbench` result.
    fn from_run(run: &serde_json::Value) -> Option<Self> {
        let stat = |name: &str| run["stats"][name].as_u64().unwrap_or(0);
        Some(Self {
            ops_per_s: util::median_run_throughput(run)?,
            seconds: run["seconds"].as_f64().filter(|s| *s > 0.0)?,
            // A held sheaf is counted once when held, and once more as flushed if it ages out.
            recycled: (stat("rcu_sheaf_recycled") + stat("rcu_sheaf_held"))
                .saturating_sub(stat("rcu_sheaf_held_aged")),
            flushed: stat("rcu_sheaf_flushed"),
            fallbacks: stat("free_rcu_sheaf_fail"),
        })
    }
}

/// `cargo xtask batching`.
pub(crate) fn batching(options: Options) -> TaskResult {
    let spec = options.spec()?;
    let allocators = &options.allocators.0;
    let exe = util::build_sheafbench(None)?;
    let dir = util::new_run_dir()?;

    let mut order = allocators.clone();
    let mut batched: BTreeMap<String, Vec<Measured>> = BTreeMap::new();
    let mut per_object: BTreeMap<String, Vec<Measured>> = BTreeMap::new();
    for round in 0..options.rounds {
        for name in &order {
            eprintln!(
                "xtask: batching round {}/{}: {name}",
                round + 1,
                options.rounds
            );
            // Even rounds run batched first, odd rounds per-object first.
            let modes = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for on in modes {
                let json = dir.join(format!("{name}-{round}-batching-{on}.json"));
                let figures = measure(&exe, &options, &spec, name, on, &json)?;
                let side = if on { &mut batched } else { &mut per_object };
                side.entry(name.clone()).or_default().push(figures);
            }
        }
        order.rotate_left(1);
    }

    let rows: Vec<Row> = allocators
        .iter()
        .map(|name| Row::new(name, &batched[name], &per_object[name]))
        .collect();
    let table = render(&rows, &options, &spec);
    print!("{table}");
    let report = serde_json::json!({
        "provenance": util::provenance(),
        "spec": spec.display().to_string(),
        "sets": options.sets,
        "threads": 1,
        "rounds": options.rounds,
        "target": TARGET,
        "allocators": rows.iter().map(|r| serde_json::json!({
            "allocator": r.allocator,
            "batched_ops_per_s": r.batched,
            "per_object_ops_per_s": r.per_object,
            "paired_ratio": r.ratio.map(|i| serde_json::json!({
                "estimate": i.estimate,
                "low": i.low,
                "high": i.high,
                "confidence": BOOTSTRAP.confidence,
                "statistic": "geometric mean of per-round batched/per-object throughput ratios",
            })),
            "fastest_ratio": r.fastest,
            "recycled_per_s": r.recycled_per_s,
            "flushed_share": r.flushed_share,
            "fallbacks": r.fallbacks,
            "verdict": r.verdict().label(),
            "batched_rounds": batched[&r.allocator].iter().map(round_json).collect::<Vec<_>>(),
            "per_object_rounds": per_object[&r.allocator].iter().map(round_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let path = dir.join("batching.json");
    let mut text = serde_json::to_string_pretty(&report).unwrap_or_else(|_| report.to_string());
    text.push('\n');
    util::write_atomic(&path, &text)?;
    util::write_atomic(&dir.join("batching.md"), &table)?;
    println!("\nfigures in {}", path.display());
    Ok(())
}

fn round_json(m: &Measured) -> serde_json::Value {
    serde_json::json!({
        "ops_per_s": m.ops_per_s,
        "seconds": m.seconds,
        "rcu_sheaf_recycled": m.recycled,
        "rcu_sheaf_flushed": m.flushed,
        "free_rcu_sheaf_fail": m.fallbacks,
    })
}

/// One `sheafbench run` of the spec for `name` at one thread, batching `on` or off.
fn measure(
    exe: &Path,
    options: &Options,
    spec: &Path,
    name: &str,
    on: bool,
    json: &Path,
) -> TaskResult<Measured> {
    let mut run = Command::new(exe);
    run.current_dir(util::root())
        .arg("run")
        .arg(spec)
        .args(["--alloc", name, "--threads", "1", "--set"])
        .arg(format!("deferred_batching={on}"));
    for set in &options.sets {
        run.args(["--set", set]);
    }
    run.arg("--json")
        .arg(json)
        .stdout(std::process::Stdio::null());
    util::run(run)?;
    let result = util::read_json(json)?;
    Measured::from_run(&result["runs"][0]).ok_or_else(|| {
        TaskError::Failed(format!(
            "{}: no throughput sample for {name} (did the measurement fail?)",
            json.display()
        ))
    })
}

/// One allocator's figures over the rounds.
#[derive(Debug)]
struct Row {
    allocator: String,
    /// Medians over rounds, ops/s.
    batched: Option<f64>,
    per_object: Option<f64>,
    /// Geometric mean of the rounds' batched/per-object ratios with its interval; `None` with
    /// fewer than two rounds.
    ratio: Option<Interval>,
    /// Fastest batched round over fastest per-object round: interference from other work only
    /// slows a run, so each side's fastest round is its least disturbed one.
    fastest: Option<f64>,
    /// Batched side: recycled sheaves per measured second, over all rounds.
    recycled_per_s: Option<f64>,
    /// Batched side: flushed / (recycled + flushed); `None` when none completed.
    flushed_share: Option<f64>,
    /// Batched side: fallbacks to per-object deferral, all rounds.
    fallbacks: u64,
}

impl Row {
    fn new(allocator: &str, batched: &[Measured], per_object: &[Measured]) -> Self {
        let ops = |side: &[Measured]| side.iter().map(|m| m.ops_per_s).collect::<Vec<_>>();
        let ratios: Vec<f64> = batched
            .iter()
            .zip(per_object)
            .map(|(b, p)| b.ops_per_s / p.ops_per_s)
            .collect();
        let fastest = |side: &[Measured]| side.iter().map(|m| m.ops_per_s).max_by(f64::total_cmp);
        let seconds: f64 = batched.iter().map(|m| m.seconds).sum();
        let recycled: u64 = batched.iter().map(|m| m.recycled).sum();
        let flushed: u64 = batched.iter().map(|m| m.flushed).sum();
        Self {
            allocator: allocator.to_owned(),
            batched: stats::median(&ops(batched)),
            per_object: stats::median(&ops(per_object)),
            ratio: BOOTSTRAP.geometric_mean(&ratios),
            fastest: match (fastest(batched), fastest(per_object)) {
                (Some(b), Some(p)) => Some(b / p),
                _ => None,
            },
            recycled_per_s: (seconds > 0.0).then(|| recycled as f64 / seconds),
            flushed_share: (recycled + flushed > 0)
                .then(|| flushed as f64 / (recycled + flushed) as f64),
            fallbacks: batched.iter().map(|m| m.fallbacks).sum(),
        }
    }

    fn verdict(&self) -> Verdict {
        Verdict::read(self.ratio, TARGET..=f64::INFINITY)
    }
}

fn render(rows: &[Row], options: &Options, spec: &Path) -> String {
    let sets = if options.sets.is_empty() {
        String::new()
    } else {
        format!(", --set {}", options.sets.join(","))
    };
    let mut text = format!(
        "{} at 1 writer thread, {} rounds{sets}\n{:<14} {:>12} {:>14} {:>22} {:>8} {:>12} {:>8} {:>10}  >= {TARGET:.0}x\n",
        spec.display(),
        options.rounds,
        "allocator",
        "batched M/s",
        "per-object M/s",
        "ratio [95% interval]",
        "fastest",
        "recycled/s",
        "flushed",
        "fallbacks",
    );
    let mops = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{:.2}", v / 1e6));
    for row in rows {
        let ratio = row.ratio.map_or_else(
            || "-".into(),
            |i| format!("{:.2} [{:.2}, {:.2}]", i.estimate, i.low, i.high),
        );
        let recycled = row
            .recycled_per_s
            .map_or_else(|| "-".into(), |r| format!("{:.2} M", r / 1e6));
        let flushed = row
            .flushed_share
            .map_or_else(|| "-".into(), |f| format!("{:.1}%", f * 100.0));
        text.push_str(&format!(
            "{:<14} {:>12} {:>14} {:>22} {:>8} {:>12} {:>8} {:>10}  {}\n",
            row.allocator,
            mops(row.batched),
            mops(row.per_object),
            ratio,
            row.fastest
                .map_or_else(|| "-".into(), |f| format!("{f:.2}")),
            recycled,
            flushed,
            row.fallbacks,
            row.verdict().label(),
        ));
    }
    text.push_str(&format!(
        "throughputs: medians over rounds; ratio: geometric mean of each round's batched/per-object ratio, with its \
         {:.0}% bootstrap interval; fastest: fastest batched round over fastest per-object round\nrecycled/s: rcu_free sheaves put back in the barn (full or held list) per measured second (batched side); \
         flushed: share of completed rcu_free sheaves flushed to the slabs instead; fallbacks: objects deferred one by one\n\
         >= {TARGET:.0}x: yes when the whole interval is at or above {TARGET:.0}, NO when it is below, unresolved when it straddles\n",
        BOOTSTRAP.confidence * 100.0,
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> TaskResult<Options> {
        crate::parse_task_args(args)
    }

    fn measured(ops_per_s: f64, recycled: u64, flushed: u64) -> Measured {
        Measured {
            ops_per_s,
            seconds: 1.5,
            recycled,
            flushed,
            fallbacks: 0,
        }
    }

    #[test]
    fn options_parse_and_refuse_bad_values() {
        let o = parse(&[
            "--alloc",
            "sheaf",
            "--rounds",
            "3",
            "--set",
            "readers=0, sheaf_capacity=64",
            "--set",
            "writers=1",
        ])
        .expect("valid");
        assert_eq!(o.allocators.0, ["sheaf"]);
        assert_eq!(o.rounds, 3);
        assert_eq!(o.sets, ["readers=0", "sheaf_capacity=64", "writers=1"]);
        assert!(o.spec().unwrap().ends_with("workloads/deferred-churn.yaml"));
        let defaults = parse(&[]).expect("defaults");
        assert_eq!(defaults.allocators.0, ["sheaf", "sheaf-thread", "mimalloc"]);
        assert_eq!(defaults.rounds, 5);
        crate::assert_usage_errors::<Options>(&[
            (&["--rounds", "0"][..], "expected a whole number above 0"),
            (&["--rounds"], "a value is required"),
            (&["--set", "readers"], "expected key=value"),
            (&["--spec", "no/such/spec.yaml"], "no such file"),
            (&["--fast"], "--fast"),
            (&["--set", "deferred_batching=false"], "set by the task"),
            (&["--set", "threads=2"], "set by the task"),
        ]);
    }

    #[test]
    fn a_measurement_is_read_from_its_run() {
        let run = serde_json::json!({
            "seconds": 1.5,
            "samples": [
                {"throughput_ops_per_s": 30e6},
                {"throughput_ops_per_s": 10e6},
                {"throughput_ops_per_s": 20e6},
            ],
            "stats": {"rcu_sheaf_recycled": 90, "rcu_sheaf_flushed": 10, "free_rcu_sheaf_fail": 2},
        });
        let m = Measured::from_run(&run).expect("complete");
        assert_eq!(m.ops_per_s, 20e6);
        assert_eq!((m.recycled, m.flushed, m.fallbacks), (90, 10, 2));
        // Held sheaves are put back too; those that aged out were flushed.
        let held = serde_json::json!({
            "seconds": 1.0,
            "samples": [{"throughput_ops_per_s": 5.0}],
            "stats": {"rcu_sheaf_recycled": 25, "rcu_sheaf_held": 1000,
                      "rcu_sheaf_held_aged": 30, "rcu_sheaf_flushed": 48},
        });
        let m = Measured::from_run(&held).expect("complete");
        assert_eq!((m.recycled, m.flushed), (995, 48));
        // No stats (an allocator without them): zeros, not a failure.
        let bare = serde_json::json!({"seconds": 1.0, "samples": [{"throughput_ops_per_s": 5.0}]});
        assert_eq!(Measured::from_run(&bare).expect("complete").recycled, 0);
        // A failed measurement has no samples.
        assert_eq!(
            Measured::from_run(&serde_json::json!({"seconds": 1.0})),
            None
        );
    }

    #[test]
    fn rows_pair_rounds_and_read_the_target() {
        let batched = [
            measured(33e6, 1_500_000, 15_000),
            measured(30e6, 1_400_000, 14_000),
            measured(35e6, 1_600_000, 16_000),
        ];
        let per_object = [
            measured(15e6, 0, 0),
            measured(16e6, 0, 0),
            measured(14e6, 0, 0),
        ];
        let row = Row::new("sheaf", &batched, &per_object);
        assert_eq!(row.batched, Some(33e6));
        assert_eq!(row.per_object, Some(15e6));
        let ratio = row.ratio.expect("three rounds");
        let expected = (33.0_f64 / 15.0 * 30.0 / 16.0 * 35.0 / 14.0).powf(1.0 / 3.0);
        assert!((ratio.estimate - expected).abs() < 1e-12);
        assert!(ratio.low <= ratio.estimate && ratio.estimate <= ratio.high);
        // About 2.2: wholly below 3.
        assert_eq!(row.verdict(), Verdict::No);
        assert!((row.fastest.unwrap() - 35.0 / 16.0).abs() < 1e-12);
        let recycled = row.recycled_per_s.expect("measured seconds");
        assert!((recycled - 4_500_000.0 / 4.5).abs() < 1e-6);
        assert!((row.flushed_share.unwrap() - 45_000.0 / 4_545_000.0).abs() < 1e-12);

        let met = Row::new(
            "sheaf",
            &[measured(90e6, 1, 0), measured(92e6, 1, 0)],
            &[measured(29e6, 0, 0), measured(30e6, 0, 0)],
        );
        assert_eq!(met.verdict(), Verdict::Yes);
        let straddles = Row::new(
            "sheaf",
            &[measured(90e6, 1, 0), measured(60e6, 1, 0)],
            &[measured(29e6, 0, 0), measured(30e6, 0, 0)],
        );
        assert_eq!(straddles.verdict(), Verdict::Unresolved);
        let one = Row::new("sheaf", &[measured(90e6, 1, 0)], &[measured(30e6, 0, 0)]);
        assert_eq!(one.verdict(), Verdict::NoInterval);

        let options = parse(&["--set", "readers=0"]).expect("valid");
        let table = render(&[row, met, one], &options, &options.spec().unwrap());
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].ends_with("--set readers=0"), "{table}");
        assert!(
            lines[2].starts_with("sheaf") && lines[2].ends_with("  NO"),
            "{table}"
        );
        assert!(lines[3].ends_with("  yes"), "{table}");
        assert!(lines[4].ends_with("  -"), "{table}");
        assert!(
            lines[2].contains("33.00") && lines[2].contains("15.00"),
            "{table}"
        );
    }
}
