//! Integration tests of `slub-cpu-slab`: the generic allocator suite, and stress of the
//! lockless paths with migrating threads.

mod migration;

mod generic {
    conformance::allocator_tests!(slub_cpu_slab::SlubCpuSlab);
    conformance::page_source_tests!(slub_cpu_slab::SlubCpuSlab);
}
