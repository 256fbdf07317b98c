//! Planning and running measurements: specs resolved with the command-line options, one
//! child process per (workload, allocator, threads).

pub(crate) mod executor;
pub(crate) mod plan;
