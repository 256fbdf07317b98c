//! Long randomized runs (ignored by default; `cargo test -p maple --release -- --ignored`):
//! every write's nodes came from its reserve and the tree matches the model, on trees up to
//! height 5.

use maple::ops::SplitMix64;
use maple::{MapleTree, RangeModel, StoreKind, Value};
use object_alloc::ObjectAlloc;

use crate::cache;

#[test]
#[ignore = "long: run in release with --ignored"]
fn reserves_hold_on_tall_trees() {
    for seed in 0..8u64 {
        let alloc = cache();
        {
            let tree = MapleTree::new(&alloc).unwrap();
            let mut model = RangeModel::new();
            let mut rng = SplitMix64::new(seed);
            let keys = 1u64 << (16 + seed % 4);
            let mut worst = [0u32; 6];
            for i in 0..300_000u64 {
                let start = rng.below(keys);
                let len = match rng.below(100) {
                    0 => rng.between(1, keys / 8),
                    1..=10 => rng.between(1, 400),
                    _ => rng.between(1, 4),
                };
                let value = if rng.chance(0.3) {
                    None
                } else {
                    Value::new(i + 1)
                };
                let info = tree.store(start..start + len, value).unwrap();
                model.store(start..start + len, value);
                assert_eq!(info.outside_reserve, 0, "seed {seed} op {i}: {info:?}");
                let k = info.kind as usize;
                worst[k] = worst[k].max(info.used);
                if i % 50_000 == 0 {
                    tree.check(model.as_map()).unwrap();
                }
            }
            let shape = tree.check(model.as_map()).unwrap();
            let stats = tree.stats();
            eprintln!("seed {seed}: {shape:?}\n  {stats:?}\n  most used per kind {worst:?}");
            assert!(stats.writes_by_kind[StoreKind::Spanning as usize] > 0);
        }
        alloc.barrier();
        assert_eq!(alloc.live(), 0);
    }
}
