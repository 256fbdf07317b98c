//! `jemalloc` (in construction).
