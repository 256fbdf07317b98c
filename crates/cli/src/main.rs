//! `sheafbench`: the benchmark and conformance command line of the sheafbench project.
//!
//! ```text
//! sheafbench list
//! sheafbench run <workload.yaml>... [--alloc a,b|all] [--threads 1,2] [--duration 2s]
//!                [--runs N] [--set key=value,..] [--quick] [--json FILE] [--markdown FILE]
//!                [--baseline NAME] [--timeout SECS] [--hogs N]
//! sheafbench sweep <workload.yaml> --param key=v1,v2,.. [--alloc ..] [--svg FILE] [--json FILE]
//! sheafbench scale <workload.yaml> [--threads 1..N] [--mode thread|process|both] [--alloc ..]
//!                [--svg FILE] [--json FILE]
//! sheafbench programs [--alloc glibc,sheaf-malloc,mimalloc,jemalloc,tcmalloc]
//!                [--suite stress|packaged] [--manifest PATH] [--rounds N] [--program NAME,..]
//!                [--baseline ALLOC] [--out DIR] [--timeout SECS] [--sheaf-malloc PATH]
//! sheafbench compare <old.json> <new.json> [--confidence 0.95]
//! sheafbench conformance [--alloc a,b|all] [--json FILE] [--quick] [--only C-ID,..]
//! sheafbench trace import <strace.log> [-o out.trace] [--lenient]
//! sheafbench history list [--workload W] [--alloc A] [--machine M] [--revision R] [--since D]
//! sheafbench history trend <workload> <allocator> [--figure F] [--svg FILE]
//! sheafbench history import <files or dirs>...
//! ```
//!
//! Every (workload, allocator, threads) measurement runs in a child process of its own (the
//! binary re-executes itself with a hidden `__measure` subcommand and reads its result as
//! JSON), so allocators' global state, peak RSS and crashes stay isolated; a child that
//! crashes or times out is reported with its stderr and the run goes on. The allocator
//! names map to designs in one place, the `registry` module.
//!
//! Exit codes: 0 success; 1 a measurement failed or a conformance clause failed; 2 bad input
//! (a spec, an override, an allocator name, an output path), reported in one line before
//! anything runs; 130 a run stopped by Ctrl-C or SIGTERM (what finished is kept).
//!
//! Module map: `cli` (the clap types) → `commands` (one module per subcommand) →
//! `benchmark` (`plan`: specs and options validated before anything runs; `executor`: one
//! child process per measurement) → `output` (tables on stdout, warnings and progress on
//! stderr) and `export` (result files, each written atomically). `registry` is the one map
//! from allocator names to designs; `error` maps each failure to its exit code. Workload
//! specs, the engine and the result model live in the `harness` crate.

mod benchmark;
mod cli;
mod commands;
mod error;
mod export;
mod output;
mod registry;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<CliError>().map_or(1, CliError::exit_code);
            eprintln!("error: {e}");
            ExitCode::from(code)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::List => commands::list::run(),
        Command::Run(args) => commands::run::run(args)?,
        Command::Sweep(args) => commands::sweep::run(args)?,
        Command::Scale(args) => commands::scale::run(args)?,
        Command::Programs(args) => commands::programs::run(args)?,
        Command::Compare(args) => commands::compare::run(args)?,
        Command::Ab(args) => commands::ab::run(args)?,
        Command::Conformance(args) => commands::conformance::run(args)?,
        Command::Trace(cli::TraceCommand::Import(args)) => commands::trace::import(args)?,
        Command::History(command) => commands::history::run(command)?,
        Command::Measure(args) => commands::measure::run(args)?,
    }
    Ok(())
}
