//! The reference model: the same store semantics over a `BTreeMap`, to check the tree against.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::Value;

/// Non-overlapping ranges `start → (end, value)` with [`MapleTree::store`] semantics: a store
/// trims or removes whatever it overlaps, and ranges with equal values are not merged.
///
/// [`MapleTree::store`]: crate::MapleTree::store
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeModel {
    map: BTreeMap<u64, (u64, Value)>,
}

impl RangeModel {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` over `range` (`None` unmaps it). Empty ranges are ignored.
    pub fn store(&mut self, range: Range<u64>, value: Option<Value>) {
        let (start, end) = (range.start, range.end);
        if start >= end {
            return;
        }
        loop {
            let overlapping = self
                .map
                .range(..end)
                .next_back()
                .filter(|(_, (e, _))| *e > start)
                .map(|(&s, &(e, v))| (s, e, v));
            let Some((s, e, v)) = overlapping else { break };
            self.map.remove(&s);
            if e > end {
                self.map.insert(end, (e, v));
            }
            if s < start {
                self.map.insert(s, (start, v));
                break;
            }
        }
        if let Some(value) = value {
            self.map.insert(start, (end, value));
        }
    }

    /// The value at `index`.
    pub fn lookup(&self, index: u64) -> Option<Value> {
        self.range_at(index).map(|(_, v)| v)
    }

    /// The range holding `index`, with its value.
    pub fn range_at(&self, index: u64) -> Option<(Range<u64>, Value)> {
        self.map
            .range(..=index)
            .next_back()
            .filter(|(_, (e, _))| *e > index)
            .map(|(&s, &(e, v))| (s..e, v))
    }

    /// The ranges, `start → (end, value)`, for [`MapleTree::check`](crate::MapleTree::check).
    pub fn as_map(&self) -> &BTreeMap<u64, (u64, Value)> {
        &self.map
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no range is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether any part of `range` is mapped.
    pub fn overlaps(&self, range: Range<u64>) -> bool {
        self.map
            .range(..range.end)
            .next_back()
            .is_some_and(|(_, (e, _))| *e > range.start)
    }

    /// The highest `start` with `start..start + len` unmapped inside `low..high`, searching
    /// top-down as `get_unmapped_area` does (the maple tree's `mas_empty_area_rev`).
    pub fn find_gap_rev(&self, low: u64, high: u64, len: u64) -> Option<u64> {
        if len == 0 || high < low || high - low < len {
            return None;
        }
        let mut top = high;
        for (&s, &(e, _)) in self.map.range(..high).rev() {
            let bottom = e.max(low);
            if top > bottom && top - bottom >= len {
                return Some(top - len);
            }
            top = top.min(s);
            if top <= low {
                return None;
            }
        }
        (top - low >= len).then(|| top - len)
    }

    /// The `n`-th range in key order.
    pub fn nth(&self, n: usize) -> Option<(Range<u64>, Value)> {
        self.map.iter().nth(n).map(|(&s, &(e, v))| (s..e, v))
    }

    /// Iterates over the ranges in key order.
    pub fn iter(&self) -> impl Iterator<Item = (Range<u64>, Value)> + '_ {
        self.map.iter().map(|(&s, &(e, v))| (s..e, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: u64) -> Option<Value> {
        Value::new(x)
    }

    #[test]
    fn stores_trim_split_and_remove() {
        let mut m = RangeModel::new();
        m.store(10..20, v(1));
        m.store(30..40, v(2));
        m.store(15..35, v(3));
        let got: Vec<_> = m.iter().map(|(r, x)| (r, x.get())).collect();
        assert_eq!(got, vec![(10..15, 1), (15..35, 3), (35..40, 2)]);
        m.store(20..25, None);
        let got: Vec<_> = m.iter().map(|(r, x)| (r, x.get())).collect();
        assert_eq!(
            got,
            vec![(10..15, 1), (15..20, 3), (25..35, 3), (35..40, 2)]
        );
        m.store(0..100, None);
        assert!(m.is_empty());
        m.store(5..5, v(1));
        assert!(m.is_empty());
    }

    #[test]
    fn gaps_are_found_top_down() {
        let mut m = RangeModel::new();
        m.store(90..100, v(1));
        m.store(60..80, v(1));
        assert_eq!(m.find_gap_rev(0, 100, 10), Some(80));
        assert_eq!(m.find_gap_rev(0, 100, 11), Some(49));
        assert_eq!(m.find_gap_rev(0, 95, 5), Some(85));
        assert_eq!(m.find_gap_rev(60, 100, 11), None);
        assert_eq!(m.find_gap_rev(0, 100, 0), None);
        assert!(m.overlaps(85..91) && !m.overlaps(80..90));
        assert_eq!(m.range_at(95).map(|(r, _)| r), Some(90..100));
        assert_eq!(m.lookup(85), None);
    }
}
