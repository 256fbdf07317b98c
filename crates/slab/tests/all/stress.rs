use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use object_alloc::{CacheConfig, NodeMap};
use slab::{LimitedPages, PageSource, SlabPool};

use crate::{Rng, slots, taken};

/// Objects moved between threads as plain addresses.
struct Batch(Vec<NonNull<u8>>);
// SAFETY: the objects are owned by whoever holds the batch.
unsafe impl Send for Batch {}

/// Threads (more than this machine's CPUs) allocate in bulk, write their objects, send half of
/// them to the next thread and free what they receive: remote frees across nodes.
#[test]
fn threads_with_remote_frees_keep_the_pool_consistent() {
    const THREADS: usize = 6;
    const ROUNDS: usize = 2000;
    let pages = Arc::new(LimitedPages::unlimited());
    let config = CacheConfig::new(96)
        .with_nodes(NodeMap::Simulated { nodes: 2 })
        .with_page_source(pages.clone());
    let pool = SlabPool::with_min_partial(&config, 1).unwrap();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..THREADS).map(|_| mpsc::channel::<Batch>()).unzip();
    let receivers = thread::scope(|s| {
        let handles: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(t, receiver)| {
                let next = senders[(t + 1) % THREADS].clone();
                let pool = &pool;
                s.spawn(move || {
                    let mut rng = Rng::new(t as u64 + 1);
                    let node = t % 2;
                    for round in 0..ROUNDS {
                        let mut out = slots(1 + rng.below(64));
                        let got = if round % 2 == 0 {
                            pool.alloc_bulk(node, true, &mut out).unwrap();
                            out.len()
                        } else {
                            pool.refill(node, true, 1, &mut out).unwrap()
                        };
                        let objects = taken(&out, got);
                        for &object in &objects {
                            // SAFETY: 96 writable bytes of ours.
                            unsafe { object.as_ptr().write_bytes(t as u8, 96) };
                        }
                        thread::yield_now();
                        for &object in &objects {
                            // SAFETY: as above; no one else may have written it.
                            assert_eq!(unsafe { *object.as_ptr().add(95) }, t as u8);
                        }
                        let (mine, theirs) = objects.split_at(got / 2);
                        // SAFETY: live objects of the pool, each freed once.
                        unsafe { pool.free_bulk(mine) };
                        next.send(Batch(theirs.to_vec())).unwrap();
                        while let Ok(Batch(remote)) = receiver.try_recv() {
                            // SAFETY: objects handed over by their owner, freed once.
                            unsafe { pool.free_bulk(&remote) };
                        }
                    }
                    receiver
                })
            })
            .collect();
        drop(senders);
        // Shrinking, counting and checking run concurrently with the workers.
        let pool = &pool;
        s.spawn(move || {
            for _ in 0..200 {
                pool.shrink();
                let stats = pool.stats();
                assert_eq!(
                    stats.objects_in_use + stats.objects_free,
                    stats.slabs * pool.layout().objects_per_slab as u64
                );
                pool.check_invariants();
                thread::yield_now();
            }
        });
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    for receiver in receivers {
        while let Ok(Batch(remote)) = receiver.try_recv() {
            // SAFETY: objects sent by exited threads, freed once.
            unsafe { pool.free_bulk(&remote) };
        }
    }
    pool.check_invariants();
    let stats = pool.stats();
    assert_eq!(stats.objects_in_use, 0);
    assert!(
        stats.slabs <= 2,
        "min_partial 1 on each of 2 nodes: {stats:?}"
    );
    pool.shrink();
    assert_eq!(pages.stats().held_bytes, 0);
}
