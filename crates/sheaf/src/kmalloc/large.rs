//! Large allocations: requests above the largest size class, or aligned beyond a page, are
//! mapped on their own, as the kernel's `kmalloc` hands large requests to the page allocator.
//!
//! A mapping starts with one header page; the object starts at the first multiple of its
//! alignment after it, and the 16 bytes just before the object record the mapping's base and
//! length. The object's first page carries the [`LARGE`](super::radix::LARGE) tag.
//! Nothing here takes a lock or allocates through the process allocator.

use std::ptr::{self, NonNull};

use object_alloc::PAGE_SIZE;
use rustix::mm::{MapFlags, MremapFlags, ProtFlags, mmap_anonymous, mremap, munmap};

use super::radix;

/// Where a large object's mapping lies, stored just before the object.
#[derive(Clone, Copy)]
#[repr(C)]
struct Header {
    base: usize,
    len: usize,
}

const HEADER: usize = size_of::<Header>();

/// A fresh private anonymous read-write mapping of `bytes` (a multiple of the page size).
pub(super) fn map(bytes: usize) -> Option<*mut u8> {
    // SAFETY: a new anonymous private mapping at an address the kernel chooses aliases
    // nothing.
    let raw = unsafe {
        mmap_anonymous(
            ptr::null_mut(),
            bytes,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .ok()?;
    Some(raw.cast())
}

/// Unmaps `[addr, addr + bytes)`.
///
/// # Safety
///
/// The range was mapped by [`map`] (or is a whole-page part of such a mapping), and nothing
/// refers to it any more.
pub(super) unsafe fn unmap(addr: *mut u8, bytes: usize) {
    // SAFETY: the caller's contract. A failed unmap leaves the range mapped and unused: a
    // leak, never a fault.
    let _ = unsafe { munmap(addr.cast(), bytes) };
}

/// Maps an object of `size` bytes aligned to `align` (a power of two); null when the
/// system refuses or the size overflows.
pub(super) fn alloc(size: usize, align: usize) -> *mut u8 {
    let align = align.max(PAGE_SIZE);
    // At least one page of body, so that the tagged first page lies inside the mapping.
    let Some(len) = size
        .max(1)
        .checked_next_multiple_of(PAGE_SIZE)
        .and_then(|body| body.checked_add(PAGE_SIZE + (align - PAGE_SIZE)))
        .filter(|&len| len <= isize::MAX as usize)
    else {
        return ptr::null_mut();
    };
    let Some(base) = map(len) else {
        return ptr::null_mut();
    };
    let object = (base.addr() + PAGE_SIZE).next_multiple_of(align);
    if radix::set(object, PAGE_SIZE, radix::LARGE).is_err() {
        // SAFETY: mapped just above, never handed out.
        unsafe { unmap(base, len) };
        return ptr::null_mut();
    }
    let object = base.with_addr(object);
    // SAFETY: the header page lies inside the mapping, before `object`, which is page aligned.
    unsafe {
        write_header(
            object,
            Header {
                base: base.addr(),
                len,
            },
        )
    };
    object
}

/// # Safety
///
/// `object` is a page-aligned address inside a mapping whose previous page is also mapped.
unsafe fn write_header(object: *mut u8, header: Header) {
    // SAFETY: the caller's contract; the 16 bytes before a page-aligned object are aligned.
    unsafe { object.sub(HEADER).cast::<Header>().write(header) }
}

/// # Safety
///
/// `object` is a live large object.
unsafe fn header(object: *mut u8) -> Header {
    // SAFETY: written by `alloc` or `realloc`, and the header page stays mapped while the
    // object lives.
    unsafe { object.sub(HEADER).cast::<Header>().read() }
}

/// Bytes usable at `object`: up to the end of its mapping.
///
/// # Safety
///
/// `object` is a live large object.
pub(super) unsafe fn usable_size(object: *mut u8) -> usize {
    // SAFETY: forwarded.
    let header = unsafe { header(object) };
    header.base + header.len - object.addr()
}

/// Unmaps a large object.
///
/// # Safety
///
/// `object` is a live large object, not used after this call.
pub(super) unsafe fn free(object: *mut u8) {
    // SAFETY: forwarded.
    let header = unsafe { header(object) };
    // The tag goes first: once unmapped, the address may be handed out by anyone.
    let _ = radix::set(object.addr(), PAGE_SIZE, radix::NONE);
    // SAFETY: the whole mapping belonged to this object, which the caller gives up.
    unsafe { unmap(object.with_addr(header.base), header.len) };
}

/// Resizes a page-aligned large object to `size` bytes with `mremap` (moving it if the
/// kernel must, without copying); `None` if the object is aligned beyond a page (its offset in
/// a moved mapping would change) or the kernel refuses, and then the object is unchanged.
///
/// # Safety
///
/// `object` is a live large object; on success the caller uses only the returned pointer.
pub(super) unsafe fn resize(object: *mut u8, size: usize) -> Option<NonNull<u8>> {
    // SAFETY: forwarded.
    let header = unsafe { header(object) };
    if header.base + PAGE_SIZE != object.addr() {
        return None;
    }
    let len = size
        .max(1)
        .checked_next_multiple_of(PAGE_SIZE)?
        .checked_add(PAGE_SIZE)
        .filter(|&len| len <= isize::MAX as usize)?;
    if len == header.len {
        return NonNull::new(object);
    }
    let base = object.with_addr(header.base);
    // The old tag goes first: once the kernel moves the mapping, the old address may be
    // mapped and tagged by anyone.
    let _ = radix::set(object.addr(), PAGE_SIZE, radix::NONE);
    // SAFETY: `[base, base + len)` is this object's whole mapping, which the caller owns; a
    // moved mapping leaves nothing at the old address that anyone refers to.
    let moved = unsafe { mremap(base.cast(), header.len, len, MremapFlags::MAYMOVE) };
    let Ok(moved) = moved else {
        // The mapping is unchanged; the tag cannot fail to return (its leaf exists).
        let _ = radix::set(object.addr(), PAGE_SIZE, radix::LARGE);
        return None;
    };
    let moved = moved.cast::<u8>();
    let new_object = moved.wrapping_add(PAGE_SIZE);
    // Tagging fails only when no leaf of the page map can be mapped; the object is then kept
    // untagged (`free` leaks it) rather than lost while the caller holds it.
    let _ = radix::set(new_object.addr(), PAGE_SIZE, radix::LARGE);
    // SAFETY: the new mapping starts with its header page, and the object is page aligned.
    unsafe {
        write_header(
            new_object,
            Header {
                base: moved.addr(),
                len,
            },
        )
    };
    NonNull::new(new_object)
}
