//! A loom model of the *stamped chain*: the protocol planned for a slot's deferred-free
//! sheaves, in which no sheaf leaves its slot before its grace period has passed, so that a
//! barrier never waits for a thread that holds sheaves it took (docs/decisions.md, "Deferred
//! callbacks in stamped queues", "The stamped chain"). It is not the allocator's protocol
//! yet: the model pins the protocol down, and checks it, before the code changes.
//!
//! The protocol, per slot:
//!
//! - The chain is `head` and the sheaves linked behind it. The CPU's threads change it only
//!   by sequences (a push on `head`; putting a new sheaf in front, which *seals* the old
//!   head), which run only while no remote party is present (`remote`, a count).
//! - A remote party (barrier, hand-over thread, shrink) enters by raising `remote` and running
//!   the membarrier, and then seals a filled head itself by putting an empty sheaf in front
//!   with a compare-exchange. Remote parties never wait for each other.
//! - Every sealed sheaf gets a *stamp*: the clock read after it was sealed, written by whoever
//!   holds the slot's `detach` lock next (its own thread, with a try, never a wait; the
//!   hand-over thread; a barrier).
//! - A holder of `detach` cuts the chain in front of the first sealed sheaf whose stamp's grace
//!   period has passed; everything behind it was sealed before it and is covered too. Only
//!   holders of `detach` read links behind the head, and only they cut, so what they read
//!   stays in place. It completes what it cut before releasing `detach`, so a barrier that
//!   takes the lock next finds it done. The holders are collections: they complete expired
//!   deferrals (or stamp), which is what a barrier may wait for.
//!
//! The model stands for the CPU's atomicity with a mutex, as the sequence model in the parent
//! module does: a sequence holds it from its first check to its commit, and a remote party's
//! membarrier takes it once (it comes after a sequence in flight, or the sequence starts
//! after it and sees `remote`). Grace periods pass as soon as they are asked for: there are
//! no readers here; what the model checks is that every deferral finished before a barrier
//! began has been completed when the barrier returns, that nothing is completed twice or lost,
//! and that the barrier returns while a deferring thread is parked anywhere.

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
/// An unstamped sheaf.
const UNSTAMPED: u64 = u64::MAX;

struct Sheaf {
    objects: UnsafeCell<[u32; CAPACITY]>,
    /// The committed size (the sequences' commit store).
    size: AtomicUsize,
    next: AtomicUsize,
    stamp: AtomicU64,
    /// Set by the one cut that takes the sheaf.
    detached: AtomicBool,
}

struct Slot {
    cpu: Mutex<()>,
    remote: AtomicU8,
    head: AtomicUsize,
    /// The `detach` lock (a mutex here: remote parties wait for its holders, the owner only
    /// tries it).
    detach: Mutex<()>,
    sheaves: Vec<Sheaf>,
    allocated: AtomicUsize,
    clock: AtomicU64,
    /// The highest clock value whose grace period has passed.
    safe: AtomicU64,
    /// Objects deferred on their own (a remote party was present), completed by the barrier.
    alone: Mutex<Vec<u32>>,
    completed: Vec<UnsafeCell<bool>>,
    /// The first version of the protocol, for the model to show why the cut sheaves are
    /// completed under `detach`: they were completed after its release.
    complete_after_release: bool,
}

/// What a sequence on the CPU found.
enum Step {
    Pushed,
    Busy,
    NeedSheaf,
    Started,
}

impl Slot {
    fn new(complete_after_release: bool) -> Self {
        Slot {
            cpu: Mutex::new(()),
            remote: AtomicU8::new(0),
            head: AtomicUsize::new(NONE),
            detach: Mutex::new(()),
            sheaves: (0..SHEAVES)
                .map(|_| Sheaf {
                    objects: UnsafeCell::new([0; CAPACITY]),
                    size: AtomicUsize::new(0),
                    next: AtomicUsize::new(NONE),
                    stamp: AtomicU64::new(UNSTAMPED),
                    detached: AtomicBool::new(false),
                })
                .collect(),
            allocated: AtomicUsize::new(0),
            clock: AtomicU64::new(1),
            safe: AtomicU64::new(0),
            alone: Mutex::new(Vec::new()),
            completed: (0..OBJECTS).map(|_| UnsafeCell::new(false)).collect(),
            complete_after_release,
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
        if self.remote.load(Ordering::Acquire) != 0 {
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
    /// `detach`. With a remote party present, the object is deferred on its own.
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
                    park();
                    if let Ok(detach) = self.detach.try_lock() {
                        self.collect(detach);
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

    /// With `detach` held (released here): stamps every unstamped sealed sheaf, asks for a
    /// grace period, cuts the chain in front of the first expired sheaf, and completes what
    /// it cut.
    fn collect(&self, detach: MutexGuard<'_, ()>) {
        self.stamp_sealed(&detach);
        let requested = self.clock.fetch_add(1, Ordering::SeqCst);
        // No readers: the grace period passes at once.
        self.safe.fetch_max(requested, Ordering::SeqCst);
        self.cut_expired(detach);
    }

    /// With `detach` held: every sealed sheaf (behind the head) gets a stamp if it has none.
    fn stamp_sealed(&self, _detach: &MutexGuard<'_, ()>) {
        let stamp = self.clock.load(Ordering::SeqCst);
        let head = self.head.load(Ordering::Acquire);
        if head == NONE {
            return;
        }
        let mut next = self.sheaves[head].next.load(Ordering::Acquire);
        while next != NONE {
            let sheaf = &self.sheaves[next];
            let _ = sheaf.stamp.compare_exchange(
                UNSTAMPED,
                stamp,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            next = sheaf.next.load(Ordering::Acquire);
        }
    }

    /// With `detach` held (released here, at the end): cuts in front of the first sealed sheaf
    /// whose stamp the grace periods cover, and completes every object behind the cut.
    fn cut_expired(&self, detach: MutexGuard<'_, ()>) {
        let safe = self.safe.load(Ordering::SeqCst);
        let head = self.head.load(Ordering::Acquire);
        let mut cut = NONE;
        if head != NONE {
            let mut pred = head;
            let mut next = self.sheaves[head].next.load(Ordering::Acquire);
            while next != NONE {
                if self.sheaves[next].stamp.load(Ordering::Relaxed) <= safe {
                    self.sheaves[pred].next.store(NONE, Ordering::Release);
                    cut = next;
                    break;
                }
                pred = next;
                next = self.sheaves[next].next.load(Ordering::Acquire);
            }
        }
        // Completed before `detach` is released: a barrier that takes it next finds every
        // cut sheaf completed (completing after the release lets a barrier return first).
        let detach = if self.complete_after_release {
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
        drop(detach);
    }

    /// A remote party seals a filled head: enters (`remote`, then the membarrier), puts an
    /// empty sheaf in front by compare-exchange, leaves. It waits for no one.
    fn seal(&self) {
        self.remote.fetch_add(1, Ordering::SeqCst);
        // The membarrier: after a sequence in flight, or before one that sees `remote`.
        drop(self.cpu.lock().unwrap());
        let mut fresh = NONE;
        loop {
            let head = self.head.load(Ordering::Acquire);
            if head == NONE || self.sheaves[head].size.load(Ordering::Acquire) == 0 {
                break;
            }
            if fresh == NONE {
                fresh = self.sheaf();
            }
            self.sheaves[fresh].next.store(head, Ordering::Relaxed);
            if self
                .head
                .compare_exchange(head, fresh, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break;
            }
        }
        self.remote.fetch_sub(1, Ordering::SeqCst);
    }

    /// The barrier: seal, stamp (under `detach`), a grace period from after the stamps,
    /// the objects deferred on their own, and the cut.
    fn barrier(&self) {
        self.seal();
        self.stamp_sealed(&self.detach.lock().unwrap());
        let requested = self.clock.fetch_add(1, Ordering::SeqCst);
        self.safe.fetch_max(requested, Ordering::SeqCst);
        for object in std::mem::take(&mut *self.alone.lock().unwrap()) {
            self.complete(object);
        }
        self.cut_expired(self.detach.lock().unwrap());
    }

    /// The hand-over thread's tick: seal, then a collection.
    fn tick(&self) {
        self.seal();
        self.collect(self.detach.lock().unwrap());
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
        let slot = Arc::new(Slot::new(complete_after_release));
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
