//! An injected slowdown of the fast paths, compiled in only with the `slowdown` feature.
//!
//! It exists to prove that the regression gate (`cargo xtask gate`) catches a small slowdown.
//! The size is chosen when the crate is *built*: `SHEAF_SLOWDOWN_PERMILLE=N` in the build's
//! environment (cargo rebuilds the crate when it changes) asks for N per mille more work in
//! an alloc+free pair, counted in instructions: the per-thread fast-path pair executes
//! [`REFERENCE_PAIR_INSTRUCTIONS`] instructions (callgrind, at the blessed references), so N
//! per mille becomes `round(N × REFERENCE_PAIR_INSTRUCTIONS / 1000)` extra instructions per
//! pair (at least one when N > 0), the first half on the allocation, the rest on the free.
//! At 50 per mille that is 2: +4.7% of the per-thread pair, +1.6% of the per-CPU one.
//!
//! Each extra instruction is a single-cycle `add 0` chained on the object's address, unrolled
//! in place: no counter, no branch, no check, so the instruction count grows by exactly that
//! number. What it costs in *time* is not assumed: an out-of-order core can overlap such a
//! short chain with the pair's own work, and on the reference machine the wall-clock ratios
//! of a 50 per mille build did not move measurably (the gate-proof logs show it). A value that
//! is not a number stops the build with a message; without the feature none of this exists.

use std::num::NonZeroUsize;
use std::ptr::NonNull;

/// Instructions of one per-thread fast-path alloc+free pair under callgrind, at the blessed
/// references (`alloc_free_pair_per_thread` in `results/reference/instructions.json`).
pub(crate) const REFERENCE_PAIR_INSTRUCTIONS: u32 = 43;

/// The slowdown asked for at build time, in per mille of a pair.
pub(crate) const PERMILLE: u32 = parse_permille(option_env!("SHEAF_SLOWDOWN_PERMILLE"));

/// Single-cycle instructions added to every pair.
pub(crate) const PAIR_STEPS: u32 = if PERMILLE == 0 {
    0
} else {
    let steps = (PERMILLE * REFERENCE_PAIR_INSTRUCTIONS + 500) / 1000;
    if steps == 0 { 1 } else { steps }
};

/// The allocation's share of [`PAIR_STEPS`].
const ALLOC_STEPS: u32 = PAIR_STEPS.div_ceil(2);

/// The free's share of [`PAIR_STEPS`].
const FREE_STEPS: u32 = PAIR_STEPS / 2;

/// Parses the build-time setting: absent or empty is 0; anything but decimal digits stops the
/// build.
const fn parse_permille(value: Option<&str>) -> u32 {
    let bytes = match value {
        Some(value) => value.as_bytes(),
        None => return 0,
    };
    let mut permille: u32 = 0;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        assert!(
            byte.is_ascii_digit(),
            "SHEAF_SLOWDOWN_PERMILLE must be a whole number of per mille, such as 50"
        );
        permille = match permille.checked_mul(10) {
            Some(tens) => tens + (byte - b'0') as u32,
            None => panic!("SHEAF_SLOWDOWN_PERMILLE is too large"),
        };
        index += 1;
    }
    assert!(
        permille <= 10_000,
        "SHEAF_SLOWDOWN_PERMILLE is at most 10000 (a pair ten times slower)"
    );
    permille
}

/// Delays an allocation's result by its share of the slowdown.
#[inline(always)]
pub(crate) fn on_alloc(object: NonNull<u8>) -> NonNull<u8> {
    chain::<ALLOC_STEPS>(object)
}

/// Delays a freed object by its share of the slowdown.
#[inline(always)]
pub(crate) fn on_free(object: NonNull<u8>) -> NonNull<u8> {
    chain::<FREE_STEPS>(object)
}

/// Passes `object` through `STEPS` dependent single-cycle instructions that leave it unchanged.
#[inline(always)]
fn chain<const STEPS: u32>(object: NonNull<u8>) -> NonNull<u8> {
    if STEPS == 0 {
        return object;
    }
    let mut address = object.addr().get();
    for _ in 0..STEPS {
        address = step(address);
    }
    // SAFETY: every step adds zero, so `address` is still `object`'s non-zero address.
    object.with_addr(unsafe { NonZeroUsize::new_unchecked(address) })
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn step(mut address: usize) -> usize {
    // SAFETY: one register-only `add` of zero: no memory, no stack, the value is unchanged;
    // only the flags are clobbered, which the default options declare.
    unsafe { std::arch::asm!("add {0}, 0", inout(reg) address, options(nomem, nostack)) };
    address
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn step(mut address: usize) -> usize {
    // SAFETY: one register-only `add` of zero: no memory, no stack, no flags, the value is
    // unchanged.
    unsafe {
        std::arch::asm!(
            "add {0}, {0}, #0",
            inout(reg) address,
            options(nomem, nostack, preserves_flags)
        )
    };
    address
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[inline(always)]
fn step(address: usize) -> usize {
    // Elsewhere an opaque copy (a store and a load: more than one cycle).
    std::hint::black_box(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permille_parses_and_maps_to_steps() {
        assert_eq!(parse_permille(None), 0);
        assert_eq!(parse_permille(Some("")), 0);
        assert_eq!(parse_permille(Some("50")), 50);
        assert_eq!(parse_permille(Some("1000")), 1000);
    }

    #[test]
    fn steps_are_the_asked_share_of_the_reference_pair() {
        let steps = |permille: u32| (permille * REFERENCE_PAIR_INSTRUCTIONS + 500) / 1000;
        assert_eq!(steps(50), 2);
        assert_eq!(steps(100), 4);
        assert_eq!(steps(1000), REFERENCE_PAIR_INSTRUCTIONS);
    }

    #[test]
    fn chain_keeps_the_address() {
        let mut byte = 7u8;
        let object = NonNull::from(&mut byte);
        assert_eq!(chain::<3>(object), object);
        assert_eq!(on_alloc(object), object);
        assert_eq!(on_free(object), object);
    }
}
