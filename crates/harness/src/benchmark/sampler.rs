//! The memory sampler: a thread beside the measured ones that reads the cache's gauges and
//! the process's resident set at a fixed interval, for the result's timeline.
//!
//! The thread is spawned by the coordinator after the coordinator has moved to a CPU the
//! measured threads leave free (when there is one), so it inherits that CPU and takes no
//! time from a measured CPU; without a free CPU it shares theirs, and its cost is in the
//! figures (`docs/results.md` states what it measured). Each reading is one `stats()` call
//! (which may take a design's locks briefly) and one read of `/proc/self/statm` into a
//! fixed buffer. Readings are taken on a fixed schedule (`start + k * interval`); a reading
//! that overruns its slot skips the slots it missed instead of catching up in a burst.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use object_alloc::AllocStats;

use crate::result::{Timeline, TimelineSample};

/// What one reading gets: the cache's snapshot, and the bytes of its live objects where the
/// harness knows them (the object size times the live objects, per cache).
#[derive(Clone, Debug, Default)]
pub(crate) struct Reading {
    pub(crate) stats: AllocStats,
    pub(crate) live_bytes: Option<u64>,
}

/// Takes a [`Reading`]; called from the sampler and coordinator threads.
pub(crate) type ReadFn<'a> = &'a (dyn Fn() -> Reading + Sync);

/// The sampler's settings.
#[derive(Clone, Copy)]
pub(crate) struct SamplerPlan<'a> {
    pub(crate) interval: Duration,
    pub(crate) read: ReadFn<'a>,
}

/// The shared state of a running sampler.
pub(crate) struct SamplerState {
    stop: AtomicBool,
    /// The phase under way, set by the coordinator before each release.
    pub(crate) phase: AtomicU32,
    samples: Mutex<Timeline>,
}

impl SamplerState {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            stop: AtomicBool::new(false),
            phase: AtomicU32::new(0),
            samples: Mutex::new(Timeline {
                interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
                ..Timeline::default()
            }),
        }
    }

    /// Asks the sampler loop to end (it notices within one interval, or at once when
    /// unparked).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// The timeline recorded so far.
    pub(crate) fn take(&self) -> Timeline {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The sampler loop: runs on its own thread until [`SamplerState::stop`].
    pub(crate) fn run(&self, plan: SamplerPlan<'_>) {
        let start = Instant::now();
        let mut rss = Statm::open();
        let mut previous: Option<BTreeMap<String, u64>> = None;
        let mut samples = Vec::with_capacity(1024);
        let mut moves = Moves::default();
        let mut spent = Duration::ZERO;
        let mut slot = 0u32;
        loop {
            let began = Instant::now();
            let reading = (plan.read)();
            let mut sample = sample_of(&reading, rss.as_mut().and_then(Statm::rss_bytes));
            sample.t = (began - start).as_secs_f64();
            sample.phase = self.phase.load(Ordering::Relaxed);
            let counters = reading.stats.counters;
            if let Some(previous) = &previous {
                moves.note(samples.len(), previous, &counters);
            }
            previous = Some(counters);
            samples.push(sample);
            spent += began.elapsed();
            // The next slot not yet past.
            let now = Instant::now();
            let elapsed = now - start;
            let next = (elapsed.as_nanos() / plan.interval.as_nanos().max(1)) as u32 + 1;
            slot = slot.max(next.saturating_sub(1)) + 1;
            let due = start + plan.interval * slot;
            loop {
                if self.stop.load(Ordering::Acquire) {
                    moves.fill(&mut samples);
                    let mut timeline = self.samples.lock().unwrap_or_else(|p| p.into_inner());
                    timeline.samples = samples;
                    timeline.sampling_ns = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
                    return;
                }
                let now = Instant::now();
                if now >= due {
                    break;
                }
                std::thread::park_timeout(due - now);
            }
        }
    }
}

/// The counters that moved at each reading, kept compact while the measurement runs: a map of
/// names per reading (about half a kilobyte each, a heap allocation per name) made the
/// process's resident set grow by some 2 KB/s at one reading a second, the same for every
/// design, which a soak would read as the allocator's. Here each change is 16 bytes in one
/// vector, and the names are stored once; the readings get their maps when the sampler stops.
#[derive(Debug, Default)]
struct Moves {
    /// Every counter name seen, once.
    names: Vec<String>,
    /// `(reading, name, change)`, in reading order.
    changes: Vec<(u32, u32, i64)>,
}

impl Moves {
    /// Notes the counters of `now` that differ from `before`, for reading `index`.
    fn note(&mut self, index: usize, before: &BTreeMap<String, u64>, now: &BTreeMap<String, u64>) {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        for (name, change) in moved(before, now) {
            let id = match self.names.iter().position(|known| known == name) {
                Some(id) => id,
                None => {
                    self.names.push(name.to_owned());
                    self.names.len() - 1
                }
            };
            self.changes.push((index, id as u32, change));
        }
    }

    /// Gives each reading its map of moved counters.
    fn fill(self, samples: &mut [TimelineSample]) {
        for (index, id, change) in self.changes {
            if let Some(sample) = samples.get_mut(index as usize) {
                sample.moved.insert(self.names[id as usize].clone(), change);
            }
        }
    }
}

/// The timeline entry of `reading` (time and phase left at 0).
pub(crate) fn sample_of(reading: &Reading, rss_bytes: Option<u64>) -> TimelineSample {
    let stats = &reading.stats;
    TimelineSample {
        rss_bytes,
        slab_bytes: stats.slab_bytes,
        slabs: stats.slabs,
        partial_slabs: stats.partial_slabs,
        live_objects: stats.live_objects,
        live_bytes: reading.live_bytes,
        cached_objects: stats.cached_objects,
        ..TimelineSample::default()
    }
}

/// The counters of `now` that differ from `before`, by how much.
fn moved<'a>(
    before: &BTreeMap<String, u64>,
    now: &'a BTreeMap<String, u64>,
) -> impl Iterator<Item = (&'a str, i64)> {
    now.iter().filter_map(|(name, &value)| {
        let old = before.get(name).copied().unwrap_or(0);
        (value != old).then(|| (name.as_str(), value.wrapping_sub(old) as i64))
    })
}

/// `/proc/self/statm`, kept open and read into a fixed buffer (no allocation per reading).
pub(crate) struct Statm {
    file: File,
    page: u64,
}

impl Statm {
    /// Opens the file; `None` where there is no procfs.
    pub(crate) fn open() -> Option<Self> {
        let file = File::open("/proc/self/statm").ok()?;
        let page = rustix::param::page_size() as u64;
        Some(Self { file, page })
    }

    /// The resident set in bytes (the second field, in pages).
    pub(crate) fn rss_bytes(&mut self) -> Option<u64> {
        let mut buffer = [0u8; 128];
        let n = self.file.read_at(&mut buffer, 0).ok()?;
        let text = std::str::from_utf8(&buffer[..n]).ok()?;
        let pages: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
        Some(pages * self.page)
    }
}

/// The resident set of this process now, in bytes.
pub(crate) fn rss_now() -> Option<u64> {
    Statm::open()?.rss_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_reads_a_resident_set_that_grows_when_memory_is_touched() {
        let mut statm = Statm::open().expect("procfs");
        let before = statm.rss_bytes().unwrap();
        let block = vec![1u8; 64 << 20];
        let after = statm.rss_bytes().unwrap();
        assert!(
            after >= before + (32 << 20),
            "rss {before} then {after} around 64 MiB touched"
        );
        drop(block);
    }

    #[test]
    fn moved_counters_are_the_differences_that_are_not_zero() {
        let before: BTreeMap<String, u64> = [("a".into(), 5), ("b".into(), 7)].into();
        let now: BTreeMap<String, u64> = [("a".into(), 5), ("b".into(), 4), ("c".into(), 2)].into();
        let moved: Vec<(&str, i64)> = moved(&before, &now).collect();
        assert_eq!(moved, [("b", -3), ("c", 2)]);
    }

    #[test]
    fn compact_moves_give_each_reading_its_own_map() {
        let first: BTreeMap<String, u64> = [("a".into(), 1), ("b".into(), 1)].into();
        let second: BTreeMap<String, u64> = [("a".into(), 4), ("b".into(), 1)].into();
        let third: BTreeMap<String, u64> =
            [("a".into(), 4), ("b".into(), 0), ("c".into(), 9)].into();
        let mut moves = Moves::default();
        moves.note(1, &first, &second);
        moves.note(2, &second, &third);
        assert_eq!(moves.names, ["a", "b", "c"]);
        let mut samples = vec![TimelineSample::default(); 3];
        moves.fill(&mut samples);
        assert!(samples[0].moved.is_empty());
        assert_eq!(samples[1].moved, [("a".to_owned(), 3)].into());
        assert_eq!(
            samples[2].moved,
            [("b".to_owned(), -1), ("c".to_owned(), 9)].into()
        );
    }

    #[test]
    fn the_sampler_keeps_its_interval_and_stops() {
        let read = || Reading::default();
        let state = SamplerState::new(Duration::from_millis(2));
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                state.run(SamplerPlan {
                    interval: Duration::from_millis(2),
                    read: &read,
                })
            });
            std::thread::sleep(Duration::from_millis(100));
            state.stop();
            handle.thread().unpark();
        });
        let timeline = state.take();
        let n = timeline.samples.len();
        // 100 ms at 2 ms: about 50 readings; a loaded machine delays some, never adds any.
        assert!((10..=52).contains(&n), "{n} samples");
        assert!(timeline.samples.windows(2).all(|w| w[1].t > w[0].t));
        assert_eq!(timeline.interval_ns, 2_000_000);
    }
}
