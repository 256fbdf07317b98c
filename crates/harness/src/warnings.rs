//! Caveats attached to a measurement, in hyperfine's manner: each says what is wrong with a
//! figure and what to do about it.

use std::collections::BTreeMap;

use crate::counters::CounterReading;
use crate::result::Measurement;

/// A latency sample within this factor of the clock's own cost plus the engine's bookkeeping
/// is dominated by them.
pub const TIMER_DOMINATED_FACTOR: f64 = 10.0;

/// Run-to-run coefficient of variation of the throughput above which a warning is given.
pub const HIGH_VARIANCE_CV: f64 = 0.10;

/// Share of the measured time the hypervisor may steal from the measurement's CPUs before
/// a warning is given, in percent.
pub const STEAL_PERCENT: f64 = 2.0;

/// Share of their measured time the threads of a producer-consumer measurement may spend
/// runnable but waiting for a CPU (`threads_runqueue_share`, from the kernel's schedstat)
/// before the pair is said to have rarely been on CPU together.
///
/// A pair moves objects only while both of its threads run: if each is kept off its CPU for
/// a share `w` of the time, independently, both run together for at most `(1 - w)^2` of
/// it, under half from `w = 0.3`. The kernel's figure counts only time the scheduler chose
/// to run something else, so a slow allocator (which keeps its partner blocked, not
/// waiting for a CPU) is not mistaken for a busy machine. Where schedstat is not
/// available, [`HANDOFF_BLOCKED_TIME_SHARE`] of the time spent blocked in hand-off waits is
/// judged instead.
pub const RUNQUEUE_SHARE: f64 = 0.3;

/// Share of their measured time the pair's threads may spend blocked in hand-off waits
/// (`handoff_blocked_time_share`) before the pair is said to have rarely been on CPU
/// together, where the run-queue share is not available.
pub const HANDOFF_BLOCKED_TIME_SHARE: f64 = 0.5;

/// The warnings that apply to `m`.
pub fn for_measurement(m: &Measurement) -> Vec<String> {
    let mut warnings = Vec::new();
    let latency = &m.latency_ns;
    // What every sample holds besides the work: one clock read and the engine's bookkeeping.
    let fixed_ns = latency.timer_overhead_ns + latency.bookkeeping_ns;
    if latency.figures.samples > 0
        && (latency.figures.p50 as f64) < TIMER_DOMINATED_FACTOR * fixed_ns
    {
        // The tree kinds take one sample per write by definition: there is no batch to raise.
        let advice = if matches!(m.kind.as_str(), "maple-tree" | "trace-replay") {
            "the median includes about one clock read; compare tails (p99, p99.9) rather than medians"
        } else {
            "raise params.batch"
        };
        warnings.push(format!(
            "timer-dominated: the median sample ({} ns per {}) is less than {TIMER_DOMINATED_FACTOR}x what each sample holds besides the work ({:.1} ns: a clock read of {:.1} ns and {:.1} ns of the engine's bookkeeping); latency figures are mostly clock, {advice}",
            latency.figures.p50, latency.unit, fixed_ns, latency.timer_overhead_ns, latency.bookkeeping_ns
        ));
    }
    if !m.pinning.failures.is_empty() {
        warnings.push(format!(
            "pinning failed: {} thread(s) could not be pinned and ran unpinned ({}); the figures may include migrations and shared CPUs: check the process's CPU affinity and cpuset",
            m.pinning.failures.len(),
            m.pinning.failures.join("; ")
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
            "high variance: throughput varied by {:.0}% (coefficient of variation) over {} runs (rounds); the machine may be busy: use more --runs, a longer --duration or a quieter machine",
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
    warnings.extend(rarely_together(&m.extra, m.config.hogs));
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
    let not_counted: Vec<&str> = m
        .counters
        .iter()
        .filter(|(_, r)| matches!(r, CounterReading::NotCounted { .. }))
        .map(|(name, _)| name.as_str())
        .collect();
    if !not_counted.is_empty() {
        warnings.push(format!(
            "counters not counted: {} opened but never ran during the measured runs (time_running 0), so no figure is given; another user of the PMU (a perf session, the NMI watchdog) may hold it",
            not_counted.join(", ")
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

/// The warning for a producer-consumer pair whose threads were rarely on CPU together,
/// from the measurement's `extra` figures and its busy threads.
fn rarely_together(extra: &BTreeMap<String, f64>, hogs: u32) -> Option<String> {
    let blocked = *extra.get("handoff_blocked_time_share")?;
    let waiting = match extra.get("threads_runqueue_share") {
        Some(&waiting) if waiting > RUNQUEUE_SHARE => format!(
            "were runnable but kept off their CPUs for {:.0}% of the measured time (schedstat) and ",
            100.0 * waiting
        ),
        None if blocked > HANDOFF_BLOCKED_TIME_SHARE => String::new(),
        _ => return None,
    };
    let hogs = if hogs > 0 {
        format!(", beside {hogs} busy threads")
    } else {
        String::new()
    };
    Some(format!(
        "rarely on CPU together: the producer-consumer threads {waiting}spent {:.0}% of it blocked in hand-off waits (longer than the {} us spin){hogs}; the throughput depends on when the scheduler ran both threads as much as on the allocator: compare designs only within one run, or use a quieter machine",
        100.0 * blocked,
        crate::benchmark::HANDOFF_SPIN.as_micros()
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

    #[test]
    fn a_pair_kept_off_its_cpus_is_flagged() {
        let extra = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
            pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
        };
        // Not a producer-consumer measurement.
        assert_eq!(
            rarely_together(&extra(&[("threads_runqueue_share", 0.9)]), 2),
            None
        );
        // A quiet machine: a slow partner keeps the other blocked, not waiting for a CPU.
        let slow = extra(&[
            ("handoff_blocked_time_share", 0.5),
            ("threads_runqueue_share", 0.01),
        ]);
        assert_eq!(rarely_together(&slow, 0), None);
        let busy = extra(&[
            ("handoff_blocked_time_share", 0.4),
            ("threads_runqueue_share", 0.45),
        ]);
        let warning = rarely_together(&busy, 2).unwrap();
        assert!(
            warning.starts_with("rarely on CPU together")
                && warning.contains("45%")
                && warning.contains("40%")
                && warning.contains("beside 2 busy threads"),
            "{warning}"
        );
        // Without schedstat, the time blocked in hand-offs decides.
        let blind = extra(&[("handoff_blocked_time_share", 0.7)]);
        assert!(rarely_together(&blind, 0).is_some());
        let blind = extra(&[("handoff_blocked_time_share", 0.2)]);
        assert_eq!(rarely_together(&blind, 0), None);
    }
}
