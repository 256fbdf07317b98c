//! The C allocator contract and real programs, run with `libsheaf_malloc.so` preloaded.
//!
//! `tests/c/malloc_contract.c` is compiled with the system's `cc` and run twice: plain (the C
//! library's malloc must pass it, which checks the checks) and preloaded with
//! `SHEAF_EXPECT=1` (it then also requires the library to be the process's `malloc`). Then
//! `sort` and, where installed, `python3` run with and without the library and must print the
//! same. Every child runs under a deadline and is killed past it, so a hang fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{check_success, library};

const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `command` to completion within [`DEADLINE`], killing it past that.
fn run(command: &mut Command) -> Output {
    common::run(command, DEADLINE)
}

fn preloaded(program: &str) -> Command {
    let mut command = Command::new(program);
    command.env("LD_PRELOAD", library());
    command
}

fn contract_binary() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/malloc_contract.c");
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join("malloc_contract");
    let output = run(Command::new("cc")
        .args(["-O1", "-pthread", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&binary)
        .arg(&source)
        // `dlsym` and `dladdr` live in libdl before glibc 2.34 (an empty stub after).
        .arg("-ldl"));
    check_success(
        &output,
        "cc malloc_contract.c (a C compiler is needed: install gcc)",
    );
    binary
}

#[test]
fn c_malloc_contract_holds_for_glibc_and_when_preloaded() {
    let binary = contract_binary();
    let plain = run(&mut Command::new(&binary));
    check_success(&plain, "the contract test under the C library's malloc");
    // Both ways the per-CPU caches take their slot: restartable sequences where the machine
    // has them, and the compare-exchange lock (`SHEAF_RSEQ=0`).
    for rseq in ["1", "0"] {
        let sheaf = run(preloaded(binary.to_str().expect("a UTF-8 path"))
            .env("SHEAF_EXPECT", "1")
            .env("SHEAF_RSEQ", rseq));
        check_success(
            &sheaf,
            &format!("the contract test with libsheaf_malloc.so preloaded, SHEAF_RSEQ={rseq}"),
        );
        let printed = String::from_utf8_lossy(&sheaf.stdout);
        for section in [
            "sizes",
            "alignments",
            "realloc",
            "calloc",
            "threads",
            "fork",
        ] {
            assert!(
                printed.contains(&format!("ok {section}\n")),
                "section {section} did not pass (SHEAF_RSEQ={rseq}):\n{printed}"
            );
        }
    }
}

/// Pseudo-random lines (a fixed linear congruential sequence), so that runs compare.
fn lines(count: usize) -> String {
    let mut state = 0x2545_f491_u64;
    let mut text = String::new();
    for i in 0..count {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let len = 1 + (state >> 58) as usize;
        let word: String = (0..len)
            .map(|k| char::from(b'a' + ((state >> (k * 3 % 50)) % 26) as u8))
            .collect();
        text.push_str(&format!("{word} {i}\n"));
    }
    text
}

#[test]
fn sort_prints_the_same_preloaded() {
    let input = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sort-input.txt");
    std::fs::write(&input, lines(200_000)).expect("write the input");
    let plain = run(Command::new("sort").arg(&input));
    check_success(&plain, "sort");
    let sheaf = run(preloaded("sort").arg(&input));
    check_success(&sheaf, "sort preloaded");
    assert_eq!(plain.stdout.len(), sheaf.stdout.len());
    assert!(plain.stdout == sheaf.stdout, "sort printed differently");
    let _ = std::fs::remove_file(&input);
}

#[test]
fn python_prints_the_same_preloaded() {
    let script = "import json, threading\n\
        docs = [{'k%d' % i: list(range(i % 50)), 's': 'x' * (i % 300)} for i in range(40000)]\n\
        text = json.dumps(docs)\n\
        back = json.loads(text)\n\
        def work(n):\n    return sum(len(json.dumps(d)) for d in back[n::4])\n\
        out = []\n\
        ts = [threading.Thread(target=lambda n=n: out.append(work(n))) for n in range(4)]\n\
        [t.start() for t in ts]; [t.join() for t in ts]\n\
        print(len(text), sorted(out))\n";
    let plain = match Command::new("python3").arg("-c").arg("print(1)").output() {
        Ok(probe) if probe.status.success() => run(Command::new("python3").arg("-c").arg(script)),
        // Not every machine has Python; `sort` above always runs.
        _ => return eprintln!("python3 not found: skipped"),
    };
    check_success(&plain, "python3");
    let sheaf = run(preloaded("python3").arg("-c").arg(script));
    check_success(&sheaf, "python3 preloaded");
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        String::from_utf8_lossy(&sheaf.stdout)
    );
}
