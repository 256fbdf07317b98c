//! Which CPU the calling thread runs on, cheaply.
//!
//! glibc (2.35 and later) registers a restartable-sequences area for every thread and exports
//! its offset from the thread pointer as `__rseq_offset`, and its size as `__rseq_size` (0 when
//! registration is off or failed). The kernel keeps the area's `cpu_id` field (offset 4)
//! current on every migration, so reading the CPU is one load relative to the thread pointer,
//! several times cheaper than `sched_getcpu` (figures in `docs/decisions.md`).
//!
//! The symbols are looked up once with `dlsym`, so the crate still links and runs on a libc
//! without them; then, when glibc reports the area unregistered (`__rseq_size` 0, as under
//! valgrind), and on architectures other than x86-64, `sched_getcpu` is used.
//!
//! The value can be stale by the time it is used (the thread may migrate right after the
//! load). Callers use it to pick a per-CPU slot and must stay correct when the thread runs
//! elsewhere by then (a try-lock on the slot, or a transaction id checked by a
//! compare-and-swap): a stale CPU number costs locality, never correctness.
//!
//! Shared by every per-CPU design of the workspace, so all of them find their CPU the same
//! way and at the same cost.

use std::sync::OnceLock;

/// How the CPU number is read on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSource {
    /// The rseq area registered by glibc, at this offset from the thread pointer.
    Rseq {
        /// `__rseq_offset`.
        offset: isize,
    },
    /// The `sched_getcpu` system call (vDSO where available).
    SchedGetcpu,
}

/// The CPU source for this process, looked up once.
pub fn cpu_source() -> CpuSource {
    static SOURCE: OnceLock<CpuSource> = OnceLock::new();
    *SOURCE.get_or_init(detect)
}

/// glibc's `__rseq_offset` and `__rseq_size`, where this libc has them.
#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
fn glibc_area() -> Option<(isize, u32)> {
    use std::ffi::{c_char, c_void};

    unsafe extern "C" {
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    }
    // SAFETY: `dlsym` with RTLD_DEFAULT (null) and NUL-terminated names only looks symbols up.
    let (offset, size) = unsafe {
        (
            dlsym(std::ptr::null_mut(), c"__rseq_offset".as_ptr()),
            dlsym(std::ptr::null_mut(), c"__rseq_size".as_ptr()),
        )
    };
    if offset.is_null() || size.is_null() {
        return None;
    }
    // SAFETY: glibc defines `__rseq_offset` as a `ptrdiff_t` and `__rseq_size` as an
    // `unsigned int`, both constant after start-up.
    Some(unsafe { (*offset.cast::<isize>(), *size.cast::<u32>()) })
}

/// Whether glibc registered its rseq area with the kernel: `None` on a libc without one.
pub(crate) fn registered_by_glibc() -> Option<bool> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    return glibc_area().map(|(_, size)| size >= 8);
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
fn detect() -> CpuSource {
    let Some((offset, size)) = glibc_area() else {
        return CpuSource::SchedGetcpu;
    };
    // The area holds `cpu_id_start` and `cpu_id` (8 bytes) at least when registered.
    if size < 8 {
        if crate::rseq::stand_in::requested() {
            // SAFETY: glibc reserves its rseq area in every thread's control block at
            // `__rseq_offset` whether or not the kernel accepted it; unregistered, nobody but
            // this thread reads or writes it. Its `cpu_id_start` and `cpu_id` (bytes 0 and 4)
            // receive the current CPU.
            unsafe {
                let cpu = sched_getcpu() as u32;
                std::arch::asm!(
                    "mov dword ptr fs:[{offset}], {cpu:e}",
                    "mov dword ptr fs:[{offset} + 4], {cpu:e}",
                    offset = in(reg) offset,
                    cpu = in(reg) cpu,
                    options(nostack, preserves_flags)
                );
            }
            return CpuSource::Rseq { offset };
        }
        return CpuSource::SchedGetcpu;
    }
    CpuSource::Rseq { offset }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
fn detect() -> CpuSource {
    CpuSource::SchedGetcpu
}

/// The CPU the calling thread runs on (possibly stale at once, see the module docs).
#[inline(always)]
pub fn current_cpu(source: CpuSource) -> usize {
    match source {
        CpuSource::Rseq { offset } => match rseq_cpu(offset) {
            Some(cpu) => cpu as usize,
            None => sched_getcpu(),
        },
        CpuSource::SchedGetcpu => sched_getcpu(),
    }
}

/// The `cpu_id` field of the calling thread's rseq area, at `offset` from the thread
/// pointer (from [`CpuSource::Rseq`]); `None` when this thread's registration failed (the
/// kernel leaves a negative marker: RSEQ_CPU_ID_UNINITIALIZED or
/// RSEQ_CPU_ID_REGISTRATION_FAILED), and on targets without the area.
#[inline(always)]
pub fn rseq_cpu(offset: isize) -> Option<u32> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    {
        let cpu: u32;
        // SAFETY: `offset` is glibc's `__rseq_offset` (the caller got it from
        // `CpuSource::Rseq`, which requires `__rseq_size` to be non-zero): this thread's rseq
        // area lies at that offset from the thread pointer, the base of `fs`, and `cpu_id`
        // is its `u32` at byte 4. The kernel writes it asynchronously; one plain load reads
        // it whole.
        unsafe {
            std::arch::asm!(
                "mov {cpu:e}, dword ptr fs:[{offset} + 4]",
                offset = in(reg) offset,
                cpu = out(reg) cpu,
                options(nostack, readonly, preserves_flags)
            );
        }
        if (cpu as i32) < 0 { None } else { Some(cpu) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
    {
        let _ = offset;
        None
    }
}

/// The calling thread's CPU as an index below `cpus` (non-zero): the CPU itself when it is
/// below, else `sched_getcpu() % cpus` (a machine with more CPUs than the caller sized for).
#[inline(always)]
pub fn current_cpu_below(source: CpuSource, cpus: usize) -> usize {
    let cpu = current_cpu(source);
    if cpu < cpus { cpu } else { wrap_cpu(cpus) }
}

#[cold]
fn wrap_cpu(cpus: usize) -> usize {
    sched_getcpu() % cpus
}

/// `sched_getcpu` through the C library where it is glibc: glibc reads its own rseq area or
/// the vDSO, and stays correct under valgrind, whose vDSO rustix cannot parse.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn sched_getcpu() -> usize {
    unsafe extern "C" {
        fn sched_getcpu() -> std::ffi::c_int;
    }
    // SAFETY: `sched_getcpu` takes no argument and only reads the current CPU.
    let cpu = unsafe { sched_getcpu() };
    usize::try_from(cpu).unwrap_or(0)
}

/// `sched_getcpu` through rustix elsewhere.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn sched_getcpu() -> usize {
    rustix::thread::sched_getcpu()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rseq_agrees_with_sched_getcpu() {
        let source = cpu_source();
        if crate::rseq::tests::rseq_required() {
            assert!(
                matches!(source, CpuSource::Rseq { .. }),
                "SHEAF_REQUIRE_RSEQ=1 but the CPU is read with {source:?}"
            );
        } else if source == CpuSource::SchedGetcpu {
            eprintln!("note: no rseq area here; only sched_getcpu is compared with itself");
        }
        let cpus = crate::possible_cpus();
        // The two reads may straddle a migration; most of many must agree.
        let agree = (0..1000)
            .filter(|_| {
                let a = current_cpu(source);
                let b = current_cpu(CpuSource::SchedGetcpu);
                assert!(a < cpus.max(1024), "cpu {a}");
                a == b
            })
            .count();
        assert!(agree > 900, "{source:?}: only {agree} of 1000 reads agreed");
    }
}
