//! Latency histograms: one per thread with fixed bounds, merged after the run.
//!
//! Every histogram is created with the same bounds before the warm-up
//! ([`new_latency_histogram`]), so recording in the measured loop never allocates and
//! merging never fails; values beyond the bound are clamped (`saturating_record`), which
//! only a sample over a minute long could reach.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histograms track, in nanoseconds (one minute).
pub const LATENCY_BOUND_NS: u64 = 60_000_000_000;

/// A histogram of latencies in nanoseconds, 1 ns to one minute, 3 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_BOUND_NS, 3).expect("fixed bounds are valid")
}

/// Merges per-thread histograms into one.
pub fn merge<'a>(histograms: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut merged = new_latency_histogram();
    for h in histograms {
        merged
            .add(h)
            .expect("histograms with the same fixed bounds always merge");
    }
    merged
}

/// Percentiles of a latency histogram, in nanoseconds per sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyFigures {
    /// Samples recorded.
    pub samples: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest sample.
    pub max: u64,
}

impl LatencyFigures {
    /// Reads the percentiles of `histogram`; all zero when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            samples: histogram.len(),
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            p9999: histogram.value_at_quantile(0.9999),
            max: histogram.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_every_sample_and_the_extremes() {
        let mut a = new_latency_histogram();
        let mut b = new_latency_histogram();
        for v in 1..=1000 {
            a.saturating_record(v);
        }
        for _ in 0..999 {
            b.saturating_record(1_000_000);
        }
        b.saturating_record(LATENCY_BOUND_NS * 10);
        let merged = merge([&a, &b]);
        let figures = LatencyFigures::of(&merged);
        assert_eq!(figures.samples, 2000);
        // Half the samples are at most 1000 ns, half at 1 ms (within 3 significant digits).
        assert!(figures.p50 <= 1001, "{figures:?}");
        assert!(figures.p90.abs_diff(1_000_000) < 1_000, "{figures:?}");
        // The out-of-bound sample was clamped, not dropped.
        assert!(figures.max.abs_diff(LATENCY_BOUND_NS) < LATENCY_BOUND_NS / 1000);
        assert!(figures.p50 <= figures.p90 && figures.p90 <= figures.p99);
        assert!(figures.p99 <= figures.p999 && figures.p9999 <= figures.max);
    }

    #[test]
    fn an_empty_histogram_reads_zero_samples() {
        let figures = LatencyFigures::of(&merge([]));
        assert_eq!(figures.samples, 0);
        assert_eq!(figures.max, 0);
    }
}
