//! What a write is configured with and what writes and checks report.

use object_alloc::AllocError;
use serde::{Deserialize, Serialize};

use super::Value;

/// The kind of a write, as the kernel's `mas_wr_store_type` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// The range is exactly one existing entry: its slot is replaced in place (0 nodes).
    ExactFit,
    /// The range is the tail of the leaf's last entry and the leaf has room (0 nodes).
    Append,
    /// The leaf is rewritten into one new node (1 node).
    NodeStore,
    /// The leaf overflows and splits, possibly up the tree (`2k + 1` nodes).
    Split,
    /// The leaf underflows and merges with a sibling, possibly up the tree (`2k + 1` nodes).
    Rebalance,
    /// The range reaches beyond the leaf holding its start (`3h + 1` nodes).
    Spanning,
}

impl StoreKind {
    /// Every kind, in the order of [`TreeStats::writes_by_kind`].
    pub const ALL: [StoreKind; 6] = [
        StoreKind::ExactFit,
        StoreKind::Append,
        StoreKind::NodeStore,
        StoreKind::Split,
        StoreKind::Rebalance,
        StoreKind::Spanning,
    ];

    /// Stable lower-case name (`"exact-fit"`, ..., `"spanning"`).
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::ExactFit => "exact-fit",
            StoreKind::Append => "append",
            StoreKind::NodeStore => "node-store",
            StoreKind::Split => "split",
            StoreKind::Rebalance => "rebalance",
            StoreKind::Spanning => "spanning",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// How writes take their nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriteConfig {
    /// A write whose worst case is one node takes it with a plain `alloc` instead of a
    /// prefilled sheaf, as the kernel's maple tree does.
    pub single_node_alloc: bool,
}

/// What one write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WriteInfo {
    /// Its kind.
    pub kind: StoreKind,
    /// Nodes reserved before the write (the worst case for its kind).
    pub reserved: u32,
    /// Nodes taken from the reserve.
    pub used: u32,
    /// Nodes the write needed beyond its reserve (always 0 unless the reservation rule is
    /// wrong; such nodes are allocated with a plain `alloc` and counted here).
    pub outside_reserve: u32,
    /// Nodes the write unlinked and handed to `free_deferred`.
    pub retired: u32,
    /// Tree height before the write.
    pub height_before: u8,
    /// Tree height after the write.
    pub height_after: u8,
}

/// Totals over every write of a tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TreeStats {
    /// Writes, indexed as [`StoreKind::ALL`].
    pub writes_by_kind: [u64; 6],
    /// Sum of [`WriteInfo::reserved`].
    pub nodes_reserved: u64,
    /// Sum of [`WriteInfo::used`].
    pub nodes_used: u64,
    /// Sum of [`WriteInfo::outside_reserve`]: non-zero means the reservation rule is broken.
    pub nodes_outside_reserve: u64,
    /// Sum of [`WriteInfo::retired`].
    pub nodes_retired: u64,
    /// Prefilled sheaves taken.
    pub prefills: u64,
    /// Single-node reserves taken with a plain `alloc` ([`WriteConfig::single_node_alloc`]).
    pub single_allocs: u64,
    /// Nodes in the tree now.
    pub live_nodes: u64,
    /// Height of the tree now (1 = a single leaf).
    pub height: u64,
}

impl TreeStats {
    /// Total writes.
    pub fn writes(&self) -> u64 {
        self.writes_by_kind.iter().sum()
    }
}

/// Why a write was refused; the tree is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// `start >= end`.
    #[error("empty range {start:#x}..{end:#x}: a write needs start < end")]
    EmptyRange {
        /// Start of the range.
        start: u64,
        /// End of the range (exclusive).
        end: u64,
    },
    /// The reserve could not be had.
    #[error("could not reserve {nodes} tree nodes: {source}")]
    Reserve {
        /// Nodes asked for.
        nodes: u32,
        /// The allocator's answer.
        source: AllocError,
    },
    /// A node beyond the reserve was needed and a plain allocation failed too.
    #[error("a write needed a node beyond its reserve and none could be allocated")]
    OutOfNodes,
}

/// A broken invariant or a difference from the model, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("maple tree check failed: {0}")]
pub struct CheckError(pub String);

/// The entry covering a looked-up key: the range `[first, last]` and its value (`None` for a
/// gap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First key of the entry.
    pub first: u64,
    /// Last key of the entry (inclusive).
    pub last: u64,
    /// The value, or `None` in a gap.
    pub value: Option<Value>,
}

/// Figures from a full walk of the tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TreeShape {
    /// Height (1 = a single leaf).
    pub height: usize,
    /// Nodes.
    pub nodes: usize,
    /// Leaves.
    pub leaves: usize,
    /// Leaf entries holding a value.
    pub ranges: usize,
    /// Leaf entries that are gaps.
    pub gaps: usize,
}
