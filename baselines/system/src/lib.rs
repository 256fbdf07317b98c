//! `system` (in construction).
