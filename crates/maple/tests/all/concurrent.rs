//! Readers during writes: every entry a reader sees is one a consistent tree could hold.

use std::sync::atomic::{AtomicBool, Ordering};

use maple::ops::SplitMix64;
use maple::{MapleTree, RangeModel, Value, run};
use object_alloc::{ObjectAlloc, rcu};

use crate::cache;

const PAGES: u64 = 1 << 14;

/// A value that names the range it was stored over: whatever a consistent tree later keeps of
/// that range (trimmed, split) lies inside it.
fn stamp(start: u64, pages: u64, generation: u64) -> Value {
    Value::new((start << 28) | (pages << 8) | (generation & 0xff) | 1).unwrap()
}

fn stamped_range(value: Value) -> (u64, u64) {
    let v = value.get();
    let start = v >> 28;
    let pages = (v >> 8) & 0xf_ffff;
    (start, start + pages)
}

#[test]
fn readers_see_only_consistent_entries_during_writes() {
    readers_during_writes(1, 12_000, 0.1);
}

#[test]
fn readers_see_only_consistent_entries_while_wide_unmaps_reshape_the_tree() {
    readers_during_writes(2, 6_000, 0.4);
}

/// Two readers check every entry they meet while one writer makes `writes` random stores,
/// a share `wide` of them spanning many ranges.
fn readers_during_writes(seed: u64, writes: u64, wide: f64) {
    let alloc = cache();
    {
        let tree = MapleTree::new(&alloc).unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let readers: Vec<_> = (0..2u64)
                .map(|r| {
                    let tree = &tree;
                    let done = &done;
                    s.spawn(move || {
                        let mut rng = SplitMix64::new(r + 100);
                        let mut seen = 0u64;
                        loop {
                            let last = done.load(Ordering::Relaxed);
                            let guard = rcu::read();
                            for _ in 0..32 {
                                let key = rng.below(PAGES + 64);
                                let extent = tree.extent_in(&guard, key);
                                assert!(
                                    extent.first <= key && key <= extent.last,
                                    "{key} {extent:?}"
                                );
                                if let Some(value) = extent.value {
                                    let (start, end) = stamped_range(value);
                                    assert!(
                                        start <= extent.first && extent.last < end,
                                        "reader saw {extent:?}, stored over {start}..{end}"
                                    );
                                    seen += 1;
                                }
                            }
                            if last {
                                break;
                            }
                        }
                        seen
                    })
                })
                .collect();
            let mut model = RangeModel::new();
            let mut rng = SplitMix64::new(seed);
            for generation in 0..writes {
                let start = rng.below(PAGES);
                let pages = if rng.chance(wide) {
                    rng.between(50, 2000)
                } else {
                    rng.between(1, 12)
                };
                let value = (!rng.chance(0.3)).then(|| stamp(start, pages, generation));
                let info = tree.store(start..start + pages, value).unwrap();
                assert_eq!(info.outside_reserve, 0);
                model.store(start..start + pages, value);
            }
            done.store(true, Ordering::Relaxed);
            for reader in readers {
                assert!(reader.join().unwrap() > 0, "a reader never found a range");
            }
            tree.check(model.as_map()).unwrap();
        });
    }
    alloc.barrier();
    assert_eq!(alloc.live(), 0);
    assert!(alloc.deferred() > 0);
}

#[test]
fn reader_loop_counts_lookups_while_a_stream_runs() {
    let alloc = cache();
    let tree = MapleTree::new(&alloc).unwrap();
    let spec = maple::StreamSpec {
        ops: 2000,
        ..maple::StreamSpec::default()
    };
    let ops = maple::ops::generate(&spec).unwrap();
    let stop = AtomicBool::new(false);
    let totals = std::thread::scope(|s| {
        let reader = s.spawn(|| run::reader_loop(&tree, spec.lookup_range(), 3, 16, &stop));
        run::run_writes(&tree, &ops, &mut run::NoRecorder).unwrap();
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert!(
        totals.lookups >= 16 && totals.hits <= totals.lookups,
        "{totals:?}"
    );
    tree.check(run::model_of(&ops).as_map()).unwrap();
}
