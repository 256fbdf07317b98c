//! `maple` (in construction).
