//! `cargo xtask report`: SVG charts from a result file of `sheafbench run`.
//!
//! Per workload, two or three charts, drawn by the harness's charts (`harness::chart`, which also
//! draws the CLI's sweep charts):
//!
//! - `throughput-<workload>.svg`: one horizontal bar per (allocator, threads), coloured by
//!   thread count, with the mean throughput and a whisker of ± one standard deviation of the
//!   per-run samples where there are several runs;
//! - `latency-<workload>.svg`: per (allocator, threads), the p50, p90, p99 and p99.9 of one
//!   unit of work on a logarithmic axis (the unit, e.g. "batch of 256 pairs", is on the axis:
//!   these are not per-operation latencies unless the unit is one operation);
//! - `memory-<workload>.svg`, where the measurements carry a `timeline`: slab pages held and
//!   the process's resident set over time, one line per (allocator, threads).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use harness::chart;

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
    let charts = charts(&result)?;
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
    /// Throughput of every round.
    rounds: Vec<f64>,
    unit: String,
    /// The measurement carries a `timer-dominated` warning.
    timer_dominated: bool,
    /// In the order of [`PERCENTILES`].
    percentiles: [f64; 4],
    /// The timeline's readings: (seconds, slab bytes, RSS bytes); empty without one.
    timeline: Vec<(f64, Option<u64>, Option<u64>)>,
}

/// File name and SVG text of every chart of a result file.
pub(crate) fn charts(result: &serde_json::Value) -> TaskResult<Vec<(String, String)>> {
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
                rounds: samples,
                timer_dominated: run["warnings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|w| w.as_str())
                    .any(|w| w.starts_with("timer-dominated")),
                unit: latency["unit"]
                    .as_str()
                    .unwrap_or("unit of work")
                    .to_owned(),
                percentiles: PERCENTILES.map(|(_, key)| figure(key)),
                timeline: run["timeline"]["samples"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| {
                        Some((
                            s["t"].as_f64()?,
                            s["slab_bytes"].as_u64(),
                            s["rss_bytes"].as_u64(),
                        ))
                    })
                    .collect(),
            });
    }
    let machine = &result["machine"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    let footer = chart::footer(
        &text(&machine["git"]),
        &text(&machine["cpu"]),
        machine["cores"].as_u64().unwrap_or(0) as usize,
        &text(&result["date"]),
    );
    let mut charts = Vec::new();
    for (workload, mut points) in by_workload {
        points.sort_by(|a, b| {
            a.allocator
                .cmp(&b.allocator)
                .then(a.threads.cmp(&b.threads))
        });
        let file = sanitize(&workload);
        let drawn = |e: chart::ChartError| TaskError::Failed(format!("{workload}: {e}"));
        charts.push((
            format!("throughput-{file}.svg"),
            throughput_chart(&workload, &points, &footer).map_err(drawn)?,
        ));
        charts.push((
            format!("latency-{file}.svg"),
            latency_chart(&workload, &points, &footer).map_err(drawn)?,
        ));
        let series: Vec<chart::MemorySeries> = points
            .iter()
            .filter(|p| !p.timeline.is_empty())
            .map(|p| (row_label(p), p.timeline.clone()))
            .collect();
        if !series.is_empty() {
            charts.push((
                format!("memory-{file}.svg"),
                chart::memory(&format!("{workload}: memory over time"), &series, &footer)
                    .map_err(drawn)?,
            ));
        }
    }
    Ok(charts)
}

/// The percentiles of the latency chart: label and key in the result's `latency_ns`.
const PERCENTILES: [(&str, &str); 4] = [
    ("p50", "p50"),
    ("p90", "p90"),
    ("p99", "p99"),
    ("p99.9", "p999"),
];

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

fn row_label(point: &Point) -> String {
    format!("{} ({} thr)", point.allocator, point.threads)
}

/// Throughput bars, in millions of operations per second, coloured by thread count.
fn throughput_chart(
    workload: &str,
    points: &[Point],
    footer: &str,
) -> Result<String, chart::ChartError> {
    let mut threads: Vec<u64> = points.iter().map(|p| p.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    let groups: Vec<String> = threads
        .iter()
        .map(|t| format!("{t} thread{}", if *t == 1 { "" } else { "s" }))
        .collect();
    let bars: Vec<chart::Bar> = points
        .iter()
        .map(|point| chart::Bar {
            label: row_label(point),
            value: point.throughput / 1e6,
            spread: 0.0,
            group: threads.binary_search(&point.threads).unwrap_or(0),
            rounds: point.rounds.iter().map(|t| t / 1e6).collect(),
        })
        .collect();
    chart::bars(
        &format!("{workload}: throughput"),
        "throughput, million operations per second (higher is better); bar: median of the rounds, circles: each round",
        &groups,
        &bars,
        footer,
    )
}

/// Percentile dots on a log axis, in nanoseconds per unit of work.
fn latency_chart(
    workload: &str,
    points: &[Point],
    footer: &str,
) -> Result<String, chart::ChartError> {
    let unit = points.first().map_or("unit of work", |p| p.unit.as_str());
    let rows: Vec<chart::DotRow> = points
        .iter()
        .map(|point| chart::DotRow {
            label: row_label(point),
            values: point.percentiles.to_vec(),
            flag: point
                .timer_dominated
                .then(|| "timer-dominated: mostly clock".to_owned()),
        })
        .collect();
    chart::log_dots(
        &format!("{workload}: latency percentiles"),
        &format!("time per sample, log scale (lower is better); one sample: {unit}"),
        &PERCENTILES.map(|(label, _)| label),
        &rows,
        format_ns,
        footer,
    )
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
            "date": "2026-01-01T00:00:00Z",
            "machine": {"git": "1a2b3c", "cpu": "Test CPU", "cores": 2},
            "runs": [
                {"workload": "churn-lifo", "allocator": "sheaf", "config": {"threads": 1},
                 "throughput_ops_per_s": 2.0e8,
                 "samples": [{"throughput_ops_per_s": 1.9e8}, {"throughput_ops_per_s": 2.1e8}],
                 "latency_ns": {"unit": "batch of 256 pairs", "p50": 900, "p90": 1000, "p99": 2000, "p999": 9000}},
                {"workload": "churn-lifo", "allocator": "mimalloc", "config": {"threads": 1},
                 "throughput_ops_per_s": 1.0e8, "samples": [],
                 "latency_ns": {"unit": "batch of 256 pairs", "p50": 1800, "p90": 2000, "p99": 4000, "p999": 0},
                 "warnings": ["timer-dominated: the median sample is mostly clock"]},
                {"workload": "a/b c", "allocator": "<odd>", "config": {"threads": 2},
                 "throughput_ops_per_s": 5.0, "latency_ns": {}},
                {"workload": "broken"}
            ]
        })
    }

    /// How many `<text>` elements of `svg` say exactly `what`.
    fn texts(svg: &str, what: &str) -> usize {
        svg.split("<text")
            .skip(1)
            .filter_map(|element| element.split_once('>'))
            .filter(|(_, rest)| rest.split("</text>").next().map(str::trim) == Some(what))
            .count()
    }

    fn chart(name: &str) -> String {
        let charts = charts(&result()).unwrap();
        charts.into_iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn a_workload_with_timelines_gets_a_memory_chart_with_a_line_per_allocator() {
        let mut result = result();
        let timeline = |slab: u64| {
            serde_json::json!({"interval_ns": 10_000_000, "sampling_ns": 1, "samples": [
                {"t": 0.0, "phase": 0, "slab_bytes": slab, "rss_bytes": 8 << 20},
                {"t": 0.01, "phase": 1, "slab_bytes": 2 * slab, "rss_bytes": 9 << 20}
            ]})
        };
        result["runs"][0]["timeline"] = timeline(1 << 20);
        result["runs"][1]["timeline"] = timeline(1 << 21);
        let charts = charts(&result).unwrap();
        let names: Vec<&str> = charts.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"memory-churn-lifo.svg"), "{names:?}");
        assert!(!names.contains(&"memory-a_b_c.svg"), "{names:?}");
        let svg = chart("throughput-churn-lifo.svg");
        assert!(svg.starts_with("<svg"));
        let memory = &charts
            .iter()
            .find(|(n, _)| n == "memory-churn-lifo.svg")
            .unwrap()
            .1;
        assert_eq!(texts(memory, "sheaf (1 thr)"), 1, "legend entry");
        assert_eq!(texts(memory, "mimalloc (1 thr)"), 1, "legend entry");
        let lines = memory
            .split("<polyline")
            .skip(1)
            .filter(|element| element.contains("stroke-width=\"2\""))
            .count();
        // One line per allocator in each panel, and one legend mark each.
        assert_eq!(lines, 6, "two lines per panel and two legend marks");
    }

    #[test]
    fn two_charts_per_workload_with_safe_names() {
        let charts = charts(&result()).unwrap();
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
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            assert!(!svg.contains("<odd>"), "names are escaped");
        }
    }

    #[test]
    fn throughput_chart_labels_each_allocator_with_its_figure() {
        let svg = chart("throughput-churn-lifo.svg");
        assert_eq!(texts(&svg, "sheaf (1 thr)"), 1, "{svg}");
        assert_eq!(texts(&svg, "mimalloc (1 thr)"), 1, "{svg}");
        assert_eq!(texts(&svg, "200.00"), 1, "{svg}");
        assert_eq!(texts(&svg, "100.00"), 1, "{svg}");
        assert_eq!(
            texts(&svg, "1 thread"),
            1,
            "the legend names the thread count"
        );
        // sheaf's two rounds are circles beside its median bar; mimalloc has none.
        assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
        assert_eq!(
            svg.matches("#333333").count(),
            0,
            "no whisker: the rounds show the spread"
        );
        assert_eq!(
            texts(
                &svg,
                "git 1a2b3c · Test CPU · 2 CPUs · 2026-01-01T00:00:00Z"
            ),
            1,
            "the footer names the revision and the machine"
        );
    }

    #[test]
    fn latency_chart_skips_missing_percentiles_and_names_the_unit() {
        let svg = chart("latency-churn-lifo.svg");
        assert!(svg.contains("one sample: batch of 256 pairs"));
        // 4 + 3 percentile dots, plus 4 legend dots.
        assert_eq!(svg.matches("<circle").count(), 11);
        // Decades from 100 ns to 10 µs, in the units the values have.
        for label in ["100 ns", "1 µs", "10 µs", "p99.9"] {
            assert_eq!(texts(&svg, label), 1, "{label} in {svg}");
        }
        // The axis title gives no unit of its own: the ticks carry theirs.
        assert!(svg.contains("time per sample, log scale"), "{svg}");
        // Only mimalloc's row was warned timer-dominated.
        assert_eq!(texts(&svg, "timer-dominated: mostly clock"), 1, "{svg}");
    }

    #[test]
    fn empty_result_gives_no_chart() {
        assert!(charts(&serde_json::json!({"runs": []})).unwrap().is_empty());
    }

    #[test]
    fn charts_are_written_beside_the_result_file() {
        let dir = std::env::temp_dir().join(format!("xtask-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("results.json");
        std::fs::write(&input, result().to_string()).unwrap();
        let written = write_charts(&input, &dir).unwrap();
        assert_eq!(written.len(), 4);
        for path in &written {
            let svg = std::fs::read_to_string(path).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.len() > 1000,
                "{}",
                path.display()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
