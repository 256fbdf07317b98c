//! Reading the whole tree under the writer lock: its ranges and its structural invariants.

use std::collections::BTreeMap;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use object_alloc::ObjectAlloc;

use super::{CheckError, MapleTree, TreeShape, Value, decode};
use crate::node::{MIN_FILL, Node, SLOTS};

impl<A: ObjectAlloc> MapleTree<'_, A> {
    /// Every stored range with its value, in key order (gaps left out).
    pub fn ranges(&self) -> Vec<(Range<u64>, Value)> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        let root =
            NonNull::new(self.root.load(Ordering::Acquire)).expect("a tree always has a root");
        let mut visit = |first: u64, last: u64, value: Option<Value>| {
            if let Some(value) = value {
                out.push((first..last + 1, value));
            }
        };
        walk_leaves(root, 0, u64::MAX, &mut visit);
        out
    }

    /// Checks every structural invariant of the [module documentation](super) and the node
    /// count; returns the tree's shape.
    pub fn check_structure(&self) -> Result<TreeShape, CheckError> {
        let w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let root =
            NonNull::new(self.root.load(Ordering::Acquire)).expect("a tree always has a root");
        let mut shape = TreeShape {
            height: w.height,
            ..TreeShape::default()
        };
        // SAFETY: the writer lock is held; the root is live.
        let root_level = usize::from(unsafe { Node::at(root) }.level());
        if root_level + 1 != w.height {
            return Err(CheckError(format!(
                "root is at level {root_level} but the tree records height {}",
                w.height
            )));
        }
        check_node(root, root_level, 0, u64::MAX, true, &mut shape)?;
        if shape.nodes as u64 != w.stats.live_nodes {
            return Err(CheckError(format!(
                "walk found {} nodes, the writer accounts for {}",
                shape.nodes, w.stats.live_nodes
            )));
        }
        Ok(shape)
    }

    /// Checks the structure, then that the stored ranges are exactly those of `model`
    /// (start → (end, value)).
    pub fn check(&self, model: &BTreeMap<u64, (u64, Value)>) -> Result<TreeShape, CheckError> {
        let shape = self.check_structure()?;
        let ranges = self.ranges();
        let mut expected = model
            .iter()
            .map(|(&start, &(end, value))| (start..end, value));
        for (i, got) in ranges.iter().enumerate() {
            match expected.next() {
                Some(want) if want == *got => {}
                Some(want) => {
                    return Err(CheckError(format!(
                        "range {i}: tree holds {:#x}..{:#x} = {}, model {:#x}..{:#x} = {}",
                        got.0.start, got.0.end, got.1, want.0.start, want.0.end, want.1
                    )));
                }
                None => {
                    return Err(CheckError(format!(
                        "tree holds {:#x}..{:#x} = {} beyond the model's {} ranges",
                        got.0.start,
                        got.0.end,
                        got.1,
                        model.len()
                    )));
                }
            }
        }
        if let Some(want) = expected.next() {
            return Err(CheckError(format!(
                "model range {:#x}..{:#x} = {} missing from the tree ({} ranges)",
                want.0.start,
                want.0.end,
                want.1,
                ranges.len()
            )));
        }
        Ok(shape)
    }
}

fn walk_leaves(
    node: NonNull<Node>,
    min: u64,
    max: u64,
    visit: &mut impl FnMut(u64, u64, Option<Value>),
) {
    // SAFETY: callers hold the writer lock (or own the tree); the subtree is live.
    let n = unsafe { Node::at(node) };
    let len = n.len();
    for i in 0..len {
        let (lo, hi) = n.bounds(i, len, min, max);
        if n.level() == 0 {
            visit(lo, hi, decode(n.slot(i)));
        } else {
            walk_leaves(n.child(i), lo, hi, visit);
        }
    }
}

fn check_node(
    node: NonNull<Node>,
    level: usize,
    min: u64,
    max: u64,
    is_root: bool,
    shape: &mut TreeShape,
) -> Result<(), CheckError> {
    // SAFETY: the writer lock is held; the subtree is live.
    let n = unsafe { Node::at(node) };
    let len = n.len();
    let at = || format!("node {node:p} (level {level}, keys {min:#x}..={max:#x})");
    shape.nodes += 1;
    if usize::from(n.level()) != level {
        return Err(CheckError(format!("{}: records level {}", at(), n.level())));
    }
    if len == 0 || len > SLOTS {
        return Err(CheckError(format!("{}: holds {len} entries", at())));
    }
    let least = if !is_root {
        MIN_FILL
    } else if level > 0 {
        2
    } else {
        1
    };
    if len < least {
        return Err(CheckError(format!(
            "{}: holds {len} entries, fewer than {least}",
            at()
        )));
    }
    let mut prev_gap = false;
    for i in 0..len {
        let (lo, hi) = n.bounds(i, len, min, max);
        if lo > hi || (i > 0 && lo <= min) {
            return Err(CheckError(format!(
                "{}: entry {i} spans {lo:#x}..={hi:#x}",
                at()
            )));
        }
        if level == 0 {
            let gap = n.slot(i).is_null();
            if gap && prev_gap {
                return Err(CheckError(format!(
                    "{}: adjacent gaps at entries {} and {i}",
                    at(),
                    i - 1
                )));
            }
            prev_gap = gap;
            if gap {
                shape.gaps += 1;
            } else {
                shape.ranges += 1;
            }
        } else {
            check_node(n.child(i), level - 1, lo, hi, false, shape)?;
        }
    }
    if level == 0 {
        shape.leaves += 1;
    }
    Ok(())
}
