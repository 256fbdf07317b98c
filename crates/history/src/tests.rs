//! The store's tests, run on SQLite, and on PostgreSQL as well when
//! `SHEAFBENCH_TEST_POSTGRES` names a server (a URL; each test gets a schema of its own):
//! `.ci/postgres.sh` starts one and runs them.
//!
//! The reliability tests run writers in child processes: this test binary started again on
//! one test, with `HISTORY_CHILD` saying what the child does.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sql::{SqlStore, Value};
use crate::*;

/// The server the tests use besides SQLite.
const POSTGRES_VAR: &str = "SHEAFBENCH_TEST_POSTGRES";

/// A store for one test; the temporary directory lives as long as it.
struct Fresh {
    location: Location,
    _dir: tempfile::TempDir,
}

/// Every backend to test: SQLite always, PostgreSQL when configured.
fn backends() -> Vec<Fresh> {
    let mut all = vec![sqlite_store()];
    if let Some(pg) = postgres_store() {
        all.push(pg);
    }
    all
}

fn sqlite_store() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    Fresh {
        location: Location::Sqlite(dir.path().join("results/history.sqlite")),
        _dir: dir,
    }
}

/// A schema of its own on the configured server, as a URL that selects it.
fn postgres_store() -> Option<Fresh> {
    let url = std::env::var(POSTGRES_VAR).ok().filter(|u| !u.is_empty())?;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "t{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(Fresh {
        location: Location::Postgres(format!(
            "{url}{separator}options=-c%20search_path%3D{schema}"
        )),
        _dir: tempfile::tempdir().unwrap(),
    })
}

fn text_of(location: &Location) -> String {
    match location {
        Location::Sqlite(path) => path.display().to_string(),
        Location::Postgres(url) => url.clone(),
    }
}

fn machine(cpu: &str) -> Fingerprint {
    Fingerprint {
        cpu: cpu.to_owned(),
        cores: 2,
        kernel: "6.1.0".into(),
        rseq: "glibc 32 sheaf default".into(),
        governor: "unknown".into(),
        smt: "notsupported inactive".into(),
        thp: "madvise".into(),
    }
}

/// A run with one measurement and two figures.
fn sample_run(time: &str, revision: &str, cpu: &str, throughput: f64) -> NewRun {
    NewRun {
        time: time.to_owned(),
        kind: RunKind::Run,
        revision: revision.to_owned(),
        branch: Some("main".into()),
        dirty: false,
        machine: machine(cpu),
        tag: None,
        config: serde_json::json!({"runs": 3}),
        source: Some("results/runs/x/run.json".into()),
        document: serde_json::json!({"schema": 2, "date": time, "throughput": throughput}),
        measurements: vec![MeasurementRow {
            workload: "churn-lifo".into(),
            workload_kind: "churn".into(),
            allocator: "sheaf".into(),
            threads: 1,
            spec: "{}".into(),
            spec_hash: "00".into(),
            config: "{}".into(),
            counters: "{}".into(),
            memory: "{}".into(),
            stats: "{}".into(),
            warnings: "[\"busy\"]".into(),
        }],
        figures: vec![
            Figure {
                threads: Some(1),
                rounds: vec![throughput * 0.99, throughput, throughput * 1.01],
                ..Figure::point("churn-lifo", "sheaf", "throughput_ops_per_s", throughput)
            },
            Figure {
                low: Some(1.1),
                high: Some(1.3),
                ..Figure::point("burst", "sheaf", "ratio_vs_mimalloc", 1.2)
            },
        ],
    }
}

#[test]
fn a_recorded_run_reads_back_whole() {
    for fresh in backends() {
        let mut store = open(&fresh.location).unwrap();
        assert_eq!(store.version().unwrap(), schema::VERSION);
        let run = sample_run("2026-01-02T03:04:05Z", "abcdef0123", "CPU A", 1000.0);
        let id = store.record(&run).unwrap();
        let listed = store.list(&Filter::default()).unwrap();
        assert_eq!(listed.len(), 1, "{}", store.location());
        let r = &listed[0];
        assert_eq!(
            (r.id, r.time.as_str(), r.kind.as_str(), r.revision.as_str()),
            (id, "2026-01-02T03:04:05Z", "run", "abcdef0123")
        );
        assert_eq!((r.measurements, r.figures), (1, 2));
        assert_eq!(r.machine, run.machine.id());
        assert_eq!(r.branch.as_deref(), Some("main"));
        assert_eq!(store.document(id).unwrap(), run.document);
        let points = store
            .series(&SeriesQuery {
                workload: "burst".into(),
                allocator: "sheaf".into(),
                name: "ratio_vs_mimalloc".into(),
                ..SeriesQuery::default()
            })
            .unwrap();
        assert_eq!(points.len(), 1);
        assert_eq!(
            (points[0].value, points[0].low, points[0].high),
            (1.2, Some(1.1), Some(1.3))
        );
    }
}

#[test]
fn every_round_of_a_figure_is_kept() {
    for fresh in backends() {
        let store = open(&fresh.location).unwrap();
        drop(store);
        let run = sample_run("2026-01-02T03:04:05Z", "abcdef0123", "CPU A", 1000.0);
        let mut sql = raw(&fresh.location);
        let mut store = open(&fresh.location).unwrap();
        store.record(&run).unwrap();
        let rows = sql
            .query_values("SELECT round, value FROM rounds ORDER BY figure_id, round")
            .unwrap();
        let values: Vec<f64> = rows
            .iter()
            .map(|r| match r[1] {
                Value::Real(v) => v,
                ref other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(values, [990.0, 1000.0, 1010.0]);
    }
}

#[test]
fn list_filters_by_workload_allocator_machine_revision_date_and_kind() {
    for fresh in backends() {
        let mut store = open(&fresh.location).unwrap();
        store
            .record(&sample_run(
                "2026-01-01T00:00:00Z",
                "aaaaaaa1",
                "Intel Xeon",
                1.0,
            ))
            .unwrap();
        let mut other = sample_run("2026-02-01T00:00:00Z", "bbbbbbb2", "AMD EPYC", 2.0);
        other.kind = RunKind::Gate;
        other.figures[0].workload = Some("burst".into());
        other.figures[0].allocator = Some("mimalloc".into());
        store.record(&other).unwrap();
        let ids = |store: &mut Box<dyn Store>, filter: Filter| -> Vec<String> {
            store
                .list(&filter)
                .unwrap()
                .into_iter()
                .map(|r| r.revision)
                .collect()
        };
        let all = ["aaaaaaa1", "bbbbbbb2"];
        assert_eq!(ids(&mut store, Filter::default()), all);
        let only_a = ["aaaaaaa1"];
        let only_b = ["bbbbbbb2"];
        let cases = [
            (
                Filter {
                    workload: Some("churn-lifo".into()),
                    ..Filter::default()
                },
                &only_a[..],
            ),
            (
                Filter {
                    allocator: Some("mimalloc".into()),
                    ..Filter::default()
                },
                &only_b[..],
            ),
            (
                Filter {
                    allocator: Some("sheaf".into()),
                    ..Filter::default()
                },
                &all[..],
            ),
            (
                Filter {
                    machine: Some("epyc".into()),
                    ..Filter::default()
                },
                &only_b[..],
            ),
            (
                Filter {
                    machine: Some(machine("Intel Xeon").id()[..6].into()),
                    ..Filter::default()
                },
                &only_a[..],
            ),
            (
                Filter {
                    revision: Some("bbb".into()),
                    ..Filter::default()
                },
                &only_b[..],
            ),
            (
                Filter {
                    since: Some("2026-01-15".into()),
                    ..Filter::default()
                },
                &only_b[..],
            ),
            (
                Filter {
                    kind: Some(RunKind::Gate),
                    ..Filter::default()
                },
                &only_b[..],
            ),
            (
                Filter {
                    workload: Some("nothing".into()),
                    ..Filter::default()
                },
                &[][..],
            ),
            // A LIKE wildcard in a filter is a plain character.
            (
                Filter {
                    revision: Some("%".into()),
                    ..Filter::default()
                },
                &[][..],
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(ids(&mut store, filter.clone()), expected, "{filter:?}");
        }
    }
}

#[test]
fn references_name_the_latest_run_an_id_or_a_revision() {
    for fresh in backends() {
        let mut store = open(&fresh.location).unwrap();
        let first = store
            .record(&sample_run(
                "2026-01-01T00:00:00Z",
                "aaaaaaa1ffff",
                "C",
                1.0,
            ))
            .unwrap();
        let second = store
            .record(&sample_run(
                "2026-01-02T00:00:00Z",
                "bbbbbbb2ffff",
                "C",
                1.0,
            ))
            .unwrap();
        let mut gate = sample_run("2026-01-03T00:00:00Z", "ccccccc3ffff", "C", 1.0);
        gate.kind = RunKind::Gate;
        let third = store.record(&gate).unwrap();
        assert_eq!(store.resolve("latest", &[]).unwrap(), third);
        assert_eq!(store.resolve("latest", &[RunKind::Run]).unwrap(), second);
        assert_eq!(store.resolve("latest~1", &[RunKind::Run]).unwrap(), first);
        assert_eq!(store.resolve(&first.to_string(), &[]).unwrap(), first);
        assert_eq!(store.resolve("AAAAAAA1", &[]).unwrap(), first);
        for bad in ["latest~5", "9999", "zzz", "abc", "fffffff"] {
            let error = store.resolve(bad, &[]).unwrap_err();
            assert!(
                matches!(error, HistoryError::NoSuchRun(_)),
                "{bad}: {error}"
            );
        }
    }
}

#[test]
fn the_series_of_a_figure_can_keep_to_one_machine_and_leave_out_tagged_runs() {
    for fresh in backends() {
        let mut store = open(&fresh.location).unwrap();
        for (day, cpu, value, tag) in [
            (1, "A", 10.0, None),
            (2, "B", 20.0, None),
            (3, "A", 11.0, Some("slowdown=50")),
            (4, "A", 12.0, None),
        ] {
            let mut run = sample_run(&format!("2026-01-0{day}T00:00:00Z"), "abcdef01", cpu, value);
            run.tag = tag.map(str::to_owned);
            store.record(&run).unwrap();
        }
        let query = SeriesQuery {
            workload: "churn-lifo".into(),
            allocator: "sheaf".into(),
            name: "throughput_ops_per_s".into(),
            ..SeriesQuery::default()
        };
        let values = |store: &mut Box<dyn Store>, q: &SeriesQuery| -> Vec<f64> {
            store.series(q).unwrap().iter().map(|p| p.value).collect()
        };
        assert_eq!(values(&mut store, &query), [10.0, 20.0, 11.0, 12.0]);
        let same_machine = SeriesQuery {
            machine: Some(machine("A").id()),
            untagged: true,
            ..query.clone()
        };
        assert_eq!(values(&mut store, &same_machine), [10.0, 12.0]);
        let other_kind = SeriesQuery {
            kind: Some(RunKind::Gate),
            ..query
        };
        assert!(values(&mut store, &other_kind).is_empty());
    }
}

/// Statements on a store without the [`Store`] layer: old schemas, odd versions, counts.
struct Raw(Box<dyn sql::Conn>);

impl Raw {
    fn query_values(&mut self, sql: &str) -> Result<Vec<Vec<Value>>, String> {
        if sql.trim_start().to_uppercase().starts_with("SELECT") {
            self.0.query(sql, &[])
        } else {
            self.0.execute(sql, &[]).map(|_| Vec::new())
        }
    }
}

fn raw(location: &Location) -> Raw {
    match location {
        Location::Sqlite(path) => Raw(Box::new(sql::sqlite::open(path).unwrap())),
        Location::Postgres(url) => Raw(Box::new(sql::postgres::open(url).unwrap())),
    }
}

/// A store at schema version 1 holding one run, written as a build of that version would.
fn version_one_store(location: &Location) {
    match location {
        Location::Sqlite(path) => {
            let mut store = SqlStore::raw(sql::sqlite::open(path).unwrap());
            store.migrate_to(1).unwrap();
        }
        Location::Postgres(url) => {
            let mut store = SqlStore::raw(sql::postgres::open(url).unwrap());
            store.migrate_to(1).unwrap();
        }
    }
    let mut sql = raw(location);
    sql.query_values(
        "INSERT INTO runs (time, kind, revision, branch, dirty, machine, cpu, cores, kernel, \
         rseq, governor, smt, thp, config, source, document) VALUES ('2025-12-01T00:00:00Z', \
         'run', 'abcdef01', NULL, 0, 'm', 'c', 2, 'k', 'r', 'g', 's', 't', '{}', NULL, '{}')",
    )
    .unwrap();
}

#[test]
fn an_older_store_is_migrated_and_keeps_its_runs() {
    for fresh in backends() {
        version_one_store(&fresh.location);
        let mut store = open(&fresh.location).unwrap();
        assert_eq!(store.version().unwrap(), schema::VERSION);
        let runs = store.list(&Filter::default()).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].tag, None);
        // The migrated store takes new runs with the new column.
        let mut run = sample_run("2026-01-01T00:00:00Z", "abcdef02", "C", 1.0);
        run.tag = Some("x".into());
        store.record(&run).unwrap();
        assert_eq!(
            store.list(&Filter::default()).unwrap()[1].tag.as_deref(),
            Some("x")
        );
    }
}

#[test]
fn a_newer_store_is_refused_in_one_line() {
    for fresh in backends() {
        open(&fresh.location).unwrap();
        raw(&fresh.location)
            .query_values("UPDATE schema_version SET version = 99")
            .unwrap();
        let error = open(&fresh.location).err().expect("refused");
        assert!(
            matches!(error, HistoryError::Newer { found: 99, .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("schema version 99 is newer"), "{message}");
    }
}

#[test]
fn a_corrupt_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.sqlite");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let error = open(&Location::Sqlite(path.clone()))
        .err()
        .expect("refused");
    let message = error.to_string();
    assert!(matches!(error, HistoryError::Open { .. }), "{message}");
    assert!(message.contains("not a database"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    // The file is left as it was.
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192]);
}

#[test]
fn an_unreachable_server_is_a_one_line_error_soon() {
    // Port 1 on this host: nothing listens there.
    let start = Instant::now();
    let error = open(&Location::parse(
        "postgres://nobody:secret@127.0.0.1:1/none?connect_timeout=2",
    ))
    .err()
    .expect("refused");
    let message = error.to_string();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        message.starts_with("history store postgres://nobody:***@127.0.0.1:1"),
        "{message}"
    );
    assert!(
        !message.contains("secret") && !message.contains('\n'),
        "{message}"
    );
}

#[test]
fn locations_come_from_the_option_then_the_variable_then_the_default() {
    let root = PathBuf::from("/w");
    assert_eq!(
        Location::resolve(Some("postgres://h/db"), &root),
        Location::Postgres("postgres://h/db".into())
    );
    assert_eq!(
        Location::resolve(Some("x.sqlite"), &root),
        Location::Sqlite("x.sqlite".into())
    );
    // The variable is not read here (tests share the process environment); the default:
    if std::env::var(ENV_VAR).is_err() {
        assert_eq!(
            Location::resolve(None, &root),
            Location::Sqlite("/w/results/history.sqlite".into())
        );
    }
    assert_eq!(redact("postgresql://u:p@h:5/d"), "postgresql://u:***@h:5/d");
    assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
}

// Reliability, with child processes.

/// Starts this test binary on `test` as a child doing `role` on `location`.
fn child(test: &str, role: &str, location: &Location) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("HISTORY_CHILD", role)
        .env("HISTORY_CHILD_DB", text_of(location))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The role this process was started for, if it is a child.
fn child_role() -> Option<(String, Location)> {
    let role = std::env::var("HISTORY_CHILD").ok()?;
    let location = Location::parse(&std::env::var("HISTORY_CHILD_DB").ok()?);
    Some((role, location))
}

/// Waits for `child` at most until `deadline`; kills it and fails past it.
fn wait_until(mut child: Child, deadline: Instant) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child process did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const RUNS_PER_WRITER: usize = 40;

#[test]
fn two_processes_recording_at_once_lose_nothing() {
    if let Some((role, location)) = child_role() {
        // Each writer opens the store anew for each run, as separate commands would.
        for i in 0..RUNS_PER_WRITER {
            let run = sample_run(&format!("2026-01-01T00:00:{i:02}Z"), &role, "C", i as f64);
            open(&location).unwrap().record(&run).unwrap();
        }
        return;
    }
    for fresh in backends() {
        let deadline = Instant::now() + Duration::from_secs(60);
        // Both start on a store that does not exist yet: creating it races too.
        let writers = [
            child(
                "tests::two_processes_recording_at_once_lose_nothing",
                "aaaaaaa",
                &fresh.location,
            ),
            child(
                "tests::two_processes_recording_at_once_lose_nothing",
                "bbbbbbb",
                &fresh.location,
            ),
        ];
        for writer in writers {
            assert!(wait_until(writer, deadline).success());
        }
        let mut store = open(&fresh.location).unwrap();
        for revision in ["aaaaaaa", "bbbbbbb"] {
            let runs = store
                .list(&Filter {
                    revision: Some(revision.into()),
                    ..Filter::default()
                })
                .unwrap();
            assert_eq!(runs.len(), RUNS_PER_WRITER, "{revision}");
            assert!(runs.iter().all(|r| r.figures == 2 && r.measurements == 1));
        }
    }
}

#[test]
fn a_writer_killed_mid_transaction_loses_only_its_run() {
    if let Some((role, location)) = child_role() {
        let marker = PathBuf::from(role);
        let mut store: Box<dyn FnMut()> = match &location {
            Location::Sqlite(path) => {
                let mut s = SqlStore::new(sql::sqlite::open(path).unwrap()).unwrap();
                Box::new(move || {
                    s.begin().unwrap();
                    s.insert(&sample_run("2026-01-02T00:00:00Z", "deadbee", "C", 2.0))
                        .unwrap();
                })
            }
            Location::Postgres(url) => {
                let mut s = SqlStore::new(sql::postgres::open(url).unwrap()).unwrap();
                Box::new(move || {
                    s.begin().unwrap();
                    s.insert(&sample_run("2026-01-02T00:00:00Z", "deadbee", "C", 2.0))
                        .unwrap();
                })
            }
        };
        store();
        // Every row is written, nothing committed: say so and wait to be killed.
        std::fs::write(&marker, b"inserted").unwrap();
        std::thread::sleep(Duration::from_secs(60));
        panic!("not killed");
    }
    for fresh in backends() {
        let mut store = open(&fresh.location).unwrap();
        store
            .record(&sample_run("2026-01-01T00:00:00Z", "c0ffee0", "C", 1.0))
            .unwrap();
        drop(store);
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("inserted");
        let mut writer = Command::new(std::env::current_exe().unwrap())
            .args([
                "tests::a_writer_killed_mid_transaction_loses_only_its_run",
                "--exact",
                "--nocapture",
            ])
            .env("HISTORY_CHILD", &marker)
            .env("HISTORY_CHILD_DB", text_of(&fresh.location))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !marker.exists() {
            assert!(
                Instant::now() < deadline,
                "the writer never got mid-transaction"
            );
            assert!(
                writer.try_wait().unwrap().is_none(),
                "the writer ended early"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // SIGKILL: no destructor, no rollback from the writer itself.
        writer.kill().unwrap();
        writer.wait().unwrap();
        let mut store = open(&fresh.location).unwrap();
        let runs = store.list(&Filter::default()).unwrap();
        let revisions: Vec<&str> = runs.iter().map(|r| r.revision.as_str()).collect();
        assert_eq!(revisions, ["c0ffee0"]);
        // And the store still takes runs.
        store
            .record(&sample_run("2026-01-03T00:00:00Z", "c0ffee1", "C", 3.0))
            .unwrap();
        assert_eq!(store.list(&Filter::default()).unwrap().len(), 2);
    }
}

/// A `scale` result's points become figures named by mode and task count, with their rounds
/// and the paired ratios' intervals.
#[test]
fn a_scale_result_gives_a_figure_per_point_and_ratio() {
    use harness::result::{ScalePoint, ScaleRatio, ScaleRound};
    let ratio = |versus: &str, estimate: f64| ScaleRatio {
        versus: versus.to_owned(),
        rounds: vec![estimate * 0.9, estimate * 1.1],
        estimate,
        interval: Some((estimate * 0.8, estimate * 1.2)),
        confidence: 0.95,
    };
    let mut file = harness::ResultFile::new(harness::machine::Machine::detect());
    file.scaling.push(ScalePoint {
        workload: "maple-tree".into(),
        allocator: "sheaf".into(),
        mode: "process".into(),
        tasks: 2,
        pinned: true,
        oversubscribed: false,
        op_unit: "write".into(),
        rounds: [100.0, 300.0]
            .iter()
            .enumerate()
            .map(|(i, &total)| ScaleRound {
                round: i as u32,
                position: 0,
                total_ops_per_s: total,
                processes: Vec::new(),
            })
            .collect(),
        total_ops_per_s: 173.2,
        per_task_ops_per_s: 86.6,
        efficiency: Some(ratio("1 tasks", 0.9)),
        versus: vec![ratio("mimalloc", 1.5), ratio("thread", 1.2)],
        warnings: Vec::new(),
    });
    let run = NewRun::from_result_file(RunKind::Scale, &file);
    let names: Vec<&str> = run.figures.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "process_2_total_ops_per_s",
            "process_2_per_task_ops_per_s",
            "process_2_efficiency",
            "process_2_ratio_vs_mimalloc",
            "process_2_ratio_vs_thread",
        ]
    );
    let per_task = &run.figures[1];
    assert_eq!(per_task.rounds, [50.0, 150.0]);
    assert_eq!(per_task.threads, Some(2));
    let versus = &run.figures[3];
    assert_eq!(
        (versus.value, versus.low, versus.high),
        (1.5, Some(1.5 * 0.8), Some(1.5 * 1.2))
    );
    assert_eq!("scale".parse::<RunKind>().unwrap(), RunKind::Scale);
}
