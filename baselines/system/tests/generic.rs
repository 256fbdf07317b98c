//! The generic allocator test suite on `system`.

conformance::allocator_tests!(baseline_system::SystemCache);
