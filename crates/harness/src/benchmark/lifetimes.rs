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
//! bytes and the process's resident set into a [`CycleLog`], which keeps only running
//! figures (the memory floor at the drains, the slopes over the holds); the time that takes
//! is upkeep, left out of the measured time.

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

/// The first worker's notes at the end of each hold and drain, kept as running figures of
/// constant size: a log that grew by a point per stage would itself raise the resident set
/// that the soak checks for growth (27,000 points, about 1.3 MB with the vector's slack, over
/// ten minutes).
#[derive(Debug)]
pub(crate) struct CycleLog {
    start: Instant,
    tally: Mutex<CycleTally>,
}

impl CycleLog {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            tally: Mutex::new(CycleTally::default()),
        }
    }

    fn add(&self, point: CyclePoint) {
        self.tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(&point);
    }

    /// The figures so far.
    pub(crate) fn tally(&self) -> CycleTally {
        *self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The cycle notes' figures: drains completed, and per metric (slab bytes, resident set) its
/// floors at the drains and its trend over the ends of the holds.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CycleTally {
    /// Drains completed.
    pub(crate) drains: u64,
    /// Per metric ([`CycleTally::METRICS`] order): the values at the ends of the drains.
    pub(crate) floors: [Floors; 2],
    /// Per metric: the values at the ends of the holds, against time.
    pub(crate) holds: [Trend; 2],
}

impl CycleTally {
    /// The metrics, in the order of `floors` and `holds`.
    pub(crate) const METRICS: [&'static str; 2] = ["slab_bytes", "rss_bytes"];

    fn add(&mut self, point: &CyclePoint) {
        if point.drained {
            self.drains += 1;
        }
        for (i, value) in [point.slab_bytes, point.rss_bytes].into_iter().enumerate() {
            let Some(value) = value else { continue };
            if point.drained {
                self.floors[i].add(value as f64);
            } else {
                self.holds[i].add(point.t, value as f64);
            }
        }
    }
}

/// The first, lowest and highest of a series.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Floors {
    /// `(first, lowest, highest)`, once a value came.
    pub(crate) seen: Option<(f64, f64, f64)>,
}

impl Floors {
    fn add(&mut self, value: f64) {
        self.seen = Some(match self.seen {
            None => (value, value, value),
            Some((first, low, high)) => (first, low.min(value), high.max(value)),
        });
    }
}

/// A least-squares line through `(t, v)` points, kept as running means and co-moments
/// (Welford's updates), so that its size does not grow with the points and the sums do not
/// lose the slope to cancellation.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Trend {
    n: u64,
    mean_t: f64,
    mean_v: f64,
    /// Sum of `(t - mean_t) * (v - mean_v)`.
    co: f64,
    /// Sum of `(t - mean_t)^2`.
    var: f64,
}

impl Trend {
    pub(crate) fn add(&mut self, t: f64, v: f64) {
        self.n += 1;
        let n = self.n as f64;
        let dt = t - self.mean_t;
        self.mean_t += dt / n;
        self.mean_v += (v - self.mean_v) / n;
        self.co += dt * (v - self.mean_v);
        self.var += dt * (t - self.mean_t);
    }

    /// The slope, in units of `v` per unit of `t`; `None` below two points or when every `t`
    /// is the same.
    pub(crate) fn slope(&self) -> Option<f64> {
        (self.n >= 2 && self.var > 0.0).then(|| self.co / self.var)
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
        log.add(point);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_is_its_slope() {
        let mut line = Trend::default();
        (0..10).for_each(|x| line.add(x as f64, 3.0 * x as f64 + 7.0));
        assert!((line.slope().unwrap() - 3.0).abs() < 1e-9);
        let mut one = Trend::default();
        one.add(1.0, 2.0);
        assert_eq!(one.slope(), None);
        one.add(1.0, 3.0);
        assert_eq!(one.slope(), None, "every t the same");
    }

    /// The running slope is the two-pass least-squares slope, also for a soak's magnitudes
    /// (27,000 points over 600 s around 10 MB, rising 4 KB/s, with noise).
    #[test]
    fn the_running_slope_matches_the_two_pass_one() {
        let mut rng = Rng::new(3, 4);
        let points: Vec<(f64, f64)> = (0..27_000)
            .map(|i| {
                let t = i as f64 * 600.0 / 27_000.0;
                let noise = (rng.next() % 200_000) as f64 - 100_000.0;
                (t, 1.0e7 + 4_000.0 * t + noise)
            })
            .collect();
        let n = points.len() as f64;
        let (mt, mv) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), &(t, v)| (a + t / n, b + v / n));
        let (co, var) = points.iter().fold((0.0, 0.0), |(c, w), &(t, v)| {
            (c + (t - mt) * (v - mv), w + (t - mt) * (t - mt))
        });
        let mut trend = Trend::default();
        points.iter().for_each(|&(t, v)| trend.add(t, v));
        let running = trend.slope().unwrap();
        assert!(
            (running - co / var).abs() < 1e-6 * (co / var).abs(),
            "{running} against {}",
            co / var
        );
        assert!((running - 4_000.0).abs() < 100.0, "{running}");
    }

    #[test]
    fn the_tally_keeps_floors_and_hold_trends_apart_and_skips_unknown_values() {
        let log = CycleLog::new();
        let point = |t: f64, drained: bool, slab: u64, rss: Option<u64>| CyclePoint {
            t,
            drained,
            slab_bytes: Some(slab),
            rss_bytes: rss,
        };
        log.add(point(1.0, false, 900, Some(5_000)));
        log.add(point(2.0, true, 100, None));
        log.add(point(3.0, false, 1_100, Some(5_200)));
        log.add(point(4.0, true, 80, Some(4_000)));
        log.add(point(5.0, true, 120, Some(4_100)));
        let tally = log.tally();
        assert_eq!(tally.drains, 3);
        assert_eq!(tally.floors[0].seen, Some((100.0, 80.0, 120.0)));
        assert_eq!(tally.floors[1].seen, Some((4_000.0, 4_000.0, 4_100.0)));
        assert!((tally.holds[0].slope().unwrap() - 100.0).abs() < 1e-9);
        assert!((tally.holds[1].slope().unwrap() - 100.0).abs() < 1e-9);
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
