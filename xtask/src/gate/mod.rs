//! `cargo xtask gate`: does this tree make the allocator slower than the references?
//!
//! Two signals, each judged figure by figure (see `decide`):
//!
//! 1. Instruction counts of the hot operations under callgrind (`instructions`): the same
//!    binary gives the same count every time, so a 1% tolerance catches small slowdowns of
//!    the code path without false alarms from a noisy machine.
//! 2. Wall-clock throughput ratios of sheaf against fixed comparators measured in the same
//!    run (`ratios`), as a bootstrap confidence interval over interleaved rounds
//!    (`harness::stats`): catches what instruction counts cannot see (cache misses, contention),
//!    and flags a regression only when the whole interval is worse than the reference by
//!    more than the threshold.
//!
//! With at least `--min-history` earlier gate runs of this machine in the results history
//! (`noise`), a ratio is judged against that history's noise fence instead of the blessed
//! reference; every gate run is recorded there (tagged, and so left out of the history, when
//! it injects a slowdown or changes the rounds or duration).
//!
//! `--bless` rewrites both reference files from a real run of this tree (refused on a dirty
//! tree, so that a reference always names the revision it measured). `--slowdown N` builds
//! sheaf with its `slowdown` feature adding N per mille of the per-thread fast-path pair's
//! reference instruction count to every pair (fixed at compile time; 50 is 2 instructions at a
//! 48-instruction pair): the check that the gate catches an injected slowdown.

mod decide;
mod instructions;
mod noise;
mod ratios;
mod reference;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use harness::stats::{Bootstrap, Interval};

use crate::util::{self, TaskError, TaskResult};
use decide::Row;

/// Instruction counts more than this fraction above their reference are regressions.
const TOLERANCE: f64 = 0.01;
/// Ratios whose whole interval lies more than this fraction below the reference are
/// regressions. Wide, because one gate's interval does not cover the drift between gates on a
/// shared VM (docs/decisions.md, "xtask").
const THRESHOLD: f64 = 0.20;
/// The ratio intervals: the default resamples and confidence, from the gate's own seed.
const BOOTSTRAP: Bootstrap = Bootstrap::with_seed(0x5EAF_0BE7);
/// Further runs of the instruction benchmarks while a figure looks worse than its reference.
const MEASURE_AGAIN: usize = 2;

/// The regression gate against results/reference/: instruction counts under callgrind and
/// wall-clock ratios against comparators.
#[derive(Debug, Parser)]
#[command(after_help = "exit status: 0 pass, 1 regression, 2 the gate could not run")]
pub(crate) struct Options {
    /// Rewrite results/reference/{instructions,ratios}.json (clean tree only).
    #[arg(long)]
    bless: bool,
    /// Build sheaf with feature `slowdown`, adding N per mille of the per-thread pair's
    /// reference instruction count to every pair.
    #[arg(
        long = "slowdown",
        value_name = "N",
        value_parser = non_negative,
        allow_hyphen_values = true
    )]
    slowdown_permille: Option<u32>,
    /// Interleaved rounds of the wall-clock ratios.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = at_least_two)]
    rounds: usize,
    /// Measured time of each run of a round.
    #[arg(long, value_name = "D", default_value = "100ms")]
    duration: String,
    /// Check one signal only.
    #[arg(long, value_name = "SIGNAL")]
    only: Option<Signal>,
    /// Instruction-count tolerance, a fraction.
    #[arg(long, value_name = "F", default_value_t = TOLERANCE, value_parser = fraction)]
    tolerance: f64,
    /// Ratio threshold, a fraction.
    #[arg(long, value_name = "F", default_value_t = THRESHOLD, value_parser = fraction)]
    threshold: f64,
    /// Read (or, with --bless, write) references in D instead of results/reference/;
    /// blessing into D is allowed on a dirty tree (for experiments such as
    /// .ci/gate-proof.sh), and the provenance says so.
    #[arg(long, value_name = "D")]
    reference_dir: Option<PathBuf>,
    /// Earlier gate runs of this machine the results history needs before it judges the
    /// ratios by its noise fence instead of the reference (0: never).
    #[arg(long, value_name = "N", default_value_t = noise::MIN_RUNS)]
    min_history: usize,
    #[command(flatten)]
    history: crate::history::HistoryOptions,
}

/// The gate's two signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Signal {
    /// Instruction counts under callgrind.
    Instructions,
    /// Wall-clock ratios against the comparators.
    Ratios,
}

impl Options {
    /// Whether the instruction counts are checked.
    fn instructions(&self) -> bool {
        self.only != Some(Signal::Ratios)
    }

    /// Whether the wall-clock ratios are checked.
    fn ratios(&self) -> bool {
        self.only != Some(Signal::Instructions)
    }
}

fn non_negative(text: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|_| "expected a non-negative integer".to_owned())
}

fn at_least_two(text: &str) -> Result<usize, String> {
    match non_negative(text)? {
        rounds if rounds >= 2 => Ok(rounds as usize),
        _ => Err("must be at least 2".into()),
    }
}

fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if (0.0..1.0).contains(&f) => Ok(f),
        _ => Err("expected a fraction in [0, 1), e.g. 0.02".into()),
    }
}

/// `cargo xtask gate`.
pub(crate) fn gate(options: Options) -> TaskResult {
    if options.bless {
        if options.slowdown_permille.is_some() {
            return Err(TaskError::Usage(
                "gate: --bless with --slowdown would record a slowed build".into(),
            ));
        }
        if !(options.instructions() && options.ratios()) {
            return Err(TaskError::Usage(
                "gate: --bless records both signals; drop --only".into(),
            ));
        }
        let dirty = util::dirty_paths()?;
        if !dirty.is_empty() && options.reference_dir.is_none() {
            return Err(TaskError::Failed(format!(
                "gate --bless refused: the git tree has uncommitted changes, and a reference must \
                 name the revision it measured:\n{}",
                dirty.join("\n")
            )));
        }
    }
    let run_dir = util::new_run_dir()?;
    let reference_dir = options
        .reference_dir
        .clone()
        .unwrap_or_else(reference::committed_dir);

    // The slowdown's size, in instructions per pair, from the reference it is judged against.
    let slowdown = options
        .slowdown_permille
        .map(|permille| reference::slowdown_instructions(&reference_dir, permille))
        .transpose()?;
    let slowdown_instructions = slowdown.map(|(instructions, _)| instructions);

    let mut remeasured: Vec<String> = Vec::new();
    // Signal 1: instruction counts. Without valgrind there is no callgrind: the signal is
    // reported as not measured (and --bless refuses), never passed in silence.
    let valgrind_missing =
        options.instructions() && util::fact("valgrind", &["--version"]).is_none();
    if valgrind_missing && options.bless {
        return Err(TaskError::Failed(
            "gate --bless: valgrind is not installed, and the instruction signal needs callgrind"
                .into(),
        ));
    }
    let reference_counts = if options.instructions() && !options.bless {
        reference::load_instructions(&reference_dir)?
    } else {
        None
    };
    let counts = if options.instructions() && !valgrind_missing {
        let path = instructions::ensure_runner()?;
        let mut counts = instructions::measure(&path, slowdown_instructions)?;
        // Measured again while a figure looks worse than its reference (or, to bless, once
        // more in any case); each figure keeps its lowest count. A slower code path counts
        // high in every run; a run disturbed by something outside the code does not repeat.
        for attempt in 0..MEASURE_AGAIN {
            let suspects: Vec<String> = if options.bless {
                if attempt > 0 {
                    break;
                }
                counts.keys().cloned().collect()
            } else {
                above_reference(&counts, reference_counts.as_ref(), options.tolerance)
            };
            if suspects.is_empty() {
                break;
            }
            eprintln!(
                "xtask: measuring the instruction counts again ({}): {}",
                attempt + 1,
                suspects.join(", ")
            );
            let again = instructions::measure(&path, slowdown_instructions)?;
            for name in &suspects {
                if let (Some(now), Some(&other)) = (counts.get_mut(name), again.get(name)) {
                    if other != *now {
                        remeasured.push(format!("{name}: {now} then {other}"));
                    }
                    *now = (*now).min(other);
                }
            }
        }
        Some(counts)
    } else {
        None
    };

    // Signal 2: wall-clock ratios.
    let (samples, intervals) = if options.ratios() {
        let exe = util::build_sheafbench(slowdown_instructions)?;
        let plan = ratios::RatioPlan {
            rounds: options.rounds,
            duration: options.duration.clone(),
        };
        let samples = ratios::measure(&exe, &plan, &run_dir)?;
        let intervals = intervals_of(&samples);
        (Some(samples), Some(intervals))
    } else {
        (None, None)
    };
    // This machine's earlier gate runs, read before this one is recorded.
    let machine = history::Fingerprint::of(&harness::machine::Machine::detect()).id();
    let histories = match &intervals {
        Some(intervals) if !options.history.no_history && options.min_history > 0 => {
            match history::open(&options.history.location()).and_then(|mut store| {
                noise::histories(store.as_mut(), &machine, intervals.keys().cloned())
            }) {
                Ok(histories) => histories,
                Err(error) => {
                    eprintln!("xtask: the results history is not read ({error})");
                    BTreeMap::new()
                }
            }
        }
        _ => BTreeMap::new(),
    };

    let mut provenance = util::provenance();
    provenance["dirty_tree"] = serde_json::json!(!util::dirty_paths()?.is_empty());
    let method = serde_json::json!({
        "workloads": ratios::WORKLOADS,
        "subject": ratios::SUBJECT,
        "comparators": ratios::COMPARATORS,
        "rounds": options.rounds,
        "duration": options.duration,
        "threads": 1,
        "statistic": "geometric mean of per-round ratios",
        "interval": format!(
            "percentile bootstrap, {} resamples, confidence {}",
            BOOTSTRAP.resamples, BOOTSTRAP.confidence
        ),
    });
    let measured = serde_json::json!({
        "provenance": provenance,
        "slowdown_permille": options.slowdown_permille,
        "slowdown_instructions_per_pair": slowdown_instructions,
        "instruction_counts_differed": remeasured,
        "instructions": counts,
        "ratios": intervals.as_ref().map(|i| reference::ratios_json(i, method.clone(), &provenance)["figures"].clone()),
    });
    util::write_atomic(&run_dir.join("gate.json"), &pretty(&measured))?;
    let mut run = noise::gate_run(
        &measured,
        counts.as_ref(),
        samples.as_ref(),
        intervals.as_ref(),
        tag(&options),
    );
    run.config = method.clone();
    run.source = Some(run_dir.join("gate.json").display().to_string());
    options.history.record(run);

    if options.bless {
        let (Some(counts), Some(intervals)) = (&counts, &intervals) else {
            return Err(TaskError::Failed(
                "gate --bless: both signals are needed".into(),
            ));
        };
        if counts.is_empty() || intervals.is_empty() {
            return Err(TaskError::Failed(
                "gate --bless: a signal measured no figure; nothing written".into(),
            ));
        }
        util::write_atomic(
            &reference::instructions_path(&reference_dir),
            &pretty(&reference::instructions_json(counts, &provenance)),
        )?;
        util::write_atomic(
            &reference::ratios_path(&reference_dir),
            &pretty(&reference::ratios_json(intervals, method, &provenance)),
        )?;
        println!(
            "Blessed references from {}:",
            reference::describe_provenance(&provenance)
        );
        let rows = rows_for(Some(counts), Some(intervals), None, None, &options);
        print!("{}", decide::render_table(&rows));
        println!(
            "\nwrote {} and {}",
            reference::instructions_path(&reference_dir).display(),
            reference::ratios_path(&reference_dir).display()
        );
        return Ok(());
    }

    let reference_ratios = if options.ratios() {
        reference::load_ratios(&reference_dir)?
    } else {
        None
    };
    let counts_incomparable = reference_counts
        .as_ref()
        .and_then(|l| reference::incomparable("instructions", &l.provenance, &provenance));
    let ratios_incomparable = reference_ratios
        .as_ref()
        .and_then(|l| reference::incomparable("ratios", &l.provenance, &provenance));
    for (signal, loaded, path, incomparable) in [
        (
            "instructions",
            reference_counts.as_ref().map(|l| &l.provenance),
            reference::instructions_path(&reference_dir),
            &counts_incomparable,
        ),
        (
            "ratios",
            reference_ratios.as_ref().map(|l| &l.provenance),
            reference::ratios_path(&reference_dir),
            &ratios_incomparable,
        ),
    ] {
        let wanted = if signal == "instructions" {
            options.instructions()
        } else {
            options.ratios()
        };
        match loaded {
            Some(provenance) => println!(
                "reference {signal}: {}",
                reference::describe_provenance(provenance)
            ),
            None if wanted => println!(
                "reference {signal}: NONE ({} missing: every figure is new; run `cargo xtask gate --bless` \
                 on a clean tree to record one)",
                path.display()
            ),
            None => {}
        }
        if let Some(reason) = incomparable {
            println!(
                "  NOT COMPARABLE with this run ({reason}): its figures are shown, not judged; \
                 bless references on this machine to judge them"
            );
        }
    }
    println!("this run: {}", reference::describe_provenance(&provenance));
    if let (Some(permille), Some((instructions, base))) = (options.slowdown_permille, slowdown) {
        println!(
            "slowdown injected: {permille} per mille of the per-thread pair's {base} reference \
             instructions, {instructions} instructions per pair (feature sheaf/slowdown)"
        );
    }
    for note in &remeasured {
        println!("instruction count differed between runs, lowest kept: {note}");
    }
    println!();
    let mut rows = rows_for(
        counts.as_ref(),
        intervals.as_ref(),
        reference_counts.as_ref().map(|l| &l.figures),
        reference_ratios.as_ref().map(|l| &l.figures),
        &options,
    );
    for row in &mut rows {
        let incomparable = match row.signal {
            "instructions" => counts_incomparable.is_some(),
            _ => ratios_incomparable.is_some(),
        };
        if incomparable {
            row.judgement = row.judgement.unjudged();
        }
    }
    let by_history = intervals.as_ref().map_or(0, |intervals| {
        noise::judge_by_history(&mut rows, intervals, &histories, options.min_history)
    });
    print!("{}", decide::render_table(&rows));
    if options.ratios() {
        let longest = histories.values().map(Vec::len).max().unwrap_or(0);
        println!(
            "\nratios judged by this machine's history ({machine}): {by_history} of {} \
             (it needs {} earlier untagged gate runs, has {longest}); the rest by the reference",
            intervals.as_ref().map_or(0, BTreeMap::len),
            options.min_history
        );
    }
    let mut settings = Vec::new();
    if options.instructions() {
        settings.push(format!(
            "instruction tolerance {:.1}%",
            options.tolerance * 100.0
        ));
    }
    if options.ratios() {
        settings.push(format!(
            "ratio threshold {:.1}% ({}% intervals, {} rounds of {})",
            options.threshold * 100.0,
            BOOTSTRAP.confidence * 100.0,
            options.rounds,
            options.duration
        ));
    }
    println!(
        "\n{}; figures in {}",
        settings.join(", "),
        run_dir.join("gate.json").display()
    );
    if !decide::any_failure(&rows) {
        let unjudged = rows
            .iter()
            .filter(|r| r.judgement.verdict == decide::Verdict::NotJudged)
            .count();
        if valgrind_missing {
            println!(
                "gate: PASS on the ratio signal only: the instruction signal was NOT MEASURED \
                 (valgrind is not installed; install it to judge instruction counts)"
            );
        } else if unjudged == 0 {
            println!("gate: PASS");
        } else {
            println!(
                "gate: PASS, with {unjudged} of {} figures not judged (references from another \
                 machine or toolchain)",
                rows.len()
            );
        }
        Ok(())
    } else {
        let names: Vec<&str> = rows
            .iter()
            .filter(|r| r.judgement.verdict.fails())
            .map(|r| r.figure.as_str())
            .collect();
        Err(TaskError::Regression(format!(
            "gate: FAIL ({})",
            names.join(", ")
        )))
    }
}

/// The tag of a gate run that the history of clean runs leaves out: an injected slowdown, or
/// rounds and duration other than the defaults (a different noise).
fn tag(options: &Options) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(permille) = options.slowdown_permille {
        parts.push(format!("slowdown={permille}"));
    }
    if options.rounds != 10 || options.duration != "100ms" {
        parts.push(format!(
            "rounds={},duration={}",
            options.rounds, options.duration
        ));
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

/// The figures counted above their reference by more than `tolerance`.
fn above_reference(
    counts: &BTreeMap<String, u64>,
    reference: Option<&reference::Loaded<u64>>,
    tolerance: f64,
) -> Vec<String> {
    let Some(reference) = reference else {
        return Vec::new();
    };
    counts
        .iter()
        .filter(|(name, count)| {
            reference.figures.get(*name).is_some_and(|&r| {
                decide::judge_count(Some(r), Some(**count), tolerance).verdict
                    == decide::Verdict::Regression
            })
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// The interval of each figure with at least two samples (fewer give none: the figure is
/// then reported missing).
fn intervals_of(samples: &BTreeMap<String, Vec<f64>>) -> BTreeMap<String, (Interval, usize)> {
    samples
        .iter()
        .filter_map(|(name, values)| {
            BOOTSTRAP
                .geometric_mean(values)
                .map(|i| (name.clone(), (i, values.len())))
        })
        .collect()
}

/// Every figure of either side, judged: instruction counts first, then ratios, each sorted
/// by name.
fn rows_for(
    counts: Option<&BTreeMap<String, u64>>,
    intervals: Option<&BTreeMap<String, (Interval, usize)>>,
    reference_counts: Option<&BTreeMap<String, u64>>,
    reference_ratios: Option<&BTreeMap<String, Interval>>,
    options: &Options,
) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(counts) = counts {
        let names: BTreeSet<&String> = counts
            .keys()
            .chain(reference_counts.into_iter().flat_map(|r| r.keys()))
            .collect();
        for name in names {
            let reference = reference_counts.and_then(|r| r.get(name)).copied();
            rows.push(Row::count(
                name,
                reference,
                counts.get(name).copied(),
                options.tolerance,
            ));
        }
    }
    if let Some(intervals) = intervals {
        let names: BTreeSet<&String> = intervals
            .keys()
            .chain(reference_ratios.into_iter().flat_map(|r| r.keys()))
            .collect();
        for name in names {
            let reference = reference_ratios.and_then(|r| r.get(name)).copied();
            let now = intervals.get(name).map(|(i, _)| *i);
            rows.push(Row::ratio(name, reference, now, options.threshold));
        }
    }
    rows
}

fn pretty(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> TaskResult<Options> {
        crate::parse_task_args(args)
    }

    #[test]
    fn options_parse_and_reject_bad_values() {
        let o = parse(&["--slowdown", "50", "--rounds", "12", "--only", "ratios"]).unwrap();
        assert_eq!(o.slowdown_permille, Some(50));
        assert_eq!(o.rounds, 12);
        assert!(o.ratios() && !o.instructions());
        let o = parse(&[]).unwrap();
        assert!(o.ratios() && o.instructions());
        assert_eq!((o.rounds, o.duration.as_str()), (10, "100ms"));
        assert_eq!((o.tolerance, o.threshold), (TOLERANCE, THRESHOLD));
        crate::assert_usage_errors::<Options>(&[
            (&["--rounds", "1"][..], "must be at least 2"),
            (&["--slowdown"], "a value is required"),
            (&["--slowdown", "-3"], "expected a non-negative integer"),
            (&["--slowdown", "x"], "expected a non-negative integer"),
            (&["--threshold", "2"], "expected a fraction in [0, 1)"),
            (&["--only", "both"], "instructions, ratios"),
            (&["--frobnicate"], "--frobnicate"),
        ]);
    }

    #[test]
    fn only_figures_above_their_reference_are_measured_again() {
        let counts: BTreeMap<String, u64> = [
            ("same".to_owned(), 132),
            ("doubled".to_owned(), 264),
            ("within".to_owned(), 101),
            ("lower".to_owned(), 50),
            ("new".to_owned(), 9),
        ]
        .into();
        let reference = reference::Loaded {
            figures: [
                ("same".to_owned(), 132),
                ("doubled".to_owned(), 132),
                ("within".to_owned(), 100),
                ("lower".to_owned(), 100),
            ]
            .into(),
            provenance: serde_json::Value::Null,
        };
        assert_eq!(
            above_reference(&counts, Some(&reference), 0.01),
            ["doubled"]
        );
        assert!(above_reference(&counts, None, 0.01).is_empty());
    }

    #[test]
    fn rows_cover_both_sides_and_judge_each_figure() {
        let options = parse(&[]).unwrap();
        let counts: BTreeMap<String, u64> = [("a".to_owned(), 100), ("new".to_owned(), 7)].into();
        let reference_counts: BTreeMap<String, u64> =
            [("a".to_owned(), 90), ("gone".to_owned(), 5)].into();
        let interval = Interval {
            estimate: 1.0,
            low: 0.99,
            high: 1.01,
        };
        let intervals: BTreeMap<String, (Interval, usize)> =
            [("r".to_owned(), (interval, 10))].into();
        let reference_ratios: BTreeMap<String, Interval> = [("r".to_owned(), interval)].into();
        let rows = rows_for(
            Some(&counts),
            Some(&intervals),
            Some(&reference_counts),
            Some(&reference_ratios),
            &options,
        );
        let verdicts: Vec<(&str, decide::Verdict)> = rows
            .iter()
            .map(|r| (r.figure.as_str(), r.judgement.verdict))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                ("a", decide::Verdict::Regression),
                ("gone", decide::Verdict::Missing),
                ("new", decide::Verdict::New),
                ("r", decide::Verdict::Pass),
            ]
        );
    }

    #[test]
    fn runs_other_than_the_clean_default_are_tagged_out_of_the_history() {
        assert_eq!(tag(&parse(&[]).unwrap()), None);
        assert_eq!(
            tag(&parse(&["--slowdown", "50"]).unwrap()).as_deref(),
            Some("slowdown=50")
        );
        assert_eq!(
            tag(&parse(&["--rounds", "4", "--slowdown", "5"]).unwrap()).as_deref(),
            Some("slowdown=5,rounds=4,duration=100ms")
        );
        let o = parse(&["--min-history", "8", "--no-history", "--db", "x.sqlite"]).unwrap();
        assert_eq!(o.min_history, 8);
        assert!(o.history.no_history);
    }

    #[test]
    fn a_figure_with_one_sample_has_no_interval() {
        let samples: BTreeMap<String, Vec<f64>> = [
            ("one".to_owned(), vec![1.0]),
            ("two".to_owned(), vec![1.0, 1.1]),
        ]
        .into();
        let intervals = intervals_of(&samples);
        assert!(!intervals.contains_key("one"));
        assert_eq!(intervals["two"].1, 2);
    }
}
