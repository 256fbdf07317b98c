//! SVG charts of results, drawn with plotters: the one chart code path of the CLI
//! (`sheafbench sweep --svg`) and of the xtask (`cargo xtask report`, `cargo xtask bench`).
//!
//! Seven shapes, each a function returning the SVG text (the caller writes it):
//! - [`sweep`]: throughput and p99 latency against a swept spec value, one line per
//!   allocator, two panels side by side;
//! - [`trade_off`]: memory held against throughput, one labelled point per setting, a line
//!   per series;
//! - [`memory`]: memory over time (slab pages and the process's resident set), one line
//!   per allocator, two panels side by side;
//! - [`bars`]: one horizontal bar per row (e.g. an allocator at a thread count), with its
//!   figure printed and an optional whisker of its spread, coloured by group;
//! - [`trend`]: one figure over recorded runs (`sheafbench history trend`), one line per
//!   series (a machine, a thread count), with each run's interval as a whisker;
//! - [`log_dots`]: several figures per row (e.g. latency percentiles) as dots on a logarithmic
//!   axis, coloured by figure;
//! - [`scaling`]: total and per-task throughput against the number of tasks, one line per
//!   (allocator, mode), each point's paired interval as an error bar and the oversubscribed
//!   points hollow on a shaded band.
//!
//! Value axes print their ticks in their shortest form (`10`, not `10.0`); an axis of a whole
//! quantity (a count in every point, such as instructions) labels whole ticks only, and an
//! axis of categories (swept values, runs, rows) labels each category and nothing between.
//! They share the canvas (white, titled, [`FONT`]), the palette (plotters' `Palette99`, in
//! the order of the series or groups), the row labels of the two row charts, and the legend.

use std::fmt;

use plotters::coord::Shift;
use plotters::prelude::*;

/// The font family of every text.
pub const FONT: &str = "sans-serif";

/// Drawing failed (the SVG backend reports its errors as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartError(String);

impl fmt::Display for ChartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "drawing the chart failed: {}", self.0)
    }
}

impl std::error::Error for ChartError {}

fn failed<E: fmt::Display>(error: E) -> ChartError {
    ChartError(error.to_string())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Pixels of the footer line under every chart.
const FOOTER: u32 = 24;

/// An SVG of `size` pixels: a white canvas with `title` on top, `footer` (the revision and
/// the machine) in small grey type at the bottom, the rest handed to `draw`.
fn canvas(
    size: (u32, u32),
    title: &str,
    footer: &str,
    draw: impl FnOnce(&Area<'_>) -> Result<(), ChartError>,
) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size.0, size.1 + FOOTER)).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let (body, foot) = root.split_vertically(size.1);
        foot.draw(&Text::new(
            footer.to_owned(),
            (10, 4),
            (FONT, 12).into_font().color(&RGBColor(0x55, 0x55, 0x55)),
        ))
        .map_err(failed)?;
        let body = body.titled(title, (FONT, 22)).map_err(failed)?;
        draw(&body)?;
        root.present().map_err(failed)?;
    }
    Ok(svg)
}

/// The footer of a chart: the revision and the machine it was measured on.
pub fn footer(git: &str, cpu: &str, cores: usize, date: &str) -> String {
    format!("git {git} · {cpu} · {cores} CPUs · {date}")
}

/// The colour of the `index`-th series or group.
fn color(index: usize) -> RGBAColor {
    Palette99::pick(index).to_rgba()
}

/// How a legend entry of [`side_legend`] is marked.
#[derive(Clone, Copy, Debug)]
enum Marker {
    Square,
    Dot,
    Line,
}

/// A legend in an area of its own (right of a row chart's plot, so that no row hides under
/// it): one entry per name, coloured as [`color`] colours that index.
fn side_legend(area: &Area<'_>, names: &[&str], marker: Marker) -> Result<(), ChartError> {
    for (index, name) in names.iter().enumerate() {
        let color = color(index);
        let (x, y) = (10, 30 + 22 * i32::try_from(index).unwrap_or(0));
        match marker {
            Marker::Square => area.draw(&Rectangle::new(
                [(x, y - 5), (x + 12, y + 5)],
                color.filled(),
            )),
            Marker::Dot => area.draw(&Circle::new((x + 6, y), 4, color.filled())),
            Marker::Line => area.draw(&PathElement::new(
                vec![(x, y), (x + 14, y)],
                color.stroke_width(2),
            )),
        }
        .map_err(failed)?;
        area.draw(&Text::new(name.to_string(), (x + 20, y - 7), (FONT, 13)))
            .map_err(failed)?;
    }
    Ok(())
}

/// The label of the category at `position` (a whole number from 0 up) of `labels`, and
/// nothing between categories: plotters puts key points where it likes on a numeric axis.
fn category(labels: &[String], position: f64) -> String {
    let index = position.round();
    if (position - index).abs() < 1e-6 && index >= 0.0 && (index as usize) < labels.len() {
        labels[index as usize].clone()
    } else {
        String::new()
    }
}

/// One allocator's points of a sweep: its name and, per swept value, (value index,
/// throughput in ops/s, p99 in ns).
pub type SweepSeries = (String, Vec<(usize, f64, f64)>);

/// A sweep: throughput (Mops/s) and p99 latency per sample (µs) against the swept `param`,
/// whose values are `values`, one line per series, two panels side by side and the legend
/// right of them; `footer` under them.
pub fn sweep(
    title: &str,
    param: &str,
    values: &[String],
    series: &[SweepSeries],
    footer: &str,
) -> Result<String, ChartError> {
    canvas((1200 + LEGEND, 480), title, footer, |root| {
        let (panels, key) = root.split_horizontally(1200);
        let names: Vec<&str> = series.iter().map(|(name, _)| name.as_str()).collect();
        side_legend(&key, &names, Marker::Line)?;
        let (left, right) = panels.split_horizontally(600);
        sweep_panel(
            &left,
            "throughput (Mops/s)",
            param,
            values,
            series,
            |(_, t, _)| t / 1e6,
        )?;
        sweep_panel(
            &right,
            "p99 latency per sample (µs)",
            param,
            values,
            series,
            |(_, _, p)| p / 1e3,
        )
    })
}

fn sweep_panel(
    area: &Area<'_>,
    y_label: &str,
    param: &str,
    values: &[String],
    series: &[SweepSeries],
    y: impl Fn(&(usize, f64, f64)) -> f64,
) -> Result<(), ChartError> {
    let y_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(&y))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let n = values.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.25f64..(n as f64 - 0.75), 0.0..y_max)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc(param)
        .y_desc(y_label)
        .y_label_formatter(&|y| tick(*y))
        .x_labels(n)
        .x_label_formatter(&|x| category(values, *x))
        .draw()
        .map_err(failed)?;
    for (index, (_, points)) in series.iter().enumerate() {
        let color = color(index);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.0 as f64, y(p))),
                color.stroke_width(2),
            ))
            .map_err(failed)?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.0 as f64, y(p)), 3, color.filled())),
            )
            .map_err(failed)?;
    }
    Ok(())
}

/// One point of a [`scaling`] curve.
#[derive(Clone, Debug, PartialEq)]
pub struct CurvePoint {
    /// Tasks run at once.
    pub tasks: u32,
    /// The tasks' summed throughput (ops/s).
    pub total: f64,
    /// Throughput per task (ops/s).
    pub per_task: f64,
    /// Interval of `per_task` (ops/s), drawn as an error bar (scaled by `tasks` on the
    /// total panel); `None`: no bar.
    pub interval: Option<(f64, f64)>,
    /// Measured with more threads than CPUs (unpinned): drawn hollow.
    pub oversubscribed: bool,
}

/// One line of a [`scaling`] chart: its name (an allocator and a mode) and its points in
/// task order.
pub type CurveSeries = (String, Vec<CurvePoint>);

/// Scaling curves: total throughput and throughput per task (Mops/s) against the number of
/// tasks, one line per series, two panels side by side and the legend right of them. Task
/// counts above `cpus` are on a shaded band labelled oversubscribed; `footer` under them.
pub fn scaling(
    title: &str,
    series: &[CurveSeries],
    cpus: u32,
    footer: &str,
) -> Result<String, ChartError> {
    canvas((1200 + LEGEND + 60, 480), title, footer, |root| {
        let (panels, key) = root.split_horizontally(1200);
        let names: Vec<&str> = series.iter().map(|(name, _)| name.as_str()).collect();
        side_legend(&key, &names, Marker::Line)?;
        let hint = 40 + 22 * i32::try_from(names.len()).unwrap_or(0);
        for (row, line) in [
            "hollow: oversubscribed",
            "(unpinned, tasks share CPUs)",
            "bars: paired 95% interval",
            "of the ratio to the",
            "smallest task count",
        ]
        .iter()
        .enumerate()
        {
            key.draw(&Text::new(
                line.to_string(),
                (10, hint + 16 * row as i32),
                (FONT, 12),
            ))
            .map_err(failed)?;
        }
        let (left, right) = panels.split_horizontally(600);
        scaling_panel(&left, "total throughput (Mops/s)", series, cpus, |p| {
            f64::from(p.tasks)
        })?;
        scaling_panel(&right, "throughput per task (Mops/s)", series, cpus, |_| {
            1.0
        })
    })
}

/// One panel of [`scaling`]: per-task figures times `factor` of the point.
fn scaling_panel(
    area: &Area<'_>,
    y_label: &str,
    series: &[CurveSeries],
    cpus: u32,
    factor: impl Fn(&CurvePoint) -> f64,
) -> Result<(), ChartError> {
    let points = || series.iter().flat_map(|(_, points)| points.iter());
    let top = |p: &CurvePoint| {
        p.interval
            .map_or(p.per_task, |(_, high)| high.max(p.per_task))
    };
    let y_max = points()
        .map(|p| top(p) * factor(p) / 1e6)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let x_max = points().map(|p| p.tasks).max().unwrap_or(1).max(1);
    let x_range = 0.5f64..(f64::from(x_max) + 0.5);
    let mut chart = ChartBuilder::on(area)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range, 0.0..y_max)
        .map_err(failed)?;
    if x_max > cpus {
        let band = RGBColor(0xEE, 0xEE, 0xEE);
        chart
            .draw_series([Rectangle::new(
                [
                    (f64::from(cpus) + 0.5, 0.0),
                    (f64::from(x_max) + 0.5, y_max),
                ],
                band.filled(),
            )])
            .map_err(failed)?;
        chart
            .draw_series([Text::new(
                "oversubscribed".to_owned(),
                (f64::from(cpus) + 0.55, y_max * 0.98),
                (FONT, 12),
            )])
            .map_err(failed)?;
    }
    let labels: Vec<String> = (0..=x_max).map(|t| t.to_string()).collect();
    chart
        .configure_mesh()
        .x_desc("tasks")
        .y_desc(y_label)
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| category(&labels, *x))
        .draw()
        .map_err(failed)?;
    for (index, (_, points)) in series.iter().enumerate() {
        let color = color(index);
        let at = |p: &CurvePoint| (f64::from(p.tasks), p.per_task * factor(p) / 1e6);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(at),
                color.stroke_width(2),
            ))
            .map_err(failed)?;
        for p in points {
            let (x, y) = at(p);
            if let Some((low, high)) = p.interval {
                let (low, high) = (low * factor(p) / 1e6, high * factor(p) / 1e6);
                chart
                    .draw_series([
                        PathElement::new(vec![(x, low), (x, high)], color.stroke_width(1)),
                        PathElement::new(
                            vec![(x - 0.04, low), (x + 0.04, low)],
                            color.stroke_width(1),
                        ),
                        PathElement::new(
                            vec![(x - 0.04, high), (x + 0.04, high)],
                            color.stroke_width(1),
                        ),
                    ])
                    .map_err(failed)?;
            }
            let marker = if p.oversubscribed {
                Circle::new((x, y), 4, color.stroke_width(2))
            } else {
                Circle::new((x, y), 4, color.filled())
            };
            chart.draw_series([marker]).map_err(failed)?;
        }
    }
    Ok(())
}

/// One setting of a sweep on the trade-off chart.
#[derive(Clone, Debug, PartialEq)]
pub struct TradeOffPoint {
    /// The series (allocator, perhaps with its thread count).
    pub series: String,
    /// The setting, printed beside the point.
    pub label: String,
    /// Memory held, in bytes (slab pages).
    pub memory_bytes: f64,
    /// Operations per second.
    pub throughput: f64,
}

/// Memory held (MiB, x) against throughput (Mops/s, y): one point per setting, labelled with
/// it, joined in the order given per series; the legend right of the plot.
pub fn trade_off(
    title: &str,
    points: &[TradeOffPoint],
    footer: &str,
) -> Result<String, ChartError> {
    let mut names: Vec<&str> = Vec::new();
    for p in points {
        if !names.contains(&p.series.as_str()) {
            names.push(&p.series);
        }
    }
    canvas((800 + LEGEND, 520), title, footer, |root| {
        let (plot, key) = root.split_horizontally(800);
        side_legend(&key, &names, Marker::Line)?;
        let mib = |p: &TradeOffPoint| p.memory_bytes / (1 << 20) as f64;
        let x_max = points.iter().map(mib).fold(0.0f64, f64::max).max(1e-3) * 1.1;
        let y_max = points
            .iter()
            .map(|p| p.throughput / 1e6)
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.1;
        let mut chart = ChartBuilder::on(&plot)
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(failed)?;
        chart
            .configure_mesh()
            .x_desc("slab pages held idle, every object freed (MiB)")
            .y_desc("throughput (Mops/s)")
            .x_label_formatter(&|x| tick(*x))
            .y_label_formatter(&|y| tick(*y))
            .draw()
            .map_err(failed)?;
        for (index, name) in names.iter().enumerate() {
            let color = color(index);
            let series: Vec<&TradeOffPoint> = points.iter().filter(|p| p.series == *name).collect();
            chart
                .draw_series(LineSeries::new(
                    series.iter().map(|p| (mib(p), p.throughput / 1e6)),
                    color.stroke_width(1),
                ))
                .map_err(failed)?;
            for p in series {
                let at = (mib(p), p.throughput / 1e6);
                chart
                    .draw_series([Circle::new(at, 4, color.filled())])
                    .map_err(failed)?;
                chart
                    .draw_series([Text::new(p.label.clone(), at, (FONT, 12))])
                    .map_err(failed)?;
            }
        }
        Ok(())
    })
}

/// One allocator's timeline: its name and, per reading, (seconds, slab bytes, RSS bytes).
pub type MemorySeries = (String, Vec<(f64, Option<u64>, Option<u64>)>);

/// Memory over time: slab pages held (MiB, designs with slabs) and the resident set of the
/// process (MiB) against seconds since the sampler started, one line per series, two panels
/// side by side and the legend right of them; `footer` under them.
pub fn memory(title: &str, series: &[MemorySeries], footer: &str) -> Result<String, ChartError> {
    canvas((1200 + LEGEND, 480), title, footer, |root| {
        let (panels, key) = root.split_horizontally(1200);
        let names: Vec<&str> = series.iter().map(|(name, _)| name.as_str()).collect();
        side_legend(&key, &names, Marker::Line)?;
        let (left, right) = panels.split_horizontally(600);
        let mib = |bytes: Option<u64>| bytes.map(|b| b as f64 / (1 << 20) as f64);
        memory_panel(&left, "slab pages held (MiB)", series, |p| mib(p.1))?;
        memory_panel(&right, "resident set of the process (MiB)", series, |p| {
            mib(p.2)
        })
    })
}

fn memory_panel(
    area: &Area<'_>,
    y_label: &str,
    series: &[MemorySeries],
    y: impl Fn(&(f64, Option<u64>, Option<u64>)) -> Option<f64>,
) -> Result<(), ChartError> {
    let points = || series.iter().flat_map(|(_, points)| points.iter());
    let x_max = points().map(|p| p.0).fold(0.0f64, f64::max).max(1e-3);
    let y_max = points().filter_map(&y).fold(0.0f64, f64::max).max(1e-3) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("time since the sampler started (s)")
        .y_desc(y_label)
        .x_label_formatter(&|x| tick(*x))
        .y_label_formatter(&|y| tick(*y))
        .draw()
        .map_err(failed)?;
    for (index, (_, points)) in series.iter().enumerate() {
        chart
            .draw_series(LineSeries::new(
                points.iter().filter_map(|p| Some((p.0, y(p)?))),
                color(index).stroke_width(2),
            ))
            .map_err(failed)?;
    }
    Ok(())
}

/// Pixels per row of the row charts, and around their plots.
const ROW: u32 = 24;
const CHROME: u32 = 130;
/// Width of the row charts, of their row labels and of the legend right of their plots.
const WIDTH: u32 = 1000;
const LABELS: u32 = 200;
const LEGEND: u32 = 150;

/// The height of a row chart of `rows` rows.
fn row_chart_height(rows: usize) -> u32 {
    CHROME + ROW * rows.clamp(1, 10_000) as u32
}

/// The y coordinate of row `index` of `rows`: the first row on top.
fn row_y(index: usize, rows: usize) -> f64 {
    (rows - 1 - index) as f64
}

/// The row labels in y order (bottom to top), for [`category`].
fn labels_bottom_up<'a>(labels: impl DoubleEndedIterator<Item = &'a String>) -> Vec<String> {
    labels.rev().cloned().collect()
}

/// The colour of whiskers: darker than any bar, and unlike the axes' black.
const WHISKER: RGBColor = RGBColor(0x33, 0x33, 0x33);

/// One bar of [`bars`].
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// The row label, left of the axis.
    pub label: String,
    /// The bar's length; printed beside it with two decimals.
    pub value: f64,
    /// Half the whisker's length (e.g. one standard deviation); none when 0.
    pub spread: f64,
    /// Index into the groups, which colour the bars and name them in the legend.
    pub group: usize,
    /// The figure of every round, drawn as dots under the bar (a strip plot); the bar's
    /// `value` is normally their median.
    pub rounds: Vec<f64>,
}

/// Horizontal bars from 0, one per row, top to bottom in the order given, each with its
/// rounds as dots in a strip under it; `value_desc` names the axis, `groups` the legend
/// entries, `footer` goes under the chart.
pub fn bars(
    title: &str,
    value_desc: &str,
    groups: &[String],
    bars: &[Bar],
    footer: &str,
) -> Result<String, ChartError> {
    let rows = bars.len().max(1);
    let labels = labels_bottom_up(bars.iter().map(|bar| &bar.label));
    let max = bars
        .iter()
        .flat_map(|bar| bar.rounds.iter().copied().chain([bar.value + bar.spread]))
        .fold(0.0, f64::max)
        .max(1e-9);
    canvas((WIDTH, row_chart_height(rows)), title, footer, |root| {
        let (plot, key) = root.split_horizontally(WIDTH - LEGEND);
        let mut chart = ChartBuilder::on(&plot)
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(LABELS)
            // Room right of the longest bar for its figure.
            .build_cartesian_2d(0.0..max * 1.15, -0.5..(rows as f64 - 0.5))
            .map_err(failed)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(value_desc)
            .x_label_formatter(&|x| tick(*x))
            .y_labels(2 * rows + 2)
            .y_label_formatter(&|y| category(&labels, *y))
            .draw()
            .map_err(failed)?;
        for group in 0..groups.len() {
            let color = color(group);
            let members = bars
                .iter()
                .enumerate()
                .filter(|(_, bar)| bar.group == group);
            chart
                .draw_series(members.map(|(index, bar)| {
                    let y = row_y(index, rows);
                    Rectangle::new([(0.0, y - 0.02), (bar.value, y + 0.38)], color.filled())
                }))
                .map_err(failed)?;
        }
        // The strip: each round a hollow dot in the lower half of its row, spread a little
        // up and down so that equal figures stay visible.
        for (index, bar) in bars.iter().enumerate() {
            let color = color(bar.group);
            let y = row_y(index, rows) - 0.22;
            let n = bar.rounds.len();
            chart
                .draw_series(bar.rounds.iter().enumerate().map(|(k, &v)| {
                    let jitter = if n > 1 {
                        0.24 * (k as f64 / (n - 1) as f64 - 0.5)
                    } else {
                        0.0
                    };
                    Circle::new((v, y + jitter), 3, color.stroke_width(1))
                }))
                .map_err(failed)?;
        }
        let whiskers = bars.iter().enumerate().filter(|(_, bar)| bar.spread > 0.0);
        chart
            .draw_series(whiskers.map(|(index, bar)| {
                let y = row_y(index, rows);
                let low = (bar.value - bar.spread).max(0.0);
                PathElement::new(vec![(low, y), (bar.value + bar.spread, y)], WHISKER)
            }))
            .map_err(failed)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(index, bar)| {
                // Right of the bar, its whisker and its rounds' dots.
                let right = bar
                    .rounds
                    .iter()
                    .copied()
                    .fold(bar.value + bar.spread, f64::max);
                let at = (right + max * 0.015, row_y(index, rows) + 0.3);
                Text::new(format!("{:.2}", bar.value), at, (FONT, 13))
            }))
            .map_err(failed)?;
        let names: Vec<&str> = groups.iter().map(String::as_str).collect();
        side_legend(&key, &names, Marker::Square)
    })
}

/// One row of [`log_dots`]: its label and one value per figure (0 or less: not drawn).
#[derive(Clone, Debug, PartialEq)]
pub struct DotRow {
    /// The row label, left of the axis.
    pub label: String,
    /// The figures, in the order of the chart's `figures`.
    pub values: Vec<f64>,
    /// A caveat printed right of the row's dots (e.g. `timer-dominated`).
    pub flag: Option<String>,
}

/// The colour of a row's flag.
const FLAG: RGBColor = RGBColor(0xB0, 0x20, 0x20);

/// Dots on a logarithmic axis spanning whole decades, one row per [`DotRow`], one colour per
/// figure (named in the legend by `figures`), each row's flag right of its dots; `value_desc`
/// names the axis, `format` writes its labels, `footer` goes under the chart.
pub fn log_dots(
    title: &str,
    value_desc: &str,
    figures: &[&str],
    rows: &[DotRow],
    format: impl Fn(f64) -> String,
    footer: &str,
) -> Result<String, ChartError> {
    let count = rows.len().max(1);
    let labels = labels_bottom_up(rows.iter().map(|row| &row.label));
    let positive = rows
        .iter()
        .flat_map(|row| row.values.iter().copied())
        .filter(|v| *v > 0.0);
    let (low, high) = positive.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (low, high) = if high > 0.0 {
        let low = low.log10().floor();
        (
            10f64.powf(low),
            10f64.powf(high.log10().ceil().max(low + 1.0)),
        )
    } else {
        (1.0, 10.0)
    };
    canvas((WIDTH, row_chart_height(count)), title, footer, |root| {
        let (plot, key) = root.split_horizontally(WIDTH - LEGEND);
        let mut chart = ChartBuilder::on(&plot)
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(LABELS)
            .build_cartesian_2d((low..high).log_scale(), -0.5..(count as f64 - 0.5))
            .map_err(failed)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(value_desc)
            .x_label_formatter(&|x| format(*x))
            .y_labels(2 * count + 2)
            .y_label_formatter(&|y| category(&labels, *y))
            .draw()
            .map_err(failed)?;
        for figure in 0..figures.len() {
            let color = color(figure);
            let dots = rows.iter().enumerate().filter_map(|(index, row)| {
                let value = row.values.get(figure).copied().filter(|v| *v > 0.0)?;
                Some(Circle::new((value, row_y(index, count)), 4, color.filled()))
            });
            chart.draw_series(dots).map_err(failed)?;
        }
        let flags = rows.iter().enumerate().filter_map(|(index, row)| {
            let flag = row.flag.as_ref()?;
            let right = row.values.iter().copied().fold(low, f64::max);
            // Just right of the rightmost dot, in the row's middle.
            Some(Text::new(
                flag.clone(),
                (right * 1.15, row_y(index, count) + 0.25),
                (FONT, 12).into_font().color(&FLAG),
            ))
        });
        chart.draw_series(flags).map_err(failed)?;
        side_legend(&key, figures, Marker::Dot)
    })
}

/// One line of a [`trend`]: its name and, per run it has a figure for, (run index, value,
/// interval when recorded).
pub type TrendSeries = (String, Vec<(usize, f64, Option<(f64, f64)>)>);

/// A figure over runs: `runs` labels the x axis (oldest first), one line per series with a
/// dot per run and a whisker where the run recorded an interval; `y_label` names the figure.
pub fn trend(
    title: &str,
    y_label: &str,
    runs: &[String],
    series: &[TrendSeries],
    footer: &str,
) -> Result<String, ChartError> {
    let width = 1000u32.max(60 * runs.len().min(60) as u32);
    canvas((width + LEGEND, 480), title, footer, |root| {
        let (plot, key) = root.split_horizontally(width);
        let names: Vec<&str> = series.iter().map(|(name, _)| name.as_str()).collect();
        side_legend(&key, &names, Marker::Line)?;
        let top = |p: &(usize, f64, Option<(f64, f64)>)| p.2.map_or(p.1, |(_, high)| high.max(p.1));
        let y_max = series
            .iter()
            .flat_map(|(_, points)| points.iter().map(top))
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.1;
        let n = runs.len().max(1);
        // A figure that is a count (instructions, objects) in every run gets whole ticks.
        let whole = series.iter().flat_map(|(_, points)| points).all(|p| {
            [Some(p.1), p.2.map(|i| i.0), p.2.map(|i| i.1)]
                .into_iter()
                .flatten()
                .all(|v| v.fract() == 0.0)
        });
        let mut chart = ChartBuilder::on(&plot)
            .margin(15)
            .x_label_area_size(60)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0..y_max)
            .map_err(failed)?;
        chart
            .configure_mesh()
            .x_desc("run (oldest first)")
            .y_desc(y_label)
            .y_label_formatter(&|y| if whole { whole_tick(*y) } else { compact(*y) })
            .x_labels(n.min(30))
            .x_label_formatter(&|x| category(runs, *x))
            .draw()
            .map_err(failed)?;
        for (index, (_, points)) in series.iter().enumerate() {
            let color = color(index);
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (p.0 as f64, p.1)),
                    color.stroke_width(2),
                ))
                .map_err(failed)?;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new((p.0 as f64, p.1), 3, color.filled())),
                )
                .map_err(failed)?;
            chart
                .draw_series(points.iter().filter_map(|p| {
                    p.2.map(|(low, high)| {
                        PathElement::new(
                            vec![(p.0 as f64, low), (p.0 as f64, high)],
                            WHISKER.stroke_width(1),
                        )
                    })
                }))
                .map_err(failed)?;
        }
        Ok(())
    })
}

/// An axis tick of a measured quantity: its shortest decimal form after rounding to six
/// decimals, so that whole ticks read `10`, not `10.0`, and fractional ones `0.25`.
fn tick(value: f64) -> String {
    let rounded = (value * 1e6).round() / 1e6 + 0.0;
    format!("{rounded}")
}

/// An axis tick of a whole quantity (a count): the whole number, and nothing at a tick that
/// falls between two (a count has no `73.5`).
fn whole_tick(value: f64) -> String {
    let nearest = value.round();
    if (value - nearest).abs() < 1e-6 {
        compact(nearest)
    } else {
        String::new()
    }
}

/// `value` in at most four significant digits with an SI prefix (`2.05G`, `131.7M`, `0.867`),
/// short enough for an axis label.
fn compact(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e9 {
        (value / 1e9, "G")
    } else if magnitude >= 1e6 {
        (value / 1e6, "M")
    } else if magnitude >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(svg: &str, what: &str) -> usize {
        svg.matches(what).count()
    }

    /// How many `<text>` elements of `svg` say exactly `what`.
    fn texts(svg: &str, what: &str) -> usize {
        svg.split("<text")
            .skip(1)
            .filter_map(|element| element.split_once('>'))
            .filter(|(_, rest)| rest.split("</text>").next().map(str::trim) == Some(what))
            .count()
    }

    #[test]
    fn a_sweep_has_two_panels_with_every_series_and_value() {
        let series: Vec<SweepSeries> = vec![
            ("sheaf".into(), vec![(0, 2.0e8, 900.0), (1, 2.2e8, 800.0)]),
            ("<odd>".into(), vec![(0, 1.0e8, 1500.0), (1, 1.1e8, 1400.0)]),
        ];
        let values = ["8".to_owned(), "32".to_owned()];
        let svg = sweep(
            "t: sweep",
            "sheaf_capacity",
            &values,
            &series,
            "git abc · cpu",
        )
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(texts(&svg, "t: sweep"), 1);
        // Each panel names the swept field and its values; the legend, beside the panels
        // rather than over them, names each series once; the footer says where it ran.
        for text in ["sheaf_capacity", "8", "32"] {
            assert_eq!(texts(&svg, text), 2, "{text} in {svg}");
        }
        assert_eq!(texts(&svg, "sheaf"), 1, "{svg}");
        assert_eq!(texts(&svg, "git abc · cpu"), 1, "{svg}");
        assert!(
            !svg.contains("<odd>") && svg.contains("&lt;odd&gt;"),
            "names are escaped"
        );
        // Two points per series per panel.
        assert_eq!(count(&svg, "<circle"), 8);
    }

    #[test]
    fn bars_label_every_row_with_its_figure_and_whisker() {
        let groups = ["1 thread".to_owned(), "2 threads".to_owned()];
        let rows = [
            Bar {
                label: "sheaf (1 thr)".into(),
                value: 200.0,
                spread: 10.0,
                group: 0,
                rounds: vec![190.0, 200.0, 215.0],
            },
            Bar {
                label: "sheaf (2 thr)".into(),
                value: 350.0,
                spread: 0.0,
                group: 1,
                rounds: vec![340.0, 350.0, 360.0],
            },
            Bar {
                label: "mimalloc (1 thr)".into(),
                value: 100.0,
                spread: 0.0,
                group: 0,
                rounds: Vec::new(),
            },
        ];
        let svg = bars("w: throughput", "Mops/s", &groups, &rows, "git abc").unwrap();
        for text in [
            "sheaf (1 thr)",
            "sheaf (2 thr)",
            "mimalloc (1 thr)",
            "200.00",
            "350.00",
            "100.00",
            "1 thread",
            "2 threads",
            "Mops/s",
        ] {
            assert_eq!(texts(&svg, text), 1, "{text} in {svg}");
        }
        // The first row on top: its label is drawn above (at a smaller y than) the last's.
        let y_of = |text: &str| {
            let at = svg.find(&format!("\n{text}\n")).unwrap();
            let tag = &svg[svg[..at].rfind("<text").unwrap()..at];
            let y = tag.split("y=\"").nth(1).unwrap().split('"').next().unwrap();
            y.parse::<f64>().unwrap()
        };
        assert!(y_of("sheaf (1 thr)") < y_of("mimalloc (1 thr)"));
        // One whisker: the only row with a spread.
        assert_eq!(count(&svg, "#333333"), 1);
        // Every round a circle (none in the legend, whose markers are squares).
        assert_eq!(count(&svg, "<circle"), 6);
        assert_eq!(texts(&svg, "git abc"), 1);
    }

    /// The texts of `svg` that are numbers (axis ticks), in document order.
    fn ticks(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|element| element.split_once('>'))
            .filter_map(|(_, rest)| rest.split("</text>").next().map(str::trim))
            .filter(|t| t.trim_end_matches(['k', 'M', 'G']).parse::<f64>().is_ok())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn value_ticks_read_10_not_10_point_0() {
        assert_eq!(tick(10.0), "10");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(-0.0), "0");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(whole_tick(74.0), "74");
        assert_eq!(whole_tick(73.5), "");
        // A sweep of about 90 Mops/s and 7 µs: the category axis has the swept values.
        let series: Vec<SweepSeries> =
            vec![("sheaf".into(), vec![(0, 9.0e7, 6500.0), (1, 8.5e7, 6200.0)])];
        let values = ["8".to_owned(), "28".to_owned()];
        let svg = sweep("t", "sheaf_capacity", &values, &series, "f").unwrap();
        assert_eq!(
            ticks(&svg),
            [
                "0", "10", "20", "30", "40", "50", "60", "70", "80", "90", "8", "28", "0", "1",
                "2", "3", "4", "5", "6", "7", "8", "28"
            ]
        );
        let points = [
            TradeOffPoint {
                series: "sheaf".into(),
                label: "8".into(),
                memory_bytes: 0.03 * 1048576.0,
                throughput: 9.0e7,
            },
            TradeOffPoint {
                series: "sheaf".into(),
                label: "28".into(),
                memory_bytes: 0.05 * 1048576.0,
                throughput: 8.5e7,
            },
        ];
        let svg = trade_off("t", &points, "f").unwrap();
        assert_eq!(
            ticks(&svg),
            [
                "0", "10", "20", "30", "40", "50", "60", "70", "80", "90", "0", "0.01", "0.02",
                "0.03", "0.04", "0.05", "8", "28"
            ]
        );
        let timeline: Vec<MemorySeries> = vec![(
            "sheaf".into(),
            (0..=10)
                .map(|i| (f64::from(i) * 0.1, Some(i as u64 * 1048576), Some(20 << 20)))
                .collect(),
        )];
        let svg = memory("t", &timeline, "f").unwrap();
        assert!(
            texts(&svg, "time since the sampler started (s)") == 2,
            "{svg}"
        );
        for t in ticks(&svg) {
            assert!(!t.ends_with(".0"), "{t} in {:?}", ticks(&svg));
        }
        let bar = Bar {
            label: "sheaf".into(),
            value: 20.0,
            spread: 0.0,
            group: 0,
            rounds: vec![19.0, 21.0],
        };
        let svg = bars("t", "Mops/s", &["1 thread".into()], &[bar], "f").unwrap();
        // The ticks, then the bar's own figure.
        let bar_ticks = ticks(&svg);
        assert_eq!(bar_ticks.last().map(String::as_str), Some("20.00"));
        assert_eq!(
            bar_ticks[..bar_ticks.len() - 1],
            ["0", "5", "10", "15", "20"],
            "{bar_ticks:?}"
        );
    }

    #[test]
    fn a_trend_of_a_count_labels_whole_ticks_only() {
        // Sheaves held over three runs: a small count, so no tick such as 0.5.
        let runs: Vec<String> = ["#1", "#2", "#3"].map(String::from).to_vec();
        let series = vec![(
            "machine".to_owned(),
            vec![(0, 3.0, None), (1, 3.0, Some((2.0, 4.0))), (2, 4.0, None)],
        )];
        let svg = trend("pair", "sheaves", &runs, &series, "f").unwrap();
        let labels = ticks(&svg);
        assert!(!labels.is_empty());
        for t in &labels {
            assert!(t.parse::<u64>().is_ok(), "{t} in {labels:?}");
        }
        // A ratio is not a count: fractional ticks stay.
        let series = vec![("machine".to_owned(), vec![(0, 1.04, None), (1, 0.98, None)])];
        let svg = trend("pair", "ratio", &runs, &series, "f").unwrap();
        assert!(
            ticks(&svg).iter().any(|t| t.contains('.')),
            "{:?}",
            ticks(&svg)
        );
    }

    #[test]
    fn axis_labels_are_compact() {
        assert_eq!(compact(202_470_550.7), "202.471M");
        assert_eq!(compact(2.5e9), "2.5G");
        assert_eq!(compact(1500.0), "1.5k");
        assert_eq!(compact(0.8671), "0.867");
        assert_eq!(compact(0.0), "0");
    }

    #[test]
    fn a_trend_draws_every_run_with_its_whiskers() {
        let runs: Vec<String> = ["#1", "#2", "#3"].map(String::from).to_vec();
        let series = vec![
            (
                "machine a".to_owned(),
                vec![(0, 1.0, Some((0.9, 1.1))), (2, 1.2, None)],
            ),
            ("machine b".to_owned(), vec![(1, 2.0, Some((1.8, 2.2)))]),
        ];
        let svg = trend("churn-lifo", "ratio", &runs, &series, "footer").unwrap();
        assert_eq!(count(&svg, "<circle"), 3);
        assert_eq!(texts(&svg, "machine a") + texts(&svg, "machine b"), 2);
        for run in &runs {
            assert_eq!(texts(&svg, run), 1, "{run}");
        }
    }

    #[test]
    fn log_dots_skip_missing_figures() {
        let rows = [
            DotRow {
                label: "a".into(),
                values: vec![900.0, 2000.0, 9000.0],
                flag: None,
            },
            DotRow {
                label: "b".into(),
                values: vec![1800.0, 0.0, 4000.0],
                flag: Some("timer-dominated".into()),
            },
        ];
        let svg = log_dots(
            "w: latency",
            "ns",
            &["p50", "p99", "p99.9"],
            &rows,
            |v| format!("{v:.0} ns"),
            "git abc",
        )
        .unwrap();
        assert_eq!(texts(&svg, "timer-dominated"), 1, "{svg}");
        // 3 + 2 dots, and one per legend entry.
        assert_eq!(count(&svg, "<circle"), 5 + 3);
        for text in ["a", "b", "p50", "p99.9", "100 ns", "10000 ns"] {
            assert_eq!(texts(&svg, text), 1, "{text} in {svg}");
        }
        // No positive value: a default decade, still a chart.
        let empty = [DotRow {
            label: "none".into(),
            values: vec![0.0],
            flag: None,
        }];
        assert!(log_dots("e", "ns", &["p50"], &empty, |v| format!("{v}"), "").is_ok());
    }
}
