//! Which CPU the calling thread runs on, cheaply.
//!
//! glibc (2.35 and later) registers a restartable-sequences area for every thread; the kernel
//! keeps its `cpu_id` field current across migrations, so reading it costs one load from the
//! thread's TCB. Where the area is absent (another libc, rseq disabled through
//! `GLIBC_TUNABLES`, another architecture) the `cpu_id` read is skipped or reports an
//! impossible value and `sched_getcpu` answers instead.
//!
//! The answer is a hint: the thread may be moved to another CPU right after reading it. The
//! callers are built for that (see the crate documentation on the transaction id).

/// The CPU the calling thread is running on, reduced modulo `cpus` (which must be nonzero).
#[inline]
pub(crate) fn current(cpus: usize) -> usize {
    let id = rseq_cpu_id();
    if id < cpus { id } else { fallback(cpus) }
}

#[cold]
fn fallback(cpus: usize) -> usize {
    rustix::thread::sched_getcpu() % cpus
}

#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
#[inline]
fn rseq_cpu_id() -> usize {
    use std::sync::atomic::{AtomicU32, Ordering};

    unsafe extern "C" {
        /// Offset of the thread's `struct rseq` from the thread pointer (glibc ABI).
        static __rseq_offset: isize;
        /// Size of the registered area; 0 when glibc did not register one.
        static __rseq_size: u32;
    }
    // SAFETY: both symbols are constant after program start-up (glibc sets them before any
    // user code runs) and are plain integers.
    let (offset, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size < 8 {
        return usize::MAX;
    }
    let thread_pointer: usize;
    // SAFETY: on x86-64 Linux `fs:0` holds the thread pointer (the TCB's self pointer); the
    // load has no side effect.
    unsafe {
        std::arch::asm!(
            "mov {}, qword ptr fs:0",
            out(reg) thread_pointer,
            options(nostack, readonly, preserves_flags)
        );
    }
    let area = thread_pointer.wrapping_add_signed(offset) as *mut u32;
    // SAFETY: with `__rseq_size >= 8`, glibc registered this thread's `struct rseq` at
    // `thread pointer + __rseq_offset`; `cpu_id` is its second 32-bit field, aligned, and
    // lives as long as the thread. The kernel writes it, so it is read atomically.
    let cpu_id = unsafe { AtomicU32::from_ptr(area.add(1)) }.load(Ordering::Relaxed);
    // A negative value (not registered, registration failed) becomes a huge one and falls
    // back.
    cpu_id as i32 as isize as usize
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64")))]
#[inline]
fn rseq_cpu_id() -> usize {
    usize::MAX
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cpu_is_within_range_and_agrees_with_the_kernel() {
        let cpus = slab::possible_cpus().max(1);
        for _ in 0..100 {
            let a = super::current(cpus);
            let b = rustix::thread::sched_getcpu() % cpus;
            let c = super::current(cpus);
            assert!(a < cpus);
            // The thread may migrate between the reads, but not back and forth every time.
            if a == c {
                assert_eq!(a, b, "rseq cpu_id and sched_getcpu disagree");
                return;
            }
        }
        panic!("the thread migrated on every one of 100 tries");
    }
}
