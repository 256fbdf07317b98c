//! The results table: one block per workload, one row per (threads, allocator), with
//! throughput (median over rounds, and the rounds' coefficient of variation), latency
//! percentiles per sample (medians over rounds), operations per CPU-second of the measured
//! threads and, per reference allocator, the paired ratio of throughput with its bootstrap
//! interval (and for the first reference, the paired ratio per CPU-second as well).

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use harness::Measurement;
use harness::result::PairedRatio;

use super::format;

/// The cell of a ratio column: the paired ratio of `m` over `reference` with its interval,
/// `1` in the reference's own row, `-` where there is none. With `cpu`, the ratio of
/// operations per CPU-second instead of throughput.
pub(crate) fn ratio_cell(
    m: &Measurement,
    reference: &str,
    paired: &[PairedRatio],
    cpu: bool,
) -> String {
    if m.allocator == reference {
        return "1".to_owned();
    }
    let found = paired.iter().find(|p| {
        p.workload == m.workload
            && p.threads == m.config.threads
            && p.allocator == m.allocator
            && p.versus == reference
    });
    ratio_text(found, cpu)
}

/// A paired ratio with its interval (of operations per CPU-second with `cpu`), `-` where
/// there is none.
pub(crate) fn ratio_text(found: Option<&PairedRatio>, cpu: bool) -> String {
    let figure = found.and_then(|p| {
        if cpu {
            let c = p.per_cpu_second.as_ref()?;
            Some((c.estimate, c.interval))
        } else {
            Some((p.estimate, p.interval))
        }
    });
    match figure {
        Some((estimate, Some((low, high)))) => format!(
            "{} [{}..{}]",
            format::ratio(estimate),
            format::ratio(low),
            format::ratio(high)
        ),
        Some((estimate, None)) => format::ratio(estimate),
        None => "-".to_owned(),
    }
}

/// Operations per CPU-second of the measured threads, the median over the rounds that have
/// their CPU time; `-` where none has.
pub(crate) fn per_cpu_second(m: &Measurement) -> String {
    let figures: Vec<f64> = m
        .samples
        .iter()
        .filter_map(crate::benchmark::rounds::ops_per_cpu_second)
        .collect();
    harness::stats::median(&figures).map_or_else(|| "-".to_owned(), format::throughput)
}

/// The reference allocators of a workload's ratio columns.
pub(crate) fn references<'a>(group: &[&'a Measurement], baseline: Option<&'a str>) -> Vec<&'a str> {
    let mut ran: Vec<&str> = Vec::new();
    for m in group {
        if !ran.contains(&m.allocator.as_str()) {
            ran.push(&m.allocator);
        }
    }
    crate::benchmark::rounds::references(baseline, &ran)
}

/// The rounds a workload's measurements were made in (the most of any row).
pub(crate) fn rounds(group: &[&Measurement]) -> usize {
    group.iter().map(|m| m.samples.len()).max().unwrap_or(0)
}

/// A table caption and body per workload.
pub(crate) fn render(
    measurements: &[Measurement],
    paired: &[PairedRatio],
    baseline: Option<&str>,
) -> String {
    let mut out = String::new();
    let mut workloads: Vec<&str> = Vec::new();
    for m in measurements {
        if !workloads.contains(&m.workload.as_str()) {
            workloads.push(&m.workload);
        }
    }
    for name in workloads {
        let group: Vec<&Measurement> = measurements.iter().filter(|m| m.workload == name).collect();
        let first = group[0];
        let hogs = if first.config.hogs > 0 {
            format!(
                "; {} busy threads beside it (--hogs {})",
                first.config.hogs, first.config.hogs
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{name} ({}): op = {}; latency sample = {}; clock read {:.1} ns + bookkeeping {:.1} ns; {} rounds, allocators interleaved; medians over rounds, ratios paired by round [95% interval]{hogs}\n",
            first.kind,
            first.op_unit,
            first.latency_ns.unit,
            first.latency_ns.timer_overhead_ns,
            first.latency_ns.bookkeeping_ns,
            rounds(&group)
        ));
        // The producer-consumer hand-off's waits per operation, and the share that blocked.
        let handoff = group
            .iter()
            .any(|m| m.extra.contains_key("handoff_waits_per_op"));
        let mut table = Table::new();
        table.load_style(UTF8_FULL_CONDENSED);
        let references = references(&group, baseline);
        let mut ratio_headers: Vec<String> = references.iter().map(|r| format!("vs {r}")).collect();
        // The first reference's ratio again, of operations per CPU-second.
        ratio_headers.extend(references.first().map(|r| format!("per CPU-s vs {r}")));
        let mut header = vec![
            "threads",
            "allocator",
            "throughput",
            "± sd",
            "per CPU-s",
            "p50",
            "p99",
            "p99.9",
            "max",
        ];
        header.extend(ratio_headers.iter().map(String::as_str));
        if handoff {
            header.push("waits/op (blocked)");
        }
        table.set_header(header);
        for m in &group {
            let (mean, sd) = m.throughput_mean_sd();
            let lat = &m.latency_ns.figures;
            let mut row = vec![
                m.config.threads.to_string(),
                m.allocator.clone(),
                format::throughput(m.throughput_ops_per_s),
                if m.samples.len() > 1 && mean > 0.0 {
                    format!("{:.1}%", 100.0 * sd / mean)
                } else {
                    "-".to_owned()
                },
                per_cpu_second(m),
                format::nanos(lat.p50 as f64),
                format::nanos(lat.p99 as f64),
                format::nanos(lat.p999 as f64),
                format::nanos(lat.max as f64),
            ];
            row.extend(references.iter().map(|r| ratio_cell(m, r, paired, false)));
            row.extend(references.first().map(|r| ratio_cell(m, r, paired, true)));
            if handoff {
                row.push(match m.extra.get("handoff_waits_per_op") {
                    Some(per_op) => format!(
                        "{per_op:.4} ({:.0}%)",
                        100.0 * m.extra.get("handoff_blocked_share").copied().unwrap_or(0.0)
                    ),
                    None => "-".to_owned(),
                });
            }
            table.add_row(row);
        }
        for col in 2..ratio_headers.len() + 9 + usize::from(handoff) {
            if let Some(column) = table.column_mut(col) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        out.push_str(&table.to_string());
        out.push_str("\n\n");
        if group.iter().any(|m| !m.changes.is_empty()) {
            out.push_str(&changes(&group));
        }
    }
    out
}

/// The run-time changes of a workload's measurements (its spec's `phases`): per change, how
/// long it took and what it flushed, and the throughput and p99.9 in the windows before and
/// after it.
fn changes(group: &[&Measurement]) -> String {
    let mut out = String::from(
        "run-time changes (phases): took = median over runs (on the coordinator, not a measured thread); flushed = objects per run; windows of up to 100 ms before and after; p99.9 ratio = after / before (median over rounds); a failed allocation or a prefill short of its promise voids the run\n",
    );
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "threads",
        "allocator",
        "change",
        "took",
        "flushed",
        "throughput before → after",
        "p99.9 before → after",
        "p99.9 ratio",
    ]);
    for m in group {
        for c in &m.changes {
            let mut what = vec![format!("at {:.0} ms:", c.at_s * 1e3)];
            for (name, value) in [
                ("sheaf_capacity", c.sheaf_capacity),
                ("barn_max_full", c.barn_max_full),
                ("barn_max_empty", c.barn_max_empty),
            ] {
                if let Some(value) = value {
                    what.push(format!("{name} {value}"));
                }
            }
            let took: Vec<f64> = c.applied.iter().map(|a| a.took_s).collect();
            let runs = c.applied.len().max(1) as f64;
            let flushed = c.applied.iter().map(|a| a.flushed_objects).sum::<u64>() as f64 / runs;
            let p999 = |ns: Option<u64>| ns.map_or("-".to_owned(), |ns| format::nanos(ns as f64));
            table.add_row(vec![
                m.config.threads.to_string(),
                m.allocator.clone(),
                what.join(" "),
                harness::stats::median(&took).map_or("-".to_owned(), |s| format::nanos(s * 1e9)),
                format!("{flushed:.0}"),
                format!(
                    "{} → {}",
                    format::throughput(c.before.throughput_ops_per_s),
                    format::throughput(c.after.throughput_ops_per_s)
                ),
                format!("{} → {}", p999(c.before.p999_ns), p999(c.after.p999_ns)),
                c.p999_ratio.map_or("-".to_owned(), |r| format!("{r:.2}x")),
            ]);
        }
    }
    for col in [3, 4, 7] {
        if let Some(column) = table.column_mut(col) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    out.push_str(&table.to_string());
    out.push_str("\n\n");
    out
}

/// The summary printed above the tables when several workloads ran: one row per (workload,
/// threads) with the winner, its paired ratio over the runner-up and the machine's load,
/// then the thread counts left out.
pub(crate) fn summary(results: &harness::ResultFile) -> String {
    let rows = harness::summary::rows(results);
    let mut out = String::from(
        "summary: winner = highest median throughput; ratio = winner / runner-up, paired by round [95% interval]\n",
    );
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "workload",
        "threads",
        "rounds × run",
        "winner",
        "runner-up",
        "ratio [95%]",
        "machine",
    ]);
    for r in &rows {
        table.add_row(vec![
            r.workload.clone(),
            r.threads.to_string(),
            format!("{} × {}", r.rounds, r.run_length),
            r.winner.clone(),
            r.runner_up.clone().unwrap_or_else(|| "-".to_owned()),
            r.ratio_text(),
            r.machine_text(),
        ]);
    }
    if let Some(column) = table.column_mut(1) {
        column.set_cell_alignment(CellAlignment::Right);
    }
    out.push_str(&table.to_string());
    out.push('\n');
    for note in &results.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out.push('\n');
    out
}
