//! `cargo xtask maple-share`: how large a share of a maple-tree write is the allocator?
//!
//! For each design, `crates/cli/examples/maple_instructions.rs` replays the stream of a
//! `maple-tree` spec on one thread under callgrind, which collects only the measured writes
//! (`--toggle-collect='*measured_writes*'`). `callgrind_annotate --inclusive=no
//! --tree=caller` then gives the instructions of each `file:function` pair, where `file` is the
//! source file the instructions came from (inlined code keeps its own file) and `function` the
//! symbol they were compiled into, and the callers of each function.
//!
//! The allocator's instructions are those whose source or enclosing function is allocator
//! code ([`ALLOCATOR_FILES`], [`ALLOCATOR_FUNCTIONS`]: the designs' crates, the CLI's registry
//! that defines `sheaf-bulkprefill`, the libraries they link, glibc's malloc), with the tree's
//! own code kept on the tree's side: a line whose file is in `crates/maple/` is the tree's
//! whatever function it was inlined into (the tree's calls into the allocator), and so is a
//! line of a tree function (`maple::…`) whose file is not an allocator's (standard-library code
//! inlined into the tree). The replay loop (`measured_writes`, `one_pass`) counts with the
//! tree. A line that is neither's by its file or its function is a helper (glibc's `memcpy`,
//! the standard library's clock, compiler builtins, a closure's shim): its instructions are
//! split among the call sites of its function in proportion to the instructions of their
//! calls, so that a `memcpy` of the allocator's goes to the allocator and one of the tree's to
//! the tree. Everything that is not the allocator's is *the rest*: the tree's own work and the
//! replay loop.
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

use std::collections::BTreeMap;
use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Parser;

use crate::util::{self, Names, TaskError, TaskResult};

/// Source-file fragments of allocator code: the designs' crates (including the registry of the
/// CLI, which defines `sheaf-bulkprefill`), the libraries they link (crossbeam, mimalloc,
/// jemalloc, rustix for the CPU and thread lookups), glibc's `malloc/` directory and its
/// `sched_getcpu`.
const ALLOCATOR_FILES: &[&str] = &[
    "/crates/sheaf/",
    "/crates/slab/",
    "/crates/object-alloc/",
    "/baselines/",
    "registry.rs",
    "crossbeam-epoch",
    "crossbeam-utils",
    "libmimalloc-sys",
    "tikv-jemalloc-sys",
    "/rustix-",
    "/malloc/",
    "sched_getcpu",
];

/// How a function name marks allocator code.
#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// The name, without the `<` of a trait impl, starts with it.
    Prefix(&'static str),
    /// The name contains it anywhere.
    Fragment(&'static str),
}

/// Function names of allocator code: the designs' and their libraries' paths (Rust), the C
/// allocators' symbols (mimalloc's `mi_`, jemalloc's `_rjem_`, glibc's `malloc`, `free` and
/// their helpers), `sched_getcpu`, and any implementation of `ObjectAlloc` (so that
/// `sheaf-bulkprefill`'s impl and the baselines' impls count whatever code they inline).
const ALLOCATOR_FUNCTIONS: &[Pattern] = &[
    Pattern::Prefix("sheaf::"),
    Pattern::Prefix("slab::"),
    Pattern::Prefix("object_alloc::"),
    Pattern::Prefix("crossbeam_epoch::"),
    Pattern::Prefix("crossbeam_utils::"),
    Pattern::Prefix("rustix::"),
    Pattern::Prefix("baseline_"),
    Pattern::Prefix("slub_cpu_slab::"),
    Pattern::Prefix("magazine::"),
    Pattern::Prefix("locked_slab::"),
    Pattern::Prefix("mi_"),
    Pattern::Prefix("_mi_"),
    Pattern::Prefix("_rjem_"),
    Pattern::Fragment("malloc"),
    Pattern::Fragment("free"),
    Pattern::Prefix("_int_"),
    Pattern::Prefix("tcache_"),
    Pattern::Prefix("unlink_chunk"),
    Pattern::Fragment("sched_getcpu"),
    Pattern::Fragment(" as object_alloc::ObjectAlloc>"),
    Pattern::Fragment("::registry::"),
];

/// The tree's own code: its crate's files, whatever function they were inlined into, and its
/// functions, with any file that is not an allocator's (standard-library code inlined into the
/// tree).
const TREE_FILE: &str = "/crates/maple/";
const TREE_FUNCTION: &str = "maple::";

/// The replay loop of the example (`measured_writes`, `one_pass`), counted with the tree; its
/// `registry` module is the CLI's registry, an allocator's.
const REPLAY_FUNCTION: &str = "maple_instructions::";

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

/// One line of `callgrind_annotate`: instructions of a `file:function` pair.
#[derive(Debug, PartialEq)]
struct Line {
    count: u64,
    file: String,
    function: String,
}

/// What `callgrind_annotate --inclusive=no --tree=caller` reports: the program's total, the
/// instructions of every `file:function` pair, and the callers of each function with the
/// inclusive instructions of their calls.
#[derive(Debug, Default, PartialEq)]
struct Profile {
    total: u64,
    lines: Vec<Line>,
    /// By function name: each call site (`file:function` of the caller) and the inclusive
    /// instructions of its calls.
    callers: BTreeMap<String, Vec<Line>>,
}

/// Reads the output of `callgrind_annotate --inclusive=no --auto=no [--tree=caller]`: the
/// `PROGRAM TOTALS` line, every `COUNT [(PERCENT)] [*] FILE:FUNCTION [OBJECT]` line (counts
/// with thousands separators) and, with `--tree=caller`, the `COUNT [(PERCENT)] < FILE:FUNCTION
/// (Nx) [OBJECT]` lines that precede a function's `*` line and name its callers; every other
/// line (header, rules, column titles) is skipped.
fn parse_annotate(text: &str) -> Result<Profile, String> {
    let mut profile = Profile::default();
    let mut total = None;
    let mut pending: Vec<Line> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            pending.clear();
            continue;
        }
        let Some((count, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if !count.starts_with(|c: char| c.is_ascii_digit())
            || !count.chars().all(|c| c.is_ascii_digit() || c == ',')
        {
            continue;
        }
        let count: u64 = count
            .replace(',', "")
            .parse()
            .map_err(|_| format!("bad count in `{line}`"))?;
        let mut rest = rest.trim_start();
        // The percentage column of newer versions: `( 9.54%)`.
        if rest.starts_with('(')
            && let Some(end) = rest.find(')')
        {
            rest = rest[end + 1..].trim_start();
        }
        if rest == "PROGRAM TOTALS" {
            total = Some(count);
            continue;
        }
        let (is_caller, rest) = match rest.strip_prefix("< ") {
            Some(caller) => (true, caller.trim_start()),
            None => (false, rest.strip_prefix("* ").unwrap_or(rest).trim_start()),
        };
        // `FILE:FUNCTION [(Nx)] [OBJECT]`: the object is the last bracketed field (function
        // names can hold ` [`, e.g. `<impl [T]>`, object paths do not).
        let mut rest = match rest.rsplit_once(" [") {
            Some((before, object)) if object.ends_with(']') => before,
            _ => rest,
        };
        if let Some((before, calls)) = rest.rsplit_once(" (")
            && calls
                .strip_suffix("x)")
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit() || c == ','))
        {
            rest = before;
        }
        let Some((file, function)) = rest.split_once(':') else {
            continue;
        };
        let parsed = Line {
            count,
            file: file.to_owned(),
            function: function.to_owned(),
        };
        if is_caller {
            pending.push(parsed);
        } else {
            if !pending.is_empty() {
                profile
                    .callers
                    .entry(parsed.function.clone())
                    .or_default()
                    .append(&mut pending);
            }
            profile.lines.push(parsed);
        }
    }
    profile.total =
        total.ok_or("no `PROGRAM TOTALS` line: is this callgrind_annotate's output?")?;
    Ok(profile)
}

/// Whose code a `file:function` line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Allocator,
    /// The tree and the replay loop around it.
    Tree,
    /// Neither by its file nor by its function: a helper (libc's `memcpy`, the standard
    /// library's clock, compiler builtins, a closure's shim) whose instructions go to its
    /// callers.
    Helper,
}

/// Whose code the instructions of `function`, from source `file`, are.
///
/// callgrind names the workspace's files relative to the workspace root (`crates/…`) and
/// glibc's relative to its source tree (`./malloc/…`), so the file is matched as if it began
/// with `/`.
fn owner(file: &str, function: &str) -> Owner {
    let file = format!("/{}", file.trim_start_matches("./"));
    if file.contains(TREE_FILE) {
        return Owner::Tree;
    }
    if ALLOCATOR_FILES.iter().any(|f| file.contains(f)) {
        return Owner::Allocator;
    }
    let path = function.trim_start_matches('<');
    if path.starts_with(TREE_FUNCTION) {
        return Owner::Tree;
    }
    if ALLOCATOR_FUNCTIONS.iter().any(|pattern| match pattern {
        Pattern::Prefix(p) => path.starts_with(p),
        Pattern::Fragment(f) => function.contains(f),
    }) {
        return Owner::Allocator;
    }
    if path.starts_with(REPLAY_FUNCTION) {
        return Owner::Tree;
    }
    Owner::Helper
}

/// The allocator's instructions in `profile`: every allocator line, and of every helper line
/// the fraction that its callers' calls attribute to the allocator.
fn allocator_instructions(profile: &Profile) -> u64 {
    let mut fractions = BTreeMap::new();
    let allocator: f64 = profile
        .lines
        .iter()
        .map(|line| match owner(&line.file, &line.function) {
            Owner::Allocator => line.count as f64,
            Owner::Tree => 0.0,
            Owner::Helper => {
                line.count as f64
                    * allocator_fraction(profile, &line.function, &mut fractions, &mut Vec::new())
            }
        })
        .sum();
    allocator.round() as u64
}

/// The fraction of the calls of helper `function` that are the allocator's: each call site
/// weighs by the inclusive instructions of its calls and counts 1 if it is allocator code, 0
/// if it is the tree's, and its own function's fraction if it is a helper too. A helper with
/// no known caller, or reached again through a cycle of helpers, counts as the rest.
fn allocator_fraction(
    profile: &Profile,
    function: &str,
    memo: &mut BTreeMap<String, f64>,
    visiting: &mut Vec<String>,
) -> f64 {
    if let Some(&fraction) = memo.get(function) {
        return fraction;
    }
    if visiting.iter().any(|f| f == function) {
        return 0.0;
    }
    let Some(callers) = profile.callers.get(function) else {
        return 0.0;
    };
    visiting.push(function.to_owned());
    let (mut allocator, mut all) = (0.0, 0.0);
    for caller in callers {
        let weight = caller.count as f64;
        let fraction = match owner(&caller.file, &caller.function) {
            Owner::Allocator => 1.0,
            Owner::Tree => 0.0,
            Owner::Helper => allocator_fraction(profile, &caller.function, memo, visiting),
        };
        allocator += weight * fraction;
        all += weight;
    }
    visiting.pop();
    let fraction = if all > 0.0 { allocator / all } else { 0.0 };
    memo.insert(function.to_owned(), fraction);
    fraction
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

    const ANNOTATE: &str = "\
--------------------------------------------------------------------------------
Profile data file 'callgrind.out.mimalloc' (creator: callgrind-3.19.0)
--------------------------------------------------------------------------------
I1 cache:
D1 cache:
LL cache:
Timerange: Basic block 0 - 2104528
Trigger: Program termination
Profiled target:  maple_instructions mimalloc workloads/maple-tree.yaml 2 (PID 1, part 1)
Events recorded:  Ir
Events shown:     Ir
Event sort order: Ir
Thresholds:       100
Include dirs:
User annotated:
Auto-annotation:  off

--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
3,000,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                  file:function
--------------------------------------------------------------------------------

3,000,000 (100.0%)  < crates/cli/examples/maple_instructions.rs:maple_instructions::measured_writes (2x) [/t/maple_instructions]
1,228,512 (40.95%)  *  crates/maple/src/tree.rs:maple::tree::MapleTree<A>::store [/t/maple_instructions]

  228,512 ( 7.62%)  *  crates/sheaf/src/shared.rs:maple::tree::MapleTree<A>::store

   60,000 ( 2.00%)  < crates/object-alloc/src/prefill.rs:<baseline_mimalloc::MimallocCache as object_alloc::ObjectAlloc>::prefill (1,000x)
   20,000 ( 0.67%)  < /rustc/abc/library/core/src/result.rs:maple::tree::MapleTree<A>::store (1,000x)
   80,000 ( 2.67%)  *  ./string/../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S:__memcpy_avx_unaligned_erms [/usr/lib/x86_64-linux-gnu/libc.so.6]

    1,210 ( 0.04%)  *  ./malloc/./malloc/malloc.c:_int_free [/usr/lib/x86_64-linux-gnu/libc.so.6]
       42 ( 0.00%)  *  ???:core::slice::<impl [T]>::copy_from_slice [/t/maple_instructions]
";

    #[test]
    fn annotate_output_gives_the_total_every_line_and_the_callers() {
        let profile = parse_annotate(ANNOTATE).expect("valid");
        assert_eq!(profile.total, 3_000_000);
        assert_eq!(profile.lines.len(), 5);
        assert_eq!(
            profile.lines[1],
            Line {
                count: 228_512,
                file: "crates/sheaf/src/shared.rs".into(),
                function: "maple::tree::MapleTree<A>::store".into(),
            }
        );
        assert_eq!(profile.lines[0].count, 1_228_512);
        assert_eq!(profile.lines[3].function, "_int_free");
        assert_eq!(profile.lines[4].file, "???");
        assert_eq!(
            profile.lines[4].function,
            "core::slice::<impl [T]>::copy_from_slice"
        );
        let memcpy = &profile.callers["__memcpy_avx_unaligned_erms"];
        assert_eq!(memcpy.len(), 2);
        assert_eq!(memcpy[0].count, 60_000);
        assert_eq!(
            memcpy[0].function,
            "<baseline_mimalloc::MimallocCache as object_alloc::ObjectAlloc>::prefill"
        );
        assert_eq!(memcpy[1].file, "/rustc/abc/library/core/src/result.rs");
        assert_eq!(
            profile.callers["maple::tree::MapleTree<A>::store"][0].function,
            "maple_instructions::measured_writes"
        );
        assert_eq!(profile.callers.len(), 2);
        // Flat output, without percentages (older callgrind_annotate).
        let old = parse_annotate("1,000  PROGRAM TOTALS\n  900  a.rs:f [x]\nno: line\n").unwrap();
        assert_eq!(old.total, 1000);
        assert_eq!(old.lines.len(), 1);
        assert!(old.callers.is_empty());
        assert!(parse_annotate("Events shown: Ir\n").is_err());
    }

    #[test]
    fn lines_are_classified_by_file_then_function() {
        use Owner::{Allocator, Helper, Tree};
        let std_file = "/rustc/abc/library/core/src/ptr/mod.rs";
        let cases = [
            // Allocator source inlined into the tree's function: the allocator's.
            (
                "crates/sheaf/src/shared.rs",
                "maple::tree::MapleTree<A>::store",
                Allocator,
            ),
            (
                "/work/main/crates/slab/src/pool.rs",
                "maple::tree::NodeReserve<A>::finish",
                Allocator,
            ),
            // The tree's own source, whatever it calls: the tree's.
            (
                "crates/maple/src/tree.rs",
                "<sheaf::Cache<P> as object_alloc::ObjectAlloc>::prefill",
                Tree,
            ),
            // glibc's allocator.
            ("./malloc/./malloc/malloc.c", "_int_free", Allocator),
            ("???", "malloc", Allocator),
            // Standard-library code inlined into the tree: the tree's.
            (std_file, "maple::tree::Writer::build_run", Tree),
            // Standard-library code inlined into a design's trait impl: the allocator's.
            (
                std_file,
                "<baseline_mimalloc::MimallocCache as object_alloc::ObjectAlloc>::prefill",
                Allocator,
            ),
            // The CLI's registry (`sheaf-bulkprefill`), wherever the path goes through.
            (
                "crates/cli/examples/../src/registry.rs",
                "maple_instructions::measured_writes",
                Allocator,
            ),
            (
                std_file,
                "<maple_instructions::registry::SheafBulkPrefill as object_alloc::ObjectAlloc>::free",
                Allocator,
            ),
            ("???", "mi_free", Allocator),
            ("???", "_rjem_je_tcache_bin_flush_small", Allocator),
            (
                "./posix/../sysdeps/unix/sysv/linux/sched_getcpu.c",
                "sched_getcpu",
                Allocator,
            ),
            (
                "/rustc/abc/library/core/src/ptr/non_null.rs",
                "crossbeam_epoch::guard::Guard::flush",
                Allocator,
            ),
            // The replay loop: the tree's side.
            (
                "crates/cli/examples/maple_instructions.rs",
                "maple_instructions::measured_writes",
                Tree,
            ),
            (
                "crates/maple/src/ops.rs",
                "maple_instructions::one_pass",
                Tree,
            ),
            // Helpers: their callers decide.
            (
                "./string/../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S",
                "__memcpy_avx_unaligned_erms",
                Helper,
            ),
            (
                "./time/../sysdeps/unix/sysv/linux/clock_gettime.c",
                "clock_gettime@@GLIBC_2.17",
                Helper,
            ),
        ];
        for (file, function, expected) in cases {
            assert_eq!(owner(file, function), expected, "{file}:{function}");
        }
    }

    #[test]
    fn helpers_are_split_among_their_callers() {
        let profile = parse_annotate(ANNOTATE).expect("valid");
        // sheaf inlined into the store (228,512), glibc's free (1,210), and 3/4 of memcpy
        // (60,000 of its 80,000 calls' instructions come from the allocator's prefill).
        assert_eq!(allocator_instructions(&profile), 228_512 + 1_210 + 60_000);

        // A helper called by a helper: the fractions chain; a helper without callers is the
        // rest.
        let line = |count, file: &str, function: &str| Line {
            count,
            file: file.into(),
            function: function.into(),
        };
        let profile = Profile {
            total: 1_000,
            lines: vec![
                line(100, "std/time.rs", "Timespec::now"),
                line(300, "clock_gettime.c", "clock_gettime"),
                line(600, "???", "orphan"),
            ],
            callers: BTreeMap::from([
                (
                    "Timespec::now".to_owned(),
                    vec![
                        line(30, "baselines/magazine/src/lib.rs", "magazine::lock"),
                        line(10, "crates/maple/src/tree.rs", "maple::tree::store"),
                    ],
                ),
                (
                    "clock_gettime".to_owned(),
                    vec![line(8, "std/time.rs", "Timespec::now")],
                ),
            ]),
        };
        // Timespec::now: 3/4 allocator; clock_gettime: only from it, 3/4 too.
        assert_eq!(allocator_instructions(&profile), 75 + 225);
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
        for (args, message) in [
            (&["--passes", "0"][..], "expected a whole number above 0"),
            (&["--passes", "two"], "expected a whole number above 0"),
            (&["--alloc", ","], "at least one allocator name"),
            (&["--json"], "a value is required"),
            (&["--fast"], "--fast"),
        ] {
            match parse(args) {
                Err(TaskError::Usage(error)) => {
                    assert!(error.contains(message), "{args:?}: {error}")
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
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
