//! The sheaf: a heap-allocated array of free objects with a small header.
//!
//! A sheaf is one allocation: a [`SheafHeader`] (size, capacity and a list link) followed by
//! `capacity` object pointers. The header is at most
//! [`SHEAF_HEADER_BYTES`], so the kernel-style default
//! capacity fills the sheaf's allocation size class with no slack. CPU slots, the barn and
//! prefilled handles keep *pointers* to sheaves, as the kernel's `main` and `spare` do: a
//! swap of `main` and `spare` is then two pointer moves, and the fast path reaches the array
//! through one load.
//!
//! # Invariants
//!
//! - `size <= capacity`; the first `size` entries are free objects of the owning cache, each
//!   held by no one else. Entries past `size` are unspecified.
//! - An [`OwnedSheaf`] is the only owner of its sheaf: whoever holds it (a slot, the barn, a
//!   prefilled handle, a deferred callback) may read and write it without synchronisation.
//! - The shared sentinel [`OwnedSheaf::none`] has capacity 0 and is never written: it is empty
//!   and full at once, so a slot whose `main` is the sentinel sends both alloc and free to
//!   the slow path without a null check on the fast path.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::fmt;
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

use object_alloc::SHEAF_HEADER_BYTES;

/// The header in front of a sheaf's object array.
///
/// `size` and `fast_budget` form one 8-byte word that the per-CPU restartable sequences
/// (`slot::rseq_ops`) commit with a single store: each push or pop by a sequence changes
/// `size` by one and takes one from `fast_budget`, so an aborted sequence changes neither and
/// a committed one both. A sequence that finds the budget spent misses (the locked path runs
/// instead), so the count of sequence operations, `FAST_BUDGET - fast_budget`, never wraps.
/// With `size_at_rebase` that count splits exactly into pushes and pops
/// ([`OwnedSheaf::take_fast_counts`]); the slot's lock holders take the counts and re-base
/// the sheaf ([`OwnedSheaf::rebase`]). Code other than the sequences never changes the
/// budget, except [`OwnedSheaf::push_counted`], which counts a push as theirs.
#[repr(C)]
pub(crate) struct SheafHeader {
    /// Objects held: entries `0..size` of the array.
    size: u32,
    /// Operations the sequences may still commit before the next re-base.
    fast_budget: u32,
    /// Entries in the array.
    capacity: u32,
    /// `size` at the last re-base.
    size_at_rebase: u32,
    /// Link for the barn's intrusive lists and a slot's chain of deferred-free sheaves
    /// (`slot::RcuSheaves`); null elsewhere.
    next: *mut SheafHeader,
    /// Per-CPU deferred-free sheaves: the grace-period stamp a sealed sheaf got when it joined
    /// its slot's sealed list (`slot::chain`); unspecified elsewhere.
    stamp: u64,
}

/// The budget a re-base sets: the most sequence operations between two re-bases.
const FAST_BUDGET: u32 = u32::MAX;

/// Byte offsets in [`SheafHeader`] used by the restartable sequences.
pub(crate) mod layout {
    use super::SheafHeader;
    use std::mem::offset_of;

    /// The word of `size` (low half) and `fast_budget` (high half).
    pub(crate) const WORD: usize = offset_of!(SheafHeader, size);
    /// `capacity`.
    pub(crate) const CAPACITY: usize = offset_of!(SheafHeader, capacity);
    /// The first entry of the object array.
    pub(crate) const OBJECTS: usize = size_of::<SheafHeader>();
    /// `next`, which chains a slot's deferred-free sheaves (`slot::RcuSheaves`).
    pub(crate) const NEXT: usize = offset_of!(SheafHeader, next);

    const _: () = assert!(WORD == 0 && offset_of!(SheafHeader, fast_budget) == 4);
}

const _: () = assert!(size_of::<SheafHeader>() <= SHEAF_HEADER_BYTES);
const _: () = assert!(size_of::<SheafHeader>().is_multiple_of(align_of::<NonNull<u8>>()));

/// The capacity-0 sentinel that stands for "no sheaf". Never written.
struct Sentinel(SheafHeader);

// SAFETY: the sentinel is never written (its capacity is 0, so no push or pop touches it, and
// `OwnedSheaf::free`/`set_next` skip it), so sharing it between threads is sound.
unsafe impl Sync for Sentinel {}

static NO_SHEAF: Sentinel = Sentinel(SheafHeader {
    size: 0,
    fast_budget: 0,
    capacity: 0,
    size_at_rebase: 0,
    next: ptr::null_mut(),
    stamp: 0,
});

/// The largest capacity a sheaf can have (the header stores it in 32 bits).
pub(crate) const MAX_CAPACITY: usize = u32::MAX as usize / 2;

/// The sole owner of one sheaf (or of the shared sentinel).
///
/// Not `Drop`: a sheaf holds objects that must go back to their slabs first, so every sheaf
/// is released explicitly with [`OwnedSheaf::free`] once empty.
#[repr(transparent)]
pub(crate) struct OwnedSheaf {
    header: NonNull<SheafHeader>,
}

// SAFETY: an `OwnedSheaf` is the only handle to its allocation; moving it to another thread
// moves the ownership with it. The objects it holds are free memory of a cache whose slabs
// accept them from any thread.
unsafe impl Send for OwnedSheaf {}

impl OwnedSheaf {
    fn layout(capacity: usize) -> Layout {
        let bytes = size_of::<SheafHeader>() + capacity * size_of::<NonNull<u8>>();
        Layout::from_size_align(bytes, align_of::<SheafHeader>()).expect("sheaf layout")
    }

    /// The sentinel that stands for "no sheaf": capacity 0, never written, never freed.
    #[inline]
    pub(crate) fn none() -> Self {
        Self {
            header: NonNull::from(&NO_SHEAF.0),
        }
    }

    /// Whether this is the sentinel.
    #[inline]
    pub(crate) fn is_none(&self) -> bool {
        ptr::eq(self.header.as_ptr(), &NO_SHEAF.0)
    }

    /// Allocates an empty sheaf of `capacity` entries (`1..=MAX_CAPACITY`).
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(
            (1..=MAX_CAPACITY).contains(&capacity),
            "sheaf capacity {capacity} out of range"
        );
        let layout = Self::layout(capacity);
        // SAFETY: the layout has a non-zero size (the header alone is 32 bytes).
        let raw = unsafe { alloc(layout) }.cast::<SheafHeader>();
        let Some(header) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        // SAFETY: `header` points to fresh memory sized and aligned for a header.
        unsafe {
            header.write(SheafHeader {
                size: 0,
                fast_budget: FAST_BUDGET,
                capacity: capacity as u32,
                size_at_rebase: 0,
                next: ptr::null_mut(),
                stamp: 0,
            });
        }
        Self { header }
    }

    /// Frees an empty sheaf (the sentinel is ignored).
    pub(crate) fn free(self) {
        if self.is_none() {
            return;
        }
        debug_assert_eq!(
            self.size(),
            0,
            "freeing sheaf {:p} that holds objects",
            self.header
        );
        let layout = Self::layout(self.capacity());
        // SAFETY: a non-sentinel sheaf was allocated by `new` with this very layout, and
        // `self` was its only owner.
        unsafe { dealloc(self.header.as_ptr().cast(), layout) };
    }

    #[inline(always)]
    fn header(&self) -> &SheafHeader {
        // SAFETY: `header` points to a live header (allocated by `new`, or the static
        // sentinel) that only this owner accesses.
        unsafe { self.header.as_ref() }
    }

    #[inline(always)]
    fn objects_ptr(&self) -> *mut NonNull<u8> {
        // SAFETY: the array starts right after the header inside the same allocation (for the
        // sentinel, one past its end, which is never dereferenced since its capacity is 0).
        unsafe { self.header.as_ptr().add(1).cast() }
    }

    /// Objects held.
    #[inline(always)]
    pub(crate) fn size(&self) -> usize {
        self.header().size as usize
    }

    /// Entries in the array.
    #[inline(always)]
    pub(crate) fn capacity(&self) -> usize {
        self.header().capacity as usize
    }

    /// Whether the sheaf holds no object.
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.header().size == 0
    }

    /// Whether the sheaf holds `capacity` objects (the sentinel is full and empty at once).
    #[inline(always)]
    pub(crate) fn is_full(&self) -> bool {
        let header = self.header();
        header.size == header.capacity
    }

    /// Room left.
    #[inline(always)]
    pub(crate) fn room(&self) -> usize {
        self.capacity() - self.size()
    }

    /// Takes the most recently pushed object.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<NonNull<u8>> {
        // The header pointer is read once: the writes below go through this copy, so the
        // compiler need not reload `self.header` after them.
        let header = self.header.as_ptr();
        // SAFETY: `header` points to a live header (a sheaf we own, or the sentinel).
        let size = unsafe { (*header).size };
        if size == 0 {
            return None;
        }
        let size = size - 1;
        // SAFETY: `size < capacity`, so this is a non-sentinel sheaf that we own; entry `size`
        // of the array right after the header was initialised when it was pushed, and leaves
        // the held range now.
        unsafe {
            let object = *header.add(1).cast::<NonNull<u8>>().add(size as usize);
            (*header).size = size;
            Some(object)
        }
    }

    /// Adds `object`, or gives it back when the sheaf is full.
    #[inline(always)]
    pub(crate) fn push(&mut self, object: NonNull<u8>) -> Result<(), NonNull<u8>> {
        let header = self.header.as_ptr();
        // SAFETY: `header` points to a live header (a sheaf we own, or the sentinel).
        let (size, capacity) = unsafe { ((*header).size, (*header).capacity) };
        if size == capacity {
            return Err(object);
        }
        // SAFETY: `size < capacity`: a non-sentinel sheaf we own with a free entry `size`.
        unsafe {
            header
                .add(1)
                .cast::<NonNull<u8>>()
                .add(size as usize)
                .write(object);
            (*header).size = size + 1;
        }
        Ok(())
    }

    /// Re-bases the sheaf and pushes `object` as a sequence would, taking one from the
    /// budget, so that the next lock holder counts it with the sequences' pushes
    /// ([`OwnedSheaf::take_fast_counts`]): for a sheaf that a sequence then puts in a slot
    /// (`slot::rseq_ops::start_rcu`), whose caller holds no lock to count in. Gives the object
    /// back when the sheaf is full.
    pub(crate) fn push_counted(&mut self, object: NonNull<u8>) -> Result<(), NonNull<u8>> {
        self.rebase();
        self.push(object)?;
        // SAFETY: the push succeeded, so this is a non-sentinel sheaf that we own; the budget
        // was just re-based, so it does not underflow.
        unsafe { (*self.header.as_ptr()).fast_budget -= 1 };
        Ok(())
    }

    /// Takes up to `out.len()` objects from the top in one copy, into the first entries of
    /// `out`; returns how many were taken.
    #[inline]
    pub(crate) fn pop_into(&mut self, out: &mut [MaybeUninit<NonNull<u8>>]) -> usize {
        let size = self.size();
        let n = size.min(out.len());
        if n == 0 {
            return 0;
        }
        // SAFETY: `n > 0` objects are held, so this is a non-sentinel sheaf we own; entries
        // `size - n..size` are initialised and leave the held range now; `out` is a distinct
        // buffer (a `&mut` borrow) of at least `n` entries.
        unsafe {
            ptr::copy_nonoverlapping(
                self.objects_ptr().add(size - n),
                out.as_mut_ptr().cast::<NonNull<u8>>(),
                n,
            );
            (*self.header.as_ptr()).size = (size - n) as u32;
        }
        n
    }

    /// Pushes as many of `objects` as fit, in one copy; returns how many (a prefix).
    #[inline]
    pub(crate) fn push_slice(&mut self, objects: &[NonNull<u8>]) -> usize {
        let size = self.size();
        let n = self.room().min(objects.len());
        if n == 0 {
            return 0;
        }
        // SAFETY: room for `n > 0` objects means a non-sentinel sheaf we own with vacant
        // entries `size..size + n`; `objects` is a shared borrow, so it cannot overlap the
        // array that `&mut self` owns.
        unsafe {
            ptr::copy_nonoverlapping(objects.as_ptr(), self.objects_ptr().add(size), n);
            (*self.header.as_ptr()).size = (size + n) as u32;
        }
        n
    }

    /// The objects held, oldest first.
    #[inline]
    pub(crate) fn objects(&self) -> &[NonNull<u8>] {
        // SAFETY: the first `size` entries are initialised; for the sentinel the slice is
        // empty and its (dangling but aligned, non-null) pointer is never read.
        unsafe { std::slice::from_raw_parts(self.objects_ptr(), self.size()) }
    }

    /// The entries past `size`, for a bulk refill to write into; publish the ones written
    /// with [`OwnedSheaf::grow`].
    #[inline]
    pub(crate) fn vacant_mut(&mut self) -> &mut [MaybeUninit<NonNull<u8>>] {
        let room = self.room();
        // SAFETY: entries `size..capacity` lie inside the allocation, owned by us; as
        // `MaybeUninit` they may hold anything. Empty for the sentinel.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.objects_ptr()
                    .add(self.size())
                    .cast::<MaybeUninit<NonNull<u8>>>(),
                room,
            )
        }
    }

    /// Declares the first `n` vacant entries initialised (after a refill wrote them).
    ///
    /// # Safety
    ///
    /// - `n <= room()`, and entries `size..size + n` were written with free objects.
    #[inline]
    pub(crate) unsafe fn grow(&mut self, n: usize) {
        debug_assert!(n <= self.room(), "grow by {n} with room {}", self.room());
        if n == 0 {
            return;
        }
        // SAFETY: `n > 0` and `n <= room` mean a non-sentinel sheaf we own.
        unsafe { (*self.header.as_ptr()).size += n as u32 };
    }

    /// Forgets every object held (after they were flushed elsewhere).
    #[inline]
    pub(crate) fn clear(&mut self) {
        if self.size() != 0 {
            // SAFETY: a non-empty sheaf is not the sentinel; we own it.
            unsafe { (*self.header.as_ptr()).size = 0 };
        }
    }

    /// Moves up to `max` objects from the top of `self` onto `to` in one copy (their order
    /// is kept, so moving them back restores `self` exactly); returns how many moved.
    pub(crate) fn move_to(&mut self, to: &mut OwnedSheaf, max: usize) -> usize {
        let size = self.size();
        let to_size = to.size();
        let n = max.min(size).min(to.room());
        if n == 0 {
            return 0;
        }
        // SAFETY: `n > 0` means both are non-sentinel sheaves: `self` holds `n` objects at
        // `size - n..size`, `to` has vacant entries `to_size..to_size + n`. Two `&mut`
        // borrows are two distinct allocations, so the ranges do not overlap.
        unsafe {
            ptr::copy_nonoverlapping(
                self.objects_ptr().add(size - n),
                to.objects_ptr().add(to_size),
                n,
            );
            (*self.header.as_ptr()).size = (size - n) as u32;
            (*to.header.as_ptr()).size = (to_size + n) as u32;
        }
        n
    }

    /// The raw pointer, to pass ownership through a list link or a deferred callback.
    pub(crate) fn into_raw(self) -> NonNull<()> {
        self.header.cast()
    }

    /// The raw pointer, ownership kept: for a restartable sequence that publishes the sheaf
    /// (`slot::rseq_ops`), after which the caller gives ownership up with `into_raw`.
    pub(crate) fn as_raw(&self) -> NonNull<()> {
        self.header.cast()
    }

    /// Takes ownership back from [`OwnedSheaf::into_raw`].
    ///
    /// # Safety
    ///
    /// - `raw` came from `into_raw`, and ownership is taken back exactly once.
    pub(crate) unsafe fn from_raw(raw: NonNull<()>) -> Self {
        Self { header: raw.cast() }
    }

    /// The pushes and pops the restartable sequences committed on this sheaf since its last
    /// re-base, `(pops, pushes)`. The caller excludes the sequences (it holds the slot whose
    /// `main` this is, or the sheaf is no slot's `main`), and re-bases the sheaf before they
    /// may run on it again.
    #[inline]
    pub(crate) fn take_fast_counts(&self) -> (u64, u64) {
        if self.is_none() {
            return (0, 0);
        }
        let header = self.header();
        let ops = u64::from(FAST_BUDGET - header.fast_budget);
        if ops == 0 {
            return (0, 0);
        }
        // Every operation moved `size` by one: `pushes - pops` is the change since the
        // re-base, `pushes + pops` the operations.
        let grown = i64::from(header.size) - i64::from(header.size_at_rebase);
        let pushes = (ops as i64 + grown) / 2;
        (ops - pushes as u64, pushes as u64)
    }

    /// Starts a new count for the restartable sequences: after [`OwnedSheaf::take_fast_counts`]
    /// or a change of `size` by other code, before the sequences may run on the sheaf again.
    #[inline(always)]
    pub(crate) fn rebase(&mut self) {
        if self.is_none() {
            return;
        }
        let header = self.header.as_ptr();
        // SAFETY: a live, non-sentinel header that we own.
        unsafe {
            (*header).size_at_rebase = (*header).size;
            (*header).fast_budget = FAST_BUDGET;
        }
    }

    /// The list link.
    pub(crate) fn next(&self) -> Option<NonNull<()>> {
        NonNull::new(self.header().next.cast())
    }

    /// The stamp set by [`OwnedSheaf::set_stamp`].
    pub(crate) fn stamp(&self) -> u64 {
        self.header().stamp
    }

    /// Records a grace-period stamp (not on the sentinel).
    pub(crate) fn set_stamp(&mut self, stamp: u64) {
        assert!(!self.is_none(), "the sentinel sheaf is never stamped");
        // SAFETY: a non-sentinel sheaf we own.
        unsafe { (*self.header.as_ptr()).stamp = stamp };
    }

    /// Sets the list link (not on the sentinel).
    pub(crate) fn set_next(&mut self, next: Option<NonNull<()>>) {
        assert!(!self.is_none(), "the sentinel sheaf is never linked");
        let next = next.map_or(ptr::null_mut(), |p| p.as_ptr().cast());
        // SAFETY: a non-sentinel sheaf we own.
        unsafe { (*self.header.as_ptr()).next = next };
    }
}

impl fmt::Debug for OwnedSheaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("Sheaf(none)");
        }
        f.debug_struct("Sheaf")
            .field("at", &self.header)
            .field("size", &self.size())
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_and_sentinel() {
        let mut none = OwnedSheaf::none();
        assert!(none.is_empty() && none.is_full());
        assert_eq!(none.pop(), None);
        let token = NonNull::<u8>::dangling();
        assert_eq!(none.push(token), Err(token));
        assert!(none.vacant_mut().is_empty());

        let mut sheaf = OwnedSheaf::new(2);
        let a = NonNull::new(0x10 as *mut u8).unwrap();
        let b = NonNull::new(0x20 as *mut u8).unwrap();
        sheaf.push(a).unwrap();
        sheaf.push(b).unwrap();
        assert!(sheaf.is_full());
        assert_eq!(sheaf.push(a), Err(a));
        assert_eq!(sheaf.objects(), &[a, b]);
        assert_eq!(sheaf.pop(), Some(b));
        assert_eq!(sheaf.pop(), Some(a));
        assert_eq!(sheaf.pop(), None);
        sheaf.free();
    }

    fn token(i: usize) -> NonNull<u8> {
        NonNull::new((0x1000 + 64 * i) as *mut u8).unwrap()
    }

    #[test]
    fn block_moves_keep_order_and_bounds() {
        let mut none = OwnedSheaf::none();
        let mut out = [MaybeUninit::uninit(); 4];
        assert_eq!(none.pop_into(&mut out), 0);
        assert_eq!(none.push_slice(&[token(0)]), 0);

        let mut main = OwnedSheaf::new(5);
        let objects: Vec<_> = (0..7).map(token).collect();
        // Only the room is taken, a prefix of the slice.
        assert_eq!(main.push_slice(&objects[..3]), 3);
        assert_eq!(main.push_slice(&objects[3..]), 2);
        assert_eq!(main.objects(), &objects[..5]);
        assert!(main.is_full());

        // The top objects, at most `out.len()`, in array order.
        assert_eq!(main.pop_into(&mut out[..2]), 2);
        // SAFETY: `pop_into` wrote the first two entries.
        let taken: Vec<_> = out[..2]
            .iter()
            .map(|o| unsafe { o.assume_init() })
            .collect();
        assert_eq!(taken, &objects[3..5]);
        assert_eq!(main.objects(), &objects[..3]);

        // Moving to another sheaf and back restores the first exactly.
        let mut other = OwnedSheaf::new(4);
        other.push(token(9)).unwrap();
        assert_eq!(main.move_to(&mut other, usize::MAX), 3);
        assert_eq!(
            other.objects(),
            &[token(9), objects[0], objects[1], objects[2]]
        );
        assert!(main.is_empty());
        assert_eq!(other.move_to(&mut main, 3), 3);
        assert_eq!(main.objects(), &objects[..3]);
        assert_eq!(other.objects(), &[token(9)]);
        // Bounded by the destination's room and by `max`.
        assert_eq!(main.move_to(&mut other, 1), 1);
        assert_eq!(main.move_to(&mut other, 9), 2);
        assert!(other.is_full());
        assert_eq!(main.move_to(&mut none, 9), 0);

        // Asking for more than held takes what there is.
        let mut out = [MaybeUninit::uninit(); 8];
        assert_eq!(other.pop_into(&mut out), 4);
        assert!(other.is_empty());
        main.free();
        other.free();
    }

    #[test]
    fn default_capacity_fills_the_size_class() {
        let capacity = object_alloc::default_sheaf_capacity(64);
        let bytes = OwnedSheaf::layout(capacity).size();
        assert!(bytes <= SHEAF_HEADER_BYTES + capacity * 8, "{bytes}");
    }
}
