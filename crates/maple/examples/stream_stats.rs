//! Runs a generated stream on the plain test allocator and prints what the writes did:
//! `cargo run --release -p maple --example stream_stats -- [ops] [seed]`.
//! A quick look at the reserve pattern, not a benchmark (the harness measures allocators).

use std::time::Instant;

use maple::testing::TestAlloc;
use maple::{MapleTree, StoreKind, StreamSpec, WriteInfo, run};
use object_alloc::ObjectAlloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let ops: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let spec = StreamSpec {
        ops,
        seed,
        ..StreamSpec::default()
    };
    let stream = maple::ops::generate(&spec).expect("default spec is valid");
    let alloc = TestAlloc::new(&maple::node_cache_config()).expect("valid config");
    let tree = MapleTree::new(&alloc).expect("first node");
    let mut reserved_hist = [0u64; 32];
    let mut used_hist = [0u64; 32];
    let start = Instant::now();
    let stats = run::run_writes(&tree, &stream, &mut |_: &maple::Op, info: &WriteInfo| {
        reserved_hist[(info.reserved as usize).min(31)] += 1;
        used_hist[(info.used as usize).min(31)] += 1;
    })
    .expect("writes");
    let elapsed = start.elapsed();
    let writes = stats.writes();
    println!(
        "{writes} writes in {elapsed:.2?} ({:.0} writes/s, test allocator), height {}, {} nodes",
        writes as f64 / elapsed.as_secs_f64(),
        stats.height,
        stats.live_nodes
    );
    for kind in StoreKind::ALL {
        println!(
            "  {:<11} {}",
            kind.name(),
            stats.writes_by_kind[kind as usize]
        );
    }
    println!(
        "nodes reserved {} ({:.2}/write), used {} ({:.2}/write), outside reserve {}",
        stats.nodes_reserved,
        stats.nodes_reserved as f64 / writes as f64,
        stats.nodes_used,
        stats.nodes_used as f64 / writes as f64,
        stats.nodes_outside_reserve
    );
    let show = |h: &[u64; 32]| {
        h.iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k}:{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("reserved per write (nodes:writes) {}", show(&reserved_hist));
    println!("used per write     (nodes:writes) {}", show(&used_hist));
    let model = run::model_of(&stream);
    tree.check(model.as_map()).expect("tree matches the model");
    println!("checked against the model: {} ranges", model.len());
}
