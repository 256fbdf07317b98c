//! What every task needs: the workspace root, running commands, the `sheafbench` binary,
//! timestamps, and facts about the machine, toolchain and git tree.

use std::env;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a task stopped.
#[derive(Debug)]
pub(crate) enum TaskError {
    /// Bad command line: exit status 2.
    Usage(String),
    /// A step failed (a build, a child process, a file): exit status 2.
    Failed(String),
    /// The gate found a regression: exit status 1 (the only status 1, so that scripts can
    /// tell a regression from a broken run).
    Regression(String),
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(m) | Self::Failed(m) | Self::Regression(m) => f.write_str(m),
        }
    }
}

impl From<String> for TaskError {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

/// Result of a task.
pub(crate) type TaskResult<T = ()> = Result<T, TaskError>;

/// The workspace the task works on, found by [`locate_root`] when first asked for.
static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The workspace root the task works on (see [`locate_root`]); the current directory if no
/// workspace was found (`main` refuses to start a task then).
pub(crate) fn root() -> PathBuf {
    ROOT.get_or_init(|| {
        locate_root().unwrap_or_else(|_| env::current_dir().unwrap_or_else(|_| ".".into()))
    })
    .clone()
}

/// Finds the workspace at run time: where `cargo xtask` was run, not where this binary was
/// built. Cargo reuses one built xtask for every clone or worktree that shares a target
/// directory (their sources are identical), so a path fixed at compile time would send one
/// clone's tasks to another's workloads and results. Cargo names the package it runs in
/// `CARGO_MANIFEST_DIR` at run time (`cargo xtask` is `cargo run -p xtask`), so its parent
/// comes first; a binary run by hand searches from the current directory upward.
pub(crate) fn locate_root() -> TaskResult<PathBuf> {
    let cwd = env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    find_root(env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from), &cwd).ok_or_else(|| {
        TaskError::Usage(format!(
            "no sheafbench workspace (a Cargo.toml with [workspace] beside xtask/) at or above {}: \
             run cargo xtask inside a clone",
            cwd.display()
        ))
    })
}

/// The workspace root from cargo's run-time manifest directory of xtask, else the first
/// directory at or above `cwd` that is one (see [`is_workspace`]).
pub(crate) fn find_root(manifest_dir: Option<PathBuf>, cwd: &Path) -> Option<PathBuf> {
    manifest_dir
        .as_deref()
        .and_then(Path::parent)
        .filter(|dir| is_workspace(dir))
        .or_else(|| cwd.ancestors().find(|dir| is_workspace(dir)))
        .map(Path::to_path_buf)
}

/// Whether `dir` is the root of a sheafbench workspace: a `Cargo.toml` that declares a
/// workspace, and the xtask package beside it.
fn is_workspace(dir: &Path) -> bool {
    dir.join("xtask").join("Cargo.toml").is_file()
        && std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|manifest| manifest.lines().any(|l| l.trim() == "[workspace]"))
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(signal: libc::c_int) {
    if INTERRUPTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: `signal` and `raise` are async-signal-safe; with the default action back,
        // the second interrupt ends the process as it would have without a handler.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// Catches Ctrl-C (SIGINT) and SIGTERM so that a task can finish its files and say what it
/// kept ([`interrupted`]); a second one ends the process at once. A signal inherited as
/// ignored stays ignored.
pub(crate) fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only sets an atomic, or restores the default and re-raises
        // (async-signal-safe); replacing a disposition has no other effect.
        unsafe {
            let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
            if libc::signal(signal, handler) == libc::SIG_IGN {
                libc::signal(signal, libc::SIG_IGN);
            }
        }
    }
}

/// Whether Ctrl-C or SIGTERM came since [`catch_interrupts`].
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The allocators of an `--alloc` option, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Names(pub(crate) Vec<String>);

/// Parses a comma-separated `--alloc` list (blanks dropped; at least one name left).
pub(crate) fn allocator_list(list: &str) -> Result<Names, String> {
    let names: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Err("--alloc needs at least one allocator name".into());
    }
    Ok(Names(names))
}

/// Parses a numeric option that must be a whole number above 0.
pub(crate) fn positive<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + From<u8> + PartialOrd,
{
    match text.parse::<T>() {
        Ok(n) if n > T::from(0) => Ok(n),
        _ => Err("expected a whole number above 0".into()),
    }
}

/// Parses a path option naming an existing file, made absolute: the tasks run their
/// children in the workspace root, not where the task was started.
pub(crate) fn existing_file(text: &str) -> Result<PathBuf, String> {
    std::fs::canonicalize(text)
        .ok()
        .filter(|path| path.is_file())
        .ok_or_else(|| "no such file".to_owned())
}

/// A `cargo` command (the one running us, when we run under cargo) in the workspace root.
pub(crate) fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

/// Runs `command`, inheriting stdio; an error names the command and its status.
pub(crate) fn run(mut command: Command) -> TaskResult {
    eprintln!("xtask: running {}", describe(&command));
    let status = command
        .status()
        .map_err(|e| format!("cannot start {}: {e}", describe(&command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(TaskError::Failed(format!(
            "{} failed ({status})",
            describe(&command)
        )))
    }
}

/// Runs `command` and returns its stdout (stderr is inherited).
pub(crate) fn capture(mut command: Command) -> TaskResult<String> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", describe(&command)))?;
    if !output.status.success() {
        return Err(TaskError::Failed(format!(
            "{} failed ({})",
            describe(&command),
            output.status
        )));
    }
    String::from_utf8(output.stdout)
        .map_err(|_| TaskError::Failed(format!("{} wrote non-UTF-8 output", describe(&command))))
}

/// Stdout of a command, trimmed, or `None` if it cannot run or fails (for optional facts).
pub(crate) fn fact(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(root())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The program and its arguments, for messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Builds `sheafbench` in release and returns the path of the binary, read from cargo's JSON
/// messages. With `slowdown_instructions`, sheaf is built with its `slowdown` feature and
/// `SHEAF_SLOWDOWN_INSTRUCTIONS` set for the build (the delay is fixed at compile time), in a
/// target directory of its own.
pub(crate) fn build_sheafbench(slowdown_instructions: Option<u64>) -> TaskResult<PathBuf> {
    let mut build = build_command(&["build", "--release", "-p", "sheafbench"]);
    match slowdown_instructions {
        Some(instructions) => {
            build
                .args(["--features", "sheaf/slowdown"])
                .arg("--target-dir")
                .arg(slowdown_target_dir())
                .env(SLOWDOWN_VARIABLE, instructions.to_string());
        }
        None => {
            build.env_remove(SLOWDOWN_VARIABLE);
        }
    }
    built_executable(build, "sheafbench")
}

/// `cargo <args>` with the JSON messages that [`built_executable`] reads.
fn build_command(args: &[&str]) -> Command {
    let mut build = cargo();
    build
        .args(args)
        .arg("--message-format=json-render-diagnostics");
    build
}

/// Runs `cargo <args>` (a build of some target: `build`, `bench --no-run`, ...) and returns
/// the executable it reports for the target named `target`.
pub(crate) fn build_executable(args: &[&str], target: &str) -> TaskResult<PathBuf> {
    built_executable(build_command(args), target)
}

/// Runs a cargo build `command` made by [`build_command`] and returns the executable cargo
/// reports for the target named `target`.
fn built_executable(command: Command, target: &str) -> TaskResult<PathBuf> {
    eprintln!("xtask: running {}", describe(&command));
    let stdout = capture(command)?;
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact"
            && message["target"]["name"] == target
            && let Some(exe) = message["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    Err(TaskError::Failed(format!(
        "cargo built {target} but named no executable for it"
    )))
}

/// The build-time setting of sheaf's `slowdown` feature: instructions added to every pair.
pub(crate) const SLOWDOWN_VARIABLE: &str = "SHEAF_SLOWDOWN_INSTRUCTIONS";

/// A separate target directory for builds with the `slowdown` feature, so that switching
/// between the clean and the slowed build does not rebuild either.
pub(crate) fn slowdown_target_dir() -> PathBuf {
    target_dir().join("slowdown")
}

/// Cargo's target directory for this workspace: `CARGO_TARGET_DIR`, else `target/`.
pub(crate) fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// The workload specs in `workloads/` marked `suite: default`, sorted by file name.
pub(crate) fn default_suite() -> TaskResult<Vec<PathBuf>> {
    let dir = root().join("workloads");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut specs = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if in_default_suite(&text) {
                specs.push(path);
            }
        }
    }
    specs.sort();
    if specs.is_empty() {
        return Err(TaskError::Failed(format!(
            "no workload in {} is marked `suite: default`",
            dir.display()
        )));
    }
    Ok(specs)
}

/// Whether a spec's top-level `suite` field is `default` (the CLI validates the spec itself;
/// this only selects files).
pub(crate) fn in_default_suite(spec: &str) -> bool {
    spec.lines().any(|line| {
        line.strip_prefix("suite:").is_some_and(|value| {
            let value = value.split('#').next().unwrap_or("").trim();
            value.trim_matches(|c| c == '"' || c == '\'') == "default"
        })
    })
}

/// Logical CPUs of this machine.
pub(crate) fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Now as `YYYY-MM-DDTHH-MM-SSZ` (UTC; dashes so that it is a portable file name).
pub(crate) fn timestamp() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_timestamp(seconds)
}

/// `seconds` since the Unix epoch as `YYYY-MM-DDTHH-MM-SSZ`: the harness's UTC time with
/// dashes for colons.
pub(crate) fn format_timestamp(seconds: u64) -> String {
    harness::machine::format_utc(seconds).replace(':', "-")
}

/// A new directory `results/runs/<timestamp>/`.
pub(crate) fn new_run_dir() -> TaskResult<PathBuf> {
    let dir = root().join("results").join("runs").join(timestamp());
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Where the figures came from: machine, toolchain and tree.
pub(crate) fn provenance() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|k| k.trim().to_owned());
    serde_json::json!({
        "machine": {
            "cpu": cpu,
            "cores": cpu_count(),
            "kernel": kernel,
        },
        "rustc": fact("rustc", &["-V"]),
        "valgrind": fact("valgrind", &["--version"]),
        "git": fact("git", &["rev-parse", "HEAD"]),
        "date": timestamp(),
    })
}

/// Paths with uncommitted changes (`git status --porcelain`), or an error if git cannot tell.
pub(crate) fn dirty_paths() -> TaskResult<Vec<String>> {
    let mut status = Command::new("git");
    status.args(["status", "--porcelain"]).current_dir(root());
    let text = capture(status)?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// The median over a `sheafbench` result's runs (one entry of its `runs`) of each run's
/// throughput, ops/s; `None` when it holds no positive sample (a failed measurement).
pub(crate) fn median_run_throughput(run: &serde_json::Value) -> Option<f64> {
    let samples: Vec<f64> = run["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sample| sample["throughput_ops_per_s"].as_f64())
        .filter(|ops| ops.is_finite() && *ops > 0.0)
        .collect();
    harness::stats::median(&samples)
}

/// Reads a JSON file.
pub(crate) fn read_json(path: &Path) -> TaskResult<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| TaskError::Failed(format!("{}: not valid JSON: {e}", path.display())))
}

/// Writes a file atomically (temporary file in the same directory, then rename).
pub(crate) fn write_atomic(path: &Path, contents: &str) -> TaskResult {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| TaskError::Failed(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_cargos_manifest_parent_else_the_nearest_above_the_cwd() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let dir = tmp.path().join(name);
            std::fs::create_dir_all(dir.join("xtask")).unwrap();
            std::fs::create_dir_all(dir.join("deep/er")).unwrap();
            std::fs::write(dir.join("xtask/Cargo.toml"), "").unwrap();
            std::fs::write(dir.join("Cargo.toml"), "[package]\n\n[workspace]\n").unwrap();
            dir
        };
        let (a, b) = (make("a"), make("b"));
        let deep = b.join("deep/er");
        assert_eq!(find_root(None, &deep), Some(b.clone()));
        assert_eq!(find_root(Some(a.join("xtask")), &deep), Some(a.clone()));
        // A manifest directory that is not in a workspace is passed over.
        assert_eq!(find_root(Some(tmp.path().join("xtask")), &deep), Some(b));
        // A Cargo.toml without [workspace] is not a workspace root.
        std::fs::write(a.join("Cargo.toml"), "[package]\n").unwrap();
        assert_eq!(find_root(None, &a.join("deep")), None);
    }

    #[test]
    fn positive_numbers_are_whole_and_above_zero() {
        assert_eq!(positive::<usize>("12").unwrap(), 12);
        assert_eq!(positive::<u32>("1").unwrap(), 1);
        for bad in ["0", "-1", "1.5", "x", ""] {
            let error = positive::<usize>(bad).unwrap_err();
            assert_eq!(error, "expected a whole number above 0");
        }
        assert!(positive::<u32>("4294967296").is_err());
    }

    #[test]
    fn allocator_lists_drop_blanks_and_keep_the_order() {
        assert_eq!(
            allocator_list(" sheaf, ,mimalloc ").unwrap(),
            Names(vec!["sheaf".into(), "mimalloc".into()])
        );
        for bad in ["", ",", " , "] {
            assert!(allocator_list(bad).unwrap_err().contains("at least one"));
        }
    }

    #[test]
    fn existing_files_are_made_absolute() {
        let manifest = existing_file("Cargo.toml").unwrap();
        assert!(manifest.is_absolute() && manifest.ends_with("Cargo.toml"));
        assert_eq!(
            existing_file("no/such/file.yaml").unwrap_err(),
            "no such file"
        );
        assert!(existing_file(".").is_err(), "a directory is not a file");
    }

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(format_timestamp(0), "1970-01-01T00-00-00Z");
        // 2024-02-29 12:34:56 UTC (a leap day).
        assert_eq!(format_timestamp(1_709_210_096), "2024-02-29T12-34-56Z");
        // 2026-11-25 00:00:00 UTC.
        assert_eq!(format_timestamp(1_795_564_800), "2026-11-25T00-00-00Z");
    }

    #[test]
    fn default_suite_is_read_from_the_top_level_field() {
        assert!(in_default_suite("name: a\nsuite: default\n"));
        assert!(in_default_suite("suite: \"default\"  # the README suite\n"));
        assert!(!in_default_suite("suite: sweep\n"));
        assert!(!in_default_suite("name: default\n"));
        assert!(!in_default_suite("params:\n  suite: default\n"));
    }
}
