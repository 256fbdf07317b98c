//! `sheaf` (in construction).
