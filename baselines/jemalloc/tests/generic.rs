//! The generic allocator test suite on `jemalloc`.

object_alloc::allocator_tests!(baseline_jemalloc::JemallocCache);
