//! Fragmentation, retention and locality figures of a measurement, from the sampler's
//! readings (see `sampler`), the readings after the work, and the locality probe.

use std::collections::BTreeMap;
use std::ptr::NonNull;

use object_alloc::{AllocFlags, AllocStats, ObjectAlloc};

use crate::counters::CounterReading;
use crate::result::{Figure, Fragmentation, MemoryFigures, Retention, Timeline};

use super::sampler::{Reading, rss_now};

/// Objects the locality probe allocates back to back.
pub(crate) const PROBE_OBJECTS: usize = 1000;

/// Bytes of the page unit the probe counts (the base page of x86-64 and most others).
const PROBE_PAGE: usize = 4096;

/// Why a design has no fragmentation figures.
const NO_SLABS: &str = "the design reports no slab pages (a general-purpose allocator keeps its own heap; see the process_* figures in stats)";

/// Why a design has no partial-slab share.
const NO_PARTIAL: &str = "the design does not count its partially used slabs";

/// The sum of the snapshots of several caches: a gauge is `None` unless every cache gave
/// it; counters add up.
pub(crate) fn sum_stats(all: impl IntoIterator<Item = AllocStats>) -> AllocStats {
    let mut iter = all.into_iter();
    let Some(mut total) = iter.next() else {
        return AllocStats::default();
    };
    let add = |a: Option<u64>, b: Option<u64>| Some(a? + b?);
    for stats in iter {
        total.live_objects = add(total.live_objects, stats.live_objects);
        total.cached_objects = add(total.cached_objects, stats.cached_objects);
        total.slab_bytes = add(total.slab_bytes, stats.slab_bytes);
        total.slabs = add(total.slabs, stats.slabs);
        total.partial_slabs = add(total.partial_slabs, stats.partial_slabs);
        for (name, value) in stats.counters {
            total.add(&name, value);
        }
    }
    total
}

/// A reading of caches `(cache, object size)`: their summed snapshot and live bytes.
pub(crate) fn read_caches<A: ObjectAlloc>(caches: &[(&A, usize)]) -> Reading {
    let mut live_bytes = Some(0u64);
    let stats = sum_stats(caches.iter().map(|&(cache, size)| {
        let stats = cache.stats();
        live_bytes = match (live_bytes, stats.live_objects) {
            (Some(sum), Some(live)) => Some(sum + live * size as u64),
            _ => None,
        };
        stats
    }));
    Reading { stats, live_bytes }
}

/// Distinct 4 KiB pages of [`PROBE_OBJECTS`] objects allocated back to back from `cache` on
/// the calling thread, freed again in reverse order; `None` when an allocation fails.
pub(crate) fn pages_touched<A: ObjectAlloc>(cache: &A) -> Option<u64> {
    let mut objects: Vec<NonNull<u8>> = Vec::with_capacity(PROBE_OBJECTS);
    for _ in 0..PROBE_OBJECTS {
        match cache.alloc(AllocFlags::empty()) {
            Some(object) => objects.push(object),
            None => break,
        }
    }
    let complete = objects.len() == PROBE_OBJECTS;
    let mut pages: Vec<usize> = objects
        .iter()
        .map(|o| o.as_ptr() as usize / PROBE_PAGE)
        .collect();
    for &object in objects.iter().rev() {
        // SAFETY: each object was allocated above from this cache and is freed once.
        unsafe { cache.free(object) };
    }
    pages.sort_unstable();
    pages.dedup();
    complete.then_some(pages.len() as u64)
}

/// Fragmentation of one reading, labelled `at`.
fn fragmentation_at(at: &str, stats: &AllocStats, live_bytes: Option<u64>) -> Fragmentation {
    let slab_over_live = match (stats.slab_bytes, live_bytes) {
        (Some(slab), Some(live)) if live > 0 => Figure::Value(slab as f64 / live as f64),
        (Some(_), Some(_)) => Figure::Unsupported {
            unsupported: "no live objects at this point".into(),
        },
        _ => Figure::Unsupported {
            unsupported: NO_SLABS.into(),
        },
    };
    let partial_share = match (stats.partial_slabs, stats.slabs) {
        (Some(partial), Some(slabs)) if slabs > 0 => Figure::Value(partial as f64 / slabs as f64),
        (Some(_), Some(_)) => Figure::Value(0.0),
        _ if stats.slab_bytes.is_none() => Figure::Unsupported {
            unsupported: NO_SLABS.into(),
        },
        _ => Figure::Unsupported {
            unsupported: NO_PARTIAL.into(),
        },
    };
    Fragmentation {
        at: at.to_owned(),
        slab_over_live,
        partial_share,
    }
}

/// What is still held at one point.
pub(crate) fn retention(reading: &Reading) -> Retention {
    let stats = &reading.stats;
    let gauge = |value: Option<u64>, what: &str| {
        Figure::or_unsupported(
            value.map(|v| v as f64),
            &format!("the design does not report {what}"),
        )
    };
    Retention {
        slab_bytes: gauge(stats.slab_bytes, "slab pages"),
        slabs: gauge(stats.slabs, "its slabs"),
        cached_objects: gauge(stats.cached_objects, "cached objects"),
        rss_bytes: gauge(rss_now(), "/proc/self/statm (no procfs)"),
    }
}

/// dTLB misses are not among the counted events; the reason says whether the hardware
/// could count them.
fn dtlb(counters: &BTreeMap<String, CounterReading>) -> Figure {
    let reason = match counters.get("cycles") {
        Some(CounterReading::Unsupported { reason }) => {
            format!("no hardware counters on this machine (cycles: {reason})")
        }
        _ => "the harness does not open a dTLB event".to_owned(),
    };
    Figure::Unsupported {
        unsupported: reason,
    }
}

/// The figures of a measurement: fragmentation at each phase end and at the timeline's
/// peak of slab bytes, retention after the free and after `shrink()`, the probe's pages.
pub(crate) fn figures(
    phase_ends: &[Reading],
    timeline: Option<&Timeline>,
    after_free: &Reading,
    after_shrink: &Reading,
    probe: Option<u64>,
    counters: &BTreeMap<String, CounterReading>,
) -> MemoryFigures {
    let mut fragmentation: Vec<Fragmentation> = phase_ends
        .iter()
        .enumerate()
        .map(|(phase, r)| {
            let at = if phase == 0 {
                "warmup".to_owned()
            } else {
                format!("run {phase}")
            };
            fragmentation_at(&at, &r.stats, r.live_bytes)
        })
        .collect();
    // The peak: the reading with the most slab bytes, phase ends included.
    let peak_sample = timeline
        .into_iter()
        .flat_map(|t| &t.samples)
        .filter_map(|s| Some((s.slab_bytes?, s)))
        .max_by_key(|&(bytes, _)| bytes);
    let peak_end = phase_ends
        .iter()
        .filter_map(|r| Some((r.stats.slab_bytes?, r)))
        .max_by_key(|&(bytes, _)| bytes);
    let peak = match (peak_sample, peak_end) {
        (Some((a, sample)), end) if end.is_none_or(|(b, _)| a > b) => {
            let stats = AllocStats {
                slab_bytes: sample.slab_bytes,
                slabs: sample.slabs,
                partial_slabs: sample.partial_slabs,
                ..AllocStats::default()
            };
            fragmentation_at("peak", &stats, sample.live_bytes)
        }
        (_, Some((_, r))) => fragmentation_at("peak", &r.stats, r.live_bytes),
        _ => fragmentation_at("peak", &AllocStats::default(), None),
    };
    fragmentation.push(peak);
    MemoryFigures {
        fragmentation,
        retained_after_free: retention(after_free),
        retained_after_shrink: retention(after_shrink),
        pages_per_1000_allocs: Figure::or_unsupported(
            probe.map(|p| p as f64),
            "the probe's allocations failed",
        ),
        dtlb_misses_per_op: dtlb(counters),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(slab_bytes: u64, slabs: u64, partial: u64, live: u64) -> AllocStats {
        AllocStats {
            slab_bytes: Some(slab_bytes),
            slabs: Some(slabs),
            partial_slabs: Some(partial),
            live_objects: Some(live),
            ..AllocStats::default()
        }
    }

    #[test]
    fn fragmentation_divides_slab_bytes_by_live_bytes_and_counts_partial_slabs() {
        let f = fragmentation_at("x", &stats(8192, 2, 1, 64), Some(64 * 32));
        assert_eq!(f.slab_over_live, Figure::Value(4.0));
        assert_eq!(f.partial_share, Figure::Value(0.5));
        let none = fragmentation_at("x", &AllocStats::default(), None);
        assert!(none.slab_over_live.value().is_none());
        assert!(none.partial_share.value().is_none());
    }

    #[test]
    fn sums_keep_a_gauge_only_if_every_cache_gives_it() {
        let mut b = stats(4096, 1, 1, 3);
        b.add("x", 2);
        b.partial_slabs = None;
        let total = sum_stats([stats(4096, 1, 0, 5), b]);
        assert_eq!(total.slab_bytes, Some(8192));
        assert_eq!(total.live_objects, Some(8));
        assert_eq!(total.partial_slabs, None);
        assert_eq!(total.counter("x"), 2);
    }

    #[test]
    fn the_peak_is_the_reading_with_the_most_slab_bytes() {
        let reading = |bytes| Reading {
            stats: stats(bytes, bytes / 4096, 1, 10),
            live_bytes: Some(1024),
        };
        let timeline = Timeline {
            samples: vec![crate::result::TimelineSample {
                slab_bytes: Some(40960),
                slabs: Some(10),
                partial_slabs: Some(5),
                live_bytes: Some(4096),
                ..Default::default()
            }],
            ..Timeline::default()
        };
        let f = figures(
            &[reading(4096), reading(8192)],
            Some(&timeline),
            &reading(4096),
            &reading(0),
            Some(7),
            &BTreeMap::new(),
        );
        let at: Vec<&str> = f.fragmentation.iter().map(|f| f.at.as_str()).collect();
        assert_eq!(at, ["warmup", "run 1", "peak"]);
        assert_eq!(f.fragmentation[2].slab_over_live, Figure::Value(10.0));
        assert_eq!(f.fragmentation[2].partial_share, Figure::Value(0.5));
        assert_eq!(f.pages_per_1000_allocs, Figure::Value(7.0));
        assert!(f.dtlb_misses_per_op.value().is_none());
    }
}
