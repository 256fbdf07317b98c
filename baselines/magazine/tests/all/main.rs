//! Integration tests of `magazine`: the generic slab-design tests shared with the other
//! slab-based baselines.

#[path = "../../../slub-cpu-slab/tests/generic/mod.rs"]
mod generic;

use magazine::MagazineCache;

generic_tests!(MagazineCache);
