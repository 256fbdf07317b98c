//! Tests of the slab layer through its public API (one test binary, to keep link time low).

mod fork;
mod geometry;
mod pages;
mod pool;
mod stress;

use std::mem::MaybeUninit;
use std::ptr::NonNull;

/// A small deterministic generator for test decisions (xorshift64*).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub(crate) fn slots(n: usize) -> Vec<MaybeUninit<NonNull<u8>>> {
    vec![MaybeUninit::uninit(); n]
}

/// The first `n` slots, which the pool initialised.
pub(crate) fn taken(slots: &[MaybeUninit<NonNull<u8>>], n: usize) -> Vec<NonNull<u8>> {
    // SAFETY: callers pass the count the pool reported as written.
    slots[..n]
        .iter()
        .map(|s| unsafe { s.assume_init() })
        .collect()
}
