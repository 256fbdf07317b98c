//! `sheafbench conformance`: the contract clauses (docs/contract.md) checked on each allocator;
//! a table of allocators by clauses, a JSON array of reports, exit 1 if an applicable clause
//! fails.

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use conformance::{AllocatorReport, Options, Status};
use object_alloc::ObjectAlloc;

use crate::benchmark::plan;
use crate::cli::ConformanceArgs;
use crate::error::CliError;
use crate::registry::{self, AllocVisitor};

struct Check<'a>(&'a Options);

impl AllocVisitor for Check<'_> {
    type Output = AllocatorReport;
    fn visit<A: ObjectAlloc>(self) -> AllocatorReport {
        conformance::run::<A>(self.0)
    }
}

/// `conformance`.
pub(crate) fn run(args: ConformanceArgs) -> Result<(), CliError> {
    let allocators = plan::allocators(&args.alloc)?;
    plan::check_output("--json", args.json.as_deref())?;
    let mut options = if args.quick {
        Options::quick()
    } else {
        Options::default()
    };
    if let Some(only) = &args.only {
        let known: Vec<&str> = conformance::CLAUSES.iter().map(|c| c.id).collect();
        if let Some(bad) = only
            .iter()
            .find(|id| !known.iter().any(|k| k.eq_ignore_ascii_case(id)))
        {
            return Err(CliError::Usage {
                option: format!("--only {bad}"),
                message: format!("no such clause; clauses: {}", known.join(", ")),
            });
        }
        options.only = Some(only.clone());
    }
    let mut reports = Vec::new();
    for name in &allocators {
        eprintln!("checking {name} ...");
        let report = registry::with_allocator(name, Check(&options)).expect("registered name");
        reports.push(report);
        if let Some(path) = &args.json {
            let bytes = serde_json::to_vec_pretty(&reports).expect("reports serialize");
            harness::result::write_atomic(path, &bytes)?;
        }
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    let mut header = vec!["clause".to_owned()];
    header.extend(allocators.iter().map(|a| a.to_string()));
    table.set_header(header);
    let ids: Vec<&str> = reports
        .first()
        .map(|r| r.clauses.iter().map(|c| c.id.as_str()).collect())
        .unwrap_or_default();
    for id in ids {
        let mut row = vec![id.to_owned()];
        for report in &reports {
            row.push(match report.clause(id).map(|c| c.status) {
                Some(Status::Pass) => "pass".into(),
                Some(Status::Fail) => "FAIL".into(),
                Some(Status::NotApplicable) => "n/a".into(),
                None => "-".into(),
            });
        }
        table.add_row(row);
    }
    println!("{table}");
    if !args.history.no_history {
        super::history::record(&args.history, history_run(&reports, &args));
    }
    let mut failed = 0;
    for report in &reports {
        for clause in report.clauses.iter().filter(|c| c.status == Status::Fail) {
            failed += 1;
            eprintln!(
                "FAIL {} on {}: {}",
                clause.id, report.allocator, clause.detail
            );
        }
    }
    if failed > 0 {
        return Err(CliError::ConformanceFailed(failed));
    }
    Ok(())
}

/// The reports as a history run: one figure per (allocator, applicable clause), 1 for pass
/// and 0 for fail (a clause that does not apply is in the document only).
fn history_run(reports: &[AllocatorReport], args: &ConformanceArgs) -> history::NewRun {
    let machine = harness::machine::Machine::detect();
    let document = serde_json::to_value(reports).unwrap_or(serde_json::Value::Null);
    let mut run = history::NewRun::new(
        history::RunKind::Conformance,
        &harness::machine::utc_now(),
        &machine,
        document,
    );
    run.config = serde_json::json!({
        "args": std::env::args().skip(1).collect::<Vec<_>>(),
        "quick": args.quick,
    });
    run.source = args.json.as_ref().map(|p| p.display().to_string());
    for report in reports {
        for clause in &report.clauses {
            let value = match clause.status {
                Status::Pass => 1.0,
                Status::Fail => 0.0,
                Status::NotApplicable => continue,
            };
            run.figures.push(history::Figure {
                workload: None,
                ..history::Figure::point("", &report.allocator, &clause.id, value)
            });
        }
    }
    run
}
