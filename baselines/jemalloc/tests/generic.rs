//! The generic allocator test suite on `jemalloc`: the one integration-test binary of the crate.

conformance::allocator_tests!(baseline_jemalloc::JemallocCache);
