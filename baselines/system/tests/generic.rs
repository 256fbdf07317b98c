//! The generic allocator test suite on `system`: the one integration-test binary of the crate.

conformance::allocator_tests!(baseline_system::SystemCache);
