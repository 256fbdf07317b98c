//! The gate's decisions: one verdict per figure, and the table that shows them.
//!
//! Two kinds of figure, two rules:
//!
//! - **Instruction counts** (lower is better) are deterministic for a given binary, so a
//!   plain tolerance works: a count more than `tolerance` (a fraction, e.g. 0.01) above its
//!   reference is a regression; more than `tolerance` below it is an improvement.
//! - **Throughput ratios** (sheaf / comparator, higher is better) are noisy, and so was the
//!   run that recorded the reference: both are confidence intervals, and the rule looks at
//!   both whole intervals: a regression only when even the *upper* bound now is more than
//!   `threshold` below the reference's *lower* bound; an improvement only when the lower
//!   bound now is more than `threshold` above the reference's upper bound. (A reference
//!   recorded without bounds is a point: both bounds equal its ratio.)
//!
//! Figures that do not line up are verdicts of their own: a reference with no figure now
//! (`missing`: the benchmark vanished or failed, which fails the gate, since nothing vouches
//! for it), a figure with no reference (`new`: passes, bless to record it), and a reference
//! that cannot be compared with (zero, negative or not finite: `bad reference`, which fails
//! the gate until the references are blessed again). A whole signal whose references were
//! recorded on another machine or toolchain (see `reference::incomparable`) is shown but
//! not judged (`not judged`: passes, and the gate says so); a figure missing now still fails.
//!
//! Everything here is a pure function of its inputs, so it is tested on fixed figures.

use std::fmt::Write as _;

use harness::stats::Interval;

/// The outcome for one figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the tolerance (or the interval overlaps the band around the reference).
    Pass,
    /// Better than the reference beyond the tolerance (bless to lock it in).
    Improvement,
    /// Worse than the reference beyond the tolerance: fails the gate.
    Regression,
    /// No reference for this figure: passes, with a note to bless.
    New,
    /// A reference without a figure now: fails the gate.
    Missing,
    /// The reference is zero, negative or not finite: fails the gate.
    BadReference,
    /// The reference comes from another machine or toolchain: shown, not judged.
    NotJudged,
}

impl Verdict {
    /// Whether this verdict makes the gate fail.
    pub(crate) fn fails(self) -> bool {
        matches!(self, Self::Regression | Self::Missing | Self::BadReference)
    }

    fn label(self) -> &'static str {
        match self {
            Self::Pass => "ok",
            Self::Improvement => "improved",
            Self::Regression => "REGRESSION",
            Self::New => "new (no reference)",
            Self::Missing => "MISSING",
            Self::BadReference => "BAD REFERENCE",
            Self::NotJudged => "not judged",
        }
    }
}

/// A verdict and the relative change behind it (`now / reference - 1`), when both exist.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Judgement {
    pub(crate) verdict: Verdict,
    pub(crate) change: Option<f64>,
}

/// Judges an instruction count (lower is better) against its reference.
pub(crate) fn judge_count(reference: Option<u64>, now: Option<u64>, tolerance: f64) -> Judgement {
    match (reference, now) {
        (None, None) => Judgement {
            verdict: Verdict::Missing,
            change: None,
        },
        (None, Some(_)) => Judgement {
            verdict: Verdict::New,
            change: None,
        },
        (Some(0), _) => Judgement {
            verdict: Verdict::BadReference,
            change: None,
        },
        (Some(_), None) => Judgement {
            verdict: Verdict::Missing,
            change: None,
        },
        (Some(reference), Some(now)) => {
            let change = now as f64 / reference as f64 - 1.0;
            // Compared as differences so that exactly `tolerance` away still passes.
            let allowed = tolerance * reference as f64;
            let difference = now as f64 - reference as f64;
            let verdict = if difference > allowed {
                Verdict::Regression
            } else if -difference > allowed {
                Verdict::Improvement
            } else {
                Verdict::Pass
            };
            Judgement {
                verdict,
                change: Some(change),
            }
        }
    }
}

/// Judges a throughput ratio (higher is better) measured as an interval against its
/// reference interval.
pub(crate) fn judge_ratio(
    reference: Option<Interval>,
    now: Option<Interval>,
    threshold: f64,
) -> Judgement {
    match (reference, now) {
        (None, None) => Judgement {
            verdict: Verdict::Missing,
            change: None,
        },
        (None, Some(_)) => Judgement {
            verdict: Verdict::New,
            change: None,
        },
        (Some(r), _) if !valid_interval(&r) => Judgement {
            verdict: Verdict::BadReference,
            change: None,
        },
        (Some(_), None) => Judgement {
            verdict: Verdict::Missing,
            change: None,
        },
        (Some(reference), Some(now)) => {
            let change = now.estimate / reference.estimate - 1.0;
            let verdict = if now.high < reference.low * (1.0 - threshold) {
                Verdict::Regression
            } else if now.low > reference.high * (1.0 + threshold) {
                Verdict::Improvement
            } else {
                Verdict::Pass
            };
            Judgement {
                verdict,
                change: Some(change),
            }
        }
    }
}

/// Positive, finite bounds around a positive, finite estimate.
fn valid_interval(interval: &Interval) -> bool {
    let Interval {
        estimate,
        low,
        high,
    } = *interval;
    [estimate, low, high]
        .iter()
        .all(|v| v.is_finite() && *v > 0.0)
        && low <= estimate
        && estimate <= high
}

/// One line of the gate's table, already formatted.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Row {
    pub(crate) signal: &'static str,
    pub(crate) figure: String,
    pub(crate) reference: String,
    pub(crate) now: String,
    pub(crate) judgement: Judgement,
}

impl Row {
    /// A row for an instruction count.
    pub(crate) fn count(
        figure: &str,
        reference: Option<u64>,
        now: Option<u64>,
        tolerance: f64,
    ) -> Self {
        Self {
            signal: "instructions",
            figure: figure.to_owned(),
            reference: reference.map_or_else(|| "-".into(), |r| r.to_string()),
            now: now.map_or_else(|| "-".into(), |n| n.to_string()),
            judgement: judge_count(reference, now, tolerance),
        }
    }

    /// A row for a throughput ratio.
    pub(crate) fn ratio(
        figure: &str,
        reference: Option<Interval>,
        now: Option<Interval>,
        threshold: f64,
    ) -> Self {
        let shown = |interval: Option<Interval>| {
            interval.map_or_else(
                || "-".into(),
                |i| format!("{:.4} [{:.4}, {:.4}]", i.estimate, i.low, i.high),
            )
        };
        Self {
            signal: "ratio",
            figure: figure.to_owned(),
            reference: shown(reference),
            now: shown(now),
            judgement: judge_ratio(reference, now, threshold),
        }
    }
}

/// Renders the rows as an aligned plain-text table (stable layout, snapshot-tested).
pub(crate) fn render_table(rows: &[Row]) -> String {
    let header = ["signal", "figure", "reference", "now", "change", "verdict"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|row| {
            [
                row.signal.to_owned(),
                row.figure.clone(),
                row.reference.clone(),
                row.now.clone(),
                row.judgement
                    .change
                    .map_or_else(|| "-".into(), |c| format!("{:+.2}%", c * 100.0)),
                row.judgement.verdict.label().to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_line = |line: &[String]| {
        let mut text = String::new();
        for (i, (cell, width)) in line.iter().zip(widths).enumerate() {
            // Figures (columns 2..5) align right, names and verdicts left.
            if (2..5).contains(&i) {
                let _ = write!(text, "{cell:>width$}  ");
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    push_line(&header.map(str::to_owned));
    push_line(&widths.map(|w| "-".repeat(w)));
    for line in &cells {
        push_line(line);
    }
    out
}

impl Judgement {
    /// This judgement for a figure whose reference is not comparable: the change is kept
    /// for information, the verdict becomes [`Verdict::NotJudged`], except that a figure
    /// missing now stays missing (nothing was measured, whatever the reference).
    pub(crate) fn unjudged(self) -> Self {
        match self.verdict {
            Verdict::Missing => self,
            _ => Self {
                verdict: Verdict::NotJudged,
                change: self.change,
            },
        }
    }
}

/// Whether any row fails the gate.
pub(crate) fn any_failure(rows: &[Row]) -> bool {
    rows.iter().any(|row| row.judgement.verdict.fails())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: f64 = 0.01;

    #[test]
    fn count_within_tolerance_passes() {
        assert_eq!(
            judge_count(Some(1000), Some(1000), TOL).verdict,
            Verdict::Pass
        );
        assert_eq!(
            judge_count(Some(1000), Some(1010), TOL).verdict,
            Verdict::Pass
        );
        assert_eq!(
            judge_count(Some(1000), Some(990), TOL).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn count_above_tolerance_is_a_regression() {
        let j = judge_count(Some(1000), Some(1011), TOL);
        assert_eq!(j.verdict, Verdict::Regression);
        assert!((j.change.unwrap() - 0.011).abs() < 1e-12);
        assert!(j.verdict.fails());
    }

    #[test]
    fn count_below_tolerance_is_an_improvement_that_passes() {
        let j = judge_count(Some(1000), Some(900), TOL);
        assert_eq!(j.verdict, Verdict::Improvement);
        assert!(!j.verdict.fails());
    }

    #[test]
    fn count_edge_cases() {
        assert_eq!(judge_count(None, Some(5), TOL).verdict, Verdict::New);
        assert!(!Verdict::New.fails());
        assert_eq!(judge_count(Some(5), None, TOL).verdict, Verdict::Missing);
        assert!(Verdict::Missing.fails());
        assert_eq!(
            judge_count(Some(0), Some(5), TOL).verdict,
            Verdict::BadReference
        );
        assert_eq!(
            judge_count(Some(0), Some(0), TOL).verdict,
            Verdict::BadReference
        );
        assert!(Verdict::BadReference.fails());
        assert_eq!(judge_count(Some(0), Some(5), TOL).change, None);
    }

    fn interval(estimate: f64, low: f64, high: f64) -> Option<Interval> {
        Some(Interval {
            estimate,
            low,
            high,
        })
    }

    fn point(ratio: f64) -> Option<Interval> {
        interval(ratio, ratio, ratio)
    }

    #[test]
    fn ratio_judged_against_the_reference_interval() {
        // 10% below the reference's estimate, but overlapping its own noisy interval: pass.
        let reference = interval(4.0, 3.6, 4.6);
        let j = judge_ratio(reference, interval(3.6, 3.2, 4.0), 0.02);
        assert_eq!(j.verdict, Verdict::Pass);
        assert!((j.change.unwrap() + 0.1).abs() < 1e-12);
        // Wholly below the reference's lower bound by more than the threshold: regression.
        let j = judge_ratio(reference, interval(3.2, 3.0, 3.5), 0.02);
        assert_eq!(j.verdict, Verdict::Regression);
        // Below the lower bound, but by less than the threshold: pass.
        let j = judge_ratio(reference, interval(3.4, 3.3, 3.55), 0.02);
        assert_eq!(j.verdict, Verdict::Pass);
        // Above the upper bound by more than the threshold: improvement.
        let j = judge_ratio(reference, interval(5.0, 4.8, 5.2), 0.02);
        assert_eq!(j.verdict, Verdict::Improvement);
        // An inverted or non-positive reference interval is a bad reference.
        let j = judge_ratio(interval(4.0, 4.5, 3.5), interval(4.0, 3.9, 4.1), 0.02);
        assert_eq!(j.verdict, Verdict::BadReference);
        let j = judge_ratio(interval(4.0, 0.0, 4.5), interval(4.0, 3.9, 4.1), 0.02);
        assert_eq!(j.verdict, Verdict::BadReference);
    }

    #[test]
    fn ratio_interval_overlapping_the_band_passes() {
        // Estimate 4% below, but the interval reaches into the 2% band: not proven.
        let j = judge_ratio(point(1.0), interval(0.96, 0.93, 0.985), 0.02);
        assert_eq!(j.verdict, Verdict::Pass);
        assert!((j.change.unwrap() + 0.04).abs() < 1e-12);
    }

    #[test]
    fn ratio_interval_wholly_below_the_band_is_a_regression() {
        let j = judge_ratio(point(1.0), interval(0.95, 0.94, 0.975), 0.02);
        assert_eq!(j.verdict, Verdict::Regression);
    }

    #[test]
    fn ratio_interval_wholly_above_the_band_is_an_improvement() {
        let j = judge_ratio(point(2.0), interval(2.2, 2.1, 2.3), 0.02);
        assert_eq!(j.verdict, Verdict::Improvement);
    }

    #[test]
    fn ratio_edge_cases() {
        assert_eq!(
            judge_ratio(None, interval(1.0, 0.9, 1.1), 0.02).verdict,
            Verdict::New
        );
        assert_eq!(
            judge_ratio(point(1.0), None, 0.02).verdict,
            Verdict::Missing
        );
        assert_eq!(judge_ratio(None, None, 0.02).verdict, Verdict::Missing);
        assert_eq!(
            judge_ratio(point(0.0), interval(1.0, 0.9, 1.1), 0.02).verdict,
            Verdict::BadReference
        );
        assert_eq!(
            judge_ratio(point(f64::NAN), interval(1.0, 0.9, 1.1), 0.02).verdict,
            Verdict::BadReference
        );
        assert_eq!(
            judge_ratio(point(-1.0), interval(1.0, 0.9, 1.1), 0.02).verdict,
            Verdict::BadReference
        );
    }

    #[test]
    fn any_failure_looks_at_every_row() {
        let ok = Row::count("a", Some(100), Some(100), TOL);
        let new = Row::count("b", None, Some(100), TOL);
        let bad = Row::count("c", Some(100), Some(200), TOL);
        assert!(!any_failure(&[ok.clone(), new.clone()]));
        assert!(any_failure(&[ok, new, bad]));
        assert!(!any_failure(&[]));
    }

    #[test]
    fn unjudged_rows_pass_but_missing_ones_still_fail() {
        let regression = Row::count("a", Some(100), Some(200), TOL).judgement;
        let unjudged = regression.unjudged();
        assert_eq!(unjudged.verdict, Verdict::NotJudged);
        assert_eq!(unjudged.change, regression.change);
        assert!(!unjudged.verdict.fails());
        let missing = Row::count("b", Some(100), None, TOL).judgement.unjudged();
        assert_eq!(missing.verdict, Verdict::Missing);
        assert!(missing.verdict.fails());
    }

    #[test]
    fn table_snapshot() {
        let rows = vec![
            Row::count("alloc_free_pair_per_cpu", Some(41), Some(41), TOL),
            Row::count("prefill_few_use_three_return", Some(1200), Some(1290), TOL),
            Row::count("bulk_free_16", Some(800), Some(700), TOL),
            Row::count("refill_to_few", None, Some(350), TOL),
            Row::count("bulk_alloc_16", Some(500), None, TOL),
            Row::count("zero_reference", Some(0), Some(10), TOL),
            Row::ratio(
                "churn-lifo sheaf/mimalloc",
                interval(1.2, 1.15, 1.25),
                interval(1.19, 1.17, 1.21),
                0.02,
            ),
            Row::ratio(
                "burst sheaf/slub-cpu-slab",
                point(1.5),
                interval(1.40, 1.38, 1.43),
                0.02,
            ),
        ];
        insta::assert_snapshot!(render_table(&rows));
    }
}
