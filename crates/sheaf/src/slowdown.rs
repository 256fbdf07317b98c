//! An injected slowdown of the fast paths, compiled in only with the `slowdown` feature.
//!
//! It exists to prove that the regression gate (`cargo xtask gate`) catches a small slowdown:
//! a build with the feature and `SHEAF_SLOWDOWN_PERMILLE=N` in the environment adds a short
//! dependent chain of work to every fast-path allocation and free. The chain grows in steps of
//! [`PERMILLE_PER_STEP`] permille: one step is a few instructions and about one cycle, roughly
//! 5% of a per-CPU fast-path operation on the reference machine. The gate measures the real
//! size of the injected change (instruction counts are exact), so the step is a knob, not a
//! figure. Without the feature none of this code exists.

/// Permille of slowdown asked for per step of delay.
pub(crate) const PERMILLE_PER_STEP: u32 = 50;

/// Steps of delay per fast-path operation, read once from `SHEAF_SLOWDOWN_PERMILLE`.
pub(crate) fn steps_from_env() -> u32 {
    std::env::var("SHEAF_SLOWDOWN_PERMILLE")
        .ok()
        .and_then(|value| value.trim().parse::<u32>().ok())
        .map_or(0, |permille| permille.div_ceil(PERMILLE_PER_STEP))
}

/// Runs `steps` steps of a dependent chain the optimiser cannot remove.
#[inline(always)]
pub(crate) fn delay(steps: u32) {
    let mut chain = 0u32;
    for step in 0..steps {
        chain = std::hint::black_box(chain.wrapping_add(step));
    }
}
