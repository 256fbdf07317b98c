//! The generic allocator test suite on `mimalloc`.

conformance::allocator_tests!(baseline_mimalloc::MimallocCache);
