//! The generic allocator test suite on `system`.

object_alloc::allocator_tests!(baseline_system::SystemCache);
