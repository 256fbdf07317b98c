//! The page source of the checks: `slab::LimitedPages` (a byte budget and seeded fault
//! injection over mmap), the instrument of the page-accounting and fault-injection checks.
//!
//! `held_bytes` is 0 after a design has freed every object and shrunk (C-OBJ-5); `set_limit`
//! refuses requests beyond a budget; `fail_with_probability` refuses requests at reproducible
//! points.

use object_alloc::PageSource;

pub(crate) use slab::LimitedPages;

/// Bytes a page source holds now.
pub(crate) trait HeldBytes {
    /// Bytes handed out and not yet returned.
    fn held_bytes(&self) -> usize;
}

impl HeldBytes for LimitedPages {
    fn held_bytes(&self) -> usize {
        self.stats().held_bytes
    }
}
