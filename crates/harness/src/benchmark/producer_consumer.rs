//! `producer-consumer`: per pair, a producer thread allocates and hands objects over in
//! batches through a bounded ring, and a consumer thread frees them (remote frees).
//!
//! Ownership: an object handed over lives in the ring between its pair until the consumer
//! takes it; whatever is left in the ring at the end is freed by the consumer's `Drop`.

use std::ptr::{self, NonNull};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use object_alloc::{AllocFlags, ObjectAlloc};

use super::engine::Work;
use super::kinds::alloc_one;

/// How long a hand-off wait spins before it blocks.
///
/// While both threads of a pair are on a CPU, the partner hands over or frees a batch in a
/// few microseconds, so a wait that outlasts the spin means the partner is off its CPU:
/// spinning longer would only take time from whatever runs beside it.
pub const HANDOFF_SPIN: Duration = Duration::from_micros(20);

/// One side's hand-off waits, over the phases since the counters were created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WaitCounts {
    /// Waits that ended while spinning.
    pub(crate) spun: u64,
    /// Waits that outlasted the spin and blocked.
    pub(crate) blocked: u64,
    /// Nanoseconds spent blocked.
    pub(crate) blocked_ns: u64,
}

impl WaitCounts {
    /// The sum of `self` and `other`.
    pub(crate) fn plus(self, other: WaitCounts) -> WaitCounts {
        WaitCounts {
            spun: self.spun + other.spun,
            blocked: self.blocked + other.blocked,
            blocked_ns: self.blocked_ns + other.blocked_ns,
        }
    }

    /// The counts from `earlier` to `self`.
    pub(crate) fn since(self, earlier: WaitCounts) -> WaitCounts {
        WaitCounts {
            spun: self.spun - earlier.spun,
            blocked: self.blocked - earlier.blocked,
            blocked_ns: self.blocked_ns - earlier.blocked_ns,
        }
    }
}

/// One side of a ring: the thread to wake and whether it sleeps, with its published counts.
#[derive(Default)]
struct Side {
    thread: OnceLock<Thread>,
    /// Set by the side before it blocks; the other side clears it and wakes the thread.
    sleeping: AtomicBool,
    spun: AtomicU64,
    blocked: AtomicU64,
    blocked_ns: AtomicU64,
}

impl Side {
    /// Registers the calling thread as this side's.
    fn register(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Wakes this side's thread if it blocked (or is about to: it checks again after
    /// setting `sleeping`). The fence orders the caller's release of the ring indices before
    /// the load of `sleeping`, against the sleeper's store of `sleeping` before its check.
    #[inline]
    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed)
            && self.sleeping.swap(false, Ordering::AcqRel)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
    }

    /// Waits until `ready()`: spins for [`HANDOFF_SPIN`], then blocks until woken. The
    /// caller must be this side's registered thread. Counts into `counts`.
    #[inline]
    fn wait(&self, counts: &mut WaitCounts, ready: impl Fn() -> bool) {
        if ready() {
            return;
        }
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
                if ready() {
                    counts.spun += 1;
                    return;
                }
            }
            if start.elapsed() >= HANDOFF_SPIN {
                break;
            }
        }
        let blocked_at = Instant::now();
        loop {
            self.sleeping.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if ready() {
                self.sleeping.store(false, Ordering::Relaxed);
                break;
            }
            // A wake between the check and here leaves the park token set: no lost wake-up.
            std::thread::park();
            if ready() {
                break;
            }
        }
        counts.blocked += 1;
        counts.blocked_ns += u64::try_from(blocked_at.elapsed().as_nanos()).unwrap_or(u64::MAX);
    }

    /// Publishes the side's counts (at the end of each phase, so the coordinator reads them
    /// while the threads wait at the barrier).
    fn publish(&self, counts: &WaitCounts) {
        self.spun.store(counts.spun, Ordering::Relaxed);
        self.blocked.store(counts.blocked, Ordering::Relaxed);
        self.blocked_ns.store(counts.blocked_ns, Ordering::Relaxed);
    }

    fn counts(&self) -> WaitCounts {
        WaitCounts {
            spun: self.spun.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
            blocked_ns: self.blocked_ns.load(Ordering::Relaxed),
        }
    }
}

/// A bounded single-producer single-consumer ring of object pointers, with hand-offs in
/// batches and blocking waits.
///
/// Invariant: `head <= tail <= head + slots.len()`; slots `head..tail` (mod len) hold
/// objects pushed and not yet popped. Only the producer advances `tail` (after writing the
/// slots of a whole batch, Release) and only the consumer advances `head` (after reading
/// every slot it takes, Release).
///
/// A side that cannot go on (the producer: no room for a batch; the consumer: nothing to
/// take) spins briefly and then blocks on `park` instead of yielding: `sched_yield` gives
/// the rest of the time slice to whatever else runs on the CPU, so beside a busy thread the
/// ring would move only while the scheduler happened to run both threads at once. A blocked
/// side is woken by the other side's next hand-off, which the kernel treats as a wake-up
/// (the woken thread may preempt a busy one) rather than a yield.
pub(crate) struct Ring {
    slots: Box<[AtomicPtr<u8>]>,
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    /// Phases the producer has finished.
    producer_phases: CachePadded<AtomicUsize>,
    producer: CachePadded<Side>,
    consumer: CachePadded<Side>,
}

impl Ring {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            slots: (0..capacity)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            producer_phases: CachePadded::new(AtomicUsize::new(0)),
            producer: CachePadded::default(),
            consumer: CachePadded::default(),
        }
    }

    /// Free slots, as the producer sees them.
    #[inline]
    fn room(&self) -> usize {
        self.slots.len() - (self.tail.load(Ordering::Relaxed) - self.head.load(Ordering::Acquire))
    }

    /// Pushes every object of `batch` with one release of the tail; the caller made room.
    #[inline]
    fn push_batch(&self, batch: &[NonNull<u8>]) {
        let tail = self.tail.load(Ordering::Relaxed);
        debug_assert!(self.room() >= batch.len());
        for (i, object) in batch.iter().enumerate() {
            self.slots[(tail + i) % self.slots.len()].store(object.as_ptr(), Ordering::Relaxed);
        }
        self.tail.store(tail + batch.len(), Ordering::Release);
    }

    /// Objects ready for the consumer.
    #[inline]
    fn ready(&self) -> usize {
        self.tail.load(Ordering::Acquire) - self.head.load(Ordering::Relaxed)
    }

    /// Takes up to `max` objects into `out` with one release of the head.
    #[inline]
    fn pop_batch(&self, max: usize, out: &mut Vec<NonNull<u8>>) {
        let head = self.head.load(Ordering::Relaxed);
        let n = self.ready().min(max);
        for i in 0..n {
            let object = self.slots[(head + i) % self.slots.len()].load(Ordering::Relaxed);
            out.extend(NonNull::new(object));
        }
        self.head.store(head + n, Ordering::Release);
    }

    fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire) == self.tail.load(Ordering::Acquire)
    }

    /// The producer's and the consumer's hand-off waits, as published at the end of the
    /// last phase each finished.
    pub(crate) fn waits(&self) -> (WaitCounts, WaitCounts) {
        (self.producer.counts(), self.consumer.counts())
    }
}

/// The producer of a `producer-consumer` (or `cross-cpu`) pair: allocates a batch, stamps
/// sequence numbers, hands the batch over.
pub(crate) struct Producer<'a, A: ObjectAlloc> {
    cache: &'a A,
    ring: &'a Ring,
    batch: Vec<NonNull<u8>>,
    size: usize,
    sequence: u64,
    waits: WaitCounts,
    /// `NOWAIT` allocations, retried without the flag when they fail (`cross-cpu`).
    nowait: Option<&'a AtomicU64>,
}

impl<'a, A: ObjectAlloc> Producer<'a, A> {
    /// Built on the producer's own thread (it registers itself to be woken).
    pub(crate) fn new(cache: &'a A, ring: &'a Ring, batch: usize) -> Self {
        ring.producer.register();
        Self {
            cache,
            ring,
            batch: Vec::with_capacity(batch),
            size: batch,
            sequence: 0,
            waits: WaitCounts::default(),
            nowait: None,
        }
    }

    /// Makes the producer allocate with `NOWAIT`; an allocation that fails is retried
    /// without it and counted in `fallbacks`.
    pub(crate) fn nowait(mut self, fallbacks: &'a AtomicU64) -> Self {
        self.nowait = Some(fallbacks);
        self
    }

    #[inline]
    fn alloc(&self) -> NonNull<u8> {
        match self.nowait {
            None => alloc_one(self.cache),
            Some(fallbacks) => match self.cache.alloc(AllocFlags::NOWAIT) {
                Some(object) => object,
                None => {
                    fallbacks.fetch_add(1, Ordering::Relaxed);
                    alloc_one(self.cache)
                }
            },
        }
    }
}

impl<A: ObjectAlloc> Work for Producer<'_, A> {
    #[inline]
    fn unit(&mut self) -> u64 {
        for _ in 0..self.size {
            let object = self.alloc();
            self.sequence += 1;
            // SAFETY: the object is at least 8 bytes (validated for this kind), aligned to
            // at least 8 or written unaligned below, and owned by this thread until pushed.
            unsafe { object.as_ptr().cast::<u64>().write_unaligned(self.sequence) };
            // The capacity was reserved up front: no reallocation here.
            self.batch.push(object);
        }
        let (ring, size) = (self.ring, self.size);
        ring.producer.wait(&mut self.waits, || ring.room() >= size);
        ring.push_batch(&self.batch);
        self.batch.clear();
        ring.consumer.wake();
        self.size as u64
    }

    fn end_phase(&mut self) {
        self.ring.producer.publish(&self.waits);
        self.ring.producer_phases.fetch_add(1, Ordering::Release);
        // A consumer blocked on an empty ring must see that the phase is over.
        self.ring.consumer.wake();
    }
}

/// The consumer of a `producer-consumer` pair: takes what was handed over, checks the
/// sequence, frees (remote).
pub(crate) struct Consumer<'a, A: ObjectAlloc> {
    cache: &'a A,
    ring: &'a Ring,
    batch: usize,
    taken: Vec<NonNull<u8>>,
    expected: u64,
    /// Phases this consumer has finished.
    phases: usize,
    waits: WaitCounts,
    /// Objects whose sequence number was not the expected one (must stay 0).
    pub(crate) out_of_sequence: &'a AtomicU64,
}

impl<'a, A: ObjectAlloc> Consumer<'a, A> {
    /// Built on the consumer's own thread (it registers itself to be woken).
    pub(crate) fn new(
        cache: &'a A,
        ring: &'a Ring,
        batch: usize,
        out_of_sequence: &'a AtomicU64,
    ) -> Self {
        ring.consumer.register();
        Self {
            cache,
            ring,
            batch,
            taken: Vec::with_capacity(batch),
            expected: 0,
            phases: 0,
            waits: WaitCounts::default(),
            out_of_sequence,
        }
    }
}

impl<A: ObjectAlloc> Work for Consumer<'_, A> {
    #[inline]
    fn unit(&mut self) -> u64 {
        let (ring, phases) = (self.ring, self.phases);
        // Waits for a hand-off, or for the producer to finish the phase (the engine then
        // ends this thread's phase once the ring is empty).
        ring.consumer.wait(&mut self.waits, || {
            ring.ready() > 0 || ring.producer_phases.load(Ordering::Acquire) > phases
        });
        ring.pop_batch(self.batch, &mut self.taken);
        ring.producer.wake();
        let freed = self.taken.len() as u64;
        for object in self.taken.drain(..) {
            self.expected += 1;
            // SAFETY: the producer wrote the sequence number before handing the object over
            // (Release/Acquire on the ring's tail), and the object is now owned by this thread.
            let sequence = unsafe { object.as_ptr().cast::<u64>().read_unaligned() };
            if sequence != self.expected {
                self.out_of_sequence.fetch_add(1, Ordering::Relaxed);
                self.expected = sequence;
            }
            // SAFETY: the object is live and this thread is its only holder (taken once).
            unsafe { self.cache.free(object) };
        }
        freed
    }

    fn drained(&mut self) -> bool {
        self.ring.is_empty()
    }

    fn end_phase(&mut self) {
        self.phases += 1;
        self.ring.consumer.publish(&self.waits);
    }
}

impl<A: ObjectAlloc> Drop for Consumer<'_, A> {
    fn drop(&mut self) {
        loop {
            self.ring.pop_batch(usize::MAX, &mut self.taken);
            if self.taken.is_empty() {
                break;
            }
            for object in self.taken.drain(..) {
                // SAFETY: objects left in the ring are live and owned by the ring.
                unsafe { self.cache.free(object) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(values: &mut [u64]) -> Vec<NonNull<u8>> {
        values
            .iter_mut()
            .map(|v| NonNull::from(v).cast::<u8>())
            .collect()
    }

    #[test]
    fn ring_hands_over_whole_batches_in_order() {
        let ring = Ring::new(4);
        let mut values = [1u64, 2, 3, 4, 5];
        let objects = objects(&mut values);
        assert_eq!(ring.room(), 4);
        ring.push_batch(&objects[..3]);
        assert_eq!((ring.room(), ring.ready()), (1, 3));
        let mut out = Vec::new();
        ring.pop_batch(2, &mut out);
        assert_eq!(out, objects[..2]);
        ring.push_batch(&objects[3..5]);
        out.clear();
        ring.pop_batch(usize::MAX, &mut out);
        assert_eq!(out, [objects[2], objects[3], objects[4]]);
        assert!(ring.is_empty());
    }

    #[test]
    fn a_blocked_wait_is_woken_by_the_other_side_and_counted() {
        let ring = Ring::new(4);
        let mut values = [7u64];
        let object = objects(&mut values)[0];
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let ring = &ring;
            scope.spawn(move || {
                ring.consumer.register();
                let mut counts = WaitCounts::default();
                ring.consumer.wait(&mut counts, || ring.ready() > 0);
                ring.consumer.publish(&counts);
                done.send(counts).unwrap();
            });
            // Once it has registered, long past the spin: the consumer has blocked by now,
            // however late a loaded machine started it.
            while ring.consumer.thread.get().is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(HANDOFF_SPIN * 1000);
            ring.push_batch(&[object]);
            ring.consumer.wake();
            // A lost wake-up fails here instead of hanging the test run (the scope would
            // still wait for the consumer, so wake it for good before failing).
            let counts = finished.recv_timeout(Duration::from_secs(5));
            if counts.is_err() {
                ring.consumer.thread.get().unwrap().unpark();
            }
            let counts = counts.expect("the consumer was not woken within 5 s");
            assert_eq!((counts.spun, counts.blocked), (0, 1), "{counts:?}");
            assert!(counts.blocked_ns > 0, "{counts:?}");
            assert_eq!(ring.waits().1, counts);
        });
    }
}
