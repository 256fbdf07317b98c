//! The range-tree kinds, `maple-tree` and `trace-replay`: writes to a [`maple::MapleTree`]
//! whose nodes are objects of the allocator under test, one latency sample per write.
//!
//! Both are self-timed ([`Work::SELF_TIMED`]): the clock is read just before and just after
//! each tree write, so a sample is the write alone (its prefill, node allocations, publish
//! and deferred frees), not the stream bookkeeping around it.
//!
//! `maple-tree` replays a stream generated before timing. When a writer reaches the end of
//! its stream it checks the tree against the stream's model, empties the tree with one
//! untimed store over the whole key space (an `exit_mmap`), and replays the same stream
//! from the start: the tree is never rebuilt (readers keep their reference), every pass
//! starts from an empty tree, so one model checks every pass. The emptying store and the
//! check are neither latency samples nor measured time: each writer times them and the run's
//! measured time leaves them out (`upkeep_seconds` in the result's `extra` says how much;
//! `passes` how many).
//!
//! `trace-replay` replays the whole trace per unit of work ([`maple::run::replay`]: one
//! tree per address space, created and dropped as the trace says); a run ends at the first
//! unit boundary after the stop, so a run may exceed its duration by one replay.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use maple::{MapleTree, Op, RangeModel, Trace, Value, WriteConfig, WriteInfo, WriteRecorder};
use object_alloc::ObjectAlloc;

use super::engine::Work;
use super::kinds::Rng;
use crate::histogram::new_latency_histogram;

/// Totals the tree threads report, read after the measurement.
#[derive(Debug, Default)]
pub(crate) struct TreeFigures {
    /// Timed writes (warm-up included).
    pub(crate) writes: AtomicU64,
    /// Nodes reserved by the timed writes.
    pub(crate) reserved: AtomicU64,
    /// Nodes used by the timed writes.
    pub(crate) used: AtomicU64,
    /// Nodes the timed writes needed beyond their reserve (must stay 0).
    pub(crate) outside_reserve: AtomicU64,
    /// Complete passes over a stream or a trace.
    pub(crate) passes: AtomicU64,
    /// Tallest tree seen.
    pub(crate) height: AtomicU64,
    /// The first tree that differed from its model, or the first refused write.
    pub(crate) failure: Mutex<Option<String>>,
}

impl TreeFigures {
    fn fail(&self, what: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(what);
    }

    /// The first failure, if any.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Per-write figures and samples of one writer.
struct WriteTally {
    histogram: Histogram<u64>,
    writes: u64,
    reserved: u64,
    used: u64,
    outside_reserve: u64,
}

impl WriteTally {
    fn new() -> Self {
        Self {
            histogram: new_latency_histogram(),
            writes: 0,
            reserved: 0,
            used: 0,
            outside_reserve: 0,
        }
    }

    #[inline]
    fn record(&mut self, started: Instant, info: &WriteInfo) {
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(nanos.max(1));
        self.writes += 1;
        self.reserved += u64::from(info.reserved);
        self.used += u64::from(info.used);
        self.outside_reserve += u64::from(info.outside_reserve);
    }

    fn flush(&mut self, figures: &TreeFigures) {
        figures.writes.fetch_add(self.writes, Ordering::Relaxed);
        figures.reserved.fetch_add(self.reserved, Ordering::Relaxed);
        figures.used.fetch_add(self.used, Ordering::Relaxed);
        figures
            .outside_reserve
            .fetch_add(self.outside_reserve, Ordering::Relaxed);
        self.writes = 0;
        self.reserved = 0;
        self.used = 0;
        self.outside_reserve = 0;
    }

    fn take_samples(&mut self, keep: bool, histogram: &mut Histogram<u64>) {
        if keep {
            histogram
                .add(&self.histogram)
                .expect("latency histograms share their bounds");
        }
        self.histogram.reset();
    }
}

/// The tree writes of a stream, prepared before timing (operations that write nothing are
/// left out), and the model of the tree after all of them.
#[derive(Debug)]
pub(crate) struct PreparedStream {
    writes: Vec<(Range<u64>, Option<Value>)>,
    model: RangeModel,
}

impl PreparedStream {
    pub(crate) fn new(ops: &[Op]) -> Self {
        Self {
            writes: ops.iter().filter_map(Op::store).collect(),
            model: maple::run::model_of(ops),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// A `maple-tree` writer: one tree write per unit, replaying its stream pass after pass.
pub(crate) struct TreeWriter<'t, 'a, A: ObjectAlloc> {
    tree: &'t MapleTree<'a, A>,
    stream: &'t PreparedStream,
    figures: &'t TreeFigures,
    next: usize,
    tally: WriteTally,
    /// Nanoseconds spent checking and emptying the tree since the engine last asked.
    upkeep_ns: u64,
}

impl<'t, 'a, A: ObjectAlloc> TreeWriter<'t, 'a, A> {
    pub(crate) fn new(
        tree: &'t MapleTree<'a, A>,
        stream: &'t PreparedStream,
        figures: &'t TreeFigures,
    ) -> Self {
        Self {
            tree,
            stream,
            figures,
            next: 0,
            tally: WriteTally::new(),
            upkeep_ns: 0,
        }
    }

    /// Checks the tree against the model of the first `done` writes of the stream.
    fn check(&self, done: usize) {
        let partial;
        let model = if done == self.stream.writes.len() {
            &self.stream.model
        } else {
            let mut m = RangeModel::new();
            for (range, value) in &self.stream.writes[..done] {
                m.store(range.clone(), *value);
            }
            partial = m;
            &partial
        };
        if let Err(e) = self.tree.check(model.as_map()) {
            self.figures.fail(format!(
                "the tree differs from the model of its stream after {done} writes: {e}"
            ));
        }
        self.figures
            .height
            .fetch_max(self.tree.height() as u64, Ordering::Relaxed);
    }

    /// End of the stream: check, empty the tree (untimed), start over.
    #[cold]
    fn restart(&mut self) {
        let started = Instant::now();
        self.check(self.next);
        if let Err(e) = self.tree.store(0..u64::MAX, None) {
            self.figures
                .fail(format!("emptying the tree was refused: {e}"));
        }
        self.figures.passes.fetch_add(1, Ordering::Relaxed);
        self.next = 0;
        self.upkeep_ns += u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    }
}

impl<A: ObjectAlloc> Work for TreeWriter<'_, '_, A> {
    const SELF_TIMED: bool = true;

    #[inline]
    fn unit(&mut self) -> u64 {
        if self.next == self.stream.writes.len() {
            self.restart();
        }
        let (range, value) = self.stream.writes[self.next].clone();
        self.next += 1;
        let started = Instant::now();
        match self.tree.store(range, value) {
            Ok(info) => {
                self.tally.record(started, &info);
                1
            }
            Err(e) => {
                self.figures.fail(format!("a write was refused: {e}"));
                // Counted so that runs of a fixed operation count end; the failure voids
                // the measurement.
                1
            }
        }
    }

    fn end_phase(&mut self) {
        self.tally.flush(self.figures);
    }

    fn take_upkeep_ns(&mut self) -> u64 {
        std::mem::take(&mut self.upkeep_ns)
    }

    fn take_samples(&mut self, keep: bool, histogram: &mut Histogram<u64>) {
        self.tally.take_samples(keep, histogram);
    }
}

impl<A: ObjectAlloc> Drop for TreeWriter<'_, '_, A> {
    fn drop(&mut self) {
        // After the last phase: the partial pass is checked too.
        self.check(self.next);
    }
}

/// A `maple-tree` reader: one read-side section of `batch` lookups per unit
/// ([`maple::run::reader_loop`] with its stop flag already set runs exactly one section).
pub(crate) struct TreeReader<'t, 'a, A: ObjectAlloc> {
    tree: &'t MapleTree<'a, A>,
    range: Range<u64>,
    batch: usize,
    rng: Rng,
    one_section: AtomicBool,
}

impl<'t, 'a, A: ObjectAlloc> TreeReader<'t, 'a, A> {
    pub(crate) fn new(
        tree: &'t MapleTree<'a, A>,
        range: Range<u64>,
        batch: usize,
        rng: Rng,
    ) -> Self {
        Self {
            tree,
            range,
            batch,
            rng,
            one_section: AtomicBool::new(true),
        }
    }
}

impl<A: ObjectAlloc> Work for TreeReader<'_, '_, A> {
    #[inline]
    fn unit(&mut self) -> u64 {
        maple::run::reader_loop(
            self.tree,
            self.range.clone(),
            self.rng.next(),
            self.batch,
            &self.one_section,
        )
        .lookups
    }
}

/// The recorder of a replay: one sample per write.
struct ReplayRecorder<'w> {
    tally: &'w mut WriteTally,
    started: Instant,
}

impl WriteRecorder for ReplayRecorder<'_> {
    #[inline]
    fn before(&mut self, _op: &Op) {
        self.started = Instant::now();
    }

    #[inline]
    fn record(&mut self, _op: &Op, info: &WriteInfo) {
        self.tally.record(self.started, info);
    }
}

/// A `trace-replay` writer: one whole replay of the trace per unit.
pub(crate) struct TraceWriter<'t, A: ObjectAlloc> {
    cache: &'t A,
    trace: &'t Trace,
    config: WriteConfig,
    figures: &'t TreeFigures,
    tally: WriteTally,
}

impl<'t, A: ObjectAlloc> TraceWriter<'t, A> {
    pub(crate) fn new(
        cache: &'t A,
        trace: &'t Trace,
        config: WriteConfig,
        figures: &'t TreeFigures,
    ) -> Self {
        Self {
            cache,
            trace,
            config,
            figures,
            tally: WriteTally::new(),
        }
    }
}

impl<A: ObjectAlloc> Work for TraceWriter<'_, A> {
    const SELF_TIMED: bool = true;

    fn unit(&mut self) -> u64 {
        let mut recorder = ReplayRecorder {
            tally: &mut self.tally,
            started: Instant::now(),
        };
        match maple::run::replay(self.cache, self.trace, self.config, false, &mut recorder) {
            Ok(outcome) => {
                self.figures.passes.fetch_add(1, Ordering::Relaxed);
                self.figures
                    .height
                    .fetch_max(outcome.stats.height, Ordering::Relaxed);
                if outcome.stats.nodes_outside_reserve > 0 {
                    self.figures.fail(format!(
                        "{} nodes were needed beyond the writes' reserves",
                        outcome.stats.nodes_outside_reserve
                    ));
                }
                outcome.writes
            }
            Err(e) => {
                self.figures.fail(format!("the replay stopped: {e}"));
                // As in `TreeWriter::unit`: progress for runs of a fixed count; void anyway.
                1
            }
        }
    }

    fn end_phase(&mut self) {
        self.tally.flush(self.figures);
    }

    fn take_samples(&mut self, keep: bool, histogram: &mut Histogram<u64>) {
        self.tally.take_samples(keep, histogram);
    }
}
