//! Caveats attached to a measurement, in hyperfine's manner: each says what is wrong with a
//! figure and what to do about it.

use crate::counters::CounterReading;
use crate::result::Measurement;

/// A latency sample within this factor of the clock's own cost is dominated by the clock.
pub const TIMER_DOMINATED_FACTOR: f64 = 10.0;

/// Run-to-run coefficient of variation of the throughput above which a warning is given.
pub const HIGH_VARIANCE_CV: f64 = 0.10;

/// Share of the measured time the hypervisor may steal from the measurement's CPUs before
/// a warning is given, in percent.
pub const STEAL_PERCENT: f64 = 2.0;

/// The warnings that apply to `m`.
pub fn for_measurement(m: &Measurement) -> Vec<String> {
    let mut warnings = Vec::new();
    let latency = &m.latency_ns;
    if latency.figures.samples > 0
        && (latency.figures.p50 as f64) < TIMER_DOMINATED_FACTOR * latency.timer_overhead_ns
    {
        // The tree kinds take one sample per write by definition: there is no batch to raise.
        let advice = if matches!(m.kind.as_str(), "maple-tree" | "trace-replay") {
            "the median includes about one clock read; compare tails (p99, p99.9) rather than medians"
        } else {
            "raise params.batch"
        };
        warnings.push(format!(
            "timer-dominated: the median sample ({} ns per {}) is less than {TIMER_DOMINATED_FACTOR}x the clock's own cost ({:.1} ns); latency figures are mostly clock, {advice}",
            latency.figures.p50, latency.unit, latency.timer_overhead_ns
        ));
    }
    if m.pinning.threads_moved > 0 {
        warnings.push(format!(
            "migrations: {} pinned thread(s) were found off their CPU in {} of {} samples; the figures include migrations (another process may be changing affinities)",
            m.pinning.threads_moved, m.pinning.off_cpu_samples, m.pinning.samples
        ));
    }
    let (mean, sd) = m.throughput_mean_sd();
    if m.samples.len() >= 2 && mean > 0.0 && sd / mean > HIGH_VARIANCE_CV {
        warnings.push(format!(
            "high variance: throughput varied by {:.0}% (coefficient of variation) over {} runs; the machine may be busy: use more --runs, a longer --duration or a quieter machine",
            100.0 * sd / mean,
            m.samples.len()
        ));
    }
    if m.samples.len() < 2 {
        warnings.push(
            "one run only: no run-to-run variance can be estimated; use --runs 3 or more"
                .to_owned(),
        );
    }
    if let Some(&involuntary) = m.extra.get("switches_involuntary")
        && m.seconds > 0.0
        && involuntary / m.seconds > 100.0
    {
        warnings.push(format!(
            "machine busy: {involuntary:.0} involuntary context switches of the measuring threads in {:.2} s; another process competes for the CPUs",
            m.seconds
        ));
    }
    warnings.extend(steal(m.extra.get("steal_percent").copied()));
    let unsupported: Vec<&str> = m
        .counters
        .iter()
        .filter(|(_, r)| matches!(r, CounterReading::Unsupported { .. }))
        .map(|(name, _)| name.as_str())
        .collect();
    if !unsupported.is_empty() {
        warnings.push(format!(
            "counters unsupported on this machine: {} (see `sheafbench list` for the reasons)",
            unsupported.join(", ")
        ));
    }
    warnings
}

/// The warning for `steal_percent` of the measured time stolen by the hypervisor, if due.
fn steal(steal_percent: Option<f64>) -> Option<String> {
    let steal = steal_percent.filter(|&steal| steal > STEAL_PERCENT)?;
    Some(format!(
        "hypervisor steal: the hypervisor ran other work on this measurement's CPUs for {steal:.1}% of the measured time (steal in /proc/stat); figures are slowed by an amount that changes from run to run: compare ratios taken in one run, or rerun on a quieter host"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_above_the_threshold_is_warned_about() {
        assert_eq!(steal(None), None);
        assert_eq!(steal(Some(0.0)), None);
        assert_eq!(steal(Some(STEAL_PERCENT)), None);
        let warning = steal(Some(12.5)).unwrap();
        assert!(warning.contains("12.5%"), "{warning}");
    }
}
