//! The prefilled-sheaf handle, and its emulation for designs without a native one.
//!
//! A prefill borrows a set of at least `n` objects from a cache so that the next `n`
//! allocations from it cannot fail, whatever else happens to the cache: the Linux maple tree
//! reserves its worst case this way before a write it may not interrupt.

use std::fmt;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use crate::{AllocError, AllocFlags, ObjectAlloc};

/// A prefilled sheaf: objects reserved for allocations that must not fail.
///
/// Contract clauses C-PREFILL-1..8, C-REFILL-1..4 and C-RETURN-1..4 apply. Dropping the handle
/// returns it with empty flags; [`Prefill::return_with`] returns it with chosen flags.
pub trait Prefill {
    /// Takes one object, or `None` when [`Prefill::size`] is 0 (never falls back to the
    /// cache, C-PREFILL-3). `ZERO` in `flags` zeroes the object; other flags are ignored.
    fn alloc(&mut self, flags: AllocFlags) -> Option<NonNull<u8>>;

    /// Objects still held.
    fn size(&self) -> usize;

    /// Objects the sheaf can hold without being replaced.
    fn capacity(&self) -> usize;

    /// Tops the sheaf up to at least `count` objects (C-REFILL-1..4). On failure the sheaf is
    /// exactly as it was.
    fn refill(&mut self, flags: AllocFlags, count: usize) -> Result<(), AllocError>;

    /// Gives the sheaf back to its cache; under `NOWAIT` the return never grows the cache.
    fn return_with(self, flags: AllocFlags)
    where
        Self: Sized;
}

/// Objects a [`BulkPrefill`] keeps inline before it spills to the heap: enough for the maple
/// tree's worst case at any realistic height, so the emulation itself allocates nothing.
pub const BULK_PREFILL_INLINE: usize = 64;

/// The most objects a [`BulkPrefill`] reserves: a larger prefill or refill is refused with
/// [`AllocError::TooLarge`] instead of sizing an array of pointers beyond what can exist.
pub const BULK_PREFILL_MAX: usize = 1 << 24;

/// Prefill emulated with [`ObjectAlloc::alloc_bulk`] and [`ObjectAlloc::free_bulk`], for
/// designs without a native prefill API.
///
/// Prefilling `n` bulk-allocates exactly `n` objects; refilling bulk-allocates the shortfall;
/// returning bulk-frees what is left. The objects are kept inline up to
/// [`BULK_PREFILL_INLINE`], so the emulation adds no allocation of its own.
pub struct BulkPrefill<'a, A: ObjectAlloc> {
    cache: &'a A,
    object_size: usize,
    capacity: usize,
    len: usize,
    inline: [MaybeUninit<NonNull<u8>>; BULK_PREFILL_INLINE],
    heap: Vec<NonNull<u8>>,
}

impl<'a, A: ObjectAlloc> BulkPrefill<'a, A> {
    /// Reserves `count` objects from `cache`, whose objects are `object_size` bytes; the
    /// handle's capacity is `max(count, capacity)`. A `count` above [`BULK_PREFILL_MAX`] is
    /// refused with [`AllocError::TooLarge`].
    pub fn new(
        cache: &'a A,
        object_size: usize,
        capacity: usize,
        flags: AllocFlags,
        count: usize,
    ) -> Result<Self, AllocError> {
        let mut sheaf = Self {
            cache,
            object_size,
            capacity: capacity.max(count),
            len: 0,
            inline: [MaybeUninit::uninit(); BULK_PREFILL_INLINE],
            heap: Vec::new(),
        };
        sheaf.grow_to(flags, count)?;
        Ok(sheaf)
    }

    /// Bulk-allocates the objects missing to reach `count`; all or nothing.
    fn grow_to(&mut self, flags: AllocFlags, count: usize) -> Result<(), AllocError> {
        if count <= self.len {
            return Ok(());
        }
        if count > BULK_PREFILL_MAX {
            return Err(AllocError::TooLarge {
                requested: count,
                limit: BULK_PREFILL_MAX,
            });
        }
        let missing = count - self.len;
        let flags = flags - AllocFlags::ZERO;
        if count <= BULK_PREFILL_INLINE && self.heap.is_empty() {
            self.cache
                .alloc_bulk(flags, &mut self.inline[self.len..count])?;
        } else {
            if self.heap.is_empty() {
                let mut heap = Vec::with_capacity(count.max(self.capacity));
                // SAFETY: the first `len` inline slots were initialised by an earlier bulk
                // allocation.
                heap.extend(
                    self.inline[..self.len]
                        .iter()
                        .map(|slot| unsafe { slot.assume_init() }),
                );
                self.heap = heap;
            }
            self.heap.reserve(missing);
            let spare = &mut self.heap.spare_capacity_mut()[..missing];
            self.cache.alloc_bulk(flags, spare)?;
            // SAFETY: `alloc_bulk` succeeded, so it initialised all `missing` spare slots.
            unsafe { self.heap.set_len(count) };
        }
        self.len = count;
        Ok(())
    }

    fn objects(&self) -> &[NonNull<u8>] {
        if self.heap.is_empty() {
            // SAFETY: the first `len` inline slots are initialised, and `MaybeUninit<T>` has
            // the layout of `T`.
            unsafe { std::slice::from_raw_parts(self.inline.as_ptr().cast(), self.len) }
        } else {
            &self.heap[..self.len]
        }
    }

    fn release(&mut self) {
        if self.len > 0 {
            let objects = self.objects();
            // SAFETY: the held objects came from `cache` and were never handed out.
            unsafe { self.cache.free_bulk(objects) };
        }
        self.len = 0;
        self.heap.clear();
    }
}

impl<A: ObjectAlloc> Prefill for BulkPrefill<'_, A> {
    #[inline]
    fn alloc(&mut self, flags: AllocFlags) -> Option<NonNull<u8>> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        let object = if self.heap.is_empty() {
            // SAFETY: slot `len` was initialised and is now taken out of the held range.
            unsafe { self.inline[self.len].assume_init() }
        } else {
            self.heap.pop().expect("heap holds `len` objects")
        };
        if flags.zero() {
            // SAFETY: the object is `object_size` writable bytes that now belong to the caller.
            unsafe { object.as_ptr().write_bytes(0, self.object_size) };
        }
        Some(object)
    }

    #[inline]
    fn size(&self) -> usize {
        self.len
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn refill(&mut self, flags: AllocFlags, count: usize) -> Result<(), AllocError> {
        self.grow_to(flags, count)?;
        self.capacity = self.capacity.max(count);
        Ok(())
    }

    fn return_with(mut self, _flags: AllocFlags) {
        self.release();
    }
}

impl<A: ObjectAlloc> Drop for BulkPrefill<'_, A> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<A: ObjectAlloc> fmt::Debug for BulkPrefill<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkPrefill")
            .field("cache", &A::NAME)
            .field("size", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}
