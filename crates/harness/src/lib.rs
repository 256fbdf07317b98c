//! `harness` (in construction).
