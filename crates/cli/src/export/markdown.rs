//! Markdown: the machine, the summary (winner per workload and thread count), then one table
//! per workload, then warnings and failures.

use harness::ResultFile;

use super::Exporter;
use crate::output::{format, table, warnings};

/// A Markdown report.
#[derive(Debug)]
pub(crate) struct MarkdownExporter;

impl Exporter for MarkdownExporter {
    fn serialize(&self, results: &ResultFile, baseline: Option<&str>) -> Vec<u8> {
        let mut md = String::new();
        let m = &results.machine;
        md.push_str("# sheafbench results\n\n");
        md.push_str(&format!(
            "{} · {} CPUs · Linux {} · {} · git {} · {}\n\n",
            m.cpu, m.cores, m.kernel, m.rustc, m.git, results.date
        ));
        let environment: Vec<String> = m
            .environment
            .describe()
            .into_iter()
            .map(|(label, value)| format!("{label}: {value}"))
            .collect();
        md.push_str(&format!("Environment: {}.\n\n", environment.join(" · ")));
        md.push_str(&harness::summary::markdown(results));
        let mut workloads: Vec<&str> = Vec::new();
        for r in &results.runs {
            if !workloads.contains(&r.workload.as_str()) {
                workloads.push(&r.workload);
            }
        }
        for name in workloads {
            let group: Vec<_> = results.runs.iter().filter(|r| r.workload == name).collect();
            let first = group[0];
            md.push_str(&format!("## {name}\n\n"));
            md.push_str(&format!(
                "Kind `{}`; one operation = {}; one latency sample = {} (includes one clock read of {:.1} ns and {:.1} ns of the harness's bookkeeping).\n\n",
                first.kind,
                first.op_unit,
                first.latency_ns.unit,
                first.latency_ns.timer_overhead_ns,
                first.latency_ns.bookkeeping_ns
            ));
            if first.config.hogs > 0 {
                md.push_str(&format!(
                    "Oversubscribed: {} busy threads ran beside each measurement, pinned round-robin to its CPUs (`--hogs {}`).\n\n",
                    first.config.hogs, first.config.hogs
                ));
            }
            md.push_str(&format!(
                "{} rounds, allocators interleaved (order rotated each round); throughput and latency are medians over the rounds, `± sd` the rounds' coefficient of variation, `per CPU-s` the operations per CPU-second of the measured threads (blind to time spent waiting for a CPU), and each ratio is paired by round with its 95% bootstrap interval.\n\n",
                table::rounds(&group)
            ));
            let references = table::references(&group, baseline);
            let cpu_reference = references.first();
            let ratio_headers: String = references
                .iter()
                .map(|r| format!(" vs {r} |"))
                .chain(cpu_reference.map(|r| format!(" per CPU-s vs {r} |")))
                .collect();
            md.push_str(&format!(
                "| threads | allocator | throughput | ± sd | per CPU-s | p50 | p99 | p99.9 | max |{ratio_headers}\n"
            ));
            md.push_str(&format!(
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|{}\n",
                "---:|".repeat(references.len() + usize::from(cpu_reference.is_some()))
            ));
            for r in &group {
                let (mean, sd) = r.throughput_mean_sd();
                let ratios: String =
                    references
                        .iter()
                        .map(|v| format!(" {} |", table::ratio_cell(r, v, &results.paired, false)))
                        .chain(cpu_reference.map(|v| {
                            format!(" {} |", table::ratio_cell(r, v, &results.paired, true))
                        }))
                        .collect();
                let l = &r.latency_ns.figures;
                md.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |{}\n",
                    r.config.threads,
                    r.allocator,
                    format::throughput(r.throughput_ops_per_s),
                    if r.samples.len() > 1 && mean > 0.0 {
                        format!("{:.1}%", 100.0 * sd / mean)
                    } else {
                        "-".into()
                    },
                    table::per_cpu_second(r),
                    format::nanos(l.p50 as f64),
                    format::nanos(l.p99 as f64),
                    format::nanos(l.p999 as f64),
                    format::nanos(l.max as f64),
                    ratios
                ));
            }
            md.push('\n');
        }
        let warnings = warnings::collect(&results.runs);
        if !warnings.is_empty() {
            md.push_str("## Warnings\n\n");
            for w in warnings {
                md.push_str(&format!("- {w}\n"));
            }
            md.push('\n');
        }
        if !results.failures.is_empty() {
            md.push_str("## Failures\n\n");
            for f in &results.failures {
                md.push_str(&format!(
                    "- `{}` / `{}` / {} threads: {}\n",
                    f.workload, f.allocator, f.threads, f.error
                ));
            }
            md.push('\n');
        }
        md.into_bytes()
    }
}
