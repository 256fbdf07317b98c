//! `slab` (in construction).
