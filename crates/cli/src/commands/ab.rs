//! `sheafbench ab`: two builds of sheafbench measured in the same interleaved rounds, with a
//! verdict per (workload, threads, allocator) on the change from the old build to the new.
//!
//! `compare` judges two result files, each from an invocation of its own; on a machine whose
//! speed drifts between invocations (a shared VM), that drift is part of every change it
//! sees, and a real change of a few percent hides in it. Here both builds measure every
//! allocator in every round, one child process after the other, in an order rotated from
//! round to round, so drift slower than a round touches both sides alike and cancels in
//! the ratio of each round. The change is the Hodges-Lehmann estimate of the rounds' log
//! ratios, with its 95% interval from Wilcoxon's signed-rank test (distribution-free, and
//! less swayed than a mean by the odd round that a shared machine slows by a third; six
//! rounds at least). The verdict: "faster" or "slower" when the whole interval lies beyond ±floor,
//! "no change" when the whole interval lies within it or the estimate does, "unresolved"
//! when the estimate lies beyond the floor and the interval does not. A measurement flagged
//! busy (involuntary context switches) or stolen from is named, and keeps its verdict: its
//! round's other side ran under the same load, and what is left is in the interval.

use std::path::PathBuf;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use harness::ResultFile;
use harness::machine::Machine;
use harness::result::PairedRatio;
use harness::stats;

use super::run::{self as run_cmd, Entry, Group, Sinks};
use crate::benchmark::executor::Build;
use crate::benchmark::plan::{self, Planned};
use crate::benchmark::rounds;
use crate::cli::AbArgs;
use crate::error::CliError;
use crate::output::{self, format, warnings};

/// The fewest rounds that give a 95% signed-rank interval.
const MIN_ROUNDS: u32 = 6;

/// The largest `--floor` taken, in percent.
const MAX_FLOOR: f64 = 50.0;

/// The change of paired-round `ratios`: the Hodges-Lehmann estimate of their log and its
/// 95% signed-rank interval ([`stats::signed_rank_interval`]), as ratios `(estimate, low,
/// high)`; `None` with fewer than six positive rounds (too few for a 95% interval).
pub(crate) fn change_interval(ratios: &[f64]) -> Option<(f64, f64, f64)> {
    if ratios.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        return None;
    }
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let i = stats::signed_rank_interval(&logs, 0.95)?;
    Some((i.estimate.exp(), i.low.exp(), i.high.exp()))
}

/// The verdict on a change (new over old, higher is better) from its interval and the
/// floor (a share, e.g. 0.02): see the module documentation.
pub(crate) fn verdict(interval: Option<(f64, f64, f64)>, floor: f64) -> &'static str {
    let Some((estimate, low, high)) = interval else {
        return "unresolved (need 6+ rounds)";
    };
    let (down, up) = (1.0 / (1.0 + floor), 1.0 + floor);
    if low > up {
        "faster"
    } else if high < down {
        "slower"
    } else if (down..=up).contains(&estimate) {
        "no change"
    } else {
        "unresolved"
    }
}

/// One row of the verdicts: a figure of one allocator at one thread count, new over old.
struct Row<'a> {
    pair: &'a PairedRatio,
    figure: &'static str,
    rounds: &'a [f64],
}

/// The groups of `ab`: per planned workload and thread count, every allocator measured by
/// the old build and then by the new (adjacent in the first round's order).
fn ab_groups<'a>(
    planned: &[Planned],
    allocators: &[&'a str],
    builds: &'a [Build; 2],
) -> Vec<Group<'a>> {
    let mut groups = Vec::new();
    for p in planned {
        let mut one_run = p.workload.clone();
        one_run.spec.runs = 1;
        for &threads in &p.workload.spec.threads.0 {
            let entries = allocators
                .iter()
                .flat_map(|&allocator| builds.iter().map(move |build| (allocator, build)))
                .map(|(allocator, build)| Entry {
                    workload: one_run.clone(),
                    allocator,
                    label: build.label(allocator),
                    build: Some(build),
                })
                .collect();
            groups.push(Group {
                name: p.workload.spec.name.clone(),
                threads,
                rounds: p.workload.spec.runs,
                entries,
            });
        }
    }
    groups
}

/// `ab`.
pub(crate) fn run(args: AbArgs) -> Result<(), CliError> {
    if !(args.floor.is_finite() && (0.0..=MAX_FLOOR).contains(&args.floor)) {
        return Err(CliError::Usage {
            option: format!("--floor {}", args.floor),
            message: format!("expected a change in percent between 0 and {MAX_FLOOR}, e.g. 2"),
        });
    }
    let floor = args.floor / 100.0;
    let allocators = plan::allocators(&args.selection.alloc)?;
    plan::check_output("--json", args.json.as_deref())?;
    plan::check_output("--verdicts", args.verdicts.as_deref())?;
    let new_exe = match &args.new {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(|e| CliError::Usage {
            option: "--new".into(),
            message: format!("cannot find this executable ({e}); give --new"),
        })?,
    };
    let probe = |name: &str, option: &str, exe: &PathBuf| {
        Build::probe(name, exe).map_err(|message| CliError::Usage {
            option: format!("{option} {}", exe.display()),
            message,
        })
    };
    let builds = [
        probe("old", "--old", &args.old)?,
        probe("new", "--new", &new_exe)?,
    ];
    let planned = args
        .workloads
        .iter()
        .map(|file| plan::load(file, &args.selection, &[]))
        .collect::<Result<Vec<_>, _>>()?;
    plan::check_phases(&planned, &allocators)?;
    if let Some(p) = planned.iter().find(|p| p.workload.spec.runs < MIN_ROUNDS) {
        return Err(CliError::Usage {
            option: format!("--runs {}", p.workload.spec.runs),
            message: format!(
                "{}: `ab` needs {MIN_ROUNDS} rounds or more for a 95% interval of the change; \
                 give --runs {MIN_ROUNDS} or more (20 or more to see a 10% change on a noisy \
                 machine)",
                p.workload.spec.name
            ),
        });
    }
    let mut results = ResultFile::new(Machine::detect());
    for build in &builds {
        let note = format!(
            "build {}: {} ({}, sha256 {})",
            build.name,
            build.exe.display(),
            build.version,
            build.sha256
        );
        output::note(&mut results, note);
    }
    if builds[0].sha256 == builds[1].sha256 {
        let note = "the two builds are one binary (same SHA-256): an A/A run, every change \
                    below is noise";
        output::note(&mut results, note.to_owned());
    }
    for note in planned.iter().flat_map(|p| &p.skipped) {
        output::note(&mut results, note.clone());
    }
    let sinks = Sinks {
        json: args.json.as_deref(),
        markdown: None,
        baseline: None,
    };
    let groups = ab_groups(&planned, &allocators, &builds);
    run_cmd::execute_groups(
        &groups,
        &args.selection,
        &mut results,
        &sinks,
        |_, merged| {
            // Entries come in (old, new) pairs of one allocator.
            merged
                .chunks(2)
                .filter_map(|pair| match pair {
                    [Some(old), Some(new)] => rounds::paired(new, old),
                    _ => None,
                })
                .collect()
        },
    )?;

    let mut rows = Vec::new();
    for pair in &results.paired {
        rows.push(Row {
            pair,
            figure: "throughput",
            rounds: &pair.rounds,
        });
        if let Some(cpu) = &pair.per_cpu_second {
            rows.push(Row {
                pair,
                figure: "per CPU-second",
                rounds: &cpu.rounds,
            });
        }
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header([
        "workload",
        "threads",
        "allocator",
        "figure",
        "rounds",
        "new / old",
        "95% interval",
        "verdict",
    ]);
    let mut tally: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut slower = Vec::new();
    let mut json_rows = Vec::new();
    for row in &rows {
        let interval = change_interval(row.rounds);
        let verdict = verdict(interval, floor);
        *tally.entry(verdict).or_default() += 1;
        let allocator = row
            .pair
            .allocator
            .strip_suffix("@new")
            .unwrap_or(&row.pair.allocator);
        if verdict == "slower" {
            slower.push(format!(
                "{}/{allocator}/{}t/{}",
                row.pair.workload, row.pair.threads, row.figure
            ));
        }
        table.add_row([
            row.pair.workload.clone(),
            row.pair.threads.to_string(),
            allocator.to_owned(),
            row.figure.to_owned(),
            row.rounds.len().to_string(),
            interval.map_or_else(|| "-".into(), |(e, _, _)| format::ratio(e)),
            interval.map_or_else(
                || "-".into(),
                |(_, low, high)| {
                    format!(
                        "{:+.1}% .. {:+.1}%",
                        100.0 * (low - 1.0),
                        100.0 * (high - 1.0)
                    )
                },
            ),
            verdict.to_owned(),
        ]);
        json_rows.push(serde_json::json!({
            "workload": row.pair.workload,
            "threads": row.pair.threads,
            "allocator": allocator,
            "figure": row.figure,
            "rounds": row.rounds,
            "change": interval.map(|(e, _, _)| e - 1.0),
            "interval": interval.map(|(_, low, high)| [low - 1.0, high - 1.0]),
            "verdict": verdict,
        }));
    }
    for col in 4..7 {
        if let Some(column) = table.column_mut(col) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!(
        "new ({}) over old ({}), paired by round; a verdict needs the whole 95% interval beyond ±{}%",
        builds[1].exe.display(),
        builds[0].exe.display(),
        args.floor
    );
    println!("{table}");
    let verdicts: Vec<String> = tally.iter().map(|(v, n)| format!("{n} {v}")).collect();
    println!("verdicts: {}", verdicts.join(", "));
    // Load during a round slows both builds' children of that round alike only roughly:
    // the flagged measurements are named, the verdicts stand (the interval carries the noise).
    let flagged: Vec<String> = results
        .runs
        .iter()
        .filter(|m| super::compare::is_flagged(m))
        .map(|m| format!("{}/{}/{}t", m.workload, m.allocator, m.config.threads))
        .collect();
    if !flagged.is_empty() {
        println!(
            "flagged busy or stolen from in {} of {} measurements (the intervals carry that noise): {}",
            flagged.len(),
            results.runs.len(),
            flagged.join(", ")
        );
    }
    warnings::print(&warnings::collect(&results.runs));
    if let Some(path) = &args.verdicts {
        let doc = serde_json::json!({
            "old": builds[0].exe.display().to_string(),
            "old_sha256": builds[0].sha256,
            "new": builds[1].exe.display().to_string(),
            "new_sha256": builds[1].sha256,
            "floor": floor,
            "confidence": 0.95,
            "rows": json_rows,
        });
        crate::export::write_value(path, &doc)?;
    }
    if !results.failures.is_empty() {
        return Err(CliError::MeasurementsFailed {
            failed: results.failures.len(),
            total: results.runs.len() + results.failures.len(),
        });
    }
    if args.fail_on_slower && !slower.is_empty() {
        return Err(CliError::Slower(slower));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_change_is_the_signed_rank_estimate_of_the_log_ratios() {
        let (estimate, low, high) = change_interval(&[0.9; 6]).unwrap();
        assert!((estimate - 0.9).abs() < 1e-12);
        assert!((low - 0.9).abs() < 1e-12 && (high - 0.9).abs() < 1e-12);
        // Six rounds reach 95% only with the extremes.
        let (_, low, high) = change_interval(&[0.8, 1.0, 1.2, 0.9, 1.1, 1.0]).unwrap();
        assert!(
            (low - 0.8).abs() < 1e-12 && (high - 1.2).abs() < 1e-12,
            "{low} {high}"
        );
        assert_eq!(change_interval(&[0.9; 5]), None);
        assert_eq!(change_interval(&[0.9, 0.9, 0.9, 0.9, 0.9, 0.0]), None);
    }

    #[test]
    fn a_verdict_needs_the_whole_interval_beyond_the_floor() {
        assert_eq!(verdict(Some((0.9, 0.88, 0.92)), 0.02), "slower");
        assert_eq!(verdict(Some((1.1, 1.08, 1.12)), 0.02), "faster");
        // Significant, but inside the floor.
        assert_eq!(verdict(Some((1.01, 1.005, 1.015)), 0.02), "no change");
        // Beyond the floor by the estimate only.
        assert_eq!(verdict(Some((0.95, 0.85, 1.05)), 0.02), "unresolved");
        assert_eq!(verdict(Some((1.0, 0.9, 1.1)), 0.02), "no change");
        assert_eq!(verdict(None, 0.02), "unresolved (need 6+ rounds)");
    }
}
