//! The noise fence of a figure's history: how large a run-to-run change has to be before it
//! is more than this machine's noise.
//!
//! The changes are the relative differences between consecutive runs of the history,
//! `|v[i] / v[i-1] - 1|`. Their fence is Tukey's outer fence, `Q3 + 3 x IQR`: a change
//! beyond it is an outlier of the machine's own run-to-run changes. A new figure is judged by
//! its change from the newest run of the history, so both sides of the comparison are the
//! same statistic. The quartiles are linearly interpolated (the usual "type 7" definition).

/// The least history the fence is computed from: fewer runs give too few changes to place
/// a quartile.
pub const MIN_RUNS: usize = 5;

/// Multiple of the interquartile range above the third quartile.
pub const IQR_FACTOR: f64 = 3.0;

/// The `q`-quantile (0 to 1) of `sorted` values, linearly interpolated; `None` if empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let weight = position - below as f64;
    Some(sorted[below] + (sorted[above] - sorted[below]) * weight)
}

/// The relative changes between consecutive values, `|v[i] / v[i-1] - 1|`, leaving out
/// pairs with a value that is not positive and finite.
pub fn changes(history: &[f64]) -> Vec<f64> {
    history
        .windows(2)
        .filter(|w| w.iter().all(|v| v.is_finite() && *v > 0.0))
        .map(|w| (w[1] / w[0] - 1.0).abs())
        .collect()
}

/// What a history says about a new value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judgement {
    /// The fence, a relative change.
    pub fence: f64,
    /// The new value's change from the newest historical one, `now / last - 1`.
    pub change: f64,
    /// The changes of the new value's interval ends (`low / last - 1`, `high / last - 1`);
    /// both equal `change` for a value judged without an interval.
    pub low: f64,
    /// See `low`.
    pub high: f64,
    /// Runs the fence came from.
    pub runs: usize,
}

impl Judgement {
    /// For a figure where higher is better: a fall beyond the fence, of the whole interval.
    pub fn is_regression(&self) -> bool {
        -self.high > self.fence
    }

    /// For a figure where higher is better: a rise beyond the fence, of the whole interval.
    pub fn is_improvement(&self) -> bool {
        self.low > self.fence
    }
}

/// The fence of `history` (oldest first), or `None` with fewer than `min_runs` usable
/// values (at least 3: two changes are needed to speak of quartiles).
pub fn fence(history: &[f64], min_runs: usize) -> Option<f64> {
    let usable: Vec<f64> = history
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    if usable.len() < min_runs.max(3) {
        return None;
    }
    let mut changes = changes(&usable);
    changes.sort_by(f64::total_cmp);
    let q1 = quantile(&changes, 0.25)?;
    let q3 = quantile(&changes, 0.75)?;
    Some(q3 + IQR_FACTOR * (q3 - q1))
}

/// Judges `now` against `history` (oldest first); `None` when the history is too short or
/// `now` is not positive and finite.
pub fn judge(history: &[f64], now: f64, min_runs: usize) -> Option<Judgement> {
    judge_interval(history, (now, now, now), min_runs)
}

/// Judges a new value given with its confidence interval, `(low, estimate, high)`, against
/// `history` (oldest first): a change counts only when the whole interval is beyond the
/// fence. The fence measures how far consecutive runs' estimates wander; a run whose own
/// rounds scatter widely (a machine that got busy during it) carries less evidence than its
/// estimate alone suggests, and its interval says so. `None` when the history is too short
/// or the estimate is not positive and finite.
pub fn judge_interval(
    history: &[f64],
    (low, now, high): (f64, f64, f64),
    min_runs: usize,
) -> Option<Judgement> {
    if !(now.is_finite() && now > 0.0) {
        return None;
    }
    // An interval that does not hold its estimate is no interval: judged by the estimate.
    let (low, high) = if low.is_finite() && high.is_finite() && low <= now && now <= high {
        (low, high)
    } else {
        (now, now)
    };
    let fence = fence(history, min_runs)?;
    let last = history
        .iter()
        .rev()
        .copied()
        .find(|v| v.is_finite() && *v > 0.0)?;
    Some(Judgement {
        fence,
        change: now / last - 1.0,
        low: low / last - 1.0,
        high: high / last - 1.0,
        runs: history.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic history: `base` times a zig-zag of `noise` (alternately above and
    /// below), with a small drift-free pseudo-random wobble.
    fn history(base: f64, noise: f64, runs: usize) -> Vec<f64> {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        (0..runs)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let wobble = (state % 1000) as f64 / 1000.0;
                let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                base * (1.0 + sign * noise * wobble)
            })
            .collect()
    }

    #[test]
    fn quantiles_interpolate_between_values() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        assert_eq!(quantile(&v, 0.25), Some(1.75));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn the_fence_is_q3_plus_three_iqr_of_consecutive_changes() {
        // Changes: 10%, 0%, 20%, 0% -> sorted 0, 0, 0.1, 0.2: Q1 0, Q3 0.125.
        let h = [100.0, 110.0, 110.0, 132.0, 132.0];
        let fence = fence(&h, 5).unwrap();
        assert!((fence - (0.125 + 3.0 * 0.125)).abs() < 1e-12, "{fence}");
    }

    #[test]
    fn too_short_a_history_gives_no_fence() {
        assert_eq!(fence(&[1.0, 1.0, 1.0, 1.0], 5), None);
        assert!(fence(&[1.0; 5], 5).is_some());
        // Unusable values do not count.
        assert_eq!(fence(&[1.0, 1.0, f64::NAN, 0.0, 1.0, 1.0], 5), None);
        assert_eq!(judge(&[1.0; 10], f64::INFINITY, 5), None);
    }

    #[test]
    fn a_quiet_history_catches_a_small_drop_and_a_noisy_one_does_not() {
        // 1% run-to-run noise: a 5% drop is far beyond it.
        let quiet = history(1.0, 0.01, 20);
        let last = *quiet.last().unwrap();
        let j = judge(&quiet, last * 0.95, 5).unwrap();
        assert!(j.fence < 0.05, "fence {}", j.fence);
        assert!(j.is_regression());
        // The same drop inside 15% noise is no signal.
        let noisy = history(1.0, 0.15, 20);
        let last = *noisy.last().unwrap();
        let j = judge(&noisy, last * 0.95, 5).unwrap();
        assert!(j.fence > 0.05, "fence {}", j.fence);
        assert!(!j.is_regression() && !j.is_improvement());
    }

    #[test]
    fn no_false_alarm_on_values_drawn_like_the_history() {
        // Each new value from the same process as the history: none is beyond the fence.
        let all = history(2.0, 0.03, 40);
        let alarms = (20..40)
            .filter(|&i| judge(&all[..i], all[i], 5).unwrap().is_regression())
            .count();
        assert_eq!(alarms, 0);
    }

    #[test]
    fn a_rise_beyond_the_fence_is_an_improvement() {
        let quiet = history(1.0, 0.005, 10);
        let j = judge(&quiet, quiet[9] * 1.10, 5).unwrap();
        assert!(j.is_improvement() && !j.is_regression());
        assert!((j.change - 0.10).abs() < 1e-9);
        assert_eq!(j.runs, 10);
    }

    #[test]
    fn a_drop_counts_only_when_the_whole_interval_is_beyond_the_fence() {
        let quiet = history(1.5, 0.01, 12);
        let last = quiet[11];
        let fence = fence(&quiet, 5).unwrap();
        let now = last * (1.0 - 2.0 * fence);
        // A tight interval around a drop of twice the fence: a regression.
        let tight = judge_interval(&quiet, (now * 0.995, now, now * 1.005), 5).unwrap();
        assert!(tight.is_regression(), "{tight:?}");
        // The same estimate from a run whose rounds scattered up to the last value: not.
        let wide = judge_interval(&quiet, (now * 0.9, now, last * 1.001), 5).unwrap();
        assert!(!wide.is_regression() && !wide.is_improvement(), "{wide:?}");
        assert_eq!(wide.change, tight.change);
        // Likewise for a rise.
        let rise = last * (1.0 + 2.0 * fence);
        let wide = judge_interval(&quiet, (last * 0.999, rise, rise * 1.1), 5).unwrap();
        assert!(!wide.is_improvement(), "{wide:?}");
        // An interval that does not hold its estimate is ignored: the estimate judges.
        let bad = judge_interval(&quiet, (now * 1.5, now, now * 2.0), 5).unwrap();
        assert!(bad.is_regression() && bad.low == bad.change && bad.high == bad.change);
    }
}
