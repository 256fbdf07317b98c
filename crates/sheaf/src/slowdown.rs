//! An injected slowdown of the fast paths, compiled in only with the `slowdown` feature.
//!
//! It exists to prove that the regression gate (`cargo xtask gate`) catches a small slowdown.
//! The size is chosen when the crate is *built*: `SHEAF_SLOWDOWN_INSTRUCTIONS=N` in the
//! build's environment (cargo rebuilds the crate when it changes) adds N instructions to every
//! alloc+free pair, the first half on the allocation, the rest on the free. The crate knows
//! nothing of what a pair costs: `cargo xtask gate --slowdown PERMILLE` turns a share of the
//! per-thread pair's reference count (`results/reference/instructions.json`) into N, so the
//! injected share follows the references as the code changes.
//!
//! Each extra instruction is a single-cycle `add 0` chained on the object's address, unrolled
//! in place: no counter, no branch, no check, so the instruction count grows by exactly N.
//! What it costs in *time* is not assumed: an out-of-order core can overlap such a short chain
//! with the pair's own work. A value that is not a number stops the build with a message;
//! without the feature none of this exists.

use std::num::NonZeroUsize;
use std::ptr::NonNull;

/// Instructions added to every pair, as asked for at build time.
pub(crate) const PAIR_STEPS: u32 = parse_steps(option_env!("SHEAF_SLOWDOWN_INSTRUCTIONS"));

/// The allocation's share of [`PAIR_STEPS`].
const ALLOC_STEPS: u32 = PAIR_STEPS.div_ceil(2);

/// The free's share of [`PAIR_STEPS`].
const FREE_STEPS: u32 = PAIR_STEPS / 2;

/// Parses the build-time setting: absent or empty is 0; anything but decimal digits, or more
/// than the bound, stops the build.
const fn parse_steps(value: Option<&str>) -> u32 {
    let bytes = match value {
        Some(value) => value.as_bytes(),
        None => return 0,
    };
    let mut steps: u32 = 0;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        assert!(
            byte.is_ascii_digit(),
            "SHEAF_SLOWDOWN_INSTRUCTIONS must be a whole number of instructions per pair, such as 2"
        );
        steps = match steps.checked_mul(10) {
            Some(tens) => tens + (byte - b'0') as u32,
            None => panic!("SHEAF_SLOWDOWN_INSTRUCTIONS is too large"),
        };
        index += 1;
    }
    // Every step is unrolled at each fast-path site: the bound keeps the code size sane.
    assert!(
        steps <= 1_000,
        "SHEAF_SLOWDOWN_INSTRUCTIONS is at most 1000 per pair"
    );
    steps
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
    fn the_setting_parses_as_instructions_per_pair() {
        assert_eq!(parse_steps(None), 0);
        assert_eq!(parse_steps(Some("")), 0);
        assert_eq!(parse_steps(Some("2")), 2);
        assert_eq!(parse_steps(Some("1000")), 1000);
    }

    #[test]
    #[should_panic(expected = "whole number of instructions")]
    fn a_setting_that_is_not_a_number_is_refused() {
        parse_steps(Some("5%"));
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
