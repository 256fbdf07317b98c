//! The workspace a task works on is the one it was started in, found at run time: a built
//! xtask is shared by every clone that shares a target directory, so a path fixed when it was
//! compiled would send one clone's tasks to another's workloads and results.
//!
//! The test builds a workspace of its own in a temporary directory, with a stand-in for cargo
//! (named by `CARGO`, as cargo names itself to the programs it runs) that "builds" a stand-in
//! `sheafbench`, and runs `xtask bench` there from a subdirectory.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn script(path: &Path, text: &str) {
    write(path, text);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[test]
fn bench_uses_and_names_the_workspace_it_was_started_in() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("clone");
    write(&ws.join("Cargo.toml"), "[workspace]\nmembers = []\n");
    write(&ws.join("xtask/Cargo.toml"), "");
    write(
        &ws.join("workloads/only.yaml"),
        "name: only\nsuite: default\n",
    );
    let tools = tmp.path().join("tools");
    let log = tools.join("calls.log");
    script(
        &tools.join("sheafbench"),
        &format!(
            "#!/bin/sh\necho \"$(pwd) $*\" >> '{}'\nwhile [ $# -gt 0 ]; do\n  case \"$1\" in\n    --json) shift; printf '{{\"schema\":1,\"runs\":[],\"failures\":[]}}' > \"$1\";;\n    --markdown) shift; printf '# only\\n' > \"$1\";;\n  esac\n  shift\ndone\n",
            log.display()
        ),
    );
    script(
        &tools.join("cargo"),
        &format!(
            "#!/bin/sh\necho '{{\"reason\":\"compiler-artifact\",\"target\":{{\"name\":\"sheafbench\"}},\"executable\":\"{}\"}}'\n",
            tools.join("sheafbench").display()
        ),
    );
    let own_runs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/runs");
    let own_before = entries(&own_runs);

    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("bench")
        .current_dir(ws.join("workloads"))
        .env_remove("CARGO_MANIFEST_DIR")
        .env("CARGO", tools.join("cargo"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}\n{stderr}");

    assert!(
        stderr.contains(&format!("xtask: workspace {}\n", ws.display())),
        "{stderr}"
    );
    let runs = entries(&ws.join("results/runs"));
    assert_eq!(runs.len(), 1, "one run directory in the clone: {runs:?}");
    assert!(runs[0].join("results.json").is_file());
    assert!(
        stdout.contains(&format!("files in {}", runs[0].display())),
        "{stdout}"
    );
    // The stand-in ran in the clone, on the clone's workload.
    let calls = std::fs::read_to_string(&log).unwrap();
    let spec = ws.join("workloads/only.yaml");
    assert!(
        calls.lines().all(|call| call.starts_with(&format!(
            "{} run {}",
            ws.display(),
            spec.display()
        ))),
        "{calls}"
    );
    assert_eq!(
        entries(&own_runs),
        own_before,
        "nothing written into the built clone"
    );
}

#[test]
fn bench_shows_workload_k_of_n_and_on_an_interrupt_says_what_it_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("clone");
    write(&ws.join("Cargo.toml"), "[workspace]\nmembers = []\n");
    write(&ws.join("xtask/Cargo.toml"), "");
    write(&ws.join("workloads/a.yaml"), "name: a\nsuite: default\n");
    write(&ws.join("workloads/b.yaml"), "name: b\nsuite: default\n");
    write(&ws.join("workloads/c.yaml"), "name: c\nsuite: default\n");
    let tools = tmp.path().join("tools");
    // The stand-in keeps a measurement; on workload b it is interrupted as Ctrl-C would
    // interrupt the whole process group: xtask gets the signal, sheafbench exits 130.
    script(
        &tools.join("sheafbench"),
        "#!/bin/sh\nspec=\"$2\"\nwhile [ $# -gt 0 ]; do\n  case \"$1\" in\n    --json) shift; printf '{\"schema\":1,\"runs\":[{\"workload\":\"x\"}],\"failures\":[]}' > \"$1\";;\n  esac\n  shift\ndone\ncase \"$spec\" in\n  */b.yaml) kill -TERM $PPID; exit 130;;\nesac\n",
    );
    script(
        &tools.join("cargo"),
        &format!(
            "#!/bin/sh\necho '{{\"reason\":\"compiler-artifact\",\"target\":{{\"name\":\"sheafbench\"}},\"executable\":\"{}\"}}'\n",
            tools.join("sheafbench").display()
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("bench")
        .current_dir(&ws)
        .env_remove("CARGO_MANIFEST_DIR")
        .env("CARGO", tools.join("cargo"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("xtask: workload 1 of 3: a (0s elapsed)"),
        "{stderr}"
    );
    assert!(stderr.contains("xtask: workload 2 of 3: b ("), "{stderr}");
    assert!(
        !stderr.contains("workload 3 of 3"),
        "c ran after the interrupt: {stderr}"
    );
    let runs = entries(&ws.join("results/runs"));
    assert!(
        stdout.contains(&format!(
            "interrupted during workload 2 of 3: kept the finished measurements of 2 workload(s) in {}",
            runs[0].display()
        )),
        "{stdout}"
    );
    let merged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs[0].join("results.json")).unwrap())
            .unwrap();
    assert_eq!(merged["runs"].as_array().unwrap().len(), 2, "{merged}");
}

#[test]
fn outside_any_workspace_a_task_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("bench")
        .current_dir(tmp.path())
        .env_remove("CARGO_MANIFEST_DIR")
        .env("CARGO", "/nonexistent/cargo")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no sheafbench workspace"), "{stderr}");
}
