//! `sheafbench compare`: each figure of two result files side by side, with a verdict only
//! where the change is larger than the noise.
//!
//! A figure's noise is calibrated per figure kind (throughput, p50, p99, p99.9): from an A/A
//! pair of files (two runs of one build, `--calibrate A1 A2`), the 95th percentile of the
//! changes between them; otherwise from the spread of the rounds within the two files
//! compared (twice the pooled standard deviation of one round's logarithm around its row's
//! mean). A change inside the threshold is "no change"; "faster" or "slower" needs the whole
//! bootstrap interval of the change beyond it.
//!
//! Files made with different settings (capacity, duration, runs...) are refused unless
//! `--allow-config-change` is given, and then compared under a warning. Files with
//! measurements flagged busy or stolen-from are named, and so are the rows present in only
//! one of the two files.

use std::collections::BTreeMap;
use std::path::Path;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use harness::stats::{self, Bootstrap, Interval, Verdict};
use harness::{Measurement, ResultFile};

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

/// Share of A/A changes the calibrated threshold covers.
const AA_QUANTILE: f64 = 0.95;

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

fn label(k: &Key) -> String {
    format!("{}/{}/{}t", k.0, k.1, k.2)
}

/// The kinds of figure compared; for all but throughput, lower is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Figure {
    Throughput,
    P50,
    P99,
    P999,
}

const FIGURES: [Figure; 4] = [Figure::Throughput, Figure::P50, Figure::P99, Figure::P999];

impl Figure {
    fn name(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::P50 => "p50",
            Self::P99 => "p99",
            Self::P999 => "p99.9",
        }
    }

    /// The figure of the whole measurement (the median over rounds).
    fn of(self, m: &Measurement) -> f64 {
        let l = &m.latency_ns.figures;
        match self {
            Self::Throughput => m.throughput_ops_per_s,
            Self::P50 => l.p50 as f64,
            Self::P99 => l.p99 as f64,
            Self::P999 => l.p999 as f64,
        }
    }

    /// The figure of each round (empty for latency when the rounds carry no latency).
    fn rounds(self, m: &Measurement) -> Vec<f64> {
        m.samples
            .iter()
            .filter_map(|s| match self {
                Self::Throughput => Some(s.throughput_ops_per_s),
                Self::P50 => s.latency_ns.as_ref().map(|l| l.p50 as f64),
                Self::P99 => s.latency_ns.as_ref().map(|l| l.p99 as f64),
                Self::P999 => s.latency_ns.as_ref().map(|l| l.p999 as f64),
            })
            .filter(|v| *v > 0.0 && v.is_finite())
            .collect()
    }

    fn show(self, value: f64) -> String {
        match self {
            Self::Throughput => format::throughput(value),
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

/// Thresholds from the spread of rounds within `files`: `SPREAD_FACTOR` times the pooled
/// standard deviation of one round's log figure around its row's mean log figure.
fn from_spread(files: &[&ResultFile]) -> BTreeMap<Figure, Option<Threshold>> {
    FIGURES
        .iter()
        .map(|&figure| {
            let (mut squares, mut freedom) = (0.0, 0usize);
            for m in files.iter().flat_map(|f| &f.runs) {
                let logs: Vec<f64> = figure.rounds(m).iter().map(|v| v.ln()).collect();
                if logs.len() < 2 {
                    continue;
                }
                let mean = logs.iter().sum::<f64>() / logs.len() as f64;
                squares += logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>();
                freedom += logs.len() - 1;
            }
            let threshold = (freedom > 0).then(|| Threshold {
                log: (SPREAD_FACTOR * (squares / freedom as f64).sqrt()).max(FLOOR.ln_1p()),
            });
            (figure, threshold)
        })
        .collect()
}

/// Thresholds from an A/A pair: the `AA_QUANTILE` quantile of |log(a2 / a1)| over the rows
/// both files have.
fn from_aa(a1: &ResultFile, a2: &ResultFile) -> BTreeMap<Figure, Option<Threshold>> {
    FIGURES
        .iter()
        .map(|&figure| {
            let mut changes: Vec<f64> = a2
                .runs
                .iter()
                .filter_map(|n| {
                    let o = a1.runs.iter().find(|o| key(o) == key(n))?;
                    let (x, y) = (figure.of(o), figure.of(n));
                    (x > 0.0 && y > 0.0).then(|| (y / x).ln().abs())
                })
                .collect();
            changes.sort_by(f64::total_cmp);
            let threshold = (!changes.is_empty()).then(|| Threshold {
                log: stats::percentile(&changes, AA_QUANTILE).max(FLOOR.ln_1p()),
            });
            (figure, threshold)
        })
        .collect()
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
    let up_is_better = figure == Figure::Throughput;
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
    let old = ResultFile::load(&args.old)?;
    let new = ResultFile::load(&args.new)?;
    let calibration = match args.calibrate.as_deref() {
        Some([a1, a2]) => Some((
            a1,
            a2,
            ResultFile::load(Path::new(a1))?,
            ResultFile::load(Path::new(a2))?,
        )),
        Some(_) => {
            return Err(CliError::Usage {
                option: "--calibrate".into(),
                message: "expected two result files of one build (an A/A pair)".into(),
            });
        }
        None => None,
    };
    let differences = config_differences(&old, &new);
    if !differences.is_empty() {
        let list = differences.join(", ");
        if !args.allow_config_change {
            return Err(CliError::ConfigsDiffer(list));
        }
        eprintln!(
            "WARNING: the files were measured with different settings ({list}); every change below mixes the settings' effect with the code's"
        );
    }
    let (thresholds, source) = match &calibration {
        Some((a1, a2, f1, f2)) => (
            from_aa(f1, f2),
            format!(
                "the A/A pair {} and {} ({:.0}th percentile of their changes)",
                a1.display(),
                a2.display(),
                AA_QUANTILE * 100.0
            ),
        ),
        None => (
            from_spread(&[&old, &new]),
            format!(
                "the spread of rounds within the two files ({SPREAD_FACTOR} standard deviations)"
            ),
        ),
    };

    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    let level = format!("{:.0}% interval", args.confidence * 100.0);
    table.set_header(vec![
        "workload",
        "allocator",
        "threads",
        "figure",
        "old",
        "new",
        "change",
        &level,
        "verdict",
    ]);
    let mut only_new = Vec::new();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &new.runs {
        let Some(o) = old.runs.iter().find(|o| key(o) == key(n)) else {
            only_new.push(label(&key(n)));
            continue;
        };
        for figure in FIGURES {
            let (a, b) = (figure.of(o), figure.of(n));
            let interval = ratio_interval(&figure.rounds(o), &figure.rounds(n), args.confidence);
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
            let verdict = if a > 0.0 {
                verdict(figure, b / a, interval, thresholds[&figure])
            } else {
                "-"
            };
            *tally.entry(verdict).or_default() += 1;
            table.add_row(vec![
                n.workload.clone(),
                n.allocator.clone(),
                n.config.threads.to_string(),
                figure.name().into(),
                figure.show(a),
                figure.show(b),
                change(a, b),
                shown,
                verdict.into(),
            ]);
        }
    }
    for col in 4..7 {
        if let Some(column) = table.column_mut(col) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let noise: Vec<String> = FIGURES
        .iter()
        .map(|f| match thresholds[f] {
            Some(t) => format!("{} ±{:.1}%", f.name(), t.percent()),
            None => format!("{} unknown", f.name()),
        })
        .collect();
    println!("noise thresholds from {source}: {}", noise.join(", "));
    println!("{table}");
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
