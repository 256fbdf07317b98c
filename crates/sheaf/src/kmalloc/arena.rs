//! The bootstrap arena: where requests made *from inside* the front-end go.
//!
//! The sheaf caches allocate for themselves (sheaf arrays, slot tables, the fork registry,
//! the `/sys` reads that find the CPUs), and so do the standard library and the C library on
//! the threads that call them. When such a request reaches the front-end while the same
//! thread is already inside it, serving it from a cache could deadlock on a lock the thread
//! holds or recurse without end, so it is served here instead (see `Inside` in the parent
//! module).
//!
//! A small power-of-two allocator under one spin lock: 1 MiB blocks mapped with `mmap` and
//! tagged [`ARENA`](super::radix::ARENA) in the page map, carved by a bump pointer into
//! chunks of 32 B to 64 KiB, each with a 16-byte header holding its class; freed chunks go on
//! per-class lists. Larger or page-aligned requests take the large path, which needs no lock.
//! The lock is held only for list and bump updates (never across a call out), so a thread
//! never waits for it while holding anything, and the fork handlers take it last
//! ([`prepare_fork`]) so that the child finds it free.

use std::hint::spin_loop;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use object_alloc::PAGE_SIZE;

use super::{large, radix};

const BLOCK: usize = 1 << 20;
const HEADER: usize = 16;
const MIN_SHIFT: u32 = 5;
const CLASSES: usize = 12;
/// The largest chunk, header included.
const MAX_CHUNK: usize = 1 << (MIN_SHIFT as usize + CLASSES - 1);

struct State {
    free: [*mut u8; CLASSES],
    bump: usize,
    end: usize,
}

struct Arena {
    locked: AtomicBool,
    state: std::cell::UnsafeCell<State>,
}

// SAFETY: `state` is only reached with `locked` held.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena {
    locked: AtomicBool::new(false),
    state: std::cell::UnsafeCell::new(State {
        free: [ptr::null_mut(); CLASSES],
        bump: 0,
        end: 0,
    }),
};

fn lock() {
    let mut spins = 0u32;
    while ARENA
        .locked
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins < 64 {
            spin_loop();
        } else {
            // `sched_yield` does not allocate.
            std::thread::yield_now();
        }
    }
}

fn unlock() {
    ARENA.locked.store(false, Ordering::Release);
}

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    lock();
    // SAFETY: the lock is held, so this is the only reference to the state.
    let result = f(unsafe { &mut *ARENA.state.get() });
    unlock();
    result
}

/// Allocates `size` bytes aligned to `align`; null when memory cannot be had.
pub(super) fn alloc(size: usize, align: usize) -> *mut u8 {
    if size > MAX_CHUNK - HEADER || align > PAGE_SIZE {
        return large::alloc(size, align, false);
    }
    let class = class_of(size + HEADER);
    let chunk_bytes = 1usize << (class + MIN_SHIFT as usize);
    let chunk = with_state(|state| {
        let head = state.free[class];
        if !head.is_null() && (head.addr() + HEADER).is_multiple_of(align) {
            // SAFETY: a free chunk's first word links to the next free chunk of its class.
            state.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        // The object (after the header) is aligned to `align`.
        let mut start = (state.bump + HEADER).next_multiple_of(align.max(HEADER)) - HEADER;
        if state.bump == 0 || start + chunk_bytes > state.end {
            let Some(block) = large::map(BLOCK) else {
                return ptr::null_mut();
            };
            if radix::set(block.addr(), BLOCK, radix::ARENA).is_err() {
                // SAFETY: mapped just above and never handed out.
                unsafe { large::unmap(block, BLOCK) };
                return ptr::null_mut();
            }
            state.bump = block.expose_provenance();
            state.end = block.addr() + BLOCK;
            start = (state.bump + HEADER).next_multiple_of(align.max(HEADER)) - HEADER;
        }
        state.bump = start + chunk_bytes;
        ptr::with_exposed_provenance_mut(start)
    });
    if chunk.is_null() {
        return chunk;
    }
    // SAFETY: the chunk is `chunk_bytes` of an arena block owned by the caller from now on,
    // and its start is 16-byte aligned.
    unsafe {
        chunk.cast::<usize>().write(class);
        chunk.add(HEADER)
    }
}

fn class_of(bytes: usize) -> usize {
    (bytes
        .max(1 << MIN_SHIFT)
        .next_power_of_two()
        .trailing_zeros()
        - MIN_SHIFT) as usize
}

/// The chunk (header included) of an arena object.
fn chunk_of(object: *mut u8) -> *mut u8 {
    object.wrapping_sub(HEADER)
}

/// Bytes usable at `object`.
///
/// # Safety
///
/// `object` is a live arena object.
pub(super) unsafe fn usable_size(object: *mut u8) -> usize {
    // SAFETY: the header before a live object holds its class.
    let class = unsafe { chunk_of(object).cast::<usize>().read() };
    (1usize << (class + MIN_SHIFT as usize)) - HEADER
}

/// Frees an arena object.
///
/// # Safety
///
/// `object` is a live arena object, not used after this call.
pub(super) unsafe fn free(object: *mut u8) {
    let chunk = chunk_of(object);
    // SAFETY: the header before a live object holds its class.
    let class = unsafe { chunk.cast::<usize>().read() };
    with_state(|state| {
        // SAFETY: the chunk is the caller's to give up; its first word becomes the link.
        unsafe { chunk.cast::<*mut u8>().write(state.free[class]) };
        state.free[class] = chunk;
    });
}

/// `fork` prepare handler: holds the lock across the fork, so that the child never inherits
/// it held by a thread that does not exist there.
pub(super) extern "C" fn prepare_fork() {
    lock();
}

/// `fork` parent and child handler: releases what [`prepare_fork`] took.
pub(super) extern "C" fn after_fork() {
    unlock();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_aligned_reused_and_sized() {
        let a = alloc(100, 8);
        let b = alloc(100, 256);
        assert_eq!(radix::get(a.addr()), radix::ARENA);
        assert!(a.addr().is_multiple_of(16) && b.addr().is_multiple_of(256));
        // SAFETY: live arena objects.
        unsafe {
            assert_eq!(usable_size(a), 128 - HEADER);
            assert!(usable_size(b) >= 100);
            a.write_bytes(0xa5, 100);
            b.write_bytes(0x5a, 100);
            free(a);
        }
        let c = alloc(90, 8);
        assert_eq!(c, a, "a freed chunk of the class is reused first");
        let big = alloc(MAX_CHUNK, 8);
        assert_eq!(radix::get(big.addr()), radix::LARGE);
        // SAFETY: live objects, freed once.
        unsafe {
            free(b);
            free(c);
            large::free(big);
        }
    }
}
