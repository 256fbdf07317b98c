//! loom models of the concurrency-critical structures: the CPU slot's try-lock and the barn.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p sheaf --release loom` (use a separate
//! `CARGO_TARGET_DIR`: the flag rebuilds every dependency).

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use crate::barn::Barn;
use crate::sheaf::OwnedSheaf;
use crate::slot::CpuSlot;

/// Two threads race for one slot: whoever wins the try-lock has exclusive access (loom
/// checks every access to the guarded cell for a data race), the loser never waits, and
/// every successful critical section is counted exactly once.
#[test]
fn loom_slot_try_lock_is_exclusive_and_never_waits() {
    loom::model(|| {
        let slot = Arc::new(CpuSlot::new(0));
        let guarded = Arc::new(UnsafeCell::new(0u32));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let slot = slot.clone();
                let guarded = guarded.clone();
                thread::spawn(move || {
                    let mut entered = 0;
                    for _ in 0..2 {
                        if slot.try_lock() {
                            guarded.with_mut(|value| {
                                // SAFETY: the slot lock is held, so no other access exists.
                                unsafe { *value += 1 };
                            });
                            slot.unlock();
                            entered += 1;
                        }
                    }
                    entered
                })
            })
            .collect();
        let entered: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(slot.try_lock(), "lock left held");
        // SAFETY: all threads have joined and we hold the lock.
        let total = guarded.with(|value| unsafe { *value });
        assert_eq!(total, entered);
        assert!(
            entered >= 2,
            "the first attempt of the first thread to run always succeeds"
        );
        slot.unlock();
    });
}

fn sheaf(capacity: usize, full: bool) -> OwnedSheaf {
    let mut sheaf = OwnedSheaf::new(capacity);
    if full {
        for i in 0..capacity {
            let token = std::ptr::NonNull::new((0x1000 + 64 * i) as *mut u8).unwrap();
            sheaf.push(token).unwrap();
        }
    }
    sheaf
}

fn release(mut sheaf: OwnedSheaf) {
    sheaf.clear();
    sheaf.free();
}

/// Two CPUs trade sheaves at one barn at once: one exchanges an empty sheaf for a full one,
/// the other a full sheaf for an empty one. Limits hold in every interleaving, and no
/// sheaf is lost or duplicated.
#[test]
fn loom_barn_exchanges_keep_limits_and_sheaves() {
    loom::model(|| {
        let barn = Arc::new(Barn::new(1, 1));
        barn.put_full(sheaf(2, true)).unwrap();
        barn.put_empty(sheaf(2, false)).unwrap();
        let a = {
            let barn = barn.clone();
            thread::spawn(move || match barn.exchange_empty(sheaf(2, false)) {
                Ok((full, refused)) => {
                    assert!(full.is_full());
                    let mut out = vec![full];
                    out.extend(refused);
                    out
                }
                Err(empty) => vec![empty],
            })
        };
        let b = {
            let barn = barn.clone();
            thread::spawn(move || match barn.exchange_full(sheaf(2, true)) {
                Ok(empty) => empty.into_iter().collect(),
                Err(full) => vec![full],
            })
        };
        let mut held: Vec<OwnedSheaf> = a.join().unwrap();
        held.extend(b.join().unwrap());
        let snapshot = barn.snapshot();
        assert!(snapshot.full <= 1 && snapshot.empty <= 1, "{snapshot:?}");
        let in_barn = barn.drain();
        // Four sheaves existed: two in the barn, one brought by each thread.
        assert_eq!(held.len() + in_barn.len(), 4);
        for s in held.into_iter().chain(in_barn) {
            release(s);
        }
    });
}

/// A return racing a free path for the last full slot of the barn: exactly one wins.
#[test]
fn loom_barn_put_full_respects_the_limit_under_a_race() {
    loom::model(|| {
        let barn = Arc::new(Barn::new(1, 0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let barn = barn.clone();
                thread::spawn(move || barn.put_full(sheaf(1, true)).err())
            })
            .collect();
        let refused: Vec<OwnedSheaf> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(refused.len(), 1);
        assert_eq!(barn.snapshot().full, 1);
        for s in refused.into_iter().chain(barn.drain()) {
            release(s);
        }
    });
}
