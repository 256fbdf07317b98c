//! The per-CPU `(freelist, tid)` pair and its double-width compare-and-swap.
//!
//! The pair is two 64-bit words, 16-byte aligned. Readers load each word on its own (two
//! plain atomic loads, which may come from two different states: a torn read). Writers
//! change both at once with one `lock cmpxchg16b`, which succeeds only if both words still
//! hold what the writer read. A torn read therefore never leads to a wrong write: its
//! compare fails and the writer retries.
//!
//! This is the only module with inline assembly. On targets other than x86-64 the pair is
//! written under a small spin lock instead (correct, but not lockless); readers are the same.

use std::sync::atomic::{AtomicU64, Ordering};

/// A free-list head (an object address, 0 for none) and a transaction id, updated together.
#[derive(Debug, Default)]
#[repr(C, align(16))]
pub(crate) struct FreelistTid {
    /// Address of the first free object, or 0.
    freelist: AtomicU64,
    /// Bumped by every successful update.
    tid: AtomicU64,
    #[cfg(not(target_arch = "x86_64"))]
    lock: std::sync::atomic::AtomicBool,
}

impl FreelistTid {
    /// A pair with an empty free list and transaction id `tid`.
    pub(crate) fn new(tid: u64) -> Self {
        Self {
            freelist: AtomicU64::new(0),
            tid: AtomicU64::new(tid),
            #[cfg(not(target_arch = "x86_64"))]
            lock: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The transaction id. Read it *before* the free list: a later update always changes it.
    #[inline]
    pub(crate) fn tid(&self) -> u64 {
        self.tid.load(Ordering::Acquire)
    }

    /// The free-list head.
    #[inline]
    pub(crate) fn freelist(&self) -> usize {
        self.freelist.load(Ordering::Acquire) as usize
    }

    /// Replaces `(freelist, tid)` with `(new_freelist, tid + 1)` if the pair still holds
    /// `(freelist, tid)`; a full barrier either way. Returns whether it did.
    #[inline]
    pub(crate) fn compare_exchange(&self, freelist: usize, tid: u64, new_freelist: usize) -> bool {
        self.cas(
            freelist as u64,
            tid,
            new_freelist as u64,
            tid.wrapping_add(1),
        )
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn cas(&self, old_lo: u64, old_hi: u64, new_lo: u64, new_hi: u64) -> bool {
        let ok: u8;
        let dst = self.freelist.as_ptr();
        // SAFETY:
        // - `dst` points to the 16 bytes of `freelist` and `tid`, adjacent (`repr(C)`) and
        //   16-byte aligned (`align(16)`), as `cmpxchg16b` requires; they live as long as
        //   `self`.
        // - Every x86-64 CPU since 2006 has `cmpxchg16b`; `FreelistTid` is only built after
        //   `supported()` confirmed it.
        // - `rbx` is reserved by the compiler, so the low word of the new value goes through
        //   a scratch register and is swapped in and out around the instruction; `rbx` is
        //   restored before the block ends. Every operand has a register named here: with
        //   `in(reg)`, the compiler once gave the address `rbx` itself, which the swap then
        //   overwrote.
        // - The `lock` prefix makes the compare and both stores one atomic step visible to
        //   every CPU, ordered as a full barrier, consistent with the atomic loads above.
        unsafe {
            std::arch::asm!(
                "xchg rsi, rbx",
                "lock cmpxchg16b xmmword ptr [rdi]",
                "sete r8b",
                "mov rbx, rsi",
                in("rdi") dst,
                inout("rsi") new_lo => _,
                out("r8b") ok,
                inout("rax") old_lo => _,
                inout("rdx") old_hi => _,
                in("rcx") new_hi,
                options(nostack),
            );
        }
        ok != 0
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn cas(&self, old_lo: u64, old_hi: u64, new_lo: u64, new_hi: u64) -> bool {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        let same = self.freelist.load(Ordering::Relaxed) == old_lo
            && self.tid.load(Ordering::Relaxed) == old_hi;
        if same {
            // Free list first, tid last, so a reader that sees the new tid sees the new list.
            self.freelist.store(new_lo, Ordering::Release);
            self.tid.store(new_hi, Ordering::Release);
        }
        self.lock.store(false, Ordering::Release);
        same
    }
}

/// Whether this CPU can run the double-width compare-and-swap.
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("cmpxchg16b")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn succeeds_only_on_both_words() {
        assert!(supported());
        let pair = FreelistTid::new(7);
        assert!(pair.compare_exchange(0, 7, 0x1000));
        assert_eq!((pair.freelist(), pair.tid()), (0x1000, 8));
        // Same list, stale tid: refused.
        assert!(!pair.compare_exchange(0x1000, 7, 0x2000));
        // Stale list, same tid: refused.
        assert!(!pair.compare_exchange(0, 8, 0x2000));
        assert_eq!((pair.freelist(), pair.tid()), (0x1000, 8));
        assert!(pair.compare_exchange(0x1000, 8, 0));
        assert_eq!((pair.freelist(), pair.tid()), (0, 9));
    }

    #[test]
    fn concurrent_increments_are_never_lost() {
        let pair = FreelistTid::new(0);
        let threads = 4;
        let per_thread = 20_000;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..per_thread {
                        loop {
                            let tid = pair.tid();
                            let value = pair.freelist();
                            if pair.compare_exchange(value, tid, value + 1) {
                                break;
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(pair.freelist(), threads * per_thread);
        assert_eq!(pair.tid(), (threads * per_thread) as u64);
    }
}
