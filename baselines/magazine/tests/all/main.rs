//! Integration tests of `magazine`: the generic allocator suite.

mod generic {
    conformance::allocator_tests!(magazine::MagazineCache);
    conformance::page_source_tests!(magazine::MagazineCache);
}
