//! `cargo xtask ab`: the working tree against a revision, measured in the same rounds.
//!
//! The revision's sources (`git archive`, no checkout touched) go to
//! `target/ab/src-<commit>/`, are built in release into `target/ab/target/` (one target
//! directory for every revision, so a second revision rebuilds only what changed), and the
//! binary is kept as `target/ab/sheafbench-<commit>`. The working tree, committed or not, is
//! built as `cargo build --release -p sheafbench` builds it. Then `sheafbench ab` measures
//! both in interleaved rounds and judges each allocator's change, into
//! `results/runs/<time>/` (`ab.json`, `ab-verdicts.json`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Parser;

use crate::util::{self, TaskError, TaskResult};

/// The working tree against a revision, both built in release, in the same rounds.
#[derive(Debug, Parser)]
pub(crate) struct Options {
    /// The revision to compare against (anything `git rev-parse` takes).
    #[arg(long, default_value = "HEAD")]
    base: String,
    /// A workload spec (repeatable; default: churn-lifo, churn-random, burst and
    /// prefill-burst).
    #[arg(long = "workload", value_name = "FILE", value_parser = util::existing_file)]
    workloads: Vec<PathBuf>,
    /// Allocators, comma-separated.
    #[arg(long, default_value = "sheaf,mimalloc")]
    alloc: String,
    /// Thread counts (`sheafbench` syntax: 1,2 or 1..4; default: each spec's).
    #[arg(long)]
    threads: Option<String>,
    /// Rounds: each measures every allocator with both builds.
    #[arg(long, default_value_t = 20, value_parser = util::positive::<u32>)]
    runs: u32,
    /// Length of each measured run.
    #[arg(long, default_value = "100ms")]
    duration: String,
    /// The smallest change given a verdict, in percent.
    #[arg(long, default_value_t = 2.0)]
    floor: f64,
    /// Fail (exit 1) when any row is called "slower": a check for CI.
    #[arg(long)]
    fail_on_slower: bool,
}

/// Workload specs measured by default.
const WORKLOADS: [&str; 4] = [
    "churn-lifo.yaml",
    "churn-random.yaml",
    "burst.yaml",
    "prefill-burst.yaml",
];

/// The full commit name of `revision`.
fn commit_of(root: &Path, revision: &str) -> TaskResult<String> {
    let mut git = Command::new("git");
    git.arg("-C")
        .arg(root)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("{revision}^{{commit}}"));
    util::capture(git)
        .map(|out| out.trim().to_owned())
        .map_err(|_| {
            TaskError::Failed(format!(
                "--base {revision}: not a revision of {}",
                root.display()
            ))
        })
}

/// The sources of `commit` in `dir` (extracted once: a directory that exists is complete,
/// since it is renamed into place only after `git archive` and `tar` succeeded).
fn sources(root: &Path, commit: &str, dir: &Path) -> TaskResult {
    if dir.join("Cargo.toml").exists() {
        return Ok(());
    }
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run git archive: {e}"))?;
    let stdout = archive.stdout.take().expect("piped");
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&partial)
        .stdin(stdout)
        .status()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let archived = archive
        .wait()
        .map_err(|e| format!("git archive failed: {e}"))?;
    if !archived.success() || !tar.success() {
        return Err(TaskError::Failed(format!(
            "extracting {commit} into {} failed (git archive: {archived}, tar: {tar})",
            partial.display()
        )));
    }
    std::fs::rename(&partial, dir)
        .map_err(|e| TaskError::Failed(format!("cannot rename into {}: {e}", dir.display())))
}

/// The release binary of `commit`, built from `sources` and kept under `ab`.
fn build_base(ab: &Path, commit: &str, sources: &Path) -> TaskResult<PathBuf> {
    let manifest = sources.join("Cargo.toml");
    let target = ab.join("target");
    let utf8 = |path: &Path| {
        path.to_str()
            .map(str::to_owned)
            .ok_or_else(|| TaskError::Failed(format!("{}: not UTF-8", path.display())))
    };
    let (manifest, target) = (utf8(&manifest)?, utf8(&target)?);
    let args = [
        "build",
        "--release",
        "-p",
        "sheafbench",
        "--manifest-path",
        &manifest,
        "--target-dir",
        &target,
    ];
    let built = util::build_executable(&args, "sheafbench")?;
    let kept = ab.join(format!("sheafbench-{}", &commit[..12.min(commit.len())]));
    std::fs::copy(&built, &kept)
        .map_err(|e| format!("cannot copy {} to {}: {e}", built.display(), kept.display()))?;
    Ok(kept)
}

/// `cargo xtask ab`.
pub(crate) fn ab(options: Options) -> TaskResult {
    if !(options.floor.is_finite() && (0.0..=50.0).contains(&options.floor)) {
        return Err(TaskError::Failed(format!(
            "--floor {}: expected a change in percent between 0 and 50",
            options.floor
        )));
    }
    let root = util::root();
    let commit = commit_of(&root, &options.base)?;
    let mut workloads = options.workloads;
    if workloads.is_empty() {
        workloads = WORKLOADS
            .iter()
            .map(|name| root.join("workloads").join(name))
            .collect();
    }
    let ab = util::target_dir().join("ab");
    let src = ab.join(format!("src-{commit}"));
    sources(&root, &commit, &src)?;
    let old = build_base(&ab, &commit, &src)?;
    let new = util::build_sheafbench(None)?;
    let head = commit_of(&root, "HEAD")?;
    // Untracked files count: the build may compile them.
    let dirty = !util::dirty_paths()?.is_empty();
    let tree = if dirty {
        format!("the working tree ({head} with uncommitted changes)")
    } else {
        format!("the working tree ({head})")
    };
    println!("old: {} ({commit}); new: {tree}", options.base);
    if head == commit && !dirty {
        println!("note: the base is the working tree's own commit, unchanged: an A/A run");
    }
    let dir = util::new_run_dir()?;
    let (json, verdicts) = (dir.join("ab.json"), dir.join("ab-verdicts.json"));
    let mut run = Command::new(&new);
    run.current_dir(&root)
        .arg("ab")
        .arg("--old")
        .arg(&old)
        .arg("--new")
        .arg(&new)
        .args(&workloads)
        .args(["--alloc", &options.alloc])
        .args(["--runs", &options.runs.to_string()])
        .args(["--duration", &options.duration])
        .args(["--floor", &options.floor.to_string()])
        .arg("--json")
        .arg(&json)
        .arg("--verdicts")
        .arg(&verdicts);
    if let Some(threads) = &options.threads {
        run.args(["--threads", threads]);
    }
    if options.fail_on_slower {
        run.arg("--fail-on-slower");
    }
    eprintln!("xtask: running {}", util::describe(&run));
    let status = run
        .status()
        .map_err(|e| format!("cannot start {}: {e}", util::describe(&run)))?;
    // Status 1 from `ab --fail-on-slower` with rows called slower is a regression (as the
    // gate's); a measurement that failed is said so on the lines above it.
    let measured = match status.code() {
        Some(0) => Ok(()),
        Some(1) if options.fail_on_slower => Err(TaskError::Regression(
            "ab: the working tree is slower than the base (rows above; or a measurement failed)"
                .into(),
        )),
        _ => Err(TaskError::Failed(format!(
            "sheafbench ab failed ({status})"
        ))),
    };
    println!(
        "files in {} (ab.json: every measurement; ab-verdicts.json: the table's rows)",
        dir.display()
    );
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sources_of_a_revision_are_extracted_whole_and_once() {
        let root = util::root();
        let commit = commit_of(&root, "HEAD").unwrap();
        assert_eq!(commit.len(), 40, "{commit}");
        assert!(commit_of(&root, "no-such-revision-here").is_err());
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join(format!("src-{commit}"));
        sources(&root, &commit, &src).unwrap();
        for file in [
            "Cargo.toml",
            "Cargo.lock",
            "crates/sheaf/src/lib.rs",
            "xtask/src/main.rs",
        ] {
            assert!(src.join(file).is_file(), "{file} missing");
        }
        assert!(!src.with_extension("partial").exists());
        // Extracted once: a file added since stays (nothing is extracted again).
        std::fs::write(src.join("marker"), "").unwrap();
        sources(&root, &commit, &src).unwrap();
        assert!(src.join("marker").exists());
    }
}
