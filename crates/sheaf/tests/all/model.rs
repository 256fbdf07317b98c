//! Model-based test: random sequences of operations against a simple model (the set of live
//! objects and the outstanding prefilled sheaf), with the cache's accounting checked after
//! every step.

use std::collections::HashSet;
use std::ptr::NonNull;

use object_alloc::{AllocFlags, CacheConfig};
use proptest::prelude::*;
use sheaf::{Cache, PerCpu, PerThread, SlotStrategy};

use crate::common::*;

#[derive(Clone, Debug)]
enum Op {
    Alloc { zero: bool, nowait: bool },
    Free(usize),
    AllocBulk(usize),
    FreeBulk(usize),
    FreeDeferred(usize),
    Prefill(usize),
    TakeFromSheaf(usize),
    Refill(usize),
    Return { nowait: bool },
    Shrink,
    Barrier,
    ClosePages,
    OpenPages,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), any::<bool>()).prop_map(|(zero, nowait)| Op::Alloc { zero, nowait }),
        5 => any::<usize>().prop_map(Op::Free),
        2 => (0usize..40).prop_map(Op::AllocBulk),
        2 => (0usize..40).prop_map(Op::FreeBulk),
        2 => any::<usize>().prop_map(Op::FreeDeferred),
        2 => (0usize..30).prop_map(Op::Prefill),
        2 => (0usize..10).prop_map(Op::TakeFromSheaf),
        1 => (0usize..30).prop_map(Op::Refill),
        1 => any::<bool>().prop_map(|nowait| Op::Return { nowait }),
        1 => Just(Op::Shrink),
        1 => Just(Op::Barrier),
        1 => Just(Op::ClosePages),
        1 => Just(Op::OpenPages),
    ]
}

fn flags(nowait: bool) -> AllocFlags {
    if nowait {
        AllocFlags::NOWAIT
    } else {
        AllocFlags::empty()
    }
}

fn run_model<S: SlotStrategy>(capacity: usize, barn: (usize, usize), ops: &[Op]) {
    let (pages, config) = limited_config(usize::MAX / 2);
    let config: CacheConfig = config
        .with_sheaf_capacity(capacity)
        .with_barn_limits(barn.0, barn.1);
    let cache: Cache<S> = Cache::new(&config).unwrap();
    let mut live_set: Vec<NonNull<u8>> = Vec::new();
    let mut sheaf = None;
    let mut deferred_since_barrier = false;
    for (step, op) in ops.iter().enumerate() {
        match op.clone() {
            Op::Alloc { zero, nowait } => {
                let f = flags(nowait)
                    | if zero {
                        AllocFlags::ZERO
                    } else {
                        AllocFlags::empty()
                    };
                if let Some(o) = cache.alloc(f) {
                    if zero {
                        assert!(is_zero(o, 64), "step {step}: ZERO object not zero");
                    }
                    scribble(o, 64, 0xcd);
                    live_set.push(o);
                }
            }
            Op::Free(i) if !live_set.is_empty() => {
                let o = live_set.swap_remove(i % live_set.len());
                // SAFETY: a live object of the model, freed once.
                unsafe { cache.free(o) };
            }
            Op::FreeDeferred(i) if !live_set.is_empty() => {
                let o = live_set.swap_remove(i % live_set.len());
                // SAFETY: a live object of the model, freed once.
                unsafe { cache.free_deferred(o) };
                deferred_since_barrier = true;
            }
            Op::AllocBulk(n) => {
                let mut out = vec![std::mem::MaybeUninit::uninit(); n];
                let before = live(&cache);
                match cache.alloc_bulk(AllocFlags::ZERO, &mut out) {
                    Ok(()) => {
                        for o in out {
                            // SAFETY: written on success.
                            let o = unsafe { o.assume_init() };
                            assert!(is_zero(o, 64));
                            live_set.push(o);
                        }
                    }
                    Err(_) => {
                        assert_eq!(live(&cache), before, "step {step}: failed bulk allocated")
                    }
                }
            }
            Op::FreeBulk(n) => {
                let n = n.min(live_set.len());
                let objects: Vec<_> = live_set.drain(..n).collect();
                // SAFETY: live objects of the model, each once.
                unsafe { cache.free_bulk(&objects) };
            }
            Op::Prefill(n) => {
                drop(sheaf.take());
                if let Ok(s) = cache.prefill(AllocFlags::empty(), n) {
                    assert!(s.size() >= n, "step {step}: C-PREFILL-1");
                    sheaf = Some(s);
                }
            }
            Op::TakeFromSheaf(k) => {
                if let Some(s) = sheaf.as_mut() {
                    for _ in 0..k {
                        let size = s.size();
                        match s.alloc(AllocFlags::ZERO) {
                            Some(o) => {
                                assert_eq!(s.size(), size - 1, "step {step}: C-PREFILL-4");
                                assert!(is_zero(o, 64));
                                live_set.push(o);
                            }
                            None => assert_eq!(size, 0, "step {step}: C-PREFILL-2"),
                        }
                    }
                }
            }
            Op::Refill(n) => {
                if let Some(s) = sheaf.as_mut() {
                    let (size, capacity) = (s.size(), s.capacity());
                    match s.refill(AllocFlags::empty(), n) {
                        Ok(()) => assert!(s.size() >= n, "step {step}: C-REFILL-2/3"),
                        Err(_) => assert_eq!(
                            (s.size(), s.capacity()),
                            (size, capacity),
                            "step {step}: C-REFILL-4"
                        ),
                    }
                }
            }
            Op::Return { nowait } => {
                if let Some(s) = sheaf.take() {
                    let requests = pages.requests();
                    s.return_with(flags(nowait));
                    if nowait {
                        assert_eq!(pages.requests(), requests, "step {step}: C-RETURN-2");
                    }
                }
            }
            Op::Shrink => cache.shrink(),
            Op::Barrier => {
                cache.barrier();
                deferred_since_barrier = false;
            }
            Op::ClosePages => pages.set_limit(held(&pages)),
            Op::OpenPages => pages.set_limit(usize::MAX / 2),
            Op::Free(_) | Op::FreeDeferred(_) => {}
        }
        if deferred_since_barrier {
            cache.barrier();
            deferred_since_barrier = false;
        }
        let reserved = sheaf.as_ref().map_or(0, |s| s.size()) as u64;
        assert_eq!(
            live(&cache),
            live_set.len() as u64 + reserved,
            "step {step} ({op:?}): live"
        );
        let distinct: HashSet<_> = live_set.iter().collect();
        assert_eq!(
            distinct.len(),
            live_set.len(),
            "step {step}: an object handed out twice"
        );
        let stats = cache.stats();
        assert!(
            stats.counter("barn_full_sheaves") <= barn.0 as u64,
            "step {step}: C-RETURN-3"
        );
        assert!(
            stats.counter("barn_empty_sheaves") <= barn.1 as u64,
            "step {step}: C-RETURN-3"
        );
        assert!(
            cache.check_invariants(),
            "step {step}: the equation was not checked"
        );
    }
    drop(sheaf);
    pages.set_limit(usize::MAX / 2);
    free_all_and_check_empty(&pages, &cache, live_set);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn model_per_cpu(capacity in prop::sample::select(vec![0usize, 1, 4, 8, 60]),
                     full in 0usize..4, empty in 0usize..4,
                     ops in prop::collection::vec(op(), 1..120)) {
        run_model::<PerCpu>(capacity, (full, empty), &ops);
    }

    #[test]
    fn model_per_thread(capacity in prop::sample::select(vec![0usize, 1, 4, 8, 60]),
                        full in 0usize..4, empty in 0usize..4,
                        ops in prop::collection::vec(op(), 1..120)) {
        run_model::<PerThread>(capacity, (full, empty), &ops);
    }
}
