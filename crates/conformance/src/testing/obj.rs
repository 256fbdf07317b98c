//! Object checks: layout, overlap on one and several threads, `ZERO` on reused memory,
//! remote frees and simulated nodes (C-CONF-1, C-OBJ-1..5).

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, mpsc};
use std::thread;

use object_alloc::{AllocFlags, CacheConfig, NodeMap, ObjectAlloc, PAGE_SIZE, Prefill};

use super::{
    ALIGNS, MORE_LAYOUTS, REUSE_WINDOW, SIZES, bulk, check_aligned, fill, new_cache, release_all,
    verify,
};
use crate::objects::{self, Stamped};

/// C-CONF-1: creation refuses a zero size and a non-power-of-two alignment, naming the field.
pub fn config_is_validated<A: ObjectAlloc>() {
    let zero_size = A::new(&CacheConfig::new(0));
    assert_eq!(
        zero_size.err().map(|e| e.field),
        Some("object_size"),
        "{}: a zero object size must be refused naming `object_size`",
        A::NAME
    );
    let bad_align = A::new(&CacheConfig::new(64).with_align(24));
    assert_eq!(
        bad_align.err().map(|e| e.field),
        Some("align"),
        "{}: alignment 24 must be refused naming `align`",
        A::NAME
    );
}

/// C-OBJ-1: for every size of [`SIZES`] with every alignment of [`ALIGNS`], and for tiny, odd
/// and large layouts besides, objects are aligned and every byte of the configured size holds
/// what was written while a few slabs' worth of objects are live (300 objects; 32 of those
/// larger than a page, each of which fills a slab or more).
pub fn objects_are_aligned_and_writable<A: ObjectAlloc>() {
    let layouts = SIZES
        .into_iter()
        .flat_map(|size| ALIGNS.map(|align| (size, align)))
        .chain(MORE_LAYOUTS);
    for (size, align) in layouts {
        let config = CacheConfig::new(size).with_align(align);
        let fixture = new_cache::<A>(config.clone());
        let cache = &fixture.cache;
        let count = if size > PAGE_SIZE { 32 } else { 300 };
        let objects: Vec<_> = (0..count)
            .map(|_| {
                cache
                    .alloc(AllocFlags::empty())
                    .unwrap_or_else(|| panic!("{}: allocation failed for {config:?}", A::NAME))
            })
            .collect();
        for (tag, &object) in objects.iter().enumerate() {
            check_aligned(A::NAME, object, align);
            // SAFETY: a live object of `size` bytes that this check owns.
            unsafe { fill(object, size, tag) };
        }
        for (tag, &object) in objects.iter().enumerate() {
            // SAFETY: as above.
            unsafe { verify(A::NAME, object, size, tag) };
        }
        release_all(&fixture, &objects);
    }
}

/// C-OBJ-2: live objects never overlap, on one thread and across two threads allocating at the
/// same time (each object is filled with its own pattern, then, with every object still live,
/// every pattern is verified).
pub fn objects_do_not_overlap<A: ObjectAlloc>() {
    const OBJECTS: usize = 1000;
    for size in [8, 64, 4096] {
        let fixture = new_cache::<A>(CacheConfig::new(size));
        let cache = &fixture.cache;
        let start = Barrier::new(2);
        let per_thread: Vec<Vec<Stamped>> = thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|thread_index| {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        let objects: Vec<_> = (0..OBJECTS)
                            .map(|i| {
                                let object = cache
                                    .alloc(AllocFlags::empty())
                                    .unwrap_or_else(|| panic!("{}: allocation failed", A::NAME));
                                let stamp = thread_index * OBJECTS + i;
                                // SAFETY: a live object of `size` bytes owned by this thread.
                                unsafe { fill(object, size, stamp) };
                                Stamped {
                                    object,
                                    stamp: stamp as u64,
                                }
                            })
                            .collect();
                        objects
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut seen = HashSet::new();
        for object in per_thread.iter().flatten() {
            assert!(
                seen.insert(object.object),
                "{}: {:p} handed out twice while live (C-OBJ-2)",
                A::NAME,
                object.object
            );
            // SAFETY: live, `size` bytes, now owned by this thread.
            unsafe { verify(A::NAME, object.object, size, object.stamp as usize) };
        }
        let objects: Vec<_> = per_thread.iter().flatten().map(|o| o.object).collect();
        release_all(&fixture, &objects);
    }
}

/// C-OBJ-2, C-OBJ-4, C-CONC-1: threads (more than CPUs) allocate, stamp, hand objects to each
/// other and free them remotely; no stamp is ever overwritten, and at the end the live set has
/// no two overlapping objects.
pub fn objects_cross_threads_intact<A: ObjectAlloc>() {
    const SIZE: usize = 48;
    let fixture = new_cache::<A>(CacheConfig::new(SIZE));
    let cache = &fixture.cache;
    let threads = 4;
    let failed = AtomicBool::new(false);
    let mut survivors = Vec::new();
    std::thread::scope(|s| {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| mpsc::channel::<(usize, u8)>()).unzip();
        let mut handles = Vec::new();
        for (t, receiver) in receivers.into_iter().enumerate() {
            let next = senders[(t + 1) % threads].clone();
            let failed = &failed;
            handles.push(s.spawn(move || {
                let mut held: Vec<(usize, u8)> = Vec::new();
                for round in 0..3000usize {
                    let stamp = (t * 61 + round) as u8;
                    let object = cache.alloc(AllocFlags::empty()).expect("memory");
                    // SAFETY: `SIZE` writable bytes, ours.
                    unsafe { object.as_ptr().write_bytes(stamp, SIZE) };
                    held.push((object.as_ptr() as usize, stamp));
                    if round % 4 == 0 {
                        let (object, stamp) = held.swap_remove(round % held.len());
                        next.send((object, stamp))
                            .expect("the next thread drains its channel");
                    }
                    while let Ok(item) = receiver.try_recv() {
                        held.push(item);
                    }
                    if held.len() > 64 {
                        let (object, stamp) = held.swap_remove(round % held.len());
                        // SAFETY: live, ours.
                        let bytes =
                            unsafe { std::slice::from_raw_parts(object as *const u8, SIZE) };
                        if bytes.iter().any(|&b| b != stamp) {
                            failed.store(true, Ordering::Relaxed);
                        }
                        // SAFETY: live object of `cache`, freed once (maybe remotely).
                        unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
                    }
                }
                // Objects still in flight to this thread arrive until the previous thread is
                // done sending.
                drop(next);
                held.extend(receiver.iter());
                held
            }));
        }
        drop(senders);
        for handle in handles {
            survivors.extend(handle.join().unwrap());
        }
    });
    assert!(
        !failed.load(Ordering::Relaxed),
        "{}: an object's contents were overwritten: overlap (C-OBJ-2)",
        A::NAME
    );
    let mut spans: Vec<usize> = survivors.iter().map(|&(o, _)| o).collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(
            pair[0] + SIZE <= pair[1],
            "{:#x} and {:#x} overlap",
            pair[0],
            pair[1]
        );
    }
    for &(object, stamp) in &survivors {
        // SAFETY: live, ours.
        let bytes = unsafe { std::slice::from_raw_parts(object as *const u8, SIZE) };
        assert!(bytes.iter().all(|&b| b == stamp), "{object:#x} overwritten");
    }
    if A::CAPABILITIES.tracks_live_objects {
        assert_eq!(
            cache.stats().live_objects,
            Some(survivors.len() as u64),
            "{}: live objects at the quiescent point (C-OBJ-5)",
            A::NAME
        );
    }
    let objects: Vec<_> = survivors
        .into_iter()
        .map(|(o, _)| NonNull::new(o as *mut u8).unwrap())
        .collect();
    release_all(&fixture, &objects);
}

/// C-OBJ-3: `ZERO` objects read as zero even when their memory held a pattern before, through
/// `alloc`, `alloc_bulk` and a prefilled sheaf. Each path allocates until it has been handed
/// back at least one of the dirtied objects (designs that reuse a page's freed objects only
/// once its fresh ones run out need more than one batch; a design whose bulk path bypasses its
/// per-thread cache gets one `shrink` after a window without reuse), so the check is never
/// vacuous.
pub fn zero_holds_on_reused_memory<A: ObjectAlloc>() {
    const OBJECTS: usize = 64;
    for size in SIZES {
        let fixture = new_cache::<A>(CacheConfig::new(size).with_sheaf_capacity(8));
        let cache = &fixture.cache;
        for (round, path) in ["alloc", "alloc_bulk", "prefill"].into_iter().enumerate() {
            let dirty: Vec<_> = (0..OBJECTS)
                .map(|i| {
                    let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
                    // SAFETY: a live object of `size` bytes that this check owns.
                    unsafe { fill(object, size, i) };
                    object
                })
                .collect();
            let dirty_set: HashSet<_> = dirty.iter().copied().collect();
            // SAFETY: each was allocated by `cache`, is live and appears once.
            unsafe { cache.free_bulk(&dirty) };
            let mut zeroed: Vec<NonNull<u8>> = Vec::new();
            let mut reused = 0;
            let mut shrunk = false;
            while reused == 0 && zeroed.len() < 2 * REUSE_WINDOW {
                if zeroed.len() >= REUSE_WINDOW && !shrunk {
                    // A design whose bulk path bypasses its per-thread cache (jemalloc's
                    // batch allocation takes slab regions, not the tcache) hands the freed
                    // objects back only once they have left that cache: shrink, and give
                    // it one more window.
                    cache.shrink();
                    shrunk = true;
                }
                let batch: Vec<NonNull<u8>> = match round {
                    0 => (0..OBJECTS)
                        .map(|_| cache.alloc(AllocFlags::ZERO).expect("allocation failed"))
                        .collect(),
                    1 => bulk(cache, AllocFlags::ZERO, OBJECTS).expect("bulk allocation failed"),
                    _ => {
                        let mut sheaf = cache
                            .prefill(AllocFlags::empty(), OBJECTS)
                            .expect("prefill failed");
                        (0..OBJECTS)
                            .map(|_| {
                                sheaf
                                    .alloc(AllocFlags::ZERO)
                                    .expect("prefilled alloc failed")
                            })
                            .collect()
                    }
                };
                for &object in &batch {
                    reused += usize::from(dirty_set.contains(&object));
                    // SAFETY: a live object of `size` bytes that this check owns.
                    if let Some((offset, byte)) = unsafe { objects::first_nonzero(object, size) } {
                        panic!(
                            "{}: ZERO object {object:p} from {path}, size {size}: byte {offset} \
                             is {byte:#x} (C-OBJ-3)",
                            A::NAME
                        );
                    }
                }
                zeroed.extend(batch);
            }
            // SAFETY: each was allocated by `cache`, is live and appears once.
            unsafe { cache.free_bulk(&zeroed) };
            assert!(
                reused > 0,
                "{}: no freed object came back through {path} within {REUSE_WINDOW} \
                 allocations, nor within as many more after a shrink (size {size}), so ZERO \
                 on reused memory was not exercised",
                A::NAME
            );
        }
        release_all(&fixture, &[]);
    }
}

/// C-OBJ-4: objects allocated on one thread are freed on another (with `free` and
/// `free_bulk`), and the other way round; contents cross intact, and accounting holds after
/// (C-OBJ-5).
pub fn remote_free_is_allowed<A: ObjectAlloc>() {
    const OBJECTS: usize = 1000;
    let size = 64;
    let fixture = new_cache::<A>(CacheConfig::new(size));
    let cache = &fixture.cache;
    for round in 0..3 {
        let objects: Vec<_> = (0..OBJECTS)
            .map(|i| {
                let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
                // SAFETY: a live object of `size` bytes that this thread owns.
                unsafe { fill(object, size, round * OBJECTS + i) };
                object
            })
            .collect();
        let sent: Vec<_> = objects
            .iter()
            .map(|&object| Stamped { object, stamp: 0 })
            .collect();
        let theirs = thread::scope(|s| {
            s.spawn(move || {
                let objects: Vec<_> = sent.iter().map(|s| s.object).collect();
                let (singles, batch) = objects.split_at(OBJECTS / 2);
                for (i, object) in objects.iter().enumerate() {
                    // SAFETY: live, `size` bytes, handed over to this thread.
                    unsafe { verify(A::NAME, *object, size, round * OBJECTS + i) };
                }
                for &object in singles {
                    // SAFETY: allocated by `cache` on another thread, live, freed once.
                    unsafe { cache.free(object) };
                }
                // SAFETY: as above, each appears once.
                unsafe { cache.free_bulk(batch) };
                let mine: Vec<_> = (0..OBJECTS)
                    .map(|i| {
                        let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
                        // SAFETY: a live object of `size` bytes that this thread owns.
                        unsafe { fill(object, size, i) };
                        Stamped {
                            object,
                            stamp: i as u64,
                        }
                    })
                    .collect();
                mine
            })
            .join()
            .unwrap()
        });
        for (i, object) in theirs.iter().enumerate() {
            // SAFETY: live, `size` bytes, handed over to this thread; the allocating thread
            // has exited.
            unsafe { verify(A::NAME, object.object, size, i) };
            // SAFETY: allocated by `cache` on another thread, live, freed once.
            unsafe { cache.free(object.object) };
        }
    }
    release_all(&fixture, &[]);
}

/// Simulated nodes: threads on different CPUs (hence nodes) allocate and free each other's
/// objects; every node's slabs are released in the end (C-OBJ-4, C-OBJ-5).
pub fn simulated_nodes<A: ObjectAlloc>() {
    let config = CacheConfig::new(64).with_nodes(NodeMap::Simulated { nodes: 2 });
    let fixture = new_cache::<A>(config);
    let cache = &fixture.cache;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (to_second, from_first) = mpsc::channel::<Vec<usize>>();
    let (to_first, from_second) = mpsc::channel::<Vec<usize>>();
    std::thread::scope(|s| {
        for (index, (sender, receiver)) in [(to_second, from_second), (to_first, from_first)]
            .into_iter()
            .enumerate()
        {
            let cores = &cores;
            s.spawn(move || {
                if let Some(&core) = cores.get(index % cores.len().max(1)) {
                    core_affinity::set_for_current(core);
                }
                for _ in 0..40 {
                    let batch = (0..150)
                        .map(|_| cache.alloc(AllocFlags::empty()).unwrap().as_ptr() as usize)
                        .collect();
                    sender.send(batch).unwrap();
                    if let Ok(batch) = receiver.recv() {
                        for object in batch {
                            // SAFETY: live objects received once each.
                            unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
                        }
                    }
                }
            });
        }
    });
    release_all(&fixture, &[]);
}
