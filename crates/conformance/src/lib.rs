//! `conformance` (in construction).
