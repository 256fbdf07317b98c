//! The stress programs of `programs/stress/` (larson, xmalloc, cache-scratch, mstress) with
//! small arguments, plain and with `libsheaf_malloc.so` preloaded.
//!
//! Each program is compiled with the system's `cc` (warnings are errors) and run plainly and
//! preloaded (with and without restartable sequences); every run must exit 0 and print the
//! same digest of its work. The programs check every
//! object's pattern before freeing it and exit 1 on corruption, so a preloaded run that
//! hands out overlapping or clobbered memory fails here. Each child is killed after
//! [`DEADLINE`], so a hang fails the test rather than stalling the run. Without `cc` the
//! tests print why and pass.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{check_success, library, run};

/// Generous for the small arguments below, which take well under a second each.
const DEADLINE: Duration = Duration::from_secs(20);

fn have_cc() -> bool {
    let found = Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        eprintln!("skipped: no `cc` on PATH to compile programs/stress (install gcc)");
    }
    found
}

/// Compiles `programs/stress/<name>.c` into this test's scratch directory.
fn compile(name: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../programs/stress")
        .join(format!("{name}.c"));
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("stress-{name}"));
    let output = run(
        Command::new("cc")
            .args(["-O2", "-pthread", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&binary)
            .arg(&source),
        DEADLINE,
    );
    check_success(&output, &format!("cc {}", source.display()));
    binary
}

/// Runs the program plain and preloaded with `args`; both must succeed and print the same.
fn same_output_preloaded(name: &str, args: &[&str]) {
    if !have_cc() {
        return;
    }
    let binary = compile(name);
    let plain = run(Command::new(&binary).args(args), DEADLINE);
    check_success(
        &plain,
        &format!("{name} {args:?} under the C library's malloc"),
    );
    let printed = String::from_utf8_lossy(&plain.stdout);
    assert!(
        printed.contains("digest"),
        "{name} printed no digest:\n{printed}"
    );
    // Both ways the per-CPU caches take their slot: restartable sequences where the machine
    // has them, and the compare-exchange lock (`SHEAF_RSEQ=0`).
    for rseq in ["1", "0"] {
        let sheaf = run(
            Command::new(&binary)
                .args(args)
                .env("LD_PRELOAD", library())
                .env("SHEAF_RSEQ", rseq),
            DEADLINE,
        );
        check_success(
            &sheaf,
            &format!("{name} {args:?} with libsheaf_malloc.so preloaded, SHEAF_RSEQ={rseq}"),
        );
        assert_eq!(
            printed,
            String::from_utf8_lossy(&sheaf.stdout),
            "{name} {args:?}, SHEAF_RSEQ={rseq}: preloaded output differs from the C library's"
        );
    }
}

#[test]
fn larson_prints_the_same_preloaded() {
    // threads, rounds, steps per round, slots, min size, max size
    same_output_preloaded("larson", &["3", "4", "40000", "300", "16", "512"]);
}

#[test]
fn xmalloc_prints_the_same_preloaded() {
    // producers, consumers, objects per producer, batch, max size
    same_output_preloaded("xmalloc", &["2", "3", "200000", "32", "256"]);
}

#[test]
fn cache_scratch_prints_the_same_preloaded() {
    // threads, iterations, writes per object, object size
    same_output_preloaded("cache-scratch", &["3", "300", "1000", "8"]);
}

#[test]
fn mstress_prints_the_same_preloaded() {
    // threads, phases, steps per phase, live objects per thread
    same_output_preloaded("mstress", &["3", "6", "15000", "2000"]);
}
