//! `sheafbench sweep`: one workload over a list of values of one spec field.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use harness::ResultFile;
use harness::machine::Machine;

use crate::benchmark::plan;
use crate::cli::SweepArgs;
use crate::commands::run::{Sinks, execute};
use crate::error::CliError;
use crate::export::svg::{self, Series};
use crate::output::{format, warnings};
use crate::registry;

/// `sweep`.
pub(crate) fn run(args: SweepArgs) -> Result<(), CliError> {
    let Some((key, values)) = args.param.split_once('=') else {
        return Err(CliError::Usage {
            option: format!("--param {}", args.param),
            message: "expected key=v1,v2,... (e.g. sheaf_capacity=4,8,16,32,64)".into(),
        });
    };
    let key = key.trim();
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Err(CliError::Usage {
            option: format!("--param {}", args.param),
            message: "no values given after `=`".into(),
        });
    }
    // A field that only some designs read defaults to those: the rest would give the same
    // figures at every value.
    let allocators = if args.selection.alloc.is_empty() {
        let reading = registry::reading(key);
        if reading.len() < registry::names().len() {
            eprintln!(
                "note: {key} changes only {}: sweeping those (--alloc all runs every design)",
                reading.join(", ")
            );
        }
        reading
    } else {
        plan::allocators(&args.selection.alloc)?
    };
    plan::check_output("--svg", args.svg.as_deref())?;
    plan::check_output("--json", args.json.as_deref())?;
    // Every value is validated before anything runs.
    let planned = values
        .iter()
        .map(|v| plan::load(&args.workload, &args.selection, &[format!("{key}={v}")]))
        .collect::<Result<Vec<_>, _>>()?;
    let mut results = ResultFile::new(Machine::detect());
    let sinks = Sinks {
        json: args.json.as_deref(),
        markdown: None,
        baseline: None,
    };
    let mut per_value = Vec::new();
    for (index, p) in planned.iter().enumerate() {
        let before = results.runs.len();
        execute(
            std::slice::from_ref(p),
            &allocators,
            &args.selection,
            &mut results,
            &sinks,
        )?;
        per_value.extend(results.runs[before..].iter().map(|m| (index, m.clone())));
    }
    super::history::record(
        &args.history,
        super::history::of_result_file(history::RunKind::Sweep, &results, args.json.as_deref()),
    );

    let name = planned[0].workload.spec.name.clone();
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        key,
        "threads",
        "allocator",
        "throughput",
        "± sd",
        "p50",
        "p99",
        "p99.9",
    ]);
    for (index, m) in &per_value {
        let l = &m.latency_ns.figures;
        table.add_row(vec![
            values[*index].clone(),
            m.config.threads.to_string(),
            m.allocator.clone(),
            format::throughput(m.throughput_ops_per_s),
            spread(m),
            format::nanos(l.p50 as f64),
            format::nanos(l.p99 as f64),
            format::nanos(l.p999 as f64),
        ]);
    }
    for col in 3..8 {
        if let Some(column) = table.column_mut(col) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    if let Some(first) = per_value.first() {
        println!(
            "{name} swept over {key}: op = {}; latency sample = {}",
            first.1.op_unit, first.1.latency_ns.unit
        );
    }
    println!("{table}");
    warnings::print(&warnings::collect(&results.runs));

    if let Some(path) = &args.svg {
        let several_thread_counts = planned[0].workload.spec.threads.0.len() > 1;
        let mut series: Vec<Series> = Vec::new();
        for (index, m) in &per_value {
            let label = if several_thread_counts {
                format!("{} ({}t)", m.allocator, m.config.threads)
            } else {
                m.allocator.clone()
            };
            let point = (
                *index,
                m.throughput_ops_per_s,
                m.latency_ns.figures.p99 as f64,
            );
            match series.iter_mut().find(|(l, _)| *l == label) {
                Some((_, points)) => points.push(point),
                None => series.push((label, vec![point])),
            }
        }
        svg::sweep_chart(
            path,
            &format!("{name}: throughput and p99 against {key}"),
            key,
            &values,
            &series,
            &harness::chart::footer(
                &results.machine.git,
                &results.machine.cpu,
                results.machine.cores,
                &results.date,
            ),
        )?;
    }
    if !results.failures.is_empty() {
        return Err(CliError::MeasurementsFailed {
            failed: results.failures.len(),
            total: results.runs.len() + results.failures.len(),
        });
    }
    Ok(())
}

/// The run-to-run spread of a measurement's throughput: the sample standard deviation of its
/// runs as a share of their mean (`-` with fewer than two runs).
fn spread(m: &harness::Measurement) -> String {
    let (mean, sd) = m.throughput_mean_sd();
    if m.samples.len() < 2 || mean <= 0.0 {
        return "-".into();
    }
    format!("{:.1}%", 100.0 * sd / mean)
}
