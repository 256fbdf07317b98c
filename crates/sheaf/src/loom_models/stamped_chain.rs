//! A loom model of the *stamped chain*: the protocol of a CPU slot's deferred-free sheaves
//! (`slot::chain`), in which no sheaf leaves its slot before its grace period has passed, so
//! that a barrier never waits for a thread that holds sheaves it took (docs/decisions.md,
//! "The stamped chain").
//!
//! The protocol, per slot:
//!
//! - The chain is `head` and the sheaves linked behind it. The CPU's threads change it only
//!   by sequences (a push on `head`; putting a new sheaf in front, which *seals* the old
//!   head), which commit only while `rcu_lock` is free.
//! - The sealed list, newest first, belongs to the holder of the slot's `detach` lock, who
//!   *absorbs* the sheaves behind the head into it (reading the head first, then the clock:
//!   the stamp every absorbed sheaf gets), and *cuts* it in front of the first sheaf whose
//!   stamp's grace period has passed; everything behind it was sealed before it. It
//!   completes what it cut before releasing `detach`.
//! - A remote party (barrier, hand-over thread, shrink) holds `detach` and *seals* the head
//!   too: it takes `rcu_lock` and runs the membarrier, moves the whole chain into the sealed
//!   list, and lets `rcu_lock` go. Only `detach` holders take `rcu_lock`, so they never wait
//!   for each other there.
//! - The deferring thread, right after its sequence started a sheaf, tries `detach` (never
//!   waits) to absorb, ask for a grace period and cut.
//! - Visitors skip a slot whose marks both read clear: `pending` (a first sheaf is in place)
//!   and `waiting` (sealed sheaves wait), set before a sheaf leaves the chain and cleared
//!   only as `detach` is let go.
//!
//! The built lists are queues, oldest first; the model keeps them newest first and cuts the
//! same sheaves. The model stands for the CPU's atomicity with a mutex: a sequence holds it
//! from its first check to its commit, and a remote party's membarrier takes it once (it
//! comes after a sequence in flight, or the sequence starts after it and sees `rcu_lock`). Grace periods pass as soon as they are asked for: there are
//! no readers here; what the model checks is that every deferral finished before a barrier
//! began has been completed when the barrier returns, that nothing is completed twice or lost,
//! and that the barrier returns while a deferring thread is parked right after sealing.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
use loom::thread;

/// No sheaf.
const NONE: usize = usize::MAX;
/// Objects per sheaf.
const CAPACITY: usize = 2;
/// Sheaves the model may use.
const SHEAVES: usize = 8;
/// Objects the owner defers: two fill a sheaf, the third starts the next one.
const OBJECTS: usize = 3;

struct Sheaf {
    objects: UnsafeCell<[u32; CAPACITY]>,
    /// The committed size (the sequences' commit store).
    size: AtomicUsize,
    next: AtomicUsize,
    /// Written by the `detach` holder that absorbs the sheaf.
    stamp: AtomicU64,
    /// Set by the one cut that takes the sheaf.
    detached: AtomicBool,
}

struct Slot {
    cpu: Mutex<()>,
    rcu_lock: AtomicU8,
    head: AtomicUsize,
    /// The `detach` lock (a mutex here: remote parties wait for its holders, the owner only
    /// tries it) and the sealed list it guards, newest first.
    detach: Mutex<()>,
    sealed: UnsafeCell<usize>,
    sheaves: Vec<Sheaf>,
    allocated: AtomicUsize,
    clock: AtomicU64,
    /// The highest clock value whose grace period has passed.
    safe: AtomicU64,
    /// Objects deferred on their own (`rcu_lock` was held), completed by the barrier.
    alone: Mutex<Vec<u32>>,
    completed: Vec<UnsafeCell<bool>>,
    /// The first version of the protocol, for the model to show why the cut sheaves are
    /// completed under `detach`: they were completed after its release.
    complete_after_release: bool,
    /// The marks visitors skip a slot by: a first sheaf is in place (`pending`), sealed
    /// sheaves wait (`waiting`).
    pending: AtomicBool,
    waiting: AtomicBool,
    /// The first version of the marks, for the model to show why `waiting` is set before a
    /// sheaf leaves the chain and cleared only when `detach` is let go.
    marks_late: bool,
}

/// What a sequence on the CPU found.
enum Step {
    Pushed,
    Busy,
    NeedSheaf,
    Started,
}

impl Slot {
    fn new(complete_after_release: bool, marks_late: bool) -> Self {
        Slot {
            cpu: Mutex::new(()),
            rcu_lock: AtomicU8::new(0),
            head: AtomicUsize::new(NONE),
            detach: Mutex::new(()),
            sealed: UnsafeCell::new(NONE),
            sheaves: (0..SHEAVES)
                .map(|_| Sheaf {
                    objects: UnsafeCell::new([0; CAPACITY]),
                    size: AtomicUsize::new(0),
                    next: AtomicUsize::new(NONE),
                    stamp: AtomicU64::new(0),
                    detached: AtomicBool::new(false),
                })
                .collect(),
            allocated: AtomicUsize::new(0),
            clock: AtomicU64::new(1),
            safe: AtomicU64::new(0),
            alone: Mutex::new(Vec::new()),
            completed: (0..OBJECTS).map(|_| UnsafeCell::new(false)).collect(),
            complete_after_release,
            pending: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            marks_late,
        }
    }

    /// A fresh empty sheaf (never reused in the model).
    fn sheaf(&self) -> usize {
        let index = self.allocated.fetch_add(1, Ordering::Relaxed);
        assert!(index < SHEAVES, "the model ran out of sheaves");
        index
    }

    fn complete(&self, object: u32) {
        self.completed[object as usize].with_mut(|done| {
            // SAFETY: written only by the one party that completes the object (loom checks).
            let done = unsafe { &mut *done };
            assert!(!*done, "object {object} completed twice");
            *done = true;
        });
    }

    /// A sequence on the CPU: the push of `object` on the head, or, with `start`, putting
    /// `start` (holding the object already) in front of a missing or full head.
    fn sequence(&self, object: u32, start: Option<usize>) -> Step {
        let _on_cpu = self.cpu.lock().unwrap();
        if self.rcu_lock.load(Ordering::Acquire) != 0 {
            return Step::Busy;
        }
        let head = self.head.load(Ordering::Relaxed);
        let room = head != NONE && self.sheaves[head].size.load(Ordering::Relaxed) < CAPACITY;
        match start {
            None if room => {
                let sheaf = &self.sheaves[head];
                let size = sheaf.size.load(Ordering::Relaxed);
                sheaf.objects.with_mut(|objects| {
                    // SAFETY: the head's free entries belong to the sequence on the CPU.
                    unsafe { (*objects)[size] = object };
                });
                sheaf.size.store(size + 1, Ordering::Release);
                Step::Pushed
            }
            None => Step::NeedSheaf,
            Some(_) if room => Step::NeedSheaf,
            Some(fresh) => {
                self.sheaves[fresh].next.store(head, Ordering::Relaxed);
                self.head.store(fresh, Ordering::Release);
                Step::Started
            }
        }
    }

    /// A deferred free by the CPU's thread: the push, else a new sheaf in front (prepared
    /// first; `park` runs right after it is in place), then its own collection with a try of
    /// `detach`. With `rcu_lock` held, the object is deferred on its own.
    fn defer(&self, object: u32, park: impl FnOnce()) {
        let mut prepared: Option<usize> = None;
        loop {
            match self.sequence(object, None) {
                Step::Pushed => return,
                Step::Busy => break,
                _ => {}
            }
            let fresh = *prepared.get_or_insert_with(|| self.sheaf());
            self.sheaves[fresh].objects.with_mut(|objects| {
                // SAFETY: an unpublished sheaf, this thread's alone.
                unsafe { (*objects)[0] = object };
            });
            self.sheaves[fresh].size.store(1, Ordering::Relaxed);
            match self.sequence(object, Some(fresh)) {
                Step::Started => {
                    // After the commit (the real code: right after the sequence).
                    self.pending.store(true, Ordering::Release);
                    park();
                    if let Ok(detach) = self.detach.try_lock() {
                        self.absorb(&detach);
                        self.request();
                        self.cut_expired(detach);
                    }
                    return;
                }
                Step::Busy => break,
                // Another start came first: push on it.
                _ => self.sheaves[fresh].size.store(0, Ordering::Relaxed),
            }
        }
        self.alone.lock().unwrap().push(object);
    }

    /// A grace period, asked for now, which passes at once (there are no readers).
    fn request(&self) {
        let requested = self.clock.fetch_add(1, Ordering::SeqCst);
        self.safe.fetch_max(requested, Ordering::SeqCst);
    }

    /// With `detach` held: moves the sheaves behind the head into the sealed list.
    fn absorb(&self, detach: &MutexGuard<'_, ()>) {
        let head = self.head.load(Ordering::Acquire);
        if head == NONE {
            return;
        }
        let behind = self.sheaves[head].next.load(Ordering::Acquire);
        if behind == NONE {
            return;
        }
        self.sheaves[head].next.store(NONE, Ordering::Relaxed);
        self.add_sealed(detach, behind);
    }

    /// With `detach` held: puts the sealed sheaves from `first` on (linked through `next`) in
    /// front of the sealed list, stamped with the clock read now, after they were sealed.
    fn add_sealed(&self, _detach: &MutexGuard<'_, ()>, first: usize) {
        let stamp = self.clock.load(Ordering::SeqCst);
        let mut last = first;
        loop {
            self.sheaves[last].stamp.store(stamp, Ordering::Relaxed);
            let next = self.sheaves[last].next.load(Ordering::Acquire);
            if next == NONE {
                break;
            }
            last = next;
        }
        self.sealed.with_mut(|sealed| {
            // SAFETY: the sealed list is the `detach` holder's.
            let sealed = unsafe { &mut *sealed };
            self.sheaves[last].next.store(*sealed, Ordering::Relaxed);
            *sealed = first;
        });
        self.waiting.store(true, Ordering::Release);
    }

    /// A remote party, with `detach` held: absorbs, then takes `rcu_lock` (the membarrier
    /// follows), moves the whole chain into the sealed list, and lets `rcu_lock` go.
    fn seal(&self, detach: &MutexGuard<'_, ()>) {
        self.absorb(detach);
        if self.head.load(Ordering::Acquire) == NONE {
            return;
        }
        self.rcu_lock.store(1, Ordering::SeqCst);
        // The membarrier: after a sequence in flight, or before one that sees `rcu_lock`.
        drop(self.cpu.lock().unwrap());
        if !self.marks_late {
            // Before the head leaves the `pending` mark.
            self.waiting.store(true, Ordering::Release);
        }
        let first = self.head.load(Ordering::Acquire);
        self.head.store(NONE, Ordering::Relaxed);
        self.pending.store(false, Ordering::Release);
        self.rcu_lock.store(0, Ordering::Release);
        if first != NONE {
            self.add_sealed(detach, first);
        }
    }

    /// With `detach` held (released here, at the end): cuts in front of the first sealed sheaf
    /// whose stamp the grace periods cover, and completes every object behind the cut.
    fn cut_expired(&self, detach: MutexGuard<'_, ()>) {
        let safe = self.safe.load(Ordering::SeqCst);
        let mut cut = NONE;
        self.sealed.with_mut(|sealed| {
            // SAFETY: the sealed list is the `detach` holder's.
            let sealed = unsafe { &mut *sealed };
            if *sealed == NONE {
                return;
            }
            if self.sheaves[*sealed].stamp.load(Ordering::Relaxed) <= safe {
                cut = std::mem::replace(sealed, NONE);
                return;
            }
            let mut pred = *sealed;
            let mut next = self.sheaves[pred].next.load(Ordering::Acquire);
            while next != NONE {
                if self.sheaves[next].stamp.load(Ordering::Relaxed) <= safe {
                    self.sheaves[pred].next.store(NONE, Ordering::Release);
                    cut = next;
                    break;
                }
                pred = next;
                next = self.sheaves[next].next.load(Ordering::Acquire);
            }
        });
        let left = self.sealed.with(|sealed| {
            // SAFETY: as above.
            unsafe { *sealed != NONE }
        });
        if self.marks_late && !left {
            // The first version: cleared as the list empties, before the completion.
            self.waiting.store(false, Ordering::Release);
        }
        // Completed before `detach` is released: a barrier that takes it next finds every
        // cut sheaf completed (completing after the release lets a barrier return first).
        let detach = if self.complete_after_release {
            self.waiting.store(left, Ordering::Release);
            drop(detach);
            None
        } else {
            Some(detach)
        };
        while cut != NONE {
            let sheaf = &self.sheaves[cut];
            assert!(
                !sheaf.detached.swap(true, Ordering::Relaxed),
                "sheaf {cut} cut twice"
            );
            let size = sheaf.size.load(Ordering::Acquire);
            for index in 0..size {
                // SAFETY: the sheaf is sealed (its content final) and cut: this party's alone.
                let object = sheaf.objects.with(|objects| unsafe { (*objects)[index] });
                self.complete(object);
            }
            cut = sheaf.next.load(Ordering::Acquire);
        }
        if detach.is_some() {
            // Cleared only as `detach` is let go, the cut sheaves complete.
            self.waiting.store(left, Ordering::Release);
        }
        drop(detach);
    }

    /// Whether a visitor looks at the slot: either mark set.
    fn marked(&self) -> bool {
        self.pending.load(Ordering::Acquire) || self.waiting.load(Ordering::Acquire)
    }

    /// The barrier: seal (under `detach`), a grace period from after the stamps, the
    /// objects deferred on their own, and the cut.
    fn barrier(&self) {
        if self.marked() {
            self.seal(&self.detach.lock().unwrap());
        }
        self.request();
        for object in std::mem::take(&mut *self.alone.lock().unwrap()) {
            self.complete(object);
        }
        if self.marked() {
            self.cut_expired(self.detach.lock().unwrap());
        }
    }

    /// The hand-over thread's tick: a try of `detach`, then a seal, a grace period and a cut.
    fn tick(&self) {
        if !self.marked() {
            return;
        }
        if let Ok(detach) = self.detach.try_lock() {
            self.seal(&detach);
            self.request();
            self.cut_expired(detach);
        }
    }

    fn is_completed(&self, object: usize) -> bool {
        // SAFETY: a plain read, which loom checks against the completing write.
        self.completed[object].with(|done| unsafe { *done })
    }
}

/// The owner defers objects 0 to 2; before its last deferral's collection (right after its
/// new sheaf went in front, sealing the old one) it parks until the barrier has returned. A
/// barrier runs beside it, and, with `ticks`, a hand-over thread ticks once. The barrier must
/// return (loom finds no way to finish otherwise), with every object whose deferral finished
/// before it began completed; at the end every object is completed exactly once.
fn stamped_chain_model(ticks: bool, complete_after_release: bool) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(move || {
        let slot = Arc::new(Slot::new(complete_after_release, false));
        let done = Arc::new(AtomicU32::new(0));
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let owner = {
            let (slot, done, released) = (slot.clone(), done.clone(), released.clone());
            thread::spawn(move || {
                for object in 0..OBJECTS as u32 {
                    let park = || {
                        if object + 1 == OBJECTS as u32 {
                            done.store(object + 1, Ordering::Release);
                            let (flag, wake) = &*released;
                            let mut flag = flag.lock().unwrap();
                            while !*flag {
                                flag = wake.wait(flag).unwrap();
                            }
                        }
                    };
                    slot.defer(object, park);
                    done.store(object + 1, Ordering::Release);
                }
            })
        };
        let ticker = ticks.then(|| {
            let slot = slot.clone();
            thread::spawn(move || slot.tick())
        });
        let before = done.load(Ordering::Acquire);
        slot.barrier();
        for object in 0..before as usize {
            assert!(
                slot.is_completed(object),
                "object {object}, deferred before the barrier, not completed"
            );
        }
        *released.0.lock().unwrap() = true;
        released.1.notify_one();
        owner.join().unwrap();
        if let Some(ticker) = ticker {
            ticker.join().unwrap();
        }
        slot.barrier();
        for object in 0..OBJECTS {
            assert!(slot.is_completed(object), "object {object} lost");
        }
    });
}

#[test]
fn loom_stamped_chain_barrier_completes_past_a_parked_owner() {
    stamped_chain_model(false, false);
}

#[test]
fn loom_stamped_chain_with_a_concurrent_hand_over_tick() {
    stamped_chain_model(true, false);
}

/// A hand-over tick that completes what it cut after releasing `detach`: a barrier can take
/// the lock, find nothing left to cut and return while the tick is still completing objects
/// deferred before the barrier began. The model must find that interleaving.
#[test]
#[should_panic]
fn loom_stamped_chain_completing_after_the_release_lets_a_barrier_return_early() {
    stamped_chain_model(true, true);
}

/// The marks: the owner defers one object (a sheaf in place, `pending` set) and is joined; a
/// hand-over tick seals and completes it beside a barrier, which skips the slot when it reads
/// both marks clear. The barrier must still return with the object completed.
fn marks_model(marks_late: bool) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(move || {
        let slot = Arc::new(Slot::new(false, marks_late));
        {
            let slot = slot.clone();
            thread::spawn(move || slot.defer(0, || {})).join().unwrap();
        }
        let ticker = {
            let slot = slot.clone();
            thread::spawn(move || slot.tick())
        };
        slot.barrier();
        assert!(
            slot.is_completed(0),
            "object 0, deferred before the barrier, not completed"
        );
        ticker.join().unwrap();
    });
}

#[test]
fn loom_stamped_chain_marks_keep_sheaves_in_hand_visible() {
    marks_model(false);
}

/// The first version of the marks: a sealer cleared `pending` before `waiting` was set, and a
/// cut cleared `waiting` before it completed what it cut; a barrier reading both clear in
/// between skipped sheaves in the tick's hands. The model must find that.
#[test]
#[should_panic]
fn loom_stamped_chain_marks_cleared_early_let_a_barrier_skip_a_slot() {
    marks_model(true);
}
