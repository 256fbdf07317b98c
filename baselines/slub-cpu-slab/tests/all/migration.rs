//! Threads that migrate between CPUs while allocating and freeing, with remote frees: the
//! situation the transaction id exists for.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc};
use slab::{LimitedPages, PageSource};
use slub_cpu_slab::SlubCpuSlab;

#[test]
fn migrating_threads_with_remote_frees_keep_every_object_distinct() {
    const SIZE: usize = 64;
    let pages = Arc::new(LimitedPages::unlimited());
    let cache = SlubCpuSlab::new(&CacheConfig::new(SIZE).with_page_source(pages.clone())).unwrap();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let threads = 6; // more threads than this machine's CPUs: slots are shared
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| mpsc::channel::<usize>()).unzip();
        for (t, receiver) in receivers.into_iter().enumerate() {
            let next = senders[(t + 1) % threads].clone();
            let (cache, cores, failed) = (&cache, &cores, &failed);
            s.spawn(move || {
                let mut held: Vec<usize> = Vec::new();
                for round in 0..20_000usize {
                    if !cores.is_empty() && round % 500 == 0 {
                        // Move to another CPU mid-stream.
                        core_affinity::set_for_current(cores[(t + round / 500) % cores.len()]);
                    }
                    if round % 5 != 4 {
                        let object = cache.alloc(AllocFlags::empty()).unwrap();
                        // SAFETY: SIZE writable bytes, ours.
                        unsafe {
                            object
                                .as_ptr()
                                .cast::<usize>()
                                .write(object.as_ptr() as usize ^ t)
                        };
                        held.push(object.as_ptr() as usize);
                    }
                    while let Ok(object) = receiver.try_recv() {
                        held.push(object);
                    }
                    if held.len() > 32 {
                        let object = held.swap_remove(round % held.len());
                        if round % 3 == 0 {
                            let _ = next.send(object); // freed remotely by the next thread
                            continue;
                        }
                        // SAFETY: live and ours. The stamp names the object, so a double
                        // hand-out (two owners writing it) is caught by either of them.
                        let stamp = unsafe { (object as *const usize).read() };
                        if stamp ^ object >= threads {
                            failed.store(true, Ordering::Relaxed);
                        }
                        // SAFETY: live object of `cache`, freed once.
                        unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
                    }
                }
                drop(next);
                for object in held.drain(..).chain(receiver.iter()) {
                    // SAFETY: as above.
                    unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
                }
            });
        }
        drop(senders);
    });
    assert!(
        !failed.load(Ordering::Relaxed),
        "an object was handed out twice"
    );
    cache.check_invariants();
    let stats = cache.stats();
    assert_eq!(stats.live_objects, Some(0));
    assert!(stats.counter("alloc_fastpath") > 0 && stats.counter("free_slowpath") > 0);
    cache.shrink();
    cache.check_invariants();
    assert_eq!(pages.stats().held_bytes, 0);
}
