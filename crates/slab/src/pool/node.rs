//! Slabs and the per-node lists that hold them.
//!
//! # Slabs
//!
//! A slab is one chunk of [`SlabLayout::slab_bytes`] bytes from the page source, naturally
//! aligned, so any object finds its slab header by masking its address. The header sits at the
//! start of the chunk and records
//!
//! - `node`: the node whose lock protects the slab (fixed when the slab is made);
//! - `inuse`: objects handed out and not freed;
//! - `freelist`: the first free object that was used before; each free object stores the link
//!   to the next one in its first word (read and written unaligned, since objects may be
//!   byte-aligned);
//! - `carved`: objects never handed out start at index `carved`. A new slab is not threaded
//!   onto a free list up front: objects are carved off in order as they are first taken, so a
//!   fresh slab costs no writes to its object pages (and no resident memory) until used;
//! - `prev`/`next`: links of the node's partial list.
//!
//! Per slab, at every point where its node's lock is free:
//!
//! ```text
//! inuse + |freelist| + (objects - carved) == objects
//! ```
//!
//! # Nodes and lists
//!
//! Each node has one [`Mutex`] that protects its partial list, its counts and *every header of
//! its slabs*. The partial list holds exactly the node's slabs that have a free object;
//! partially used slabs are kept towards the head and empty ones are moved to the tail, so
//! allocation fills used slabs first and empty slabs are the last taken and the first released.
//! Full slabs are on no list (as in SLUB): a free into a full slab puts it back at the head.
//!
//! A node keeps at most `min_partial` empty slabs (SLUB's `min_partial`, counted here as empty
//! slabs so that a quiet cache holds a bounded amount of memory); a free that empties a slab
//! beyond that releases it to the page source, after the lock is dropped. [`SlabPool::shrink`](super::SlabPool::shrink)
//! releases every empty slab.

use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};
use std::sync::Mutex;

use crate::layout::SlabLayout;

/// The header at the start of every slab.
#[repr(C)]
#[derive(Debug)]
pub(super) struct SlabHeader {
    pub(super) node: u32,
    pub(super) inuse: u32,
    pub(super) carved: u32,
    pub(super) freelist: *mut u8,
    pub(super) prev: *mut SlabHeader,
    pub(super) next: *mut SlabHeader,
}

/// Takes up to `out.len()` objects from one slab: first from its free list, then carved.
///
/// # Safety
///
/// - `slab` is a live slab of layout `layout`, and the caller holds its node's lock.
#[inline]
pub(super) unsafe fn take_from_slab(
    slab: NonNull<SlabHeader>,
    layout: &SlabLayout,
    out: &mut [MaybeUninit<NonNull<u8>>],
) -> usize {
    let header = slab.as_ptr();
    // Header fields are accessed as places, never through a `&mut SlabHeader`: threads that
    // free into this slab read its `node` without the lock.
    // SAFETY: the caller holds the node lock, which grants exclusive access to the mutable
    // fields of the header.
    let (mut head, carved) = unsafe { ((*header).freelist, (*header).carved as usize) };
    let want = out.len();
    let mut taken = 0;
    while taken < want {
        let Some(object) = NonNull::new(head) else {
            break;
        };
        out[taken].write(object);
        // SAFETY: a free object of this slab holds the link to the next free object in its
        // first word (it is at least pointer-sized: the stride is).
        head = unsafe { object.as_ptr().cast::<*mut u8>().read_unaligned() };
        taken += 1;
    }
    let fresh = (want - taken).min(layout.objects_per_slab - carved);
    if fresh > 0 {
        let base = slab.cast::<u8>();
        for (i, slot) in out[taken..taken + fresh].iter_mut().enumerate() {
            // SAFETY: `carved + i < objects_per_slab`, so the object lies inside the slab.
            slot.write(unsafe { base.add(layout.first_offset + (carved + i) * layout.stride) });
        }
        taken += fresh;
    }
    // SAFETY: as above.
    unsafe {
        (*header).freelist = head;
        (*header).carved = (carved + fresh) as u32;
        (*header).inuse += taken as u32;
    }
    taken
}

/// One node's partial list and counts; the lock around it also guards its slabs' headers.
#[derive(Debug)]
pub(super) struct NodeState {
    pub(super) head: *mut SlabHeader,
    pub(super) tail: *mut SlabHeader,
    /// Slabs on the partial list (empty ones included).
    pub(super) nr_partial: u64,
    /// Empty slabs (all on the partial list).
    pub(super) nr_empty: u64,
    /// Slabs of this node, full ones included.
    pub(super) slabs: u64,
    /// Free objects in this node's slabs (all of them in partial slabs).
    pub(super) free_objects: u64,
}

// SAFETY: the raw pointers name slabs owned by the pool; they are only followed while the
// node's mutex is held, whichever thread holds it.
unsafe impl Send for NodeState {}

impl NodeState {
    pub(super) fn new() -> Self {
        Self {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            nr_partial: 0,
            nr_empty: 0,
            slabs: 0,
            free_objects: 0,
        }
    }

    /// # Safety
    ///
    /// `slab` is a slab of this node, not on the list; the node lock is held.
    pub(super) unsafe fn push_head(&mut self, slab: *mut SlabHeader) {
        // SAFETY: per the contract, the header is ours to write under the lock.
        unsafe {
            (*slab).prev = ptr::null_mut();
            (*slab).next = self.head;
            if self.head.is_null() {
                self.tail = slab;
            } else {
                (*self.head).prev = slab;
            }
        }
        self.head = slab;
        self.nr_partial += 1;
    }

    /// # Safety
    ///
    /// `slab` is a slab of this node, not on the list; the node lock is held.
    pub(super) unsafe fn push_tail(&mut self, slab: *mut SlabHeader) {
        // SAFETY: per the contract, the header is ours to write under the lock.
        unsafe {
            (*slab).next = ptr::null_mut();
            (*slab).prev = self.tail;
            if self.tail.is_null() {
                self.head = slab;
            } else {
                (*self.tail).next = slab;
            }
        }
        self.tail = slab;
        self.nr_partial += 1;
    }

    /// # Safety
    ///
    /// `slab` is on this node's list; the node lock is held.
    pub(super) unsafe fn unlink(&mut self, slab: *mut SlabHeader) {
        // SAFETY: `slab` and its neighbours are on this list, guarded by the held lock.
        unsafe {
            let (prev, next) = ((*slab).prev, (*slab).next);
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).next = next;
            }
            if next.is_null() {
                self.tail = prev;
            } else {
                (*next).prev = prev;
            }
            (*slab).prev = ptr::null_mut();
            (*slab).next = ptr::null_mut();
        }
        self.nr_partial -= 1;
    }

    /// Takes up to `out.len()` objects from the partial list, head first.
    ///
    /// # Safety
    ///
    /// The node lock is held; `layout` is the pool's.
    #[inline]
    pub(super) unsafe fn take_partial(
        &mut self,
        layout: &SlabLayout,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> usize {
        // SAFETY: forwarded from the caller.
        unsafe { self.take_partial_from(layout, out, usize::MAX) }
    }

    /// Takes up to `out.len()` objects from at most `slabs` slabs of the partial list, head
    /// first.
    ///
    /// # Safety
    ///
    /// The node lock is held; `layout` is the pool's.
    #[inline]
    pub(super) unsafe fn take_partial_from(
        &mut self,
        layout: &SlabLayout,
        out: &mut [MaybeUninit<NonNull<u8>>],
        slabs: usize,
    ) -> usize {
        let mut got = 0;
        let mut visited = 0;
        while got < out.len() && visited < slabs {
            visited += 1;
            let Some(slab) = NonNull::new(self.head) else {
                break;
            };
            // SAFETY: list slabs are live and guarded by the held lock.
            if unsafe { (*slab.as_ptr()).inuse } == 0 {
                self.nr_empty -= 1;
            }
            // SAFETY: as above.
            got += unsafe { take_from_slab(slab, layout, &mut out[got..]) };
            // SAFETY: as above.
            if unsafe { (*slab.as_ptr()).inuse } as usize == layout.objects_per_slab {
                // SAFETY: `slab` is the list head.
                unsafe { self.unlink(slab.as_ptr()) };
            }
        }
        self.free_objects -= got as u64;
        got
    }

    /// Puts `run` (objects of one slab) back on that slab's free list as one chain; an emptied
    /// slab beyond `min_partial` is unlinked and pushed on `release` (linked through `next`).
    ///
    /// # Safety
    ///
    /// `slab` is a slab of this node holding every object of `run`, which are in use and
    /// distinct; the lock is held.
    #[inline]
    pub(super) unsafe fn free_run_locked(
        &mut self,
        layout: &SlabLayout,
        slab: *mut SlabHeader,
        run: &[NonNull<u8>],
        min_partial: u64,
        release: &mut *mut SlabHeader,
    ) {
        let count = run.len() as u32;
        // SAFETY: the held lock grants exclusive access to the header's mutable fields (used
        // as places: see `take_from_slab`).
        let (inuse, mut chain) = unsafe { ((*slab).inuse, (*slab).freelist) };
        debug_assert!(
            inuse >= count && run.iter().all(|&object| layout.is_object_start(object)),
            "free of {count} objects into slab {slab:p} with inuse {inuse} \
             (double free or foreign object)",
        );
        for &object in run.iter().rev() {
            // SAFETY: the object is ours again and at least pointer-sized.
            unsafe { object.as_ptr().cast::<*mut u8>().write_unaligned(chain) };
            chain = object.as_ptr();
        }
        // SAFETY: as above.
        unsafe {
            (*slab).freelist = chain;
            (*slab).inuse = inuse - count;
        }
        let was_full = inuse as usize == layout.objects_per_slab;
        self.free_objects += u64::from(count);
        if inuse == count {
            if !was_full {
                // SAFETY: a slab that was neither full nor empty is on the list.
                unsafe { self.unlink(slab) };
            }
            if self.nr_empty >= min_partial {
                self.slabs -= 1;
                self.free_objects -= layout.objects_per_slab as u64;
                // SAFETY: unlinked, so its `next` link is free for the release list.
                unsafe { (*slab).next = *release };
                *release = slab;
            } else {
                self.nr_empty += 1;
                // SAFETY: unlinked above (or never on the list, having been full).
                unsafe { self.push_tail(slab) };
            }
        } else if was_full {
            // SAFETY: a full slab is on no list.
            unsafe { self.push_head(slab) };
        }
    }
}

/// A node's lock, padded to its own cache lines: CPUs of different nodes take different locks
/// and must not share a line.
#[repr(align(128))]
#[derive(Debug)]
pub(super) struct NodeSlot(pub(super) Mutex<NodeState>);

/// A node's lock is a leaf (held for list updates only, never across a page source call), so
/// a fork holds it alone and the child finds the node's lists and headers consistent.
impl crate::fork::AtFork for NodeSlot {
    fn lock_all(&self, held: &mut crate::fork::Held) {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: every node of a pool is registered from its creation until the pool's drop.
        unsafe { held.hold(guard) };
    }
}
