//! Integration tests of `locked-slab`: the generic allocator suite and the design's own tests.

mod locked;

mod generic {
    conformance::allocator_tests!(locked_slab::LockedSlab);
    conformance::page_source_tests!(locked_slab::LockedSlab);
}
