//! `magazine` (in construction).
