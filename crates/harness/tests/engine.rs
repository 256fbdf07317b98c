//! The engine driven end to end with a small allocator defined here (the harness names no
//! design): every kind runs, counts its operations, fills its histogram and reports.

use std::alloc::{Layout, alloc, dealloc};
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, Ordering};

use harness::counters::{CounterEvent, CounterReading};
use harness::spec::WorkloadSpec;
use harness::{MeasureOptions, measure};
use object_alloc::rcu::{DeferTarget, Deferrer};
use object_alloc::{
    AllocError, AllocFlags, AllocStats, BulkPrefill, CacheConfig, Capabilities, ConfigError,
    ObjectAlloc,
};

/// Objects from the global allocator, counted.
#[derive(Debug)]
struct Heap {
    layout: Layout,
    live: AtomicI64,
}

impl DeferTarget for Heap {
    unsafe fn free_now(&self, object: NonNull<u8>) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: deferred objects came from `alloc` with this layout.
        unsafe { dealloc(object.as_ptr(), self.layout) };
    }
}

/// `SLEEP_US` > 0: every allocation first sleeps that long (a producer that is off its CPU
/// most of the time).
#[derive(Debug)]
struct TestAlloc<const SLEEP_US: u64 = 0> {
    heap: Deferrer<Heap>,
    object_size: usize,
}

impl<const SLEEP_US: u64> ObjectAlloc for TestAlloc<SLEEP_US> {
    const NAME: &'static str = "test-heap";
    const DESCRIPTION: &'static str = "global allocator, for harness tests";
    const CAPABILITIES: Capabilities = Capabilities {
        native_prefill: false,
        honours_nowait: false,
        uses_page_source: false,
        tracks_live_objects: true,
        sheaf_layer: false,
    };
    type Prefill<'a> = BulkPrefill<'a, Self>;

    fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let layout = Layout::from_size_align(config.stride(), config.align)
            .map_err(|_| ConfigError::new("align", config.align, "a valid layout"))?;
        Ok(Self {
            heap: Deferrer::new(Heap {
                layout,
                live: AtomicI64::new(0),
            }),
            object_size: config.object_size,
        })
    }

    fn alloc(&self, _flags: AllocFlags) -> Option<NonNull<u8>> {
        if SLEEP_US > 0 {
            std::thread::sleep(std::time::Duration::from_micros(SLEEP_US));
        }
        self.heap.get().live.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the layout has a non-zero size (stride is at least a pointer).
        NonNull::new(unsafe { alloc(self.heap.get().layout) })
    }

    unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: forwarded caller contract.
        unsafe { self.heap.get().free_now(object) };
    }

    fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        for slot in out.iter_mut() {
            slot.write(self.alloc(flags).ok_or(AllocError::OutOfMemory)?);
        }
        Ok(())
    }

    unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        for &object in objects {
            // SAFETY: forwarded caller contract.
            unsafe { self.free(object) };
        }
    }

    unsafe fn free_deferred(&self, object: NonNull<u8>) {
        // SAFETY: forwarded caller contract.
        unsafe { self.heap.defer_free(object) };
    }

    fn prefill(&self, flags: AllocFlags, count: usize) -> Result<Self::Prefill<'_>, AllocError> {
        BulkPrefill::new(self, self.object_size, 0, flags, count)
    }

    fn barrier(&self) {
        self.heap.barrier();
    }

    fn stats(&self) -> AllocStats {
        let mut stats = AllocStats {
            live_objects: Some(self.heap.get().live.load(Ordering::Relaxed).max(0) as u64),
            ..AllocStats::default()
        };
        stats.add("allocs", 1);
        stats
    }
}

fn quick(kind_and_params: &str) -> harness::Workload {
    let text = format!(
        "name: t\nobject_size: 64\npinned: false\nwarmup: 5ms\nduration: 20ms\nruns: 2\n{kind_and_params}"
    );
    WorkloadSpec::from_yaml("t.yaml", &text)
        .unwrap()
        .validate("t.yaml", 1)
        .unwrap()
}

fn options() -> MeasureOptions {
    MeasureOptions {
        timer_calibration_reads: 1000,
        ..MeasureOptions::default()
    }
}

#[test]
fn every_kind_runs_and_reports() {
    for (kind, threads) in [
        (
            "kind: churn\nparams: {order: lifo, working_set: 64, batch: 16}\n",
            1,
        ),
        (
            "kind: churn\nparams: {order: random, working_set: 64, batch: 16}\n",
            2,
        ),
        ("kind: burst\nparams: {burst: 100}\n", 2),
        ("kind: prefill-burst\nparams: {reserve: 13, used: 3}\n", 1),
        (
            "kind: producer-consumer\nparams: {queue: 64, batch: 8}\n",
            1,
        ),
        (
            "kind: deferred-churn\nparams: {slots: 64, readers: 1, batch: 8, reads_per_section: 4}\n",
            1,
        ),
    ] {
        let workload = quick(kind);
        let m = measure::<TestAlloc>(&workload, threads, &options())
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(m.samples.len(), 2, "{kind}");
        assert!(m.ops > 0, "{kind}: no operations");
        assert_eq!(m.ops, m.samples.iter().map(|s| s.ops).sum::<u64>());
        assert!(m.seconds >= 0.02 * 2.0 * 0.9, "{kind}: {}", m.seconds);
        assert!(m.latency_ns.figures.samples > 0, "{kind}");
        assert!(m.latency_ns.figures.p50 <= m.latency_ns.figures.max);
        assert!(m.latency_ns.timer_overhead_ns > 0.0);
        assert_eq!(m.counters.len(), CounterEvent::ALL.len());
        assert!(m.memory.peak_rss_bytes.unwrap() > 0);
        assert_eq!(m.allocator, "test-heap");
        assert_eq!(m.config.threads, threads);
        // The stats counter `allocs` is constant, so its measured delta is 0.
        assert_eq!(m.stats.get("allocs"), Some(&0));
        if kind.contains("deferred") {
            assert!(m.extra["reads"] > 0.0, "readers read nothing");
        }
        if kind.contains("producer") {
            assert_eq!(m.extra["objects_freed_remotely"], m.ops as f64);
        }
    }
}

#[test]
fn operation_counts_end_runs_exactly() {
    let mut spec = WorkloadSpec::from_yaml(
        "t.yaml",
        "name: t\nkind: burst\nobject_size: 32\npinned: false\nwarmup: 1ms\nops: 1000\nruns: 3\nthreads: 2\nparams: {burst: 10}\n",
    )
    .unwrap();
    spec.threads.0 = vec![2];
    let workload = spec.validate("t.yaml", 1).unwrap();
    let m = measure::<TestAlloc>(&workload, 2, &options()).unwrap();
    // Each thread stops at the first burst boundary at or past its share of 500.
    for sample in &m.samples {
        assert_eq!(sample.ops, 1000, "{sample:?}");
    }
}

#[test]
fn a_counter_that_fails_to_open_is_reported_unsupported() {
    fn refuse(_: CounterEvent, _: bool) -> std::io::Result<perf_event::Counter> {
        Err(std::io::Error::from_raw_os_error(2))
    }
    let workload = quick("kind: churn\nparams: {working_set: 8, batch: 8}\n");
    let options = MeasureOptions {
        open_counters: refuse,
        ..options()
    };
    let m = measure::<TestAlloc>(&workload, 1, &options).unwrap();
    for (name, reading) in &m.counters {
        assert!(
            matches!(reading, CounterReading::Unsupported { .. }),
            "{name}: {reading:?}"
        );
    }
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["counters"]["cycles"]["status"], "unsupported");
    assert!(json["counters"]["task-clock"].get("value").is_none());
    assert!(
        m.warnings
            .iter()
            .any(|w| w.starts_with("counters unsupported")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn the_engines_bookkeeping_is_measured_and_counts_towards_timer_domination() {
    let workload = quick("kind: churn\nparams: {working_set: 8, batch: 8}\n");
    let mut m = measure::<TestAlloc>(&workload, 1, &options()).unwrap();
    assert!(m.latency_ns.bookkeeping_ns > 0.0, "{:?}", m.latency_ns);
    // A median of 100 ns beside a 5 ns clock read is not clock-dominated by the clock alone,
    // but is once 10 ns of bookkeeping sit in every sample too.
    m.latency_ns.figures.p50 = 100;
    m.latency_ns.timer_overhead_ns = 5.0;
    m.latency_ns.bookkeeping_ns = 10.0;
    let warnings = harness::warnings::for_measurement(&m);
    let dominated = warnings
        .iter()
        .find(|w| w.starts_with("timer-dominated"))
        .unwrap_or_else(|| panic!("{warnings:?}"));
    assert!(
        dominated.contains("10.0 ns of the engine's bookkeeping"),
        "{dominated}"
    );
    m.latency_ns.bookkeeping_ns = 0.0;
    let warnings = harness::warnings::for_measurement(&m);
    assert!(
        !warnings.iter().any(|w| w.starts_with("timer-dominated")),
        "{warnings:?}"
    );
}

/// A short pinned churn measurement on one thread.
fn pinned_churn() -> harness::result::Measurement {
    let mut spec = WorkloadSpec::from_yaml(
        "t.yaml",
        "name: t\nkind: churn\nobject_size: 64\nwarmup: 1ms\nduration: 10ms\nruns: 1\n",
    )
    .unwrap();
    spec.pinned = true;
    let workload = spec.validate("t.yaml", 1).unwrap();
    measure::<TestAlloc>(&workload, 1, &options()).unwrap()
}

#[test]
fn pinned_threads_stay_on_their_cpus() {
    let m = pinned_churn();
    assert!(m.pinning.pinned);
    assert_eq!(m.pinning.cpus.len(), 1);
    assert!(m.pinning.samples > 0);
    assert_eq!(m.pinning.threads_moved, 0, "{:?}", m.pinning);
}

#[test]
fn a_pinned_measurement_whose_cpu_refuses_is_refused_before_it_runs() {
    fn refuse(_: usize) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(22))
    }
    let mut spec = WorkloadSpec::from_yaml(
        "t.yaml",
        "name: t\nkind: churn\nobject_size: 64\nwarmup: 1ms\nduration: 10ms\nruns: 1\n",
    )
    .unwrap();
    spec.pinned = true;
    let workload = spec.validate("t.yaml", 1).unwrap();
    let options = MeasureOptions {
        pin: refuse,
        ..options()
    };
    let err = measure::<TestAlloc>(&workload, 1, &options).unwrap_err();
    assert!(
        matches!(err, harness::MeasureError::PinningRefused { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("cannot pin a thread to CPU"),
        "{err}"
    );
}

#[test]
fn a_thread_left_unpinned_is_warned_about() {
    let mut m = pinned_churn();
    assert!(m.pinning.failures.is_empty(), "{:?}", m.pinning);
    assert!(!m.warnings.iter().any(|w| w.starts_with("pinning failed")));
    m.pinning
        .failures
        .push("thread 0 to CPU 0: Invalid argument (os error 22)".into());
    let warnings = harness::warnings::for_measurement(&m);
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("pinning failed: 1 thread(s)") && w.contains("os error 22")),
        "{warnings:?}"
    );
}

#[test]
fn the_coordinator_takes_a_cpu_left_free_and_gives_it_back() {
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    let m = pinned_churn();
    if cpus.len() > 1 {
        let own = m.pinning.coordinator_cpu.expect("a CPU was left free");
        assert!(!m.pinning.cpus.contains(&own), "{:?}", m.pinning);
    } else {
        assert_eq!(m.pinning.coordinator_cpu, None);
    }
    // The calling thread may run where it could before.
    assert_eq!(core_affinity::get_core_ids().unwrap_or_default(), cpus);
}

fn tree_workload(text: &str) -> harness::Workload {
    let text = format!(
        "name: t\nobject_size: 256\nalign: 256\npinned: false\nwarmup: 5ms\nruns: 2\n{text}"
    );
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../workloads/t.yaml");
    WorkloadSpec::from_yaml(file, &text)
        .unwrap()
        .validate(file, 1)
        .unwrap()
}

#[test]
fn maple_tree_takes_one_sample_per_write_and_replays_its_stream() {
    for single_node_alloc in [false, true] {
        let workload = tree_workload(&format!(
            "kind: maple-tree\nops: 2000\nparams: {{readers: 1, single_node_alloc: {single_node_alloc}, stream: {{ops: 300, initial_mappings: 20}}}}\n"
        ));
        let m = measure::<TestAlloc>(&workload, 1, &options()).unwrap();
        assert_eq!(m.op_unit, "write");
        for sample in &m.samples {
            assert_eq!(sample.ops, 2000, "{sample:?}");
        }
        assert_eq!(m.latency_ns.figures.samples, m.ops, "one sample per write");
        assert_eq!(
            m.latency_ns.bookkeeping_ns, 0.0,
            "a write's sample holds no bookkeeping"
        );
        // 300 operations make at most 300 writes: 4000 writes need several passes, each
        // checked against the model before the tree is emptied.
        assert!(m.extra["passes"] >= 10.0, "{:?}", m.extra);
        // Their checks and emptying stores are left out of the measured time.
        assert!(m.extra["upkeep_seconds"] > 0.0, "{:?}", m.extra);
        assert_eq!(m.extra["nodes_outside_reserve"], 0.0);
        let reserved = m.extra["nodes_reserved_per_write"];
        let used = m.extra["nodes_used_per_write"];
        assert!(used > 0.0 && used <= reserved, "{used} used of {reserved}");
        assert!(m.extra["lookups"] > 0.0, "the reader looked nothing up");
        assert_eq!(m.config.object_size, 256);
        assert_eq!(m.config.os_threads, 2);
    }
}

#[test]
fn trace_replay_replays_a_shipped_trace() {
    let workload = tree_workload(
        "kind: trace-replay\nduration: 20ms\nparams: {trace: traces/gcc-hello.trace}\n",
    );
    let m = measure::<TestAlloc>(&workload, 1, &options()).unwrap();
    assert!(m.ops > 0);
    assert_eq!(m.latency_ns.figures.samples, m.ops, "one sample per write");
    assert!(m.extra["passes"] >= 1.0);
    assert!(m.extra["nodes_reserved_per_write"] >= m.extra["nodes_used_per_write"]);
}

#[test]
fn hogs_run_beside_the_measurement_and_are_named_in_the_result() {
    let workload = quick("kind: churn\nhogs: 2\nparams: {working_set: 64, batch: 16}\n");
    let m = measure::<TestAlloc>(&workload, 1, &options()).unwrap();
    assert_eq!(m.config.hogs, 2);
    assert!(m.extra["hog_cpu_seconds"] > 0.0, "{:?}", m.extra);
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["config"]["hogs"], 2);
    assert_eq!(json["spec"]["hogs"], 2);
    // Without hogs, nothing is reported for them.
    let quiet = quick("kind: churn\nparams: {working_set: 64, batch: 16}\n");
    let m = measure::<TestAlloc>(&quiet, 1, &options()).unwrap();
    assert_eq!(m.config.hogs, 0);
    assert!(!m.extra.contains_key("hog_cpu_seconds"), "{:?}", m.extra);
}

#[test]
fn a_consumer_waiting_for_a_slow_producer_blocks_and_is_counted() {
    // Every allocation sleeps 200 us, so each batch of 8 takes over 1.6 ms: the consumer
    // waits for every hand-off, far beyond the spin.
    let workload = quick("kind: producer-consumer\nparams: {queue: 64, batch: 8}\n");
    let m = measure::<TestAlloc<200>>(&workload, 1, &options()).unwrap();
    assert!(m.ops > 0);
    let blocked = m.extra["consumer_waits_blocked"];
    assert!(blocked > 0.0, "{:?}", m.extra);
    assert!(m.extra["handoff_waits_per_op"] > 0.0, "{:?}", m.extra);
    assert!(m.extra["handoff_blocked_per_op"] > 0.0, "{:?}", m.extra);
    assert!(m.extra["handoff_blocked_seconds"] > 0.0, "{:?}", m.extra);
    // The producer never waited for room: the ring never filled.
    assert_eq!(m.extra["producer_waits_blocked"], 0.0, "{:?}", m.extra);
    // Blocked, the consumer takes no CPU: both threads together were on a CPU for well
    // under one thread's worth of the wall time (a spinning or yielding consumer takes all
    // of its CPU).
    let cpu = m.extra["threads_cpu_share"];
    assert!(cpu < 0.3, "the pair used {cpu} of its wall time on a CPU");
    // The consumer was blocked for most of its time: half the pair's.
    let share = m.extra["handoff_blocked_time_share"];
    assert!(share > 0.3, "blocked for {share} of the pair's time");
}

#[test]
fn a_quick_pair_hands_over_without_blocking_much() {
    // No sleeping anywhere: both threads run, and at the end of the phase the consumer is
    // woken however it waits (a lost wake-up would hang the measurement).
    let workload = quick("kind: producer-consumer\nparams: {queue: 64, batch: 8}\n");
    let m = measure::<TestAlloc>(&workload, 1, &options()).unwrap();
    assert!(m.ops > 0);
    for key in [
        "producer_waits_spun",
        "producer_waits_blocked",
        "consumer_waits_spun",
        "consumer_waits_blocked",
        "handoff_waits_per_op",
        "handoff_blocked_per_op",
        "handoff_blocked_seconds",
    ] {
        assert!(m.extra.contains_key(key), "{key} missing: {:?}", m.extra);
    }
    assert_eq!(m.extra["objects_freed_remotely"], m.ops as f64);
}

#[test]
fn the_sampler_records_a_timeline_and_the_figures_say_what_is_unsupported() {
    let workload =
        quick("sample_interval: 1ms\nkind: churn\nparams: {working_set: 64, batch: 16}\n");
    let m = measure::<TestAlloc>(&workload, 1, &options()).unwrap();
    let timeline = m.timeline.as_ref().expect("the sampler is on by default");
    assert_eq!(timeline.interval_ns, 1_000_000);
    // 5 ms of warm-up and two runs of 20 ms at 1 ms: about 45 readings; a loaded machine
    // delays some.
    let n = timeline.samples.len();
    assert!((10..=60).contains(&n), "{n} readings");
    assert!(
        timeline
            .samples
            .windows(2)
            .all(|w| w[1].t > w[0].t && w[1].phase >= w[0].phase)
    );
    assert_eq!(timeline.samples.last().unwrap().phase, 2);
    assert!(timeline.samples.iter().all(|s| s.rss_bytes.unwrap() > 0));
    // The test allocator tells its live objects (64 per thread) and nothing about slabs.
    assert!(timeline.samples.iter().any(|s| s.live_objects == Some(64)));
    assert!(timeline.samples.iter().all(|s| s.slab_bytes.is_none()));
    let figures = m.memory.figures.as_ref().unwrap();
    let at: Vec<&str> = figures
        .fragmentation
        .iter()
        .map(|f| f.at.as_str())
        .collect();
    assert_eq!(at, ["warmup", "run 1", "run 2", "peak"]);
    assert!(
        figures
            .fragmentation
            .iter()
            .all(|f| f.slab_over_live.value().is_none())
    );
    // The objects were freed: nothing live, and the probe found its 1,000 objects.
    let pages = figures.pages_per_1000_allocs.value().unwrap();
    assert!((1.0..=1000.0).contains(&pages), "{pages}");
    let off = MeasureOptions {
        timeline: false,
        ..options()
    };
    assert!(
        measure::<TestAlloc>(&workload, 1, &off)
            .unwrap()
            .timeline
            .is_none()
    );
}

#[test]
fn lifetimes_cycles_through_its_caches_locally_and_remotely() {
    for remote in [false, true] {
        let workload = quick(&format!(
            "kind: lifetimes\nparams: {{sizes: [32, 96], lifetime: {{distribution: exponential, mean: 50}}, working_set: 256, ramp: 32, hold: 128, drain: 32, remote_frees: {remote}, batch: 8}}\n"
        ));
        let m = measure::<TestAlloc>(&workload, 1, &options()).unwrap();
        assert!(m.ops > 0);
        assert!(m.extra["cycles"] >= 1.0, "{remote}: {:?}", m.extra);
        assert_eq!(m.extra.contains_key("objects_freed_remotely"), remote);
        assert_eq!(m.config.os_threads, 1 + usize::from(remote));
        let figures = m.memory.figures.as_ref().unwrap();
        assert!(figures.pages_per_1000_allocs.value().is_some());
        // At the end of the last run, the two caches together hold at most the working set
        // (remotely: plus what waits in the mailbox, at most one hand-off short of it).
        let live = m.memory.live_objects.unwrap();
        assert!(live <= 256 + 64, "{remote}: {live} live");
    }
}

static GATE_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_gate() {
    GATE_CALLS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn a_task_of_several_processes_is_pinned_to_its_own_cpu_share_after_its_start_gate() {
    let cpus = harness::cpus::measurement_cpus(2);
    let Some(cpus) = cpus else {
        eprintln!("skipped: fewer than 2 CPUs");
        return;
    };
    let mut workload = quick("kind: churn\nparams: {working_set: 8, batch: 8}\n");
    workload.spec.pinned = true;
    for (index, cpu) in cpus.iter().enumerate() {
        let before = GATE_CALLS.load(Ordering::SeqCst);
        let options = MeasureOptions {
            task: Some((index, 2)),
            start_gate: Some(count_gate),
            ..options()
        };
        let m = measure::<TestAlloc>(&workload, 1, &options).unwrap();
        // Task `index` of 2 takes the `index`-th of the CPUs two pinned threads would take.
        assert_eq!(m.pinning.cpus, [*cpu], "task {index}");
        // The coordinator keeps off the other task's CPU too (where there is no other CPU, it
        // is not pinned).
        assert!(
            m.pinning.coordinator_cpu.is_none_or(|c| !cpus.contains(&c)),
            "task {index}: coordinator on {:?}",
            m.pinning.coordinator_cpu
        );
        assert_eq!(GATE_CALLS.load(Ordering::SeqCst), before + 1);
    }
}
