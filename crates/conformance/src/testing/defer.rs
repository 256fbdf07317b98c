//! The deferred-free check (C-DEFER-1, C-DEFER-2), which runs alone in its process.

use std::sync::mpsc;
use std::thread;

use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc, rcu};

use super::{REUSE_WINDOW, fill, new_cache, release_all, verify};

/// C-DEFER-1 and C-DEFER-2: an object passed to `free_deferred` while another thread is inside
/// a read-side section keeps its contents and is not handed out again (over
/// many allocations and epoch flushes); after the reader leaves and `barrier` returns, it is
/// free again: no longer counted as live where the design counts, handed out again otherwise.
/// The same holds when the reader is the freeing thread itself, and a pending object counts as
/// live (where the design counts).
///
/// Run it alone in its process ([`allocator_tests!`](crate::allocator_tests) does, through
/// [`in_own_process`]): the read-side machinery is process-wide, so another test's epoch
/// collection could run the deferred free on that test's thread, and a thread-caching
/// allocator would then hand the object out there, never here.
pub fn deferred_free_waits_for_readers<A: ObjectAlloc>() {
    let size = 64;
    let sentinel = 0x5eed;
    let fixture = new_cache::<A>(CacheConfig::new(size));
    let cache = &fixture.cache;
    // Settle the allocator's per-thread state first: glibc, for one, may move a thread to
    // another arena early in its life, and an object freed to the arena left behind is not
    // handed out to this thread again.
    let warm_up: Vec<_> = (0..REUSE_WINDOW)
        .map(|_| cache.alloc(AllocFlags::empty()).expect("allocation failed"))
        .collect();
    // SAFETY: each was allocated by `cache`, is live and appears once.
    unsafe { cache.free_bulk(&warm_up) };
    let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
    // SAFETY: a live object of `size` bytes that this check owns.
    unsafe { fill(object, size, sentinel) };
    let (entered_tx, entered) = mpsc::channel();
    let (leave, leave_rx) = mpsc::channel::<()>();
    thread::scope(|s| {
        // Owned by this closure, so that a failed check drops it and the reader leaves
        // instead of waiting forever.
        let leave = leave;
        s.spawn(move || {
            let section = rcu::read();
            entered_tx.send(()).unwrap();
            // Either the signal or the sender dropped by a failed check ends the section.
            let _ = leave_rx.recv();
            drop(section);
        });
        entered.recv().unwrap();
        // SAFETY: allocated by `cache`, live; the reader may still read it.
        unsafe { cache.free_deferred(object) };
        for _ in 0..1000 {
            rcu::flush();
        }
        let held: Vec<_> = (0..REUSE_WINDOW)
            .map(|_| cache.alloc(AllocFlags::empty()).expect("allocation failed"))
            .collect();
        assert!(
            !held.contains(&object),
            "{}: an object freed deferred was handed out while a reader was active (C-DEFER-1)",
            A::NAME
        );
        // SAFETY: the object is not yet freed (its grace period has not ended), so its memory is
        // still as a reader would see it.
        unsafe { verify(A::NAME, object, size, sentinel) };
        // SAFETY: each was allocated by `cache`, is live and appears once.
        unsafe { cache.free_bulk(&held) };
        leave.send(()).unwrap();
    });
    cache.barrier();
    if A::CAPABILITIES.tracks_live_objects {
        // The count shows the free wherever it ran: the hand-over thread may have run it, and
        // a per-CPU or per-thread cache then holds the object where this thread may never
        // allocate it again.
        assert_eq!(
            cache.stats().live_objects,
            Some(0),
            "{}: after the reader left and barrier() returned, the deferred object still \
             counts as live (C-DEFER-2)",
            A::NAME
        );
    } else {
        let mut held = Vec::new();
        let mut found = false;
        while held.len() < REUSE_WINDOW && !found {
            let again = cache.alloc(AllocFlags::empty()).expect("allocation failed");
            found = again == object;
            held.push(again);
        }
        // SAFETY: each was allocated by `cache`, is live and appears once.
        unsafe { cache.free_bulk(&held) };
        assert!(
            found,
            "{}: after the reader left and barrier() returned, the deferred object was not \
             handed out again within {REUSE_WINDOW} allocations (C-DEFER-2)",
            A::NAME
        );
    }

    // The reader is the thread that frees.
    let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
    let reader = rcu::read();
    // SAFETY: allocated by `cache`, live, freed once; this thread's own section may still read
    // it.
    unsafe { cache.free_deferred(object) };
    if A::CAPABILITIES.tracks_live_objects {
        assert_eq!(
            cache.stats().live_objects,
            Some(1),
            "{}: an object whose deferred free is pending counts as live",
            A::NAME
        );
    }
    let mut held = Vec::new();
    for _ in 0..2000 {
        let other = cache.alloc(AllocFlags::empty()).expect("allocation failed");
        assert_ne!(
            other,
            object,
            "{}: a deferred object was handed out while the freeing thread was still in its \
             read-side section (C-DEFER-1)",
            A::NAME
        );
        held.push(other);
        rcu::flush();
    }
    drop(reader);
    release_all(&fixture, &held);
}
