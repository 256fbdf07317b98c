//! [`PrefilledSheaf`]: objects reserved for allocations that must not fail.

use std::fmt;
use std::mem;
use std::ptr::NonNull;

use object_alloc::{AllocError, AllocFlags, Prefill};

use crate::cache_core::CacheCore;
use crate::sheaf::OwnedSheaf;
use crate::slot::{PerCpu, SlotStrategy};

/// A sheaf borrowed from a [`Cache`](crate::Cache) with [`Cache::prefill`](crate::Cache::prefill):
/// the analog of the kernel's `kmem_cache_prefill_sheaf`.
///
/// - [`PrefilledSheaf::alloc`] takes an object and never fails while [`size`](Self::size) is
///   above zero, whatever other threads do and even with the page source exhausted
///   (C-PREFILL-2); at zero it returns `None` and never falls back to the cache (C-PREFILL-3).
/// - [`PrefilledSheaf::refill`] tops it up in place (C-REFILL-*).
/// - Dropping it, or [`PrefilledSheaf::return_with`], gives it back (C-RETURN-*).
///
/// Objects still in the sheaf count as live in [`Cache::stats`](crate::Cache::stats) while it
/// is out: they belong to its holder until it is returned.
pub struct PrefilledSheaf<'c, S: SlotStrategy = PerCpu> {
    core: &'c CacheCore<S>,
    sheaf: OwnedSheaf,
}

impl<'c, S: SlotStrategy> PrefilledSheaf<'c, S> {
    pub(crate) fn new(core: &'c CacheCore<S>, sheaf: OwnedSheaf) -> Self {
        Self { core, sheaf }
    }

    /// Takes one object (`kmem_cache_alloc_from_sheaf`), or `None` when the sheaf is empty.
    /// `ZERO` zeroes it; other flags are ignored.
    #[inline]
    pub fn alloc(&mut self, flags: AllocFlags) -> Option<NonNull<u8>> {
        let object = self.sheaf.pop()?;
        if flags.zero() {
            // SAFETY: the object spans `object_size` writable bytes and is now the caller's.
            unsafe { object.as_ptr().write_bytes(0, self.core.object_size()) };
        }
        Some(object)
    }

    /// Objects still held (`kmem_cache_sheaf_size`).
    #[inline]
    pub fn size(&self) -> usize {
        self.sheaf.size()
    }

    /// Objects the sheaf can hold without being replaced: the cache's sheaf capacity, or the
    /// request of an oversize prefill.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.sheaf.capacity()
    }

    /// Tops the sheaf up to at least `count` objects (`kmem_cache_refill_sheaf`), in place:
    /// the handle stays valid. Nothing happens when it holds enough (C-REFILL-1); up to its
    /// capacity it is topped up (C-REFILL-2); beyond, it is replaced by an oversize sheaf and
    /// the old one's objects return to the cache (C-REFILL-3). On failure the sheaf is exactly
    /// as it was (C-REFILL-4).
    pub fn refill(&mut self, flags: AllocFlags, count: usize) -> Result<(), AllocError> {
        self.core.refill(&mut self.sheaf, flags, count)
    }

    /// Gives the sheaf back (`kmem_cache_return_sheaf`). It becomes the CPU's spare when that
    /// slot has none; otherwise, if the barn has room, it is topped up to capacity and kept
    /// there; otherwise (or if topping up would need new pages under `NOWAIT`) it is flushed
    /// and freed (C-RETURN-1..4).
    pub fn return_with(mut self, flags: AllocFlags) {
        let sheaf = mem::replace(&mut self.sheaf, OwnedSheaf::none());
        self.core.return_sheaf(sheaf, flags);
    }
}

impl<S: SlotStrategy> Drop for PrefilledSheaf<'_, S> {
    fn drop(&mut self) {
        let sheaf = mem::replace(&mut self.sheaf, OwnedSheaf::none());
        if !sheaf.is_none() {
            self.core.return_sheaf(sheaf, AllocFlags::empty());
        }
    }
}

impl<S: SlotStrategy> Prefill for PrefilledSheaf<'_, S> {
    #[inline]
    fn alloc(&mut self, flags: AllocFlags) -> Option<NonNull<u8>> {
        PrefilledSheaf::alloc(self, flags)
    }

    #[inline]
    fn size(&self) -> usize {
        PrefilledSheaf::size(self)
    }

    fn capacity(&self) -> usize {
        PrefilledSheaf::capacity(self)
    }

    fn refill(&mut self, flags: AllocFlags, count: usize) -> Result<(), AllocError> {
        PrefilledSheaf::refill(self, flags, count)
    }

    fn return_with(self, flags: AllocFlags) {
        PrefilledSheaf::return_with(self, flags)
    }
}

impl<S: SlotStrategy> fmt::Debug for PrefilledSheaf<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefilledSheaf")
            .field("size", &self.size())
            .field("capacity", &self.capacity())
            .finish()
    }
}
