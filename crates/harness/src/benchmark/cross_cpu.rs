//! `cross-cpu`: per pair, a pinned producer allocates (with `NOWAIT` when the spec says so)
//! and hands objects over through a ring to a consumer pinned on another CPU, which frees
//! them. The threads are those of `producer_consumer` (the producer in its `NOWAIT` mode);
//! this module turns the design's counters into the shares of the `NOWAIT` allocations
//! served by each path.

use std::collections::BTreeMap;

use object_alloc::AllocStats;

/// The design's counters that say where a `NOWAIT` allocation was served, each with the
/// share reported for it. Designs that do not count them (every design but `sheaf`) get no
/// share.
const PATHS: [(&str, &str); 5] = [
    ("nowait_refill_spare", "nowait_share_refill_spare"),
    ("nowait_refill_barn", "nowait_share_refill_barn"),
    ("nowait_refill_slabs", "nowait_share_refill_slabs"),
    ("nowait_from_slabs", "nowait_share_from_slabs"),
    ("nowait_failed", "nowait_share_failed"),
];

/// Adds to `extra`, for the measured runs' `ops` allocations, the share served by each
/// counted path, and the rest (`nowait_share_cpu_sheaf`: popped from the CPU's sheaf
/// without a refill).
pub(super) fn nowait_shares(
    before: &AllocStats,
    after: &AllocStats,
    ops: u64,
    extra: &mut BTreeMap<String, f64>,
) {
    if ops == 0 || !after.counters.contains_key(PATHS[0].0) {
        return;
    }
    let mut counted = 0;
    for (counter, share) in PATHS {
        let n = after
            .counter(counter)
            .saturating_sub(before.counter(counter));
        counted += n;
        extra.insert(share.to_owned(), n as f64 / ops as f64);
    }
    extra.insert(
        "nowait_share_cpu_sheaf".to_owned(),
        ops.saturating_sub(counted) as f64 / ops as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(values: &[(&str, u64)]) -> AllocStats {
        let mut stats = AllocStats::default();
        for &(name, value) in values {
            stats.add(name, value);
        }
        stats
    }

    #[test]
    fn shares_are_of_the_measured_allocations_and_sum_to_one() {
        let before = stats(&[("nowait_refill_barn", 5), ("nowait_from_slabs", 0)]);
        let after = stats(&[
            ("nowait_refill_spare", 0),
            ("nowait_refill_barn", 15),
            ("nowait_refill_slabs", 10),
            ("nowait_from_slabs", 30),
            ("nowait_failed", 0),
        ]);
        let mut extra = BTreeMap::new();
        nowait_shares(&before, &after, 100, &mut extra);
        assert_eq!(extra["nowait_share_refill_barn"], 0.1);
        assert_eq!(extra["nowait_share_refill_slabs"], 0.1);
        assert_eq!(extra["nowait_share_from_slabs"], 0.3);
        assert_eq!(extra["nowait_share_cpu_sheaf"], 0.5);
        let sum: f64 = extra.values().sum();
        assert!((sum - 1.0).abs() < 1e-9, "{extra:?}");
    }

    #[test]
    fn a_design_without_the_counters_gets_no_shares() {
        let mut extra = BTreeMap::new();
        nowait_shares(
            &stats(&[]),
            &stats(&[("alloc_fastpath", 9)]),
            100,
            &mut extra,
        );
        assert!(extra.is_empty());
    }
}
