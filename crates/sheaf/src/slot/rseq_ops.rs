//! The per-CPU fast paths as single restartable sequences: an allocation pops from its CPU
//! slot's `main`, a free pushes onto it, a batched deferred free pushes onto its `rcu_free`,
//! and the prefill lends the slot's `spare` and takes a returned sheaf back as the spare,
//! without taking the slot's lock.
//!
//! The slot lock of `per_cpu` costs a lock store before the work and a release store after
//! it, around a sequence of its own. Here the work *is* the sequence, and it commits with
//! one store (the scheme of TCMalloc's per-CPU caches). `size` and `budget` share one 8-byte
//! word of the sheaf header (`sheaf::layout`):
//!
//! ```text
//! pop:   cpu = rseq.cpu_id; slot = slots[cpu]
//!        if cpu >= slots.len or slot.lock != FREE             -> miss
//!        (size, budget) = main.word; if size == 0             -> miss
//!        object = main.objects[size - 1]
//!        if budget == 0                                       -> miss
//!        main.word = (size - 1, budget - 1)                      (commit)
//! push:  cpu, slot and the lock as for a pop
//!        (size, budget) = main.word; if size == capacity      -> miss
//!        main.objects[size] = object                             (unheld if aborted: harmless)
//!        if budget == 0                                       -> miss
//!        main.word = (size + 1, budget - 1)                      (commit)
//! ```
//!
//! The deferred free is the push on `rcu_free` (a miss when the slot has none, or it is
//! full). It checks the slot's `rcu_lock`, which guards the deferred-free sheaves, instead
//! of the main lock: a thread holding the main lock does not stop deferred frees on its CPU,
//! nor the barrier that takes them, and every argument below holds for `rcu_lock` and
//! `rcu_free` as for the main lock and `main`.
//!
//! A deferred free that finds the first sheaf full (or none) puts a new one in front of it,
//! which *seals* the old one (`slot::chain`); that is a sequence too, so that the CPU's own
//! threads never hold `rcu_lock` and a remote party never waits for one of them:
//!
//! ```text
//! start_rcu(E):     cpu, slot and rcu_lock as above (E: the caller's sheaf, object in it)
//!                   head = rcu_free
//!                   if head != null and head.size != capacity        -> has room
//!                   E.next = head                   (E is the caller's: harmless if aborted)
//!                   rcu_free = E                                       (commit)
//! ```
//!
//! It reads the first sheaf only while it runs on the slot's CPU with `rcu_lock` free, as the
//! push does, and commits with one store, so a remote party that locks the slot from afar
//! (its membarrier aborts the sequence in flight) finds the chain either before or after the
//! change, never in between. The sheaves behind the first are never read by a sequence:
//! only the holder of the slot's `detach` lock reads and moves them.
//!
//! Each commit is one subtraction on the word (`0x1_0000_0001` for a pop, `0xFFFF_FFFF` for
//! a push), whose borrow out of the high half says the budget was spent. Loads and stores of
//! the word all have the same address and width, so the next operation's load is forwarded
//! from the previous one's store.
//!
//! Why this is safe:
//!
//! - Two sequences on one CPU never interleave (the kernel aborts the one preempted inside),
//!   and a sequence reads the CPU number inside itself, so it commits to CPU `c`'s slot only
//!   while running on `c` (a migration aborts it).
//! - A sequence reads the lock before anything else and commits only if it was free. Whoever
//!   takes the lock excludes every later sequence on that slot: a thread on `c` took it by a
//!   sequence on `c` (so no other sequence on `c` is in flight while it does), and a remote
//!   locker runs the rseq membarrier on `c` after marking the lock (`slab::rseq`), which
//!   aborts the sequences in flight there. So while the lock is held, `main` is the holder's
//!   alone, as the module docs of `slot` require, and the holder may replace or free it.
//! - The store that commits changes the size and the budget together, so the counts are
//!   exact: a sequence aborted before it changed neither, and is retried. The next lock
//!   holder adds the operations since the last re-base to the slot's statistics
//!   ([`Slot::take_fast_counts`](super::Slot::take_fast_counts)), and the release re-bases
//!   `main`; statistics readers take each free slot's lock to see the counts
//!   (`SlotTable::fold_fast_counts`). A spent budget (4 billion operations without a lock
//!   holder) sends one operation to the locked path, which re-bases.
//! - Every exit sets the thread's `rseq_cs` back to null, as `slab::rseq` explains.
//!
//! A miss of any kind (a CPU beyond the table, a held slot, an empty or full sheaf, a spent
//! budget, an abort) sends the operation to the locked path, which sorts each case out as
//! before; so the paths that replace `main` are unchanged.
//!
//! # The spare's sequences
//!
//! A lend (the prefill's fast path: the spare holds enough) and a give-back (the return's:
//! the slot has no spare) each move the slot's `spare` pointer, and each must count: the
//! lend `sheaf_prefill_fast` and `prefill_reserved` (its objects), the give-back
//! `sheaf_return_fast` and `prefill_unused`. The last two of those are terms of the
//! accounting equation (live objects = allocations + reserved - frees - unused), so they
//! cannot wait for the sheaf to come back. The commit is one store, of the `spare` word, so
//! the counts must take effect with that store. They are kept in a *record* of the slot, in
//! two copies; the `spare` word's low bit (`slot::SPARE_TAG`, free in an 8-byte aligned
//! address) names the copy in use. A sequence reads the copy in use, writes the updated
//! counts into the other one, and commits the new `spare` word tagged with that other copy:
//!
//! ```text
//! lend:  word = slot.spare; sheaf = word & !TAG; r = word & TAG
//!        if sheaf == null or not count <= sheaf.size <= 0xFFFF                  -> miss
//!        records[r ^ 1] = records[r] + one lend of sheaf.size  (a carry         -> miss)
//!        slot.spare = null | (r ^ 1)                                             (commit)
//! give:  word = slot.spare; if word & !TAG != null                              -> miss
//!        records[r ^ 1] = records[r] + one give-back of its size (a carry       -> miss)
//!        slot.spare = sheaf | (r ^ 1)                                            (commit)
//! ```
//!
//! The copy not in use is nobody's until a commit names it, and every sequence writes it in
//! full before committing, so an aborted attempt, or another thread's sequence in between,
//! leaves nothing behind that counts. Each half of a record (lends, give-backs) is a count in
//! its top 8 bits and a sum of objects in its low 24; a sequence that would carry out of
//! either misses, and the locked path folds the record. Every lock holder, on taking the
//! slot, adds the record in use to the slot's counters, clears both copies and the tag
//! (`Slot::take_spare_counts`), so held code sees a plain pointer, and statistics readers,
//! which take each free slot's lock, see every lend and give-back committed before.

use std::mem::offset_of;
use std::ptr::NonNull;

use crossbeam_utils::CachePadded;

use super::per_cpu::RcuStep;
use super::{RcuSheaves, Slot, SlotSheaves};
use crate::sheaf::layout;

/// `log2` of the distance between two CPU slots in the table.
const STRIDE_SHIFT: u32 = 8;
/// The slot lock's offset in a padded slot.
const LOCK_AT: usize = offset_of!(Slot, lock);
/// The `main` sheaf pointer's offset in a padded slot.
const MAIN_AT: usize = offset_of!(Slot, sheaves) + offset_of!(SlotSheaves, main);

/// The `spare` word's offset in a padded slot (a sheaf pointer or null, tagged with the
/// record in use: `slot::SPARE_TAG`).
const SPARE_AT: usize = offset_of!(Slot, sheaves) + offset_of!(SlotSheaves, spare);
/// The offset of the slot's two prefill records (`Slot::take_spare_counts`).
const RECORDS_AT: usize = offset_of!(Slot, aux);

/// The `rcu_free` sheaf pointer's offset in a padded slot (null for none).
const RCU_FREE_AT: usize = offset_of!(Slot, rcu) + offset_of!(RcuSheaves, rcu_free);
/// The offset of the slot's `rcu_lock`, which guards `rcu_free` (not the main lock: a thread
/// holding that one does not stop deferred frees, nor a barrier taking them).
const RCU_LOCK_AT: usize = offset_of!(Slot, rcu_lock);

/// What a pop subtracts from the word: one from the size (low half) and one from the budget
/// (high half). An input operand rather than an immediate inside the asm (x86-64 has no
/// 64-bit immediate for `sub`), so that a caller's loop keeps it in a register.
const POP_STEP: u64 = 0x1_0000_0001;
/// What a push subtracts from the word: `2^32 - 1` adds one to the size and takes one from
/// the budget.
const PUSH_STEP: u64 = 0xFFFF_FFFF;

const _: () = assert!(size_of::<CachePadded<Slot>>() == 1 << STRIDE_SHIFT);
const _: () = assert!(size_of::<Option<crate::sheaf::OwnedSheaf>>() == size_of::<usize>());
const _: () = assert!(align_of::<crate::sheaf::SheafHeader>() > super::SPARE_TAG);
// The spare's sequences index the two records by the tag's value (0 or 1).
const _: () = assert!(super::SPARE_TAG == 1);

/// The part every sequence here shares after [`slab::rseq_sequence_start`]: reads the CPU
/// number into `cpu`, misses (label `7`) when it is beyond the table's `ncpus` slots or the
/// slot's lock is held, and leaves the slot's offset in the table `cpus` in `cpu`.
macro_rules! own_free_slot {
    () => {
        concat!(
            "mov {cpu:e}, dword ptr fs:[{offset} + 4]\n",
            "cmp {cpu}, {ncpus}\n",
            "jae 7f\n",
            "shl {cpu}, {stride_shift}\n",
            "cmp byte ptr [{cpus} + {cpu} + {lock_at}], 0\n",
            "jne 7f",
        )
    };
}

/// The end of a push sequence, right after its commit: `rseq_cs` cleared, and the taken path
/// falls through. The abort handler (counting in `slab::rseq::ABORTS`) and the misses clear
/// `rseq_cs` and jump to the asm's `miss` label, from a section of their own so that the
/// taken path runs straight through and sets no flag for the caller to test.
macro_rules! push_end {
    () => {
        concat!(
            "5:\n",
            "mov qword ptr fs:[{offset} + 8], 0\n",
            ".pushsection .text.sheaf_rseq_miss, \"ax\"\n",
            ".long 0x53053053\n",
            "6:\n",
            "lock inc qword ptr [rip + {aborts}]\n",
            "7:\n",
            "mov qword ptr fs:[{offset} + 8], 0\n",
            "jmp {miss}\n",
            ".popsection",
        )
    };
}

/// The end of a sequence whose result is the register operand named `$result` (zeroed on a
/// miss or an abort), right after its commit: `rseq_cs` cleared, and the taken path falls
/// through; the miss (`7`) and abort (`6`, counting in `slab::rseq::ABORTS`) paths live in a
/// section of their own, so that the taken path runs straight through.
macro_rules! result_end {
    ($result:literal) => {
        concat!(
            "5:\n",
            "mov qword ptr fs:[{offset} + 8], 0\n",
            "8:\n",
            ".pushsection .text.sheaf_rseq_miss, \"ax\"\n",
            ".long 0x53053053\n",
            "6:\n",
            "lock inc qword ptr [rip + {aborts}]\n",
            "7:\n",
            "xor {",
            $result,
            ":e}, {",
            $result,
            ":e}\n",
            "mov qword ptr fs:[{offset} + 8], 0\n",
            "jmp 8b\n",
            ".popsection",
        )
    };
}

/// Pops from the `main` of the caller's CPU slot in `cpus` (a table of `ncpus` slots, one
/// per CPU number) in one restartable sequence; `None` on a miss.
///
/// # Safety
///
/// - `offset` is the rseq offset that `slab::rseq::support` reported, and the slots' locks
///   are taken only through `slab::rseq` (the table's lock kind is `Rseq`).
/// - `cpus` points to `ncpus` live slots, slot `c` being CPU `c`'s.
#[inline(always)]
pub(super) unsafe fn pop(
    cpus: *const CachePadded<Slot>,
    ncpus: usize,
    offset: isize,
) -> Option<NonNull<u8>> {
    let object: usize;
    // SAFETY: a restartable sequence on glibc's rseq area, laid out as in
    // `slab::rseq::try_lock_local` (descriptor in `__rseq_cs`, signature before the abort
    // handler, `rseq_cs` cleared on every exit). It reads the CPU number inside the sequence
    // (so the slot is the CPU's own until the commit), bounds it by the table, checks the
    // lock and commits with its last instruction, so an aborted attempt has written nothing
    // but `rseq_cs`. While the lock is free and the thread runs on that CPU, `main` belongs
    // to this sequence (module docs): it points to a live header (a sheaf of this slot or the
    // never-written sentinel, whose size 0 stops the sequence before it writes), and entry
    // `size - 1` of its array is an object it holds. The miss and abort paths live in a
    // section of their own, so that the taken path runs straight through; the abort handler
    // counts in `slab::rseq::ABORTS`, an `AtomicU64`.
    unsafe {
        std::arch::asm!(
            slab::rseq_sequence_start!("hdr"),
            own_free_slot!(),
            "mov {hdr}, qword ptr [{cpus} + {cpu} + {main_at}]",
            "mov {word}, qword ptr [{hdr} + {word_at}]",
            "test {word:e}, {word:e}",
            "jz 7f",
            "lea {cpu:e}, [{word} - 1]",
            "mov {object}, qword ptr [{hdr} + {cpu} * 8 + {objects_at}]",
            "sub {word}, {step}",
            "jb 7f",
            "mov qword ptr [{hdr} + {word_at}], {word}",
            result_end!("object"),
            offset = in(reg) offset,
            cpus = in(reg) cpus,
            ncpus = in(reg) ncpus,
            stride_shift = const STRIDE_SHIFT,
            lock_at = const LOCK_AT,
            main_at = const MAIN_AT,
            word_at = const layout::WORD,
            objects_at = const layout::OBJECTS,
            aborts = sym slab::rseq::ABORTS,
            step = in(reg) POP_STEP,
            hdr = out(reg) _,
            cpu = out(reg) _,
            word = out(reg) _,
            object = out(reg) object,
            options(nostack),
        );
    }
    NonNull::new(object as *mut u8)
}

/// Loads the sheaf pointer at `sheaf_at` in the slot (`cpu` holding the slot's offset in the
/// table) into `hdr` and its word into `word`, and misses (label `7`) when it is full: the
/// push onto `main`.
macro_rules! main_with_room {
    () => {
        concat!(
            "mov {hdr}, qword ptr [{cpus} + {cpu} + {sheaf_at}]\n",
            "mov {word}, qword ptr [{hdr} + {word_at}]\n",
            "cmp {word:e}, dword ptr [{hdr} + {capacity_at}]\n",
            "je 7f",
        )
    };
}

/// As [`main_with_room`], for the push onto `rcu_free`: also misses when there is no sheaf
/// (a null pointer).
macro_rules! rcu_free_with_room {
    () => {
        concat!(
            "mov {hdr}, qword ptr [{cpus} + {cpu} + {sheaf_at}]\n",
            "test {hdr}, {hdr}\n",
            "jz 7f\n",
            "mov {word}, qword ptr [{hdr} + {word_at}]\n",
            "cmp {word:e}, dword ptr [{hdr} + {capacity_at}]\n",
            "je 7f",
        )
    };
}

/// One push sequence onto the sheaf at `$sheaf_at` in a slot, whose lock at `$lock_at` must be
/// free. `$slot` (a prologue macro: [`own_free_slot`] for the caller's CPU slot in the table
/// `$cpus`, [`own_thread_slot`] for the thread's slot at `$cpus`) leaves the slot's offset
/// from `{cpus}` in `{cpu}` and checks the lock; `$find` (one of the two macros above) finds
/// the sheaf; `$extra` are the operands the prologue needs beyond the common ones. On a miss
/// it *returns* `Err($object)` from the function it is expanded in (the asm's `miss` label),
/// and otherwise evaluates to `()`. Used inside an `unsafe` block whose caller keeps the
/// contract of [`push`] (or [`push_rcu_at`]).
macro_rules! push_sequence {
    (
        $slot:ident, $find:ident, $lock_at:expr, $sheaf_at:expr,
        $cpus:expr, $offset:expr, $object:expr, $($extra:tt)*
    ) => {{
        let object: NonNull<u8> = $object;
        std::arch::asm!(
            slab::rseq_sequence_start!("hdr"),
            $slot!(),
            $find!(),
            "mov {cpu:e}, {word:e}",
            "mov qword ptr [{hdr} + {cpu} * 8 + {objects_at}], {object}",
            "sub {word}, {step}",
            "jb 7f",
            "mov qword ptr [{hdr} + {word_at}], {word}",
            push_end!(),
            offset = in(reg) $offset,
            cpus = in(reg) $cpus,
            object = in(reg) object.as_ptr(),
            lock_at = const $lock_at,
            sheaf_at = const $sheaf_at,
            word_at = const layout::WORD,
            capacity_at = const layout::CAPACITY,
            objects_at = const layout::OBJECTS,
            aborts = sym slab::rseq::ABORTS,
            step = in(reg) PUSH_STEP,
            hdr = out(reg) _,
            cpu = out(reg) _,
            word = out(reg) _,
            miss = label {
                return Err(object);
            },
            $($extra)*
            options(nostack),
        );
    }};
}

/// Pushes `object` onto the `main` of the caller's CPU slot in `cpus` in one restartable
/// sequence; gives it back on a miss.
///
/// # Safety
///
/// - As for [`pop`]; `object` is a free object of the slots' cache, owned by the caller.
#[inline(always)]
pub(super) unsafe fn push(
    cpus: *const CachePadded<Slot>,
    ncpus: usize,
    offset: isize,
    object: NonNull<u8>,
) -> Result<(), NonNull<u8>> {
    // SAFETY: as in `pop`. The object is written to entry `size`, beyond the held range,
    // before the commit: an aborted or missed attempt leaves it there unheld, which is
    // harmless. `size < capacity` was checked, so that entry lies inside the array of a sheaf
    // that is not the sentinel (capacity 0).
    unsafe {
        push_sequence!(
            own_free_slot,
            main_with_room,
            LOCK_AT,
            MAIN_AT,
            cpus,
            offset,
            object,
            ncpus = in(reg) ncpus,
            stride_shift = const STRIDE_SHIFT,
        )
    };
    Ok(())
}

/// Pushes `object` onto the `rcu_free` sheaf of the caller's CPU slot in `cpus` in one
/// restartable sequence, when the slot has one with room (the push may fill it: the next
/// deferred free starts a sheaf, see [`start_rcu`]);
/// gives it back on a miss. The budget word counts these pushes as deferred objects.
///
/// # Safety
///
/// - As for [`push`]; `object` is a live object of the slots' cache handed over for a
///   deferred free.
#[inline(always)]
pub(super) unsafe fn push_rcu(
    cpus: *const CachePadded<Slot>,
    ncpus: usize,
    offset: isize,
    object: NonNull<u8>,
) -> Result<(), NonNull<u8>> {
    // SAFETY: as in `push`, on the slot's `rcu_free` sheaf, which `rcu_lock` protects as the
    // main lock does `main`: a null pointer (no sheaf) is a miss before anything is written, and
    // `size < capacity` keeps the written entry inside the array.
    unsafe {
        push_sequence!(
            own_free_slot,
            rcu_free_with_room,
            RCU_LOCK_AT,
            RCU_FREE_AT,
            cpus,
            offset,
            object,
            ncpus = in(reg) ncpus,
            stride_shift = const STRIDE_SHIFT,
        )
    };
    Ok(())
}

/// The largest spare the spare's sequences lend, and the largest sheaf they take back: a
/// record's sums have 24 bits, and its counts (8 bits) overflow first (a miss, after which
/// a lock holder folds the record) while every operation adds at most this much.
pub(super) const SPARE_SEQUENCE_MAX: u32 = 0xFFFF;

/// What one lend or give-back adds to its half of a record: one to the count in the top 8
/// bits, besides the sheaf's size to the sum in the low 24 (`Slot::take_spare_counts`).
const RECORD_COUNT_ONE: u32 = 1 << 24;

/// The prefill's fast path as one restartable sequence: lends the `spare` of the caller's
/// CPU slot in `cpus` when it holds from `count` to [`SPARE_SEQUENCE_MAX`] objects, and
/// counts the lend in the slot's record in use; `None` on a miss (no spare, too few or too
/// many objects, a held slot, a full record, an abort).
///
/// ```text
/// lend:  cpus, slot and the lock as for a pop
///        word = slot.spare; sheaf = word & !TAG; if sheaf == null            -> miss
///        if not count <= sheaf.size <= MAX                                   -> miss
///        r = word & TAG                                          (the record in use)
///        lends = records[r].lends + (1 << 24) + sheaf.size; if it carried    -> miss
///        records[r ^ 1] = (lends, records[r].gives)            (unused copy: harmless)
///        slot.spare = r ^ 1                                      (commit: null, other copy)
/// ```
///
/// # Safety
///
/// - As for [`pop`]; `count <= SPARE_SEQUENCE_MAX`.
#[inline(always)]
pub(super) unsafe fn lend_spare(
    cpus: *const CachePadded<Slot>,
    ncpus: usize,
    offset: isize,
    count: u32,
) -> Option<NonNull<()>> {
    let sheaf: usize;
    // SAFETY: a restartable sequence laid out as in `pop` (descriptor, signature before the
    // abort handler, `rseq_cs` cleared on every exit). It reads the CPU number inside the
    // sequence, bounds it by the table and checks the lock before it reads the slot's
    // `spare` word; while the lock is free and the thread runs on that CPU, the word, the
    // records and the spare sheaf belong to this sequence (module docs), so the header it
    // reads is a live sheaf of the slot. Its only writes before the commit go to the record
    // that the tag does not name, which nothing reads until a commit names it, and which
    // every sequence writes in full before it does; an aborted attempt rewrites the same
    // values. The commit (the store of the `spare` word: null, tagged with the other record)
    // is the last instruction, so the lend and its counts take effect together.
    unsafe {
        std::arch::asm!(
            slab::rseq_sequence_start!("hdr"),
            own_free_slot!(),
            "add {cpu}, {cpus}",
            "mov {word}, qword ptr [{cpu} + {spare_at}]",
            "mov {hdr}, {word}",
            "and {hdr}, ~{tag}",
            "jz 7f",
            "mov {k:e}, dword ptr [{hdr} + {word_at}]",
            "mov {t:e}, {k:e}",
            "sub {t:e}, {count:e}",
            "cmp {t:e}, {limit:e}",
            "ja 7f",
            "and {word:e}, {tag}",
            "add {k:e}, {one}",
            "add {k:e}, dword ptr [{cpu} + {word} * 8 + {records_at}]",
            "jc 7f",
            "mov {t:e}, dword ptr [{cpu} + {word} * 8 + {records_at} + 4]",
            "xor {word:e}, {tag}",
            "mov dword ptr [{cpu} + {word} * 8 + {records_at}], {k:e}",
            "mov dword ptr [{cpu} + {word} * 8 + {records_at} + 4], {t:e}",
            "mov qword ptr [{cpu} + {spare_at}], {word}",
            result_end!("hdr"),
            offset = in(reg) offset,
            cpus = in(reg) cpus,
            ncpus = in(reg) ncpus,
            count = in(reg) count,
            limit = in(reg) SPARE_SEQUENCE_MAX - count,
            stride_shift = const STRIDE_SHIFT,
            lock_at = const LOCK_AT,
            spare_at = const SPARE_AT,
            records_at = const RECORDS_AT,
            tag = const super::SPARE_TAG,
            word_at = const layout::WORD,
            one = const RECORD_COUNT_ONE,
            aborts = sym slab::rseq::ABORTS,
            hdr = out(reg) sheaf,
            cpu = out(reg) _,
            word = out(reg) _,
            k = out(reg) _,
            t = out(reg) _,
            options(nostack),
        );
    }
    NonNull::new(sheaf as *mut ())
}

/// The return's fast path as one restartable sequence: makes `sheaf` (holding `size`
/// objects, at most [`SPARE_SEQUENCE_MAX`]) the `spare` of the caller's CPU slot in `cpus`
/// when the slot has none, and counts the give-back in the slot's record in use; `Err` on a
/// miss (a spare in place, a held slot, a full record, an abort), the sheaf still the
/// caller's.
///
/// ```text
/// give:  cpus, slot and the lock as for a pop
///        word = slot.spare; if word & !TAG != null                          -> miss
///        r = word                                                (the record in use)
///        gives = records[r].gives + (1 << 24) + size; if it carried         -> miss
///        records[r ^ 1] = (records[r].lends, gives)            (unused copy: harmless)
///        slot.spare = sheaf | (r ^ 1)                                        (commit)
/// ```
///
/// # Safety
///
/// - As for [`pop`].
/// - `sheaf` is a sheaf of the slots' cache of its current capacity, owned by the caller,
///   holding `size <= SPARE_SEQUENCE_MAX` objects; on `Ok` the slot owns it (the caller
///   gives up its handle without freeing it).
#[inline(always)]
pub(super) unsafe fn give_back_spare(
    cpus: *const CachePadded<Slot>,
    ncpus: usize,
    offset: isize,
    sheaf: NonNull<()>,
    size: u32,
) -> Result<(), ()> {
    // SAFETY: as in `lend_spare`: the word is read after the lock check, the only write
    // before the commit goes to the record the tag does not name, and the commit (the
    // `spare` word: the sheaf's address, 8-byte aligned, tagged with the other record) is
    // the last instruction.
    unsafe {
        std::arch::asm!(
            slab::rseq_sequence_start!("hdr"),
            own_free_slot!(),
            "add {cpu}, {cpus}",
            "mov {word}, qword ptr [{cpu} + {spare_at}]",
            "cmp {word}, {tag}",
            "ja 7f",
            "mov {hdr:e}, dword ptr [{cpu} + {word} * 8 + {records_at} + 4]",
            "add {hdr:e}, {delta:e}",
            "jc 7f",
            "mov {t:e}, dword ptr [{cpu} + {word} * 8 + {records_at}]",
            "xor {word:e}, {tag}",
            "mov dword ptr [{cpu} + {word} * 8 + {records_at}], {t:e}",
            "mov dword ptr [{cpu} + {word} * 8 + {records_at} + 4], {hdr:e}",
            "or {word}, {sheaf}",
            "mov qword ptr [{cpu} + {spare_at}], {word}",
            push_end!(),
            offset = in(reg) offset,
            cpus = in(reg) cpus,
            ncpus = in(reg) ncpus,
            sheaf = in(reg) sheaf.as_ptr(),
            delta = in(reg) RECORD_COUNT_ONE + size,
            stride_shift = const STRIDE_SHIFT,
            lock_at = const LOCK_AT,
            spare_at = const SPARE_AT,
            records_at = const RECORDS_AT,
            tag = const super::SPARE_TAG,
            aborts = sym slab::rseq::ABORTS,
            hdr = out(reg) _,
            cpu = out(reg) _,
            word = out(reg) _,
            t = out(reg) _,
            miss = label {
                return Err(());
            },
            options(nostack),
        );
    }
    Ok(())
}

impl RcuStep {
    /// The step a chain sequence's exit code stands for.
    fn from_code(code: u32) -> Self {
        match code {
            0 => RcuStep::Done,
            1 => RcuStep::Busy,
            2 => RcuStep::NotHere,
            3 => {
                slab::rseq::ABORTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                RcuStep::Aborted
            }
            4 => RcuStep::HasRoom,
            _ => RcuStep::NeedSheaf,
        }
    }
}

/// The prologue of the chain sequences, after [`slab::rseq_sequence_start`]: the caller's CPU
/// slot's address in `slot` (code 2 and a jump to the exit `9` when the CPU is beyond the
/// table), code 1 and the exit when its `rcu_lock` is held, and the first sheaf of the chain
/// in `hdr`.
macro_rules! chain_head {
    () => {
        concat!(
            "mov {slot:e}, dword ptr fs:[{offset} + 4]\n",
            "mov {out:e}, 2\n",
            "cmp {slot}, {ncpus}\n",
            "jae 9f\n",
            "shl {slot}, {stride_shift}\n",
            "add {slot}, {cpus}\n",
            "mov {out:e}, 1\n",
            "cmp byte ptr [{slot} + {lock_at}], 0\n",
            "jne 9f\n",
            "mov {hdr}, qword ptr [{slot} + {sheaf_at}]",
        )
    };
}

/// With a first sheaf in `hdr`: code 4 and the exit when it has room.
macro_rules! chain_room {
    () => {
        concat!(
            "mov {out:e}, 4\n",
            "mov {p:e}, dword ptr [{hdr} + {word_at}]\n",
            "cmp {p:e}, dword ptr [{hdr} + {capacity_at}]\n",
            "jne 9f",
        )
    };
}

/// The end of a chain sequence, right after its commit: code 0, or 3 from the abort handler;
/// every exit (`9`) clears `rseq_cs`.
macro_rules! chain_end {
    () => {
        concat!(
            "5:\n",
            "xor {out:e}, {out:e}\n",
            "jmp 9f\n",
            ".long 0x53053053\n",
            "6:\n",
            "mov {out:e}, 3\n",
            "9:\n",
            "mov qword ptr fs:[{offset} + 8], 0",
        )
    };
}

/// Puts `sheaf` first in the deferred-free chain of the caller's CPU slot in `cpus`, in one
/// restartable sequence whose commit is the store of the slot's `rcu_free` pointer, when the
/// slot's `rcu_lock` is free, and the chain is empty or its first sheaf is full
/// ([`RcuStep::Done`], with the slot's address). With `sheaf`
/// `None` nothing is committed: the step says what the chain needs.
///
/// Before the commit the sequence links the chain behind `sheaf` (its `next`), a write to
/// the caller's own sheaf that is harmless if the sequence then aborts or misses; the caller
/// clears the link again unless the step is `Done`.
///
/// # Safety
///
/// - As for [`pop`].
/// - `sheaf`, if any, is a sheaf of the slots' cache owned by the caller, unlinked, its
///   counts consistent (`OwnedSheaf::push_counted`), holding deferred objects; on `Done` the
///   slot owns it (the caller gives up its handle without freeing it).
#[inline]
pub(super) unsafe fn start_rcu(
    cpus: *const CachePadded<Slot>,
    ncpus: usize,
    offset: isize,
    sheaf: Option<NonNull<()>>,
) -> (RcuStep, *const Slot) {
    let code: u32;
    let slot: usize;
    // SAFETY: a restartable sequence laid out as in `pop` (descriptor, signature before the
    // abort handler `6`, `rseq_cs` cleared on every exit `9`). It reads the CPU number inside
    // the sequence, bounds it by the table and checks `rcu_lock` before reading the chain;
    // while the lock is free and the thread runs on that CPU, the chain belongs to this
    // sequence (module docs), so the headers it reads are live sheaves of the slot, linked as
    // `RcuSheaves` says. Its only write before the commit is to the caller's own sheaf, and
    // the commit (the store of the `rcu_free` pointer) is its last instruction.
    unsafe {
        std::arch::asm!(
            slab::rseq_sequence_start!("hdr"),
            chain_head!(),
            "test {hdr}, {hdr}",
            "jz 2f",
            chain_room!(),
            "2:",
            "mov {out:e}, 6",
            "test {sheaf}, {sheaf}",
            "jz 9f",
            "mov qword ptr [{sheaf} + {next_at}], {hdr}",
            "mov qword ptr [{slot} + {sheaf_at}], {sheaf}",
            chain_end!(),
            offset = in(reg) offset,
            cpus = in(reg) cpus,
            ncpus = in(reg) ncpus,
            sheaf = in(reg) sheaf.map_or(std::ptr::null_mut(), NonNull::as_ptr),
            stride_shift = const STRIDE_SHIFT,
            lock_at = const RCU_LOCK_AT,
            sheaf_at = const RCU_FREE_AT,
            word_at = const layout::WORD,
            capacity_at = const layout::CAPACITY,
            next_at = const layout::NEXT,
            slot = out(reg) slot,
            hdr = out(reg) _,
            p = out(reg) _,
            out = out(reg) code,
            options(nostack),
        );
    }
    (RcuStep::from_code(code), slot as *const Slot)
}

/// Per-thread: the prologue of a sequence on a slot given by address, after
/// [`slab::rseq_sequence_start`]. The thread's rseq area must be registered (its `cpu_id` a
/// CPU number, not one of the kernel's negative markers): only then does the kernel abort
/// the sequence on a preemption, a signal or a remote fence. `$unregistered` and `$locked`
/// are the labels to jump to otherwise and when the slot's `rcu_lock` is held; `$slot` names
/// the operand that holds the slot's address.
macro_rules! given_slot {
    ($slot:literal, $unregistered:literal, $locked:literal) => {
        concat!(
            "cmp dword ptr fs:[{offset} + 4], 0x7FFFFFFF\n",
            "ja ",
            $unregistered,
            "\n",
            "cmp byte ptr [{",
            $slot,
            "} + {lock_at}], 0\n",
            "jne ",
            $locked,
        )
    };
}

/// Per-thread: [`own_free_slot`] for [`push_sequence`] on the thread's slot, whose address
/// is in `{cpus}`: misses (label `7`) when the rseq area is unregistered or `rcu_lock` is
/// held, and leaves offset 0 in `{cpu}`.
macro_rules! own_thread_slot {
    () => {
        concat!(
            given_slot!("cpus", "7f", "7f"),
            "\n",
            "xor {cpu:e}, {cpu:e}",
        )
    };
}

/// Per-thread: pushes `object` onto the `rcu_free` sheaf of the calling thread's `slot` in
/// one restartable sequence (as [`push_rcu`] does on a CPU slot), when the slot's
/// `rcu_lock` is free and the sheaf has room; gives the object back on a miss, an abort, or
/// when the thread's rseq area is not registered.
///
/// # Safety
///
/// - `offset` is the rseq offset that `slab::rseq::support` reported.
/// - `slot` is a live per-thread slot of the calling thread, whose `rcu_free` sheaf only
///   these sequences and holders of its `rcu_lock` change (`slot::chain`).
/// - `object` is a live object of the slot's cache, handed over for a deferred free.
#[inline(always)]
pub(super) unsafe fn push_rcu_at(
    slot: *const Slot,
    offset: isize,
    object: NonNull<u8>,
) -> Result<(), NonNull<u8>> {
    // SAFETY: a restartable sequence laid out as in `pop` (descriptor, signature before the
    // abort handler, `rseq_cs` cleared on every exit). It checks that the thread's rseq area
    // is registered (so a preemption, a signal or a remote fence aborts it) and that
    // `rcu_lock` is free before it reads `rcu_free`; while both hold, the sheaf is the
    // sequence's (`slot::chain`): a live sheaf, or null (a miss before anything is written).
    // The object goes to entry `size < capacity`, beyond the held range, before the commit
    // (the word), which is the last instruction.
    unsafe {
        push_sequence!(
            own_thread_slot,
            rcu_free_with_room,
            RCU_LOCK_AT,
            RCU_FREE_AT,
            slot,
            offset,
            object,
        )
    };
    Ok(())
}

/// Per-thread: puts `sheaf` first in the deferred-free chain of the calling thread's `slot`
/// in one restartable sequence (as [`start_rcu`] does on a CPU slot), when the slot's
/// `rcu_lock` is free and the chain is empty or its first sheaf full. [`RcuStep::NotHere`]
/// when the thread's rseq area is not registered.
///
/// # Safety
///
/// - As for [`push_rcu_at`]; `sheaf`, if any, as for [`start_rcu`].
#[inline]
pub(super) unsafe fn start_rcu_at(
    slot: *const Slot,
    offset: isize,
    sheaf: Option<NonNull<()>>,
) -> RcuStep {
    let code: u32;
    // SAFETY: as in `start_rcu`, on the given slot instead of the CPU's: the registration
    // and `rcu_lock` are checked before the chain is read; the only write before the commit
    // is to the caller's own sheaf, and the commit is the last instruction.
    unsafe {
        std::arch::asm!(
            slab::rseq_sequence_start!("hdr"),
            "mov {out:e}, 2",
            given_slot!("slot", "9f", "8f"),
            "mov {hdr}, qword ptr [{slot} + {sheaf_at}]",
            "test {hdr}, {hdr}",
            "jz 2f",
            chain_room!(),
            "2:",
            "mov {out:e}, 6",
            "test {sheaf}, {sheaf}",
            "jz 9f",
            "mov qword ptr [{sheaf} + {next_at}], {hdr}",
            "mov qword ptr [{slot} + {sheaf_at}], {sheaf}",
            "5:",
            "xor {out:e}, {out:e}",
            "jmp 9f",
            "8:",
            "mov {out:e}, 1",
            "jmp 9f",
            ".long 0x53053053",
            "6:",
            "mov {out:e}, 3",
            "9:",
            "mov qword ptr fs:[{offset} + 8], 0",
            offset = in(reg) offset,
            slot = in(reg) slot,
            sheaf = in(reg) sheaf.map_or(std::ptr::null_mut(), NonNull::as_ptr),
            lock_at = const RCU_LOCK_AT,
            sheaf_at = const RCU_FREE_AT,
            word_at = const layout::WORD,
            capacity_at = const layout::CAPACITY,
            next_at = const layout::NEXT,
            hdr = out(reg) _,
            p = out(reg) _,
            out = out(reg) code,
            options(nostack),
        );
    }
    RcuStep::from_code(code)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::ptr::NonNull;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use object_alloc::{AllocFlags, CacheConfig};

    use crate::slot::tests::{counter, pin, sequences_usable as sequences_run};
    use crate::{Cache, PerCpu};

    /// A per-CPU cache of 64-byte objects, the calling thread pinned to the CPU it runs on.
    fn pinned_cache() -> Cache<PerCpu> {
        let cpu = slab::cpu::current_cpu(slab::cpu::cpu_source());
        assert!(pin(cpu), "pinning to the current CPU");
        Cache::<PerCpu>::new(&CacheConfig::new(64)).unwrap()
    }

    /// Allocates `n` objects, reads the fast-path counters (a statistics reader adds what
    /// the sequences left pending), then frees the objects by the push sequence: returns
    /// them with the alloc and free counts read in between.
    fn alloc_then_push(cache: &Cache<PerCpu>, n: usize) -> (Vec<NonNull<u8>>, u64, u64) {
        let objects: Vec<NonNull<u8>> = (0..n)
            .map(|_| cache.alloc(AllocFlags::empty()).unwrap())
            .collect();
        let (allocs, frees) = (
            counter(cache, "alloc_fastpath"),
            counter(cache, "free_fastpath"),
        );
        for &object in &objects {
            // SAFETY: allocated above, freed once.
            assert_eq!(unsafe { cache.core().slots().push_fast(object) }, Ok(()));
        }
        (objects, allocs, frees)
    }

    #[test]
    fn sequences_pop_and_push_and_count_exactly() {
        if !sequences_run() {
            return;
        }
        let cache = pinned_cache();
        let slots = cache.core().slots();
        // An empty `main` (the sentinel at first) is a miss.
        assert_eq!(slots.pop_fast(), None);
        let (objects, allocs, frees) = alloc_then_push(&cache, 10);
        let popped: Vec<NonNull<u8>> = (0..10).map(|_| slots.pop_fast().unwrap()).collect();
        // Last in, first out, and every push and pop counted once.
        let mut expected = objects.clone();
        expected.reverse();
        assert_eq!(popped, expected);
        assert_eq!(counter(&cache, "free_fastpath"), frees + 10);
        assert_eq!(counter(&cache, "alloc_fastpath"), allocs + 10);
        // A held slot sends both to the locked path.
        {
            let _held = slots.acquire_fast().expect("the slot is free");
            assert_eq!(slots.pop_fast(), None);
            // SAFETY: as above; given back on the miss.
            assert_eq!(unsafe { slots.push_fast(popped[0]) }, Err(popped[0]));
        }
        for object in popped {
            // SAFETY: as above.
            unsafe { cache.free(object) };
        }
        assert!(cache.check_invariants());
    }

    /// The spare's sequences leave the pop and push counts pending on `main` alone, so the
    /// next lock holder (here a statistics reader) counts every pop and push once; and a
    /// held slot stops them as it stops the pop and the push.
    #[test]
    fn spare_sequences_leave_the_main_counts_exact() {
        if !sequences_run() {
            return;
        }
        let cache = pinned_cache();
        let slots = cache.core().slots();
        // Pending on `main` from here (nothing reads the counters until the end): 10 pushes,
        // then 4 pops.
        let (_, allocs, frees) = alloc_then_push(&cache, 10);
        let popped: Vec<NonNull<u8>> = (0..4).map(|_| slots.pop_fast().unwrap()).collect();
        // A prefill and its return: served from the slabs and taken back as the spare by a
        // sequence, then lent and given back again by the sequences.
        for _ in 0..3 {
            let mut sheaf = cache.prefill(AllocFlags::empty(), 5).unwrap();
            let taken = sheaf.alloc(AllocFlags::empty()).unwrap();
            sheaf.return_with(AllocFlags::empty());
            // SAFETY: allocated from the prefilled sheaf, freed once.
            unsafe { cache.free(taken) };
        }
        let counted = (
            counter(&cache, "alloc_fastpath") - allocs,
            counter(&cache, "free_fastpath") - frees,
        );
        // The 4 pops, and the 10 pushes with the frees of the three prefilled objects.
        assert_eq!(counted, (4, 13), "every operation counted once");
        assert_eq!(counter(&cache, "sheaf_prefill_fast"), 2);
        assert_eq!(counter(&cache, "sheaf_return_fast"), 3);
        {
            let _held = slots.acquire_fast().expect("the slot is free");
            assert!(
                slots.lend_spare_fast(0).is_none(),
                "a held slot stops the lend"
            );
        }
        let spare = slots
            .lend_spare_fast(0)
            .expect("the spare, the slot free again");
        let spare = {
            let _held = slots.acquire_fast().expect("the slot is free");
            slots
                .give_back_fast(spare)
                .expect_err("a held slot stops the give-back")
        };
        assert!(slots.give_back_fast(spare).is_ok());
        for object in popped {
            // SAFETY: as above.
            unsafe { cache.free(object) };
        }
        assert!(cache.check_invariants());
        cache.shrink();
        assert_eq!(cache.stats().live_objects, Some(0));
    }

    /// The prefill counters, read as a statistics reader does (it folds what the spare's
    /// sequences left pending): `[sheaf_prefill_fast, prefill_reserved, sheaf_return_fast,
    /// prefill_unused]`.
    fn prefill_counts(cache: &Cache<PerCpu>) -> [u64; 4] {
        let stats = cache.stats();
        let get = |name: &str| stats.counters.get(name).copied().unwrap_or(0);
        [
            get("sheaf_prefill_fast"),
            get("prefill_reserved"),
            get("sheaf_return_fast"),
            get("prefill_unused"),
        ]
    }

    /// The spare's sequences lend the spare and take a sheaf back as the spare without the
    /// slot's lock, and count exactly: while a sheaf is out (its objects live), across
    /// records that fill up (a miss after 255 operations, then a lock holder folds), and the
    /// tagged `spare` word they leave behind is read right by a shrink and by the cache's
    /// drop.
    #[test]
    fn spare_sequences_lend_give_back_and_count_exactly() {
        if !sequences_run() {
            return;
        }
        let cache = pinned_cache();
        let (core, slots) = (cache.core(), cache.core().slots());
        // No spare: a miss.
        assert!(slots.lend_spare_fast(1).is_none());
        // Two sheaves from the slabs; the first becomes the spare by the sequence, the second
        // finds a spare in place and misses.
        let first = core.prefill(AllocFlags::empty(), 5).unwrap();
        let second = core.prefill(AllocFlags::empty(), 5).unwrap();
        let (held, before) = (first.size() as u64, prefill_counts(&cache));
        assert!(slots.give_back_fast(first).is_ok());
        let second = slots.give_back_fast(second).unwrap_err();
        core.return_sheaf(second, AllocFlags::empty());
        let live = cache.stats().live_objects.unwrap();
        // Lent by the sequence: its objects count as live at once, and the lend once.
        let lent = slots
            .lend_spare_fast(held as usize)
            .expect("the spare holds enough");
        assert!(slots.lend_spare_fast(0).is_none(), "no spare left to lend");
        assert_eq!(cache.stats().live_objects, Some(live + held));
        let after = prefill_counts(&cache);
        assert_eq!(
            [
                after[0] - before[0],
                after[1] - before[1],
                after[2] - before[2]
            ],
            [1, held, 1],
            "one lend of {held}, one return as the spare (the other went to the barn)"
        );
        // Asking for more than the spare holds is a miss that leaves it in place.
        assert!(slots.give_back_fast(lent).is_ok());
        assert!(slots.lend_spare_fast(held as usize + 1).is_none());
        // Many cycles with nothing else on the slot: the records fill and are folded.
        let before = prefill_counts(&cache);
        let (cycles, mut by_sequence) = (1000u64, 0u64);
        for _ in 0..cycles {
            let sheaf = match slots.lend_spare_fast(3) {
                Some(sheaf) => {
                    by_sequence += 1;
                    sheaf
                }
                None => core.prefill(AllocFlags::empty(), 3).unwrap(),
            };
            assert_eq!(sheaf.size() as u64, held);
            if let Err(sheaf) = slots.give_back_fast(sheaf) {
                core.return_sheaf(sheaf, AllocFlags::empty());
            }
        }
        let after = prefill_counts(&cache);
        let counted: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        assert_eq!(counted, [cycles, cycles * held, cycles, cycles * held]);
        // Each record holds 255 lends: a few misses, the rest sequences (aborts aside).
        assert!(
            by_sequence >= cycles - 20,
            "{by_sequence} of {cycles} by sequence"
        );
        assert!(by_sequence < cycles, "a full record must miss");
        // A spare given back by a sequence (so its word is tagged) is flushed by a shrink...
        let before = prefill_counts(&cache);
        let lent = slots.lend_spare_fast(0).unwrap();
        assert!(slots.give_back_fast(lent).is_ok());
        cache.shrink();
        assert_eq!(cache.stats().live_objects, Some(0));
        let after = prefill_counts(&cache);
        assert_eq!(after[0] - before[0], 1);
        assert_eq!(after[2] - before[2], 1);
        assert!(cache.check_invariants());
        // ...and freed by the cache's drop.
        let sheaf = core.prefill(AllocFlags::empty(), 2).unwrap();
        assert!(slots.give_back_fast(sheaf).is_ok());
        drop(cache);
    }

    #[test]
    fn deferred_frees_take_the_sequence_and_are_counted() {
        if !sequences_run() {
            return;
        }
        let cpu = slab::cpu::current_cpu(slab::cpu::cpu_source());
        assert!(pin(cpu), "pinning to the current CPU");
        let cache = Cache::<PerCpu>::new(&CacheConfig::new(64).with_sheaf_capacity(16)).unwrap();
        let slots = cache.core().slots();
        let objects: Vec<NonNull<u8>> = (0..70)
            .map(|_| cache.alloc(AllocFlags::empty()).unwrap())
            .collect();
        // No `rcu_free` sheaf yet: a miss, and the object comes back.
        // SAFETY: allocated above; given back on the miss.
        assert_eq!(unsafe { slots.push_rcu_fast(objects[0]) }, Err(objects[0]));
        // The slow path starts a sheaf; the next 15 fill it; the 17th misses: a new sheaf
        // is due.
        // SAFETY: live objects of this cache, each freed once.
        unsafe { cache.free_deferred(objects[0]) };
        for &object in &objects[1..16] {
            // SAFETY: as above.
            assert_eq!(unsafe { slots.push_rcu_fast(object) }, Ok(()));
        }
        // SAFETY: as above; given back on the miss.
        let missed = unsafe { slots.push_rcu_fast(objects[16]) };
        assert_eq!(missed, Err(objects[16]));
        assert_eq!(
            slots.start_rcu_fast(None).0,
            crate::slot::RcuStep::NeedSheaf
        );
        assert_eq!(counter(&cache, "deferred_objects"), 16);
        assert_eq!(counter(&cache, "free_rcu_sheaf"), 16);
        for &object in &objects[16..] {
            // SAFETY: as above.
            unsafe { cache.free_deferred(object) };
        }
        // Four full sheaves after the 64th, sealed one by one as the next sheaf starts; every
        // push is counted, on the first sheaf and on the sealed ones.
        assert_eq!(counter(&cache, "deferred_objects"), 70);
        cache.barrier();
        assert_eq!(counter(&cache, "rcu_objects_completed"), 70);
        assert_eq!(counter(&cache, "free_rcu_sheaf"), 70);
        assert!(cache.check_invariants());
    }

    /// Threads on one CPU preempt each other inside the sequences (aborts), while another
    /// thread takes the slot from afar (`shrink`) and reads the counters, and the hand-over
    /// thread takes the `rcu_free` sheaves: no object is handed out twice, and the counters
    /// add up to every operation.
    #[test]
    fn preempted_and_fenced_sequences_lose_nothing() {
        if !sequences_run() {
            return;
        }
        let cpu = slab::cpu::current_cpu(slab::cpu::cpu_source());
        let cache =
            Arc::new(Cache::<PerCpu>::new(&CacheConfig::new(64).with_sheaf_capacity(8)).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        const OPS: usize = 2_000_000;
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    let pinned = pin(cpu);
                    let mut held = Vec::with_capacity(16);
                    let mut allocs = 0u64;
                    let mut deferred = 0u64;
                    let mut prefills = 0u64;
                    for i in 0..OPS {
                        if i % 11 == 0 {
                            // A prefill, one object taken, the return: the spare's sequences.
                            let mut sheaf = cache.prefill(AllocFlags::empty(), 3).unwrap();
                            let object = sheaf.alloc(AllocFlags::empty()).unwrap();
                            sheaf.return_with(AllocFlags::empty());
                            prefills += 1;
                            // SAFETY: taken from the prefilled sheaf, freed once.
                            unsafe { cache.free(object) };
                        } else if held.len() < 12 && (i % 3 != 0 || held.is_empty()) {
                            held.push(cache.alloc(AllocFlags::empty()).unwrap());
                            allocs += 1;
                        } else {
                            let object = held.pop().unwrap();
                            if i % 7 == 0 {
                                deferred += 1;
                                // SAFETY: allocated by this thread, freed once.
                                unsafe { cache.free_deferred(object) };
                            } else {
                                // SAFETY: allocated by this thread, freed once.
                                unsafe { cache.free(object) };
                            }
                        }
                    }
                    let held: Vec<usize> = held.iter().map(|o| o.as_ptr() as usize).collect();
                    (pinned, held, allocs, deferred, prefills)
                })
            })
            .collect();
        let fencer = {
            let (cache, stop) = (Arc::clone(&cache), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    cache.shrink();
                    let _ = cache.stats();
                    std::thread::yield_now();
                }
            })
        };
        let mut all = HashSet::new();
        let mut remaining = Vec::new();
        let mut expected_allocs = 0;
        let mut expected_deferred = 0;
        let mut expected_prefills = 0;
        for worker in workers {
            let (pinned, held, allocs, deferred, prefills) = worker.join().unwrap();
            assert!(pinned);
            expected_allocs += allocs;
            expected_deferred += deferred;
            expected_prefills += prefills;
            for address in held {
                assert!(all.insert(address), "{address:#x} handed out twice");
                remaining.push(NonNull::new(address as *mut u8).unwrap());
            }
        }
        stop.store(true, Ordering::Relaxed);
        fencer.join().unwrap();
        cache.barrier();
        let stats = cache.stats();
        let get = |name: &str| stats.counters.get(name).copied().unwrap_or(0);
        let allocs = get("alloc_fastpath") + get("alloc_slowpath");
        assert_eq!(allocs, expected_allocs);
        assert_eq!(get("deferred_objects"), expected_deferred);
        // Every prefill and return counted once, whichever path served it; each took one
        // object, so the reserved objects exceed the unused ones by one a prefill.
        assert_eq!(
            get("sheaf_prefill_fast") + get("sheaf_prefill_slow"),
            expected_prefills
        );
        assert_eq!(
            get("sheaf_return_fast") + get("sheaf_return_slow"),
            expected_prefills
        );
        assert_eq!(
            get("prefill_reserved") - get("prefill_unused"),
            expected_prefills
        );
        // After the barrier every deferred free has completed: what is live is what the
        // workers still hold.
        assert_eq!(stats.live_objects, Some(remaining.len() as u64));
        eprintln!(
            "{} aborted sequences in the process so far",
            slab::rseq::aborts()
        );
        assert!(cache.check_invariants());
        for object in remaining {
            // SAFETY: allocated by a worker, freed once.
            unsafe { cache.free(object) };
        }
        assert!(cache.check_invariants());
    }
}
