//! `sheafbench sweep`: one workload over a list of values of one spec field.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use harness::ResultFile;
use harness::machine::Machine;

use crate::benchmark::plan;
use crate::benchmark::rounds;
use crate::cli::SweepArgs;
use crate::commands::run::{Entry, Group, Sinks, execute_groups};
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
    for note in planned.iter().flat_map(|p| &p.skipped) {
        crate::output::note(&mut results, note.clone());
    }
    let sinks = Sinks {
        json: args.json.as_deref(),
        markdown: None,
        baseline: None,
    };
    let (groups, members) = groups(&planned, &allocators, key, &values);
    let merged = execute_groups(
        &groups,
        &args.selection,
        &mut results,
        &sinks,
        |group, merged| paired_with_first(&groups[group], &members[group], merged),
    )?;
    // In the order of the values, then threads, then allocators.
    let mut per_value: Vec<(usize, harness::Measurement)> = merged
        .iter()
        .zip(&members)
        .flat_map(|(ms, values)| {
            ms.iter()
                .zip(values)
                .filter_map(|(m, &v)| Some((v, m.clone()?)))
        })
        .collect();
    per_value.sort_by_key(|(v, m)| (*v, m.config.threads));
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
        "slab MiB",
        "idle MiB",
        "cached",
        "cached/CPU",
        &format!("vs {key}={} [95%]", values[0]),
        "per CPU-s [95%]",
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
            held(m.memory.slab_bytes.map(|b| b as f64 / 1048576.0), 2),
            held(idle_bytes(m).map(|b| b / 1048576.0), 2),
            held(m.memory.cached_objects.map(|c| c as f64), 0),
            held(
                m.memory
                    .cached_objects
                    .map(|c| c as f64 / results.machine.cores.max(1) as f64),
                0,
            ),
            ratio_with_first(m, *index, key, &values, &results.paired, false),
            ratio_with_first(m, *index, key, &values, &results.paired, true),
        ]);
    }
    for col in 3..14 {
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
    for line in smallest_within(&per_value, &values, WITHIN) {
        println!("{line}");
    }
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
        let trade_off: Vec<harness::chart::TradeOffPoint> = per_value
            .iter()
            .filter_map(|(index, m)| {
                Some(harness::chart::TradeOffPoint {
                    series: if several_thread_counts {
                        format!("{} ({}t)", m.allocator, m.config.threads)
                    } else {
                        m.allocator.clone()
                    },
                    label: values[*index].clone(),
                    memory_bytes: idle_bytes(m)?,
                    throughput: m.throughput_ops_per_s,
                })
            })
            .collect();
        if !trade_off.is_empty() {
            let memory_path = path.with_file_name(format!(
                "{}-memory.svg",
                path.file_stem()
                    .map_or_else(|| "sweep".into(), |s| s.to_string_lossy())
            ));
            svg::write(
                &memory_path,
                harness::chart::trade_off(
                    &format!("{name}: memory held against throughput, one point per {key}"),
                    &trade_off,
                    &svg::footer(&results),
                ),
            )?;
        }
        svg::sweep_chart(
            path,
            &format!("{name}: throughput and p99 against {key}"),
            key,
            &values,
            &series,
            &svg::footer(&results),
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

/// The label of `allocator` at a swept value, as paired ratios name it.
fn label(allocator: &str, key: &str, value: &str) -> String {
    format!("{allocator} {key}={value}")
}

/// The groups of a sweep: per thread count, every (value, allocator) measured in the same
/// interleaved rounds, so that each value meets the machine's drift alike and can be paired
/// with the first value round by round. Beside each group, the value index of each entry.
fn groups<'a>(
    planned: &[plan::Planned],
    allocators: &[&'a str],
    key: &str,
    values: &[String],
) -> (Vec<Group<'a>>, Vec<Vec<usize>>) {
    let mut thread_counts: Vec<u32> = Vec::new();
    for p in planned {
        for &t in &p.workload.spec.threads.0 {
            if !thread_counts.contains(&t) {
                thread_counts.push(t);
            }
        }
    }
    let mut groups = Vec::new();
    let mut members = Vec::new();
    for threads in thread_counts {
        let mut entries = Vec::new();
        let mut indices = Vec::new();
        for (index, p) in planned.iter().enumerate() {
            if !p.workload.spec.threads.0.contains(&threads) {
                continue;
            }
            let mut one_run = p.workload.clone();
            one_run.spec.runs = 1;
            for &allocator in allocators {
                entries.push(Entry {
                    workload: one_run.clone(),
                    allocator,
                    label: label(allocator, key, &values[index]),
                    build: None,
                });
                indices.push(index);
            }
        }
        groups.push(Group {
            name: planned[0].workload.spec.name.clone(),
            threads,
            rounds: planned
                .iter()
                .map(|p| p.workload.spec.runs)
                .max()
                .unwrap_or(1),
            entries,
        });
        members.push(indices);
    }
    (groups, members)
}

/// Each entry of a sweep's group over the same allocator at the group's first value, paired
/// by round (named by [`label`]).
fn paired_with_first(
    group: &Group<'_>,
    values_of: &[usize],
    merged: &[Option<harness::Measurement>],
) -> Vec<harness::result::PairedRatio> {
    let Some(&first) = values_of.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, entry) in group.entries.iter().enumerate() {
        if values_of[i] == first {
            continue;
        }
        let versus = group
            .entries
            .iter()
            .zip(values_of)
            .position(|(e, &v)| v == first && e.allocator == entry.allocator);
        let (Some(m), Some(Some(v))) = (&merged[i], versus.map(|j| &merged[j])) else {
            continue;
        };
        let versus_label = &group.entries[versus.unwrap_or(i)].label;
        if let Some(p) = rounds::paired(m, v) {
            out.push(harness::result::PairedRatio {
                allocator: entry.label.clone(),
                versus: versus_label.clone(),
                ..p
            });
        }
    }
    out
}

/// The cell of the paired ratio of `m` (at value `index`) over the same allocator at the
/// first value: of throughput, or of operations per CPU-second with `cpu`.
fn ratio_with_first(
    m: &harness::Measurement,
    index: usize,
    key: &str,
    values: &[String],
    paired: &[harness::result::PairedRatio],
    cpu: bool,
) -> String {
    if index == 0 {
        return "1".to_owned();
    }
    let found = paired.iter().find(|p| {
        p.threads == m.config.threads
            && p.allocator == label(&m.allocator, key, &values[index])
            && p.versus == label(&m.allocator, key, &values[0])
    });
    crate::output::table::ratio_text(found, cpu)
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

/// How close to the best throughput a setting must come to count in [`smallest_within`].
const WITHIN: f64 = 0.05;

/// A memory figure with `decimals`, or `-` where the design does not report it.
fn held(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// Per (allocator, threads): the first swept value (the values in the order given, smallest
/// first for a sweep over sizes) whose throughput is within `within` of the best, with the
/// memory it holds beside the best's.
fn smallest_within(
    per_value: &[(usize, harness::Measurement)],
    values: &[String],
    within: f64,
) -> Vec<String> {
    let mut groups: Vec<(String, u32)> = Vec::new();
    for (_, m) in per_value {
        let key = (m.allocator.clone(), m.config.threads);
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    let mib = |m: &harness::Measurement| {
        idle_bytes(m).map_or("-".to_owned(), |b| format!("{:.2} MiB", b / 1048576.0))
    };
    groups
        .into_iter()
        .filter_map(|(allocator, threads)| {
            let points: Vec<&(usize, harness::Measurement)> = per_value
                .iter()
                .filter(|(_, m)| m.allocator == allocator && m.config.threads == threads)
                .collect();
            let throughputs: Vec<(usize, f64)> = points
                .iter()
                .map(|(index, m)| (*index, m.throughput_ops_per_s))
                .collect();
            let (smallest, best) = smallest_and_best(&throughputs, within)?;
            let at = |index: usize| points.iter().find(|(i, _)| *i == index);
            let (smallest, best) = (at(smallest)?, at(best)?);
            Some(format!(
                "{allocator} ({threads}t): smallest setting within {:.0}% of the best throughput: {} ({}, {} held idle); best {} ({}, {} held idle)",
                within * 100.0,
                values[smallest.0],
                format::throughput(smallest.1.throughput_ops_per_s),
                mib(&smallest.1),
                values[best.0],
                format::throughput(best.1.throughput_ops_per_s),
                mib(&best.1),
            ))
        })
        .collect()
}

/// Bytes of slab pages the cache still held once the workload had freed every object: what a
/// setting costs an idle cache (objects cached in sheaves, barn or magazines, and the slabs
/// under them).
fn idle_bytes(m: &harness::Measurement) -> Option<f64> {
    m.memory
        .figures
        .as_ref()?
        .retained_after_free
        .slab_bytes
        .value()
}

/// Of `(value index, throughput)` points: the lowest index whose throughput is within
/// `within` of the best, and the best's index.
fn smallest_and_best(points: &[(usize, f64)], within: f64) -> Option<(usize, usize)> {
    let &(best, top) = points.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
    let smallest = points
        .iter()
        .filter(|&&(_, t)| t >= top * (1.0 - within))
        .map(|&(index, _)| index)
        .min()?;
    Some((smallest, best))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_setting_within_five_percent_of_the_best_is_named() {
        // Capacities 4, 8, 16, 32: 16 is the best, 8 within 5% of it, 4 not.
        let points = [(0, 80.0), (1, 96.0), (2, 100.0), (3, 99.0)];
        assert_eq!(smallest_and_best(&points, 0.05), Some((1, 2)));
        assert_eq!(smallest_and_best(&points, 0.0), Some((2, 2)));
        assert_eq!(smallest_and_best(&points, 0.5), Some((0, 2)));
        assert_eq!(smallest_and_best(&[], 0.05), None);
    }
}
