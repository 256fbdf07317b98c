//! The loops a harness calls: writes with a per-write hook, readers, and trace replay.
//!
//! The harness owns timing and histograms. For one latency sample per write, either time
//! [`apply`] in the harness's own loop, or pass [`run_writes`] / [`replay`] a
//! [`WriteRecorder`] that reads the clock in `before` and `record` (only the tree write runs
//! in between). Readers call [`reader_loop`] on other threads while a writer runs.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use object_alloc::{ObjectAlloc, rcu};

use crate::ops::SplitMix64;
use crate::trace::{Trace, TraceEvent};
use crate::{CheckError, MapleTree, Op, RangeModel, TreeStats, WriteConfig, WriteError, WriteInfo};

/// Receives what each write did.
///
/// For one latency sample per write, read the clock in [`WriteRecorder::before`] and again
/// in [`WriteRecorder::record`]: nothing but the tree write runs between the two calls.
/// A closure `|op, info| ...` is a recorder (with a `before` that does nothing).
pub trait WriteRecorder {
    /// Called just before a tree write of `op` (never for an operation that writes nothing).
    #[inline]
    fn before(&mut self, op: &Op) {
        let _ = op;
    }

    /// Called right after each tree write with the operation and what the write did.
    fn record(&mut self, op: &Op, info: &WriteInfo);
}

impl<F: FnMut(&Op, &WriteInfo)> WriteRecorder for F {
    #[inline]
    fn record(&mut self, op: &Op, info: &WriteInfo) {
        self(op, info)
    }
}

/// A recorder that records nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRecorder;

impl WriteRecorder for NoRecorder {
    #[inline]
    fn record(&mut self, _op: &Op, _info: &WriteInfo) {}
}

/// Applies one operation: one tree write, or none when the operation changes nothing
/// ([`Op::store`] is `None`).
#[inline]
pub fn apply<A: ObjectAlloc>(
    tree: &MapleTree<'_, A>,
    op: &Op,
) -> Result<Option<WriteInfo>, WriteError> {
    match op.store() {
        Some((range, value)) => tree.store(range, value).map(Some),
        None => Ok(None),
    }
}

/// Applies every operation in order, calling `recorder` after each write; returns the tree's
/// totals. Stops at the first refused write (the allocator could not supply the reserve).
pub fn run_writes<A: ObjectAlloc, R: WriteRecorder + ?Sized>(
    tree: &MapleTree<'_, A>,
    ops: &[Op],
    recorder: &mut R,
) -> Result<TreeStats, WriteError> {
    for op in ops {
        if let Some((range, value)) = op.store() {
            recorder.before(op);
            let info = tree.store(range, value)?;
            recorder.record(op, &info);
        }
    }
    Ok(tree.stats())
}

/// The [`RangeModel`] of a stream: what a tree holds after [`run_writes`] of `ops` from empty.
pub fn model_of(ops: &[Op]) -> RangeModel {
    let mut model = RangeModel::new();
    for op in ops {
        if let Some((range, value)) = op.store() {
            model.store(range, value);
        }
    }
    model
}

/// What a reader did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReaderTotals {
    /// Lookups made.
    pub lookups: u64,
    /// Lookups that found a mapping.
    pub hits: u64,
}

/// Looks up random addresses of `range` until `stop` is set (at least one batch), `batch` lookups per
/// read-side section (the kernel's page-fault path takes one section per lookup; a batch of 1
/// does the same).
pub fn reader_loop<A: ObjectAlloc>(
    tree: &MapleTree<'_, A>,
    range: Range<u64>,
    seed: u64,
    batch: usize,
    stop: &AtomicBool,
) -> ReaderTotals {
    let mut rng = SplitMix64::new(seed);
    let span = range.end.saturating_sub(range.start).max(1);
    let mut totals = ReaderTotals::default();
    let batch = batch.max(1);
    loop {
        let guard = rcu::read();
        for _ in 0..batch {
            let addr = range.start + rng.below(span);
            totals.hits += u64::from(tree.lookup_in(&guard, addr).is_some());
        }
        drop(guard);
        totals.lookups += batch as u64;
        if stop.load(Ordering::Relaxed) {
            return totals;
        }
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayOutcome {
    /// Trace records replayed.
    pub records: u64,
    /// Operations by kind, indexed as [`OpKind::ALL`](crate::OpKind::ALL).
    pub ops_by_kind: [u64; 4],
    /// Tree writes (operations that changed nothing made none).
    pub writes: u64,
    /// Writes made to copy a parent's mappings into a forked address space (not passed to the
    /// recorder: the kernel duplicates a tree with its own bulk path).
    pub fork_copy_writes: u64,
    /// Address spaces created.
    pub spaces: u64,
    /// Most address spaces alive at once.
    pub max_live_spaces: u64,
    /// `fork` events.
    pub forks: u64,
    /// `exit` events (and spaces still alive at the end).
    pub exits: u64,
    /// Totals over every tree of the replay (`live_nodes` and `height` are the largest seen).
    pub stats: TreeStats,
    /// Whether each tree was checked against a model at its exit.
    pub checked: bool,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A write was refused (the allocator could not supply the reserve).
    #[error("trace record {record} (address space {space}): {source}")]
    Write {
        /// Index of the record.
        record: usize,
        /// Address space.
        space: u32,
        /// The refusal.
        source: WriteError,
    },
    /// A tree differs from its model (only with checking on).
    #[error("address space {space}: {source}")]
    Check {
        /// Address space.
        space: u32,
        /// The difference.
        source: CheckError,
    },
}

struct Space<'a, A: ObjectAlloc> {
    tree: MapleTree<'a, A>,
    model: Option<RangeModel>,
}

fn add_stats(total: &mut TreeStats, s: &TreeStats) {
    for (t, v) in total.writes_by_kind.iter_mut().zip(s.writes_by_kind) {
        *t += v;
    }
    total.nodes_reserved += s.nodes_reserved;
    total.nodes_used += s.nodes_used;
    total.nodes_outside_reserve += s.nodes_outside_reserve;
    total.nodes_retired += s.nodes_retired;
    total.prefills += s.prefills;
    total.single_allocs += s.single_allocs;
    total.live_nodes = total.live_nodes.max(s.live_nodes);
    total.height = total.height.max(s.height);
}

/// Replays `trace` into one tree per address space, all on `alloc`. Operations go to the
/// recorder; `fork` copies the parent's mappings into a new tree; `exit` drops the tree. With
/// `check`, a model is kept per space and each tree is checked against it when it exits and
/// at the end. Never fails on the trace's content; only a refused reserve (or, with `check`,
/// a tree bug) stops it.
pub fn replay<A: ObjectAlloc, R: WriteRecorder + ?Sized>(
    alloc: &A,
    trace: &Trace,
    config: WriteConfig,
    check: bool,
    recorder: &mut R,
) -> Result<ReplayOutcome, ReplayError> {
    let mut spaces: HashMap<u32, Space<'_, A>> = HashMap::new();
    let mut out = ReplayOutcome {
        checked: check,
        ..ReplayOutcome::default()
    };
    let refused = |record, space, source| ReplayError::Write {
        record,
        space,
        source,
    };
    let new_space = |out: &mut ReplayOutcome, record: usize, space: u32| {
        out.spaces += 1;
        MapleTree::with_config(alloc, config)
            .map(|tree| Space {
                tree,
                model: check.then(RangeModel::new),
            })
            .map_err(|source| ReplayError::Write {
                record,
                space,
                source: WriteError::Reserve { nodes: 1, source },
            })
    };
    let retire =
        |out: &mut ReplayOutcome, id: u32, space: Space<'_, A>| -> Result<(), ReplayError> {
            if let Some(model) = &space.model {
                space
                    .tree
                    .check(model.as_map())
                    .map_err(|source| ReplayError::Check { space: id, source })?;
            }
            add_stats(&mut out.stats, &space.tree.stats());
            out.exits += 1;
            Ok(())
        };
    for (index, record) in trace.records.iter().enumerate() {
        out.records += 1;
        let id = record.space;
        match record.event {
            TraceEvent::Op(op) => {
                let space = match spaces.entry(id) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        entry.insert(new_space(&mut out, index, id)?)
                    }
                };
                out.ops_by_kind[op.kind().index()] += 1;
                if let Some((range, value)) = op.store() {
                    recorder.before(&op);
                    let info = space
                        .tree
                        .store(range.clone(), value)
                        .map_err(|e| refused(index, id, e))?;
                    recorder.record(&op, &info);
                    if let Some(model) = &mut space.model {
                        model.store(range, value);
                    }
                    out.writes += 1;
                }
            }
            TraceEvent::Fork { child } => {
                out.forks += 1;
                let mut copy = new_space(&mut out, index, child)?;
                if let Some(parent) = spaces.get(&id) {
                    for (range, value) in parent.tree.ranges() {
                        copy.tree
                            .store(range.clone(), Some(value))
                            .map_err(|e| refused(index, child, e))?;
                        if let Some(model) = &mut copy.model {
                            model.store(range, Some(value));
                        }
                        out.fork_copy_writes += 1;
                    }
                }
                if let Some(old) = spaces.insert(child, copy) {
                    retire(&mut out, child, old)?;
                }
            }
            TraceEvent::Exit => {
                if let Some(space) = spaces.remove(&id) {
                    retire(&mut out, id, space)?;
                }
            }
        }
        out.max_live_spaces = out.max_live_spaces.max(spaces.len() as u64);
    }
    let mut rest: Vec<_> = spaces.into_iter().collect();
    rest.sort_by_key(|(id, _)| *id);
    for (id, space) in rest {
        retire(&mut out, id, space)?;
    }
    Ok(out)
}

/// Counts of each [`OpKind`](crate::OpKind) in `ops`, indexed as
/// [`OpKind::ALL`](crate::OpKind::ALL).
pub fn count_kinds(ops: &[Op]) -> [u64; 4] {
    let mut counts = [0; 4];
    for op in ops {
        counts[op.kind().index()] += 1;
    }
    counts
}
