//! The allocator checks every design runs (`object_alloc::testing`).

object_alloc::allocator_tests!(locked_slab::LockedSlab);
