//! `locked-slab` (in construction).
