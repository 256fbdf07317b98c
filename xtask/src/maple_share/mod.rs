//! `cargo xtask maple-share`: how large a share of a maple-tree write is the allocator?
//!
//! For each design, `crates/cli/examples/maple_instructions.rs` replays the stream of a
//! `maple-tree` spec on one thread under callgrind, which collects only the measured writes
//! (`--toggle-collect='*measured_writes*'`). `callgrind_annotate --inclusive=no
//! --tree=caller` then gives the instructions of each `file:function` pair, where `file` is the
//! source file the instructions came from (inlined code keeps its own file) and `function` the
//! symbol they were compiled into, and the callers of each function.
//!
//! The allocator's instructions are told from the rest's by `profile`, which reads the
//! annotated profile and classifies each line by its source file and function.
//!
//! The table gives, per design: the instructions per write (callgrind's total divided by the
//! writes the example reports), the allocator's and the rest's, the allocator's share, the
//! total against sheaf's, and a *zero-cost bound*: the design's total divided by the lowest
//! rest per write of all rows, i.e. how many times fewer instructions a write would take if
//! that design's allocator cost nothing and the tree did no more work than in the leanest row.
//!
//! How to read it:
//! - Instruction counts are exact and repeatable for a given binary, but they are not time:
//!   the cache misses of the node copies a write makes are not counted, nor is contention
//!   (one thread), so a share of instructions is not a share of time.
//! - valgrind does not support rseq, so under it the per-CPU designs read the CPU with
//!   `sched_getcpu` on every operation, which real runs do not pay: their allocator figures
//!   (and shares) are upper bounds.
//!
//! Options: `--alloc a,b` (default: every design the example lists), `--spec FILE` (default
//! `workloads/maple-tree.yaml`), `--passes N` (measured passes, default 2), `--json FILE`
//! (also write the rows as JSON). The callgrind profiles stay in `<target>/maple-share/`.

mod profile;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Parser;

use crate::util::{self, Names, TaskError, TaskResult};
use profile::{allocator_instructions, parse_annotate};

/// Instructions per maple-tree write under callgrind, split between the allocator and the
/// tree, per design.
#[derive(Debug, Parser)]
pub(crate) struct Options {
    /// Designs (default: every design `maple_instructions --list` prints).
    #[arg(long = "alloc", value_name = "LIST", value_parser = util::allocator_list)]
    allocators: Option<Names>,
    /// A maple-tree workload spec (default workloads/maple-tree.yaml).
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// Measured passes over the stream.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = util::positive::<u32>)]
    passes: u32,
    /// Also write the rows as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

impl Options {
    /// The spec, absolute (the example runs in the workspace root): `--spec`, or the
    /// workspace's maple-tree.yaml.
    fn spec(&self) -> TaskResult<PathBuf> {
        let spec = match &self.spec {
            Some(spec) => {
                std::path::absolute(spec).map_err(|e| format!("--spec {}: {e}", spec.display()))?
            }
            None => util::root().join("workloads").join("maple-tree.yaml"),
        };
        if !spec.is_file() {
            return Err(TaskError::Usage(format!(
                "maple-share: --spec {}: no such file",
                spec.display()
            )));
        }
        Ok(spec)
    }
}

/// `cargo xtask maple-share`.
pub(crate) fn maple_share(options: Options) -> TaskResult {
    // `callgrind_annotate --version` exits with an error status in some versions: that it
    // starts at all is the check.
    let annotate_present = Command::new("callgrind_annotate")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    for (tool, present) in [
        ("valgrind", util::fact("valgrind", &["--version"]).is_some()),
        ("callgrind_annotate", annotate_present),
    ] {
        if !present {
            return Err(TaskError::Failed(format!(
                "{tool} not found (the instruction counts run under callgrind): install \
                 valgrind, e.g. `apt-get install valgrind`"
            )));
        }
    }
    let spec = options.spec()?;
    let exe = build_example()?;
    let allocators = if let Some(names) = &options.allocators {
        names.0.clone()
    } else {
        let mut list = Command::new(&exe);
        list.current_dir(util::root()).arg("--list");
        let names: Vec<String> = util::capture(list)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if names.is_empty() {
            return Err(TaskError::Failed(format!(
                "{} --list printed no design",
                exe.display()
            )));
        }
        names
    };
    let dir = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| util::root().join("target"), PathBuf::from)
        .join("maple-share");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;

    let mut rows = Vec::new();
    for (i, name) in allocators.iter().enumerate() {
        eprintln!(
            "xtask: maple-share {}/{}: {name} under callgrind",
            i + 1,
            allocators.len()
        );
        rows.push(measure(&exe, name, &spec, options.passes, &dir)?);
    }
    let table = render(&rows);
    print!("{table}");
    if let Some(path) = &options.json {
        let report = serde_json::json!({
            "provenance": util::provenance(),
            "spec": spec.display().to_string(),
            "passes": options.passes,
            "unit": "instructions per tree write, one thread, under callgrind",
            "lowest_rest_per_write": lowest_rest(&rows).map(|(_, rest)| rest),
            "rows": rows.iter().map(|r| serde_json::json!({
                "design": r.design,
                "writes": r.writes,
                "instructions": r.total,
                "allocator_instructions": r.allocator,
                "rest_instructions": r.rest(),
                "per_write": r.per_write(r.total),
                "allocator_per_write": r.per_write(r.allocator),
                "rest_per_write": r.per_write(r.rest()),
                "allocator_share": r.share(),
                "total_vs_sheaf": vs_sheaf(&rows, r),
                "zero_cost_bound": zero_cost_bound(&rows, r),
            })).collect::<Vec<_>>(),
        });
        let mut text = serde_json::to_string_pretty(&report).unwrap_or_else(|_| report.to_string());
        text.push('\n');
        util::write_atomic(path, &text)?;
        println!("rows in {}", path.display());
    }
    eprintln!("xtask: callgrind profiles in {}", dir.display());
    Ok(())
}

/// Builds the example in release and returns its executable.
fn build_example() -> TaskResult<PathBuf> {
    util::build_executable(
        &[
            "build",
            "--release",
            "-p",
            "sheafbench",
            "--example",
            "maple_instructions",
        ],
        "maple_instructions",
    )
}

/// Runs the example for `name` under callgrind and splits the profile.
fn measure(exe: &Path, name: &str, spec: &Path, passes: u32, dir: &Path) -> TaskResult<Share> {
    let profile = dir.join(format!("callgrind.out.{name}"));
    let mut callgrind = Command::new("valgrind");
    callgrind
        .current_dir(util::root())
        .args([
            "-q",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=*measured_writes*",
        ])
        .arg(format!("--callgrind-out-file={}", profile.display()))
        .arg(exe)
        .arg(name)
        .arg(spec)
        .arg(passes.to_string());
    eprintln!("xtask: running {}", util::describe(&callgrind));
    let output = callgrind
        .output()
        .map_err(|e| format!("cannot start {}: {e}", util::describe(&callgrind)))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(TaskError::Failed(format!(
            "{} failed ({}):\n{}",
            util::describe(&callgrind),
            output.status,
            stderr.trim_end()
        )));
    }
    let writes = parse_writes(&stdout).ok_or_else(|| {
        TaskError::Failed(format!(
            "{name}: the example printed no `writes N` line (N above 0); stdout:\n{}\nstderr:\n{}",
            stdout.trim_end(),
            stderr.trim_end()
        ))
    })?;

    let mut annotate = Command::new("callgrind_annotate");
    annotate
        .current_dir(util::root())
        .args([
            "--inclusive=no",
            "--tree=caller",
            "--auto=no",
            "--threshold=100",
        ])
        .arg(&profile);
    let text = util::capture(annotate)?;
    let profile_lines = parse_annotate(&text).map_err(|e| format!("{}: {e}", profile.display()))?;
    let allocator = allocator_instructions(&profile_lines);
    let listed: u64 = profile_lines.lines.iter().map(|l| l.count).sum();
    if listed != profile_lines.total {
        eprintln!(
            "xtask: {name}: the listed lines sum to {listed}, the profile's total is {}; the \
             difference counts as the rest",
            profile_lines.total
        );
    }
    Ok(Share {
        design: name.to_owned(),
        writes,
        total: profile_lines.total,
        allocator,
    })
}

/// The `N` of the example's `writes N` line, if above zero.
fn parse_writes(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("writes "))
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n| n > 0)
}

/// One design's instructions over the measured writes.
#[derive(Debug)]
struct Share {
    design: String,
    writes: u64,
    total: u64,
    allocator: u64,
}

impl Share {
    fn rest(&self) -> u64 {
        self.total.saturating_sub(self.allocator)
    }

    fn per_write(&self, instructions: u64) -> f64 {
        instructions as f64 / self.writes as f64
    }

    /// The allocator's fraction of the total.
    fn share(&self) -> Option<f64> {
        (self.total > 0).then(|| self.allocator as f64 / self.total as f64)
    }
}

/// The row with the fewest rest instructions per write, and that figure.
fn lowest_rest(rows: &[Share]) -> Option<(&str, f64)> {
    rows.iter()
        .map(|r| (r.design.as_str(), r.per_write(r.rest())))
        .filter(|(_, rest)| *rest > 0.0)
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// `row`'s total per write over sheaf's, when sheaf is a row.
fn vs_sheaf(rows: &[Share], row: &Share) -> Option<f64> {
    let sheaf = rows.iter().find(|r| r.design == "sheaf")?;
    let base = sheaf.per_write(sheaf.total);
    (base > 0.0).then(|| row.per_write(row.total) / base)
}

/// `row`'s total per write over the lowest rest per write of all rows.
fn zero_cost_bound(rows: &[Share], row: &Share) -> Option<f64> {
    lowest_rest(rows).map(|(_, rest)| row.per_write(row.total) / rest)
}

fn render(rows: &[Share]) -> String {
    let mut text = format!(
        "{:<18} {:>10} {:>10} {:>10} {:>7} {:>9} {:>10}\n",
        "design", "Ir/write", "alloc", "rest", "share", "vs sheaf", "zero-cost"
    );
    let ratio = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}x"));
    for row in rows {
        text.push_str(&format!(
            "{:<18} {:>10.1} {:>10.1} {:>10.1} {:>7} {:>9} {:>10}\n",
            row.design,
            row.per_write(row.total),
            row.per_write(row.allocator),
            row.per_write(row.rest()),
            row.share()
                .map_or_else(|| "-".into(), |s| format!("{:.1}%", s * 100.0)),
            ratio(vs_sheaf(rows, row)),
            ratio(zero_cost_bound(rows, row)),
        ));
    }
    match lowest_rest(rows) {
        Some((design, rest)) => text.push_str(&format!(
            "\nlowest rest: {rest:.1} instructions per write ({design}); zero-cost = Ir/write / \
             {rest:.1}, how many times fewer instructions a write would take if its allocator \
             cost nothing\n"
        )),
        None => text.push_str("\nno row has a rest above zero: no zero-cost bound\n"),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> TaskResult<Options> {
        crate::parse_task_args(args)
    }

    #[test]
    fn options_have_defaults_and_refuse_bad_values() {
        let o = parse(&[]).expect("defaults");
        assert_eq!(o.allocators, None);
        assert!(o.spec().unwrap().ends_with("workloads/maple-tree.yaml"));
        assert_eq!(o.passes, 2);
        assert_eq!(o.json, None);
        let o = parse(&[
            "--alloc",
            "sheaf, mimalloc",
            "--passes",
            "3",
            "--spec",
            "x.yaml",
            "--json",
            "out.json",
        ])
        .expect("valid");
        assert_eq!(o.allocators.as_ref().unwrap().0, ["sheaf", "mimalloc"]);
        assert_eq!(o.passes, 3);
        assert_eq!(o.spec, Some(PathBuf::from("x.yaml")));
        assert!(matches!(o.spec(), Err(TaskError::Usage(e)) if e.contains("no such file")));
        assert_eq!(o.json, Some(PathBuf::from("out.json")));
        crate::assert_usage_errors::<Options>(&[
            (&["--passes", "0"][..], "expected a whole number above 0"),
            (&["--passes", "two"], "expected a whole number above 0"),
            (&["--alloc", ","], "at least one allocator name"),
            (&["--json"], "a value is required"),
            (&["--fast"], "--fast"),
        ]);
    }

    #[test]
    fn writes_are_read_from_the_example_output() {
        assert_eq!(parse_writes("writes 4096\n"), Some(4096));
        assert_eq!(parse_writes("writes 0\n"), None);
        assert_eq!(parse_writes("nothing\n"), None);
    }

    #[test]
    fn table_gives_shares_ratios_and_the_bound() {
        let rows = [
            Share {
                design: "sheaf".into(),
                writes: 100,
                total: 100_000,
                allocator: 20_000,
            },
            Share {
                design: "mimalloc".into(),
                writes: 100,
                total: 150_000,
                allocator: 75_000,
            },
        ];
        let expected = "\
design               Ir/write      alloc       rest   share  vs sheaf  zero-cost
sheaf                  1000.0      200.0      800.0   20.0%     1.00x      1.33x
mimalloc               1500.0      750.0      750.0   50.0%     1.50x      2.00x

lowest rest: 750.0 instructions per write (mimalloc); zero-cost = Ir/write / 750.0, how \
many times fewer instructions a write would take if its allocator cost nothing
";
        assert_eq!(render(&rows), expected);
        let alone = render(&rows[1..]);
        assert!(alone.contains("   50.0%         -      2.00x"), "{alone}");
    }
}
