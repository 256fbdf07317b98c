//! The results table: one block per (workload, threads), one row per allocator, with
//! throughput (mean ± standard deviation over runs), latency percentiles per sample and the
//! ratio of throughput to the baseline allocator.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use harness::Measurement;

use super::format;

/// A table caption and body per workload.
pub(crate) fn render(measurements: &[Measurement], baseline: Option<&str>) -> String {
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
            "{name} ({}): op = {}; latency sample = {}; clock read {:.1} ns + bookkeeping {:.1} ns{hogs}\n",
            first.kind,
            first.op_unit,
            first.latency_ns.unit,
            first.latency_ns.timer_overhead_ns,
            first.latency_ns.bookkeeping_ns
        ));
        // The producer-consumer hand-off's waits per operation, and the share that blocked.
        let handoff = group
            .iter()
            .any(|m| m.extra.contains_key("handoff_waits_per_op"));
        let mut table = Table::new();
        table.load_style(UTF8_FULL_CONDENSED);
        let ratio_header = match baseline {
            Some(b) => format!("vs {b}"),
            None => "vs -".to_owned(),
        };
        let mut header = vec![
            "threads",
            "allocator",
            "throughput",
            "± sd",
            "p50",
            "p99",
            "p99.9",
            "max",
            &ratio_header,
        ];
        if handoff {
            header.push("waits/op (blocked)");
        }
        table.set_header(header);
        for m in &group {
            let (mean, sd) = m.throughput_mean_sd();
            let base = baseline.and_then(|b| {
                group
                    .iter()
                    .find(|o| o.allocator == b && o.config.threads == m.config.threads)
            });
            let ratio = match base {
                Some(b) if b.throughput_ops_per_s > 0.0 => {
                    format::ratio(m.throughput_ops_per_s / b.throughput_ops_per_s)
                }
                _ => "-".to_owned(),
            };
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
                format::nanos(lat.p50 as f64),
                format::nanos(lat.p99 as f64),
                format::nanos(lat.p999 as f64),
                format::nanos(lat.max as f64),
                ratio,
            ];
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
        for col in 2..9 + usize::from(handoff) {
            if let Some(column) = table.column_mut(col) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        out.push_str(&table.to_string());
        out.push_str("\n\n");
    }
    out
}
