//! Planning and running measurements: specs resolved with the command-line options, one
//! child process per (workload, allocator, threads, round), rounds interleaving the allocators.

pub(crate) mod executor;
pub(crate) mod plan;
pub(crate) mod rounds;
