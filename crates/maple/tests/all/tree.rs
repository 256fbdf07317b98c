//! The tree against the model, store by store, and its accounting.

use maple::ops::SplitMix64;
use maple::testing::TestAlloc;
use maple::{MapleTree, RangeModel, StoreKind, Value, WriteConfig, WriteError};
use object_alloc::ObjectAlloc;

use crate::cache;

fn v(x: u64) -> Option<Value> {
    Value::new(x)
}

/// Random stores over a small key space, every one checked against the model.
fn random_stores(seed: u64, ops: usize, keys: u64, max_len: u64, config: WriteConfig) -> [u64; 6] {
    let alloc = cache();
    let kinds = {
        let tree = MapleTree::with_config(&alloc, config).unwrap();
        let mut model = RangeModel::new();
        let mut rng = SplitMix64::new(seed);
        for i in 0..ops {
            let start = rng.below(keys);
            let len = rng.between(1, max_len);
            let value = if rng.chance(0.35) {
                None
            } else {
                v(rng.between(1, 1000))
            };
            let info = tree.store(start..start + len, value).unwrap();
            model.store(start..start + len, value);
            assert!(
                info.used <= info.reserved && info.outside_reserve == 0,
                "op {i} {start:#x}+{len:#x}: {info:?}"
            );
            if let Err(e) = tree.check(model.as_map()) {
                panic!(
                    "seed {seed} op {i} store {start}..{} {value:?} ({info:?}): {e}",
                    start + len
                );
            }
            for _ in 0..4 {
                let probe = rng.below(keys + max_len);
                assert_eq!(
                    tree.lookup(probe),
                    model.lookup(probe),
                    "lookup {probe} after op {i}"
                );
            }
        }
        let stats = tree.stats();
        assert_eq!(stats.writes(), ops as u64);
        assert_eq!(stats.nodes_outside_reserve, 0);
        stats.writes_by_kind
    };
    alloc.barrier();
    assert_eq!(alloc.live(), 0, "nodes leaked");
    kinds
}

#[test]
fn random_short_stores_match_the_model() {
    let mut appends = 0;
    for seed in 0..6 {
        appends +=
            random_stores(seed, 1500, 4000, 8, WriteConfig::default())[StoreKind::Append as usize];
    }
    assert!(appends > 0, "no write took the in-place append path");
}

#[test]
fn random_long_stores_match_the_model() {
    for seed in 10..16 {
        random_stores(seed, 1500, 20_000, 600, WriteConfig::default());
    }
}

#[test]
fn single_node_alloc_switch_matches_the_model() {
    random_stores(
        99,
        2000,
        5000,
        40,
        WriteConfig {
            single_node_alloc: true,
        },
    );
}

/// Builds a tree of `n` adjacent one-key ranges in ascending order.
fn ascending(tree: &MapleTree<'_, TestAlloc>, model: &mut RangeModel, n: u64) {
    for k in 0..n {
        let value = v(k % 997 + 1);
        tree.store(k * 2..k * 2 + 1, value).unwrap();
        model.store(k * 2..k * 2 + 1, value);
    }
}

#[test]
fn a_deep_tree_shrinks_back_to_one_leaf() {
    let alloc = cache();
    {
        let tree = MapleTree::new(&alloc).unwrap();
        let mut model = RangeModel::new();
        ascending(&tree, &mut model, 20_000);
        let shape = tree.check(model.as_map()).unwrap();
        assert!(
            shape.height >= 4,
            "20000 ranges should need height 4: {shape:?}"
        );
        let mut rng = SplitMix64::new(7);
        // Unmap spans of every size, from single keys to large parts of the tree.
        for i in 0..400 {
            let start = rng.below(40_000);
            let len = if i % 4 == 0 {
                rng.between(1000, 8000)
            } else {
                rng.between(1, 60)
            };
            let info = tree.store(start..start + len, None).unwrap();
            model.store(start..start + len, None);
            assert!(info.used <= info.reserved, "{info:?}");
            assert_eq!(info.outside_reserve, 0, "{info:?}");
            if i % 20 == 0 {
                tree.check(model.as_map()).unwrap();
            }
        }
        tree.check(model.as_map()).unwrap();
        let stats = tree.stats();
        assert!(
            stats.writes_by_kind[StoreKind::Spanning as usize] > 50,
            "{stats:?}"
        );
        assert!(
            stats.writes_by_kind[StoreKind::Rebalance as usize] > 0,
            "{stats:?}"
        );
        let info = tree.store(0..u64::MAX, None).unwrap();
        assert_eq!(info.kind, StoreKind::Spanning);
        assert_eq!(info.height_after, 1, "{info:?}");
        model.store(0..u64::MAX, None);
        let shape = tree.check(model.as_map()).unwrap();
        assert_eq!(
            (shape.height, shape.nodes, shape.ranges, shape.gaps),
            (1, 1, 0, 1)
        );
    }
    alloc.barrier();
    assert_eq!(alloc.live(), 0, "nodes leaked");
}

#[test]
fn reserves_follow_the_kernel_rule() {
    let alloc = cache();
    let tree = MapleTree::new(&alloc).unwrap();
    // Into the single empty leaf: the write splits [gap][value][gap], which fits: node store.
    let info = tree.store(100..200, v(1)).unwrap();
    assert_eq!(
        (info.kind, info.reserved, info.used),
        (StoreKind::NodeStore, 1, 1)
    );
    // The same range again: exact fit, in place.
    let info = tree.store(100..200, v(2)).unwrap();
    assert_eq!(
        (info.kind, info.reserved, info.used, info.retired),
        (StoreKind::ExactFit, 0, 0, 0)
    );
    let info = tree.store(1000..2000, v(3)).unwrap();
    assert_eq!(
        (info.kind, info.reserved, info.used),
        (StoreKind::NodeStore, 1, 1)
    );
    assert_eq!(tree.lookup(1500), v(3));
    assert_eq!(tree.lookup(999), None);
    // Fill the leaf (15 entries), then overflow it: a split of a root leaf reserves 2*1+1.
    for k in 0..5 {
        tree.store(300 + k * 20..310 + k * 20, v(4)).unwrap();
    }
    let shape = tree.check_structure().unwrap();
    assert_eq!((shape.height, shape.leaves), (1, 1));
    let info = tree.store(900..905, v(5)).unwrap();
    assert_eq!(info.kind, StoreKind::Split, "{info:?} {shape:?}");
    assert_eq!((info.reserved, info.used, info.height_after), (3, 3, 2));
    // A spanning store at height 2 reserves 3*2+1.
    let info = tree.store(0..2000, None).unwrap();
    assert_eq!((info.kind, info.reserved), (StoreKind::Spanning, 7));
    assert!(info.used <= 7);
    tree.check_structure().unwrap();
}

#[test]
fn a_prefill_that_runs_dry_is_detected() {
    let alloc = cache();
    {
        let tree = MapleTree::new(&alloc).unwrap();
        let mut model = RangeModel::new();
        ascending(&tree, &mut model, 300);
        // A broken allocator: every prefill holds 2 objects fewer than asked.
        alloc.short_prefill(100);
        let info = tree.store(10..500, v(9)).unwrap();
        model.store(10..500, v(9));
        assert_eq!(info.kind, StoreKind::Spanning);
        assert!(info.outside_reserve > 0 && info.used == 0, "{info:?}");
        assert_eq!(
            tree.stats().nodes_outside_reserve,
            u64::from(info.outside_reserve)
        );
        // The write is still correct.
        tree.check(model.as_map()).unwrap();
        alloc.short_prefill(0);
    }
    alloc.barrier();
    assert_eq!(alloc.live(), 0);
}

#[test]
fn a_refused_reserve_leaves_the_tree_unchanged() {
    let alloc = cache();
    {
        let tree = MapleTree::new(&alloc).unwrap();
        let mut model = RangeModel::new();
        ascending(&tree, &mut model, 500);
        let before = tree.stats();
        alloc.fail_allocs(true);
        let err = tree.store(5..700, None).unwrap_err();
        assert!(matches!(err, WriteError::Reserve { .. }), "{err}");
        assert!(err.to_string().contains("could not reserve"), "{err}");
        alloc.fail_allocs(false);
        assert_eq!(tree.stats(), before);
        tree.check(model.as_map()).unwrap();
        // A prefill that runs dry while plain allocations fail: the write is refused whole.
        alloc.short_prefill(100);
        // Deferred frees of earlier writes complete whenever any thread of the process
        // collects (other tests run beside this one): let them all complete first, so that
        // `live` moves only by what the refused write does.
        alloc.barrier();
        let live = alloc.live();
        alloc.fail_allocs(true);
        assert_eq!(
            tree.store(5..700, None).unwrap_err(),
            WriteError::OutOfNodes
        );
        alloc.fail_allocs(false);
        alloc.short_prefill(0);
        assert_eq!(
            alloc.live(),
            live,
            "fresh nodes of a refused write were not freed"
        );
        tree.check(model.as_map()).unwrap();
        assert_eq!(
            tree.store(7..7, v(1)).unwrap_err(),
            WriteError::EmptyRange { start: 7, end: 7 }
        );
    }
    alloc.barrier();
    assert_eq!(alloc.live(), 0);
}

#[test]
fn the_ends_of_the_key_space() {
    let alloc = cache();
    let tree = MapleTree::new(&alloc).unwrap();
    let mut model = RangeModel::new();
    for (range, value) in [
        (0..1, v(1)),
        (u64::MAX - 1..u64::MAX, v(2)),
        (1..u64::MAX - 1, v(3)),
        (5..u64::MAX, None),
        (0..u64::MAX, v(4)),
        (u64::MAX / 2..u64::MAX / 2 + 1, None),
    ] {
        tree.store(range.clone(), value).unwrap();
        model.store(range, value);
        tree.check(model.as_map()).unwrap();
    }
    assert_eq!(tree.lookup(0), v(4));
    assert_eq!(tree.lookup(u64::MAX / 2), None);
    assert_eq!(tree.lookup(u64::MAX - 1), v(4));
    // The last key can never be stored (ranges are half-open): it stays a gap.
    assert_eq!(tree.lookup(u64::MAX), None);
    let guard = object_alloc::rcu::read();
    let extent = tree.extent_in(&guard, u64::MAX);
    assert_eq!(
        (extent.first, extent.last, extent.value),
        (u64::MAX, u64::MAX, None)
    );
}
