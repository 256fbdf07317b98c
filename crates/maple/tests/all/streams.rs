//! Generated operation streams: replayed against the model, with the reserve accounting.

use maple::ops::{self, OpGenerator, OpMix, generate};
use maple::{MapleTree, OpKind, StoreKind, StreamSpec, WriteConfig, WriteInfo, run};
use object_alloc::ObjectAlloc;

use crate::cache;

fn run_stream(spec: &StreamSpec, config: WriteConfig) -> maple::TreeStats {
    let ops = generate(spec).unwrap();
    assert_eq!(ops.len(), spec.ops);
    let alloc = cache();
    let stats = {
        let tree = MapleTree::with_config(&alloc, config).unwrap();
        let mut by_kind = [0u64; 6];
        let mut worst = 0;
        let stats = run::run_writes(&tree, &ops, &mut |_: &maple::Op, info: &WriteInfo| {
            assert!(info.used <= info.reserved, "{info:?}");
            assert_eq!(info.outside_reserve, 0, "{info:?}");
            by_kind[info.kind as usize] += 1;
            worst = worst.max(info.reserved);
        })
        .unwrap();
        assert_eq!(by_kind, stats.writes_by_kind);
        let model = run::model_of(&ops);
        let shape = tree.check(model.as_map()).unwrap();
        assert!(shape.ranges >= model.len());
        assert_eq!(stats.nodes_outside_reserve, 0);
        assert!(worst <= 3 * shape.height.max(usize::from(stats.height as u8)) as u32 + 4);
        stats
    };
    alloc.barrier();
    assert_eq!(alloc.live(), 0, "nodes leaked");
    stats
}

#[test]
fn default_mix_matches_the_model_and_reaches_every_write_type() {
    let spec = StreamSpec {
        ops: 6000,
        initial_mappings: 300,
        ..StreamSpec::default()
    };
    let stats = run_stream(&spec, WriteConfig::default());
    for kind in [
        StoreKind::ExactFit,
        StoreKind::NodeStore,
        StoreKind::Split,
        StoreKind::Spanning,
    ] {
        assert!(
            stats.writes_by_kind[kind as usize] > 0,
            "no {} write: {stats:?}",
            kind.name()
        );
    }
    assert!(stats.height >= 3, "{stats:?}");
    assert!(stats.nodes_used < stats.nodes_reserved, "{stats:?}");
    assert_eq!(stats.single_allocs, 0);
}

#[test]
fn munmap_heavy_mix_with_single_node_allocs() {
    let spec = StreamSpec {
        seed: 42,
        ops: 5000,
        mix: OpMix {
            mmap: 30,
            munmap: 40,
            mprotect: 20,
            brk: 10,
        },
        munmap_max_ranges: 8,
        fixed_fraction: 0.3,
        ..StreamSpec::default()
    };
    let stats = run_stream(
        &spec,
        WriteConfig {
            single_node_alloc: true,
        },
    );
    assert!(
        stats.single_allocs > 0
            && stats.single_allocs == stats.writes_by_kind[StoreKind::NodeStore as usize]
    );
    assert!(stats.writes_by_kind[StoreKind::Spanning as usize] > 0);
}

#[test]
fn the_stream_is_a_function_of_the_seed() {
    let spec = StreamSpec {
        ops: 800,
        ..StreamSpec::default()
    };
    assert_eq!(generate(&spec).unwrap(), generate(&spec).unwrap());
    let other = StreamSpec {
        seed: 2,
        ..spec.clone()
    };
    assert_ne!(generate(&spec).unwrap(), generate(&other).unwrap());
    let counts = run::count_kinds(&generate(&spec).unwrap());
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), 800);
}

#[test]
fn generated_operands_respect_the_layout() {
    let spec = StreamSpec {
        ops: 3000,
        max_mappings: 50,
        initial_mappings: 20,
        ..StreamSpec::default()
    };
    let mut generator = OpGenerator::new(&spec).unwrap();
    for _ in 0..spec.ops {
        let op = generator.next_op();
        let Some((range, _)) = op.store() else {
            continue;
        };
        assert_eq!(range.start % ops::PAGE, 0, "{op:?}");
        assert_eq!(range.end % ops::PAGE, 0, "{op:?}");
        match op.kind() {
            OpKind::Brk => assert!(range.start >= ops::HEAP_START && range.end < ops::MMAP_MIN),
            _ => assert!(
                range.start >= ops::MMAP_MIN && range.end <= ops::MMAP_BASE,
                "{op:?}"
            ),
        }
        assert!(generator.area().len() <= spec.max_mappings + 2);
    }
}

#[test]
fn specs_deserialize_with_defaults_and_refuse_unknown_fields() {
    let spec: StreamSpec =
        serde_json::from_str(r#"{"seed": 9, "ops": 10, "mix": {"mmap": 1, "munmap": 2}}"#).unwrap();
    assert_eq!(
        (spec.seed, spec.ops, spec.mix.munmap, spec.mix.brk),
        (9, 10, 2, 0)
    );
    assert_eq!(spec.max_pages, StreamSpec::default().max_pages);
    spec.validate().unwrap();
    let err = serde_json::from_str::<StreamSpec>(r#"{"sed": 9}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `sed`"), "{err}");
    let bad = StreamSpec {
        min_pages: 10,
        max_pages: 5,
        ..StreamSpec::default()
    };
    let err = bad.validate().unwrap_err();
    assert_eq!(err.field, "min_pages");
    assert!(generate(&bad).is_err());
    let no_mmap = StreamSpec {
        mix: OpMix {
            mmap: 0,
            munmap: 1,
            mprotect: 0,
            brk: 0,
        },
        ..StreamSpec::default()
    };
    assert_eq!(no_mmap.validate().unwrap_err().field, "mix.mmap");
    let config: WriteConfig = serde_json::from_str(r#"{"single_node_alloc": true}"#).unwrap();
    assert!(config.single_node_alloc);
}

/// A recorder that brackets each write, as a harness timing writes would.
#[derive(Default)]
struct Bracket {
    open: Option<maple::Op>,
    writes: u64,
}

impl maple::WriteRecorder for Bracket {
    fn before(&mut self, op: &maple::Op) {
        assert!(self.open.is_none(), "before() twice without record()");
        self.open = Some(*op);
    }

    fn record(&mut self, op: &maple::Op, _info: &WriteInfo) {
        assert_eq!(self.open.take().as_ref(), Some(op));
        self.writes += 1;
    }
}

#[test]
fn recorders_bracket_every_write() {
    let spec = StreamSpec {
        ops: 1500,
        ..StreamSpec::default()
    };
    let ops = generate(&spec).unwrap();
    let alloc = cache();
    let tree = MapleTree::new(&alloc).unwrap();
    let mut bracket = Bracket::default();
    let stats = run::run_writes(&tree, &ops, &mut bracket).unwrap();
    assert_eq!(bracket.writes, stats.writes());
    let applied = ops.iter().filter(|op| op.store().is_some()).count() as u64;
    assert_eq!(bracket.writes, applied);
}
