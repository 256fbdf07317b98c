//! A per-CPU try-lock taken without a locked instruction: a restartable sequence.
//!
//! A per-CPU structure guarded by a try-lock costs one atomic compare-exchange per operation,
//! more than the rest of an allocation (`docs/decisions.md` has the figure). With restartable
//! sequences the kernel makes a short instruction sequence atomic *with respect to the CPU*:
//! if the thread is preempted, migrated or interrupted by a signal before the sequence's
//! final store (its commit), the kernel moves it to an abort handler instead of resuming it.
//! A thread running on CPU `c` can therefore take CPU `c`'s lock with a plain load and a
//! plain store:
//!
//! ```text
//! start:   if rseq.cpu_id != c           -> moved   (the caller re-reads its CPU)
//!          if lock != FREE               -> busy
//!          lock = LOCAL                     (commit)
//! abort:                                 -> aborted (the caller retries)
//! ```
//!
//! Two threads on one CPU never interleave inside the sequence (one of them would have been
//! preempted in it, and aborted), so at most one of them commits while the lock is free. The
//! holder may then be preempted or migrate while it holds the lock: that is an ordinary lock,
//! released with a plain release store, and other threads find it busy.
//!
//! # Taking another CPU's lock
//!
//! A thread that is not on CPU `c` (draining every CPU's slot, or a thread whose own rseq
//! registration failed) cannot use the sequence for `c`. It takes the lock with a
//! compare-exchange `FREE -> REMOTE`, but a thread on `c` may have loaded `FREE` just before
//! and be about to commit `LOCAL` over it. So the remote locker then runs
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)` on CPU `c`: the kernel aborts any
//! sequence in progress there, and every sequence started after the call sees `REMOTE`.
//! Reading the lock after the barrier tells the outcome: still `REMOTE`, it is held;
//! `LOCAL` or `FREE` (a sequence committed over it, and perhaps has released it since), it
//! is not, and the caller tries again. Remote lockers of one lock must be serialised by the
//! caller (only one may write `REMOTE` at a time), or the reading would be ambiguous.
//! A remote lock costs a system call and an interrupt: it is for slow paths only.
//!
//! # The descriptor pointer
//!
//! A sequence starts by storing the address of its descriptor (a `struct rseq_cs` in this
//! crate's `__rseq_cs` section) in the thread's `rseq_cs` field, and the kernel reads that
//! descriptor whenever it preempts the thread or delivers it a signal, until the field is
//! null again. The kernel clears it itself only at such an event, so a pointer left behind
//! after the sequence stays until the thread's next preemption. If this code is part of a
//! shared object that is unloaded (`dlclose`) first, the kernel then reads an unmapped or
//! reused descriptor and kills the thread with `SIGSEGV`. No thread can clear another's
//! field, so each sequence clears its own on every exit (taken, busy, moved, and after an
//! abort, where the kernel has cleared it already): one store to a line the sequence has
//! just written. A thread preempted between the commit and that store is outside the
//! sequence, so the kernel clears the field then.
//!
//! # When the barrier fails
//!
//! The process registered for the rseq membarrier when [`support`] was first asked, so the
//! barrier is not expected to fail; it still can (a seccomp filter installed later, a kernel
//! short of memory). A failed barrier never panics, and never lets a remote locker believe it
//! holds a lock that a sequence may still commit over. The remote locker then, in turn:
//!
//! 1. registers again and aborts sequences on every CPU (`MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ`
//!    without a CPU);
//! 2. runs on CPU `c` itself for a moment (its affinity set to `c` alone, then restored): a
//!    thread that was inside a sequence on `c` has been preempted for it to run there, and a
//!    preempted sequence is aborted, so this is the same fence without the system call;
//! 3. if neither works (`c` is outside the caller's allowed CPUs, or affinity cannot be
//!    set), gives the lock back (`REMOTE -> FREE` by compare-exchange: if a sequence committed
//!    `LOCAL` over it meanwhile, the lock is that thread's) and reports it busy, as if a
//!    holder had it. A caller that tries once then takes its slow path without the lock;
//!    [`lock_remote`] keeps trying, yielding between attempts.
//!
//! # Support
//!
//! [`support`] finds out once per process whether the sequence can be used: x86-64 Linux,
//! glibc's rseq area registered (`__rseq_size` non-zero; not under valgrind, nor with the
//! `glibc.pthread.rseq=0` tunable), and the kernel's rseq membarrier (Linux 5.10), which the
//! process registers for. Otherwise callers keep the compare-exchange lock.
//!
//! Memory ordering: the sequence is x86-64 only, where every load has acquire and every
//! store release semantics (TSO), so the plain load that finds the lock free orders the
//! holder's accesses after the previous holder's release store, as a compare-exchange would.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The lock is free.
pub const FREE: u8 = 0;
/// Held by a thread that took it on the lock's CPU (by the sequence, or by a
/// compare-exchange where the sequence is not in use).
pub const LOCAL: u8 = 1;
/// Held by a thread that took it from elsewhere ([`lock_remote`]).
pub const REMOTE: u8 = 2;
/// In a child process after `fork`: held at the fork by a thread that may not exist here (see
/// [`crate::fork`]). Busy to every attempt; a path that would wait for it skips it instead,
/// and only its holder (the forking thread, should it have been the one) may release it.
pub const ABANDONED: u8 = 3;

/// The outcome of one attempt at [`try_lock_local`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalOutcome {
    /// The lock is now held by the caller.
    Locked,
    /// Somebody holds the lock.
    Busy,
    /// The caller does not run on the lock's CPU (any more): read the CPU again.
    Moved,
    /// The kernel aborted the sequence (preemption, migration or a signal): try again.
    Aborted,
}

/// Whether this process takes per-CPU locks with restartable sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Yes: glibc's rseq area is at this offset from the thread pointer.
    Rseq {
        /// `__rseq_offset`.
        offset: isize,
    },
    /// No, for this reason: callers use a compare-exchange.
    Unsupported(&'static str),
}

impl Support {
    /// A few words on how per-CPU locks are taken in this process.
    pub fn describe(self) -> &'static str {
        match self {
            Support::Rseq { .. } => "rseq critical section",
            Support::Unsupported(_) => "atomic compare-exchange",
        }
    }
}

/// Whether restartable sequences can be used here, found out (and the process registered
/// for the rseq membarrier) on the first call.
pub fn support() -> Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    *SUPPORT.get_or_init(detect)
}

fn detect() -> Support {
    if !cfg!(all(
        target_arch = "x86_64",
        target_os = "linux",
        target_env = "gnu"
    )) {
        return Support::Unsupported("restartable sequences are implemented for x86-64 Linux only");
    }
    if std::env::var_os("SHEAF_RSEQ").is_some_and(|value| value == "0") {
        return Support::Unsupported("switched off with SHEAF_RSEQ=0");
    }
    let crate::cpu::CpuSource::Rseq { offset } = crate::cpu::cpu_source() else {
        return Support::Unsupported(
            "glibc has not registered an rseq area (valgrind, or glibc.pthread.rseq=0)",
        );
    };
    if stand_in::requested() {
        // The kernel knows nothing of the area: no sequence is ever aborted, and no remote
        // lock is needed by a single thread.
        return Support::Rseq { offset };
    }
    use rustix::thread::{MembarrierCommand, membarrier, membarrier_query};
    if !membarrier_query().contains_command(MembarrierCommand::PrivateExpeditedRseq) {
        return Support::Unsupported("the kernel has no rseq membarrier (Linux 5.10 or later)");
    }
    if membarrier(MembarrierCommand::RegisterPrivateExpeditedRseq).is_err() {
        return Support::Unsupported("registering for the rseq membarrier failed");
    }
    Support::Rseq { offset }
}

/// A stand-in rseq area for counting instructions under valgrind, which registers none.
pub mod stand_in {
    use std::sync::atomic::{AtomicBool, Ordering};

    static REQUESTED: AtomicBool = AtomicBool::new(false);

    /// Makes this process run the restartable-sequence paths on the calling thread even where
    /// glibc has not registered an rseq area (valgrind): the thread's unregistered area gets
    /// its current CPU number written in once, and [`super::support`] reports sequences as
    /// usable. The kernel then neither updates the CPU number nor aborts a sequence, so the
    /// paths run exactly as on an uninterrupted CPU, which is what an instruction count
    /// wants. Returns whether the stand-in is in use: `false` where glibc did register an area
    /// (the real one serves), and where the CPU source or the support was already decided.
    ///
    /// # Safety
    ///
    /// - Only for single-threaded measurements: no thread other than the caller may use a
    ///   per-CPU structure of this process afterwards (nothing would keep two threads'
    ///   sequences apart), and the caller must stay on its CPU (pin it first).
    /// - Called before anything in the process has asked for the CPU source or the support.
    #[doc(hidden)]
    pub unsafe fn install() -> bool {
        REQUESTED.store(true, Ordering::Relaxed);
        matches!(crate::cpu::cpu_source(), crate::cpu::CpuSource::Rseq { .. })
            && matches!(super::support(), super::Support::Rseq { .. })
            && crate::cpu::registered_by_glibc() == Some(false)
    }

    pub(crate) fn requested() -> bool {
        REQUESTED.load(Ordering::Relaxed)
    }
}

/// The count behind [`aborts`]. Sequences built on this scheme elsewhere (the allocation
/// fast paths of `sheaf`) add to it from their abort handlers, so that it covers every
/// sequence of the process.
pub static ABORTS: AtomicU64 = AtomicU64::new(0);

/// How many sequences the kernel has aborted in this process so far (each then retried).
pub fn aborts() -> u64 {
    ABORTS.load(Ordering::Relaxed)
}

/// The assembly that opens a restartable sequence, for `asm!` templates (here and in the
/// allocation fast paths of `sheaf`): the sequence's descriptor in the `__rseq_cs` section
/// (start at label `4`, commit just before label `5`, abort handler at label `6`, which the
/// caller must precede with glibc's signature `.long 0x53053053`), then the store of its
/// address into the thread's `rseq_cs` field through the scratch register operand named by
/// the argument, and label `4`. The template must have an `offset` operand holding
/// `__rseq_offset`, and must set `rseq_cs` back to null on every exit (module docs, "The
/// descriptor pointer").
#[doc(hidden)]
#[macro_export]
macro_rules! rseq_sequence_start {
    ($scratch:literal) => {
        concat!(
            ".pushsection __rseq_cs, \"aw\"\n",
            ".balign 32\n",
            "3:\n",
            ".long 0, 0\n",
            ".quad 4f, (5f - 4f), 6f\n",
            ".popsection\n",
            "lea {",
            $scratch,
            "}, [rip + 3b]\n",
            "mov qword ptr fs:[{offset} + 8], {",
            $scratch,
            "}\n",
            "4:",
        )
    };
}

/// One attempt to take `lock`, which belongs to CPU `cpu`, from that CPU.
///
/// # Safety
///
/// - [`support`] returned `Support::Rseq { offset }` (this `offset`).
/// - `lock` is only ever taken through this function and [`try_lock_remote`] (or
///   [`lock_remote`]), and released by its holder with a release store of [`FREE`].
#[inline(always)]
pub unsafe fn try_lock_local(lock: &AtomicU8, cpu: u32, offset: isize) -> LocalOutcome {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    {
        let outcome: u32;
        // SAFETY: a restartable sequence on glibc's rseq area, which `support` found
        // registered (every thread glibc creates registers one at this offset from the
        // thread pointer, `fs`). The descriptor in `__rseq_cs` names the sequence
        // (`4` to `5`) and its abort handler (`6`), preceded by glibc's signature
        // 0x53053053, which the kernel checks before jumping there; the abort handler is
        // outside the sequence. Inside it, the `cpu_id` check comes first and the store to
        // `lock` is the last instruction, so an aborted sequence has written nothing but
        // `rseq_cs`, which every exit (`9`) sets back to null (module docs, "The descriptor
        // pointer"). `lock` is a valid byte (a live `AtomicU8`). Labels are numeric (the asm
        // may be inlined many times) and avoid 0 and 1, which Intel syntax would read as
        // binary numbers.
        unsafe {
            std::arch::asm!(
                crate::rseq_sequence_start!("tmp"),
                "cmp dword ptr fs:[{offset} + 4], {cpu:e}",
                "jne 7f",
                "cmp byte ptr [{lock}], 0",
                "jne 8f",
                "mov byte ptr [{lock}], 1",
                "5:",
                "xor {out:e}, {out:e}",
                "jmp 9f",
                ".long 0x53053053",
                "6:",
                "mov {out:e}, 3",
                "jmp 9f",
                "7:",
                "mov {out:e}, 2",
                "jmp 9f",
                "8:",
                "mov {out:e}, 1",
                "9:",
                "mov qword ptr fs:[{offset} + 8], 0",
                offset = in(reg) offset,
                cpu = in(reg) cpu,
                lock = in(reg) lock.as_ptr(),
                tmp = out(reg) _,
                out = out(reg) outcome,
                options(nostack),
            );
        }
        match outcome {
            0 => LocalOutcome::Locked,
            1 => LocalOutcome::Busy,
            2 => LocalOutcome::Moved,
            _ => {
                ABORTS.fetch_add(1, Ordering::Relaxed);
                LocalOutcome::Aborted
            }
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
    {
        let _ = (lock, cpu, offset);
        unreachable!("`support` never reports rseq on this target")
    }
}

/// Remote lockers of every lock in the process, one at a time (see the module docs: a
/// `REMOTE` read back after the barrier must be the reader's own). Remote locking is rare.
pub(crate) static REMOTE_LOCKERS: Mutex<()> = Mutex::new(());

/// One attempt to take `lock`, which belongs to CPU `cpu`, from anywhere: `false` when it
/// is held (by this CPU's thread or another remote holder). Waits for other remote lockers
/// of any lock, and costs a system call when the lock is free.
///
/// # Safety
///
/// - As for [`try_lock_local`].
pub unsafe fn try_lock_remote(lock: &AtomicU8, cpu: u32) -> bool {
    let _serial = REMOTE_LOCKERS.lock().unwrap_or_else(|p| p.into_inner());
    if lock
        .compare_exchange(FREE, REMOTE, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    if !fence_cpu(cpu) {
        // No way to tell whether a sequence on `cpu` read `FREE` before the exchange and is
        // about to commit: give the lock back (module docs, "When the barrier fails").
        let _ = lock.compare_exchange(REMOTE, FREE, Ordering::Release, Ordering::Relaxed);
        return false;
    }
    // Still `REMOTE`: no sequence committed over it, and none can now. Otherwise a thread
    // on `cpu` holds the lock (or held it and has released it since).
    lock.load(Ordering::Acquire) == REMOTE
}

/// [`try_lock_remote`] for a lock that sequences only *read*: they check it is free and
/// never take it, so nothing but a compare-exchange ever writes it. Then no sequence can
/// commit `LOCAL` over `REMOTE`, the mark needs no reading back, and remote lockers need no
/// serialising: this one does not wait for other remote lockers (one preempted inside its
/// membarrier holds up only lockers of its own lock). `false` when the lock is held, or when
/// no fence worked (the lock is given back).
///
/// # Safety
///
/// - As for [`try_lock_local`], and no sequence ever stores to `lock`.
pub unsafe fn try_lock_remote_read_only(lock: &AtomicU8, cpu: u32) -> bool {
    if lock
        .compare_exchange(FREE, REMOTE, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    if !fence_cpu(cpu) {
        // A sequence on `cpu` may have read `FREE` before the exchange and still commit.
        lock.store(FREE, Ordering::Release);
        return false;
    }
    true
}

/// [`try_lock_remote_read_only`] for a lock that sequences on any CPU may check (a
/// per-thread slot's, whose owner may run anywhere): the fence reaches every CPU. `false`
/// when the lock is held, or when no fence worked (the lock is given back).
///
/// # Safety
///
/// - As for [`try_lock_remote_read_only`].
pub unsafe fn try_lock_remote_read_only_any(lock: &AtomicU8) -> bool {
    if lock
        .compare_exchange(FREE, REMOTE, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    if !fence_all() {
        // A sequence somewhere may have read `FREE` before the exchange and still commit.
        lock.store(FREE, Ordering::Release);
        return false;
    }
    true
}

/// [`fence_cpu`] for every CPU at once.
fn fence_all() -> bool {
    use rustix::thread::{MembarrierCommand, membarrier};
    fence(
        || membarrier(MembarrierCommand::PrivateExpeditedRseq).is_ok(),
        || (0..crate::possible_cpus().max(1)).all(run_on_cpu),
    )
}

/// A fence by `membarrier` (`first`), else by registering again and fencing every CPU, else
/// by `moving` the calling thread onto the CPUs concerned; counts each fallback.
fn fence(first: impl FnOnce() -> bool, moving: impl FnOnce() -> bool) -> bool {
    use rustix::thread::{MembarrierCommand, membarrier};
    let forced = failure::forced();
    if forced == failure::NONE {
        if first() {
            return true;
        }
        FENCE_FALLBACKS.fetch_add(1, Ordering::Relaxed);
        // A process forked from the registered one, should the registration not have been
        // inherited: register again, and abort sequences on every CPU.
        let _ = membarrier(MembarrierCommand::RegisterPrivateExpeditedRseq);
        if membarrier(MembarrierCommand::PrivateExpeditedRseq).is_ok() {
            return true;
        }
    } else {
        FENCE_FALLBACKS.fetch_add(1, Ordering::Relaxed);
    }
    forced != failure::EVERYTHING && moving()
}

static FENCE_FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// How many remote locks in this process found the rseq membarrier failing and fell back
/// (module docs, "When the barrier fails"); 0 on a healthy system.
pub fn fence_fallbacks() -> u64 {
    FENCE_FALLBACKS.load(Ordering::Relaxed)
}

/// Ensures no restartable sequence that started on `cpu` before the call can still commit,
/// and that every one started after it sees stores made before it. `false` when no means of
/// doing so worked.
fn fence_cpu(cpu: u32) -> bool {
    use rustix::thread::{Cpuid, MembarrierCommand, membarrier_cpu};
    fence(
        || {
            // SAFETY: `cpu` is the number of a CPU of this machine (the lock's own).
            let target = unsafe { Cpuid::from_raw(cpu) };
            // The kernel answers 0 for a CPU that is offline (it runs no sequence).
            membarrier_cpu(MembarrierCommand::PrivateExpeditedRseq, target).is_ok()
        },
        || run_on_cpu(cpu as usize),
    )
}

/// Moves the calling thread to `cpu` and back: `true` if it ran there. Any thread that was
/// inside a sequence on `cpu` was preempted for this one to run, which aborts its sequence.
fn run_on_cpu(cpu: usize) -> bool {
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
    if cpu >= CpuSet::MAX_CPU {
        return false;
    }
    let Ok(allowed) = sched_getaffinity(None) else {
        return false;
    };
    let mut only = CpuSet::new();
    only.set(cpu);
    let arrived = sched_setaffinity(None, &only).is_ok()
        && crate::cpu::current_cpu(crate::cpu::CpuSource::SchedGetcpu) == cpu;
    // Restoring the caller's own mask can only fail if it has become invalid meanwhile
    // (its CPUs all went offline); the kernel then keeps the thread runnable elsewhere.
    let _ = sched_setaffinity(None, &allowed);
    arrived
}

/// Test-only: make this thread's barrier fail, to exercise the fallbacks.
mod failure {
    /// No forced failure.
    pub(super) const NONE: u8 = 0;
    /// Both membarrier commands fail.
    #[cfg(test)]
    pub(super) const MEMBARRIER: u8 = 1;
    /// The membarrier commands and the move to the CPU fail.
    pub(super) const EVERYTHING: u8 = 2;

    #[cfg(test)]
    thread_local! {
        pub(super) static FORCED: std::cell::Cell<u8> = const { std::cell::Cell::new(NONE) };
    }

    #[inline]
    pub(super) fn forced() -> u8 {
        #[cfg(test)]
        return FORCED.with(std::cell::Cell::get);
        #[cfg(not(test))]
        NONE
    }
}

/// Takes `lock`, which belongs to CPU `cpu`, from anywhere, yielding while it is held.
///
/// Where the rseq membarrier fails and the caller may not run on `cpu` either (module docs,
/// "When the barrier fails"), every attempt reports the lock busy, so this waits until one of
/// them works again; it never takes the lock unfenced.
///
/// # Safety
///
/// - As for [`try_lock_local`].
pub unsafe fn lock_remote(lock: &AtomicU8, cpu: u32) {
    // SAFETY: forwarded.
    while !unsafe { try_lock_remote(lock, cpu) } {
        std::thread::yield_now();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cpu;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    /// Whether the environment says restartable sequences must work here
    /// (`SHEAF_REQUIRE_RSEQ=1`, set by CI): then a test that needs them fails instead of
    /// skipping.
    pub(crate) fn rseq_required() -> bool {
        std::env::var_os("SHEAF_REQUIRE_RSEQ").is_some_and(|value| value == "1")
    }

    /// The rseq offset, with this thread's area registered; `None` (after a note) where
    /// sequences are unsupported and not required.
    fn rseq_offset() -> Option<isize> {
        let why = match support() {
            Support::Rseq { offset } if cpu::rseq_cpu(offset).is_some() => return Some(offset),
            Support::Rseq { .. } => "this thread's rseq area is not registered",
            Support::Unsupported(why) => why,
        };
        assert!(
            !rseq_required(),
            "SHEAF_REQUIRE_RSEQ=1 but restartable sequences are unusable: {why}"
        );
        eprintln!("skipped: restartable sequences unsupported here ({why})");
        None
    }

    #[test]
    fn rseq_is_usable_where_required() {
        // Fails under SHEAF_REQUIRE_RSEQ=1 when unsupported, skips with a note otherwise.
        if let Some(offset) = rseq_offset() {
            assert!(cpu::rseq_cpu(offset).is_some());
            assert_eq!(cpu::cpu_source(), cpu::CpuSource::Rseq { offset });
            // Every new thread is registered too.
            let registered = std::thread::spawn(move || cpu::rseq_cpu(offset).is_some());
            assert!(registered.join().unwrap());
        }
    }

    /// This thread's `rseq_cs` field.
    fn rseq_cs_field(offset: isize) -> u64 {
        let value: u64;
        // SAFETY: `offset` came from `support`: this thread's rseq area lies at that offset
        // from `fs`, and `rseq_cs` is its `u64` at byte 8.
        unsafe {
            std::arch::asm!(
                "mov {value}, qword ptr fs:[{offset} + 8]",
                offset = in(reg) offset,
                value = out(reg) value,
                options(nostack, readonly, preserves_flags)
            );
        }
        value
    }

    /// A lock that sequences only read is taken from afar without waiting for the other
    /// remote lockers of the process: with their mutex held by another thread (a remote locker
    /// preempted inside its membarrier), it is still taken at once, and excludes the next
    /// taker until released.
    #[test]
    fn a_read_only_lock_is_taken_from_afar_past_other_remote_lockers() {
        if rseq_offset().is_none() {
            return;
        }
        let lock = AtomicU8::new(FREE);
        let cpu = cpu::current_cpu(cpu::cpu_source()) as u32;
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            s.spawn(move || {
                let _serial = REMOTE_LOCKERS.lock().unwrap_or_else(|p| p.into_inner());
                held_tx.send(()).unwrap();
                let _ = done_rx.recv_timeout(std::time::Duration::from_secs(20));
            });
            held_rx.recv().unwrap();
            let (taken_tx, taken_rx) = std::sync::mpsc::channel();
            let lock = &lock;
            s.spawn(move || {
                // SAFETY: a test lock that no sequence touches.
                let taken = unsafe { try_lock_remote_read_only(lock, cpu) };
                taken_tx.send(taken).unwrap();
            });
            let taken = taken_rx.recv_timeout(std::time::Duration::from_secs(5));
            done_tx.send(()).unwrap();
            assert_eq!(
                taken,
                Ok(true),
                "waited for another remote locker, or failed"
            );
        });
        assert_eq!(lock.load(Ordering::Relaxed), REMOTE);
        // SAFETY: as above.
        let again = unsafe { try_lock_remote_read_only(&lock, cpu) };
        assert!(!again, "taken twice");
        lock.store(FREE, Ordering::Release);
        // SAFETY: as above.
        assert!(unsafe { try_lock_remote_read_only(&lock, cpu) });
    }

    /// No sequence leaves its descriptor pointer behind, whatever its outcome: code that may
    /// be unloaded must not stay named there.
    #[test]
    fn every_outcome_clears_the_descriptor_pointer() {
        let Some(offset) = rseq_offset() else { return };
        let locks: Vec<AtomicU8> = (0..crate::possible_cpus())
            .map(|_| AtomicU8::new(FREE))
            .collect();
        let mut seen = [false; 4];
        for round in 0..10_000 {
            let cpu = cpu::current_cpu(cpu::cpu_source());
            // Every other round on a CPU that is not this one (`Moved`), else held (`Busy`)
            // or free.
            let target = if round % 3 == 0 {
                (cpu + 1) % locks.len()
            } else {
                cpu
            };
            // SAFETY: these locks are only taken here and released with a plain store.
            let attempt = unsafe { try_lock_local(&locks[target], target as u32, offset) };
            assert_eq!(rseq_cs_field(offset), 0, "{attempt:?} left rseq_cs set");
            seen[attempt as usize] = true;
            if attempt == LocalOutcome::Locked && round % 2 == 0 {
                locks[target].store(FREE, Ordering::Release);
            }
        }
        assert!(seen[LocalOutcome::Locked as usize] && seen[LocalOutcome::Busy as usize]);
    }

    /// A barrier that fails on every command makes a remote lock report the lock busy and
    /// leave it free, instead of panicking or taking it unfenced.
    #[test]
    fn a_failing_barrier_gives_the_lock_back() {
        let Some(_) = rseq_offset() else { return };
        let lock = AtomicU8::new(FREE);
        let before = fence_fallbacks();
        failure::FORCED.with(|forced| forced.set(failure::EVERYTHING));
        // SAFETY: this lock is only taken through this module.
        let taken = unsafe { try_lock_remote(&lock, 0) };
        failure::FORCED.with(|forced| forced.set(failure::NONE));
        assert!(!taken);
        assert_eq!(lock.load(Ordering::Relaxed), FREE);
        assert!(fence_fallbacks() > before);
        // With only the membarrier failing, the move to the CPU fences it (a CPU this thread
        // may run on: the one it runs on).
        let here = cpu::current_cpu(cpu::CpuSource::SchedGetcpu) as u32;
        failure::FORCED.with(|forced| forced.set(failure::MEMBARRIER));
        // SAFETY: as above.
        let taken = unsafe { try_lock_remote(&lock, here) };
        failure::FORCED.with(|forced| forced.set(failure::NONE));
        assert!(taken, "CPU {here} is in this thread's allowed CPUs");
        assert_eq!(lock.load(Ordering::Relaxed), REMOTE);
    }

    /// Takes the current CPU's lock, retrying across migrations and aborts.
    fn lock_here(locks: &[AtomicU8], offset: isize) -> Option<usize> {
        loop {
            let cpu = cpu::current_cpu(cpu::cpu_source());
            // SAFETY: `offset` came from `support`; these locks are only taken here, by
            // `lock_remote` and released with a plain store.
            match unsafe { try_lock_local(&locks[cpu], cpu as u32, offset) } {
                LocalOutcome::Locked => return Some(cpu),
                LocalOutcome::Busy => return None,
                LocalOutcome::Moved | LocalOutcome::Aborted => continue,
            }
        }
    }

    #[test]
    fn a_free_lock_is_taken_and_a_held_one_is_busy() {
        let Some(offset) = rseq_offset() else { return };
        let locks: Vec<AtomicU8> = (0..crate::possible_cpus())
            .map(|_| AtomicU8::new(FREE))
            .collect();
        let cpu = lock_here(&locks, offset).expect("a free lock");
        assert_eq!(locks[cpu].load(Ordering::Relaxed), LOCAL);
        // Held: the next attempt on the same CPU is busy (unless we migrated meanwhile).
        let again = cpu::current_cpu(cpu::cpu_source());
        if again == cpu {
            // SAFETY: as in `lock_here`.
            let attempt = unsafe { try_lock_local(&locks[cpu], cpu as u32, offset) };
            assert!(
                matches!(attempt, LocalOutcome::Busy | LocalOutcome::Aborted),
                "{attempt:?}"
            );
        }
        // The wrong CPU is refused before the lock is looked at.
        let other = (cpu + 1) % locks.len().max(2);
        if other < locks.len() && other != cpu::current_cpu(cpu::cpu_source()) {
            // SAFETY: as above.
            let attempt = unsafe { try_lock_local(&locks[other], other as u32, offset) };
            assert!(
                matches!(attempt, LocalOutcome::Moved | LocalOutcome::Aborted),
                "{attempt:?}"
            );
            assert_eq!(locks[other].load(Ordering::Relaxed), FREE);
        }
        locks[cpu].store(FREE, Ordering::Release);
    }

    extern "C" fn ignore_signal(_: libc::c_int) {}

    /// A thread that does nothing but take and release its CPU's lock is interrupted by
    /// signals: the kernel must abort some sequences (a signal delivered inside one) and run
    /// the abort handler (a wrong descriptor or signature would kill the process instead),
    /// and the lock must come out free every time.
    #[test]
    fn signals_inside_the_sequence_abort_it() {
        let Some(offset) = rseq_offset() else { return };
        // SAFETY: installs a handler that does nothing for SIGURG (ignored by default, so a
        // stray one elsewhere is harmless); `sigaction` is given a zeroed, valid struct.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            assert_eq!(
                libc::sigaction(libc::SIGURG, &action, std::ptr::null_mut()),
                0
            );
        }
        let locks: Arc<Vec<AtomicU8>> = Arc::new(
            (0..crate::possible_cpus())
                .map(|_| AtomicU8::new(FREE))
                .collect(),
        );
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let before = aborts();
        let worker = {
            let (locks, done) = (locks.clone(), done.clone());
            std::thread::spawn(move || {
                let mut taken = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let cpu = lock_here(&locks, offset).expect("only this thread locks");
                    locks[cpu].store(FREE, Ordering::Release);
                    taken += 1;
                }
                taken
            })
        };
        use std::os::unix::thread::JoinHandleExt;
        let thread = worker.as_pthread_t();
        for _ in 0..20_000 {
            // SAFETY: the worker is alive until `done` is set below.
            unsafe { libc::pthread_kill(thread, libc::SIGURG) };
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
        done.store(true, Ordering::Relaxed);
        let taken = worker.join().unwrap();
        let aborted = aborts() - before;
        eprintln!("{taken} locks taken, {aborted} sequences aborted by 20000 signals");
        assert!(
            aborted > 0,
            "no sequence was aborted: is the descriptor registered?"
        );
        assert!(
            locks
                .iter()
                .all(|lock| lock.load(Ordering::Relaxed) == FREE)
        );
    }

    /// Threads (more than CPUs) take their CPU's lock and increment a plain counter under
    /// it, while a remote locker takes every lock in turn and does the same. Every increment
    /// must survive: a lock that two parties held at once loses some.
    #[test]
    fn local_and_remote_holders_exclude_each_other() {
        exclusion(failure::NONE);
    }

    /// The same with the membarrier failing for the remote locker: it fences each CPU by
    /// running there instead.
    #[test]
    fn local_and_remote_holders_exclude_each_other_without_membarrier() {
        exclusion(failure::MEMBARRIER);
    }

    fn exclusion(forced: u8) {
        let Some(offset) = rseq_offset() else { return };
        failure::FORCED.with(|cell| cell.set(forced));
        struct Guarded {
            locks: Vec<AtomicU8>,
            counts: Vec<std::cell::UnsafeCell<u64>>,
        }
        // SAFETY: each count is only touched by the holder of the lock with its index.
        unsafe impl Sync for Guarded {}
        let cpus = crate::possible_cpus();
        let guarded = Arc::new(Guarded {
            locks: (0..cpus).map(|_| AtomicU8::new(FREE)).collect(),
            counts: (0..cpus).map(|_| std::cell::UnsafeCell::new(0)).collect(),
        });
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let taken = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (guarded, done, taken) = (guarded.clone(), done.clone(), taken.clone());
                std::thread::spawn(move || {
                    let mut mine = 0usize;
                    while !done.load(Ordering::Relaxed) {
                        for _ in 0..1000 {
                            if let Some(cpu) = lock_here(&guarded.locks, offset) {
                                // SAFETY: we hold lock `cpu`.
                                unsafe {
                                    let count = guarded.counts[cpu].get();
                                    // A read-modify-write spread out, so that a second holder
                                    // would interleave with it.
                                    let seen = count.read_volatile();
                                    std::hint::spin_loop();
                                    count.write_volatile(seen + 1);
                                }
                                guarded.locks[cpu].store(FREE, Ordering::Release);
                                mine += 1;
                            }
                        }
                    }
                    taken.fetch_add(mine, Ordering::Relaxed);
                })
            })
            .collect();
        let mut remote = 0usize;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(400) {
            for cpu in 0..cpus {
                // SAFETY: these locks are only taken through this module.
                unsafe { lock_remote(&guarded.locks[cpu], cpu as u32) };
                // SAFETY: we hold lock `cpu`.
                unsafe {
                    let count = guarded.counts[cpu].get();
                    count.write_volatile(count.read_volatile() + 1);
                }
                guarded.locks[cpu].store(FREE, Ordering::Release);
                remote += 1;
            }
        }
        failure::FORCED.with(|cell| cell.set(failure::NONE));
        done.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.join().unwrap();
        }
        let total: u64 = guarded
            .counts
            .iter()
            // SAFETY: every other thread has been joined.
            .map(|count| unsafe { *count.get() })
            .sum();
        let expected = (taken.load(Ordering::Relaxed) + remote) as u64;
        assert!(remote > 0 && expected > remote as u64);
        assert_eq!(total, expected, "increments lost: two holders at once");
    }
}
