//! The generic allocator test suite on `mimalloc`.

object_alloc::allocator_tests!(baseline_mimalloc::MimallocCache);
