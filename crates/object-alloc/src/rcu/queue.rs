//! Per-thread queues of deferred callbacks, each stamped with the clock value read when it was
//! deferred; and the list of every queue of a generation.
//!
//! One thread at a time *owns* a queue and is its only producer: a push writes the entry and
//! publishes it with one release store of the queue's count, with no lock and no wait. Any
//! thread may *consume* it, one at a time (the queue's `consuming` flag), running the entries
//! stamped at or before a clock value whose grace period has passed: its owner, the
//! hand-over thread, or a barrier. So a callback is never in one thread's private hands
//! between its deferral and its run: from its push on, every other thread can reach it.
//!
//! Entries live in chunks of [`CHUNK`], linked in push order; the producer appends a chunk
//! when its last one is full, and the consumer frees a chunk once it has run every entry in
//! it and the producer has moved on. A queue is never freed (a generation is never freed):
//! when its thread exits it is released, with what is left in it, for collections to empty
//! and for a new thread to own.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

// The queue's own tests run under loom (`--cfg loom`); everything else, and every other crate
// built with that flag, gets the `std` types.
#[cfg(all(loom, test))]
use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
#[cfg(not(all(loom, test)))]
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

/// An `UnsafeCell` whose accesses loom can see (`with_mut`), under either build.
struct Shared<T>(
    #[cfg(all(loom, test))] loom::cell::UnsafeCell<T>,
    #[cfg(not(all(loom, test)))] std::cell::UnsafeCell<T>,
);

impl<T> Shared<T> {
    fn new(value: T) -> Self {
        #[cfg(all(loom, test))]
        return Shared(loom::cell::UnsafeCell::new(value));
        #[cfg(not(all(loom, test)))]
        Shared(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a pointer to the value; the caller's own rules make the access sound.
    #[inline(always)]
    fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(all(loom, test))]
        return self.0.with_mut(f);
        #[cfg(not(all(loom, test)))]
        f(self.0.get())
    }
}

/// A deferred callback, type-erased: `run(&self)` calls the design's function; `release`
/// then gives back the pending counts of `n` callbacks on the same state (`inner`), which
/// consecutive entries of one design share (one atomic operation for a run of them).
pub(super) struct Callback {
    pub(super) run: unsafe fn(&Callback),
    pub(super) release: unsafe fn(*const (), usize),
    pub(super) inner: *const (),
    pub(super) payload: NonNull<()>,
    pub(super) f: *const (),
}

// SAFETY: the pointers are only used by `run` and `release`, whose soundness on any thread is
// the obligation of `Deferrer::defer_with`'s caller, and the state behind `inner` is
// `Send + Sync`.
unsafe impl Send for Callback {}

/// The counts of the callbacks a consumer has run (or is running) and not yet released: a run
/// of entries with the same `inner` is released with one call. Released when the state
/// changes and when dropped, which is before the consumer flag is given back, and also when
/// a callback panics (its count included: it is lost, never run twice, and no longer pending).
struct Releases {
    inner: *const (),
    release: Option<unsafe fn(*const (), usize)>,
    n: usize,
}

impl Releases {
    fn new() -> Self {
        Releases {
            inner: ptr::null(),
            release: None,
            n: 0,
        }
    }

    /// Counts `callback`, about to run; releases the previous run of another state first.
    #[inline]
    fn add(&mut self, callback: &Callback) {
        if self.release.is_some() && self.inner == callback.inner {
            self.n += 1;
            return;
        }
        self.flush();
        self.inner = callback.inner;
        self.release = Some(callback.release);
        self.n = 1;
    }

    fn flush(&mut self) {
        if let Some(release) = self.release.take() {
            // SAFETY: `n` callbacks on `inner`, each counted once by `add` and run (or lost
            // to a panic) since, whose `release` this is (the state decides it: one state,
            // one design).
            unsafe { release(self.inner, self.n) };
        }
        self.n = 0;
    }
}

impl Drop for Releases {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Entries per chunk: a chunk is 64 entries of 48 bytes and a link, about 3 KiB (2 under
/// loom, so that a model crosses chunks in a few pushes).
pub(super) const CHUNK: usize = if cfg!(all(loom, test)) { 2 } else { 64 };

struct Entry {
    callback: Callback,
    /// The clock value read after the deferral began (see `Generation::stamp`).
    stamp: u64,
}

struct Chunk {
    entries: [Shared<MaybeUninit<Entry>>; CHUNK],
    /// The next chunk in push order; set by the producer before it publishes an entry there.
    next: AtomicPtr<Chunk>,
}

impl Chunk {
    fn new() -> *mut Chunk {
        Box::into_raw(Box::new(Chunk {
            entries: std::array::from_fn(|_| Shared::new(MaybeUninit::uninit())),
            next: AtomicPtr::new(ptr::null_mut()),
        }))
    }
}

/// One thread's deferred callbacks (see the module docs).
pub(super) struct Queue {
    /// Set while a thread owns the producer side.
    owned: AtomicBool,
    /// Entries pushed so far; only the owner stores it (release: the entry and, for the first
    /// entry of a chunk, the link to the chunk are visible with the count).
    pushed: AtomicU64,
    /// Entries run so far; only a consumer stores it.
    consumed: AtomicU64,
    /// The owner's: the chunk the next push writes into (when `pushed` is not a multiple of
    /// [`CHUNK`]) or the last one (when it is).
    tail: Shared<*mut Chunk>,
    /// Set while a consumer runs entries.
    consuming: AtomicBool,
    /// The consumer's: the chunk that holds entry `consumed` (or, when `consumed` is a
    /// multiple of [`CHUNK`] and that chunk is not linked yet, the one before it).
    head: Shared<*mut Chunk>,
    /// The index of `head`'s first entry.
    head_base: Shared<u64>,
    /// The producer's entries since it last asked for a grace period.
    unrequested: Cell<usize>,
    /// The next queue of the generation's list.
    next: *mut Queue,
}

// SAFETY: `tail` and `unrequested` are touched only by the owner (one thread at a time, handed
// over through `owned`'s release and acquire), `head` and `head_base` only by the holder of
// `consuming` (the same), and entries are written before `pushed` publishes them (release)
// and read after it is loaded (acquire); a published entry is read by consumers only.
unsafe impl Sync for Queue {}
// SAFETY: as above; nothing in a queue is tied to the thread that made it.
unsafe impl Send for Queue {}

impl Queue {
    fn new() -> Queue {
        let chunk = Chunk::new();
        Queue {
            owned: AtomicBool::new(true),
            pushed: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            tail: Shared::new(chunk),
            consuming: AtomicBool::new(false),
            head: Shared::new(chunk),
            head_base: Shared::new(0),
            unrequested: Cell::new(0),
            next: ptr::null_mut(),
        }
    }

    /// Whether a thread owns the producer side (a released queue waits for a new owner).
    pub(super) fn is_owned(&self) -> bool {
        self.owned.load(Ordering::Relaxed)
    }

    /// Whether every entry pushed so far has been taken by a consumer (the last may still be
    /// running: see [`Queue::is_settled`]).
    pub(super) fn is_empty(&self) -> bool {
        self.consumed.load(Ordering::Acquire) == self.pushed.load(Ordering::Acquire)
    }

    /// Whether every entry pushed so far has run: empty, and no consumer at work (one moves
    /// `consumed` past an entry before it runs it).
    pub(super) fn is_settled(&self) -> bool {
        // After the counts: a consumer that took the last entry held the flag before it
        // stored `consumed` (acquired above), so the flag reads set until that entry has run.
        self.is_empty() && !self.consuming.load(Ordering::Acquire)
    }

    /// Appends `callback`, stamped `stamp`; returns the entries pushed since the owner last
    /// asked for a grace period (see [`Queue::requested`]).
    ///
    /// # Safety
    ///
    /// The caller owns the queue (got it from [`QueueList::claim`] and has not released it).
    pub(super) unsafe fn push(&self, callback: Callback, stamp: u64) -> usize {
        let n = self.pushed.load(Ordering::Relaxed);
        let index = (n % CHUNK as u64) as usize;
        let tail = self.tail.with_mut(|tail| {
            // SAFETY: `tail` is the owner's alone.
            let tail = unsafe { &mut *tail };
            if index == 0 && n != 0 {
                // The last chunk is full: link a new one; it is published with the entry below.
                let fresh = Chunk::new();
                // SAFETY: `*tail` is live: the consumer frees a chunk only once an entry of the
                // chunk after it has been published, which has not happened for this one.
                unsafe { (**tail).next.store(fresh, Ordering::Relaxed) };
                *tail = fresh;
            }
            *tail
        });
        // SAFETY: `tail` is live (as above).
        let slot = unsafe { &(*tail).entries[index] };
        // SAFETY: entry `n` is not published yet, so no consumer reads it; the owner writes it
        // once.
        slot.with_mut(|slot| unsafe { (*slot).write(Entry { callback, stamp }) });
        self.pushed.store(n + 1, Ordering::Release);
        let unrequested = self.unrequested.get() + 1;
        self.unrequested.set(unrequested);
        unrequested
    }

    /// The owner asked for a grace period that covers every entry it has pushed.
    pub(super) fn requested(&self) {
        self.unrequested.set(0);
    }

    /// Whether the owner pushed entries since it last asked for a grace period; it asks for
    /// one now, when `true`.
    pub(super) fn take_unrequested(&self) -> bool {
        self.unrequested.replace(0) != 0
    }

    /// Runs, in push order, every published entry stamped at or before `stamp`, as the one
    /// consumer. `false`, running nothing, when another consumer is running entries (a
    /// collection, which the caller may wait for by trying again; this thread itself, when a
    /// callback collects).
    pub(super) fn consume(&self, stamp: u64) -> bool {
        let Some(_consumer) = Consumer::try_lock(self) else {
            return false;
        };
        // Dropped before `_consumer`: the counts are given back before the flag.
        let mut releases = Releases::new();
        let pushed = self.pushed.load(Ordering::Acquire);
        let mut consumed = self.consumed.load(Ordering::Relaxed);
        // SAFETY: the consumer's field, and the consumer flag is held.
        let mut head = self.head.with_mut(|head| unsafe { *head });
        // SAFETY: as above.
        let mut head_base = self.head_base.with_mut(|base| unsafe { *base });
        while consumed < pushed {
            if consumed == head_base + CHUNK as u64 {
                // Every entry of `head` has run, and entry `consumed` is published, so the
                // producer linked the next chunk before it (and writes to `head` no more).
                // SAFETY: `head` is live until freed here, by the one consumer.
                let next = unsafe { (*head).next.load(Ordering::Relaxed) };
                debug_assert!(!next.is_null());
                // SAFETY: made by `Chunk::new`; every entry in it has been read out.
                drop(unsafe { Box::from_raw(head) });
                (head, head_base) = (next, consumed);
                // Stored at once, so that a callback that panics below leaves the fields
                // matching `consumed`.
                self.head.with_mut(|field| {
                    // SAFETY: the consumer's field, and the consumer flag is held.
                    unsafe { *field = head }
                });
                self.head_base.with_mut(|field| {
                    // SAFETY: as above.
                    unsafe { *field = head_base }
                });
            }
            let index = (consumed - head_base) as usize;
            // SAFETY: `head` is live (as above).
            let slot = unsafe { &(*head).entries[index] };
            let entry = slot.with_mut(|slot| {
                // SAFETY: entry `consumed` is published (`pushed` acquired above), initialised
                // by the push that published it, and not read out yet.
                let slot = unsafe { &mut *slot };
                // SAFETY: as above.
                if unsafe { slot.assume_init_ref() }.stamp > stamp {
                    return None;
                }
                // SAFETY: as above; read out once: `consumed` moves past it before anyone
                // looks at this slot again.
                Some(unsafe { slot.assume_init_read() })
            });
            let Some(entry) = entry else {
                break;
            };
            consumed += 1;
            self.consumed.store(consumed, Ordering::Release);
            releases.add(&entry.callback);
            // SAFETY: each callback runs once, after its grace period (the caller's).
            unsafe { (entry.callback.run)(&entry.callback) };
        }
        true
    }
}

/// The consumer flag of one queue, held by this thread until dropped.
struct Consumer<'a>(&'a Queue);

impl<'a> Consumer<'a> {
    fn try_lock(queue: &'a Queue) -> Option<Self> {
        // Not `then_some`: a guard made while another holds the flag would release it. A
        // compare-exchange, not a swap: a failed try writes nothing.
        queue
            .consuming
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then(|| Consumer(queue))
    }
}

impl Drop for Consumer<'_> {
    fn drop(&mut self) {
        self.0.consuming.store(false, Ordering::Release);
    }
}

/// Every queue of a generation: a list that only grows (at its head, by compare-exchange),
/// so it can be walked without a lock while threads register. A generation's list lives for
/// ever; one dropped (in tests) frees its queues, and the callbacks left in them are not run.
pub(super) struct QueueList {
    head: AtomicPtr<Queue>,
}

impl Default for QueueList {
    fn default() -> Self {
        QueueList {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

impl QueueList {
    /// A queue for the calling thread to own: one released by an exited thread, else a new
    /// one.
    pub(super) fn claim(&self) -> &Queue {
        for queue in self.iter() {
            if !queue.owned.load(Ordering::Relaxed)
                && queue
                    .owned
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                queue.unrequested.set(0);
                return queue;
            }
        }
        let queue = Box::into_raw(Box::new(Queue::new()));
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            // SAFETY: not published yet, so still ours alone.
            unsafe { (*queue).next = head };
            match self
                .head
                .compare_exchange(head, queue, Ordering::AcqRel, Ordering::Acquire)
            {
                // SAFETY: freed only when the list is dropped, which `&self` rules out.
                Ok(_) => return unsafe { &*queue },
                Err(seen) => head = seen,
            }
        }
    }

    /// Gives up ownership of `queue` (its entries stay, for collections to run).
    pub(super) fn release(queue: &Queue) {
        queue.owned.store(false, Ordering::Release);
    }

    /// Every queue, newest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Queue> {
        let mut next = self.head.load(Ordering::Acquire);
        std::iter::from_fn(move || {
            // SAFETY: queues are freed only when the list is dropped, which the borrow of
            // `self` rules out, and `next` was set before publication.
            let queue: &Queue = unsafe { next.as_ref()? };
            next = queue.next;
            Some(queue)
        })
    }
}

impl Drop for QueueList {
    fn drop(&mut self) {
        let mut next = self.head.load(Ordering::Acquire);
        while !next.is_null() {
            // SAFETY: every queue was made by `claim` with `Box::into_raw`, and nothing
            // borrows the list (`&mut self`), so nothing reaches its queues any more.
            let queue = unsafe { Box::from_raw(next) };
            next = queue.next;
            // SAFETY: the chunks from the consumer's `head` on are linked and live (earlier
            // ones were freed by consumers); each is freed once. Entries still in them are
            // dropped without running (`MaybeUninit` drops nothing).
            let mut chunk = queue.head.with_mut(|head| unsafe { *head });
            while !chunk.is_null() {
                // SAFETY: as above.
                let owned = unsafe { Box::from_raw(chunk) };
                chunk = owned.next.load(Ordering::Relaxed);
            }
        }
    }
}
