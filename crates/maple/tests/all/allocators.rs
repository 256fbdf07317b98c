//! The same stream and trace on real designs: the trees must match the model exactly as on
//! the test allocator, and give every node back.

use baseline_system::SystemCache;
use maple::{MapleTree, StreamSpec, Trace, WriteConfig, run};
use object_alloc::ObjectAlloc;

const SHIPPED_TRACE: &str = include_str!("../../../../workloads/traces/python-sqlite-json.trace");

pub(crate) fn stream_and_trace_on<A: ObjectAlloc>() {
    let alloc = A::new(&maple::node_cache_config()).expect("node cache config");
    let spec = StreamSpec {
        ops: 4000,
        munmap_max_ranges: 6,
        ..StreamSpec::default()
    };
    let ops = maple::ops::generate(&spec).unwrap();
    for config in [
        WriteConfig::default(),
        WriteConfig {
            single_node_alloc: true,
        },
    ] {
        let tree = MapleTree::with_config(&alloc, config).unwrap();
        let stats = run::run_writes(&tree, &ops, &mut run::NoRecorder).unwrap();
        assert_eq!(stats.nodes_outside_reserve, 0, "{}: {stats:?}", A::NAME);
        tree.check(run::model_of(&ops).as_map())
            .unwrap_or_else(|e| panic!("{}: {e}", A::NAME));
    }
    let trace = Trace::parse(SHIPPED_TRACE).unwrap();
    let outcome = run::replay(
        &alloc,
        &trace,
        WriteConfig::default(),
        true,
        &mut run::NoRecorder,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", A::NAME));
    assert_eq!(outcome.stats.nodes_outside_reserve, 0);
    alloc.barrier();
    if let Some(live) = alloc.stats().live_objects {
        assert_eq!(live, 0, "{}: nodes leaked", A::NAME);
    }
}

#[test]
fn system_allocator_runs_the_stream_and_the_trace() {
    stream_and_trace_on::<SystemCache>();
}
