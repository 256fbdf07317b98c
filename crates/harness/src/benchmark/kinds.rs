//! The workload kinds, each a [`Work`] generic over the allocator, so every design runs the
//! same code, statically dispatched.
//!
//! Ownership: every object a thread holds lives in that thread's own array (or, for
//! `producer-consumer`, in the ring between its pair, and for `deferred-churn`, in the shared
//! published array) and is freed exactly once: by the loop that replaces it, or by `Drop` at
//! the end of the measurement.

use std::ptr::{self, NonNull};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use object_alloc::{AllocFlags, ObjectAlloc, Prefill, rcu};

use super::engine::Work;
use crate::spec::ChurnOrder;

/// A small, fast, seeded generator (xorshift64*); a workload's random choices depend only on
/// its seed and thread index.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        let mut state = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if state == 0 {
            state = 0x2545_f491_4f6c_dd1d;
        }
        let mut rng = Self(state);
        rng.next();
        rng
    }

    #[inline]
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (multiply-shift reduction; `n > 0`).
    #[inline]
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

#[cold]
#[inline(never)]
fn allocation_failed(design: &str, what: &str) -> ! {
    panic!(
        "allocator `{design}` failed {what} during the measurement (out of memory?); the measurement is void"
    )
}

#[inline]
fn alloc_one<A: ObjectAlloc>(cache: &A) -> NonNull<u8> {
    match cache.alloc(AllocFlags::empty()) {
        Some(object) => object,
        None => allocation_failed(A::NAME, "an allocation"),
    }
}

/// `churn`: a working set of live objects; each operation frees one and allocates its
/// replacement, the most recent one (LIFO) or one chosen at random.
pub(crate) struct Churn<'a, A: ObjectAlloc> {
    cache: &'a A,
    live: Vec<NonNull<u8>>,
    order: ChurnOrder,
    batch: usize,
    rng: Rng,
}

impl<'a, A: ObjectAlloc> Churn<'a, A> {
    pub(crate) fn new(
        cache: &'a A,
        order: ChurnOrder,
        working_set: usize,
        batch: usize,
        rng: Rng,
    ) -> Self {
        let live = (0..working_set).map(|_| alloc_one(cache)).collect();
        Self {
            cache,
            live,
            order,
            batch,
            rng,
        }
    }
}

impl<A: ObjectAlloc> Work for Churn<'_, A> {
    #[inline]
    fn unit(&mut self) -> u64 {
        let len = self.live.len();
        match self.order {
            ChurnOrder::Lifo => churn_lifo_pairs(self.cache, &mut self.live, self.batch),
            ChurnOrder::Random => {
                for _ in 0..self.batch {
                    let i = self.rng.below(len);
                    // SAFETY: as above, for slot `i`.
                    unsafe { self.cache.free(self.live[i]) };
                    self.live[i] = alloc_one(self.cache);
                }
            }
        }
        self.batch as u64
    }
}

/// `pairs` LIFO churn pairs on `live`: free its last object and allocate the replacement.
///
/// The measured loop of `churn` in LIFO order, out of line so that every caller runs the same
/// machine code: the criterion benchmark `churn-lifo64/<name>` (crates/cli/benches/pair.rs)
/// calls it too, so that `cargo xtask overhead` compares the two measuring loops around one
/// loop body rather than two compilations of it.
///
/// # Panics
///
/// If `live` is empty, or the allocator fails an allocation (the measurement is void).
#[inline(never)]
pub fn churn_lifo_pairs<A: ObjectAlloc>(cache: &A, live: &mut [NonNull<u8>], pairs: usize) {
    let top = live.last_mut().expect("a churn working set holds objects");
    for _ in 0..pairs {
        // SAFETY: `*top` is a live object of `cache` that only the caller holds; it is
        // replaced right after, so it is freed once.
        unsafe { cache.free(*top) };
        *top = alloc_one(cache);
    }
}

impl<A: ObjectAlloc> Drop for Churn<'_, A> {
    fn drop(&mut self) {
        for &object in &self.live {
            // SAFETY: every object of `live` is live and held only here.
            unsafe { self.cache.free(object) };
        }
    }
}

/// `burst`: `n` allocations, then `n` frees in reverse order.
pub(crate) struct Burst<'a, A: ObjectAlloc> {
    cache: &'a A,
    held: Vec<NonNull<u8>>,
    burst: usize,
}

impl<'a, A: ObjectAlloc> Burst<'a, A> {
    pub(crate) fn new(cache: &'a A, burst: usize) -> Self {
        Self {
            cache,
            held: Vec::with_capacity(burst),
            burst,
        }
    }
}

impl<A: ObjectAlloc> Work for Burst<'_, A> {
    #[inline]
    fn unit(&mut self) -> u64 {
        for _ in 0..self.burst {
            // The capacity was reserved up front: no reallocation here.
            self.held.push(alloc_one(self.cache));
        }
        while let Some(object) = self.held.pop() {
            // SAFETY: popped objects are live, held only here, and popped once.
            unsafe { self.cache.free(object) };
        }
        self.burst as u64
    }
}

/// `prefill-burst`: writes of the maple tree without the tree: each reserves the worst case,
/// takes `used` objects from the sheaf, returns it, then frees the used objects.
pub(crate) struct PrefillBurst<'a, A: ObjectAlloc> {
    cache: &'a A,
    reserve: usize,
    used: Vec<NonNull<u8>>,
    count: usize,
    batch: usize,
}

impl<'a, A: ObjectAlloc> PrefillBurst<'a, A> {
    pub(crate) fn new(cache: &'a A, reserve: usize, used: usize, batch: usize) -> Self {
        Self {
            cache,
            reserve,
            used: Vec::with_capacity(used),
            count: used,
            batch,
        }
    }

    #[inline]
    fn write(&mut self) {
        let mut sheaf = match self.cache.prefill(AllocFlags::empty(), self.reserve) {
            Ok(sheaf) => sheaf,
            Err(_) => allocation_failed(A::NAME, "a prefill"),
        };
        for _ in 0..self.count {
            match sheaf.alloc(AllocFlags::empty()) {
                Some(object) => self.used.push(object),
                None => allocation_failed(A::NAME, "an allocation from a prefilled sheaf"),
            }
        }
        drop(sheaf);
        while let Some(object) = self.used.pop() {
            // SAFETY: objects taken from the sheaf are ordinary live objects (C-PREFILL-8)
            // held only here.
            unsafe { self.cache.free(object) };
        }
    }
}

impl<A: ObjectAlloc> Work for PrefillBurst<'_, A> {
    #[inline]
    fn unit(&mut self) -> u64 {
        for _ in 0..self.batch {
            self.write();
        }
        self.batch as u64
    }
}

/// How long a hand-off wait spins before it blocks.
///
/// While both threads of a pair are on a CPU, the partner hands over or frees a batch in a
/// few microseconds (the median latency sample of a batch of 64 allocations is 1-2 us on
/// the development machine), so a wait that outlasts the spin means the partner is off its
/// CPU: spinning longer would only take time from whatever runs beside it.
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

/// The producer of a `producer-consumer` pair: allocates a batch, stamps sequence numbers,
/// hands the batch over.
pub(crate) struct Producer<'a, A: ObjectAlloc> {
    cache: &'a A,
    ring: &'a Ring,
    batch: Vec<NonNull<u8>>,
    size: usize,
    sequence: u64,
    waits: WaitCounts,
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
        }
    }
}

impl<A: ObjectAlloc> Work for Producer<'_, A> {
    #[inline]
    fn unit(&mut self) -> u64 {
        for _ in 0..self.size {
            let object = alloc_one(self.cache);
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

/// The sentinel a `deferred-churn` object of slot `i` carries in its first word.
#[inline]
fn sentinel(slot: usize) -> u64 {
    0x5eaf_0000_0000_0000 ^ slot as u64
}

/// The published objects of `deferred-churn`.
pub(crate) struct Published {
    pub(crate) slots: Box<[AtomicPtr<u8>]>,
    /// Reads that found an object whose sentinel was overwritten (must stay 0: C-DEFER-1).
    pub(crate) broken_reads: AtomicU64,
}

impl Published {
    pub(crate) fn new<A: ObjectAlloc>(cache: &A, slots: usize) -> Self {
        let slots = (0..slots)
            .map(|i| {
                let object = alloc_one(cache);
                // SAFETY: at least 8 bytes (validated for this kind), owned until published.
                unsafe { object.as_ptr().cast::<u64>().write_unaligned(sentinel(i)) };
                AtomicPtr::new(object.as_ptr())
            })
            .collect();
        Self {
            slots,
            broken_reads: AtomicU64::new(0),
        }
    }

    /// Frees every published object; no reader or writer may be running.
    pub(crate) fn free_all<A: ObjectAlloc>(&self, cache: &A) {
        for slot in self.slots.iter() {
            if let Some(object) = NonNull::new(slot.swap(ptr::null_mut(), Ordering::AcqRel)) {
                // SAFETY: the object was published and is now unreachable; no reader runs.
                unsafe { cache.free(object) };
            }
        }
    }
}

/// A `deferred-churn` writer: replaces random published objects of its own share and frees
/// the old ones with `free_deferred`.
///
/// Each writer owns a disjoint range of the slots, so a slot has one updater and an update is
/// a plain load and a release store: the kernel's `rcu_assign_pointer` under the update-side
/// lock, not an atomic exchange (whose locked instruction would also wait for the sentinel's
/// store into a cold object, and cost more than the allocator).
pub(crate) struct Writer<'a, A: ObjectAlloc> {
    cache: &'a A,
    published: &'a Published,
    /// The first slot of this writer's share.
    first: usize,
    /// The number of slots in this writer's share (at least one).
    share: usize,
    batch: usize,
    rng: Rng,
}

impl<'a, A: ObjectAlloc> Writer<'a, A> {
    /// Writer `writer` of `writers` (the spec checks there are no more writers than slots).
    pub(crate) fn new(
        cache: &'a A,
        published: &'a Published,
        (writer, writers): (usize, usize),
        batch: usize,
        rng: Rng,
    ) -> Self {
        let slots = published.slots.len();
        let first = slots * writer / writers;
        let end = slots * (writer + 1) / writers;
        assert!(first < end, "{writers} writers for {slots} slots");
        Self {
            cache,
            published,
            first,
            share: end - first,
            batch,
            rng,
        }
    }
}

impl<A: ObjectAlloc> Work for Writer<'_, A> {
    #[inline]
    fn unit(&mut self) -> u64 {
        let slots = &self.published.slots;
        for _ in 0..self.batch {
            let i = self.first + self.rng.below(self.share);
            let object = alloc_one(self.cache);
            // SAFETY: at least 8 bytes, owned by this thread until the store publishes it.
            unsafe { object.as_ptr().cast::<u64>().write_unaligned(sentinel(i)) };
            // Only this writer stores to slot `i` while threads run.
            let old = slots[i].load(Ordering::Relaxed);
            slots[i].store(object.as_ptr(), Ordering::Release);
            let old = NonNull::new(old).expect("published slots are never null while running");
            // SAFETY: `old` was unpublished by the store (no new reference can be taken), it
            // is live, and readers that still see it are inside read-side sections.
            unsafe { self.cache.free_deferred(old) };
        }
        self.batch as u64
    }
}

/// A `deferred-churn` reader: reads random published objects inside a read-side section and
/// checks their sentinel.
pub(crate) struct Reader<'a> {
    published: &'a Published,
    reads_per_section: usize,
    rng: Rng,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(published: &'a Published, reads_per_section: usize, rng: Rng) -> Self {
        Self {
            published,
            reads_per_section,
            rng,
        }
    }
}

impl Work for Reader<'_> {
    #[inline]
    fn unit(&mut self) -> u64 {
        let slots = &self.published.slots;
        let mut broken = 0;
        {
            let _section = rcu::read();
            for _ in 0..self.reads_per_section {
                let i = self.rng.below(slots.len());
                let object = slots[i].load(Ordering::Acquire);
                // SAFETY: the pointer was published (non-null while threads run), its first
                // 8 bytes were written before publication (Release store, Acquire load), and
                // this section began before any `free_deferred` of it could complete, so the
                // object is not reused until the section ends (C-DEFER-1).
                let word = unsafe { ptr::read_unaligned(object.cast::<u64>()) };
                if word != sentinel(i) {
                    broken += 1;
                }
            }
        }
        if broken > 0 {
            self.published
                .broken_reads
                .fetch_add(broken, Ordering::Relaxed);
        }
        self.reads_per_section as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_in_range() {
        let mut a = Rng::new(42, 0);
        let mut b = Rng::new(42, 0);
        let mut c = Rng::new(42, 1);
        let xs: Vec<u64> = (0..8).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            seen[a.below(7)] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

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
