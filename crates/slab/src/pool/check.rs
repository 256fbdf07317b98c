//! The pool's self-checks: every slab against the per-slab equation (module `node`), and every
//! node's list and counts against its slabs.

use std::ptr::{self, NonNull};

use super::SlabPool;
use super::node::SlabHeader;

impl SlabPool {
    /// Checks one slab's accounting (the per-slab equation of module `node`), and that every
    /// free-list entry is an object start of this slab below `carved`.
    ///
    /// # Safety
    ///
    /// The slab is live and either its node lock is held or no one else can reach it.
    pub(super) unsafe fn check_slab(&self, slab: *mut SlabHeader, node: usize) {
        let layout = &self.layout;
        // SAFETY: per the contract.
        let header = unsafe { &*slab };
        let objects = layout.objects_per_slab;
        assert_eq!(
            header.node as usize, node,
            "slab {slab:p} is on node {node}'s list but records node {}",
            header.node
        );
        assert!(
            header.carved as usize <= objects && header.inuse <= header.carved,
            "slab {slab:p}: inuse {} carved {} objects {objects}",
            header.inuse,
            header.carved
        );
        let mut listed = 0usize;
        let mut cursor = header.freelist;
        while let Some(object) = NonNull::new(cursor) {
            assert!(
                listed < objects,
                "slab {slab:p}: free list longer than {objects} objects (a cycle: double free?)"
            );
            assert!(
                self.slab_of(object) == slab
                    && layout.is_object_start(object)
                    && layout.object_index(object) < header.carved as usize,
                "slab {slab:p}: free list entry {object:p} is not a carved object of this slab"
            );
            listed += 1;
            // SAFETY: free objects hold their link in the first word.
            cursor = unsafe { object.as_ptr().cast::<*mut u8>().read_unaligned() };
        }
        let uncarved = objects - header.carved as usize;
        assert_eq!(
            header.inuse as usize + listed + uncarved,
            objects,
            "slab {slab:p} (node {node}): inuse {} + free {} != objects {objects}",
            header.inuse,
            listed + uncarved
        );
    }

    /// Panics with a message naming the slab if a slab's counts do not add up to its objects
    /// anywhere (see the crate docs), or if a node's list or counts disagree with its slabs.
    pub fn check_invariants(&self) {
        let objects = self.layout.objects_per_slab as u64;
        for node in 0..self.nodes.len() {
            let state = self.lock(node);
            let (mut partial, mut empty, mut free) = (0u64, 0u64, 0u64);
            let mut prev: *mut SlabHeader = ptr::null_mut();
            let mut slab = state.head;
            while !slab.is_null() {
                assert!(
                    partial < state.slabs,
                    "node {node}: partial list longer than its {} slabs",
                    state.slabs
                );
                // SAFETY: list slabs are live, guarded by the held lock.
                let header = unsafe { &*slab };
                assert_eq!(
                    header.prev, prev,
                    "node {node}: slab {slab:p} has a bad prev link"
                );
                // SAFETY: as above.
                unsafe { self.check_slab(slab, node) };
                assert!(
                    u64::from(header.inuse) < objects,
                    "node {node}: full slab {slab:p} is on the partial list"
                );
                partial += 1;
                empty += u64::from(header.inuse == 0);
                free += objects - u64::from(header.inuse);
                prev = slab;
                slab = header.next;
            }
            assert_eq!(state.tail, prev, "node {node}: tail is not the last slab");
            assert_eq!(state.nr_partial, partial, "node {node}: partial count");
            assert_eq!(state.nr_empty, empty, "node {node}: empty slab count");
            assert_eq!(state.free_objects, free, "node {node}: free object count");
        }
    }
}
