//! `sheafbench run`: every (workload, threads, allocator) in a child process, a table on
//! stdout, result files rewritten after each measurement.

use harness::ResultFile;
use harness::machine::Machine;
use harness::result::Failure;

use crate::benchmark::executor::{self, Outcome};
use crate::benchmark::plan::{self, Planned};
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

/// Runs every planned workload on every allocator; records results and failures into
/// `results`, writing `sinks` after each measurement.
pub(crate) fn execute(
    planned: &[Planned],
    allocators: &[&str],
    selection: &MeasureSelection,
    results: &mut ResultFile,
    sinks: &Sinks<'_>,
) -> Result<(), CliError> {
    let total: usize = planned
        .iter()
        .map(|p| p.workload.spec.threads.0.len() * allocators.len())
        .sum();
    for note in planned.iter().flat_map(|p| &p.skipped) {
        eprintln!("note: {note}");
    }
    let planned_time = planned
        .iter()
        .map(|p| {
            plan::planned_length(&p.workload)
                * (p.workload.spec.threads.0.len() * allocators.len()) as u32
        })
        .sum();
    interrupt::install();
    let mut bar = progress::Progress::new(total, planned_time);
    for p in planned {
        let timeout = plan::timeout(&p.workload, selection.timeout);
        let length = plan::planned_length(&p.workload);
        for &threads in &p.workload.spec.threads.0 {
            for &allocator in allocators {
                let name = &p.workload.spec.name;
                bar.start(&format!("{name} / {allocator} / {threads} threads"));
                match executor::run_child(&p.workload, allocator, threads, timeout) {
                    Outcome::Measured(m) => results.runs.push(*m),
                    // The measurement an interrupt cut short is not a failure.
                    Outcome::Failed { .. } if interrupt::requested() => {}
                    Outcome::Failed { error, stderr } => {
                        bar.suspend(|| {
                            eprintln!("error: {name} / {allocator} / {threads} threads: {error}");
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
    bar.finish();
    Ok(())
}

/// `run`.
pub(crate) fn run(args: RunArgs) -> Result<(), CliError> {
    let allocators = plan::allocators(&args.selection.alloc)?;
    let baseline = baseline(args.baseline.as_deref(), &allocators)?;
    plan::check_output("--json", args.json.as_deref())?;
    plan::check_output("--markdown", args.markdown.as_deref())?;
    let planned = args
        .workloads
        .iter()
        .map(|file| plan::load(file, &args.selection, &[]))
        .collect::<Result<Vec<_>, _>>()?;
    let mut results = ResultFile::new(Machine::detect());
    let sinks = Sinks {
        json: args.json.as_deref(),
        markdown: args.markdown.as_deref(),
        baseline: Some(baseline),
    };
    execute(&planned, &allocators, &args.selection, &mut results, &sinks)?;
    print!("{}", table::render(&results.runs, Some(baseline)));
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
