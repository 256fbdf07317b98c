//! The clock and its own cost.
//!
//! Latency samples are taken with [`Instant::now`] (the vDSO `clock_gettime(CLOCK_MONOTONIC)`),
//! one read per unit of work: the end of one unit is the start of the next, so each sample
//! covers the unit, one clock read and the loop's bookkeeping. The clock costs about as much
//! as a fast-path allocation, so units are batches of operations, and the clock's cost is
//! measured at start-up and reported beside the figures it affects.

use std::hint::black_box;
use std::time::Instant;

/// Mean cost of one [`Instant::now`] read in nanoseconds, from `reads` back-to-back reads
/// (the best of three rounds, to discount interruptions).
pub fn instant_overhead_ns(reads: u32) -> f64 {
    let reads = reads.max(1);
    (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reads {
                black_box(Instant::now());
            }
            start.elapsed().as_nanos() as f64 / f64::from(reads)
        })
        .fold(f64::INFINITY, f64::min)
}

/// The resolution of the clock [`Instant::now`] reads (`clock_getres`); 1 ns where the
/// kernel does not say.
pub fn resolution() -> std::time::Duration {
    let res = rustix::time::clock_getres(rustix::time::ClockId::Monotonic);
    let nanos = u64::try_from(res.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(res.tv_nsec).unwrap_or(0));
    std::time::Duration::from_nanos(nanos.max(1))
}

/// The name of the clock, for result files.
pub const CLOCK: &str = "Instant::now (clock_gettime CLOCK_MONOTONIC)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_costs_something_finite() {
        let cost = instant_overhead_ns(10_000);
        assert!(cost > 0.0 && cost < 100_000.0, "{cost}");
    }
}
