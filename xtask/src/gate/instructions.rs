//! The deterministic signal: instruction counts of the hot operations under callgrind, from
//! `crates/sheaf/benches/instructions.rs` (gungraun).
//!
//! The gungraun library talks to a runner binary of exactly its own version; the runner is
//! installed with `cargo install` when it is missing or of another version. The benchmarks
//! run with `--output-format=json`: one JSON summary per benchmark on stdout, from which the
//! total `Ir` (instructions executed) of the benchmarked function is read.

use std::collections::BTreeMap;
use std::env;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use crate::util::{self, TaskError, TaskResult};

/// The runner version the `gungraun` library of the workspace pins (`=0.20.0`).
pub(crate) const RUNNER_VERSION: &str = "0.20.0";

/// Makes sure `gungraun-runner` of [`RUNNER_VERSION`] is on the `PATH` given to the
/// benchmarks; installs it if needed. Returns that `PATH`.
pub(crate) fn ensure_runner() -> TaskResult<OsString> {
    if util::fact("valgrind", &["--version"]).is_none() {
        return Err(TaskError::Failed(
            "valgrind is not installed (the instruction counts run under callgrind): install \
             it, e.g. `apt-get install valgrind`"
                .into(),
        ));
    }
    let cargo_bin = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"));
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(bin) = &cargo_bin
        && !dirs.contains(bin)
    {
        dirs.push(bin.clone());
    }
    let path = env::join_paths(&dirs).map_err(|e| format!("cannot build PATH: {e}"))?;
    let version = Command::new("gungraun-runner")
        .arg("--version")
        .env("PATH", &path)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if version
        .as_deref()
        .is_some_and(|v| v.split_whitespace().any(|w| w == RUNNER_VERSION))
    {
        return Ok(path);
    }
    eprintln!(
        "xtask: gungraun-runner {RUNNER_VERSION} not found (found: {}); installing it (about 1.5 minutes)",
        version.as_deref().map_or("none", str::trim)
    );
    let mut install = util::cargo();
    install.args([
        "install",
        "gungraun-runner",
        "--version",
        RUNNER_VERSION,
        "--locked",
    ]);
    // A throwaway target directory: the runner's dependencies are not the workspace's.
    install.env(
        "CARGO_TARGET_DIR",
        env::temp_dir().join("xtask-gungraun-runner-build"),
    );
    util::run(install)?;
    Ok(path)
}

/// Runs the instruction benchmarks and returns the count of each, by benchmark name.
/// With `slowdown_instructions`, sheaf is built with its `slowdown` feature adding that many
/// instructions to every pair.
pub(crate) fn measure(
    path: &OsString,
    slowdown_instructions: Option<u64>,
) -> TaskResult<BTreeMap<String, u64>> {
    let mut bench = util::cargo();
    bench.args(["bench", "-p", "sheaf", "--bench", "instructions"]);
    if slowdown_instructions.is_some() {
        bench
            .args(["--features", "slowdown"])
            .arg("--target-dir")
            .arg(util::slowdown_target_dir());
    }
    bench.args(["--", "--output-format=json"]).env("PATH", path);
    match slowdown_instructions {
        Some(instructions) => bench.env(util::SLOWDOWN_VARIABLE, instructions.to_string()),
        None => bench.env_remove(util::SLOWDOWN_VARIABLE),
    };
    eprintln!("xtask: running {}", util::describe(&bench));
    let stdout = util::capture(bench)?;
    let counts = parse_summaries(&stdout)?;
    if counts.is_empty() {
        return Err(TaskError::Failed(
            "the instruction benchmarks printed no JSON summary (is gungraun's output format \
             still JSON lines?)"
                .into(),
        ));
    }
    Ok(counts)
}

/// Reads gungraun's JSON-lines output (summary schema v6): one object per benchmark, named
/// `function` or `function::id`, with the callgrind `Ir` total. Lines that are not JSON
/// (cargo's or the runner's messages) are skipped.
pub(crate) fn parse_summaries(stdout: &str) -> TaskResult<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for line in stdout.lines().map(str::trim).filter(|l| l.starts_with('{')) {
        let Ok(summary) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(function) = summary["function_name"].as_str() else {
            continue;
        };
        let name = match summary["id"].as_str() {
            Some(id) => format!("{function}::{id}"),
            None => function.to_owned(),
        };
        let ir = instructions_of(&summary).ok_or_else(|| {
            TaskError::Failed(format!(
                "benchmark `{name}`: no callgrind Ir total in its summary"
            ))
        })?;
        counts.insert(name, ir);
    }
    Ok(counts)
}

/// The new (this run's) `Ir` of the callgrind profile's total:
/// `profiles[tool = Callgrind].data.total.metrics.Ir.values.new`.
fn instructions_of(summary: &serde_json::Value) -> Option<u64> {
    let profile = summary["profiles"].as_array()?.iter().find(|p| {
        p["tool"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("callgrind"))
    })?;
    profile["data"]["total"]["metrics"]["Ir"]["values"]["new"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line of gungraun 0.20's `--output-format=json`, trimmed to the fields read.
    const LINE: &str = r#"{"function_name":"alloc_free_pair_per_cpu","id":"per_cpu","profiles":[{"tool":"Callgrind","data":{"total":{"metrics":{"Dr":{"values":{"new":42}},"Ir":{"values":{"new":132,"old":130}}},"regressions":[]}}}]}"#;

    #[test]
    fn summaries_give_the_new_ir_per_benchmark() {
        let stdout = format!(
            "Running benches\n{LINE}\n{}\nnot json\n",
            r#"{"function_name":"bulk_free_16","profiles":[{"tool":"Callgrind","data":{"total":{"metrics":{"Ir":{"values":{"new":900}}}}}}]}"#
        );
        let counts = parse_summaries(&stdout).unwrap();
        assert_eq!(counts.len(), 2);
        assert_eq!(counts["alloc_free_pair_per_cpu::per_cpu"], 132);
        assert_eq!(counts["bulk_free_16"], 900);
    }

    #[test]
    fn a_summary_without_ir_is_an_error_naming_the_benchmark() {
        let stdout = r#"{"function_name":"f","id":"x","profiles":[{"tool":"Callgrind","data":{"total":{"metrics":{}}}}]}"#;
        let error = parse_summaries(stdout).unwrap_err().to_string();
        assert!(error.contains("`f::x`"), "{error}");
    }

    #[test]
    fn non_summary_lines_are_skipped() {
        assert!(
            parse_summaries("{\"reason\": \"other\"}\n{broken\n")
                .unwrap()
                .is_empty()
        );
    }
}
