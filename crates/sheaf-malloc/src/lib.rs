//! `libsheaf_malloc.so`: the C allocator interface on [`sheaf::Kmalloc`], for `LD_PRELOAD`.
//!
//! ```text
//! LD_PRELOAD=target/release/libsheaf_malloc.so some-program
//! ```
//!
//! Exports `malloc`, `free`, `calloc`, `realloc`, `posix_memalign`, `aligned_alloc`,
//! `memalign`, `valloc`, `pvalloc`, `malloc_usable_size` and `malloc_trim` with the C
//! library's semantics:
//!
//! - `malloc(0)` returns a unique pointer; `free(NULL)` does nothing.
//! - `calloc` whose product overflows, and every request that cannot be met, returns null
//!   with `errno` set to `ENOMEM`.
//! - `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and returns null (as glibc
//!   does); a failed `realloc` leaves `p` untouched.
//! - `posix_memalign` refuses an alignment that is not a power of two multiple of
//!   `sizeof(void *)` with `EINVAL` (returned, `errno` untouched); `aligned_alloc` and
//!   `memalign` refuse one that is not a power of two with null and `errno` `EINVAL`.
//! - `malloc_usable_size(p)` is at least what was asked for (the size class, for class
//!   objects), and 0 for null.
//! - `malloc_trim(pad)` gives back to the system the memory the heap keeps for reuse
//!   ([`Kmalloc::trim`]: empty slabs, the freed slab chunks kept per class within a shared
//!   budget of 16 MiB, cached large mappings) and returns 1 if it unmapped anything, else 0;
//!   `pad` is ignored.
//!
//! The library's own Rust code allocates through the same heap (its global allocator is
//! `Kmalloc`), and the heap serves its own nested requests from a bootstrap arena, so nothing
//! recurses. [`sheaf_malloc_is_loaded`] lets a test check that the library is the one in use.

use std::ffi::{c_int, c_void};
use std::ptr;

use sheaf::Kmalloc;

#[global_allocator]
static GLOBAL: Kmalloc = Kmalloc::new();

/// What C's `malloc` guarantees: alignment for any fundamental type (`max_align_t`).
const MIN_ALIGN: usize = 16;
const PAGE: usize = 4096;

fn set_errno(value: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's `errno`.
    unsafe { *libc::__errno_location() = value };
}

/// The alignment C's `malloc` gives a request of `size` bytes: 16, or less for a request too
/// small to hold a type that needs 16 (which lets 8-byte requests use the 8-byte class).
fn natural_align(size: usize) -> usize {
    if size <= 8 { 8 } else { MIN_ALIGN }
}

fn or_enomem(object: *mut u8) -> *mut c_void {
    if object.is_null() {
        set_errno(libc::ENOMEM);
    }
    object.cast()
}

/// Returns 1: a program can look this symbol up to check that the library is preloaded.
#[unsafe(no_mangle)]
pub extern "C" fn sheaf_malloc_is_loaded() -> c_int {
    1
}

/// C `malloc`.
#[unsafe(no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    or_enomem(GLOBAL.alloc(size, natural_align(size)))
}

/// C `free`.
///
/// # Safety
///
/// `object` is null or a live allocation of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(object: *mut c_void) {
    // SAFETY: the caller's contract.
    unsafe { GLOBAL.free(object.cast()) }
}

/// C `calloc`.
#[unsafe(no_mangle)]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    let align = natural_align(count.saturating_mul(size));
    or_enomem(GLOBAL.alloc_zeroed(count, size, align))
}

/// C `realloc`.
///
/// # Safety
///
/// `object` is null or a live allocation of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(object: *mut c_void, size: usize) -> *mut c_void {
    if size == 0 && !object.is_null() {
        // SAFETY: the caller's contract.
        unsafe { GLOBAL.free(object.cast()) };
        return ptr::null_mut();
    }
    // SAFETY: the caller's contract; `natural_align` never exceeds what `malloc` gave.
    or_enomem(unsafe { GLOBAL.realloc(object.cast(), size, natural_align(size)) })
}

/// C `posix_memalign`.
///
/// # Safety
///
/// `out` is valid for a pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align < size_of::<*mut c_void>() {
        return libc::EINVAL;
    }
    let object = GLOBAL.alloc(size, align);
    if object.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's contract.
    unsafe { out.write(object.cast()) };
    0
}

/// C11 `aligned_alloc`.
#[unsafe(no_mangle)]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    or_enomem(GLOBAL.alloc(size, align.max(natural_align(size))))
}

/// The obsolete `memalign`.
#[unsafe(no_mangle)]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    aligned_alloc(align, size)
}

/// The obsolete `valloc`: page aligned.
#[unsafe(no_mangle)]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    aligned_alloc(PAGE, size)
}

/// The obsolete `pvalloc`: page aligned, the size rounded up to whole pages.
#[unsafe(no_mangle)]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_next_multiple_of(PAGE) {
        Some(size) => aligned_alloc(PAGE, size),
        None => or_enomem(ptr::null_mut()),
    }
}

/// `malloc_usable_size`.
///
/// # Safety
///
/// `object` is null or a live allocation of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(object: *mut c_void) -> usize {
    // SAFETY: the caller's contract.
    unsafe { GLOBAL.usable_size(object.cast()) }
}

/// `malloc_trim`: returns the memory the heap keeps for reuse to the system; 1 if some was
/// unmapped, else 0. `pad` is ignored (the heap keeps no top of heap to leave padding at).
#[unsafe(no_mangle)]
pub extern "C" fn malloc_trim(pad: usize) -> c_int {
    let _ = pad;
    c_int::from(GLOBAL.trim() > 0)
}
