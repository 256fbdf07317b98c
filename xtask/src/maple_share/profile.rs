//! The annotated callgrind profile of a maple-share run, and whose code each of its lines is.
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

use std::collections::BTreeMap;

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

/// One line of `callgrind_annotate`: instructions of a `file:function` pair.
#[derive(Debug, PartialEq)]
pub(super) struct Line {
    /// Instructions.
    pub(super) count: u64,
    file: String,
    function: String,
}

/// What `callgrind_annotate --inclusive=no --tree=caller` reports: the program's total, the
/// instructions of every `file:function` pair, and the callers of each function with the
/// inclusive instructions of their calls.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Profile {
    /// The program's total.
    pub(super) total: u64,
    /// Every `file:function` line.
    pub(super) lines: Vec<Line>,
    /// By function name: each call site (`file:function` of the caller) and the inclusive
    /// instructions of its calls.
    callers: BTreeMap<String, Vec<Line>>,
}

/// Reads the output of `callgrind_annotate --inclusive=no --auto=no [--tree=caller]`: the
/// `PROGRAM TOTALS` line, every `COUNT [(PERCENT)] [*] FILE:FUNCTION [OBJECT]` line (counts
/// with thousands separators) and, with `--tree=caller`, the `COUNT [(PERCENT)] < FILE:FUNCTION
/// (Nx) [OBJECT]` lines that precede a function's `*` line and name its callers; every other
/// line (header, rules, column titles) is skipped.
pub(super) fn parse_annotate(text: &str) -> Result<Profile, String> {
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
pub(super) fn allocator_instructions(profile: &Profile) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
