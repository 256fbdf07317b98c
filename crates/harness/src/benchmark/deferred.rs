//! `deferred-churn`: writers replace published objects and free the old ones deferred;
//! readers read them inside read-side sections and check each object's sentinel.
//!
//! Ownership: every published object lives in the shared published array; the writer that
//! replaces it frees it (deferred), and [`Published::free_all`] frees the rest at the end.

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use object_alloc::{ObjectAlloc, rcu};

use super::engine::Work;
use super::kinds::{Rng, alloc_one};

/// The sentinel a `deferred-churn` object of slot `i` carries in its first word.
#[inline]
fn sentinel(slot: usize) -> u64 {
    0x5eaf_0000_0000_0000 ^ slot as u64
}

/// The published objects of `deferred-churn`.
pub(crate) struct Published {
    pub(crate) slots: Box<[AtomicPtr<u8>]>,
    /// Reads that found an object whose sentinel was overwritten (must stay 0: C-DEFER-1).
    pub(crate) broken_reads: AtomicU64,
}

impl Published {
    pub(crate) fn new<A: ObjectAlloc>(cache: &A, slots: usize) -> Self {
        let slots = (0..slots)
            .map(|i| {
                let object = alloc_one(cache);
                // SAFETY: at least 8 bytes (validated for this kind), owned until published.
                unsafe { object.as_ptr().cast::<u64>().write_unaligned(sentinel(i)) };
                AtomicPtr::new(object.as_ptr())
            })
            .collect();
        Self {
            slots,
            broken_reads: AtomicU64::new(0),
        }
    }

    /// Frees every published object; no reader or writer may be running.
    pub(crate) fn free_all<A: ObjectAlloc>(&self, cache: &A) {
        for slot in self.slots.iter() {
            if let Some(object) = NonNull::new(slot.swap(ptr::null_mut(), Ordering::AcqRel)) {
                // SAFETY: the object was published and is now unreachable; no reader runs.
                unsafe { cache.free(object) };
            }
        }
    }
}

/// A `deferred-churn` writer: replaces random published objects of its own share and frees
/// the old ones with `free_deferred`.
///
/// Each writer owns a disjoint range of the slots, so a slot has one updater and an update is
/// a plain load and a release store: the kernel's `rcu_assign_pointer` under the update-side
/// lock, not an atomic exchange (whose locked instruction would also wait for the sentinel's
/// store into a cold object, and cost more than the allocator).
pub(crate) struct Writer<'a, A: ObjectAlloc> {
    cache: &'a A,
    published: &'a Published,
    /// The first slot of this writer's share.
    first: usize,
    /// The number of slots in this writer's share (at least one).
    share: usize,
    batch: usize,
    rng: Rng,
}

impl<'a, A: ObjectAlloc> Writer<'a, A> {
    /// Writer `writer` of `writers` (the spec checks there are no more writers than slots).
    pub(crate) fn new(
        cache: &'a A,
        published: &'a Published,
        (writer, writers): (usize, usize),
        batch: usize,
        rng: Rng,
    ) -> Self {
        let slots = published.slots.len();
        let first = slots * writer / writers;
        let end = slots * (writer + 1) / writers;
        assert!(first < end, "{writers} writers for {slots} slots");
        Self {
            cache,
            published,
            first,
            share: end - first,
            batch,
            rng,
        }
    }
}

impl<A: ObjectAlloc> Work for Writer<'_, A> {
    #[inline]
    fn unit(&mut self) -> u64 {
        let slots = &self.published.slots;
        for _ in 0..self.batch {
            let i = self.first + self.rng.below(self.share);
            let object = alloc_one(self.cache);
            // SAFETY: at least 8 bytes, owned by this thread until the store publishes it.
            unsafe { object.as_ptr().cast::<u64>().write_unaligned(sentinel(i)) };
            // Only this writer stores to slot `i` while threads run.
            let old = slots[i].load(Ordering::Relaxed);
            slots[i].store(object.as_ptr(), Ordering::Release);
            let old = NonNull::new(old).expect("published slots are never null while running");
            // SAFETY: `old` was unpublished by the store (no new reference can be taken), it
            // is live, and readers that still see it are inside read-side sections.
            unsafe { self.cache.free_deferred(old) };
        }
        self.batch as u64
    }
}

/// A `deferred-churn` reader: reads random published objects inside a read-side section and
/// checks their sentinel.
pub(crate) struct Reader<'a> {
    published: &'a Published,
    reads_per_section: usize,
    rng: Rng,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(published: &'a Published, reads_per_section: usize, rng: Rng) -> Self {
        Self {
            published,
            reads_per_section,
            rng,
        }
    }
}

impl Work for Reader<'_> {
    #[inline]
    fn unit(&mut self) -> u64 {
        let slots = &self.published.slots;
        let mut broken = 0;
        {
            let _section = rcu::read();
            for _ in 0..self.reads_per_section {
                let i = self.rng.below(slots.len());
                let object = slots[i].load(Ordering::Acquire);
                // SAFETY: the pointer was published (non-null while threads run), its first
                // 8 bytes were written before publication (Release store, Acquire load), and
                // this section began before any `free_deferred` of it could complete, so the
                // object is not reused until the section ends (C-DEFER-1).
                let word = unsafe { ptr::read_unaligned(object.cast::<u64>()) };
                if word != sentinel(i) {
                    broken += 1;
                }
            }
        }
        if broken > 0 {
            self.published
                .broken_reads
                .fetch_add(broken, Ordering::Relaxed);
        }
        self.reads_per_section as u64
    }
}
