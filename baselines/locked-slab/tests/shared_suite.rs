//! The allocator checks every design runs (`conformance::testing`).

conformance::allocator_tests!(locked_slab::LockedSlab);
