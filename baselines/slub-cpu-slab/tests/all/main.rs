//! Integration tests of `slub-cpu-slab`: the generic slab-design tests, and stress of the
//! lockless paths with migrating threads.

#[path = "../generic/mod.rs"]
mod generic;
mod migration;

use slub_cpu_slab::SlubCpuSlab;

generic_tests!(SlubCpuSlab);
