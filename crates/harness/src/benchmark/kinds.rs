//! The single-thread kinds `churn`, `burst` and `prefill-burst`, and what every kind shares:
//! the seeded [`Rng`] and the allocation that treats a failure as a void measurement. Each
//! kind is a [`Work`] generic over the allocator, so every design runs the same code,
//! statically dispatched (`producer_consumer`, `deferred` and `tree_kinds` hold the others).
//!
//! Ownership: every object a thread holds lives in that thread's own array and is freed
//! exactly once: by the loop that replaces it, or by `Drop` at the end of the measurement.

use std::ptr::NonNull;

use object_alloc::{AllocFlags, ObjectAlloc, Prefill};

use super::engine::Work;
use crate::spec::ChurnOrder;

/// A small, fast, seeded generator (xorshift64*); a workload's random choices depend only on
/// its seed and thread index.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        let mut state = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if state == 0 {
            state = 0x2545_f491_4f6c_dd1d;
        }
        let mut rng = Self(state);
        rng.next();
        rng
    }

    #[inline]
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (multiply-shift reduction; `n > 0`).
    #[inline]
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

#[cold]
#[inline(never)]
fn allocation_failed(design: &str, what: &str) -> ! {
    panic!(
        "allocator `{design}` failed {what} during the measurement (out of memory?); the measurement is void"
    )
}

#[inline]
pub(super) fn alloc_one<A: ObjectAlloc>(cache: &A) -> NonNull<u8> {
    match cache.alloc(AllocFlags::empty()) {
        Some(object) => object,
        None => allocation_failed(A::NAME, "an allocation"),
    }
}

/// `churn`: a working set of live objects; each operation frees one and allocates its
/// replacement, the most recent one (LIFO) or one chosen at random. With several caches
/// (LIFO only), each has a working set of its own and the pairs go to them in turn.
pub(crate) struct Churn<'a, A: ObjectAlloc> {
    /// The caches, each with its working set in `live` at the same index.
    caches: Vec<&'a A>,
    /// The working sets; with several caches, each one's most recent object is in `tops`.
    live: Vec<Vec<NonNull<u8>>>,
    /// With several caches: each cache's most recent object, the one its pairs replace.
    tops: Vec<NonNull<u8>>,
    order: ChurnOrder,
    batch: usize,
    rng: Rng,
}

impl<'a, A: ObjectAlloc> Churn<'a, A> {
    pub(crate) fn new(
        caches: Vec<&'a A>,
        order: ChurnOrder,
        working_set: usize,
        batch: usize,
        rng: Rng,
    ) -> Self {
        let mut live: Vec<Vec<NonNull<u8>>> = caches
            .iter()
            .map(|&cache| (0..working_set).map(|_| alloc_one(cache)).collect())
            .collect();
        let tops = if caches.len() > 1 {
            live.iter_mut()
                .map(|set| set.pop().expect("a churn working set holds objects"))
                .collect()
        } else {
            Vec::new()
        };
        Self {
            caches,
            live,
            tops,
            order,
            batch,
            rng,
        }
    }
}

impl<A: ObjectAlloc> Work for Churn<'_, A> {
    #[inline]
    fn unit(&mut self) -> u64 {
        let cache = self.caches[0];
        let live = &mut self.live[0];
        let len = live.len();
        match self.order {
            ChurnOrder::Lifo if self.caches.len() > 1 => {
                churn_lifo_round_robin(&self.caches, &mut self.tops, self.batch);
            }
            ChurnOrder::Lifo => churn_lifo_pairs(cache, live, self.batch),
            ChurnOrder::Random => {
                for _ in 0..self.batch {
                    let i = self.rng.below(len);
                    // SAFETY: `live[i]` is a live object of `cache` held only here; it is
                    // replaced right after, so it is freed once.
                    unsafe { cache.free(live[i]) };
                    live[i] = alloc_one(cache);
                }
            }
        }
        self.batch as u64
    }
}

/// `pairs` LIFO churn pairs on `live`: free its last object and allocate the replacement.
///
/// The measured loop of `churn` in LIFO order, out of line so that every caller runs the same
/// machine code: the criterion benchmark `churn-lifo64/<name>` (crates/cli/benches/pair.rs)
/// calls it too, so that `cargo xtask overhead` compares the two measuring loops around one
/// loop body rather than two compilations of it.
///
/// # Panics
///
/// If `live` is empty, or the allocator fails an allocation (the measurement is void).
#[inline(never)]
pub fn churn_lifo_pairs<A: ObjectAlloc>(cache: &A, live: &mut [NonNull<u8>], pairs: usize) {
    let top = live.last_mut().expect("a churn working set holds objects");
    for _ in 0..pairs {
        // SAFETY: `*top` is a live object of `cache` that only the caller holds; it is
        // replaced right after, so it is freed once.
        unsafe { cache.free(*top) };
        *top = alloc_one(cache);
    }
}

/// `pairs` LIFO churn pairs over several caches in turn: pair `i` frees `tops[i % n]` to
/// `caches[i % n]` and allocates its replacement there (`n` caches, one top object each).
///
/// The measured loop of `churn` with several caches, out of line for the reason
/// [`churn_lifo_pairs`] is.
///
/// # Panics
///
/// If `caches` is empty or `tops` is shorter, or the allocator fails an allocation (the
/// measurement is void).
#[inline(never)]
pub fn churn_lifo_round_robin<A: ObjectAlloc>(
    caches: &[&A],
    tops: &mut [NonNull<u8>],
    pairs: usize,
) {
    assert!(!caches.is_empty() && tops.len() >= caches.len());
    let mut next = 0;
    for _ in 0..pairs {
        let (cache, top) = (caches[next], &mut tops[next]);
        // SAFETY: `*top` is a live object of `cache` that only the caller holds; it is
        // replaced right after, so it is freed once.
        unsafe { cache.free(*top) };
        *top = alloc_one(cache);
        next += 1;
        if next == caches.len() {
            next = 0;
        }
    }
}

impl<A: ObjectAlloc> Drop for Churn<'_, A> {
    fn drop(&mut self) {
        for (i, &cache) in self.caches.iter().enumerate() {
            let top = self.tops.get(i).copied();
            for object in self.live[i].iter().copied().chain(top) {
                // SAFETY: every object of `live[i]` and `tops[i]` is a live object of
                // `caches[i]`, held only here.
                unsafe { cache.free(object) };
            }
        }
    }
}

/// `burst`: `n` allocations, then `n` frees in reverse order.
pub(crate) struct Burst<'a, A: ObjectAlloc> {
    cache: &'a A,
    held: Vec<NonNull<u8>>,
    burst: usize,
}

impl<'a, A: ObjectAlloc> Burst<'a, A> {
    pub(crate) fn new(cache: &'a A, burst: usize) -> Self {
        Self {
            cache,
            held: Vec::with_capacity(burst),
            burst,
        }
    }
}

impl<A: ObjectAlloc> Work for Burst<'_, A> {
    #[inline]
    fn unit(&mut self) -> u64 {
        for _ in 0..self.burst {
            // The capacity was reserved up front: no reallocation here.
            self.held.push(alloc_one(self.cache));
        }
        while let Some(object) = self.held.pop() {
            // SAFETY: popped objects are live, held only here, and popped once.
            unsafe { self.cache.free(object) };
        }
        self.burst as u64
    }
}

/// `prefill-burst`: writes of the maple tree without the tree: each reserves the worst case,
/// takes `used` objects from the sheaf, returns it, then frees the used objects.
pub(crate) struct PrefillBurst<'a, A: ObjectAlloc> {
    cache: &'a A,
    reserve: usize,
    used: Vec<NonNull<u8>>,
    count: usize,
    batch: usize,
}

impl<'a, A: ObjectAlloc> PrefillBurst<'a, A> {
    pub(crate) fn new(cache: &'a A, reserve: usize, used: usize, batch: usize) -> Self {
        Self {
            cache,
            reserve,
            used: Vec::with_capacity(used),
            count: used,
            batch,
        }
    }

    #[inline]
    fn write(&mut self) {
        let mut sheaf = match self.cache.prefill(AllocFlags::empty(), self.reserve) {
            Ok(sheaf) => sheaf,
            Err(_) => allocation_failed(A::NAME, "a prefill"),
        };
        if sheaf.size() < self.reserve {
            allocation_failed(A::NAME, "a prefill: the sheaf holds fewer than requested");
        }
        for _ in 0..self.count {
            match sheaf.alloc(AllocFlags::empty()) {
                Some(object) => self.used.push(object),
                None => allocation_failed(A::NAME, "an allocation from a prefilled sheaf"),
            }
        }
        drop(sheaf);
        while let Some(object) = self.used.pop() {
            // SAFETY: objects taken from the sheaf are ordinary live objects (C-PREFILL-8)
            // held only here.
            unsafe { self.cache.free(object) };
        }
    }
}

impl<A: ObjectAlloc> Work for PrefillBurst<'_, A> {
    #[inline]
    fn unit(&mut self) -> u64 {
        for _ in 0..self.batch {
            self.write();
        }
        self.batch as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_in_range() {
        let mut a = Rng::new(42, 0);
        let mut b = Rng::new(42, 0);
        let mut c = Rng::new(42, 1);
        let xs: Vec<u64> = (0..8).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            seen[a.below(7)] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
