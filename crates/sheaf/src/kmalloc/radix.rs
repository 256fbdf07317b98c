//! The page map: one tag byte per 4 KiB page of the address space that says who owns the
//! page, so that `free` finds an object's allocator from the pointer alone.
//!
//! Slabs of different size classes have different sizes (4 KiB to 1 MiB, chosen by
//! `slab::SlabLayout`), so masking a pointer cannot tell which class it belongs to without
//! knowing the class first. The map answers that question: a class's page source tags every
//! page of each slab it hands out, the large path tags the first page of each mapping, and the
//! bootstrap arena tags its blocks.
//!
//! Two levels: a static table of 2^17 leaf pointers (one per GiB of the 47-bit user address
//! space, 1 MiB of zero-initialised memory that the kernel maps only where touched) and leaves
//! of 2^18 tag bytes (256 KiB each, mapped on first use with `mmap`, never freed). Nothing
//! here allocates through the process allocator, and nothing takes a lock: a new leaf is
//! installed with a compare-exchange.
//!
//! A tag is written before the memory it describes is handed out and cleared before the
//! memory is unmapped, so a pointer the allocator handed out always reads its own tag.

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use object_alloc::PAGE_SIZE;

/// Page not owned by the front-end (or the address is outside the map).
pub(super) const NONE: u8 = 0;
/// First page of a large (directly mapped) allocation.
pub(super) const LARGE: u8 = 0x40;
/// Page of a bootstrap arena block.
pub(super) const ARENA: u8 = 0x80;

const PAGE_SHIFT: u32 = PAGE_SIZE.trailing_zeros();
const LEAF_SHIFT: u32 = 30;
const ADDRESS_BITS: u32 = 47;
const LEAF_ENTRIES: usize = 1 << (LEAF_SHIFT - PAGE_SHIFT);
const ROOT_ENTRIES: usize = 1 << (ADDRESS_BITS - LEAF_SHIFT);

static ROOT: [AtomicPtr<AtomicU8>; ROOT_ENTRIES] =
    [const { AtomicPtr::new(ptr::null_mut()) }; ROOT_ENTRIES];

/// The tag of the page holding `addr` ([`NONE`] if it was never tagged).
#[inline]
pub(super) fn get(addr: usize) -> u8 {
    let Some(root) = ROOT.get(addr >> LEAF_SHIFT) else {
        return NONE;
    };
    let leaf = root.load(Ordering::Acquire);
    if leaf.is_null() {
        return NONE;
    }
    let index = (addr >> PAGE_SHIFT) & (LEAF_ENTRIES - 1);
    // SAFETY: a non-null root entry points at a leaf of `LEAF_ENTRIES` tags that is never
    // unmapped, and `index < LEAF_ENTRIES`.
    unsafe { &*leaf.add(index) }.load(Ordering::Relaxed)
}

/// Tags every page of `[addr, addr + bytes)` with `tag`. Fails (tagging nothing) only when
/// the range lies outside the map or a leaf cannot be mapped.
pub(super) fn set(addr: usize, bytes: usize, tag: u8) -> Result<(), ()> {
    let end = addr.checked_add(bytes).ok_or(())?;
    if bytes == 0 || (end - 1) >> LEAF_SHIFT >= ROOT_ENTRIES {
        return Err(());
    }
    if tag != NONE {
        // Map every leaf first, so that a failure leaves no page half-tagged.
        for root in (addr >> LEAF_SHIFT)..=((end - 1) >> LEAF_SHIFT) {
            leaf(root, true).ok_or(())?;
        }
    }
    let mut page = addr >> PAGE_SHIFT;
    while page << PAGE_SHIFT < end {
        let root = page >> (LEAF_SHIFT - PAGE_SHIFT);
        if let Some(leaf) = leaf(root, false) {
            // SAFETY: as in `get`.
            unsafe { &*leaf.add(page & (LEAF_ENTRIES - 1)) }.store(tag, Ordering::Relaxed);
        }
        page += 1;
    }
    Ok(())
}

/// The leaf for root entry `root`, mapped now if `create` is set and there is none.
fn leaf(root: usize, create: bool) -> Option<*mut AtomicU8> {
    let slot = &ROOT[root];
    let leaf = slot.load(Ordering::Acquire);
    if !leaf.is_null() || !create {
        return (!leaf.is_null()).then_some(leaf);
    }
    let fresh = super::large::map(LEAF_ENTRIES)?.cast::<AtomicU8>();
    match slot.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(fresh),
        Err(winner) => {
            // SAFETY: `fresh` was mapped just above with this length and never published.
            unsafe { super::large::unmap(fresh.cast(), LEAF_ENTRIES) };
            Some(winner)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_cover_exactly_the_range() {
        // An address range no test maps: only the map's bytes are touched.
        let base = 0x5a5a_0000_0000usize;
        set(base, 3 * PAGE_SIZE, 7).unwrap();
        assert_eq!(get(base), 7);
        assert_eq!(get(base + 3 * PAGE_SIZE - 1), 7);
        assert_eq!(get(base + 3 * PAGE_SIZE), NONE);
        assert_eq!(get(base - 1), NONE);
        set(base, 3 * PAGE_SIZE, NONE).unwrap();
        assert_eq!(get(base + PAGE_SIZE), NONE);
        assert!(set(1 << 47, PAGE_SIZE, 1).is_err());
        assert_eq!(get(usize::MAX), NONE);
    }
}
