//! Integration tests of `sheaf`, in one binary to keep link time low.
//!
//! Tests that check a contract clause (`docs/contract.md`) carry the clause in their name
//! (`c_prefill_3_...`) and run on both slot strategies (`PerCpu`, `PerThread`).

mod common;
mod conf;
mod deferred;
mod deschedule;
mod fork;
mod kernel_switches;
mod liveness;
mod model;
mod objects;
mod prefill;
mod races;
mod reach;
mod refill;
mod resize;
mod returns;
mod stress;
mod typed;
