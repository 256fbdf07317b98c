//! `cargo xtask conformance`: the contract clauses (docs/contract.md) on every allocator.

use std::process::Command;

use clap::Parser;

use crate::util::{self, TaskResult};

/// The contract clauses on every allocator.
#[derive(Debug, Parser)]
pub(crate) struct Options {
    /// Short smoke run (`sheafbench conformance --quick`): fewer rounds, same clauses.
    #[arg(long)]
    quick: bool,
}

/// Builds `sheafbench`, runs `sheafbench conformance --alloc all --json
/// results/runs/<time>/conformance.json`; fails when any applicable clause fails.
pub(crate) fn conformance(options: Options) -> TaskResult {
    let exe = util::build_sheafbench(None)?;
    let dir = util::new_run_dir()?;
    let json = dir.join("conformance.json");
    let mut run = Command::new(exe);
    run.current_dir(util::root())
        .args(["conformance", "--alloc", "all", "--json"])
        .arg(&json);
    if options.quick {
        run.arg("--quick");
    }
    let outcome = util::run(run);
    if json.exists() {
        println!("conformance report: {}", json.display());
    }
    outcome
}
