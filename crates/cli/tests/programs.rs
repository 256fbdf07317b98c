//! `sheafbench programs` on the fixture manifest (`tests/fixtures/programs/`): tiny programs
//! that take each path of the command (a C file it builds, a setup and stdin, a checked file,
//! a client/server pair, a program missing its tool, one failing and one printing something
//! else only when a library is preloaded), run under glibc and `libsheaf_malloc.so`.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

fn sheafbench() -> Command {
    let mut command = Command::cargo_bin("sheafbench").expect("the sheafbench binary");
    command.timeout(std::time::Duration::from_secs(300));
    command
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/programs")
}

/// The library cargo built with this package's tests (sheaf-malloc is a dev-dependency), in
/// `target/<profile>/deps`; `None` (with the reason printed) when it is not there.
fn sheaf_malloc() -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("the test's path");
    let lib = exe.parent()?.join("libsheaf_malloc.so");
    if lib.exists() {
        Some(lib)
    } else {
        eprintln!(
            "skipped: {} is not built (cargo test builds it with this package's tests)",
            lib.display()
        );
        None
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every object key in `value`.
fn keys(value: &Value, out: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.insert(k.clone());
                keys(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[test]
fn programs_run_under_each_allocator_and_failures_are_the_allocators() {
    let Some(lib) = sheaf_malloc() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let db = dir.path().join("history.sqlite");
    let out: Output = sheafbench()
        .args(["programs", "--manifest"])
        .arg(fixtures().join("programs.yaml"))
        .args(["--alloc", "glibc,sheaf-malloc", "--rounds", "2", "--out"])
        .arg(&out_dir)
        .arg("--sheaf-malloc")
        .arg(&lib)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // Two failures of sheaf-malloc: the run goes on, and exits 1 at the end.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("error: preload-fails / sheaf-malloc: round 1: exit status 3\n  | stderr (last lines):\n  | boom\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: differs / sheaf-malloc: round 1: output differs from glibc's: stdout differs at line 1: `two` here, `one` in the reference"),
        "{stderr}"
    );
    assert!(
        stderr.contains("note: missing-tool: skipped: `sheafbench-no-such-tool` is not installed (apt-get install sheafbench-no-such-package, or cargo xtask setup-programs)"),
        "{stderr}"
    );
    assert!(stderr.contains("error: programs: 2 failure(s)"), "{stderr}");

    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("programs.json")).unwrap())
            .unwrap();
    let p = &file["programs"];
    assert_eq!(p["rounds"], 2);
    assert_eq!(p["baseline"], "glibc");
    assert_eq!(p["reference"], "glibc");
    assert_eq!(p["allocators"][0]["name"], "glibc");
    assert!(p["allocators"][0]["library"].is_null());
    assert_eq!(p["allocators"][1]["name"], "sheaf-malloc");
    assert!(
        p["allocators"][1]["library"]
            .as_str()
            .unwrap()
            .ends_with("libsheaf_malloc.so")
    );
    let programs = p["programs"].as_array().unwrap();
    let names: Vec<&str> = programs
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    let python = names.contains(&"echo-server");
    let mut expected = vec!["churn", "shell", "sorted", "preload-fails", "differs"];
    if python {
        expected.push("echo-server");
    }
    assert_eq!(names, expected);
    let program = |name: &str| programs.iter().find(|x| x["name"] == name).unwrap();
    for name in expected
        .iter()
        .filter(|n| !["preload-fails", "differs"].contains(n))
    {
        let [glibc, sheaf] = &program(name)["allocators"].as_array().unwrap()[..] else {
            panic!("two allocators for {name}")
        };
        assert_eq!(glibc["allocator"], "glibc");
        assert_eq!(sheaf["allocator"], "sheaf-malloc");
        for a in [glibc, sheaf] {
            assert!(a["failure"].is_null(), "{name}: {a}");
            let rounds = a["rounds"].as_array().unwrap();
            assert_eq!(rounds.len(), 2, "{name}");
            for r in rounds {
                assert!(r["wall_seconds"].as_f64().unwrap() > 0.0);
                assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0);
            }
            assert!(a["wall_seconds"].as_f64().unwrap() > 0.0);
        }
        // The baseline has no ratio to itself; the other has both, paired over both rounds.
        assert!(glibc.get("wall_ratio").is_none());
        for ratio in ["wall_ratio", "rss_ratio"] {
            let r = &sheaf[ratio];
            assert_eq!(r["rounds"].as_array().unwrap().len(), 2, "{name} {ratio}");
            let (estimate, low, high) = (
                r["estimate"].as_f64().unwrap(),
                r["interval"][0].as_f64().unwrap(),
                r["interval"][1].as_f64().unwrap(),
            );
            assert!(low <= estimate && estimate <= high, "{name} {ratio}: {r}");
        }
    }
    // Both rounds in both orders.
    let positions: Vec<u64> = program("churn")["allocators"][0]["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [0, 1]);
    assert!(program("sorted")["command"][0] == "sort");
    let failed = &program("preload-fails")["allocators"][1];
    assert_eq!(failed["failure"], "round 1: exit status 3");
    assert!(failed.get("wall_ratio").is_none());
    assert!(
        program("differs")["allocators"][1]["failure"]
            .as_str()
            .unwrap()
            .contains("output differs from glibc's")
    );
    let failures = file["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0]["workload"], "preload-fails");
    assert_eq!(failures[0]["allocator"], "sheaf-malloc");
    assert!(failures[0]["stderr"].as_str().unwrap().contains("boom"));
    let geomean = &p["geomean"][0];
    assert_eq!(geomean["allocator"], "sheaf-malloc");
    assert_eq!(geomean["versus"], "glibc");
    assert_eq!(
        geomean["programs"].as_array().unwrap().len(),
        expected.len() - 2
    );
    assert_eq!(geomean["wall"]["rounds"].as_array().unwrap().len(), 2);
    assert!(geomean["rss"]["interval"].is_array());
    assert!(
        file["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().starts_with("missing-tool: skipped"))
    );

    // The table: a row per (program, allocator), the failures, the geometric mean.
    assert!(stdout.contains("wall vs glibc"), "{stdout}");
    assert!(
        stdout.contains("FAILED: round 1: exit status 3"),
        "{stdout}"
    );
    assert!(stdout.contains("│ geomean"), "{stdout}");
    for chart in ["programs-wall.svg", "programs-rss.svg"] {
        let svg = std::fs::read_to_string(out_dir.join(chart)).unwrap();
        assert!(svg.contains("churn / sheaf-malloc"), "{chart}");
    }
    let md = std::fs::read_to_string(out_dir.join("programs.md")).unwrap();
    assert!(
        md.starts_with("## Real programs\n\nprograms: 2 rounds"),
        "{md}"
    );
    assert!(md.contains("| churn "), "{md}");
    assert!(
        md.contains("### Failures\n\n- `preload-fails` / `sheaf-malloc`: round 1: exit status 3\n"),
        "{md}"
    );
    // Nothing is left of the runs' scratch directories.
    assert!(!out_dir.join("programs-work").exists());

    // Every field of the result is documented.
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/results.md"),
    )
    .unwrap();
    let mut names = std::collections::BTreeSet::new();
    keys(p, &mut names);
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/results.md does not name {missing:?}"
    );

    // Recorded in the history, a figure per (program, allocator, figure).
    let list = sheafbench()
        .args(["history", "list", "--kind", "programs", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(list.status.success(), "{list:?}");
    assert!(
        text(&list.stdout).contains("programs"),
        "{}",
        text(&list.stdout)
    );
    let trend = sheafbench()
        .args([
            "history",
            "trend",
            "churn",
            "sheaf-malloc",
            "--figure",
            "wall_ratio_vs_glibc",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(trend.status.success(), "{trend:?}");
}

/// Runs `programs` with `args` on a manifest of `text` and returns its exit code and stderr.
fn refused(manifest: &str, args: &[&str]) -> (Option<i32>, String, tempfile::TempDir) {
    refused_with(manifest, args, &[])
}

/// [`refused`] with variables `env` set.
fn refused_with(
    manifest: &str,
    args: &[&str],
    env: &[(&str, &Path)],
) -> (Option<i32>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("programs.yaml");
    std::fs::write(&file, manifest).unwrap();
    let out_dir = dir.path().join("out");
    let out = sheafbench()
        .envs(env.iter().copied())
        .args(["programs", "--no-history", "--manifest"])
        .arg(&file)
        .arg("--out")
        .arg(&out_dir)
        .args(args)
        .output()
        .unwrap();
    (out.status.code(), text(&out.stderr), dir)
}

const SMALL: &str =
    "programs:\n  - name: one\n    suite: stress\n    command: [\"echo\", \"hi\"]\n";

#[test]
fn impossible_options_and_bad_manifests_are_refused_before_anything_runs() {
    let cases: [(&str, &[&str], &str); 9] = [
        (
            SMALL,
            &["--rounds", "0"],
            "error: --rounds 0: at least one round is needed",
        ),
        (
            SMALL,
            &["--alloc", "glibc,hoard"],
            "error: --alloc hoard: unknown allocator; expected glibc, sheaf-malloc, mimalloc, jemalloc, tcmalloc or all",
        ),
        (
            SMALL,
            &["--program", "two"],
            "error: --program two: no such program in",
        ),
        (
            SMALL,
            &["--suite", "packaged"],
            "error: --suite/--program: no program of",
        ),
        (
            SMALL,
            &["--suite", "fast"],
            "error: --suite fast: unknown suite",
        ),
        (
            SMALL,
            &["--alloc", "glibc", "--baseline", "jemalloc"],
            "error: --baseline jemalloc: not among the allocators of this run (glibc)",
        ),
        (
            "programs:\n  - name: one\n    suite: stress\n    command: [\"{bin}/one\", \"{threads}\"]\n",
            &[],
            "programs.yaml: program `one`: command[1]: unknown placeholder `{threads}`",
        ),
        (
            "programs:\n  - name: one\n    suite: stress\n    command: [x]\n    timeout: 3\n",
            &[],
            "programs.yaml: program `one`: unknown field `timeout`, expected one of",
        ),
        (
            "programs:\n  - name: one\n    suite: stress\n    check: stdout\n",
            &[],
            "programs.yaml: program `one`: missing field `command`",
        ),
    ];
    for (manifest, args, expected) in cases {
        let (code, stderr, dir) = refused(manifest, args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            !dir.path().join("out").exists(),
            "{args:?}: nothing written"
        );
    }
    let (code, stderr, dir) = refused(
        SMALL,
        &[
            "--alloc",
            "sheaf-malloc",
            "--sheaf-malloc",
            "/nonexistent/libsheaf_malloc.so",
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "error: --sheaf-malloc /nonexistent/libsheaf_malloc.so: no such file (build it with `cargo build --release -p sheaf-malloc`)\n"
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn a_named_allocator_that_is_not_installed_is_said_and_the_others_run() {
    let Some(lib) = sheaf_malloc() else { return };
    let lib = lib.display().to_string();
    // The packaged libraries looked for in an empty directory: none is installed.
    let empty = tempfile::tempdir().unwrap();
    let (code, stderr, dir) = refused_with(
        SMALL,
        &[
            "--alloc",
            "sheaf-malloc,jemalloc",
            "--rounds",
            "1",
            "--sheaf-malloc",
            &lib,
        ],
        &[("SHEAFBENCH_LIB_DIR", empty.path())],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("note: jemalloc: not installed (")
            && stderr
                .contains("apt-get install libjemalloc2, or cargo xtask setup-programs): skipped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: --alloc names jemalloc but it is not available here"),
        "{stderr}"
    );
    assert!(
        stderr.contains("note: glibc is not selected: outputs are checked against sheaf-malloc's"),
        "{stderr}"
    );
    let json = dir.path().join("out/programs.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(file["programs"]["reference"], "sheaf-malloc");
    assert_eq!(
        file["programs"]["programs"][0]["allocators"][0]["rounds"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_failed_build_setup_or_time_out_is_reported_and_the_others_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.c"),
        "int main(void) { return undeclared; }\n",
    )
    .unwrap();
    let manifest = "programs:
  - name: broken
    suite: stress
    build: broken.c
    command: [\"{bin}/broken\"]
  - name: no-input
    suite: stress
    setup: [\"sh\", \"-c\", \"echo cannot write >&2; exit 4\"]
    command: [\"true\"]
  - name: slow
    suite: stress
    command: [\"sleep\", \"30\"]
  - name: fine
    suite: stress
    command: [\"echo\", \"fine\"]
";
    let file = dir.path().join("programs.yaml");
    std::fs::write(&file, manifest).unwrap();
    let out_dir = dir.path().join("out");
    let started = std::time::Instant::now();
    let out = sheafbench()
        .args([
            "programs",
            "--no-history",
            "--alloc",
            "glibc",
            "--rounds",
            "1",
        ])
        .args(["--timeout", "1", "--manifest"])
        .arg(&file)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "the slow program was killed"
    );
    assert!(
        stderr.contains("error: broken / all: build: `cc -O2 -pthread -o "),
        "{stderr}"
    );
    assert!(
        stderr.contains("undeclared"),
        "the compiler's message: {stderr}"
    );
    assert!(
        stderr.contains("error: no-input / all: setup: exit status 4\n  | stderr (last lines):\n  | cannot write\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: slow / glibc: round 1: timed out after 1 s (killed)"),
        "{stderr}"
    );
    let json = std::fs::read_to_string(out_dir.join("programs.json")).unwrap();
    let file: Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = file["programs"]["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["slow", "fine"]);
    assert_eq!(file["failures"].as_array().unwrap().len(), 3);
    assert_eq!(
        file["programs"]["programs"][1]["allocators"][0]["rounds"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
