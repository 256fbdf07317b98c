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
//! Each slot's deferred-free sheaves (a chain, see `RcuSheaves`) are apart from the main
//! lock. With restartable sequences the CPU's own threads change the chain only by sequences
//! (`rseq_ops`) that check a second lock byte, `rcu_lock`, is free and commit with one store:
//! a push (which may fill the first sheaf), and putting a new first sheaf in place (an empty
//! one got beforehand under the main lock, released again, with the object already in it),
//! which seals the full one. Sealed sheaves wait for their grace period in the slot, stamped
//! and then completed by the holders of the slot's `detach` lock (`chain`): the deferring
//! thread right after its start (a try), the hand-over thread, `shrink`, a barrier and
//! statistics readers, which take `rcu_lock` from afar (aborting a sequence in flight) only
//! to seal or count the first sheaf. So a thread that holds the main lock across a slow path,
//! or is descheduled inside a deferred free, holds up none of them (C-DEFER-3, C-CONC-4).
//! Since only `detach` holders take `rcu_lock`, it is never contended, and nothing but their
//! compare-exchange writes it, so they are not serialised with the process's other remote
//! lockers (`slab::rseq::try_lock_remote_read_only`), unlike the main lock's.
//!
//! Where the lock is a compare-exchange (and for a thread that no sequence serves: no rseq
//! area of its own, or a CPU beyond the table), deferred frees take no sheaf: each is
//! deferred on its own (`CacheCore::push_deferred`), so no deferring thread ever holds
//! `rcu_lock`, and the chains of such a table stay empty.
//!
//! A path that visits every CPU slot's main sheaves (`shrink`, the accounting check, a
//! flush-everything resize) takes each slot it finds free and tries those found held again
//! for a bounded time in all (`REACH_PATIENCE`), then leaves them: their holders are inside
//! an operation, preempted, stopped or blocked there, or are the visiting thread itself
//! further up its stack (a page source that shrinks or checks the cache that called it), and
//! the sheaves they keep are reached by the next visit. So these paths, like `barrier`, wait
//! for no descheduled thread (C-CONC-4), and may be called from inside a page source.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[cfg(all(test, not(loom)))]
use super::SlotGuard;
use super::{Slot, SlotSheaves, SlotStrategy, SlotTable};
use crate::sheaf::OwnedSheaf;
use crate::stats::Counters;
#[cfg(not(loom))]
use slab::cpu::{self, CpuSource};
#[cfg(not(loom))]
use slab::rseq;
use slab::rseq::ABANDONED;

/// What the restartable sequence that starts a slot's deferred-free sheaf (`rseq_ops`'s
/// `start_rcu`) did or found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(loom, allow(dead_code))] // no sequences under loom
pub(crate) enum RcuStep {
    /// Committed.
    Done,
    /// The slot's `rcu_lock` is held (by a `detach` holder sealing or counting: a barrier,
    /// `shrink`, the hand-over thread, a statistics reader; or a `fork`'s prepare).
    Busy,
    /// No sequence can serve this thread (a CPU beyond the table, no rseq area of its own,
    /// or a table that does not use them): the locked path.
    NotHere,
    /// Preempted, migrated or signalled inside: try again.
    Aborted,
    /// The first sheaf has room: the push sequence serves.
    HasRoom,
    /// No sheaf, or a full first one: start one.
    NeedSheaf,
}

/// A test hook: a closure a test runs on one thread at a chosen point.
#[cfg(test)]
pub(crate) type Hook = std::cell::RefCell<Option<Box<dyn FnMut()>>>;

#[cfg(test)]
thread_local! {
    /// Tests: run on this thread by [`SlotTable::start_rcu_fast`] right before its sequence,
    /// where the thread holds a prepared sheaf and no lock: a test parks the thread here, as
    /// a preemption would.
    pub(crate) static BEFORE_RCU_START: Hook = std::cell::RefCell::new(None);
    /// Tests: run on this thread by a deferred free right after its sequence started a sheaf
    /// (sealing the full one before it), before it tries the slot's `detach` lock: the point
    /// where the sealed sheaves are neither stamped nor collected yet.
    pub(crate) static AFTER_RCU_START: Hook = std::cell::RefCell::new(None);
}

/// Tests: runs `hook`'s closure, if this thread set one.
#[cfg(test)]
pub(crate) fn run_hook(hook: &'static std::thread::LocalKey<Hook>) {
    hook.with(|hook| {
        if let Some(hook) = hook.borrow_mut().as_mut() {
            hook();
        }
    });
}

/// A per-CPU table's pop and push sequences (`rseq_ops`) as a plain value: the slots, their
/// number and the rseq offset, all fixed for the table's life. [`Cache`](crate::Cache) keeps
/// a copy beside its pointer to the shared state, for its fast paths.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuSequences {
    /// Not null, so that `Option<CpuSequences>` is tested on this word.
    cpus: std::ptr::NonNull<crossbeam_utils::CachePadded<Slot>>,
    ncpus: usize,
    offset: isize,
}

// SAFETY: the value is three words that describe a table; the sequences it runs are the
// per-CPU fast paths, which any thread may run (each on its own CPU's slot), and whoever
// calls them promises that the table is alive.
unsafe impl Send for CpuSequences {}
// SAFETY: as for `Send`: nothing in the value is ever written.
unsafe impl Sync for CpuSequences {}

impl CpuSequences {
    /// Pops from the `main` of the caller's CPU slot in one sequence; `None` on any miss.
    ///
    /// # Safety
    ///
    /// - The table these sequences came from ([`SlotTable::cpu_sequences`]) is alive.
    #[inline(always)]
    pub(crate) unsafe fn pop(self) -> Option<std::ptr::NonNull<u8>> {
        // SAFETY: `cpu_sequences` made this value only for a table whose lock kind is `Rseq`
        // with this offset (fixed for its life), slot `c` of `cpus` being CPU `c`'s, and the
        // caller keeps the table alive.
        unsafe { sequences::pop(self.cpus.as_ptr(), self.ncpus, self.offset) }
    }

    /// Pushes `object` onto the `main` of the caller's CPU slot in one sequence; gives it
    /// back on any miss.
    ///
    /// # Safety
    ///
    /// - As for [`CpuSequences::pop`]; `object` is a free object of the table's cache, owned
    ///   by the caller.
    #[inline(always)]
    pub(crate) unsafe fn push(
        self,
        object: std::ptr::NonNull<u8>,
    ) -> Result<(), std::ptr::NonNull<u8>> {
        // SAFETY: as in `pop`; the object is the caller's, free.
        unsafe { sequences::push(self.cpus.as_ptr(), self.ncpus, self.offset, object) }
    }
}

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

    pub(super) unsafe fn start_rcu(
        _: *const CachePadded<Slot>,
        _: usize,
        _: isize,
        _: Option<NonNull<()>>,
    ) -> (super::RcuStep, *const Slot) {
        (super::RcuStep::NotHere, std::ptr::null())
    }

    pub(super) unsafe fn push_rcu_at(
        _: *const Slot,
        _: isize,
        object: NonNull<u8>,
    ) -> Result<(), NonNull<u8>> {
        Err(object)
    }

    pub(super) unsafe fn start_rcu_at(
        _: *const Slot,
        _: isize,
        _: Option<NonNull<()>>,
    ) -> super::RcuStep {
        super::RcuStep::NotHere
    }

    pub(super) const SPARE_SEQUENCE_MAX: u32 = 0;

    pub(super) unsafe fn lend_spare(
        _: *const CachePadded<Slot>,
        _: usize,
        _: isize,
        _: u32,
    ) -> Option<NonNull<()>> {
        None
    }

    pub(super) unsafe fn give_back_spare(
        _: *const CachePadded<Slot>,
        _: usize,
        _: isize,
        _: NonNull<()>,
        _: u32,
    ) -> Result<(), ()> {
        Err(())
    }
}

/// How long, in all, a statistics reader waits for held slots before it reads their
/// counters as they are (see [`SlotTable::fold_fast_counts`]). With 2 ms, a reader right
/// after a barrier missed counts in 1 of 6 full test runs beside two busy loops (the holder,
/// a remote locker, was preempted inside its window); with 50 ms, in none of 8.
const FOLD_PATIENCE: Duration = Duration::from_millis(50);

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

#[cfg(test)]
thread_local! {
    /// Tests: per-CPU tables made on this thread lock by compare-exchange, as where
    /// restartable sequences are unavailable.
    pub(super) static FORCE_ATOMIC_LOCKS: std::cell::Cell<bool> =
        const { std::cell::Cell::new(false) };
}

impl LockKind {
    pub(super) fn detect(per_cpu: bool) -> Self {
        #[cfg(test)]
        if FORCE_ATOMIC_LOCKS.with(std::cell::Cell::get) {
            return LockKind::Atomic;
        }
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

    /// Per-CPU with restartable sequences: the prefill's fast path as one sequence (`rseq_ops`'s
    /// `lend_spare`): the caller's CPU slot's spare, when it holds at least `count` objects
    /// (and no more than the sequences take), lent and counted without the slot's lock;
    /// `None` on any miss, and always for other tables and targets.
    #[inline(always)]
    pub(crate) fn lend_spare_fast(&self, count: usize) -> Option<OwnedSheaf> {
        let (cpus, ncpus, offset) = self.sequence_table()?;
        let count = u32::try_from(count)
            .ok()
            .filter(|&count| count <= sequences::SPARE_SEQUENCE_MAX)?;
        // SAFETY: `sequence_table` is `Some` only for a per-CPU table whose lock kind is
        // `Rseq` with this offset, slot `c` of `cpus` being CPU `c`'s; `&self` keeps it alive;
        // `count` is bounded as the sequence requires.
        let raw = unsafe { sequences::lend_spare(cpus, ncpus, offset, count) }?;
        // SAFETY: the sequence committed the slot's `spare` to null: the sheaf it held is now
        // the caller's alone.
        Some(unsafe { OwnedSheaf::from_raw(raw) })
    }

    /// Per-CPU with restartable sequences: the return's fast path as one sequence
    /// (`rseq_ops`'s `give_back_spare`): `sheaf` becomes the caller's CPU slot's spare,
    /// counted, when the slot has none, without its lock; gives it back on any miss, and
    /// always for other tables and targets.
    ///
    /// `sheaf` must be of the cache's current capacity (as any spare).
    #[inline(always)]
    pub(crate) fn give_back_fast(&self, sheaf: OwnedSheaf) -> Result<(), OwnedSheaf> {
        let Some((cpus, ncpus, offset)) = self.sequence_table() else {
            return Err(sheaf);
        };
        let size = sheaf.size() as u32;
        if size > sequences::SPARE_SEQUENCE_MAX {
            return Err(sheaf);
        }
        // SAFETY: as in `lend_spare_fast`; the sheaf is the caller's, of the cache's capacity,
        // holding `size` objects.
        match unsafe { sequences::give_back_spare(cpus, ncpus, offset, sheaf.as_raw(), size) } {
            Ok(()) => {
                // The slot owns the sheaf now.
                let _ = sheaf.into_raw();
                Ok(())
            }
            Err(()) => Err(sheaf),
        }
    }

    /// Per-CPU with restartable sequences: the pop and push sequences of this table as a
    /// copyable value ([`CpuSequences`]); `None` for other tables and targets. Fixed for the
    /// table's life.
    #[inline(always)]
    pub(crate) fn cpu_sequences(&self) -> Option<CpuSequences> {
        let (cpus, ncpus, offset) = self.sequence_table()?;
        Some(CpuSequences {
            cpus: std::ptr::NonNull::new(cpus.cast_mut())?,
            ncpus,
            offset,
        })
    }

    /// Whether this table's per-CPU fast paths are restartable sequences (`rseq_ops`).
    #[inline(always)]
    pub(crate) fn uses_sequences(&self) -> bool {
        self.sequence_table().is_some()
    }

    /// Per-CPU with restartable sequences: pops from the `main` of the caller's CPU slot in
    /// one sequence, without the slot lock (`rseq_ops`); `None` on any miss, after which the
    /// caller takes the locked path. Always `None` for other tables and targets. (The cache
    /// runs [`CpuSequences::pop`] on its own copy; this is the tests' way in.)
    #[cfg(test)]
    pub(crate) fn pop_fast(&self) -> Option<std::ptr::NonNull<u8>> {
        // SAFETY: the sequences of this table, which is alive.
        unsafe { self.cpu_sequences()?.pop() }
    }

    /// Per-CPU with restartable sequences: pushes `object` onto the `main` of the caller's
    /// CPU slot in one sequence (`rseq_ops`); gives it back on any miss, after which the
    /// caller takes the locked path. (As [`SlotTable::pop_fast`], for the tests.)
    ///
    /// # Safety
    ///
    /// - `object` is a free object of this table's cache, owned by the caller.
    #[cfg(test)]
    pub(crate) unsafe fn push_fast(
        &self,
        object: std::ptr::NonNull<u8>,
    ) -> Result<(), std::ptr::NonNull<u8>> {
        let Some(table) = self.cpu_sequences() else {
            return Err(object);
        };
        // SAFETY: the sequences of this table, which is alive; the object is the caller's,
        // free.
        unsafe { table.push(object) }
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
        // SAFETY: the table's lock kind is `Rseq` with this offset (fixed for its life), and
        // slot `c` of `cpus` is CPU `c`'s; the object is the caller's, handed over.
        unsafe { sequences::push_rcu(cpus, ncpus, offset, object) }
    }

    /// Per-CPU with restartable sequences: one attempt at putting `sheaf` (the caller's,
    /// unlinked, holding the object it defers, pushed with `OwnedSheaf::push_counted`) first
    /// in the deferred-free
    /// chain of the caller's CPU slot, by a sequence (`rseq_ops::start_rcu`) that commits only
    /// while the slot's `rcu_lock` is free: the caller never holds that lock. On
    /// [`RcuStep::Done`] the slot owns the sheaf (the caller gives its handle up with
    /// `into_raw`), and the CPU whose slot it is comes with it (the caller collects that
    /// slot's expired sheaves); otherwise the sheaf is the caller's again, as it was. With
    /// `sheaf` `None` it only says what the chain needs. [`RcuStep::NotHere`] for other tables.
    pub(crate) fn start_rcu_fast(
        &self,
        sheaf: Option<&mut OwnedSheaf>,
    ) -> (RcuStep, Option<&Slot>) {
        let Some((cpus, ncpus, offset)) = self.sequence_table() else {
            return (RcuStep::NotHere, None);
        };
        #[cfg(test)]
        if sheaf.is_some() {
            run_hook(&BEFORE_RCU_START);
        }
        let raw = sheaf.as_ref().map(|sheaf| sheaf.as_raw());
        // SAFETY: as in `push_rcu_fast`; the sheaf is the caller's, of this cache, unlinked, its
        // counts consistent (the caller's obligation), holding the object it defers.
        let (step, slot) = unsafe { sequences::start_rcu(cpus, ncpus, offset, raw) };
        if step == RcuStep::Done {
            // SAFETY: `Done` returns the address of the table's slot the sequence committed
            // to, which lives as long as the table.
            let slot = unsafe { &*slot };
            // For the visitors, after the commit: one that seals the chain meanwhile leaves
            // the mark set for nothing, which is harmless, while a mark set before the commit
            // could be cleared by a sealer that did not see the sheaf.
            slot.rcu_pending.store(true, Ordering::Release);
            return (step, Some(slot));
        }
        if let Some(sheaf) = sheaf {
            // The sequence may have linked the chain behind it before it missed or aborted.
            sheaf.set_next(None);
        }
        (step, None)
    }

    /// Per-thread: the rseq offset when the owners' deferred frees are restartable sequences
    /// on their slots (`None` on targets without them, as [`SlotTable::sequence_table`]).
    #[inline(always)]
    fn thread_sequence_offset(&self) -> Option<isize> {
        #[cfg(all(
            not(loom),
            target_arch = "x86_64",
            target_os = "linux",
            target_env = "gnu"
        ))]
        if !S::PER_CPU {
            return self.thread_sequences;
        }
        None
    }

    /// Per-thread: whether the owners' deferred frees are restartable sequences on their
    /// slots.
    #[inline(always)]
    pub(crate) fn uses_thread_sequences(&self) -> bool {
        !S::PER_CPU && self.thread_sequences.is_some()
    }

    /// Per-thread with restartable sequences: pushes `object` onto the `rcu_free` sheaf of
    /// the calling thread's `slot` in one sequence (`rseq_ops::push_rcu_at`); gives it back on
    /// any miss.
    ///
    /// # Safety
    ///
    /// - `slot` is the calling thread's slot of this table; `object` is a live object of
    ///   this table's cache, handed over for a deferred free.
    #[inline(always)]
    pub(crate) unsafe fn push_rcu_thread(
        &self,
        slot: &Slot,
        object: std::ptr::NonNull<u8>,
    ) -> Result<(), std::ptr::NonNull<u8>> {
        if let Some(offset) = self.thread_sequence_offset() {
            // SAFETY: the offset `rseq::support` reported; the slot is the caller's own, its
            // `rcu_free` changed only by these sequences and `rcu_lock` holders (`chain`).
            return unsafe { sequences::push_rcu_at(slot, offset, object) };
        }
        let _ = slot;
        Err(object)
    }

    /// Per-thread with restartable sequences: one attempt at putting `sheaf` first in the
    /// chain of the calling thread's `slot` (`rseq_ops::start_rcu_at`), as
    /// [`SlotTable::start_rcu_fast`] does on a CPU slot. [`RcuStep::NotHere`] without
    /// sequences.
    pub(crate) fn start_rcu_thread(&self, slot: &Slot, sheaf: Option<&mut OwnedSheaf>) -> RcuStep {
        if let Some(offset) = self.thread_sequence_offset() {
            #[cfg(test)]
            if sheaf.is_some() {
                run_hook(&BEFORE_RCU_START);
            }
            let raw = sheaf.as_ref().map(|sheaf| sheaf.as_raw());
            // SAFETY: as in `push_rcu_thread`; the sheaf is the caller's, unlinked, its counts
            // consistent, holding the object it defers.
            let step = unsafe { sequences::start_rcu_at(slot, offset, raw) };
            if step == RcuStep::Done {
                // For the visitors, after the commit (as in `start_rcu_fast`).
                slot.rcu_pending.store(true, Ordering::Release);
            } else if let Some(sheaf) = sheaf {
                sheaf.set_next(None);
            }
            return step;
        }
        let _ = (slot, sheaf);
        RcuStep::NotHere
    }

    /// Per-CPU with restartable sequences: moves the counts of the sequences into every
    /// slot's counters (`rseq_ops`), for a reader of the statistics (those of deferred frees:
    /// [`SlotTable::fold_chain_counts`]). Each
    /// slot's lock is taken from afar; a slot found held is tried again, yielding, for up to
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
                    let since = *started.get_or_insert_with(Instant::now);
                    if since.elapsed() >= FOLD_PATIENCE {
                        break;
                    }
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Tests: the deferred objects in the chain and sealed list of the slot `guard` holds.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn deferred_in_slot_of(&self, guard: &SlotGuard<'_, S>) -> usize {
        self.chain_objects(guard.slot)
    }

    /// Per-CPU, by a holder of CPU `cpu`'s `detach`: takes its `rcu_lock`, waiting (yielding)
    /// while it is held, which only a `fork`'s prepare does besides `detach` holders.
    pub(super) fn lock_rcu_waiting(&self, cpu: usize) -> &Slot {
        let slot = &self.cpus[cpu];
        loop {
            let locked = match self.lock_kind {
                #[cfg(not(loom))]
                // SAFETY: as in `try_lock_rseq`; `cpu` is the CPU the slot belongs to. The
                // sequences only check `rcu_lock` (`rseq_ops`), and in a table that uses them
                // no thread takes it locally (a deferred free that no sequence serves takes no
                // sheaf), so only compare-exchanges write it: no other remote locker of the
                // process is waited for.
                LockKind::Rseq { .. } => unsafe {
                    rseq::try_lock_remote_read_only(&slot.rcu_lock, cpu as u32)
                },
                LockKind::Atomic => slot.try_lock_rcu(),
            };
            if locked {
                return slot;
            }
            std::thread::yield_now();
        }
    }

    /// Per-CPU: one attempt at CPU `cpu`'s slot from afar, for paths that visit every slot.
    fn try_lock_visit(&self, cpu: usize) -> Visit<'_> {
        let slot = &self.cpus[cpu];
        if slot.lock.load(Ordering::Relaxed) == ABANDONED {
            return Visit::Abandoned;
        }
        let locked = match self.lock_kind {
            #[cfg(not(loom))]
            // SAFETY: as in `try_lock_rseq`; `cpu` is the CPU the slot belongs to.
            LockKind::Rseq { .. } => unsafe { rseq::try_lock_remote(&slot.lock, cpu as u32) },
            LockKind::Atomic => slot.try_lock(),
        };
        if !locked {
            return Visit::Busy;
        }
        if self.lock_kind != LockKind::Atomic {
            slot.take_fast_counts();
        }
        Visit::Locked(slot)
    }

    /// Per-CPU part of [`SlotTable::for_each_reachable`]: every CPU slot whose main lock the
    /// caller can take; returns how many it could not.
    ///
    /// One pass takes every free slot; the slots found held are then tried again, yielding
    /// between rounds, until `patience` has passed in all (counted from the end of the first
    /// pass, so the time `f` takes on free slots does not use it up, and one held slot or
    /// sixty-four cost the same wait), and then counted as not reached: a holder that runs
    /// releases its slot at the end of its operation and is waited out, and one that is
    /// preempted, stopped or blocked is not waited for. Inside a page source call the caller
    /// may be a holder itself, further up its stack, which no wait would free: each slot is
    /// then tried once. A slot abandoned at a fork (`slab::rseq::ABANDONED`; its holder may
    /// not exist in this process, and its sheaves are out of reach) is skipped and not
    /// counted.
    pub(super) fn for_each_cpu_slot(
        &self,
        patience: Duration,
        f: &mut impl FnMut(&mut SlotSheaves, &Counters, usize),
    ) -> usize {
        let mut visit = |cpu: usize| match self.try_lock_visit(cpu) {
            Visit::Locked(slot) => {
                // SAFETY: we hold the slot's lock.
                f(unsafe { slot.sheaves_mut() }, &slot.counters, slot.node());
                slot.unlock_cpu();
                true
            }
            Visit::Abandoned => true,
            Visit::Busy => false,
        };
        // Allocates only when a slot is held.
        let mut busy: Vec<usize> = (0..self.cpus.len()).filter(|&cpu| !visit(cpu)).collect();
        let patience = if slab::fork::in_page_source() {
            Duration::ZERO
        } else {
            patience
        };
        let start = Instant::now();
        while !busy.is_empty() && start.elapsed() < patience {
            std::thread::yield_now();
            busy.retain(|&cpu| !visit(cpu));
        }
        busy.len()
    }
}

/// The outcome of one attempt at a CPU slot by a path that visits every slot.
enum Visit<'a> {
    /// The caller holds the slot.
    Locked(&'a Slot),
    /// Abandoned at a fork: out of reach, and not to be waited for.
    Abandoned,
    /// Held by an operation.
    Busy,
}
