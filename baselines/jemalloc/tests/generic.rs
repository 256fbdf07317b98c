//! The generic allocator test suite on `jemalloc`.

conformance::allocator_tests!(baseline_jemalloc::JemallocCache);
