//! Objects under test: stamping each one with a pattern that names it, and verifying the
//! pattern before it is freed.
//!
//! Every byte of an object is written from its *stamp* (thread number and sequence number), so
//! if two live objects overlap, the later write destroys the earlier object's pattern and the
//! verification before its free reports the overlap (C-OBJ-2). Accesses go through volatile raw
//! pointer operations: an overlapping design makes two objects alias, and no Rust reference to
//! object memory is ever formed.

use std::ptr::NonNull;

/// The byte at `offset` of an object stamped `stamp`.
#[inline]
fn pattern_byte(stamp: u64, offset: usize) -> u8 {
    let word = stamp.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (offset as u64 / 8);
    (word >> ((offset % 8) * 8)) as u8 ^ 0x5A
}

/// Writes the pattern of `stamp` over all `size` bytes of `object`.
///
/// # Safety
///
/// - `object` points to at least `size` bytes that this thread may write (a live object).
pub(crate) unsafe fn stamp(object: NonNull<u8>, size: usize, stamp: u64) {
    for offset in 0..size {
        // SAFETY: within the object's `size` bytes, which the caller owns.
        unsafe {
            object
                .as_ptr()
                .add(offset)
                .write_volatile(pattern_byte(stamp, offset))
        };
    }
}

/// Checks the pattern of `stamp` over `size` bytes of `object`; the first differing offset
/// and the bytes there on failure.
///
/// # Safety
///
/// - `object` points to at least `size` readable bytes (a live object).
pub(crate) unsafe fn verify(object: NonNull<u8>, size: usize, stamp: u64) -> Result<(), String> {
    for offset in 0..size {
        // SAFETY: within the object's `size` bytes, which the caller owns.
        let found = unsafe { object.as_ptr().add(offset).read_volatile() };
        let expected = pattern_byte(stamp, offset);
        if found != expected {
            return Err(format!(
                "object {:#x} (stamp {stamp:#x}, {size} bytes) was overwritten while live: byte {offset} \
                 is {found:#04x}, expected {expected:#04x}",
                object.as_ptr() as usize
            ));
        }
    }
    Ok(())
}

/// The first non-zero byte of `object`, if any.
///
/// # Safety
///
/// - `object` points to at least `size` readable bytes.
pub(crate) unsafe fn first_nonzero(object: NonNull<u8>, size: usize) -> Option<(usize, u8)> {
    (0..size).find_map(|offset| {
        // SAFETY: within the object's `size` bytes.
        let byte = unsafe { object.as_ptr().add(offset).read_volatile() };
        (byte != 0).then_some((offset, byte))
    })
}

/// A live object and the stamp written into it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamped {
    pub(crate) object: NonNull<u8>,
    pub(crate) stamp: u64,
}

// SAFETY: a `Stamped` is an address and a number; the checks move live objects between threads
// to free them remotely, which every design must allow (C-OBJ-4).
unsafe impl Send for Stamped {}

// SAFETY: as for `Send`: sharing the address is harmless; the checks access the memory behind it
// only through volatile operations, from one thread at a time, or read-only.
unsafe impl Sync for Stamped {}

/// Where overlapping ranges were found among `objects` of `size` bytes: the first pair.
pub(crate) fn first_overlap(objects: &[NonNull<u8>], size: usize) -> Option<(usize, usize)> {
    let mut addresses: Vec<usize> = objects.iter().map(|o| o.as_ptr() as usize).collect();
    addresses.sort_unstable();
    addresses
        .windows(2)
        .find(|pair| pair[1] < pair[0] + size)
        .map(|pair| (pair[0], pair[1]))
}

/// The first address that appears twice in `objects`.
pub(crate) fn first_duplicate(objects: &[NonNull<u8>]) -> Option<usize> {
    let mut addresses: Vec<usize> = objects.iter().map(|o| o.as_ptr() as usize).collect();
    addresses.sort_unstable();
    addresses
        .windows(2)
        .find(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
}
