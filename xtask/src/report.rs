//! `cargo xtask report`: SVG charts from a result file of `sheafbench run`.
//!
//! Per workload, two charts:
//!
//! - `throughput-<workload>.svg`: horizontal bars, one group per allocator, one bar per
//!   thread count, with the mean throughput and a whisker of ± one standard deviation of the
//!   per-run samples where there are several runs;
//! - `latency-<workload>.svg`: per (allocator, threads), the p50, p90, p99 and p99.9 of one
//!   unit of work on a logarithmic axis (the unit, e.g. "batch of 256 pairs", is in the
//!   title: these are not per-operation latencies unless the unit is one operation).
//!
//! The SVG is written by hand (text, rectangles, lines): no plotting dependency in the xtask.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::util::{self, TaskError, TaskResult};

/// SVG charts from a result file of `sheafbench run`.
#[derive(Debug, Parser)]
pub(crate) struct Options {
    /// The result file (`sheafbench run --json`).
    #[arg(value_name = "RESULTS_JSON")]
    input: PathBuf,
    /// Where to write the charts (default: beside the result file).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// `cargo xtask report`.
pub(crate) fn report(options: Options) -> TaskResult {
    let Options { input, out } = options;
    let out = out.unwrap_or_else(|| {
        input
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });
    let written = write_charts(&input, &out)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes the charts of the result file `input` into `out`; returns their paths.
pub(crate) fn write_charts(input: &Path, out: &Path) -> TaskResult<Vec<PathBuf>> {
    let result = util::read_json(input)?;
    let charts = charts(&result);
    if charts.is_empty() {
        return Err(TaskError::Failed(format!(
            "{}: no measurement to chart",
            input.display()
        )));
    }
    let mut written = Vec::new();
    for (name, svg) in charts {
        let path = out.join(name);
        util::write_atomic(&path, &svg)?;
        written.push(path);
    }
    Ok(written)
}

/// One measurement, as the charts need it.
#[derive(Clone, Debug)]
struct Point {
    allocator: String,
    threads: u64,
    throughput: f64,
    spread: f64,
    unit: String,
    percentiles: [(&'static str, f64); 4],
}

/// File name and SVG text of every chart of a result file.
pub(crate) fn charts(result: &serde_json::Value) -> Vec<(String, String)> {
    let mut by_workload: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for run in result["runs"].as_array().into_iter().flatten() {
        let (Some(workload), Some(allocator), Some(throughput)) = (
            run["workload"].as_str(),
            run["allocator"].as_str(),
            run["throughput_ops_per_s"].as_f64(),
        ) else {
            continue;
        };
        let samples: Vec<f64> = run["samples"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["throughput_ops_per_s"].as_f64())
            .collect();
        let latency = &run["latency_ns"];
        let figure = |key: &str| latency[key].as_f64().unwrap_or(0.0);
        by_workload
            .entry(workload.to_owned())
            .or_default()
            .push(Point {
                allocator: allocator.to_owned(),
                threads: run["config"]["threads"].as_u64().unwrap_or(0),
                throughput,
                spread: standard_deviation(&samples),
                unit: latency["unit"]
                    .as_str()
                    .unwrap_or("unit of work")
                    .to_owned(),
                percentiles: [
                    ("p50", figure("p50")),
                    ("p90", figure("p90")),
                    ("p99", figure("p99")),
                    ("p99.9", figure("p999")),
                ],
            });
    }
    let mut charts = Vec::new();
    for (workload, mut points) in by_workload {
        points.sort_by(|a, b| {
            a.allocator
                .cmp(&b.allocator)
                .then(a.threads.cmp(&b.threads))
        });
        let file = sanitize(&workload);
        charts.push((
            format!("throughput-{file}.svg"),
            throughput_chart(&workload, &points),
        ));
        charts.push((
            format!("latency-{file}.svg"),
            latency_chart(&workload, &points),
        ));
    }
    charts
}

fn standard_deviation(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];
const LABEL_WIDTH: f64 = 190.0;
const PLOT_WIDTH: f64 = 560.0;
const ROW: f64 = 18.0;

fn header(out: &mut String, width: f64, height: f64, title: &str, subtitle: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">{}</text>\n\
         <text x=\"10\" y=\"38\" fill=\"#555\">{}</text>\n",
        escape(title),
        escape(subtitle)
    );
}

/// Throughput bars, in millions of operations per second.
fn throughput_chart(workload: &str, points: &[Point]) -> String {
    let threads: Vec<u64> = {
        let mut t: Vec<u64> = points.iter().map(|p| p.threads).collect();
        t.sort_unstable();
        t.dedup();
        t
    };
    let top = 60.0;
    let height = top + points.len() as f64 * ROW + (points.len() as f64) * 2.0 + 60.0;
    let width = LABEL_WIDTH + PLOT_WIDTH + 120.0;
    let max = points
        .iter()
        .map(|p| p.throughput + p.spread)
        .fold(0.0, f64::max)
        .max(1.0);
    let mut out = String::new();
    header(
        &mut out,
        width,
        height,
        &format!("{workload}: throughput"),
        "million operations per second (higher is better); whisker: ± 1 sd of the runs",
    );
    let mut y = top;
    let mut previous: Option<&str> = None;
    for point in points {
        if previous.is_some_and(|a| a != point.allocator) {
            y += 6.0;
        }
        previous = Some(&point.allocator);
        let color = COLORS[threads
            .iter()
            .position(|t| *t == point.threads)
            .unwrap_or(0)
            % COLORS.len()];
        let w = point.throughput / max * PLOT_WIDTH;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} ({} thr)</text>",
            LABEL_WIDTH - 6.0,
            y + ROW * 0.7,
            escape(&point.allocator),
            point.threads
        );
        let _ = writeln!(
            out,
            "<rect x=\"{LABEL_WIDTH}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{color}\"/>",
            ROW - 3.0
        );
        if point.spread > 0.0 {
            let lo = LABEL_WIDTH + (point.throughput - point.spread).max(0.0) / max * PLOT_WIDTH;
            let hi = LABEL_WIDTH + (point.throughput + point.spread) / max * PLOT_WIDTH;
            let mid = y + (ROW - 3.0) / 2.0;
            let _ = writeln!(
                out,
                "<line x1=\"{lo:.1}\" y1=\"{mid:.1}\" x2=\"{hi:.1}\" y2=\"{mid:.1}\" stroke=\"black\"/>"
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\">{:.2}</text>",
            LABEL_WIDTH
                + w
                + 4.0
                + if point.spread > 0.0 {
                    point.spread / max * PLOT_WIDTH
                } else {
                    0.0
                },
            y + ROW * 0.7,
            point.throughput / 1e6
        );
        y += ROW;
    }
    axis(&mut out, y + 4.0, max / 1e6, false);
    out.push_str("</svg>\n");
    out
}

/// Percentile dots on a log axis, in nanoseconds per unit of work.
fn latency_chart(workload: &str, points: &[Point]) -> String {
    let top = 60.0;
    let height = top + points.len() as f64 * ROW + 80.0;
    let width = LABEL_WIDTH + PLOT_WIDTH + 120.0;
    let values: Vec<f64> = points
        .iter()
        .flat_map(|p| p.percentiles.iter().map(|(_, v)| *v))
        .filter(|v| *v > 0.0)
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if values.is_empty() {
        (1.0, 10.0)
    } else {
        (
            10f64.powf(lo.log10().floor()),
            10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)),
        )
    };
    let x = |v: f64| {
        LABEL_WIDTH + (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()) * PLOT_WIDTH
    };
    let unit = points.first().map_or("unit of work", |p| p.unit.as_str());
    let mut out = String::new();
    header(
        &mut out,
        width,
        height,
        &format!("{workload}: latency percentiles"),
        &format!("nanoseconds per sample, log scale (lower is better); one sample: {unit}"),
    );
    let mut y = top;
    for point in points {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} ({} thr)</text>",
            LABEL_WIDTH - 6.0,
            y + ROW * 0.7,
            escape(&point.allocator),
            point.threads
        );
        let mid = y + ROW / 2.0;
        let _ = writeln!(
            out,
            "<line x1=\"{LABEL_WIDTH}\" y1=\"{mid:.1}\" x2=\"{:.1}\" y2=\"{mid:.1}\" stroke=\"#ddd\"/>",
            LABEL_WIDTH + PLOT_WIDTH
        );
        for (i, (_, value)) in point.percentiles.iter().enumerate() {
            if *value > 0.0 {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{mid:.1}\" r=\"4\" fill=\"{}\"/>",
                    x(*value),
                    COLORS[i % COLORS.len()]
                );
            }
        }
        y += ROW;
    }
    // Decade ticks.
    let mut tick = lo;
    while tick <= hi * 1.0001 {
        let _ = writeln!(
            out,
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"#999\"/>\n<text x=\"{0:.1}\" y=\"{3:.1}\" text-anchor=\"middle\">{4}</text>",
            x(tick),
            y + 2.0,
            y + 8.0,
            y + 22.0,
            format_ns(tick)
        );
        tick *= 10.0;
    }
    let legend_y = y + 44.0;
    for (i, (name, _)) in points
        .first()
        .map_or(&[][..], |p| &p.percentiles[..])
        .iter()
        .enumerate()
    {
        let lx = LABEL_WIDTH + i as f64 * 80.0;
        let _ = writeln!(
            out,
            "<circle cx=\"{lx:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{legend_y:.1}\">{name}</text>",
            legend_y - 4.0,
            COLORS[i % COLORS.len()],
            lx + 8.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// A linear axis from 0 to `max` below the bars.
fn axis(out: &mut String, y: f64, max: f64, _log: bool) {
    let _ = writeln!(
        out,
        "<line x1=\"{LABEL_WIDTH}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#999\"/>",
        LABEL_WIDTH + PLOT_WIDTH
    );
    for i in 0..=4 {
        let value = max * f64::from(i) / 4.0;
        let x = LABEL_WIDTH + PLOT_WIDTH * f64::from(i) / 4.0;
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#999\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{value:.1}</text>",
            y + 5.0,
            y + 18.0
        );
    }
}

fn format_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.0} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.0} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.0} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> serde_json::Value {
        serde_json::json!({
            "runs": [
                {"workload": "churn-lifo", "allocator": "sheaf", "config": {"threads": 1},
                 "throughput_ops_per_s": 2.0e8,
                 "samples": [{"throughput_ops_per_s": 1.9e8}, {"throughput_ops_per_s": 2.1e8}],
                 "latency_ns": {"unit": "batch of 256 pairs", "p50": 900, "p90": 1000, "p99": 2000, "p999": 9000}},
                {"workload": "churn-lifo", "allocator": "mimalloc", "config": {"threads": 1},
                 "throughput_ops_per_s": 1.0e8, "samples": [],
                 "latency_ns": {"unit": "batch of 256 pairs", "p50": 1800, "p90": 2000, "p99": 4000, "p999": 0}},
                {"workload": "a/b c", "allocator": "<odd>", "config": {"threads": 2},
                 "throughput_ops_per_s": 5.0, "latency_ns": {}},
                {"workload": "broken"}
            ]
        })
    }

    #[test]
    fn two_charts_per_workload_with_safe_names() {
        let charts = charts(&result());
        let names: Vec<&str> = charts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "throughput-a_b_c.svg",
                "latency-a_b_c.svg",
                "throughput-churn-lifo.svg",
                "latency-churn-lifo.svg"
            ]
        );
        for (_, svg) in &charts {
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
            assert!(!svg.contains("<odd>"), "names are escaped");
        }
    }

    #[test]
    fn throughput_chart_labels_each_allocator_with_its_figure() {
        let charts = charts(&result());
        let svg = &charts
            .iter()
            .find(|(n, _)| n == "throughput-churn-lifo.svg")
            .unwrap()
            .1;
        assert!(svg.contains("sheaf (1 thr)") && svg.contains("mimalloc (1 thr)"));
        assert!(svg.contains(">200.00<") && svg.contains(">100.00<"));
        // sheaf has two samples: a whisker; mimalloc none.
        assert_eq!(svg.matches("stroke=\"black\"").count(), 1);
    }

    #[test]
    fn latency_chart_skips_missing_percentiles_and_names_the_unit() {
        let charts = charts(&result());
        let svg = &charts
            .iter()
            .find(|(n, _)| n == "latency-churn-lifo.svg")
            .unwrap()
            .1;
        assert!(svg.contains("one sample: batch of 256 pairs"));
        // 4 + 3 percentile dots, plus 4 legend dots.
        assert_eq!(svg.matches("<circle").count(), 11);
    }

    #[test]
    fn empty_result_gives_no_chart() {
        assert!(charts(&serde_json::json!({"runs": []})).is_empty());
    }
}
