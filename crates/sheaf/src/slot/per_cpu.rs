//! Per-CPU slots ([`PerCpu`](crate::PerCpu), the kernel's design): how an operation takes the
//! slot of the CPU it runs on, and how the paths that visit every slot take each one.
//!
//! One slot per possible CPU, found by the CPU number read from glibc's rseq area (see
//! `slab::cpu`), and held with a try-lock that never spins. A thread that finds its slot
//! held (another thread was preempted on this CPU while holding it, or migrated away holding
//! it) takes the slow path straight to the slabs, as the kernel's `local_trylock` users do.
//! This is the userspace analog of disabling preemption. The lock is taken in one of two
//! ways, chosen once per process ([`LockKind`]):
//!
//! - a restartable sequence on the slot's CPU (`slab::rseq`): a plain load and a plain store
//!   that the kernel aborts if the thread is preempted or migrates in between, so no locked
//!   instruction. Paths that visit every slot (`shrink`, `barrier`) take other CPUs' locks
//!   with a compare-exchange and an rseq membarrier to that CPU, as does a thread that has
//!   no rseq area of its own;
//! - a compare-exchange (one locked instruction), where restartable sequences are not
//!   available (valgrind, kernels before 5.10, other architectures, `SHEAF_RSEQ=0`).
//!
//! Either way the release is a plain release store, and everything between acquisition and
//! release is ordinary code under a lock.
//!
//! A path that visits every CPU slot waits for each one's lock, including one that its own
//! thread holds further up the stack. So `shrink`, `barrier` and `check_invariants` of a
//! per-CPU cache must not be called from code that runs inside an operation of that same
//! cache, such as its page source: they would wait forever. (Per-thread visits skip the
//! held slot. Tracking held CPU slots in a thread-local would lift this, at a cost on every
//! bulk allocation and free: see `docs/decisions.md`.)

use std::sync::atomic::Ordering;

use super::{Slot, SlotSheaves, SlotStrategy, SlotTable};
use crate::stats::Counters;
#[cfg(not(loom))]
use slab::cpu::{self, CpuSource};
#[cfg(not(loom))]
use slab::rseq;
use slab::rseq::ABANDONED;

/// The outcome of one inlined attempt at the slot of the CPU the caller runs on (per-CPU,
/// restartable sequences); [`slab::rseq::LocalOutcome`] is that of the sequence itself.
#[cfg(not(loom))]
pub(super) enum OwnCpuOutcome<T> {
    /// The caller holds this slot.
    Locked(T),
    /// Another thread holds it.
    Busy,
    /// Migrated or preempted inside the sequence: the slow path retries.
    Retry,
}

#[cfg(all(
    not(loom),
    target_arch = "x86_64",
    target_os = "linux",
    target_env = "gnu"
))]
use super::rseq_ops as sequences;

/// Stand-ins for `rseq_ops` where it does not exist: never called, since
/// [`SlotTable::sequence_table`] is `None` there.
#[cfg(not(all(
    not(loom),
    target_arch = "x86_64",
    target_os = "linux",
    target_env = "gnu"
)))]
mod sequences {
    use crossbeam_utils::CachePadded;
    use std::ptr::NonNull;

    use super::Slot;

    pub(super) unsafe fn pop(
        _: *const CachePadded<Slot>,
        _: usize,
        _: isize,
    ) -> Option<NonNull<u8>> {
        None
    }

    pub(super) unsafe fn push(
        _: *const CachePadded<Slot>,
        _: usize,
        _: isize,
        object: NonNull<u8>,
    ) -> Result<(), NonNull<u8>> {
        Err(object)
    }

    pub(super) use push as push_rcu;
}

/// How long, in all, a statistics reader waits for held slots before it reads their
/// counters as they are (see [`SlotTable::fold_fast_counts`]). With 2 ms, a reader right
/// after a barrier missed counts in 1 of 6 full test runs beside two busy loops (the holder,
/// a remote locker, was preempted inside its window); with 50 ms, in none of 8.
const FOLD_PATIENCE: std::time::Duration = std::time::Duration::from_millis(50);

/// How a table's per-CPU slot locks are taken, fixed for its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// A compare-exchange ([`Slot::try_lock`]): per-thread tables (which do not use the
    /// lock), and per-CPU ones where restartable sequences are unsupported.
    Atomic,
    /// A restartable sequence on the slot's CPU (`slab::rseq`), with the rseq area at this
    /// offset from the thread pointer.
    #[cfg(not(loom))]
    Rseq {
        /// glibc's `__rseq_offset`.
        offset: isize,
    },
}

impl LockKind {
    pub(super) fn detect(per_cpu: bool) -> Self {
        #[cfg(not(loom))]
        if per_cpu && let rseq::Support::Rseq { offset } = rseq::support() {
            return LockKind::Rseq { offset };
        }
        let _ = per_cpu;
        LockKind::Atomic
    }
}

impl<S: SlotStrategy> SlotTable<S> {
    /// Per-CPU with restartable sequences, the common case inlined: one attempt at the slot
    /// of the CPU the caller runs on; `None` when the thread has no rseq area or runs on a
    /// CPU beyond the table (then [`SlotTable::try_lock_rseq`] deals with it).
    #[cfg(not(loom))]
    #[inline(always)]
    pub(super) fn try_lock_rseq_once(&self, offset: isize) -> Option<OwnCpuOutcome<&Slot>> {
        let cpu = cpu::rseq_cpu(offset)?;
        let slot = self.cpus.get(cpu as usize)?;
        // SAFETY: `offset` is the one `rseq::support` reported; per-CPU slot locks are only
        // taken through `slab::rseq` while this table's kind is `Rseq` (the kind is fixed for
        // the table's life, and `rseq::support` for the process's), and released with a
        // release store of `FREE`.
        Some(
            match unsafe { rseq::try_lock_local(&slot.lock, cpu, offset) } {
                rseq::LocalOutcome::Locked => {
                    slot.take_fast_counts();
                    OwnCpuOutcome::Locked(slot)
                }
                rseq::LocalOutcome::Busy => OwnCpuOutcome::Busy,
                // Migrated since the CPU was read, or preempted inside.
                rseq::LocalOutcome::Moved | rseq::LocalOutcome::Aborted => OwnCpuOutcome::Retry,
            },
        )
    }

    /// Per-CPU with restartable sequences: takes the slot of the CPU the caller runs on
    /// without a locked instruction, retrying after migrations and aborts; `None` when it is
    /// held.
    #[cfg(not(loom))]
    #[cold]
    #[inline(never)]
    pub(super) fn try_lock_rseq(&self, offset: isize) -> Option<&Slot> {
        loop {
            match self.try_lock_rseq_once(offset) {
                Some(OwnCpuOutcome::Locked(slot)) => return Some(slot),
                Some(OwnCpuOutcome::Busy) => return None,
                Some(OwnCpuOutcome::Retry) => {}
                // No rseq area of its own (the kernel would not abort this thread's
                // sequences), or a CPU beyond the table: lock as a remote thread does.
                None => {
                    let cpu = match cpu::rseq_cpu(offset) {
                        Some(cpu) => cpu as usize,
                        None => cpu::current_cpu(CpuSource::SchedGetcpu),
                    };
                    return self.try_lock_from_afar(cpu);
                }
            }
        }
    }

    /// Per-CPU with restartable sequences, for a thread that cannot lock its CPU's slot from
    /// that CPU (no rseq area, or a CPU number beyond the table's): one attempt on the slot
    /// it maps to, from afar (a system call).
    #[cfg(not(loom))]
    #[cold]
    #[inline(never)]
    fn try_lock_from_afar(&self, cpu: usize) -> Option<&Slot> {
        let index = cpu % self.cpus.len();
        let slot = &self.cpus[index];
        // SAFETY: as in `try_lock_rseq`; `index` is the CPU the slot belongs to.
        let locked = unsafe { rseq::try_lock_remote(&slot.lock, index as u32) };
        if !locked {
            return None;
        }
        slot.take_fast_counts();
        Some(slot)
    }

    /// Per-CPU with restartable sequences: the table as the sequences of `rseq_ops` take it
    /// (its slots, their number, the rseq offset); `None` for other tables and targets.
    #[inline(always)]
    fn sequence_table(&self) -> Option<(*const crossbeam_utils::CachePadded<Slot>, usize, isize)> {
        #[cfg(all(
            not(loom),
            target_arch = "x86_64",
            target_os = "linux",
            target_env = "gnu"
        ))]
        if S::PER_CPU
            && let LockKind::Rseq { offset } = self.lock_kind
        {
            return Some((self.cpus.as_ptr(), self.cpus.len(), offset));
        }
        None
    }

    /// Per-CPU with restartable sequences: pops from the `main` of the caller's CPU slot in
    /// one sequence, without the slot lock (`rseq_ops`); `None` on any miss, after which the
    /// caller takes the locked path. Always `None` for other tables and targets.
    #[inline(always)]
    pub(crate) fn pop_fast(&self) -> Option<std::ptr::NonNull<u8>> {
        let (cpus, ncpus, offset) = self.sequence_table()?;
        // SAFETY: the table's lock kind is `Rseq` with this offset (fixed for its life), and
        // slot `c` of `cpus` is CPU `c`'s.
        unsafe { sequences::pop(cpus, ncpus, offset) }
    }

    /// Per-CPU with restartable sequences: pushes `object` onto the `main` of the caller's
    /// CPU slot in one sequence (`rseq_ops`); gives it back on any miss, after which the
    /// caller takes the locked path.
    ///
    /// # Safety
    ///
    /// - `object` is a free object of this table's cache, owned by the caller.
    #[inline(always)]
    pub(crate) unsafe fn push_fast(
        &self,
        object: std::ptr::NonNull<u8>,
    ) -> Result<(), std::ptr::NonNull<u8>> {
        let Some((cpus, ncpus, offset)) = self.sequence_table() else {
            return Err(object);
        };
        // SAFETY: as in `pop_fast`; the object is the caller's, free.
        unsafe { sequences::push(cpus, ncpus, offset, object) }
    }

    /// Per-CPU with restartable sequences: pushes `object` onto the `rcu_free` sheaf of the
    /// caller's CPU slot in one sequence when it has room for this one and more
    /// (`rseq_ops::push_rcu`); gives it back on any miss, after which the caller takes the
    /// locked path.
    ///
    /// # Safety
    ///
    /// - `object` is a live object of this table's cache, handed over for a deferred free.
    #[inline(always)]
    pub(crate) unsafe fn push_rcu_fast(
        &self,
        object: std::ptr::NonNull<u8>,
    ) -> Result<(), std::ptr::NonNull<u8>> {
        let Some((cpus, ncpus, offset)) = self.sequence_table() else {
            return Err(object);
        };
        // SAFETY: as in `pop_fast`; the object is the caller's, handed over.
        unsafe { sequences::push_rcu(cpus, ncpus, offset, object) }
    }

    /// Per-CPU with restartable sequences: moves the counts of the sequences into every
    /// slot's counters (`rseq_ops`), for a reader of the statistics. Each slot's lock is
    /// taken from afar; a slot found held is tried again, yielding, for up to
    /// [`FOLD_PATIENCE`] in all: its holder adds the counts only after it has the lock (a
    /// remote holder after its membarrier), so a reader that skipped it at once could miss
    /// them. A slot held longer (its holder preempted, or the reader itself inside an
    /// operation of the cache) is left as it is, and its counts appear at the next reading.
    pub(crate) fn fold_fast_counts(&self) {
        #[cfg(not(loom))]
        if S::PER_CPU && matches!(self.lock_kind, LockKind::Rseq { .. }) {
            let mut started = None;
            for (cpu, slot) in self.cpus.iter().enumerate() {
                loop {
                    let state = slot.lock.load(Ordering::Relaxed);
                    if state == ABANDONED {
                        break;
                    }
                    let taken = state == slab::rseq::FREE
                        // SAFETY: as in `try_lock_rseq`; `cpu` is the CPU the slot belongs to.
                        && unsafe { rseq::try_lock_remote(&slot.lock, cpu as u32) };
                    if taken {
                        slot.take_fast_counts();
                        slot.unlock_cpu();
                        break;
                    }
                    let since = *started.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= FOLD_PATIENCE {
                        break;
                    }
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Per-CPU: takes CPU `cpu`'s slot, waiting (yielding) while it is held; for paths that
    /// visit every slot. `None` for a slot abandoned at a fork (`slab::rseq::ABANDONED`): its
    /// holder may not exist in this process, and its sheaves are out of reach.
    pub(super) fn lock_waiting(&self, cpu: usize) -> Option<&Slot> {
        let slot = &self.cpus[cpu];
        loop {
            if slot.lock.load(Ordering::Relaxed) == ABANDONED {
                return None;
            }
            let locked = match self.lock_kind {
                #[cfg(not(loom))]
                // SAFETY: as in `try_lock_rseq`; `cpu` is the CPU the slot belongs to.
                LockKind::Rseq { .. } => unsafe { rseq::try_lock_remote(&slot.lock, cpu as u32) },
                LockKind::Atomic => slot.try_lock(),
            };
            if locked {
                if self.lock_kind != LockKind::Atomic {
                    slot.take_fast_counts();
                }
                return Some(slot);
            }
            std::thread::yield_now();
        }
    }

    /// Per-CPU part of [`SlotTable::for_each_reachable`]: every CPU slot, waiting (yielding)
    /// for each lock; none is left out.
    pub(super) fn for_each_cpu_slot(&self, f: &mut impl FnMut(&mut SlotSheaves, &Counters, usize)) {
        for cpu in 0..self.cpus.len() {
            let Some(slot) = self.lock_waiting(cpu) else {
                continue;
            };
            // SAFETY: we hold the slot's lock.
            f(unsafe { slot.sheaves_mut() }, &slot.counters, slot.node);
            slot.unlock_cpu();
        }
    }
}
