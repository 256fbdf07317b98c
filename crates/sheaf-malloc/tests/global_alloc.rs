//! `sheaf::Kmalloc` as a Rust program's global allocator: this whole test binary (the test
//! harness, its threads, the standard library) allocates through it.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};

#[global_allocator]
static ALLOC: sheaf::Kmalloc = sheaf::Kmalloc::new();

/// A deterministic pseudo-random sequence per thread.
fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

#[test]
fn the_global_allocator_is_kmalloc() {
    let boxed = Box::new([7u8; 100]);
    // SAFETY: a live allocation of the global allocator.
    let usable = unsafe { ALLOC.usable_size(Box::into_raw(boxed).cast()) };
    assert_eq!(usable, 128, "a 100-byte box comes from the 128-byte class");
}

#[test]
fn threads_share_maps_strings_and_exit() {
    const THREADS: usize = 6;
    const ROUNDS: usize = 20_000;
    let shared: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
    let barrier = Arc::new(Barrier::new(THREADS));
    let (sender, receiver) = mpsc::channel::<Vec<String>>();
    let workers: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            let (shared, barrier, sender) = (shared.clone(), barrier.clone(), sender.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut state = t + 1;
                let mut own: HashMap<String, Vec<u64>> = HashMap::new();
                for round in 0..ROUNDS as u64 {
                    let r = next(&mut state);
                    let key = format!("{t}-{}", r % 512);
                    own.entry(key).or_default().push(round);
                    if r.is_multiple_of(3) {
                        let text = "x".repeat((r % 3000) as usize) + &round.to_string();
                        let old = shared.lock().unwrap().insert(r % 1024, text);
                        drop(old);
                    }
                    if r.is_multiple_of(97) {
                        own.retain(|_, rounds| rounds.len() % 2 == 0);
                    }
                }
                // Strings made here are freed on the receiving thread, after this one exits.
                let batch: Vec<String> = own.keys().cloned().collect();
                sender.send(batch).unwrap();
                own.values().map(Vec::len).sum::<usize>()
            })
        })
        .collect();
    drop(sender);
    let kept: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let received: Vec<Vec<String>> = receiver.iter().collect();
    assert_eq!(received.len(), THREADS);
    for batch in &received {
        for key in batch {
            let (thread, slot) = key.split_once('-').expect("thread-slot");
            assert!(thread.parse::<usize>().unwrap() < THREADS);
            assert!(slot.parse::<u64>().unwrap() < 512);
        }
    }
    assert!(kept > 0);
    let map = shared.lock().unwrap();
    assert!(!map.is_empty());
    for (key, text) in map.iter() {
        assert!(*key < 1024);
        let digits = text.trim_start_matches('x');
        assert!(digits.parse::<u64>().unwrap() < ROUNDS as u64);
    }
}

#[test]
fn many_short_lived_threads_allocate_and_exit() {
    for wave in 0..20 {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                std::thread::spawn(move || {
                    let v: Vec<Box<[u8]>> = (0..200)
                        .map(|n| vec![(wave + i) as u8; (n * 37) % 5000].into_boxed_slice())
                        .collect();
                    v.iter().map(|b| b.len()).sum::<usize>()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 8 * (0..200).map(|n| (n * 37) % 5000).sum::<usize>());
    }
}

/// Thread-local values whose destructors free and allocate while their thread exits.
#[test]
fn thread_local_destructors_free_and_allocate_at_exit() {
    static REPORTS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    struct Reporter(Vec<String>);
    impl Drop for Reporter {
        fn drop(&mut self) {
            // Allocates (the report) and frees (the strings) during thread exit.
            let report = format!("{} {}", self.0.len(), self.0.concat().len());
            self.0.clear();
            self.0.shrink_to_fit();
            REPORTS.lock().unwrap().push(report);
        }
    }
    thread_local! {
        static HELD: std::cell::RefCell<Reporter> =
            const { std::cell::RefCell::new(Reporter(Vec::new())) };
    }
    let threads: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                HELD.with(|held| {
                    let mut held = held.borrow_mut();
                    for i in 0..(100 + t) {
                        held.0.push("z".repeat(i % 700));
                    }
                })
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let mut reports = std::mem::take(&mut *REPORTS.lock().unwrap());
    reports.sort();
    let mut expected: Vec<String> = (0..16)
        .map(|t| {
            let n = 100 + t;
            format!("{n} {}", (0..n).map(|i| i % 700).sum::<usize>())
        })
        .collect();
    expected.sort();
    assert_eq!(reports, expected);
}

#[test]
fn growing_and_aligned_collections_keep_their_contents() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..300_000u64 {
        v.push(i * 3);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3));
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).map(|i| i * 3).collect::<Vec<_>>());
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    #[repr(align(16384))]
    struct Big([u8; 100]);
    let pages: Vec<Box<Page>> = (0..50).map(|i| Box::new(Page([i as u8; 4096]))).collect();
    let big: Vec<Box<Big>> = (0..5).map(|i| Box::new(Big([i as u8; 100]))).collect();
    for (i, page) in pages.iter().enumerate() {
        assert_eq!((&**page as *const Page).addr() % 4096, 0);
        assert!(page.0.iter().all(|&b| b == i as u8));
    }
    for (i, b) in big.iter().enumerate() {
        assert_eq!((&**b as *const Big).addr() % 16384, 0);
        assert!(b.0.iter().all(|&x| x == i as u8));
    }
}

#[test]
fn forked_child_allocates_while_parent_threads_run() {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churners: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut state = t + 7;
                let mut keep: Vec<String> = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = next(&mut state);
                    keep.push("y".repeat((r % 2000) as usize));
                    if keep.len() > 64 {
                        keep.swap_remove((r % 64) as usize);
                    }
                }
            })
        })
        .collect();
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_millis(3));
        // SAFETY: the child only allocates, frees and exits with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: `alarm` is async-signal-safe; a child stuck on a lock dies of it.
            unsafe { libc::alarm(20) };
            let strings: Vec<String> = (0..2000).map(|i| format!("{i:>40}")).collect();
            let ok = strings
                .iter()
                .enumerate()
                .all(|(i, s)| s.trim() == i.to_string());
            // A thread of the child's own, started with `pthread_create`: the standard
            // library's spawn may find a lock of its own held by a thread of the parent
            // (another test starting threads), which is not the allocator's to fix.
            let ok = ok && child_thread_allocates();
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: `pid` is this process's child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert_eq!(status, 0, "child exited with status {status:#x}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churners.into_iter().for_each(|c| c.join().unwrap());
}

/// Starts a thread with `pthread_create` that allocates and frees, and joins it; whether its
/// allocations held their contents.
fn child_thread_allocates() -> bool {
    extern "C" fn body(_: *mut libc::c_void) -> *mut libc::c_void {
        let total: usize = (0..1000)
            .map(|n| vec![1u8; n].iter().map(|&b| usize::from(b)).sum::<usize>())
            .sum();
        let ok = total == 999 * 1000 / 2;
        std::ptr::null_mut::<libc::c_void>().wrapping_add(usize::from(ok))
    }
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `body` is a valid thread function that ignores its argument.
    let rc =
        unsafe { libc::pthread_create(&mut thread, std::ptr::null(), body, std::ptr::null_mut()) };
    if rc != 0 {
        return false;
    }
    let mut result = std::ptr::null_mut();
    // SAFETY: `thread` was started above and is joined once.
    unsafe { libc::pthread_join(thread, &mut result) };
    !result.is_null()
}
