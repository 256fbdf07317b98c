//! The tree writes of a `maple-tree` spec, on one thread, for counting their instructions
//! under callgrind: how much of a write is the allocator and how much the tree.
//!
//! ```text
//! cargo build --release -p sheafbench --example maple_instructions
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_writes*' \
//!     target/release/examples/maple_instructions sheaf workloads/maple-tree.yaml
//! ```
//!
//! It generates the spec's stream (writer 0's seed), builds the tree on the named design,
//! replays the stream once untimed (so every cache is warm and the tree holds a pass's worth
//! of history), and then replays it `passes` more times (default 2) inside
//! `measured_writes`, the only function callgrind collects with the command above. Each pass
//! starts from an emptied tree, as in the workload. It prints the number of writes inside
//! `measured_writes`, so callgrind's total divided by it is the instructions per write;
//! `cargo xtask maple-share` runs this for every design and splits each write's
//! instructions between the allocator's code and the rest.
//!
//! `maple_instructions --list` prints the designs' names, one per line.
//!
//! No reader runs: instruction counts do not depend on one, except for the grace periods
//! that a reader delays (crossbeam's collection runs on this thread instead).

#![allow(dead_code, unreachable_pub, missing_docs)] // `registry.rs` is shared with the binary

use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;

use harness::spec::{Kind, WorkloadSpec};
use maple::{MapleTree, Op, WriteConfig};
use object_alloc::ObjectAlloc;

#[path = "../src/registry.rs"]
mod registry;

use registry::{AllocVisitor, with_allocator};

struct Replay<'a> {
    stream: &'a [Op],
    config: maple::WriteConfig,
    cache_config: object_alloc::CacheConfig,
    passes: u32,
}

/// Replays `stream` `passes` times into `tree`, emptying it after each pass; returns the
/// writes made (emptying stores included, one per pass).
#[inline(never)]
fn measured_writes<A: ObjectAlloc>(tree: &MapleTree<'_, A>, stream: &[Op], passes: u32) -> u64 {
    let mut writes = 0;
    for _ in 0..passes {
        writes += one_pass(tree, stream);
    }
    writes
}

fn one_pass<A: ObjectAlloc>(tree: &MapleTree<'_, A>, stream: &[Op]) -> u64 {
    let mut writes = 0;
    for op in stream {
        if let Some((range, value)) = op.store() {
            black_box(
                tree.store(range, value)
                    .expect("the allocator supplied the reserve"),
            );
            writes += 1;
        }
    }
    tree.store(0..u64::MAX, None)
        .expect("the allocator supplied the reserve");
    writes + 1
}

impl AllocVisitor for Replay<'_> {
    type Output = u64;

    fn visit<A: ObjectAlloc>(self) -> u64 {
        let cache = A::new(&self.cache_config).expect("the spec's cache config is valid");
        let tree = MapleTree::with_config(&cache, self.config).expect("memory for the root");
        one_pass(&tree, self.stream);
        let writes = measured_writes(&tree, self.stream, self.passes);
        drop(tree);
        cache.barrier();
        writes
    }
}

fn run(args: &[String]) -> Result<u64, String> {
    if args == ["--list"] {
        for entry in registry::ALLOCATORS {
            println!("{}", entry.name);
        }
        return Ok(0);
    }
    let (name, spec_path, passes) = match args {
        [name, spec] => (name, spec, 2),
        [name, spec, passes] => (
            name,
            spec,
            passes
                .parse::<u32>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("passes: expected a positive integer, got `{passes}`"))?,
        ),
        _ => {
            return Err(
                "usage: maple_instructions <allocator> <maple-tree spec.yaml> [passes]".into(),
            );
        }
    };
    let path = Path::new(spec_path);
    let spec = WorkloadSpec::from_file(path).map_err(|e| e.to_string())?;
    let workload = spec
        .validate(spec_path, usize::MAX)
        .map_err(|e| e.to_string())?;
    let Kind::MapleTree {
        stream,
        single_node_alloc,
        ..
    } = &workload.kind
    else {
        return Err(format!("{spec_path}: kind: expected `maple-tree`"));
    };
    let ops = maple::ops::generate(stream).map_err(|e| format!("{spec_path}: stream: {e}"))?;
    let replay = Replay {
        stream: &ops,
        config: WriteConfig {
            single_node_alloc: *single_node_alloc,
        },
        cache_config: workload.cache_config(),
        passes,
    };
    with_allocator(name, replay).ok_or_else(|| format!("unknown allocator `{name}`"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(writes) => {
            println!("writes {writes}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
