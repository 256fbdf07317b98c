//! `sheafbench compare`: each figure of two result files side by side, with a verdict only
//! where the change is larger than the noise.
//!
//! The figures: per measurement throughput, operations per CPU-second of the measuring
//! threads, p50, p99 and p99.9, and per paired ratio (an
//! allocator over a reference, round by round) the ratio. Each row has a noise threshold:
//! from two or more result files of one build (`--calibrate A1 A2 [A3...]`, A/A runs), the
//! change between two invocations that the row's own spread over those files allows 95
//! times in 100 (see [`from_calibration`]); otherwise one per figure kind, from the spread
//! of the rounds within the two files compared (see [`from_spread`]). A change inside the
//! threshold is "no change"; "faster" or "slower" needs the whole bootstrap interval of the
//! change beyond it.
//! A measurement's figure that changed beyond the noise while either file flagged it busy
//! or stolen from gets no verdict, the other load may be the cause; but for the figure per
//! CPU-second, which leaves out the time spent waiting for a CPU.
//!
//! Files made with different settings (capacity, duration, runs...) are refused unless
//! `--allow-config-change` is given, and then compared under a warning. Files with
//! measurements flagged busy or stolen from are named, and so are the rows present in only
//! one of the two files.

use std::collections::BTreeMap;
use std::path::Path;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use harness::result::PairedRatio;
use harness::stats::{self, Bootstrap, Interval, Verdict};
use harness::{Measurement, ResultFile};
use rayon::prelude::*;

use crate::cli::CompareArgs;
use crate::error::CliError;
use crate::output::format;

/// Seed of the intervals (fixed: the same files always give the same intervals).
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// The smallest noise threshold, as a share: below it a change is never called.
const FLOOR: f64 = 0.01;

/// Multiple of the pooled per-round standard deviation taken as the threshold when no A/A
/// pair is given.
const SPREAD_FACTOR: f64 = 2.0;

/// Weight, in degrees of freedom, of a figure kind's median spread in each row's calibrated
/// spread: a row seen in few calibration files leans on how the kind's rows vary.
const PRIOR_DF: usize = 2;

/// The percentile-bootstrap interval of `mean(new) / mean(old)` at `confidence`; `None` when
/// either side has fewer than two samples.
fn ratio_interval(old: &[f64], new: &[f64], confidence: f64) -> Option<Interval> {
    Bootstrap {
        confidence,
        ..Bootstrap::with_seed(SEED)
    }
    .ratio_of_means(old, new)
}

type Key = (String, String, u32);

fn key(m: &Measurement) -> Key {
    (m.workload.clone(), m.allocator.clone(), m.config.threads)
}

fn pair_key(p: &PairedRatio) -> (&str, u32, &str, &str) {
    (&p.workload, p.threads, &p.allocator, &p.versus)
}

fn label(k: &Key) -> String {
    format!("{}/{}/{}t", k.0, k.1, k.2)
}

/// The kinds of figure compared; for latency, lower is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Figure {
    Throughput,
    /// Operations per CPU-second of the measuring threads: blind to the time they waited
    /// for a CPU, which a loaded machine adds to the wall time.
    CpuThroughput,
    P50,
    P99,
    P999,
    /// A paired ratio of throughput (the allocator over a reference, round by round).
    Ratio,
}

/// The figures of a measurement.
const FIGURES: [Figure; 5] = [
    Figure::Throughput,
    Figure::CpuThroughput,
    Figure::P50,
    Figure::P99,
    Figure::P999,
];

/// Every kind, each with a threshold of its own.
const KINDS: [Figure; 6] = [
    Figure::Throughput,
    Figure::CpuThroughput,
    Figure::P50,
    Figure::P99,
    Figure::P999,
    Figure::Ratio,
];

impl Figure {
    fn name(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::CpuThroughput => "per CPU-s",
            Self::P50 => "p50",
            Self::P99 => "p99",
            Self::P999 => "p99.9",
            Self::Ratio => "paired ratio",
        }
    }

    /// The figure of the whole measurement (the median over rounds).
    fn of(self, m: &Measurement) -> f64 {
        let l = &m.latency_ns.figures;
        match self {
            Self::Throughput => m.throughput_ops_per_s,
            Self::CpuThroughput => stats::median(&self.rounds(m)).unwrap_or(0.0),
            Self::P50 => l.p50 as f64,
            Self::P99 => l.p99 as f64,
            Self::P999 => l.p999 as f64,
            Self::Ratio => f64::NAN,
        }
    }

    /// The figure of each round (empty for latency when the rounds carry no latency).
    fn rounds(self, m: &Measurement) -> Vec<f64> {
        m.samples
            .iter()
            .filter_map(|s| match self {
                Self::Throughput => Some(s.throughput_ops_per_s),
                Self::CpuThroughput => s.cpu_seconds.map(|cpu| s.ops as f64 / cpu),
                Self::P50 => s.latency_ns.as_ref().map(|l| l.p50 as f64),
                Self::P99 => s.latency_ns.as_ref().map(|l| l.p99 as f64),
                Self::P999 => s.latency_ns.as_ref().map(|l| l.p999 as f64),
                Self::Ratio => None,
            })
            .filter(|v| *v > 0.0 && v.is_finite())
            .collect()
    }

    fn show(self, value: f64) -> String {
        match self {
            Self::Throughput | Self::CpuThroughput => format::throughput(value),
            Self::Ratio => format::ratio(value),
            _ => format::nanos(value),
        }
    }
}

/// A noise threshold of one figure kind: the largest change, as a natural logarithm of the
/// ratio, that is still called noise, and where it came from.
#[derive(Clone, Copy, Debug)]
struct Threshold {
    log: f64,
}

impl Threshold {
    fn percent(self) -> f64 {
        100.0 * (self.log.exp() - 1.0)
    }
}

/// Sample standard deviation of the logarithms of `values`; `None` with fewer than two.
fn log_sd(values: &[f64]) -> Option<f64> {
    let logs: Vec<f64> = values
        .iter()
        .filter(|v| **v > 0.0 && v.is_finite())
        .map(|v| v.ln())
        .collect();
    (logs.len() >= 2).then(|| stats::standard_deviation(&logs))
}

/// The rounds of each row of `kind` in `file`: a measurement's figure per round, or a paired
/// ratio's per-round ratios.
fn row_rounds(file: &ResultFile, kind: Figure) -> Vec<Vec<f64>> {
    match kind {
        Figure::Ratio => file.paired.iter().map(|p| p.rounds.clone()).collect(),
        figure => file.runs.iter().map(|m| figure.rounds(m)).collect(),
    }
}

/// Thresholds from the spread of rounds within `files`, from `sd`, the median over rows of
/// the standard deviation of one round's log figure (a few wild rows do not set every row's
/// threshold: each row's own spread widens its interval). For a measurement's figures,
/// `SPREAD_FACTOR * sd`: the two files were measured at different times, and drift between
/// them is not in either file's rounds. For paired ratios, the standard error of the
/// difference of two means of `n` rounds, `sd * sqrt(2 / n)`: drift reaches both sides of a
/// round, and every round is a process of its own, so the rounds of one file vary as much as
/// those of two.
fn from_spread(files: &[&ResultFile]) -> BTreeMap<Figure, Option<Threshold>> {
    KINDS
        .iter()
        .map(|&kind| {
            let rows: Vec<Vec<f64>> = files.iter().flat_map(|f| row_rounds(f, kind)).collect();
            let sds: Vec<f64> = rows.iter().filter_map(|r| log_sd(r)).collect();
            let lengths: Vec<f64> = rows
                .iter()
                .filter(|r| r.len() >= 2)
                .map(|r| r.len() as f64)
                .collect();
            let threshold = stats::median(&sds).map(|sd| {
                let log = match kind {
                    Figure::Ratio => sd * (2.0 / stats::median(&lengths).unwrap_or(2.0)).sqrt(),
                    _ => SPREAD_FACTOR * sd,
                };
                Threshold {
                    log: log.max(FLOOR.ln_1p()),
                }
            });
            (kind, threshold)
        })
        .collect()
}

/// Identifies a row across files: its kind, workload, allocator, threads, and for a paired
/// ratio the reference (empty for a measurement's figures).
type RowId = (Figure, String, String, u32, String);

/// Noise thresholds from calibration files (A/A runs of one build): one per row, and one
/// per kind for rows the files do not have.
struct Calibration {
    rows: BTreeMap<RowId, Threshold>,
    kinds: BTreeMap<Figure, Option<Threshold>>,
}

impl Calibration {
    fn threshold(&self, id: &RowId) -> Option<Threshold> {
        self.rows.get(id).copied().or(self.kinds[&id.0])
    }
}

/// Each row's figure in `file` for `kind`: a measurement's figure (its median over rounds)
/// or a paired ratio's estimate.
fn row_figures(file: &ResultFile, kind: Figure) -> Vec<(RowId, f64)> {
    match kind {
        Figure::Ratio => file
            .paired
            .iter()
            .map(|p| {
                let id = (
                    kind,
                    p.workload.clone(),
                    p.allocator.clone(),
                    p.threads,
                    p.versus.clone(),
                );
                (id, p.estimate)
            })
            .collect(),
        figure => file
            .runs
            .iter()
            .map(|m| {
                let id = (
                    kind,
                    m.workload.clone(),
                    m.allocator.clone(),
                    m.config.threads,
                    String::new(),
                );
                (id, figure.of(m))
            })
            .collect(),
    }
}

/// Thresholds from `files`, two or more runs of one build. A row's figure varies from one
/// invocation to the next by more than its rounds show (the machine drifts between them);
/// the files measure that drift. For each row, `s` is the standard deviation of the
/// logarithm of its figure over the `k` files, pooled with its kind's median `s` (weight
/// [`PRIOR_DF`] degrees of freedom, so a row seen in two files is not trusted alone):
/// `sigma^2 = ((k - 1) s^2 + PRIOR_DF s_kind^2) / (k - 1 + PRIOR_DF)`. The threshold is the
/// 95% prediction bound of the change between two new invocations of one build,
/// `t(0.975, k - 1 + PRIOR_DF) * sqrt(2) * sigma` (never under 1%): an A/A comparison calls
/// at most about 5 rows in 100 changed, and fewer, as the interval must clear it too. Rows
/// the files lack get their kind's median threshold.
fn from_calibration(files: &[ResultFile]) -> Calibration {
    let mut rows = BTreeMap::new();
    let mut kinds = BTreeMap::new();
    for kind in KINDS {
        let mut values: BTreeMap<RowId, Vec<f64>> = BTreeMap::new();
        for file in files {
            for (id, value) in row_figures(file, kind) {
                if value > 0.0 && value.is_finite() {
                    values.entry(id).or_default().push(value);
                }
            }
        }
        let spreads: Vec<(RowId, usize, f64)> = values
            .into_iter()
            .filter_map(|(id, v)| Some((id, v.len(), log_sd(&v)?)))
            .collect();
        let sds: Vec<f64> = spreads.iter().map(|&(_, _, sd)| sd).collect();
        let Some(kind_sd) = stats::median(&sds) else {
            kinds.insert(kind, None);
            continue;
        };
        let mut thresholds = Vec::new();
        for (id, k, sd) in spreads {
            let df = k - 1 + PRIOR_DF;
            let sigma = (((k - 1) as f64 * sd * sd + PRIOR_DF as f64 * kind_sd * kind_sd)
                / df as f64)
                .sqrt();
            let t = stats::student_t_975(df).unwrap_or(f64::INFINITY);
            let log = (t * 2f64.sqrt() * sigma).max(FLOOR.ln_1p());
            thresholds.push(log);
            rows.insert(id, Threshold { log });
        }
        let median = stats::median(&thresholds).map(|log| Threshold { log });
        kinds.insert(kind, median);
    }
    Calibration { rows, kinds }
}

/// The settings of a measurement that must match for its figures to be compared: the
/// configuration and the spec, less the thread count (part of the row's key) and the name.
fn settings(m: &Measurement) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for value in [
        serde_json::to_value(&m.config).unwrap_or_default(),
        serde_json::to_value(&m.spec).unwrap_or_default(),
    ] {
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                if !matches!(k.as_str(), "threads" | "name" | "suite" | "os_threads") {
                    out.insert(k, v);
                }
            }
        }
    }
    out
}

/// Each setting that differs between matched rows, once: `key OLD vs NEW`.
fn config_differences(old: &ResultFile, new: &ResultFile) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in &new.runs {
        let Some(o) = old.runs.iter().find(|o| key(o) == key(n)) else {
            continue;
        };
        let (a, b) = (settings(o), settings(n));
        for (k, va) in &a {
            let vb = b.get(k).cloned().unwrap_or(serde_json::Value::Null);
            if *va != vb {
                let line = format!("{k} {va} vs {vb}");
                if !out.contains(&line) {
                    out.push(line);
                }
            }
        }
    }
    out
}

/// The verdict on a figure of a measurement flagged busy or stolen from in either file,
/// where the figures differ by more than the noise: the other load may be the cause. Paired
/// ratios are not withheld: the other load reached both allocators of a round.
const BUSY: &str = "no verdict (busy)";

use harness::summary::LOADED;

/// Whether `m` was flagged busy or stolen from.
pub(crate) fn is_flagged(m: &Measurement) -> bool {
    m.warnings
        .iter()
        .any(|w| LOADED.iter().any(|p| w.starts_with(p)))
}

/// One compared figure.
struct Row {
    workload: String,
    allocator: String,
    threads: u32,
    figure: Figure,
    /// The figure column: the kind, or `vs REFERENCE` for a paired ratio.
    label: String,
    /// The reference of a paired ratio; empty for a measurement's figures.
    versus: String,
    old: f64,
    new: f64,
    old_rounds: Vec<f64>,
    new_rounds: Vec<f64>,
    /// Either side was flagged busy or stolen from.
    busy: bool,
}

/// The measurements of `file` with a warning starting with `prefix`.
fn flagged(file: &ResultFile, prefix: &str) -> Vec<String> {
    file.runs
        .iter()
        .filter(|m| m.warnings.iter().any(|w| w.starts_with(prefix)))
        .map(|m| label(&key(m)))
        .collect()
}

fn change(old: f64, new: f64) -> String {
    if old == 0.0 {
        return "-".into();
    }
    format!("{:+.1}%", 100.0 * (new / old - 1.0))
}

/// The verdict on one figure: "no change" inside the threshold, "faster"/"slower" when the
/// whole interval lies beyond it, "unresolved" when the estimate lies beyond it but the
/// interval does not.
fn verdict(
    figure: Figure,
    ratio: f64,
    interval: Option<Interval>,
    threshold: Option<Threshold>,
) -> &'static str {
    let Some(threshold) = threshold else {
        return "no noise estimate (need 2+ rounds)";
    };
    let band = (-threshold.log).exp()..=threshold.log.exp();
    let inside = band.contains(&ratio);
    let up_is_better = matches!(
        figure,
        Figure::Throughput | Figure::CpuThroughput | Figure::Ratio
    );
    match Verdict::read(interval, band.clone()) {
        Verdict::Yes => "no change",
        Verdict::No if interval.is_some_and(|i| i.low > 1.0) == up_is_better => "faster",
        Verdict::No => "slower",
        Verdict::Unresolved | Verdict::NoInterval if inside => "no change",
        Verdict::Unresolved => "unresolved",
        Verdict::NoInterval => "unresolved (need 2+ rounds)",
    }
}

/// `compare`.
pub(crate) fn run(args: CompareArgs) -> Result<(), CliError> {
    if !(0.5..1.0).contains(&args.confidence) {
        return Err(CliError::Usage {
            option: format!("--confidence {}", args.confidence),
            message: "expected a level between 0.5 and 1 (exclusive), e.g. 0.95".into(),
        });
    }
    let old = super::history::load_result(&args.old, &args.db)?;
    let new = super::history::load_result(&args.new, &args.db)?;
    let calibration_files = match args.calibrate.as_deref() {
        Some(paths) if paths.len() >= 2 => paths
            .iter()
            .map(|p| ResultFile::load(Path::new(p)))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(CliError::Usage {
                option: "--calibrate".into(),
                message: "expected two or more result files of one build (A/A runs)".into(),
            });
        }
        None => Vec::new(),
    };
    let mut differences = config_differences(&old, &new);
    // Calibration files measured with other settings measure another noise.
    for file in &calibration_files {
        for line in config_differences(&old, file) {
            let line = format!("{line} (a calibration file)");
            if !differences.contains(&line) {
                differences.push(line);
            }
        }
    }
    if !differences.is_empty() {
        let list = differences.join(", ");
        if !args.allow_config_change {
            return Err(CliError::ConfigsDiffer(list));
        }
        eprintln!(
            "WARNING: the files were measured with different settings ({list}); every change below mixes the settings' effect with the code's"
        );
    }
    let calibration = (!calibration_files.is_empty()).then(|| from_calibration(&calibration_files));
    let spread = from_spread(&[&old, &new]);
    let (kind_thresholds, source) = match &calibration {
        Some(c) => (
            c.kinds.clone(),
            format!(
                "{} calibration files of one build ({}): per row, the 95% bound of an A/A change from the row's spread over them (column `noise`); median per kind",
                calibration_files.len(),
                args.calibrate
                    .iter()
                    .flatten()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        None => (
            spread,
            format!(
                "the spread of rounds within the two files ({SPREAD_FACTOR} standard deviations of a round; for paired ratios the standard error of a change)"
            ),
        ),
    };

    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    let level = format!("{:.0}% interval", args.confidence * 100.0);
    let mut header = vec![
        "workload",
        "allocator",
        "threads",
        "figure",
        "old",
        "new",
        "change",
        &level,
    ];
    if calibration.is_some() {
        header.push("noise");
    }
    header.push("verdict");
    table.set_header(header);
    let mut only_new = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    for n in &new.runs {
        let Some(o) = old.runs.iter().find(|o| key(o) == key(n)) else {
            only_new.push(label(&key(n)));
            continue;
        };
        let busy = is_flagged(o) || is_flagged(n);
        for figure in FIGURES {
            // A measurement without CPU times (not counted) has no such row.
            if figure == Figure::CpuThroughput && figure.rounds(o).is_empty() {
                continue;
            }
            rows.push(Row {
                workload: n.workload.clone(),
                allocator: n.allocator.clone(),
                threads: n.config.threads,
                figure,
                label: figure.name().to_owned(),
                versus: String::new(),
                old: figure.of(o),
                new: figure.of(n),
                old_rounds: figure.rounds(o),
                new_rounds: figure.rounds(n),
                // Time spent waiting for a CPU is not in this figure.
                busy: busy && figure != Figure::CpuThroughput,
            });
        }
    }
    for n in &new.paired {
        let Some(o) = old.paired.iter().find(|o| pair_key(o) == pair_key(n)) else {
            continue;
        };
        rows.push(Row {
            workload: n.workload.clone(),
            allocator: n.allocator.clone(),
            threads: n.threads,
            figure: Figure::Ratio,
            label: format!("vs {}", n.versus),
            versus: n.versus.clone(),
            old: o.estimate,
            new: n.estimate,
            old_rounds: o.rounds.clone(),
            new_rounds: n.rounds.clone(),
            busy: false,
        });
    }
    // The resampling is the slow part of a comparison: every row's interval at once (each
    // from the fixed seed, so the same on any number of threads).
    let intervals: Vec<Option<Interval>> = rows
        .par_iter()
        .map(|row| ratio_interval(&row.old_rounds, &row.new_rounds, args.confidence))
        .collect();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    let mut json_rows = Vec::new();
    for (row, interval) in rows.iter().zip(intervals) {
        let shown = interval.map_or_else(
            || "-".to_owned(),
            |i| {
                format!(
                    "{:+.1}% .. {:+.1}%",
                    100.0 * (i.low - 1.0),
                    100.0 * (i.high - 1.0)
                )
            },
        );
        let threshold = match &calibration {
            Some(c) => c.threshold(&(
                row.figure,
                row.workload.clone(),
                row.allocator.clone(),
                row.threads,
                row.versus.clone(),
            )),
            None => kind_thresholds[&row.figure],
        };
        // A figure that was not positive before gives no ratio (NaN included).
        let verdict = if row.old > 0.0 {
            match verdict(row.figure, row.new / row.old, interval, threshold) {
                "faster" | "slower" | "unresolved" if row.busy => BUSY,
                verdict => verdict,
            }
        } else {
            "-"
        };
        *tally.entry(verdict).or_default() += 1;
        let mut cells = vec![
            row.workload.clone(),
            row.allocator.clone(),
            row.threads.to_string(),
            row.label.clone(),
            row.figure.show(row.old),
            row.figure.show(row.new),
            change(row.old, row.new),
            shown,
        ];
        if calibration.is_some() {
            cells.push(threshold.map_or_else(|| "-".into(), |t| format!("±{:.1}%", t.percent())));
        }
        cells.push(verdict.into());
        table.add_row(cells);
        json_rows.push(serde_json::json!({
            "workload": row.workload,
            "allocator": row.allocator,
            "threads": row.threads,
            "figure": row.label,
            "old": row.old,
            "new": row.new,
            "change": (row.old > 0.0).then(|| row.new / row.old - 1.0),
            "interval": interval.map(|i| [i.low - 1.0, i.high - 1.0]),
            "threshold": threshold.map(|t| t.log.exp() - 1.0),
            "busy": row.busy,
            "verdict": verdict,
        }));
    }
    for col in 4..7 {
        if let Some(column) = table.column_mut(col) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let noise: Vec<String> = KINDS
        .iter()
        .map(|f| match kind_thresholds[f] {
            Some(t) => format!("{} ±{:.1}%", f.name(), t.percent()),
            None => format!("{} unknown", f.name()),
        })
        .collect();
    println!("noise thresholds from {source}: {}", noise.join(", "));
    println!("{table}");
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "old": args.old.display().to_string(),
            "new": args.new.display().to_string(),
            "thresholds_from": source,
            "rows": json_rows,
        });
        crate::export::write_value(path, &doc)?;
    }
    let verdicts: Vec<String> = tally.iter().map(|(v, n)| format!("{n} {v}")).collect();
    println!("verdicts: {}", verdicts.join(", "));
    let only_old: Vec<String> = old
        .runs
        .iter()
        .filter(|o| !new.runs.iter().any(|n| key(n) == key(o)))
        .map(|o| label(&key(o)))
        .collect();
    for (path, rows) in [(&args.old, &only_old), (&args.new, &only_new)] {
        if !rows.is_empty() {
            println!("only in {}: {}", path.display(), rows.join(", "));
        }
    }
    for (path, file) in [(&args.old, &old), (&args.new, &new)] {
        for (what, prefix) in [
            ("busy (involuntary context switches)", "machine busy"),
            ("stolen from (hypervisor steal)", "hypervisor steal"),
        ] {
            let rows = flagged(file, prefix);
            if !rows.is_empty() {
                println!(
                    "{} was flagged {what} in {} of {} measurements: {}",
                    path.display(),
                    rows.len(),
                    file.runs.len(),
                    rows.join(", ")
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_widens_with_the_confidence_asked_for() {
        let old = [100.0, 101.0, 99.0, 100.5, 99.5];
        let faster = [110.0, 111.0, 109.0, 110.5, 109.5];
        let narrow = ratio_interval(&old, &faster, 0.5).unwrap();
        let wide = ratio_interval(&old, &faster, 0.99).unwrap();
        assert!(
            wide.low < narrow.low && narrow.high < wide.high,
            "{narrow:?} {wide:?}"
        );
        assert!(narrow.low > 1.0, "a 10% gain is significant: {narrow:?}");
        assert_eq!(ratio_interval(&[1.0], &faster, 0.95), None);
    }

    #[test]
    fn a_verdict_needs_the_whole_interval_beyond_the_noise() {
        let t = Some(Threshold {
            log: 0.05f64.ln_1p(),
        });
        let i = |low, high| {
            Some(Interval {
                estimate: (low + high) / 2.0,
                low,
                high,
            })
        };
        // Significant by the interval alone, but inside the noise: no change.
        assert_eq!(
            verdict(Figure::Throughput, 1.03, i(1.02, 1.04), t),
            "no change"
        );
        assert_eq!(
            verdict(Figure::Throughput, 1.10, i(1.07, 1.13), t),
            "faster"
        );
        assert_eq!(
            verdict(Figure::Throughput, 0.90, i(0.87, 0.93), t),
            "slower"
        );
        // Latency: higher is slower.
        assert_eq!(verdict(Figure::P99, 1.10, i(1.07, 1.13), t), "slower");
        assert_eq!(verdict(Figure::P99, 0.90, i(0.87, 0.93), t), "faster");
        assert_eq!(
            verdict(Figure::Throughput, 1.10, i(1.01, 1.2), t),
            "unresolved"
        );
        assert_eq!(
            verdict(Figure::Throughput, 1.01, i(0.9, 1.2), t),
            "no change"
        );
        assert_eq!(
            verdict(Figure::Throughput, 1.5, i(1.4, 1.6), None),
            "no noise estimate (need 2+ rounds)"
        );
    }
}
