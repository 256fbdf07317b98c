//! `cargo xtask conformance`: the contract clauses (docs/contract.md) on every allocator.

use std::process::Command;

use crate::util::{self, TaskError, TaskResult};

/// Builds `sheafbench`, runs `sheafbench conformance --alloc all --json
/// results/runs/<time>/conformance.json`; fails when any applicable clause fails.
pub(crate) fn conformance(args: &[String]) -> TaskResult {
    let mut quick = false;
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            other => {
                return Err(TaskError::Usage(format!(
                    "conformance: unknown option `{other}` (expected --quick)"
                )));
            }
        }
    }
    let exe = util::build_sheafbench(None)?;
    let dir = util::new_run_dir()?;
    let json = dir.join("conformance.json");
    let mut run = Command::new(exe);
    run.current_dir(util::root())
        .args(["conformance", "--alloc", "all", "--json"])
        .arg(&json);
    if quick {
        run.arg("--quick");
    }
    let outcome = util::run(run);
    if json.exists() {
        println!("conformance report: {}", json.display());
    }
    outcome
}
