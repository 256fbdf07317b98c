//! `sheafbench run`: every (workload, threads) in interleaved rounds of the allocators, each
//! (allocator, round) in a child process; a table on stdout with paired ratios; result files
//! rewritten after each child.

use harness::ResultFile;
use harness::machine::Machine;
use harness::result::Failure;

use crate::benchmark::executor::{self, Outcome};
use crate::benchmark::plan::{self, Planned};
use crate::benchmark::rounds;
use crate::cli::{MeasureSelection, RunArgs};
use crate::error::CliError;
use crate::export::{self, JsonExporter, MarkdownExporter};
use crate::output::{interrupt, progress, table, warnings};

/// Where results go as they come.
pub(crate) struct Sinks<'a> {
    pub(crate) json: Option<&'a std::path::Path>,
    pub(crate) markdown: Option<&'a std::path::Path>,
    pub(crate) baseline: Option<&'a str>,
}

impl Sinks<'_> {
    /// The files written, for messages.
    fn describe(&self) -> String {
        let files: Vec<String> = [self.json, self.markdown]
            .into_iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect();
        if files.is_empty() {
            "and none written (no --json or --markdown)".to_owned()
        } else {
            format!("kept in {}", files.join(" and "))
        }
    }

    fn write(&self, results: &ResultFile) -> Result<(), CliError> {
        if let Some(path) = self.json {
            export::write(&JsonExporter, results, self.baseline, path)?;
        }
        if let Some(path) = self.markdown {
            export::write(&MarkdownExporter, results, self.baseline, path)?;
        }
        Ok(())
    }
}

/// Resolves `--baseline` (default: the first allocator of the run).
pub(crate) fn baseline<'a>(
    requested: Option<&str>,
    allocators: &[&'a str],
) -> Result<&'a str, CliError> {
    match requested {
        None => Ok(allocators[0]),
        Some(name) => {
            plan::allocators(&[name.to_owned()])?;
            allocators
                .iter()
                .find(|a| **a == name)
                .copied()
                .ok_or_else(|| CliError::Baseline {
                    name: name.to_owned(),
                    running: allocators.join(", "),
                })
        }
    }
}

/// Runs every planned workload on every allocator in interleaved rounds: for each (workload,
/// threads), `runs` rounds, each measuring every allocator once (one measured run in a child
/// process) in an order rotated from round to round. Records the merged measurements,
/// failures and paired ratios into `results`, writing `sinks` after each child. An allocator
/// whose child fails is reported once and left out of the later rounds of that (workload,
/// threads).
pub(crate) fn execute(
    planned: &[Planned],
    allocators: &[&str],
    selection: &MeasureSelection,
    results: &mut ResultFile,
    sinks: &Sinks<'_>,
) -> Result<(), CliError> {
    plan::check_phases(planned, allocators)?;
    let total: usize = planned
        .iter()
        .map(|p| p.workload.spec.threads.0.len() * allocators.len() * p.workload.spec.runs as usize)
        .sum();
    for note in planned.iter().flat_map(|p| &p.skipped) {
        eprintln!("note: {note}");
        results.notes.push(note.clone());
    }
    // Each (allocator, round) is one measured run of the workload's length.
    let planned_time = planned
        .iter()
        .map(|p| {
            let mut one_run = p.workload.clone();
            one_run.spec.runs = 1;
            plan::planned_length(&one_run)
                * (p.workload.spec.threads.0.len()
                    * allocators.len()
                    * p.workload.spec.runs as usize) as u32
        })
        .sum();
    interrupt::install();
    let references = rounds::references(sinks.baseline, allocators);
    let mut bar = progress::Progress::new(total, planned_time);
    for p in planned {
        let rounds_planned = p.workload.spec.runs;
        // Each child makes one measured run: the rounds are the runs.
        let mut one_run = p.workload.clone();
        one_run.spec.runs = 1;
        let timeout = plan::timeout(&one_run, selection.timeout);
        let length = plan::planned_length(&one_run);
        let name = &p.workload.spec.name;
        for &threads in &p.workload.spec.threads.0 {
            let mut done: Vec<(&str, Vec<rounds::RoundResult>)> =
                allocators.iter().map(|&a| (a, Vec::new())).collect();
            let mut failed: Vec<&str> = Vec::new();
            let first_new = results.runs.len();
            let first_paired = results.paired.len();
            for round in 0..rounds_planned {
                for (position, allocator) in
                    rounds::order(allocators, round).into_iter().enumerate()
                {
                    bar.start(&format!(
                        "{name} / {allocator} / {threads} threads / round {} of {rounds_planned}",
                        round + 1
                    ));
                    if failed.contains(&allocator) {
                        bar.finish_one(length);
                        continue;
                    }
                    match executor::run_child(&one_run, allocator, threads, timeout) {
                        Outcome::Measured(m) => {
                            let slot = done.iter_mut().find(|(a, _)| *a == allocator);
                            if let Some((_, list)) = slot {
                                list.push(rounds::RoundResult {
                                    round,
                                    position: position as u32,
                                    measurement: *m,
                                });
                            }
                        }
                        // The measurement an interrupt cut short is not a failure.
                        Outcome::Failed { .. } if interrupt::requested() => {}
                        Outcome::Failed { error, stderr } => {
                            failed.push(allocator);
                            bar.suspend(|| {
                                eprintln!(
                                    "error: {name} / {allocator} / {threads} threads (round {}): {error}",
                                    round + 1
                                );
                                for line in stderr.lines() {
                                    eprintln!("  | {line}");
                                }
                            });
                            results.failures.push(Failure {
                                workload: name.clone(),
                                allocator: allocator.to_owned(),
                                threads,
                                error,
                                stderr,
                            });
                        }
                    }
                    // The measurements of this (workload, threads) so far, merged anew.
                    results.runs.truncate(first_new);
                    results.runs.extend(
                        done.iter()
                            .filter(|(a, _)| !failed.contains(a))
                            .filter_map(|(_, list)| rounds::merge(list, &p.workload.spec)),
                    );
                    results.paired.truncate(first_paired);
                    results
                        .paired
                        .extend(rounds::all_paired(&results.runs[first_new..], &references));
                    sinks.write(results)?;
                    if interrupt::requested() {
                        bar.finish();
                        return Err(CliError::Interrupted {
                            kept: results.runs.len() + results.failures.len(),
                            files: sinks.describe(),
                        });
                    }
                    bar.finish_one(length);
                }
            }
        }
    }
    bar.finish();
    Ok(())
}

/// `run`.
pub(crate) fn run(args: RunArgs) -> Result<(), CliError> {
    let mut allocators = plan::allocators(&args.selection.alloc)?;
    plan::check_output("--json", args.json.as_deref())?;
    plan::check_output("--markdown", args.markdown.as_deref())?;
    let planned = args
        .workloads
        .iter()
        .map(|file| plan::load(file, &args.selection, &[]))
        .collect::<Result<Vec<_>, _>>()?;
    plan::default_to_changing(&mut allocators, &args.selection.alloc, &planned);
    let baseline = baseline(args.baseline.as_deref(), &allocators)?;
    let mut results = ResultFile::new(Machine::detect());
    let sinks = Sinks {
        json: args.json.as_deref(),
        markdown: args.markdown.as_deref(),
        baseline: Some(baseline),
    };
    execute(&planned, &allocators, &args.selection, &mut results, &sinks)?;
    super::history::record(
        &args.history,
        super::history::of_result_file(history::RunKind::Run, &results, args.json.as_deref()),
    );
    if planned.len() > 1 {
        print!("{}", table::summary(&results));
    }
    print!(
        "{}",
        table::render(&results.runs, &results.paired, Some(baseline))
    );
    warnings::print(&warnings::collect(&results.runs));
    let total = results.runs.len() + results.failures.len();
    if !results.failures.is_empty() {
        return Err(CliError::MeasurementsFailed {
            failed: results.failures.len(),
            total,
        });
    }
    Ok(())
}
