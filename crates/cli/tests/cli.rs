//! The `sheafbench` binary driven from outside: bad input, the table's layout, the JSON's
//! shape, and a quick run of every shipped workload. Figures vary from run to run, so
//! snapshots hold the layout and the shape with every figure redacted.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary, run in the workspace, recording into a history of the tests' own (never the
/// checkout's `results/history.sqlite`).
fn sheafbench() -> Command {
    let mut cmd = Command::cargo_bin("sheafbench").unwrap();
    cmd.current_dir(workspace()).env(
        "SHEAFBENCH_DB",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-history.sqlite"),
    );
    cmd
}

fn write_spec(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = "name: tiny\nkind: churn\nobject_size: 64\npinned: false\nwarmup: 5ms\nduration: 20ms\nruns: 2\nparams: {working_set: 64, batch: 32}\n";

/// Runs a command expected to fail on bad input: exit 2, one line on stderr, no panic,
/// nothing on stdout. Returns stderr with the temporary directory's path masked.
fn bad_input(args: &[&str], dir: &Path) -> String {
    let out = sheafbench().args(args).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    stderr.replace(&dir.display().to_string(), "[dir]")
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = write_spec(d, "good.yaml", GOOD);
    let good = good.to_str().unwrap();
    let malformed = write_spec(d, "malformed.yaml", "name: \"tiny\nkind: churn\n");
    let unknown_field = write_spec(d, "field.yaml", &format!("{GOOD}colour: blue\n"));
    let unknown_kind = write_spec(d, "kind.yaml", &GOOD.replace("kind: churn", "kind: juggle"));
    let wrong_type = write_spec(
        d,
        "type.yaml",
        &GOOD.replace("object_size: 64", "object_size: big"),
    );
    let zero = write_spec(
        d,
        "zero.yaml",
        &GOOD.replace("object_size: 64", "object_size: 0"),
    );
    let stray = write_spec(
        d,
        "stray.yaml",
        &GOOD.replace("batch: 32}", "batch: 32, reserve: 13}"),
    );
    let pinned = write_spec(
        d,
        "pinned.yaml",
        &GOOD.replace("pinned: false", "pinned: true\nthreads: 1000"),
    );
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "missing_file",
            vec!["run".into(), format!("{}/absent.yaml", d.display())],
        ),
        ("malformed_yaml", vec!["run".into(), path(&malformed)]),
        ("unknown_field", vec!["run".into(), path(&unknown_field)]),
        ("unknown_kind", vec!["run".into(), path(&unknown_kind)]),
        ("wrong_type", vec!["run".into(), path(&wrong_type)]),
        ("zero_value", vec!["run".into(), path(&zero)]),
        ("param_of_another_kind", vec!["run".into(), path(&stray)]),
        ("too_many_pinned_threads", vec!["run".into(), path(&pinned)]),
        (
            "unknown_allocator",
            vec!["run".into(), good.into(), "--alloc".into(), "nope".into()],
        ),
        (
            "bad_set",
            vec![
                "run".into(),
                good.into(),
                "--set".into(),
                "colour=blue".into(),
            ],
        ),
        (
            "bad_set_value",
            vec!["run".into(), good.into(), "--set".into(), "runs=-1".into()],
        ),
        (
            "hogs_negative",
            vec!["run".into(), good.into(), "--hogs".into(), "-1".into()],
        ),
        (
            "hogs_garbage",
            vec!["run".into(), good.into(), "--hogs".into(), "lots".into()],
        ),
        (
            "hogs_too_many",
            vec!["run".into(), good.into(), "--hogs".into(), "100000".into()],
        ),
        (
            "bad_duration",
            vec![
                "run".into(),
                good.into(),
                "--duration".into(),
                "soon".into(),
            ],
        ),
        (
            "baseline_not_run",
            vec![
                "run".into(),
                good.into(),
                "--alloc".into(),
                "system".into(),
                "--baseline".into(),
                "sheaf".into(),
            ],
        ),
        (
            "json_dir_missing",
            vec![
                "run".into(),
                good.into(),
                "--json".into(),
                format!("{}/no/such/r.json", d.display()),
            ],
        ),
        (
            "sweep_param_without_values",
            vec![
                "sweep".into(),
                good.into(),
                "--param".into(),
                "sheaf_capacity".into(),
            ],
        ),
        (
            "compare_not_a_result",
            vec!["compare".into(), good.into(), good.into()],
        ),
    ];
    for (name, args) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let message = bad_input(&args, d);
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(
            r"at most \d+ pinned threads",
            "at most [cpus] pinned threads",
        );
        settings.bind(|| insta::assert_snapshot!(format!("bad_input__{name}"), message));
    }
}

/// Snapshot settings for a results table: times and rates become `[t]`, ratios with their
/// interval `[r]`, then the `extra` filters in order, then box rules and runs of spaces are
/// made uniform (column widths follow the figures).
fn table_settings(extra: &[(&str, &str)]) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d+(\.\d+)? ?(ns|µs|ms|s|[kMG]?/s)", "[t]");
    settings.add_filter(r"\d+\.\d+ \[\d+\.\d+\.\.\d+\.\d+\]", "[r]");
    for &(pattern, replacement) in extra {
        settings.add_filter(pattern, replacement);
    }
    settings.add_filter(r"[─═]+", "─");
    settings.add_filter(r" +", " ");
    settings
}

/// Replaces figures by `0` and machine- or run-specific text by a marker, keeping keys,
/// nesting and array lengths.
fn shape(value: &Value, key: &str) -> Value {
    match value {
        Value::Number(_) => Value::from(0),
        Value::String(_)
            if matches!(
                key,
                "date" | "cpu" | "kernel" | "rustc" | "git" | "reason" | "note" | "unsupported"
            ) =>
        {
            Value::from("[redacted]")
        }
        // As many readings as the sampler found time for: their fields are in results.md.
        Value::Array(_) if key == "samples" && value[0].get("rss_bytes").is_some() => {
            Value::from("[timeline readings]")
        }
        Value::Array(items) if key == "warnings" => {
            Value::from(format!("[{} or more warnings]", items.len().min(1)))
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| shape(v, key)).collect()),
        Value::Object(map) if key == "counters" => Value::Object(
            map.keys()
                .map(|k| (k.clone(), Value::from("[reading]")))
                .collect(),
        ),
        // Values of this machine, each possibly unknown (null): only the keys are fixed.
        Value::Object(map) if key == "environment" => Value::Object(
            map.keys()
                .map(|k| (k.clone(), Value::from("[this machine]")))
                .collect(),
        ),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v, k))).collect())
        }
        other => other.clone(),
    }
}

fn run_json(args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = sheafbench()
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (value, stdout)
}

#[test]
fn table_layout_and_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.yaml", GOOD);
    let (json, stdout) = run_json(&[
        "run",
        spec.to_str().unwrap(),
        "--alloc",
        "system,locked-slab",
        "--baseline",
        "system",
    ]);
    insta::assert_json_snapshot!("json_shape", shape(&json, ""));
    table_settings(&[(r"\d+\.\d+%", "[x]"), (r"┆ +\d+\.\d+ +│", "┆ [x] │")])
        .bind(|| insta::assert_snapshot!("table_layout", stdout));
}

#[test]
fn hogs_run_beside_a_measurement_and_are_named_in_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.yaml", GOOD);
    for how in [["--hogs", "1"], ["--set", "hogs=1"]] {
        let (json, stdout) = run_json(&[
            "run",
            spec.to_str().unwrap(),
            "--alloc",
            "system",
            how[0],
            how[1],
        ]);
        let run = &json["runs"][0];
        assert_eq!(run["config"]["hogs"], 1, "{how:?}");
        assert_eq!(run["spec"]["hogs"], 1, "{how:?}");
        assert!(
            run["extra"]["hog_cpu_seconds"].as_f64().unwrap() > 0.0,
            "{how:?}: {}",
            run["extra"]
        );
        assert!(
            stdout.contains("1 busy threads beside it (--hogs 1)"),
            "{how:?}: {stdout}"
        );
    }
}

#[test]
fn producer_consumer_reports_its_hand_off_waits() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "pc.yaml",
        "name: pc\nkind: producer-consumer\nobject_size: 64\npinned: false\nwarmup: 5ms\nduration: 20ms\nruns: 2\nparams: {queue: 64, batch: 8}\n",
    );
    let (json, stdout) = run_json(&["run", spec.to_str().unwrap(), "--alloc", "system"]);
    let extra = &json["runs"][0]["extra"];
    for key in [
        "handoff_waits_per_op",
        "handoff_blocked_per_op",
        "producer_waits_blocked",
        "consumer_waits_blocked",
    ] {
        assert!(extra[key].is_number(), "{key}: {extra}");
    }
    assert!(stdout.contains("waits/op (blocked)"), "{stdout}");
}

#[test]
fn quick_run_of_every_shipped_workload_gives_complete_json() {
    // Specs with run-time changes refuse `system` (tested on their own below).
    let mut specs: Vec<String> = std::fs::read_dir(workspace().join("workloads"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !std::fs::read_to_string(p).unwrap().contains("\nphases:"))
        .map(|p| p.display().to_string())
        .collect();
    specs.sort();
    assert!(specs.len() >= 6, "{specs:?}");
    let mut args = vec!["run"];
    args.extend(specs.iter().map(String::as_str));
    args.extend(["--quick", "--threads", "1", "--alloc", "system,sheaf"]);
    let (json, _) = run_json(&args);
    assert_eq!(json["schema"], 2);
    for key in ["cpu", "cores", "kernel", "rustc", "git"] {
        assert!(!json["machine"][key].is_null(), "machine.{key}");
    }
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(
        runs.len(),
        specs.len() * 2,
        "one measurement per workload and allocator"
    );
    assert!(json["failures"].as_array().unwrap().is_empty());
    for run in runs {
        let what = format!("{}/{}", run["workload"], run["allocator"]);
        assert!(run["ops"].as_u64().unwrap() > 0, "{what}: no operations");
        assert!(
            run["throughput_ops_per_s"].as_f64().unwrap() > 0.0,
            "{what}"
        );
        assert_eq!(run["samples"].as_array().unwrap().len(), 2, "{what}");
        let latency = &run["latency_ns"];
        assert!(latency["samples"].as_u64().unwrap() > 0, "{what}");
        for p in ["p50", "p90", "p99", "p999", "p9999", "max"] {
            assert!(latency[p].as_u64().unwrap() > 0, "{what}: latency {p}");
        }
        assert!(latency["timer_overhead_ns"].as_f64().unwrap() > 0.0);
        assert!(!latency["unit"].as_str().unwrap().is_empty());
        for counter in [
            "cycles",
            "instructions",
            "cache-misses",
            "branch-misses",
            "task-clock",
            "page-faults",
            "context-switches",
            "cpu-migrations",
        ] {
            let c = &run["counters"][counter];
            match c["status"].as_str() {
                Some("ok") => assert!(c["value"].is_number(), "{what}: {counter}"),
                Some("unsupported") => assert!(c["reason"].is_string(), "{what}: {counter}"),
                other => panic!("{what}: {counter} has status {other:?}"),
            }
        }
        assert!(
            run["memory"]["peak_rss_bytes"].as_u64().unwrap() > 0,
            "{what}"
        );
        assert!(run["config"]["object_size"].as_u64().unwrap() > 0);
        assert!(run["stats"].is_object() && run["spec"].is_object());
    }
}

#[test]
fn list_names_every_allocator_and_kind() {
    let out = sheafbench().arg("list").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    for name in [
        "sheaf",
        "sheaf-thread",
        "sheaf-bulkprefill",
        "system",
        "mimalloc",
        "jemalloc",
        "slub-cpu-slab",
        "magazine",
        "locked-slab",
        "churn",
        "burst",
        "producer-consumer",
        "prefill-burst",
        "deferred-churn",
        "maple-tree",
        "trace-replay",
        "task-clock",
        "cpu-migrations",
    ] {
        assert!(
            stdout.contains(&format!("│ {name} ")),
            "{name} missing:\n{stdout}"
        );
    }
    // How `sheaf` locks its CPU slots here, and with `SHEAF_RSEQ=0` the reason it does not
    // use restartable sequences.
    assert!(stdout.contains("sheaf's CPU slot lock here: "), "{stdout}");
    let off = sheafbench()
        .arg("list")
        .env("SHEAF_RSEQ", "0")
        .output()
        .unwrap();
    let off = String::from_utf8(off.stdout).unwrap();
    assert!(
        off.contains("atomic compare-exchange (switched off with SHEAF_RSEQ=0)"),
        "{off}"
    );
}

#[test]
fn a_crashing_measurement_is_reported_and_the_run_goes_on() {
    // A time-out of one second on a spec that runs for longer: the child is killed, the
    // failure is reported with the measurement's name, and the next allocator still runs.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "long.yaml",
        &GOOD.replace("duration: 20ms", "duration: 5s"),
    );
    let json = dir.path().join("r.json");
    let out = sheafbench()
        .args([
            "run",
            spec.to_str().unwrap(),
            "--alloc",
            "system,locked-slab",
            "--timeout",
            "1",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("tiny / system / 1 threads (round 1): timed out"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tiny / locked-slab / 1 threads (round 1): timed out"),
        "{stderr}"
    );
    let value: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(value["failures"].as_array().unwrap().len(), 2);
}

/// A result file of `system` and `locked-slab` on the tiny spec in `rounds` rounds.
fn two_allocator_file(rounds: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.yaml", GOOD);
    let (json, _) = run_json(&[
        "run",
        spec.to_str().unwrap(),
        "--alloc",
        "system,locked-slab",
        "--runs",
        rounds,
    ]);
    json
}

/// Sets one measurement's rounds to the given throughputs and p50/p99/p99.9 latencies (the
/// same per round), the measurement's figures to their medians, and clears its warnings.
fn set_rounds(m: &mut Value, throughputs: &[f64], latency: [u64; 3]) {
    let samples = m["samples"].as_array_mut().unwrap();
    assert_eq!(samples.len(), throughputs.len());
    for (s, &t) in samples.iter_mut().zip(throughputs) {
        s["throughput_ops_per_s"] = t.into();
        // The threads ran the whole time: per CPU-second is the throughput.
        s["cpu_seconds"] = (s["ops"].as_f64().unwrap() / t).into();
        for (key, v) in ["p50", "p99", "p999"].iter().zip(latency) {
            s["latency_ns"][key] = v.into();
        }
    }
    let mut sorted = throughputs.to_vec();
    sorted.sort_by(f64::total_cmp);
    m["throughput_ops_per_s"] = sorted[sorted.len() / 2].into();
    for (key, v) in ["p50", "p99", "p999"].iter().zip(latency) {
        m["latency_ns"][key] = v.into();
    }
    m["warnings"] = Value::Array(Vec::new());
}

/// Sets the file's first paired ratio to the given rounds.
fn set_paired(file: &mut Value, rounds: &[f64]) {
    let p = &mut file["paired"][0];
    p["rounds"] = rounds.to_vec().into();
    let mean_log = rounds.iter().map(|r| r.ln()).sum::<f64>() / rounds.len() as f64;
    p["estimate"] = mean_log.exp().into();
}

fn write_json(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string(value).unwrap()).unwrap();
    path
}

fn compare(args: &[&Path], extra: &[&str]) -> std::process::Output {
    sheafbench()
        .arg("compare")
        .args(args)
        .args(extra)
        .output()
        .unwrap()
}

/// OLD and NEW with fixed figures: `system` unchanged within 1%, `locked-slab` 20% slower
/// in throughput and 20% higher in latency, and so 20% lower against `system`; NEW has a row
/// OLD lacks and OLD one NEW lacks; a NEW measurement is flagged busy.
fn fixed_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let base = two_allocator_file("5");
    let mut old = base.clone();
    let mut new = base;
    let around = |x: f64| [x * 1.00, x * 1.01, x * 0.99, x * 1.005, x * 0.995];
    set_rounds(&mut old["runs"][0], &around(100e6), [100, 200, 400]);
    set_rounds(&mut new["runs"][0], &around(100.5e6), [100, 201, 400]);
    set_rounds(&mut old["runs"][1], &around(50e6), [200, 400, 800]);
    set_rounds(&mut new["runs"][1], &around(40e6), [240, 480, 960]);
    set_paired(&mut old, &around(0.5));
    set_paired(&mut new, &around(0.4));
    let mut gone = old["runs"][1].clone();
    gone["workload"] = "gone".into();
    old["runs"].as_array_mut().unwrap().push(gone);
    let mut added = new["runs"][0].clone();
    added["workload"] = "added".into();
    let mut busy = new["runs"][0].clone();
    busy["workload"] = "busy".into();
    let mut busy_old = old["runs"][0].clone();
    busy_old["workload"] = "busy".into();
    set_rounds(&mut busy, &around(50e6), [100, 200, 400]);
    busy["warnings"] = Value::Array(vec![
        "machine busy: 900 involuntary context switches of the measuring threads in 0.10 s; another process competes for the CPUs".into(),
    ]);
    new["runs"].as_array_mut().unwrap().push(added);
    new["runs"].as_array_mut().unwrap().push(busy);
    old["runs"].as_array_mut().unwrap().push(busy_old);
    (
        write_json(dir, "old.json", &old),
        write_json(dir, "new.json", &new),
    )
}

#[test]
fn compare_table_gives_verdicts_only_beyond_the_noise() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = fixed_pair(dir.path());
    let out = compare(&[&old, &new], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(&dir.path().display().to_string()), "[dir]");
    settings.add_filter(r"[─═]+", "─");
    settings.bind(|| insta::assert_snapshot!("compare_table", stdout));
}

/// Calibration by A/A runs sets each row's threshold from that row's own spread over the
/// files: with one pair (8% apart) a 5% change is no change; with five files in which the
/// `system` row varied by 0.5% and the `locked-slab` one by 8%, a 10% fall is called on the
/// first and not on the second, where tight rounds alone call both.
#[test]
fn compare_calibrated_by_a_a_runs_gives_each_row_its_own_noise() {
    let dir = tempfile::tempdir().unwrap();
    let base = two_allocator_file("3");
    let files: Vec<PathBuf> = [
        ("old", 100e6, 50e6),
        ("new", 95e6, 50e6),
        ("fell", 90e6, 45e6),
        ("a1", 100e6, 50e6),
        ("a2", 92e6, 46e6),
        ("b1", 100e6, 50e6),
        ("b2", 100.5e6, 46e6),
        ("b3", 99.5e6, 54e6),
        ("b4", 100.2e6, 48e6),
        ("b5", 99.8e6, 52e6),
    ]
    .iter()
    .map(|&(name, system, locked)| {
        let mut f = base.clone();
        let tight = |x: f64| [x, x * 1.002, x * 0.998];
        set_rounds(&mut f["runs"][0], &tight(system), [100, 200, 400]);
        set_rounds(&mut f["runs"][1], &tight(locked), [100, 200, 400]);
        write_json(dir.path(), &format!("{name}.json"), &f)
    })
    .collect();
    let path = |i: usize| files[i].to_str().unwrap();
    let row = |stdout: &str, allocator: &str| {
        stdout
            .lines()
            .find(|l| l.contains(allocator) && l.contains("┆ throughput "))
            .unwrap_or_else(|| panic!("no {allocator} row: {stdout}"))
            .to_owned()
    };
    let out = compare(&[&files[0], &files[1]], &[]);
    let plain = String::from_utf8(out.stdout).unwrap();
    assert!(row(&plain, "system").contains("slower"), "{plain}");

    let out = compare(&[&files[0], &files[1]], &["--calibrate", path(3), path(4)]);
    assert!(out.status.success());
    let pair = String::from_utf8(out.stdout).unwrap();
    assert!(row(&pair, "system").contains("no change"), "{pair}");
    // Both rows moved 8%: sd 0.059 of the logs, t(3) 3.182, times sqrt(2): ±30.4%.
    assert!(
        pair.contains("noise thresholds from 2 calibration files")
            && row(&pair, "system").contains("±30.4%"),
        "{pair}"
    );

    let out = compare(&[&files[0], &files[2]], &[]);
    let plain = String::from_utf8(out.stdout).unwrap();
    assert!(row(&plain, "system").contains("slower"), "{plain}");
    assert!(row(&plain, "locked-slab").contains("slower"), "{plain}");
    let five: Vec<&str> = (5..10).map(path).collect();
    let json = dir.path().join("compared.json");
    let mut args = vec!["--json", json.to_str().unwrap(), "--calibrate"];
    args.extend(&five);
    let out = compare(&[&files[0], &files[2]], &args);
    assert!(out.status.success());
    let calibrated = String::from_utf8(out.stdout).unwrap();
    assert!(
        row(&calibrated, "system").contains("slower"),
        "{calibrated}"
    );
    assert!(
        row(&calibrated, "locked-slab").contains("no change"),
        "{calibrated}"
    );
    // The JSON has the same rows, with each row's threshold: system's spread was 0.4%,
    // locked-slab's 6.3% (pooled with their median: ±7.0% and ±21.0%).
    let doc: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let find = |allocator: &str| {
        doc["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["allocator"] == allocator && r["figure"] == "throughput")
            .unwrap()
            .clone()
    };
    let (system, locked) = (find("system"), find("locked-slab"));
    assert_eq!(system["verdict"], "slower");
    assert_eq!(locked["verdict"], "no change");
    let threshold = |r: &Value| r["threshold"].as_f64().unwrap();
    assert!((threshold(&system) - 0.070).abs() < 0.005, "{system}");
    assert!((threshold(&locked) - 0.210).abs() < 0.01, "{locked}");
    assert!((system["change"].as_f64().unwrap() + 0.10).abs() < 1e-9);

    let out = compare(&[&files[0], &files[1]], &["--calibrate", path(3)]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn compare_refuses_files_measured_with_different_settings() {
    let dir = tempfile::tempdir().unwrap();
    let base = two_allocator_file("2");
    let mut other = base.clone();
    for m in other["runs"].as_array_mut().unwrap() {
        m["config"]["sheaf_capacity"] = 0.into();
        m["spec"]["duration"] = "500ms".into();
    }
    let old = write_json(dir.path(), "old.json", &base);
    let new = write_json(dir.path(), "new.json", &other);
    let out = compare(&[&old, &new], &[]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("sheaf_capacity")
            && stderr.contains("vs 0")
            && stderr.contains("duration")
            && stderr.contains("--allow-config-change"),
        "{stderr}"
    );
    let out = compare(&[&old, &new], &["--allow-config-change"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("WARNING: the files were measured with different settings"),
        "{stderr}"
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("throughput")
    );
}

#[test]
fn run_interleaves_rounds_and_pairs_ratios_by_round() {
    let json = two_allocator_file("3");
    assert_eq!(json["schema"], 2);
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (index, m) in runs.iter().enumerate() {
        let samples = m["samples"].as_array().unwrap();
        let rounds: Vec<u64> = samples
            .iter()
            .map(|s| s["round"].as_u64().unwrap())
            .collect();
        assert_eq!(rounds, [0, 1, 2]);
        // The order rotates: system first in rounds 0 and 2, locked-slab first in round 1.
        let positions: Vec<u64> = samples
            .iter()
            .map(|s| s["position"].as_u64().unwrap())
            .collect();
        let expected = if index == 0 { [0, 1, 0] } else { [1, 0, 1] };
        assert_eq!(positions, expected, "{}", m["allocator"]);
        for s in samples {
            assert!(s["latency_ns"]["p99"].as_u64().unwrap() > 0);
        }
        let mut tps: Vec<f64> = samples
            .iter()
            .map(|s| s["throughput_ops_per_s"].as_f64().unwrap())
            .collect();
        tps.sort_by(f64::total_cmp);
        assert_eq!(
            m["throughput_ops_per_s"].as_f64().unwrap(),
            tps[1],
            "the median round"
        );
        assert_eq!(m["spec"]["runs"], 3);
    }
    let paired = json["paired"].as_array().unwrap();
    assert_eq!(paired.len(), 1, "locked-slab against the baseline, system");
    let p = &paired[0];
    assert_eq!(
        (p["allocator"].as_str(), p["versus"].as_str()),
        (Some("locked-slab"), Some("system"))
    );
    let ratios: Vec<f64> = p["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap())
        .collect();
    for (r, ratio) in ratios.iter().enumerate() {
        let tp = |m: &Value| m["samples"][r]["throughput_ops_per_s"].as_f64().unwrap();
        assert!((ratio - tp(&runs[1]) / tp(&runs[0])).abs() < 1e-9);
    }
    let interval = p["interval"].as_array().unwrap();
    assert!(interval[0].as_f64().unwrap() <= p["estimate"].as_f64().unwrap());
    assert!(p["estimate"].as_f64().unwrap() <= interval[1].as_f64().unwrap());
}

/// `s` with every regex metacharacter escaped.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

#[test]
fn conformance_prints_a_table_and_writes_a_json_array() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("c.json");
    let out = sheafbench()
        .args([
            "conformance",
            "--quick",
            "--alloc",
            "system,locked-slab",
            "--only",
            "C-OBJ-1,C-BULK-1",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("C-OBJ-1") && stdout.contains("C-BULK-1"),
        "{stdout}"
    );
    let value: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let reports = value.as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["allocator"], "system");
    let any_fail = reports.iter().any(|r| {
        r["clauses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["status"] == "fail")
    });
    for report in reports {
        for clause in report["clauses"].as_array().unwrap() {
            assert!(["pass", "fail", "n/a"].contains(&clause["status"].as_str().unwrap()));
            assert!(clause["detail"].is_string());
        }
    }
    // Exit 1 exactly when an applicable clause failed.
    assert_eq!(out.status.code() == Some(1), any_fail, "{stderr}");
}

#[test]
fn sweep_prints_every_value_and_draws_svg() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.yaml", GOOD);
    let svg = dir.path().join("s.svg");
    let out = sheafbench()
        .args([
            "sweep",
            spec.to_str().unwrap(),
            "--param",
            "working_set=8,64",
            "--alloc",
            "system,locked-slab",
        ])
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("│ 8 ") && stdout.contains("│ 64 "),
        "{stdout}"
    );
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("locked-slab") && svg.contains("working_set"));
}

#[test]
fn a_sweep_interleaves_its_values_in_rounds_and_pairs_each_with_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.yaml", GOOD);
    let json = dir.path().join("sweep.json");
    let out = sheafbench()
        .args([
            "sweep",
            spec.to_str().unwrap(),
            "--param",
            "working_set=8,64",
            "--alloc",
            "system",
            "--runs",
            "3",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("vs working_set=8 [95%]"), "{stdout}");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // Both values in every round, in an order rotated from round to round.
    let places = |working_set: u64| -> Vec<(u64, u64)> {
        let run = file["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["spec"]["params"]["working_set"].as_u64() == Some(working_set))
            .unwrap();
        assert_eq!(run["spec"]["runs"], 3);
        run["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["round"].as_u64().unwrap(),
                    s["position"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(places(8), [(0, 0), (1, 1), (2, 0)]);
    assert_eq!(places(64), [(0, 1), (1, 0), (2, 1)]);
    // The second value over the first, paired by round.
    let paired = file["paired"].as_array().unwrap();
    assert_eq!(paired.len(), 1, "{paired:?}");
    assert_eq!(paired[0]["allocator"], "system working_set=64");
    assert_eq!(paired[0]["versus"], "system working_set=8");
    assert_eq!(paired[0]["rounds"].as_array().unwrap().len(), 3);
    assert!(paired[0]["interval"].is_array(), "{paired:?}");
}

#[test]
fn thread_counts_from_the_command_line_that_cannot_be_pinned_are_left_out_with_a_note() {
    // A producer-consumer pair is two pinned threads: with `--threads` beyond half the CPUs
    // the count is left out for that spec (and said so), the others run.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "pc.yaml",
        "name: pc\nkind: producer-consumer\nobject_size: 64\nwarmup: 5ms\nduration: 20ms\nruns: 2\nparams: {queue: 64, batch: 8}\n",
    );
    let out = sheafbench()
        .args([
            "run",
            spec.to_str().unwrap(),
            "--alloc",
            "system",
            "--threads",
            "1,4096",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("note: pc: 4096 threads left out"),
        "{stderr}"
    );
    // Written in the spec itself, the same count is refused before anything runs.
    let strict = write_spec(
        dir.path(),
        "pc2.yaml",
        "name: pc\nkind: producer-consumer\nobject_size: 64\nthreads: 4096\nparams: {queue: 64, batch: 8}\n",
    );
    let message = bad_input(
        &["run", strict.to_str().unwrap(), "--alloc", "system"],
        dir.path(),
    );
    assert!(message.contains("`threads` = 4096"), "{message}");
}

#[test]
fn trace_import_reproduces_the_shipped_trace() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gcc-hello.trace");
    let result = sheafbench()
        .args(["trace", "import", "workloads/traces/gcc-hello.strace", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8(result.stderr).unwrap();
    assert!(result.status.success(), "{stderr}");
    assert!(result.stdout.is_empty(), "the trace went to the file");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("workloads/traces/gcc-hello.strace: ")
            && stderr.contains(" records in "),
        "{stderr}"
    );
    let expected =
        std::fs::read_to_string(workspace().join("workloads/traces/gcc-hello.trace")).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);

    // Without -o the trace goes to stdout.
    let result = sheafbench()
        .args(["trace", "import", "workloads/traces/gcc-hello.strace"])
        .output()
        .unwrap();
    assert!(result.status.success());
    assert_eq!(String::from_utf8(result.stdout).unwrap(), expected);

    let err = bad_input(&["trace", "import", "no-such.strace"], dir.path());
    assert!(
        err.contains("no-such.strace: cannot read the strace log"),
        "{err}"
    );
}

#[test]
fn a_sweep_of_sheaf_capacity_runs_the_designs_it_changes_and_marks_no_sheaves() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "good.yaml", GOOD);
    let json = dir.path().join("sweep.json");
    let out = sheafbench()
        .args([
            "sweep",
            spec.to_str().unwrap(),
            "--param",
            "sheaf_capacity=0,8",
        ])
        .args(["--threads", "1", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("± sd"), "{stdout}");
    assert!(
        stderr.contains(
            "note: sheaf_capacity changes only sheaf, sheaf-thread, sheaf-bulkprefill, magazine"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("sheaf_capacity 0 means no sheaves"),
        "{stderr}"
    );
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let mut seen = Vec::new();
    for run in file["runs"].as_array().unwrap() {
        let allocator = run["allocator"].as_str().unwrap().to_owned();
        let capacity = run["config"]["sheaf_capacity"].as_u64().unwrap();
        let marked = run["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("no sheaves: "));
        assert_eq!(marked, capacity == 0, "{allocator} at capacity {capacity}");
        if !seen.contains(&allocator) {
            seen.push(allocator);
        }
    }
    assert_eq!(
        seen,
        ["sheaf", "sheaf-thread", "sheaf-bulkprefill", "magazine"]
    );
}

/// Every field name under `value`, except the names of maps whose keys are data (counter,
/// statistic and parameter names, and the stats that moved between timeline readings), whose
/// values are still walked.
fn field_names(value: &Value, parent: &str, names: &mut std::collections::BTreeSet<String>) {
    const MAPS: [&str; 5] = ["counters", "stats", "extra", "params", "moved"];
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if !MAPS.contains(&parent) {
                    names.insert(key.clone());
                }
                field_names(child, key, names);
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| field_names(item, parent, names)),
        _ => {}
    }
}

#[test]
fn the_result_schema_doc_names_every_field_and_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "good.yaml", GOOD);
    let json = dir.path().join("r.json");
    let out = sheafbench()
        .args([
            "run",
            spec.to_str().unwrap(),
            "--alloc",
            "sheaf,system",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let doc = std::fs::read_to_string(workspace().join("docs/results.md")).unwrap();
    let mut names = std::collections::BTreeSet::new();
    field_names(&file, "", &mut names);
    // `scale` writes the same layout with its curves.
    let scaled = dir.path().join("s.json");
    let out = sheafbench()
        .args([
            "scale",
            spec.to_str().unwrap(),
            "--alloc",
            "sheaf,system",
            "--threads",
            "1,2",
            "--json",
        ])
        .arg(&scaled)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let scaled: Value = serde_json::from_str(&std::fs::read_to_string(&scaled).unwrap()).unwrap();
    assert!(!scaled["scaling"].as_array().unwrap().is_empty());
    field_names(&scaled, "", &mut names);
    // A counter reading's fields, whichever this machine gave.
    names.extend(["status", "value", "per_op", "note", "reason"].map(String::from));
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/results.md does not name {missing:?}"
    );
    let version = file["schema"].as_u64().unwrap();
    assert!(
        doc.contains(&format!("now **{version}**")),
        "docs/results.md does not give schema {version}"
    );
}

#[test]
fn a_timeout_of_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_spec(dir.path(), "good.yaml", GOOD);
    let good = good.to_str().unwrap();
    for command in ["run", "sweep"] {
        let mut args = vec![command, good, "--alloc", "system", "--timeout", "0"];
        if command == "sweep" {
            args.extend(["--param", "batch=8,16"]);
        }
        let err = bad_input(&args, dir.path());
        assert!(err.contains("--timeout 0: "), "{err}");
    }
}

#[test]
fn trace_import_refuses_a_log_with_nothing_to_import() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let empty = write_spec(d, "empty.strace", "");
    let garbage = write_spec(d, "garbage.strace", "hello\nthis is not strace\n");
    for log in [&empty, &garbage] {
        let out = log.with_extension("trace");
        let err = bad_input(
            &[
                "trace",
                "import",
                log.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
            d,
        );
        assert!(err.contains("no memory call read"), "{err}");
        assert!(!out.exists(), "a refused import wrote {}", out.display());
        // --lenient writes the empty trace.
        let result = sheafbench()
            .args(["trace", "import", "--lenient", log.to_str().unwrap(), "-o"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(result.status.success(), "{result:?}");
        assert!(out.exists());
    }
}

#[test]
fn trace_import_warns_when_tasks_cannot_be_grouped() {
    let dir = tempfile::tempdir().unwrap();
    let mmap = "mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x10000";
    let log = write_spec(
        dir.path(),
        "threads.strace",
        &format!("10 {mmap}\n11 {mmap}\n"),
    );
    let result = sheafbench()
        .args(["trace", "import", log.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8(result.stderr).unwrap();
    assert!(result.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("2 tasks but no process events"),
        "{stderr}"
    );
    // The shipped log has process events: no warning.
    let result = sheafbench()
        .args(["trace", "import", "workloads/traces/gcc-hello.strace"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8(result.stderr)
            .unwrap()
            .contains("warning")
    );
}

#[test]
fn tree_kinds_refuse_bad_specs_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let maple = std::fs::read_to_string(workspace().join("workloads/maple-tree.yaml")).unwrap();
    let wrong_size = write_spec(
        d,
        "size.yaml",
        &maple.replace("object_size: 256", "object_size: 64"),
    );
    let err = bad_input(&["run", wrong_size.to_str().unwrap()], d);
    assert!(
        err.contains("`object_size` = 64: expected 256 for kind `maple-tree`"),
        "{err}"
    );
    let replay = std::fs::read_to_string(workspace().join("workloads/trace-replay.yaml")).unwrap();
    // Relative to the spec's directory, where there is no such trace.
    let missing = write_spec(d, "replay.yaml", &replay);
    let err = bad_input(&["run", missing.to_str().unwrap()], d);
    assert!(
        err.contains(
            "`params.trace` = [dir]/traces/python-sqlite-json.trace: cannot read the trace"
        ),
        "{err}"
    );
}

#[test]
fn an_interrupted_run_keeps_every_finished_measurement_and_leaves_no_child() {
    // Two workloads: a short one that finishes, then a long one that is interrupted. The
    // JSON written after the first measurement must survive the interruption whole, and the
    // long measurement's child process must die with the run.
    let dir = tempfile::tempdir().unwrap();
    let short = write_spec(dir.path(), "short.yaml", GOOD);
    let unique = format!("interrupted-{}", std::process::id());
    let long = write_spec(
        dir.path(),
        "long.yaml",
        &GOOD
            .replace("name: tiny", &format!("name: {unique}"))
            .replace("duration: 20ms", "duration: 60s"),
    );
    let json = dir.path().join("r.json");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_sheafbench"))
        .current_dir(workspace())
        .args(["run", short.to_str().unwrap(), long.to_str().unwrap()])
        .args(["--alloc", "system", "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Wait for the first measurement to be on disk, and for the long one's child to start.
    let children_of_long = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&unique))
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let finished = std::fs::read_to_string(&json)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .is_some_and(|value| value["runs"].as_array().is_some_and(|r| r.len() == 1));
        if finished && !children_of_long().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first measurement never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // Interrupt the run (SIGTERM to the parent alone, which ends it as Ctrl-C would; SIGINT
    // itself is ignored by processes started in the background of a non-interactive shell,
    // so a test runner started that way would see the run finish instead).
    let pid = rustix::process::Pid::from_raw(i32::try_from(run.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let output = run.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "the status of an interrupted run"
    );
    // It says what it kept, and where.
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "interrupted: 1 finished measurement(s) kept in {}",
            json.display()
        )),
        "{stderr}"
    );

    let value: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = value["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "exactly the finished measurement is kept");
    assert_eq!(runs[0]["workload"], "tiny");
    assert!(runs[0]["throughput_ops_per_s"].as_f64().unwrap() > 0.0);
    // No temporary file left beside the result.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("r.json") && name != "r.json")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The long measurement's child is gone within a few seconds, not 60.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !children_of_long().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the measuring child outlived the interrupted run"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_contract_page_has_every_clause_of_the_checks_in_their_order() {
    let page = std::fs::read_to_string(workspace().join("docs/contract.md")).unwrap();
    // Each clause is a bullet that opens with its ID in bold.
    let on_page: Vec<&str> = page
        .lines()
        .filter_map(|line| line.strip_prefix("- **C-"))
        .filter_map(|rest| rest.split_once("**").map(|(id, _)| id))
        .collect();
    let checked: Vec<&str> = conformance::CLAUSES
        .iter()
        .map(|clause| clause.id.strip_prefix("C-").unwrap())
        .collect();
    assert_eq!(
        on_page, checked,
        "docs/contract.md against conformance::CLAUSES"
    );
}

/// Several workloads: stdout and the Markdown open with one summary of every (workload,
/// threads) (winner, paired ratio over the runner-up, machine load) and say which thread
/// counts were left out and why; the machine is named once.
#[test]
fn several_workloads_open_with_one_summary_and_the_counts_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let churn = write_spec(
        dir.path(),
        "tiny.yaml",
        &GOOD.replace("pinned: false", "pinned: true"),
    );
    let pc = write_spec(
        dir.path(),
        "pc.yaml",
        "name: pc\nkind: producer-consumer\nobject_size: 64\nwarmup: 5ms\nduration: 20ms\nruns: 2\nparams: {queue: 64, batch: 8}\n",
    );
    let markdown = dir.path().join("r.md");
    let (json, stdout) = run_json(&[
        "run",
        churn.to_str().unwrap(),
        pc.to_str().unwrap(),
        "--alloc",
        "system,locked-slab",
        "--threads",
        "1,4096",
        "--runs",
        "3",
        "--markdown",
        markdown.to_str().unwrap(),
    ]);
    assert_eq!(json["notes"].as_array().unwrap().len(), 2, "{json}");
    let md = std::fs::read_to_string(&markdown).unwrap();
    assert_eq!(md.matches("# sheafbench results").count(), 1, "{md}");
    assert_eq!(md.matches("## Summary").count(), 1, "{md}");
    let summary_text = &stdout[..stdout.find("tiny (churn)").expect("the tables follow")];
    let summary_md = &md[md.find("## Summary").unwrap()..md.find("## tiny").unwrap()];
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d+\.\d+ \[\d+\.\d+\.\.\d+\.\d+\]( \(tie\))?", "[r]");
    settings.add_filter(r"\b(system|locked-slab)\b", "[a]");
    settings.add_filter(
        r"(?m)(quiet|machine busy|hypervisor steal)(, hypervisor steal)? +([│|])$",
        "[load] $3",
    );
    settings.add_filter(r"\d+ CPUs", "[n] CPUs");
    settings.add_filter(r"[─═]+", "─");
    settings.add_filter(r" +", " ");
    settings.bind(|| {
        insta::assert_snapshot!("summary_stdout", summary_text);
        insta::assert_snapshot!("summary_markdown", summary_md);
    });
}

/// A quick run of the tiny spec recording into `db`; returns its output.
fn recorded_run(dir: &Path, db: &Path, extra: &[&str]) -> std::process::Output {
    let spec = write_spec(dir, "good.yaml", GOOD);
    sheafbench()
        .args([
            "run",
            spec.to_str().unwrap(),
            "--alloc",
            "sheaf,system",
            "--db",
        ])
        .arg(db)
        .args(extra)
        .output()
        .unwrap()
}

/// `history trend tiny ALLOCATOR --figure FIGURE` on the store `db`, with `extra` options.
fn history_trend(db: &Path, allocator: &str, figure: &str, extra: &[&str]) -> std::process::Output {
    sheafbench()
        .args([
            "history", "trend", "tiny", allocator, "--figure", figure, "--db",
        ])
        .arg(db)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn runs_are_recorded_in_the_history_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let json = dir.path().join("r.json");
    let out = recorded_run(dir.path(), &db, &["--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let out = recorded_run(dir.path(), &db, &["--no-history"]);
    assert!(out.status.success(), "{out:?}");
    let list = sheafbench()
        .args([
            "history",
            "list",
            "--workload",
            "tiny",
            "--alloc",
            "sheaf",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    let stdout = String::from_utf8(list.stdout).unwrap();
    assert!(list.status.success(), "{stdout}");
    assert!(stdout.contains("1 run(s) in"), "{stdout}");
    // The recorded document is the result file as written.
    let trend = history_trend(&db, "sheaf", "ratio_vs_sheaf", &[]);
    assert_eq!(trend.status.code(), Some(2), "no such figure: {trend:?}");
    let svg = dir.path().join("trend.svg");
    let trend = history_trend(
        &db,
        "system",
        "ratio_vs_sheaf",
        &["--svg", svg.to_str().unwrap()],
    );
    assert!(trend.status.success(), "{trend:?}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

#[test]
fn compare_takes_history_references() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let json = dir.path().join("r.json");
    for _ in 0..2 {
        let out = recorded_run(dir.path(), &db, &["--json", json.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
    }
    let out = sheafbench()
        .args(["compare", "latest~1", "latest", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("verdicts:"), "{stdout}");
    // A file against a run of the history.
    let out = sheafbench()
        .args(["compare", json.to_str().unwrap(), "1", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = sheafbench()
        .args(["compare", "latest~7", "latest", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no run matches `latest~7`"), "{stderr}");
}

#[test]
fn a_corrupt_history_fails_history_commands_but_not_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    std::fs::write(&db, vec![0x5a; 4096]).unwrap();
    let json = dir.path().join("r.json");
    let out = recorded_run(dir.path(), &db, &["--json", json.to_str().unwrap()]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(json.exists(), "the result file is written");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("history")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("not a database"), "{stderr}");
    let import_dir = dir.path().to_str().unwrap();
    for args in [&["history", "list"][..], &["history", "import", import_dir]] {
        let out = sheafbench()
            .args(args)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // An unreachable server: the run goes on and says so once.
    let out = recorded_run(
        dir.path(),
        Path::new("postgres://nobody@127.0.0.1:1/none?connect_timeout=2"),
        &[],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr
            .matches("not recorded in the results history")
            .count(),
        1,
        "{stderr}"
    );
}

#[test]
fn import_records_result_files_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let runs = dir.path().join("runs/2026");
    std::fs::create_dir_all(&runs).unwrap();
    let json = runs.join("r.json");
    let out = recorded_run(
        dir.path(),
        &db,
        &["--no-history", "--json", json.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    std::fs::write(runs.join("gate.json"), "{}").unwrap();
    // A gate's rounds are left out; a bench directory gives its merged file only.
    std::fs::copy(&json, runs.join("ratio-round-0.json")).unwrap();
    let bench = dir.path().join("runs/bench");
    std::fs::create_dir_all(&bench).unwrap();
    for name in ["results.json", "tiny.json"] {
        std::fs::copy(&json, bench.join(name)).unwrap();
    }
    std::fs::write(bench.join("report.md"), "# report\n").unwrap();
    for expected in ["imported 2 result file(s)", "imported 0 result file(s)"] {
        let out = sheafbench()
            .args(["history", "import"])
            .arg(dir.path().join("runs"))
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.contains(expected), "{stdout}");
    }
    let out = sheafbench()
        .args(["history", "list", "--kind", "bench", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("1 run(s) in"), "{stdout}");
}

#[test]
fn conformance_is_recorded_with_a_figure_per_applicable_clause() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let out = sheafbench()
        .args([
            "conformance",
            "--alloc",
            "system,sheaf",
            "--quick",
            "--only",
            "C-OBJ-1",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = sheafbench()
        .args([
            "history",
            "list",
            "--kind",
            "conformance",
            "--alloc",
            "sheaf",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("1 run(s) in"), "{stdout}");
}

/// The nodes sheaf keeps per-node lists for on this machine (sysfs; 1 where it says nothing).
fn host_nodes() -> u64 {
    std::fs::read_dir("/sys/devices/system/node")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix("node")
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count() as u64
        })
        .unwrap_or(0)
        .max(1)
}

#[test]
fn sheaf_after_the_drain_and_shrink_holds_no_slab_beyond_its_minimum_partial_on_every_spec() {
    // The pool's default: empty slabs a node may keep.
    const MIN_PARTIAL: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let specs: Vec<PathBuf> = std::fs::read_dir(workspace().join("workloads"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(specs.len() >= 10, "{specs:?}");
    let out = sheafbench()
        .arg("run")
        .args(&specs)
        .args([
            "--alloc",
            "sheaf",
            "--threads",
            "1",
            "--quick",
            "--set",
            "pinned=false",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = file["runs"].as_array().unwrap();
    assert_eq!(runs.len(), specs.len(), "one measurement per spec");
    let bound = MIN_PARTIAL * host_nodes();
    for m in runs {
        let figures = &m["memory"]["figures"];
        let name = m["workload"].as_str().unwrap();
        let slabs = figures["retained_after_shrink"]["slabs"].as_f64();
        let slabs = slabs.unwrap_or_else(|| panic!("{name}: {figures}"));
        assert!(
            slabs <= bound as f64,
            "{name}: {slabs} slabs held after shrink"
        );
        // shrink() gives slabs back, never takes more.
        let before = figures["retained_after_free"]["slabs"].as_f64().unwrap();
        assert!(before >= slabs, "{name}: {before} before, {slabs} after");
    }
}

/// A `scale` of the tiny spec: its JSON, stdout and stderr.
fn scale(dir: &Path, extra: &[&str]) -> (Option<Value>, String, String, Option<i32>) {
    let spec = write_spec(dir, "tiny.yaml", GOOD);
    let json = dir.join("scale.json");
    let out = sheafbench()
        .arg("scale")
        .arg(&spec)
        .args(extra)
        .arg("--json")
        .arg(&json)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    let value = std::fs::read_to_string(&json)
        .ok()
        .map(|text| serde_json::from_str(&text).unwrap());
    (
        value,
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code(),
    )
}

#[test]
fn scale_runs_each_task_of_process_mode_in_a_process_of_its_own_and_draws_the_curves() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let (json, stdout, stderr, code) = scale(
        dir.path(),
        &[
            "--threads",
            "1..3",
            "--mode",
            "both",
            "--alloc",
            "system,sheaf",
            "--db",
            db.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let json = json.unwrap();
    let cores = json["machine"]["cores"].as_u64().unwrap();
    let points = json["scaling"].as_array().unwrap();
    // Every (mode, tasks, allocator), each in both rounds.
    assert_eq!(points.len(), 2 * 3 * 2);
    let mut thread_pids = Vec::new();
    let mut process_pids = Vec::new();
    for p in points {
        let tasks = p["tasks"].as_u64().unwrap();
        let mode = p["mode"].as_str().unwrap();
        assert_eq!(p["oversubscribed"].as_bool().unwrap(), tasks > cores, "{p}");
        assert_eq!(p["efficiency"].is_null(), tasks == 1, "{p}");
        let rounds = p["rounds"].as_array().unwrap();
        assert_eq!(rounds.len(), 2);
        for r in rounds {
            let processes = r["processes"].as_array().unwrap();
            let pids: Vec<u64> = processes
                .iter()
                .map(|q| q["pid"].as_u64().unwrap())
                .collect();
            let summed: f64 = processes
                .iter()
                .map(|q| q["throughput_ops_per_s"].as_f64().unwrap())
                .sum();
            let total = r["total_ops_per_s"].as_f64().unwrap();
            assert!((summed - total).abs() <= 1e-9 * total.max(1.0), "{r}");
            match mode {
                // One process runs every task as a thread.
                "thread" => {
                    assert_eq!(pids.len(), 1);
                    thread_pids.extend(pids);
                }
                // A process per task, each a different one.
                "process" => {
                    assert_eq!(pids.len() as u64, tasks);
                    let mut distinct = pids.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    assert_eq!(distinct.len(), pids.len(), "{r}");
                    process_pids.extend(pids);
                }
                other => panic!("mode {other}"),
            }
        }
    }
    assert!(process_pids.iter().all(|p| !thread_pids.contains(p)));
    let svg = std::fs::read_to_string(dir.path().join("scale-curves.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("sheaf (process)") && svg.contains("system (thread)"));
    // The band's label, on a line of its own (the legend's hint says more).
    let band = svg.lines().any(|line| line.trim() == "oversubscribed");
    assert_eq!(band, cores < 3);
    table_settings(&[(r"no \(oversubscribed\)", "no")])
        .bind(|| insta::assert_snapshot!("scale_table", stdout));
    // Recorded in the history: a figure per point, named by mode and task count.
    let trend = history_trend(&db, "sheaf", "process_2_per_task_ops_per_s", &[]);
    assert!(trend.status.success(), "{trend:?}");
}

#[test]
fn scale_reports_a_task_process_that_hangs_and_kills_it() {
    // Runs of five seconds with a time-out of one: each task's process is killed and the
    // failure named, instead of the run waiting for it.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "long.yaml",
        &GOOD.replace("duration: 20ms", "duration: 5s"),
    );
    let json = dir.path().join("r.json");
    let out = sheafbench()
        .arg("scale")
        .arg(&spec)
        .args([
            "--threads",
            "2",
            "--mode",
            "process",
            "--alloc",
            "system",
            "--timeout",
            "1",
        ])
        .arg("--json")
        .arg(&json)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tiny / system / process mode / 2 tasks (round 1): task 1 of 2: timed out after 1 s while measuring"),
        "{stderr}"
    );
    let value: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let failures = value["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("process mode, 2 tasks: task 1 of 2: timed out")
    );
}

#[test]
fn scale_refuses_bad_input_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = write_spec(d, "good.yaml", GOOD);
    let good = good.to_str().unwrap();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("scale_zero_tasks", vec!["scale", good, "--threads", "0"]),
        (
            "scale_malformed_threads",
            vec!["scale", good, "--threads", "1..x"],
        ),
        (
            "scale_backwards_range",
            vec!["scale", good, "--threads", "4..2"],
        ),
        ("scale_unknown_mode", vec!["scale", good, "--mode", "fibre"]),
        (
            "scale_process_mode_with_shared_readers",
            vec!["scale", "workloads/maple-tree.yaml", "--mode", "process"],
        ),
    ];
    for (name, args) in cases {
        let message = bad_input(&args, d);
        insta::assert_snapshot!(format!("bad_input__{name}"), message);
    }
}

/// The shipped capacity-change specs (default and flush-everything).
fn capacity_change_specs() -> [String; 2] {
    ["capacity-change.yaml", "capacity-change-flush.yaml"]
        .map(|f| workspace().join("workloads").join(f).display().to_string())
}

#[test]
fn run_time_changes_are_reported_per_change_in_the_json_and_the_table_and_documented() {
    let [default, flush] = capacity_change_specs();
    let (json, stdout) = run_json(&[
        "run",
        &default,
        &flush,
        "--quick",
        "--threads",
        "1",
        "--alloc",
        "sheaf",
        "--no-history",
    ]);
    assert!(stdout.contains("run-time changes (phases)"), "{stdout}");
    assert!(stdout.contains("sheaf_capacity 16"), "{stdout}");
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        let flushing = run["config"]["resize_by_flush"].as_bool().unwrap();
        assert_eq!(flushing, run["workload"] == "capacity-change-flush");
        let changes = run["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 2, "{run}");
        assert_eq!(changes[0]["sheaf_capacity"], 16);
        for change in changes {
            let applied = change["applied"].as_array().unwrap();
            assert_eq!(applied.len(), 2, "one per round: {change}");
            for a in applied {
                assert!(a["took_s"].as_f64().unwrap() >= 0.0);
                assert!(a["applied_at_s"].as_f64().unwrap() > 0.0);
            }
            for window in ["before", "after"] {
                let w = &change[window];
                assert!(w["to_s"].as_f64().unwrap() > w["from_s"].as_f64().unwrap());
                assert!(w["ops"].as_u64().unwrap() > 0, "{window}: {change}");
            }
        }
        // The counters of the change are reported by sheaf.
        assert!(run["stats"].get("resize_flushed").is_some(), "{run}");
        let flushed: u64 = changes
            .iter()
            .flat_map(|c| c["applied"].as_array().unwrap())
            .map(|a| a["flushed_objects"].as_u64().unwrap())
            .sum();
        if flushing {
            assert!(
                flushed > 0,
                "a flush-everything change flushes the cached objects"
            );
        }
    }
    let doc = std::fs::read_to_string(workspace().join("docs/results.md")).unwrap();
    let mut names = std::collections::BTreeSet::new();
    field_names(&json, "", &mut names);
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/results.md does not name {missing:?}"
    );
}

#[test]
fn run_time_changes_on_a_design_without_sheaves_or_out_of_the_run_are_refused_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let [default, _] = capacity_change_specs();
    let system = bad_input(&["run", &default, "--alloc", "sheaf,system"], dir.path());
    assert!(system.contains("`phases[0].sheaf_capacity`"), "{system}");
    assert!(system.contains("`system`"), "{system}");
    let beyond = bad_input(
        &["run", &default, "--alloc", "sheaf", "--duration", "300ms"],
        dir.path(),
    );
    assert!(beyond.contains("`phases[0].at` = 400ms"), "{beyond}");
    let past = write_spec(
        dir.path(),
        "past.yaml",
        &format!(
            "{GOOD}phases:\n  - at: 10ms\n    sheaf_capacity: 8\n  - at: 5ms\n    sheaf_capacity: 16\n"
        ),
    );
    let past = bad_input(
        &["run", past.to_str().unwrap(), "--alloc", "sheaf"],
        dir.path(),
    );
    assert!(past.contains("`phases[1].at` = 5ms"), "{past}");
    let no_sheaves = bad_input(
        &[
            "run",
            &default,
            "--alloc",
            "sheaf",
            "--set",
            "sheaf_capacity=0",
        ],
        dir.path(),
    );
    assert!(
        no_sheaves.contains("`phases[0].sheaf_capacity`"),
        "{no_sheaves}"
    );
}

/// `sheafbench ab --old OLD SPEC` on `system` and `sheaf`, 6 rounds, verdicts to `verdicts`,
/// with `extra`: the output, its stdout and its stderr.
fn ab(
    old: &Path,
    spec: &Path,
    verdicts: &Path,
    extra: &[&str],
) -> (std::process::Output, String, String) {
    let out = sheafbench()
        .arg("ab")
        .arg("--old")
        .arg(old)
        .arg(spec)
        .args(["--alloc", "system,sheaf", "--runs", "6", "--verdicts"])
        .arg(verdicts)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// `ab` measures two builds in the same rounds: here the binary against itself (an A/A run,
/// said so), every allocator named `@old` and `@new` in the result file, one paired ratio
/// new over old per allocator, and a verdict row per figure in `--verdicts`.
#[test]
fn ab_measures_two_builds_in_the_same_rounds_and_judges_each_allocator() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.yaml", GOOD);
    let old = assert_cmd::cargo::cargo_bin("sheafbench");
    let json = dir.path().join("ab.json");
    let verdicts = dir.path().join("verdicts.json");
    let json_arg = json.to_str().unwrap();
    let (out, stdout, stderr) = ab(&old, &spec, &verdicts, &["--json", json_arg]);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("an A/A run"), "{stderr}");
    assert!(
        stdout.contains("new (") && stdout.contains("±2%") && stdout.contains("verdicts:"),
        "{stdout}"
    );
    let results: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let mut names: Vec<&str> = results["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["allocator"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["sheaf@new", "sheaf@old", "system@new", "system@old"]
    );
    let paired = results["paired"].as_array().unwrap();
    assert_eq!(paired.len(), 2, "{paired:?}");
    for p in paired {
        let allocator = p["allocator"].as_str().unwrap();
        let base = allocator.strip_suffix("@new").unwrap();
        assert_eq!(p["versus"], format!("{base}@old"));
        assert_eq!(p["rounds"].as_array().unwrap().len(), 6);
    }
    let notes = results["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .filter(|n| n.as_str().unwrap().contains("sha256"))
            .count()
            == 2,
        "{notes:?}"
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&verdicts).unwrap()).unwrap();
    assert_eq!(doc["old_sha256"], doc["new_sha256"]);
    let rows = doc["rows"].as_array().unwrap();
    for allocator in ["system", "sheaf"] {
        let row = rows
            .iter()
            .find(|r| r["allocator"] == allocator && r["figure"] == "throughput")
            .unwrap_or_else(|| panic!("no {allocator} row: {rows:?}"));
        let verdict = row["verdict"].as_str().unwrap();
        assert!(
            ["faster", "slower", "no change", "unresolved"].contains(&verdict),
            "{row}"
        );
        let [low, high] = [0, 1].map(|i| row["interval"][i].as_f64().unwrap());
        let change = row["change"].as_f64().unwrap();
        assert!(low <= change && change <= high, "{row}");
    }
}

#[test]
fn ab_refuses_a_binary_that_is_not_sheafbench_and_a_bad_floor() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.yaml", GOOD);
    let spec = spec.to_str().unwrap();
    let missing = dir.path().join("missing");
    let err = bad_input(
        &["ab", "--old", missing.to_str().unwrap(), spec],
        dir.path(),
    );
    assert!(err.contains("--old [dir]/missing"), "{err}");
    let not_ours = write_spec(dir.path(), "not-ours.sh", "#!/bin/sh\necho hello\n");
    std::fs::set_permissions(
        &not_ours,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let err = bad_input(
        &["ab", "--old", not_ours.to_str().unwrap(), spec],
        dir.path(),
    );
    assert!(err.contains("not a sheafbench binary"), "{err}");
    let old = assert_cmd::cargo::cargo_bin("sheafbench");
    let err = bad_input(
        &["ab", "--old", old.to_str().unwrap(), spec, "--floor", "-1"],
        dir.path(),
    );
    assert!(err.contains("--floor -1"), "{err}");
    let err = bad_input(
        &["ab", "--old", old.to_str().unwrap(), spec, "--runs", "5"],
        dir.path(),
    );
    assert!(err.contains("needs 6 rounds or more"), "{err}");
}

/// An old build whose every measurement reports a million times this binary's throughput
/// (a shell wrapper that runs this binary and rewrites the figure in its JSON): against it, `ab`
/// must call the new build's throughput "slower" for every allocator, leave the figure the
/// wrapper did not touch (per CPU-second, from the operations and the CPU time) at no
/// slowdown of that size, and with `--fail-on-slower` exit with status 1, naming the rows.
#[test]
fn ab_calls_a_change_of_the_old_build_slower_and_fails_on_it_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.yaml", GOOD);
    let real = assert_cmd::cargo::cargo_bin("sheafbench");
    let faster = write_spec(
        dir.path(),
        "faster-old.sh",
        &format!(
            "#!/bin/sh\n# The measuring process's parent is this shell now.\nexport SHEAFBENCH_PARENT_PID=$$\n\"{}\" \"$@\" | sed -E 's/\"throughput_ops_per_s\":([0-9.e+-]+)/\"throughput_ops_per_s\":\\1e6/g'\n",
            real.display()
        ),
    );
    std::fs::set_permissions(&faster, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let verdicts = dir.path().join("verdicts.json");
    let (out, stdout, stderr) = ab(&faster, &spec, &verdicts, &["--fail-on-slower"]);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("2 row(s) slower in the new build")
            && stderr.contains("tiny/system/1t/throughput")
            && stderr.contains("tiny/sheaf/1t/throughput"),
        "{stderr}"
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&verdicts).unwrap()).unwrap();
    assert_ne!(doc["old_sha256"], doc["new_sha256"]);
    for row in doc["rows"].as_array().unwrap() {
        let change = row["change"].as_f64().unwrap();
        if row["figure"] == "throughput" {
            assert_eq!(row["verdict"], "slower", "{row}");
            assert!(change < -0.99, "{row}");
        } else {
            assert!(change > -0.9, "the wrapper left this figure alone: {row}");
        }
    }
}
