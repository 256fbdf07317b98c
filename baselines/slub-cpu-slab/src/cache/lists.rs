//! The partial lists: slabs with free objects kept for one CPU or one node, linked through
//! `SlabMeta::next` and reached only under their lock.

use std::ptr;
use std::sync::atomic::Ordering;

use crate::meta::SlabMeta;

/// Slabs with free objects reserved for one CPU, linked through `SlabMeta::next`.
#[derive(Debug)]
pub(super) struct CpuPartial {
    pub(super) head: *const SlabMeta,
    pub(super) count: usize,
}

// SAFETY: the pointers are to `SlabMeta`s, which are atomics only and outlive the cache's
// lists; the list itself is only reached through its mutex.
unsafe impl Send for CpuPartial {}

impl CpuPartial {
    pub(super) fn push(&mut self, meta: &SlabMeta) {
        meta.next.store(self.head.cast_mut(), Ordering::Relaxed);
        self.head = meta;
        self.count += 1;
    }

    pub(super) fn pop(&mut self) -> Option<*const SlabMeta> {
        if self.head.is_null() {
            return None;
        }
        let meta = self.head;
        // SAFETY: slabs on the list have live, type-stable metadata.
        self.head = unsafe { &*meta }.next.load(Ordering::Relaxed);
        self.count -= 1;
        Some(meta)
    }

    pub(super) fn take(&mut self) -> *const SlabMeta {
        self.count = 0;
        std::mem::replace(&mut self.head, ptr::null())
    }
}

/// A node's partial slabs: a doubly linked list through `SlabMeta::{prev, next}`.
#[derive(Debug)]
pub(super) struct NodePartial {
    pub(super) head: *const SlabMeta,
    pub(super) tail: *const SlabMeta,
    pub(super) nr_partial: usize,
}

// SAFETY: as for `CpuPartial`.
unsafe impl Send for NodePartial {}

impl NodePartial {
    pub(super) fn add_tail(&mut self, meta: &SlabMeta) {
        meta.next.store(ptr::null_mut(), Ordering::Relaxed);
        meta.prev.store(self.tail.cast_mut(), Ordering::Relaxed);
        if self.tail.is_null() {
            self.head = meta;
        } else {
            // SAFETY: the tail is a listed slab with live metadata.
            unsafe { &*self.tail }
                .next
                .store(ptr::from_ref(meta).cast_mut(), Ordering::Relaxed);
        }
        self.tail = meta;
        meta.on_node_partial.store(true, Ordering::Relaxed);
        self.nr_partial += 1;
    }

    pub(super) fn remove(&mut self, meta: &SlabMeta) {
        debug_assert!(meta.on_node_partial.load(Ordering::Relaxed));
        let prev = meta.prev.load(Ordering::Relaxed);
        let next = meta.next.load(Ordering::Relaxed);
        if prev.is_null() {
            self.head = next;
        } else {
            // SAFETY: a listed neighbour with live metadata.
            unsafe { &*prev }.next.store(next, Ordering::Relaxed);
        }
        if next.is_null() {
            self.tail = prev;
        } else {
            // SAFETY: as above.
            unsafe { &*next }.prev.store(prev, Ordering::Relaxed);
        }
        meta.on_node_partial.store(false, Ordering::Relaxed);
        self.nr_partial -= 1;
    }

    pub(super) fn pop_front(&mut self) -> Option<*const SlabMeta> {
        let head = self.head;
        if head.is_null() {
            return None;
        }
        // SAFETY: a listed slab with live metadata.
        self.remove(unsafe { &*head });
        Some(head)
    }
}
