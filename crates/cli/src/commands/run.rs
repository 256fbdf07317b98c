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
use crate::output::{self, interrupt, progress, table, warnings};

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

/// One thing each round of a [`Group`] measures: a workload (one measured run, a sweep's
/// value applied) on an allocator.
pub(crate) struct Entry<'a> {
    /// The workload of one measured run.
    pub(crate) workload: harness::Workload,
    /// The allocator.
    pub(crate) allocator: &'a str,
    /// How the progress line and errors name it (the allocator, and a sweep's value).
    pub(crate) label: String,
    /// The build that measures it (`sheafbench ab`); `None`: this binary. Its measurements
    /// and failures name the allocator `ALLOCATOR@BUILD`.
    pub(crate) build: Option<&'a executor::Build>,
}

/// Entries measured together in interleaved rounds, at one thread count: each round
/// measures every entry once, in an order rotated from round to round.
pub(crate) struct Group<'a> {
    /// The workload's name, for messages.
    pub(crate) name: String,
    /// Worker threads.
    pub(crate) threads: u32,
    /// Rounds planned.
    pub(crate) rounds: u32,
    /// What each round measures.
    pub(crate) entries: Vec<Entry<'a>>,
}

/// The groups of `run`: per planned workload and thread count, every allocator.
fn run_groups<'a>(planned: &[Planned], allocators: &[&'a str]) -> Vec<Group<'a>> {
    let mut groups = Vec::new();
    for p in planned {
        // Each child makes one measured run: the rounds are the runs.
        let mut one_run = p.workload.clone();
        one_run.spec.runs = 1;
        for &threads in &p.workload.spec.threads.0 {
            groups.push(Group {
                name: p.workload.spec.name.clone(),
                threads,
                rounds: p.workload.spec.runs,
                entries: allocators
                    .iter()
                    .map(|&allocator| Entry {
                        workload: one_run.clone(),
                        allocator,
                        label: allocator.to_owned(),
                        build: None,
                    })
                    .collect(),
            });
        }
    }
    groups
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
    for note in planned.iter().flat_map(|p| &p.skipped) {
        output::note(results, note.clone());
    }
    let references = rounds::references(sinks.baseline, allocators);
    execute_groups(
        &run_groups(planned, allocators),
        selection,
        results,
        sinks,
        |_, merged| {
            let runs: Vec<harness::Measurement> = merged.iter().flatten().cloned().collect();
            rounds::all_paired(&runs, &references)
        },
    )
    .map(drop)
}

/// Measures every group in interleaved rounds (each (entry, round) one measured run in a
/// child process), merging each entry's rounds into one measurement. After each child the
/// group's measurements so far replace those it had in `results.runs`, `pair` (given the
/// group's index and its measurements, one per entry, `None` where none finished) gives the
/// group's paired ratios, and `sinks`
/// are written. An entry whose child fails is reported once and left out of the group's
/// later rounds. Returns each group's merged measurements, one per entry.
pub(crate) fn execute_groups(
    groups: &[Group<'_>],
    selection: &MeasureSelection,
    results: &mut ResultFile,
    sinks: &Sinks<'_>,
    pair: impl Fn(usize, &[Option<harness::Measurement>]) -> Vec<harness::result::PairedRatio>,
) -> Result<Vec<Vec<Option<harness::Measurement>>>, CliError> {
    let total: usize = groups
        .iter()
        .map(|g| g.entries.len() * g.rounds as usize)
        .sum();
    let planned_time = groups
        .iter()
        .flat_map(|g| {
            g.entries
                .iter()
                .map(|e| plan::planned_length(&e.workload) * g.rounds)
        })
        .sum();
    interrupt::install();
    let mut bar = progress::Progress::new(total, planned_time);
    let mut all = Vec::new();
    for (group_index, group) in groups.iter().enumerate() {
        let (name, threads) = (&group.name, group.threads);
        let indices: Vec<usize> = (0..group.entries.len()).collect();
        let mut done: Vec<Vec<rounds::RoundResult>> = vec![Vec::new(); group.entries.len()];
        let mut merged: Vec<Option<harness::Measurement>> = vec![None; group.entries.len()];
        let mut failed: Vec<usize> = Vec::new();
        let first_new = results.runs.len();
        let first_paired = results.paired.len();
        for round in 0..group.rounds {
            for (position, index) in rounds::order(&indices, round).into_iter().enumerate() {
                let entry = &group.entries[index];
                let label = &entry.label;
                let length = plan::planned_length(&entry.workload);
                bar.start(&format!(
                    "{name} / {label} / {threads} threads / round {} of {}",
                    round + 1,
                    group.rounds
                ));
                if failed.contains(&index) {
                    bar.finish_one(length);
                    continue;
                }
                let timeout = plan::timeout(&entry.workload, selection.timeout);
                let exe = entry.build.map(|b| b.exe.as_path());
                let allocator = entry
                    .build
                    .map_or_else(|| entry.allocator.to_owned(), |b| b.label(entry.allocator));
                match executor::run_child(exe, &entry.workload, entry.allocator, threads, timeout) {
                    Outcome::Measured(mut m) => {
                        m.allocator.clone_from(&allocator);
                        done[index].push(rounds::RoundResult {
                            round,
                            position: position as u32,
                            measurement: *m,
                        });
                    }
                    // The measurement an interrupt cut short is not a failure.
                    Outcome::Failed { .. } if interrupt::requested() => {}
                    Outcome::Failed { error, stderr } => {
                        failed.push(index);
                        bar.suspend(|| {
                            eprintln!(
                                "error: {name} / {label} / {threads} threads (round {}): {error}",
                                round + 1
                            );
                            for line in stderr.lines() {
                                eprintln!("  | {line}");
                            }
                        });
                        results.failures.push(Failure {
                            workload: name.clone(),
                            allocator,
                            threads,
                            error,
                            stderr,
                        });
                    }
                }
                // The measurements of this group so far, merged anew.
                merged = done
                    .iter()
                    .enumerate()
                    .map(|(i, list)| {
                        if failed.contains(&i) {
                            None
                        } else {
                            rounds::merge(list, &group.entries[i].workload.spec)
                                .map(|m| with_rounds(m, group.rounds))
                        }
                    })
                    .collect();
                results.runs.truncate(first_new);
                results.runs.extend(merged.iter().flatten().cloned());
                results.paired.truncate(first_paired);
                results.paired.extend(pair(group_index, &merged));
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
        all.push(merged);
    }
    bar.finish();
    Ok(all)
}

/// `m` with the spec's `runs` set back to the rounds planned (each child ran one).
fn with_rounds(mut m: harness::Measurement, planned_rounds: u32) -> harness::Measurement {
    m.spec.runs = planned_rounds;
    m
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
