//! Allocation flags: the userspace rendering of the GFP bits the prefill API cares about.

use bitflags::bitflags;

bitflags! {
    /// Flags that modify one allocation, refill or return.
    ///
    /// The empty set is the ordinary case: the cache may grow (take new pages from its page
    /// source) to satisfy the request.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct AllocFlags: u32 {
        /// The request may not grow the cache: no new pages are taken from the page source,
        /// so it is served from objects already cached or in partially used slabs, or fails.
        /// The analog of a GFP mask without direct reclaim and without the right to grow.
        const NOWAIT = 1 << 0;
        /// The object is handed out with every byte of its configured size set to zero
        /// (`__GFP_ZERO`), even when its memory was used before.
        const ZERO = 1 << 1;
    }
}

impl AllocFlags {
    /// Whether the request may take new pages from the page source.
    #[inline]
    pub fn may_grow(self) -> bool {
        !self.contains(Self::NOWAIT)
    }

    /// Whether the object must be zeroed before it is handed out.
    #[inline]
    pub fn zero(self) -> bool {
        self.contains(Self::ZERO)
    }
}
