//! The generic allocator test suite on `mimalloc`: the one integration-test binary of the crate.

conformance::allocator_tests!(baseline_mimalloc::MimallocCache);
