//! `cargo xtask test`: what CI checks on every change.

use clap::Parser;

use crate::util::{self, TaskResult};

/// Formatting, clippy with warnings denied, then every test of the workspace.
#[derive(Debug, Parser)]
pub(crate) struct Options {
    /// Extra arguments for `cargo test` (e.g. `-p sheaf -- --nocapture`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CARGO_TEST_ARGS"
    )]
    extra: Vec<String>,
}

/// `cargo xtask test`.
pub(crate) fn test(options: Options) -> TaskResult {
    let mut fmt = util::cargo();
    fmt.args(["fmt", "--all", "--check"]);
    util::run(fmt)?;
    let mut clippy = util::cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    util::run(clippy)?;
    let mut tests = util::cargo();
    tests.args(["test", "--workspace"]).args(&options.extra);
    util::run(tests)
}
