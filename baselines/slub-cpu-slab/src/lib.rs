//! `slub-cpu-slab` (in construction).
