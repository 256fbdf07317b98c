//! `cargo xtask test`: what CI checks on every change.

use crate::util::{self, TaskResult};

/// Formatting, clippy with warnings denied, then every test of the workspace; extra
/// arguments go to `cargo test`.
pub(crate) fn test(extra: &[String]) -> TaskResult {
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
    tests.args(["test", "--workspace"]).args(extra);
    util::run(tests)
}
