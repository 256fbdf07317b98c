//! Bootstrap confidence interval of a ratio, from paired samples, and the [`Verdict`] such
//! an interval gives on an acceptance region.
//!
//! Used by the gate, `overhead` and `batching`. Each measures two sides in each of several
//! interleaved rounds (the gate: the throughput of sheaf and of a comparator on the same
//! workload; `overhead`: the harness's and criterion's time for the same loop; `batching`:
//! one allocator's throughput with deferred batching on and off); the round's *ratio* is
//! one side over the other. Noise that hits a whole round (another process, frequency
//! changes) hits both sides and mostly cancels in the ratio.
//!
//! The statistic is the geometric mean of the per-round ratios (ratios multiply, so their
//! logarithms average). The interval comes from the percentile bootstrap: draw as many
//! rounds as were measured, with replacement, take the statistic, repeat `resamples` times,
//! and read the two tail percentiles of the resampled statistics.
//!
//! Determinism: every resample has its own generator, seeded from the caller's seed and the
//! resample's index (SplitMix64), so the result does not depend on how rayon schedules the
//! resamples; with a fixed seed and fixed samples the interval is always the same.

use rayon::prelude::*;

/// A point estimate with its confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Interval {
    /// The statistic on the samples themselves.
    pub(crate) estimate: f64,
    /// Lower bound.
    pub(crate) low: f64,
    /// Upper bound.
    pub(crate) high: f64,
}

/// SplitMix64: tiny, fast, good enough to draw indices for resampling.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (`n > 0`), by multiply-shift (bias below 2^-32 for small n).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Geometric mean of positive, finite values; `None` if there are none or one is not.
pub(crate) fn geometric_mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite() || *v <= 0.0) {
        return None;
    }
    let mean_log = values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64;
    Some(mean_log.exp())
}

/// Percentile bootstrap interval of the geometric mean of `samples` at `confidence` (e.g.
/// 0.95). `None` when the samples cannot give one: fewer than two, or any not a positive
/// finite number.
pub(crate) fn bootstrap_interval(
    samples: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Option<Interval> {
    if samples.len() < 2 || resamples == 0 || !(0.0..1.0).contains(&confidence) {
        return None;
    }
    let estimate = geometric_mean(samples)?;
    let mut statistics: Vec<f64> = (0..resamples)
        .into_par_iter()
        .map(|index| {
            let mut rng =
                SplitMix64::new(seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let mean_log = (0..samples.len())
                .map(|_| samples[rng.below(samples.len())].ln())
                .sum::<f64>()
                / samples.len() as f64;
            mean_log.exp()
        })
        .collect();
    statistics.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    Some(Interval {
        estimate,
        low: percentile(&statistics, tail),
        high: percentile(&statistics, 1.0 - tail),
    })
}

/// The `q` quantile of sorted, non-empty `values` (nearest rank).
fn percentile(values: &[f64], q: f64) -> f64 {
    let rank = (q * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// What an interval says about an acceptance region (e.g. within 5% of parity, or at least
/// 3x): read from the whole interval, so a noisy measurement gives no verdict rather than a
/// wrong one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The whole interval lies inside the region.
    Yes,
    /// The whole interval lies outside it.
    No,
    /// The interval straddles a bound of the region: the rounds cannot tell.
    Unresolved,
    /// No interval (fewer than two complete rounds).
    NoInterval,
}

impl Verdict {
    /// The verdict of `interval` on the region `accept` (inclusive bounds; use infinities for
    /// a one-sided region).
    pub(crate) fn read(interval: Option<Interval>, accept: std::ops::RangeInclusive<f64>) -> Self {
        let Some(interval) = interval else {
            return Self::NoInterval;
        };
        let (start, end) = (*accept.start(), *accept.end());
        if interval.low >= start && interval.high <= end {
            Self::Yes
        } else if interval.high < start || interval.low > end {
            Self::No
        } else {
            Self::Unresolved
        }
    }

    /// The label printed in the tables and written to JSON.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "NO",
            Self::Unresolved => "unresolved",
            Self::NoInterval => "-",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometric_mean_of_fixed_values() {
        let mean = geometric_mean(&[1.0, 4.0]).unwrap();
        assert!((mean - 2.0).abs() < 1e-12);
        assert_eq!(geometric_mean(&[]), None);
        assert_eq!(geometric_mean(&[1.0, 0.0]), None);
        assert_eq!(geometric_mean(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn interval_of_identical_samples_is_a_point() {
        let interval = bootstrap_interval(&[1.25; 10], 1000, 0.95, 7).unwrap();
        assert!((interval.estimate - 1.25).abs() < 1e-12);
        assert!((interval.low - 1.25).abs() < 1e-12);
        assert!((interval.high - 1.25).abs() < 1e-12);
    }

    #[test]
    fn interval_brackets_the_estimate_and_is_reproducible() {
        let samples = [0.98, 1.02, 1.00, 0.97, 1.03, 1.01, 0.99, 1.04, 0.96, 1.00];
        let a = bootstrap_interval(&samples, 2000, 0.95, 42).unwrap();
        let b = bootstrap_interval(&samples, 2000, 0.95, 42).unwrap();
        assert_eq!(a, b, "a fixed seed gives a fixed interval");
        assert!(a.low < a.estimate && a.estimate < a.high, "{a:?}");
        // The interval is narrower than the spread of the samples themselves.
        assert!(a.low > 0.96 && a.high < 1.04, "{a:?}");
    }

    #[test]
    fn wider_spread_gives_a_wider_interval() {
        let tight = [1.00, 1.01, 0.99, 1.00, 1.01, 0.99, 1.00, 1.00];
        let loose = [1.00, 1.10, 0.90, 1.00, 1.10, 0.90, 1.00, 1.00];
        let t = bootstrap_interval(&tight, 2000, 0.95, 1).unwrap();
        let l = bootstrap_interval(&loose, 2000, 0.95, 1).unwrap();
        assert!(l.high - l.low > 5.0 * (t.high - t.low), "{t:?} vs {l:?}");
    }

    #[test]
    fn too_few_or_bad_samples_give_no_interval() {
        assert_eq!(bootstrap_interval(&[1.0], 100, 0.95, 1), None);
        assert_eq!(bootstrap_interval(&[1.0, -1.0], 100, 0.95, 1), None);
        assert_eq!(bootstrap_interval(&[1.0, 1.0], 0, 0.95, 1), None);
        assert_eq!(bootstrap_interval(&[1.0, 1.0], 100, 1.5, 1), None);
    }

    #[test]
    fn a_verdict_reads_the_whole_interval() {
        let interval = |low, high| {
            Some(Interval {
                estimate: (low + high) / 2.0,
                low,
                high,
            })
        };
        let parity = 0.95..=1.05;
        assert_eq!(
            Verdict::read(interval(0.97, 1.02), parity.clone()),
            Verdict::Yes
        );
        assert_eq!(
            Verdict::read(interval(1.06, 1.2), parity.clone()),
            Verdict::No
        );
        assert_eq!(
            Verdict::read(interval(0.5, 0.9), parity.clone()),
            Verdict::No
        );
        assert_eq!(
            Verdict::read(interval(0.9, 1.0), parity.clone()),
            Verdict::Unresolved
        );
        assert_eq!(Verdict::read(None, parity), Verdict::NoInterval);
        let at_least = 3.0..=f64::INFINITY;
        assert_eq!(
            Verdict::read(interval(3.0, 3.2), at_least.clone()),
            Verdict::Yes
        );
        assert_eq!(
            Verdict::read(interval(2.0, 2.9), at_least.clone()),
            Verdict::No
        );
        assert_eq!(
            Verdict::read(interval(2.9, 3.1), at_least),
            Verdict::Unresolved
        );
        assert_eq!(Verdict::Unresolved.label(), "unresolved");
    }

    #[test]
    fn index_draws_stay_in_range_and_cover_it() {
        let mut rng = SplitMix64::new(3);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let i = rng.below(5);
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
