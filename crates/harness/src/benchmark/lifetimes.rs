//! `lifetimes`: objects that live for a drawn number of ticks, in cycles of ramp, hold and
//! drain, over one cache per object size.
//!
//! Time is counted in *ticks* of each worker. In every tick the worker frees the objects
//! whose lifetime has ended (natural deaths), then brings its live set to the tick's target:
//! it allocates while below (each new object gets a lifetime drawn from the distribution and
//! its first word written, so its page is touched), and frees the objects nearest to their end
//! while above. The target rises linearly from 0 to `working_set` over the ramp, stays there
//! through the hold and falls linearly to 0 over the drain, so every cycle ends with nothing
//! live. Deaths are kept in a binary heap by tick (the same bookkeeping for every design).
//!
//! With `remote_frees`, each worker hands the objects it frees to its own helper thread in
//! batches of [`HANDOFF`] through a mailbox, and the helper frees them: frees happen on
//! another thread (another CPU when pinned), as in a producer-consumer pipeline.
//!
//! The first worker notes, at the end of every hold and every drain, the cache's slab
//! bytes and the process's resident set (a [`CycleLog`]); the time that takes is upkeep,
//! left out of the measured time. The measurement turns the notes into the memory floor at
//! the drains and the slopes over the holds (`extra`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::Instant;

use object_alloc::{AllocFlags, ObjectAlloc};

use crate::spec::Lifetime;

use super::engine::Work;
use super::kinds::Rng;
use super::sampler::{ReadFn, rss_now};

/// Objects a worker gathers before it hands them to its helper.
const HANDOFF: usize = 64;

/// The shape of a cycle and the lifetimes, from the spec.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cycle {
    pub(crate) lifetime: Lifetime,
    pub(crate) working_set: usize,
    pub(crate) ramp: usize,
    pub(crate) hold: usize,
    pub(crate) drain: usize,
    /// Ticks per unit of work.
    pub(crate) batch: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Ramp,
    Hold,
    Drain,
}

/// An object: its address and the index of its cache.
type Held = (usize, u8);

/// Objects handed from a worker to its helper, by address and cache.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    objects: Mutex<Vec<Held>>,
}

impl Mailbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a cycle ended one of its stages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CyclePoint {
    /// Seconds since the log was made.
    pub(crate) t: f64,
    /// `true` at the end of a drain, `false` at the end of a hold.
    pub(crate) drained: bool,
    pub(crate) slab_bytes: Option<u64>,
    pub(crate) rss_bytes: Option<u64>,
}

/// The first worker's notes at the end of each hold and drain.
#[derive(Debug)]
pub(crate) struct CycleLog {
    start: Instant,
    pub(crate) points: Mutex<Vec<CyclePoint>>,
}

impl CycleLog {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            points: Mutex::new(Vec::new()),
        }
    }

    /// The notes so far.
    pub(crate) fn points(&self) -> Vec<CyclePoint> {
        self.points
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Frees `object` of cache `index` of `caches`.
///
/// # Safety
///
/// `object` is a live object of that cache, held by the caller, freed once.
unsafe fn free_held<A: ObjectAlloc>(caches: &[(&A, usize)], (address, index): Held) {
    // SAFETY: the caller passes a live object's address, which is not null.
    let object = unsafe { NonNull::new_unchecked(address as *mut u8) };
    // SAFETY: forwarded from the caller.
    unsafe { caches[index as usize].0.free(object) };
}

/// A `lifetimes` worker.
pub(crate) struct Lifetimes<'a, A: ObjectAlloc> {
    caches: &'a [(&'a A, usize)],
    cycle: Cycle,
    rng: Rng,
    /// Live objects by the tick they die at.
    deaths: BinaryHeap<Reverse<(u64, Held)>>,
    tick: u64,
    stage: Stage,
    /// Ticks done in the current stage.
    done: usize,
    remote: Option<(&'a Mailbox, Vec<Held>)>,
    log: Option<(&'a CycleLog, ReadFn<'a>)>,
    upkeep_ns: u64,
}

impl<'a, A: ObjectAlloc> Lifetimes<'a, A> {
    pub(crate) fn new(
        caches: &'a [(&'a A, usize)],
        cycle: Cycle,
        rng: Rng,
        remote: Option<&'a Mailbox>,
        log: Option<(&'a CycleLog, ReadFn<'a>)>,
    ) -> Self {
        Self {
            caches,
            cycle,
            rng,
            deaths: BinaryHeap::with_capacity(cycle.working_set + 1),
            tick: 0,
            stage: Stage::Ramp,
            done: 0,
            remote: remote.map(|mailbox| (mailbox, Vec::with_capacity(HANDOFF))),
            log,
            upkeep_ns: 0,
        }
    }

    /// The live-set target of the current tick.
    fn target(&self) -> usize {
        let (w, done) = (self.cycle.working_set, self.done + 1);
        match self.stage {
            Stage::Ramp => w * done / self.cycle.ramp,
            Stage::Hold => w,
            Stage::Drain => w - w * done / self.cycle.drain,
        }
    }

    fn free(&mut self, held: Held) {
        match &mut self.remote {
            Some((mailbox, outbox)) => {
                outbox.push(held);
                if outbox.len() >= HANDOFF {
                    mailbox.lock().append(outbox);
                }
            }
            // SAFETY: `held` left the heap of live objects just now; it is freed once.
            None => unsafe { free_held(self.caches, held) },
        }
    }

    fn alloc(&mut self) {
        let index = if self.caches.len() > 1 {
            self.rng.below(self.caches.len())
        } else {
            0
        };
        let object = self.caches[index]
            .0
            .alloc(AllocFlags::empty())
            .unwrap_or_else(|| panic!("{}: allocation failed in `lifetimes`", A::NAME));
        // SAFETY: a live object of at least one byte; writing it touches its page, as a
        // user of the object would.
        unsafe { object.as_ptr().write(self.tick as u8) };
        // A value in (0, 1]: 53 random bits, plus one.
        let u = ((self.rng.next() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let death = self.tick + self.cycle.lifetime.draw(u);
        self.deaths
            .push(Reverse((death, (object.as_ptr() as usize, index as u8))));
    }

    /// One tick; returns the allocations and frees it made.
    fn tick(&mut self) -> u64 {
        let mut ops = 0;
        while let Some(&Reverse((death, held))) = self.deaths.peek()
            && death <= self.tick
        {
            self.deaths.pop();
            self.free(held);
            ops += 1;
        }
        let target = self.target();
        while self.deaths.len() < target {
            self.alloc();
            ops += 1;
        }
        while self.deaths.len() > target {
            let Some(Reverse((_, held))) = self.deaths.pop() else {
                break;
            };
            self.free(held);
            ops += 1;
        }
        self.tick += 1;
        self.done += 1;
        let length = match self.stage {
            Stage::Ramp => self.cycle.ramp,
            Stage::Hold => self.cycle.hold,
            Stage::Drain => self.cycle.drain,
        };
        if self.done == length {
            self.done = 0;
            self.stage = match self.stage {
                Stage::Ramp => Stage::Hold,
                Stage::Hold => {
                    self.note(false);
                    Stage::Drain
                }
                Stage::Drain => {
                    if let Some((mailbox, outbox)) = &mut self.remote {
                        mailbox.lock().append(outbox);
                    }
                    self.note(true);
                    Stage::Ramp
                }
            };
        }
        ops
    }

    /// The first worker's note at the end of a hold or a drain (upkeep, not measured work).
    fn note(&mut self, drained: bool) {
        let Some((log, read)) = self.log else {
            return;
        };
        let began = Instant::now();
        let reading = read();
        let point = CyclePoint {
            t: (began - log.start).as_secs_f64(),
            drained,
            slab_bytes: reading.stats.slab_bytes,
            rss_bytes: rss_now(),
        };
        log.points
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(point);
        self.upkeep_ns += u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
    }
}

impl<A: ObjectAlloc> Work for Lifetimes<'_, A> {
    fn unit(&mut self) -> u64 {
        (0..self.cycle.batch).map(|_| self.tick()).sum()
    }

    fn take_upkeep_ns(&mut self) -> u64 {
        std::mem::take(&mut self.upkeep_ns)
    }
}

impl<A: ObjectAlloc> Drop for Lifetimes<'_, A> {
    fn drop(&mut self) {
        let outbox = self.remote.take().map(|(_, outbox)| outbox);
        let live = self.deaths.drain().map(|Reverse((_, held))| held);
        for held in live.chain(outbox.into_iter().flatten()) {
            // SAFETY: each object is live and held only here (the helper has the mailbox's).
            unsafe { free_held(self.caches, held) };
        }
    }
}

/// A `lifetimes` helper: frees what its worker hands over.
pub(crate) struct Freer<'a, A: ObjectAlloc> {
    caches: &'a [(&'a A, usize)],
    mailbox: &'a Mailbox,
    taken: Vec<Held>,
}

impl<'a, A: ObjectAlloc> Freer<'a, A> {
    pub(crate) fn new(caches: &'a [(&'a A, usize)], mailbox: &'a Mailbox) -> Self {
        Self {
            caches,
            mailbox,
            taken: Vec::with_capacity(4 * HANDOFF),
        }
    }

    fn free_taken(&mut self) -> u64 {
        std::mem::swap(&mut *self.mailbox.lock(), &mut self.taken);
        let n = self.taken.len() as u64;
        for held in self.taken.drain(..) {
            // SAFETY: the worker handed the object over and no longer holds it.
            unsafe { free_held(self.caches, held) };
        }
        n
    }
}

impl<A: ObjectAlloc> Work for Freer<'_, A> {
    fn unit(&mut self) -> u64 {
        let n = self.free_taken();
        if n == 0 {
            std::hint::spin_loop();
        }
        n
    }

    fn drained(&mut self) -> bool {
        self.mailbox.lock().is_empty()
    }
}

impl<A: ObjectAlloc> Drop for Freer<'_, A> {
    fn drop(&mut self) {
        self.free_taken();
    }
}

/// Least-squares slope of `(x, y)` points (`None` with fewer than two distinct `x`).
pub(crate) fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut num, mut den) = (0.0, 0.0);
    for &(x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_is_its_slope() {
        let points: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 7.0)).collect();
        assert!((slope(&points).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn lifetimes_are_whole_ticks_with_the_distributions_means() {
        let mut rng = Rng::new(1, 2);
        for (lifetime, mean) in [
            (Lifetime::Exponential { mean: 100.0 }, 100.0),
            (
                Lifetime::Pareto {
                    shape: 3.0,
                    scale: 20.0,
                },
                30.0,
            ),
        ] {
            assert_eq!(lifetime.mean(), mean);
            let n = 200_000;
            let sum: u64 = (0..n)
                .map(|_| {
                    let u = ((rng.next() >> 11) + 1) as f64 / (1u64 << 53) as f64;
                    lifetime.draw(u)
                })
                .sum();
            let drawn = sum as f64 / n as f64;
            // Ticks are rounded up: the drawn mean is up to one tick above.
            assert!(
                (drawn - mean - 0.5).abs() < mean * 0.05,
                "{lifetime:?}: {drawn}"
            );
        }
        assert_eq!(
            Lifetime::Pareto {
                shape: 2.0,
                scale: 5.0
            }
            .draw(1.0),
            5
        );
    }
}
