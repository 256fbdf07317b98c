//! The ratio signal judged by this machine's own history: with at least `min_runs` earlier
//! gate runs recorded for the same machine fingerprint (untagged: no injected slowdown, the
//! default rounds and duration), a ratio regresses when its fall from the newest of them is
//! beyond the history's noise fence (`history::fence`: Q3 + 3 x IQR of the run-to-run
//! changes) over its whole 95% interval, as the reference rule asks of its threshold: a gate
//! whose rounds scattered (the machine got busy during it) must fall further to be flagged.
//! With fewer runs, the blessed reference decides as before. Instruction counts are
//! always judged against the reference: they do not drift.

use std::collections::BTreeMap;

use harness::machine::Machine;
use harness::stats::Interval;
use history::{Figure, NewRun, RunKind, SeriesQuery, Store};

use super::decide::{Judgement, Row, Verdict};
use super::ratios;

/// The gate runs the fence needs before it judges (fewer: the blessed reference judges).
pub(crate) const MIN_RUNS: usize = history::fence::MIN_RUNS;

/// (workload, comparator) of a ratio figure name (`churn-lifo: sheaf / mimalloc`).
pub(crate) fn ratio_parts(figure: &str) -> Option<(&str, &str)> {
    let (workload, rest) = figure.split_once(": ")?;
    let (_, comparator) = rest.split_once(" / ")?;
    Some((workload, comparator))
}

/// The figure name a ratio is stored under.
fn stored_name(comparator: &str) -> String {
    format!("ratio_vs_{comparator}")
}

/// This gate run as a history run: every instruction count (`instructions` of the
/// benchmark's name) and every ratio with its interval and rounds.
pub(crate) fn gate_run(
    measured: &serde_json::Value,
    counts: Option<&BTreeMap<String, u64>>,
    samples: Option<&BTreeMap<String, Vec<f64>>>,
    intervals: Option<&BTreeMap<String, (Interval, usize)>>,
    tag: Option<String>,
) -> NewRun {
    let machine = Machine::detect();
    let mut run = NewRun::new(
        RunKind::Gate,
        &harness::machine::utc_now(),
        &machine,
        measured.clone(),
    );
    run.tag = tag;
    for (name, count) in counts.into_iter().flatten() {
        run.figures.push(Figure::point(
            name,
            ratios::SUBJECT,
            "instructions",
            *count as f64,
        ));
    }
    for (name, (interval, _)) in intervals.into_iter().flatten() {
        let Some((workload, comparator)) = ratio_parts(name) else {
            continue;
        };
        run.figures.push(Figure {
            threads: Some(1),
            low: Some(interval.low),
            high: Some(interval.high),
            rounds: samples
                .and_then(|s| s.get(name))
                .cloned()
                .unwrap_or_default(),
            ..Figure::point(
                workload,
                ratios::SUBJECT,
                &stored_name(comparator),
                interval.estimate,
            )
        });
    }
    run
}

/// The estimates of each ratio figure in the earlier untagged gate runs of `machine`, oldest
/// first.
pub(crate) fn histories(
    store: &mut dyn Store,
    machine: &str,
    figures: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, Vec<f64>>, history::HistoryError> {
    let mut out = BTreeMap::new();
    for figure in figures {
        let Some((workload, comparator)) = ratio_parts(&figure) else {
            continue;
        };
        let points = store.series(&SeriesQuery {
            workload: workload.to_owned(),
            allocator: ratios::SUBJECT.to_owned(),
            name: stored_name(comparator),
            threads: Some(1),
            machine: Some(machine.to_owned()),
            kind: Some(RunKind::Gate),
            untagged: true,
        })?;
        out.insert(figure, points.into_iter().map(|p| p.value).collect());
    }
    Ok(out)
}

/// Re-judges each ratio row with a history of at least `min_runs` runs by the fence; returns
/// how many rows it judged.
pub(crate) fn judge_by_history(
    rows: &mut [Row],
    intervals: &BTreeMap<String, (Interval, usize)>,
    histories: &BTreeMap<String, Vec<f64>>,
    min_runs: usize,
) -> usize {
    let mut judged = 0;
    for row in rows.iter_mut().filter(|r| r.signal == "ratio") {
        let (Some(history), Some((now, _))) =
            (histories.get(&row.figure), intervals.get(&row.figure))
        else {
            continue;
        };
        let Some(j) =
            history::fence::judge_interval(history, (now.low, now.estimate, now.high), min_runs)
        else {
            continue;
        };
        let verdict = if j.is_regression() {
            Verdict::Regression
        } else if j.is_improvement() {
            Verdict::Improvement
        } else {
            Verdict::Pass
        };
        row.reference = format!(
            "history of {}: last {:.4}, fence ±{:.2}%",
            j.runs,
            history.last().copied().unwrap_or(f64::NAN),
            j.fence * 100.0
        );
        row.judgement = Judgement {
            verdict,
            change: Some(j.change),
        };
        judged += 1;
    }
    judged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(estimate: f64) -> Interval {
        Interval {
            estimate,
            low: estimate * 0.99,
            high: estimate * 1.01,
        }
    }

    const FIGURE: &str = "churn-lifo: sheaf / mimalloc";

    /// A history around 1.5 with about 1% run-to-run noise, then one row judged now.
    fn judged(history: Vec<f64>, now: f64, min_runs: usize) -> (Row, usize) {
        let intervals: BTreeMap<String, (Interval, usize)> =
            [(FIGURE.to_owned(), (interval(now), 10))].into();
        let histories: BTreeMap<String, Vec<f64>> = [(FIGURE.to_owned(), history)].into();
        // The blessed reference would pass anything within 20%.
        let mut rows = vec![Row::ratio(
            FIGURE,
            Some(interval(1.5)),
            Some(interval(now)),
            0.20,
        )];
        let n = judge_by_history(&mut rows, &intervals, &histories, min_runs);
        (rows.remove(0), n)
    }

    fn quiet() -> Vec<f64> {
        [1.50, 1.51, 1.495, 1.505, 1.50, 1.512, 1.498, 1.503]
            .into_iter()
            .collect()
    }

    #[test]
    fn a_five_percent_drop_beyond_a_quiet_history_is_a_regression() {
        let (row, n) = judged(quiet(), 1.503 * 0.95, MIN_RUNS);
        assert_eq!(n, 1);
        assert_eq!(row.judgement.verdict, Verdict::Regression);
        assert!(
            row.reference.starts_with("history of 8"),
            "{}",
            row.reference
        );
    }

    #[test]
    fn a_drop_from_a_run_whose_rounds_scattered_is_not_flagged() {
        let intervals: BTreeMap<String, (Interval, usize)> = [(
            FIGURE.to_owned(),
            (
                Interval {
                    estimate: 1.503 * 0.95,
                    low: 1.503 * 0.85,
                    high: 1.503 * 1.01,
                },
                10,
            ),
        )]
        .into();
        let histories: BTreeMap<String, Vec<f64>> = [(FIGURE.to_owned(), quiet())].into();
        let mut rows = vec![Row::ratio(
            FIGURE,
            Some(interval(1.5)),
            Some(intervals[FIGURE].0),
            0.20,
        )];
        assert_eq!(
            judge_by_history(&mut rows, &intervals, &histories, MIN_RUNS),
            1
        );
        assert_eq!(rows[0].judgement.verdict, Verdict::Pass);
        // The same estimate with a tight interval is a regression.
        assert_eq!(
            judged(quiet(), 1.503 * 0.95, MIN_RUNS).0.judgement.verdict,
            Verdict::Regression
        );
    }

    #[test]
    fn a_change_inside_the_noise_passes() {
        let (row, _) = judged(quiet(), 1.503 * 0.995, MIN_RUNS);
        assert_eq!(row.judgement.verdict, Verdict::Pass);
        let (row, _) = judged(quiet(), 1.503 * 1.10, MIN_RUNS);
        assert_eq!(row.judgement.verdict, Verdict::Improvement);
    }

    #[test]
    fn a_noisy_history_tolerates_what_a_quiet_one_flags() {
        let noisy = vec![1.5, 1.65, 1.40, 1.62, 1.38, 1.55, 1.45, 1.6];
        let (row, _) = judged(noisy, 1.6 * 0.95, MIN_RUNS);
        assert_eq!(row.judgement.verdict, Verdict::Pass);
    }

    #[test]
    fn too_short_a_history_leaves_the_reference_verdict() {
        let (row, n) = judged(quiet()[..4].to_vec(), 1.503 * 0.95, MIN_RUNS);
        assert_eq!(n, 0);
        // The reference rule with its 20% threshold passes the 5% drop.
        assert_eq!(row.judgement.verdict, Verdict::Pass);
        assert!(row.reference.starts_with("1.5000"), "{}", row.reference);
    }

    #[test]
    fn instruction_rows_are_never_judged_by_history() {
        let histories: BTreeMap<String, Vec<f64>> = [("pair".to_owned(), quiet())].into();
        let intervals: BTreeMap<String, (Interval, usize)> =
            [("pair".to_owned(), (interval(1.0), 10))].into();
        let mut rows = vec![Row::count("pair", Some(100), Some(100), 0.01)];
        assert_eq!(
            judge_by_history(&mut rows, &intervals, &histories, MIN_RUNS),
            0
        );
    }

    #[test]
    fn ratio_names_split_into_workload_and_comparator() {
        assert_eq!(
            ratio_parts("prefill-burst: sheaf / slub-cpu-slab"),
            Some(("prefill-burst", "slub-cpu-slab"))
        );
        assert_eq!(ratio_parts("pair"), None);
    }

    #[test]
    fn a_recorded_gate_reads_back_as_history_of_its_machine() {
        let dir = tempfile::tempdir().unwrap();
        let location = history::Location::Sqlite(dir.path().join("h.sqlite"));
        let mut store = history::open(&location).unwrap();
        let samples: BTreeMap<String, Vec<f64>> = [(FIGURE.to_owned(), vec![1.4, 1.6])].into();
        let intervals: BTreeMap<String, (Interval, usize)> =
            [(FIGURE.to_owned(), (interval(1.5), 2))].into();
        let counts: BTreeMap<String, u64> = [("pair".to_owned(), 48)].into();
        for tag in [None, Some("slowdown=50".to_owned()), None] {
            let run = gate_run(
                &serde_json::json!({}),
                Some(&counts),
                Some(&samples),
                Some(&intervals),
                tag,
            );
            store.record(&run).unwrap();
        }
        let machine = history::Fingerprint::of(&Machine::detect()).id();
        let h = histories(store.as_mut(), &machine, [FIGURE.to_owned()]).unwrap();
        // The tagged run is left out.
        assert_eq!(h[FIGURE], [1.5, 1.5]);
        let other = histories(store.as_mut(), "0000000000000000", [FIGURE.to_owned()]).unwrap();
        assert!(other[FIGURE].is_empty());
    }
}
