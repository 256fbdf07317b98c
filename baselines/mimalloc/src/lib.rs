//! `mimalloc` (in construction).
