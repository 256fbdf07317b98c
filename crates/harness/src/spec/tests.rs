use super::*;

const CHURN: &str = "name: churn-lifo\nkind: churn\nsuite: default\nobject_size: 64\nthreads: [1, 2]\nduration: 1s\nparams:\n  order: lifo\n  working_set: 512\n";

#[test]
fn parses_a_spec_with_defaults() {
    let spec = WorkloadSpec::from_yaml("churn.yaml", CHURN).unwrap();
    assert_eq!(spec.threads, ThreadCounts(vec![1, 2]));
    assert_eq!(spec.align, 8);
    assert_eq!(spec.runs, 5);
    let workload = spec.validate("churn.yaml", 2).unwrap();
    assert_eq!(
        workload.kind,
        Kind::Churn {
            order: ChurnOrder::Lifo,
            working_set: 512,
            batch: 256,
            caches: 1
        }
    );
    assert_eq!(workload.length, RunLength::Duration(Duration::from_secs(1)));
}

#[test]
fn churn_over_several_caches_is_lifo_only() {
    let text = format!("{CHURN}  caches: 8\n");
    let workload = WorkloadSpec::from_yaml("x", &text)
        .unwrap()
        .validate("x", 2)
        .unwrap();
    assert!(matches!(workload.kind, Kind::Churn { caches: 8, .. }));
    let random = text.replace("order: lifo", "order: random");
    let err = WorkloadSpec::from_yaml("x", &random)
        .unwrap()
        .validate("x", 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("params.caches"), "{err}");
    assert!(err.contains("1 unless params.order is lifo"), "{err}");
}

#[test]
fn a_single_thread_count_is_accepted() {
    let text = CHURN.replace("threads: [1, 2]", "threads: 2");
    let spec = WorkloadSpec::from_yaml("x", &text).unwrap();
    assert_eq!(spec.threads, ThreadCounts(vec![2]));
}

#[test]
fn yaml_errors_keep_path_line_and_column() {
    let text = CHURN.replace("threads: [1, 2]", "threads: four");
    let err = WorkloadSpec::from_yaml("churn.yaml", &text)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("churn.yaml: threads: "), "{err}");
    assert!(err.contains("line 5 column 10"), "{err}");
}

#[test]
fn unknown_fields_are_refused() {
    let text = format!("{CHURN}colour: blue\n");
    let err = WorkloadSpec::from_yaml("c.yaml", &text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `colour`"), "{err}");
    let text = format!("{CHURN}  colour: blue\n");
    let err = WorkloadSpec::from_yaml("c.yaml", &text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("params: unknown field `colour`"), "{err}");
}

#[test]
fn zero_and_impossible_values_name_the_field() {
    for (from, to, field) in [
        ("object_size: 64", "object_size: 0", "`object_size` = 0"),
        (
            "working_set: 512",
            "working_set: 0",
            "`params.working_set` = 0",
        ),
        ("threads: [1, 2]", "threads: [0]", "`threads` = 0"),
        ("duration: 1s", "duration: 0s", "`duration` = 0s"),
    ] {
        let spec = WorkloadSpec::from_yaml("c.yaml", &CHURN.replace(from, to)).unwrap();
        let err = spec.validate("c.yaml", 2).unwrap_err().to_string();
        assert!(err.starts_with(&format!("c.yaml: {field}")), "{err}");
    }
    let spec = WorkloadSpec::from_yaml("c.yaml", &format!("{CHURN}align: 3\n")).unwrap();
    let err = spec.validate("c.yaml", 2).unwrap_err().to_string();
    assert!(
        err.contains("`align` = 3: expected a power of two"),
        "{err}"
    );
}

#[test]
fn parameters_of_another_kind_are_refused() {
    let text = format!("{CHURN}  reserve: 13\n");
    let spec = WorkloadSpec::from_yaml("c.yaml", &text).unwrap();
    let err = spec.validate("c.yaml", 2).unwrap_err().to_string();
    assert!(
        err.contains("`params.reserve` does not apply to kind `churn`")
            && err.contains("order, working_set, batch"),
        "{err}"
    );
}

#[test]
fn pinned_threads_beyond_the_cpus_are_refused() {
    let spec = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
    let err = spec.validate("c.yaml", 1).unwrap_err().to_string();
    assert!(
        err.contains("`threads` = 2") && err.contains("pinned=false"),
        "{err}"
    );
    let mut unpinned = spec.clone();
    unpinned.pinned = false;
    assert!(unpinned.validate("c.yaml", 1).is_ok());
}

#[test]
fn a_cross_cpu_spec_with_more_pinned_threads_than_cpus_is_refused() {
    let yaml =
        "name: x\nkind: cross-cpu\nobject_size: 64\nthreads: [1, 2]\nparams:\n  nowait: true\n";
    let spec = WorkloadSpec::from_yaml("x.yaml", yaml).unwrap();
    // Two pairs are four pinned threads.
    let err = spec.validate("x.yaml", 2).unwrap_err().to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.contains("`threads` = 2") && err.contains("4 threads for kind `cross-cpu`"),
        "{err}"
    );
    let workload = spec.validate("x.yaml", 4).unwrap();
    assert_eq!(
        workload.kind,
        Kind::CrossCpu {
            ring: 1024,
            batch: 64,
            nowait: true
        }
    );
    assert_eq!(workload.kind.os_threads(2), 4);
}

#[test]
fn cross_cpu_batches_fit_half_the_ring_and_the_sheaf_switches_reach_the_config() {
    let yaml = "name: x\nkind: cross-cpu\nobject_size: 64\nnowait_no_refill: true\nbarn_partial: false\nparams:\n  ring: 64\n  batch: 33\n";
    let spec = WorkloadSpec::from_yaml("x.yaml", yaml).unwrap();
    let err = spec.validate("x.yaml", 8).unwrap_err().to_string();
    assert!(
        err.contains("params.batch") && err.contains("half of params.ring (32)"),
        "{err}"
    );
    let mut fits = spec.clone();
    fits.apply_overrides(&["batch=32".into()]).unwrap();
    let config = fits.validate("x.yaml", 8).unwrap().cache_config();
    assert!(config.nowait_no_refill && !config.barn_partial);
    let defaults = WorkloadSpec::from_yaml("x.yaml", "name: x\nkind: cross-cpu\nobject_size: 64\n")
        .unwrap()
        .validate("x.yaml", 8)
        .unwrap()
        .cache_config();
    assert!(!defaults.nowait_no_refill);
    assert_eq!(
        defaults.barn_partial,
        object_alloc::CacheConfig::new(64).barn_partial
    );
}

#[test]
fn deferred_churn_needs_a_slot_per_writer() {
    let yaml = "name: d\nkind: deferred-churn\nobject_size: 64\nthreads: [1, 4]\npinned: false\nparams:\n  slots: 3\n";
    let spec = WorkloadSpec::from_yaml("d.yaml", yaml).unwrap();
    let err = spec.validate("d.yaml", 8).unwrap_err().to_string();
    assert!(
        err.contains("params.slots") && err.contains("largest thread count (4)"),
        "{err}"
    );
    let mut enough = spec.clone();
    enough.apply_overrides(&["slots=4".into()]).unwrap();
    assert!(enough.validate("d.yaml", 8).is_ok());
}

#[test]
fn setting_one_run_length_clears_the_other() {
    let mut spec = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
    spec.apply_overrides(&["ops=5000".into()]).unwrap();
    assert_eq!((spec.ops, spec.duration), (Some(5000), None));
    let workload = spec.validate("c.yaml", 8).unwrap();
    assert_eq!(workload.length, RunLength::Ops(5000));
    spec.apply_overrides(&["duration=20ms".into()]).unwrap();
    assert_eq!(spec.ops, None);
    assert_eq!(spec.duration, Some(SpecDuration(Duration::from_millis(20))));
    // Both in the file is still refused.
    let both = format!("{CHURN}ops: 10\n");
    let err = WorkloadSpec::from_yaml("c.yaml", &both)
        .unwrap()
        .validate("c.yaml", 8)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not both"), "{err}");
}

#[test]
fn overrides_reach_fields_and_params() {
    let mut spec = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
    spec.apply_overrides(&[
        "sheaf_capacity=8".into(),
        "working_set=64".into(),
        "params.order=random".into(),
        "threads=[2]".into(),
    ])
    .unwrap();
    assert_eq!(spec.sheaf_capacity, Some(8));
    assert_eq!(spec.params.working_set, Some(64));
    assert_eq!(spec.params.order, Some(ChurnOrder::Random));
    assert_eq!(spec.threads, ThreadCounts(vec![2]));
}

#[test]
fn bad_overrides_name_the_argument() {
    let mut spec = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
    let err = spec
        .apply_overrides(&["colour=blue".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("--set colour=blue: unknown field `colour`"),
        "{err}"
    );
    let err = spec
        .apply_overrides(&["threads=many".into()])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--set threads=many: "), "{err}");
    let err = spec
        .apply_overrides(&["sheaf_capacity".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected key=value"), "{err}");
}

const MAPLE: &str = "name: maple\nkind: maple-tree\nobject_size: 256\nalign: 256\nthreads: 1\nparams:\n  readers: 1\n  stream: {ops: 1000, seed: 3}\n";

#[test]
fn maple_tree_resolves_its_stream_and_node_cache() {
    let spec = WorkloadSpec::from_yaml("m.yaml", MAPLE).unwrap();
    let workload = spec.validate("m.yaml", 2).unwrap();
    let Kind::MapleTree {
        stream,
        readers,
        reads_per_section,
        single_node_alloc,
    } = &workload.kind
    else {
        panic!("{:?}", workload.kind)
    };
    assert_eq!((stream.ops, stream.seed), (1000, 3));
    assert_eq!(stream.max_pages, maple::StreamSpec::default().max_pages);
    assert_eq!(
        (*readers, *reads_per_section, *single_node_alloc),
        (1, 16, false)
    );
    assert_eq!(workload.kind.os_threads(1), 2);
    let config = workload.cache_config();
    assert_eq!(config.object_size, maple::NODE_SIZE);
    assert_eq!(config.align, maple::NODE_ALIGN);
}

#[test]
fn tree_kinds_refuse_other_object_sizes() {
    for (from, to, field) in [
        ("object_size: 256", "object_size: 64", "`object_size` = 64"),
        ("align: 256", "align: 8", "`align` = 8"),
    ] {
        let spec = WorkloadSpec::from_yaml("m.yaml", &MAPLE.replace(from, to)).unwrap();
        let err = spec.validate("m.yaml", 2).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "m.yaml: {field}: expected 256 for kind `maple-tree`"
            )),
            "{err}"
        );
    }
}

#[test]
fn a_bad_stream_names_the_nested_field() {
    let text = MAPLE.replace("{ops: 1000, seed: 3}", "{fixed_fraction: 2.0}");
    let spec = WorkloadSpec::from_yaml("m.yaml", &text).unwrap();
    let err = spec.validate("m.yaml", 2).unwrap_err().to_string();
    assert!(
        err.starts_with("m.yaml: `params.stream.fixed_fraction` = 2.0: expected between 0 and 1"),
        "{err}"
    );
    let text = MAPLE.replace("{ops: 1000, seed: 3}", "{colour: blue}");
    let err = WorkloadSpec::from_yaml("m.yaml", &text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `colour`"), "{err}");
}

#[test]
fn nested_overrides_reach_the_stream() {
    let mut spec = WorkloadSpec::from_yaml("m.yaml", MAPLE).unwrap();
    spec.apply_overrides(&["stream.ops=77".into(), "params.stream.mix.brk=9".into()])
        .unwrap();
    let stream = spec.params.stream.as_ref().unwrap();
    assert_eq!((stream.ops, stream.seed, stream.mix.brk), (77, 3, 9));
}

fn trace_spec(dir: &Path, trace: &str) -> (String, WorkloadSpec) {
    let file = dir.join("t.yaml").display().to_string();
    let text = format!(
        "name: t\nkind: trace-replay\nobject_size: 256\nalign: 256\nparams:\n  trace: {trace}\n"
    );
    let spec = WorkloadSpec::from_yaml(&file, &text).unwrap();
    (file, spec)
}

#[test]
fn trace_replay_reads_its_trace_relative_to_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("traces")).unwrap();
    std::fs::write(
        dir.path().join("traces/ok.trace"),
        "sheaftrace 1\n0 mmap 7f0000000000 2000 rw-\n0 exit\n",
    )
    .unwrap();
    let (file, spec) = trace_spec(dir.path(), "traces/ok.trace");
    let workload = spec.validate(&file, 2).unwrap();
    assert_eq!(
        workload.kind,
        Kind::TraceReplay {
            trace: std::path::absolute(dir.path().join("traces/ok.trace")).unwrap(),
            single_node_alloc: false
        }
    );
}

#[test]
fn a_missing_or_bad_trace_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (file, spec) = trace_spec(dir.path(), "missing.trace");
    let err = spec.validate(&file, 2).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{file}: `params.trace` = "))
            && err.contains("missing.trace: cannot read the trace"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("bad.trace"),
        "sheaftrace 1\n0 mmap 7f0000000000 2000 rw-\n0 mmap zz 1000 r--\n",
    )
    .unwrap();
    let (file, spec) = trace_spec(dir.path(), "bad.trace");
    let err = spec.validate(&file, 2).unwrap_err().to_string();
    assert!(
        err.contains("bad.trace: trace line 3: start `zz` is not a hexadecimal number"),
        "{err}"
    );
    let mut spec = spec;
    spec.params.trace = None;
    let err = spec.validate(&file, 2).unwrap_err().to_string();
    assert!(err.contains("`params.trace` = (missing)"), "{err}");
}

#[test]
fn hogs_parse_override_and_are_range_checked() {
    let spec = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
    assert_eq!(spec.hogs, 0, "no busy threads unless asked for");
    let spec = WorkloadSpec::from_yaml("c.yaml", &format!("{CHURN}hogs: 2\n")).unwrap();
    assert_eq!(spec.hogs, 2);
    assert!(spec.validate("c.yaml", 2).is_ok());
    let mut set = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
    set.apply_overrides(&["hogs=3".into()]).unwrap();
    assert_eq!(set.hogs, 3);
    let err = set
        .apply_overrides(&["hogs=-1".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("--set hogs=-1: ") && err.contains("u32"),
        "{err}"
    );
    let err = WorkloadSpec::from_yaml("c.yaml", &format!("{CHURN}hogs: lots\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("hogs: invalid type"), "{err}");
    let mut many = spec.clone();
    many.hogs = MAX_HOGS + 1;
    let err = many.validate("c.yaml", 2).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("c.yaml: `hogs` = {}: expected", MAX_HOGS + 1)),
        "{err}"
    );
}

#[test]
fn producer_consumer_batches_fit_twice_in_the_ring() {
    let pc = |params: &str| {
        let text = format!(
            "name: pc\nkind: producer-consumer\nobject_size: 64\npinned: false\nparams: {params}\n"
        );
        WorkloadSpec::from_yaml("pc.yaml", &text)
            .unwrap()
            .validate("pc.yaml", 2)
    };
    assert_eq!(
        pc("{}").unwrap().kind,
        Kind::ProducerConsumer {
            queue: 1024,
            batch: 64
        }
    );
    assert!(pc("{queue: 64, batch: 32}").is_ok());
    let err = pc("{queue: 64, batch: 33}").unwrap_err().to_string();
    assert!(
        err.contains("`params.batch` = 33: expected at most half of params.queue (32)"),
        "{err}"
    );
    let err = pc("{queue: 1, batch: 1}").unwrap_err().to_string();
    assert!(
        err.contains("`params.queue` = 1: expected at least 2"),
        "{err}"
    );
}

#[test]
fn durations_parse_and_print() {
    for (text, ms) in [("250ms", 250), ("2s", 2000), ("1.5s", 1500), ("1m", 60_000)] {
        let d: SpecDuration = text.parse().unwrap();
        assert_eq!(d.0, Duration::from_millis(ms), "{text}");
    }
    assert_eq!(
        SpecDuration(Duration::from_millis(250)).to_string(),
        "250ms"
    );
    assert!("fast".parse::<SpecDuration>().is_err());
    assert!("2h".parse::<SpecDuration>().is_err());
}

#[test]
fn kind_descriptions_list_the_parameters_each_kind_takes() {
    let described: Vec<String> = KindName::ALL
        .iter()
        .map(|k| k.description().to_string())
        .collect();
    assert_eq!(
        described,
        [
            "free+alloc pairs over a per-thread working set (params: order lifo|random, working_set, batch, caches)",
            "`burst` allocations then `burst` frees, crossing the sheaf capacity (params: burst)",
            "per pair, one thread allocates and another frees (remote frees), handing objects over in batches through a bounded ring (params: queue, batch)",
            "per pair, a pinned producer allocates (with NOWAIT if `nowait`) and hands objects over in batches through a ring to a consumer pinned on another CPU, which frees them (params: ring, batch, nowait)",
            "prefill `reserve`, allocate `used` from the sheaf, return it, free the used objects (params: reserve, used, batch)",
            "writers replace published objects (each its own share of the slots, published with a release store) and free the old ones deferred; readers read them in read-side sections (params: slots, readers, batch, reads_per_section)",
            "writes of a generated mmap/munmap/mprotect/brk stream to a maple-like range tree, worst-case prefill per write, readers looking up addresses (params: stream, readers, reads_per_section, single_node_alloc)",
            "replays a recorded address-space trace into maple-like range trees, one per address space (params: trace, single_node_alloc)",
            "per thread, cycles of ramp (the working set grows to `working_set`), hold and drain (to nothing); each tick frees the objects whose drawn lifetime ended and tops the set up (or drains it), objects of the `sizes` (one cache each), freed on a helper thread with `remote_frees` (params: sizes, lifetime, working_set, ramp, hold, drain, remote_frees, batch)",
        ]
    );
    let names: Vec<&str> = KindName::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "churn",
            "burst",
            "producer-consumer",
            "cross-cpu",
            "prefill-burst",
            "deferred-churn",
            "maple-tree",
            "trace-replay",
            "lifetimes"
        ]
    );
}

/// A spec of `kind` with `params`, unpinned, with the node geometry the tree kinds need.
fn kind_spec(kind: &str, params: &str) -> WorkloadSpec {
    let text = format!(
        "name: k\nkind: {kind}\nobject_size: 256\nalign: 256\npinned: false\nparams: {params}\n"
    );
    WorkloadSpec::from_yaml("k.yaml", &text).unwrap()
}

#[test]
fn every_kind_refuses_a_parameter_it_does_not_take_and_lists_those_it_does() {
    for (kind, stray, takes) in [
        (
            "churn",
            "{burst: 1}",
            "`params.burst` does not apply to kind `churn`; it takes: order, working_set, batch, caches",
        ),
        (
            "burst",
            "{batch: 1}",
            "`params.batch` does not apply to kind `burst`; it takes: burst",
        ),
        (
            "producer-consumer",
            "{order: lifo}",
            "`params.order` does not apply to kind `producer-consumer`; it takes: queue, batch",
        ),
        (
            "cross-cpu",
            "{queue: 4}",
            "`params.queue` does not apply to kind `cross-cpu`; it takes: ring, batch, nowait",
        ),
        (
            "prefill-burst",
            "{queue: 4}",
            "`params.queue` does not apply to kind `prefill-burst`; it takes: reserve, used, batch",
        ),
        (
            "deferred-churn",
            "{trace: x}",
            "`params.trace` does not apply to kind `deferred-churn`; it takes: slots, readers, batch, reads_per_section",
        ),
        (
            "maple-tree",
            "{working_set: 1, batch: 2}",
            "`params.working_set` does not apply to kind `maple-tree`; it takes: stream, readers, reads_per_section, single_node_alloc",
        ),
        (
            "trace-replay",
            "{readers: 1}",
            "`params.readers` does not apply to kind `trace-replay`; it takes: trace, single_node_alloc",
        ),
    ] {
        let err = kind_spec(kind, stray)
            .validate("k.yaml", 8)
            .unwrap_err()
            .to_string();
        assert_eq!(err, format!("k.yaml: {takes}"));
    }
}

#[test]
fn parameter_defaults_are_resolved_per_kind() {
    let resolved = |kind: &str| kind_spec(kind, "{}").validate("k.yaml", 8).unwrap().kind;
    assert_eq!(
        resolved("churn"),
        Kind::Churn {
            order: ChurnOrder::Lifo,
            working_set: 1024,
            batch: 256,
            caches: 1
        }
    );
    assert_eq!(resolved("burst"), Kind::Burst { burst: 256 });
    assert_eq!(
        resolved("prefill-burst"),
        Kind::PrefillBurst {
            reserve: 13,
            used: 3,
            batch: 16
        }
    );
    assert_eq!(
        resolved("deferred-churn"),
        Kind::DeferredChurn {
            slots: 1024,
            readers: 1,
            batch: 64,
            reads_per_section: 16
        }
    );
    assert_eq!(
        resolved("maple-tree"),
        Kind::MapleTree {
            stream: maple::StreamSpec::default(),
            readers: 1,
            reads_per_section: 16,
            single_node_alloc: false
        }
    );
}

#[test]
fn range_and_condition_refusals_name_field_value_and_expectation() {
    for (kind, params, message) in [
        (
            "churn",
            "{batch: 2000000}",
            "`params.batch` = 2000000: expected between 1 and 1048576",
        ),
        (
            "burst",
            "{burst: 0}",
            "`params.burst` = 0: expected between 1 and 1048576",
        ),
        (
            "prefill-burst",
            "{reserve: 4, used: 5}",
            "`params.used` = 5: expected at most params.reserve (4)",
        ),
        (
            "prefill-burst",
            "{reserve: 70000}",
            "`params.reserve` = 70000: expected between 1 and 65536",
        ),
        (
            "deferred-churn",
            "{readers: 1025}",
            "`params.readers` = 1025: expected between 0 and 1024",
        ),
        (
            "deferred-churn",
            "{reads_per_section: 0}",
            "`params.reads_per_section` = 0: expected between 1 and 1048576",
        ),
        (
            "maple-tree",
            "{readers: 2000}",
            "`params.readers` = 2000: expected between 0 and 1024",
        ),
    ] {
        let err = kind_spec(kind, params)
            .validate("k.yaml", 8)
            .unwrap_err()
            .to_string();
        assert_eq!(err, format!("k.yaml: {message}"), "{kind} {params}");
    }
    for kind in ["producer-consumer", "deferred-churn"] {
        let text = format!("name: k\nkind: {kind}\nobject_size: 4\npinned: false\n");
        let err = WorkloadSpec::from_yaml("k.yaml", &text)
            .unwrap()
            .validate("k.yaml", 8)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "k.yaml: `object_size` = 4: expected at least 8 for {kind} (objects carry a "
            )),
            "{err}"
        );
    }
}

#[test]
fn the_sample_interval_defaults_to_10ms_and_refuses_zero_and_sub_resolution_values() {
    let spec = WorkloadSpec::from_yaml("c.yaml", CHURN).unwrap();
    assert_eq!(spec.sample_interval.0, DEFAULT_SAMPLE_INTERVAL);
    let mut spec = spec;
    spec.apply_overrides(&["sample_interval=2ms".into()])
        .unwrap();
    assert_eq!(spec.sample_interval.0, Duration::from_millis(2));
    assert!(spec.validate("c.yaml", 2).is_ok());
    let resolution = crate::timer::resolution();
    let mut below = vec!["0ms".to_owned()];
    if resolution > Duration::from_nanos(1) {
        below.push(format!("{}ns", resolution.as_nanos() - 1));
    }
    for value in below {
        let text = format!("{CHURN}sample_interval: {value}\n");
        let err = WorkloadSpec::from_yaml("c.yaml", &text)
            .unwrap()
            .validate("c.yaml", 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`sample_interval`"), "{err}");
        assert!(err.contains("resolution"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

const LIFETIMES: &str = "name: lt\nkind: lifetimes\nobject_size: 64\nthreads: 1\nparams:\n  sizes: [64, 192]\n  lifetime: {distribution: pareto, shape: 1.5, scale: 100}\n  drain: 16\n";

#[test]
fn lifetimes_resolves_its_sizes_distribution_and_cycle() {
    let workload = WorkloadSpec::from_yaml("lt.yaml", LIFETIMES)
        .unwrap()
        .validate("lt.yaml", 2)
        .unwrap();
    let Kind::Lifetimes {
        sizes,
        lifetime,
        drain,
        remote_frees,
        ..
    } = workload.kind
    else {
        panic!("{:?}", workload.kind);
    };
    assert_eq!(sizes, [64, 192]);
    assert_eq!(
        lifetime,
        Lifetime::Pareto {
            shape: 1.5,
            scale: 100.0
        }
    );
    assert_eq!((drain, remote_frees), (16, false));
    // Remote frees add a helper thread per worker.
    let remote = format!("{LIFETIMES}  remote_frees: true\n");
    let workload = WorkloadSpec::from_yaml("lt.yaml", &remote)
        .unwrap()
        .validate("lt.yaml", 2)
        .unwrap();
    assert_eq!(workload.kind.os_threads(1), 2);
}

#[test]
fn impossible_lifetimes_and_cycles_that_never_drain_are_refused_naming_the_field() {
    for (from, to, field) in [
        ("shape: 1.5", "shape: 1.0", "`params.lifetime.shape` = 1"),
        ("shape: 1.5", "shape: -2", "`params.lifetime.shape` = -2"),
        ("scale: 100", "scale: 0", "`params.lifetime.scale` = 0"),
        (
            "{distribution: pareto, shape: 1.5, scale: 100}",
            "{distribution: exponential, mean: 0}",
            "`params.lifetime.mean` = 0",
        ),
        ("drain: 16", "drain: 0", "`params.drain` = 0"),
        (
            "sizes: [64, 192]",
            "sizes: [64, 64]",
            "`params.sizes[1]` = 64",
        ),
        ("sizes: [64, 192]", "sizes: []", "`params.sizes` = []"),
    ] {
        let text = LIFETIMES.replace(from, to);
        assert_ne!(text, LIFETIMES, "{from}");
        let err = WorkloadSpec::from_yaml("lt.yaml", &text)
            .unwrap()
            .validate("lt.yaml", 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{to}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let text = LIFETIMES.replace("distribution: pareto", "distribution: uniform");
    let err = WorkloadSpec::from_yaml("lt.yaml", &text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("params.lifetime"), "{err}");
}

/// `CHURN` with `phases` (YAML list items) before its `params`.
fn with_phases(phases: &str) -> String {
    CHURN.replace("params:\n", &format!("phases:\n{phases}params:\n"))
}

fn phases_error(phases: &str) -> String {
    WorkloadSpec::from_yaml("x", &with_phases(phases))
        .unwrap()
        .validate("x", 2)
        .unwrap_err()
        .to_string()
}

#[test]
fn phases_are_parsed_in_order_and_kept_in_the_workload() {
    let text = with_phases(
        "  - at: 400ms\n    sheaf_capacity: 16\n  - at: 700ms\n    barn_max_full: 2\n    barn_max_empty: 0\n",
    );
    let workload = WorkloadSpec::from_yaml("x", &text)
        .unwrap()
        .validate("x", 2)
        .unwrap();
    let phases = &workload.spec.phases;
    assert_eq!(phases.len(), 2);
    assert_eq!(phases[0].at.0, Duration::from_millis(400));
    assert_eq!(
        phases[1].change(),
        LimitChange {
            sheaf_capacity: None,
            barn_max_full: Some(2),
            barn_max_empty: Some(0)
        }
    );
}

#[test]
fn a_phase_not_after_the_start_or_the_previous_one_or_beyond_the_run_is_refused_by_field() {
    let at_start = phases_error("  - at: 0s\n    sheaf_capacity: 16\n");
    assert!(at_start.contains("`phases[0].at` = 0s"), "{at_start}");
    assert!(
        at_start.contains("after the start of the run"),
        "{at_start}"
    );
    let backwards = phases_error(
        "  - at: 500ms\n    sheaf_capacity: 16\n  - at: 500ms\n    sheaf_capacity: 8\n",
    );
    assert!(backwards.contains("`phases[1].at` = 500ms"), "{backwards}");
    assert!(backwards.contains("phases[0].at (500ms)"), "{backwards}");
    let beyond = phases_error("  - at: 1s\n    sheaf_capacity: 16\n");
    assert!(beyond.contains("`phases[0].at` = 1s"), "{beyond}");
    assert!(beyond.contains("before the end of the run"), "{beyond}");
    let counted =
        with_phases("  - at: 10ms\n    sheaf_capacity: 16\n").replace("duration: 1s", "ops: 1000");
    let counted = WorkloadSpec::from_yaml("x", &counted)
        .unwrap()
        .validate("x", 2)
        .unwrap_err()
        .to_string();
    assert!(counted.contains("`phases[0].at`"), "{counted}");
    assert!(counted.contains("duration"), "{counted}");
    assert!(!at_start.contains('\n'), "one line: {at_start}");
}

#[test]
fn a_phase_that_changes_nothing_or_a_bad_value_or_a_cache_without_sheaves_is_refused() {
    let empty = phases_error("  - at: 10ms\n");
    assert!(empty.contains("`phases[0]`"), "{empty}");
    let zero = phases_error("  - at: 10ms\n    sheaf_capacity: 0\n");
    assert!(zero.contains("`phases[0].sheaf_capacity` = 0"), "{zero}");
    let limit = phases_error("  - at: 10ms\n    barn_max_empty: 100000000\n");
    assert!(limit.contains("`phases[0].barn_max_empty`"), "{limit}");
    let no_sheaves = with_phases("  - at: 10ms\n    barn_max_full: 2\n")
        .replace("object_size: 64", "object_size: 64\nsheaf_capacity: 0");
    let no_sheaves = WorkloadSpec::from_yaml("x", &no_sheaves)
        .unwrap()
        .validate("x", 2)
        .unwrap_err()
        .to_string();
    assert!(
        no_sheaves.contains("`phases[0].barn_max_full`"),
        "{no_sheaves}"
    );
    assert!(no_sheaves.contains("without sheaves"), "{no_sheaves}");
}

#[test]
fn quick_runs_keep_the_phases_in_place_in_the_shorter_run() {
    let mut spec = WorkloadSpec::from_yaml(
        "x",
        &with_phases(
            "  - at: 400ms\n    sheaf_capacity: 16\n  - at: 700ms\n    sheaf_capacity: 32\n",
        ),
    )
    .unwrap();
    spec.make_quick();
    assert_eq!(spec.phases[0].at.0, Duration::from_millis(20));
    assert_eq!(spec.phases[1].at.0, Duration::from_millis(35));
    assert!(spec.validate("x", 2).is_ok());
}
