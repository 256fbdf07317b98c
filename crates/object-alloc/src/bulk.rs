//! Bulk allocation built from single allocations, all or nothing (C-BULK-1).
//!
//! A design without a batch path of its own (a general-purpose allocator) fills a bulk request
//! one object at a time. The only subtle part is the failure path: when the `k`-th allocation
//! fails, the `k - 1` objects already gathered must go back before the error is returned, so
//! that a failed bulk allocation allocates nothing. [`alloc_bulk_with`] is that loop, written
//! once for every such design; [`alloc_each`] and [`free_each`] apply it, and the plain free
//! loop, to a design's own `alloc` and `free`.
//!
//! Invariant: on return with an error, every object `alloc` produced during the call has been
//! passed to `free` exactly once, and `out` holds nothing the caller owns.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use crate::{AllocError, AllocFlags, ObjectAlloc};

/// Fills every slot of `out` with an object from `alloc`; all or nothing.
///
/// On the first error of `alloc`, the objects gathered so far are handed to `free` (once, as
/// one slice, in allocation order) and that error is returned. `alloc` is not called again
/// after it fails. `free` is called only on that failure path.
///
/// ```
/// use std::mem::MaybeUninit;
/// use std::ptr::NonNull;
/// use object_alloc::{AllocError, bulk::alloc_bulk_with};
///
/// let mut out = [MaybeUninit::uninit(); 4];
/// let mut next = 0x1000usize;
/// let mut freed = Vec::new();
/// let result = alloc_bulk_with(
///     &mut out,
///     || {
///         next += 0x10;
///         if next > 0x1030 { Err(AllocError::OutOfMemory) } else { Ok(NonNull::new(next as *mut u8).unwrap()) }
///     },
///     |gathered| freed.extend_from_slice(gathered),
/// );
/// assert_eq!(result, Err(AllocError::OutOfMemory));
/// assert_eq!(freed.len(), 3);
/// ```
#[inline]
pub fn alloc_bulk_with(
    out: &mut [MaybeUninit<NonNull<u8>>],
    mut alloc: impl FnMut() -> Result<NonNull<u8>, AllocError>,
    free: impl FnOnce(&[NonNull<u8>]),
) -> Result<(), AllocError> {
    for filled in 0..out.len() {
        match alloc() {
            Ok(object) => {
                out[filled].write(object);
            }
            Err(error) => {
                give_back(&out[..filled], free);
                return Err(error);
            }
        }
    }
    Ok(())
}

/// Fills every slot of `out` with an object of `cache.alloc(flags)`, all or nothing: the
/// `alloc_bulk` of a design without a batch path.
#[inline]
pub fn alloc_each<A: ObjectAlloc>(
    cache: &A,
    flags: AllocFlags,
    out: &mut [MaybeUninit<NonNull<u8>>],
) -> Result<(), AllocError> {
    alloc_bulk_with(
        out,
        || cache.alloc(flags).ok_or(AllocError::OutOfMemory),
        // SAFETY: the gathered objects were just allocated by this cache, once each.
        |gathered| unsafe { free_each(cache, gathered) },
    )
}

/// Frees each of `objects` with `cache.free`: the `free_bulk` of a design without a batch
/// path.
///
/// # Safety
///
/// - Each object was allocated by `cache`, is live, and appears once.
/// - Nothing uses them after this call.
#[inline]
pub unsafe fn free_each<A: ObjectAlloc>(cache: &A, objects: &[NonNull<u8>]) {
    for &object in objects {
        // SAFETY: the caller guarantees each is a live object of this cache, listed once.
        unsafe { cache.free(object) };
    }
}

#[cold]
fn give_back(gathered: &[MaybeUninit<NonNull<u8>>], free: impl FnOnce(&[NonNull<u8>])) {
    // SAFETY: every slot of `gathered` was written by the loop of `alloc_bulk_with`, and
    // `MaybeUninit<T>` has the layout of `T`.
    let gathered = unsafe {
        std::slice::from_raw_parts(gathered.as_ptr().cast::<NonNull<u8>>(), gathered.len())
    };
    if !gathered.is_empty() {
        free(gathered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(i: usize) -> NonNull<u8> {
        NonNull::new(((i + 1) * 64) as *mut u8).unwrap()
    }

    #[test]
    fn success_fills_every_slot_and_frees_nothing() {
        let mut out = [MaybeUninit::uninit(); 8];
        let mut calls = 0;
        let mut freed = None;
        alloc_bulk_with(
            &mut out,
            || {
                calls += 1;
                Ok(token(calls))
            },
            |gathered| freed = Some(gathered.to_vec()),
        )
        .unwrap();
        assert_eq!(calls, 8);
        assert!(freed.is_none(), "free called on the success path");
        // SAFETY: the call succeeded, so every slot was written.
        let objects: Vec<_> = out
            .iter()
            .map(|slot| unsafe { slot.assume_init() })
            .collect();
        assert_eq!(objects, (1..=8).map(token).collect::<Vec<_>>());
    }

    #[test]
    fn failure_gives_back_exactly_what_was_gathered() {
        for fail_at in 1..=5 {
            let mut out = [MaybeUninit::uninit(); 5];
            let mut calls = 0;
            let mut freed: Option<Vec<NonNull<u8>>> = None;
            let result = alloc_bulk_with(
                &mut out,
                || {
                    calls += 1;
                    if calls == fail_at {
                        Err(AllocError::WouldGrow)
                    } else {
                        Ok(token(calls))
                    }
                },
                |gathered| freed = Some(gathered.to_vec()),
            );
            assert_eq!(result, Err(AllocError::WouldGrow));
            assert_eq!(calls, fail_at, "alloc called again after it failed");
            let expected: Vec<_> = (1..fail_at).map(token).collect();
            match freed {
                Some(freed) => assert_eq!(freed, expected, "fail_at {fail_at}"),
                None => assert!(expected.is_empty(), "fail_at {fail_at}: nothing freed"),
            }
        }
    }

    #[test]
    fn empty_request_calls_nothing() {
        let mut out: [MaybeUninit<NonNull<u8>>; 0] = [];
        alloc_bulk_with(
            &mut out,
            || panic!("alloc called for an empty request"),
            |_| panic!("free called for an empty request"),
        )
        .unwrap();
    }
}
