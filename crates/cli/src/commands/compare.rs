//! `sheafbench compare`: each figure of two result files side by side, with its change and,
//! for throughput, whether the change is significant: a bootstrap confidence interval of the
//! ratio of mean throughputs, from the per-run samples.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use harness::stats::{Bootstrap, Interval};
use harness::{Measurement, ResultFile};

use crate::cli::CompareArgs;
use crate::error::CliError;
use crate::output::format;

/// Seed of the intervals (fixed: the same files always give the same intervals).
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// The percentile-bootstrap interval of `mean(new) / mean(old)` at `confidence`; `None` when
/// either side has fewer than two samples.
fn ratio_interval(old: &[f64], new: &[f64], confidence: f64) -> Option<Interval> {
    Bootstrap {
        confidence,
        ..Bootstrap::with_seed(SEED)
    }
    .ratio_of_means(old, new)
}

fn key(m: &Measurement) -> (String, String, u32) {
    (m.workload.clone(), m.allocator.clone(), m.config.threads)
}

fn change(old: f64, new: f64) -> String {
    if old == 0.0 {
        return "-".into();
    }
    format!("{:+.1}%", 100.0 * (new / old - 1.0))
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
    let mut unmatched = Vec::new();
    for n in &new.runs {
        let Some(o) = old.runs.iter().find(|o| key(o) == key(n)) else {
            unmatched.push(format!(
                "{}/{}/{}t",
                n.workload, n.allocator, n.config.threads
            ));
            continue;
        };
        let old_samples: Vec<f64> = o.samples.iter().map(|s| s.throughput_ops_per_s).collect();
        let new_samples: Vec<f64> = n.samples.iter().map(|s| s.throughput_ops_per_s).collect();
        let (interval, verdict) = match ratio_interval(&old_samples, &new_samples, args.confidence)
        {
            None => ("-".to_owned(), "too few runs (need 2+ each)".to_owned()),
            Some(i) => {
                let verdict = if i.low > 1.0 {
                    "faster"
                } else if i.high < 1.0 {
                    "slower"
                } else {
                    "no significant change"
                };
                (
                    format!(
                        "{:+.1}% .. {:+.1}%",
                        100.0 * (i.low - 1.0),
                        100.0 * (i.high - 1.0)
                    ),
                    verdict.to_owned(),
                )
            }
        };
        table.add_row(vec![
            n.workload.clone(),
            n.allocator.clone(),
            n.config.threads.to_string(),
            "throughput".into(),
            format::throughput(o.throughput_ops_per_s),
            format::throughput(n.throughput_ops_per_s),
            change(o.throughput_ops_per_s, n.throughput_ops_per_s),
            interval,
            verdict,
        ]);
        let (ol, nl) = (&o.latency_ns.figures, &n.latency_ns.figures);
        for (figure, a, b) in [
            ("p50", ol.p50, nl.p50),
            ("p99", ol.p99, nl.p99),
            ("p99.9", ol.p999, nl.p999),
        ] {
            table.add_row(vec![
                n.workload.clone(),
                n.allocator.clone(),
                n.config.threads.to_string(),
                figure.into(),
                format::nanos(a as f64),
                format::nanos(b as f64),
                change(a as f64, b as f64),
                "-".into(),
                "one figure per file: no test".into(),
            ]);
        }
    }
    for col in 4..7 {
        if let Some(column) = table.column_mut(col) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{table}");
    if !unmatched.is_empty() {
        eprintln!(
            "Warning: only in {}: {}",
            args.new.display(),
            unmatched.join(", ")
        );
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
}
