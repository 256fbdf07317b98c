//! The checks, one per clause, and the scaffolding they share: a fixture (a cache on a fresh
//! fault-injecting page source), a hand of stamped live objects, accounting and leak checks.

mod bulk;
mod conc;
mod conf;
mod defer;
mod fork;
mod obj;
mod prefill;
mod refill;
mod ret;

use std::fmt::Display;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;

use object_alloc::{AllocError, AllocFlags, CacheConfig, ObjectAlloc, PageSource, Prefill};

use crate::findings::Findings;
use crate::objects::{self, Stamped};
use crate::pages::{HeldBytes, LimitedPages};
use crate::rng::{self, Rng};
use crate::{Options, Verdict};

/// What a check gets: its clause, the options, and where findings go.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) clause: &'static str,
    pub(crate) options: &'a Options,
    pub(crate) findings: &'a Findings,
}

impl Ctx<'_> {
    /// A generator for one named part of this check, derived from the run's seed.
    pub(crate) fn rng(&self, part: &str) -> Rng {
        Rng::new(
            self.options.seed,
            rng::stream(self.clause) ^ rng::stream(part),
        )
    }

    /// A scope that files findings outside any context, with `repro` appended to each.
    pub(crate) fn scope(&self, repro: impl Into<String>) -> Scope<'_> {
        Scope {
            findings: self.findings,
            context: None,
            repro: format!("seed {:#x}, {}", self.options.seed, repro.into()),
        }
    }

    /// A scope whose findings are seen in the setting of clause `context`.
    pub(crate) fn scope_in(&self, context: &'static str, repro: impl Into<String>) -> Scope<'_> {
        Scope {
            context: Some(context),
            ..self.scope(repro)
        }
    }
}

/// Runs the check of `ctx.clause` on design `A`.
pub(crate) fn run_check<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    match ctx.clause {
        "C-OBJ-1" => obj::alignment_and_size::<A>(ctx),
        "C-OBJ-2" => obj::no_overlap::<A>(ctx),
        "C-OBJ-3" => obj::zero_on_reuse::<A>(ctx),
        "C-OBJ-4" => obj::remote_free::<A>(ctx),
        "C-OBJ-5" => obj::accounting::<A>(ctx),
        "C-BULK-1" => bulk::all_or_nothing::<A>(ctx),
        "C-BULK-2" => bulk::free_any_mix::<A>(ctx),
        "C-PREFILL-1" => prefill::holds_n::<A>(ctx, None),
        "C-PREFILL-2" => prefill::n_allocs_never_fail::<A>(ctx, None),
        "C-PREFILL-3" => prefill::empty_fails::<A>(ctx, None),
        "C-PREFILL-4" => prefill::size_drops_by_one::<A>(ctx, None),
        "C-PREFILL-5" => prefill::oversize::<A>(ctx, None),
        "C-PREFILL-6" => prefill::failed_prefill::<A>(ctx, None),
        "C-PREFILL-7" => prefill::prefill_zero::<A>(ctx, None),
        "C-PREFILL-8" => prefill::ordinary_objects::<A>(ctx, None),
        "C-REFILL-1" => refill::no_op::<A>(ctx),
        "C-REFILL-2" => refill::in_place::<A>(ctx),
        "C-REFILL-3" => refill::replace::<A>(ctx),
        "C-REFILL-4" => refill::failed_refill::<A>(ctx),
        "C-RETURN-1" => ret::any_size::<A>(ctx),
        "C-RETURN-2" => ret::nowait_return::<A>(ctx),
        "C-RETURN-3" => ret::barn_limits::<A>(ctx),
        "C-RETURN-4" => ret::oversize_not_kept::<A>(ctx, None),
        "C-DEFER-1" => defer::not_reused_while_read::<A>(ctx),
        "C-DEFER-2" => defer::reusable_after_barrier::<A>(ctx),
        "C-DEFER-3" => defer::barrier_liveness::<A>(ctx),
        "C-CONF-1" => conf::bad_configs_refused::<A>(ctx),
        "C-CONF-2" => conf::capacity_zero::<A>(ctx),
        "C-CONF-3" => conf::unusable_geometries_refused::<A>(ctx),
        "C-CONF-4" => conf::runtime_changes::<A>(ctx),
        "C-CONC-1" => conc::concurrent_mix::<A>(ctx),
        "C-CONC-2" => conc::thread_exit::<A>(ctx),
        "C-CONC-3" => fork::fork_child::<A>(ctx),
        "C-CONC-4" => conc::live_idle_threads::<A>(ctx),
        other => Verdict::NotApplicable(format!("no check is written for clause {other}")),
    }
}

/// Where findings go, with the setting and the reproduction data appended to each detail.
#[derive(Clone, Debug)]
pub(crate) struct Scope<'a> {
    findings: &'a Findings,
    context: Option<&'static str>,
    repro: String,
}

impl Scope<'_> {
    /// Records a violation of `clause`.
    pub(crate) fn violation(&self, clause: &'static str, what: impl Display) {
        self.findings
            .record(clause, self.context, format!("{what} [{}]", self.repro));
    }

    /// The same scope with more reproduction data.
    pub(crate) fn with(&self, more: impl Display) -> Self {
        Self {
            repro: format!("{}, {more}", self.repro),
            ..self.clone()
        }
    }
}

/// The configuration most checks use: 64-byte objects, alignment 16, capacity 8 (small, so
/// oversize and barn traffic are cheap), one node.
pub(crate) fn standard_config() -> CacheConfig {
    CacheConfig::new(64)
        .with_align(16)
        .with_sheaf_capacity(8)
        .with_nodes(object_alloc::NodeMap::Simulated { nodes: 1 })
}

/// One-line description of a configuration for reproduction data.
pub(crate) fn describe(config: &CacheConfig) -> String {
    format!(
        "object_size {}, align {}, sheaf_capacity {}, barn {}/{}, nodes {:?}, deferred_batching {}",
        config.object_size,
        config.align,
        config.effective_sheaf_capacity(),
        config.barn_max_full,
        config.barn_max_empty,
        config.nodes,
        config.deferred_batching
    )
}

/// A cache of design `A` on its own fault-injecting page source.
#[derive(Debug)]
pub(crate) struct Fixture<A> {
    pub(crate) cache: A,
    pub(crate) pages: Arc<LimitedPages>,
    pub(crate) config: CacheConfig,
}

impl<A: ObjectAlloc> Fixture<A> {
    /// Creates the cache; a refused valid configuration panics (the check then fails with the
    /// message, which names the configuration).
    pub(crate) fn new(config: CacheConfig) -> Self {
        let pages = Arc::new(LimitedPages::unlimited());
        let config = config.with_page_source(Arc::clone(&pages) as Arc<dyn PageSource>);
        let cache = match A::new(&config) {
            Ok(cache) => cache,
            Err(error) => panic!(
                "{}::new refused a valid configuration ({}): {error}",
                A::NAME,
                describe(&config)
            ),
        };
        Self {
            cache,
            pages,
            config,
        }
    }

    pub(crate) fn size(&self) -> usize {
        self.config.object_size
    }

    pub(crate) fn capacity(&self) -> usize {
        self.config.effective_sheaf_capacity()
    }

    /// Bytes the page source holds, if the design takes its pages from it.
    pub(crate) fn held(&self) -> Option<usize> {
        A::CAPABILITIES
            .uses_page_source
            .then(|| self.pages.held_bytes())
    }

    /// Chunks the page source has handed out so far, if the design uses it.
    pub(crate) fn chunks_allocated(&self) -> Option<u64> {
        A::CAPABILITIES
            .uses_page_source
            .then(|| self.pages.stats().chunks_allocated)
    }

    /// Limits the page source to what it holds now plus `extra` bytes.
    pub(crate) fn freeze_pages(&self, extra: usize) {
        self.pages
            .set_limit(self.pages.held_bytes().saturating_add(extra));
    }

    /// Live objects per `stats()`, if the design tracks them.
    pub(crate) fn live(&self, scope: &Scope<'_>, clause: &'static str) -> Option<u64> {
        if !A::CAPABILITIES.tracks_live_objects {
            return None;
        }
        let live = self.cache.stats().live_objects;
        if live.is_none() {
            scope.violation(
                clause,
                "the design declares tracks_live_objects but stats().live_objects is None",
            );
        }
        live
    }

    /// Checks `stats().live_objects` against `expected`, also accepting `expected + in_sheaves`
    /// (objects held in outstanding prefilled sheaves may count as live or as cached).
    pub(crate) fn check_live(
        &self,
        scope: &Scope<'_>,
        clause: &'static str,
        when: &str,
        expected: usize,
        in_sheaves: usize,
    ) -> bool {
        let Some(live) = self.live(scope, clause) else {
            return true;
        };
        let expected = expected as u64;
        let in_sheaves = in_sheaves as u64;
        if live == expected || live == expected + in_sheaves {
            true
        } else {
            let alt = if in_sheaves > 0 {
                format!(
                    " (or {} counting the {in_sheaves} held in prefilled sheaves)",
                    expected + in_sheaves
                )
            } else {
                String::new()
            };
            scope.violation(
                clause,
                format!(
                    "{when}: stats().live_objects is {live}, but {expected} objects are live{alt}"
                ),
            );
            false
        }
    }

    /// After the caller freed every object: barrier, shrink, then no live object and no page
    /// held. Violations are filed under `clause`. Returns whether all held.
    pub(crate) fn expect_empty(&self, scope: &Scope<'_>, clause: &'static str, when: &str) -> bool {
        self.pages.fail_with_probability(0.0, 0);
        self.pages.set_limit(usize::MAX);
        self.cache.barrier();
        self.cache.shrink();
        let mut ok = self.check_live(scope, clause, when, 0, 0);
        if let Some(held) = self.held()
            && held != 0
        {
            let stats = self.pages.stats();
            scope.violation(
                clause,
                format!(
                    "{when}: after freeing every object, barrier() and shrink(), the page source still \
                     holds {held} bytes ({} chunks allocated, {} freed)",
                    stats.chunks_allocated, stats.chunks_freed
                ),
            );
            ok = false;
        }
        if A::CAPABILITIES.uses_page_source
            && let Some(bytes) = self.cache.stats().slab_bytes
            && bytes != 0
        {
            scope.violation(
                clause,
                format!(
                    "{when}: after free-all, barrier() and shrink(), stats().slab_bytes is {bytes}"
                ),
            );
            ok = false;
        }
        ok
    }
}

/// Live objects owned by one thread of a scenario, each stamped with a pattern that names it.
#[derive(Debug)]
pub(crate) struct Hand {
    size: usize,
    align: usize,
    tag: u64,
    seq: u64,
    pub(crate) live: Vec<Stamped>,
}

impl Hand {
    /// A hand for objects of `size` bytes aligned to `align`; `tag` distinguishes threads.
    pub(crate) fn new(size: usize, align: usize, tag: u64) -> Self {
        Self {
            size,
            align,
            tag,
            seq: 0,
            live: Vec::new(),
        }
    }

    pub(crate) fn for_config(config: &CacheConfig, tag: u64) -> Self {
        Self::new(config.object_size, config.align, tag)
    }

    /// Checks alignment (C-OBJ-1), stamps `object` and keeps it.
    pub(crate) fn take(&mut self, scope: &Scope<'_>, object: NonNull<u8>) -> Stamped {
        let address = object.as_ptr() as usize;
        if !address.is_multiple_of(self.align) {
            scope.violation(
                "C-OBJ-1",
                format!("object {address:#x} is not aligned to {}", self.align),
            );
        }
        self.seq += 1;
        let stamped = Stamped {
            object,
            stamp: (self.tag << 40) | self.seq,
        };
        // SAFETY: `object` was just handed out by the cache, so its `size` bytes are ours.
        unsafe { objects::stamp(object, self.size, stamped.stamp) };
        self.live.push(stamped);
        stamped
    }

    /// Verifies the pattern of `stamped` (an overlap or a write by the design is a violation
    /// of C-OBJ-2).
    pub(crate) fn verify(&self, scope: &Scope<'_>, stamped: Stamped) -> bool {
        // SAFETY: `stamped` is live and owned by this hand.
        match unsafe { objects::verify(stamped.object, self.size, stamped.stamp) } {
            Ok(()) => true,
            Err(what) => {
                scope.violation("C-OBJ-2", what);
                false
            }
        }
    }

    /// Takes out a random live object, verified.
    pub(crate) fn pop_random(&mut self, scope: &Scope<'_>, rng: &mut Rng) -> Option<Stamped> {
        if self.live.is_empty() {
            return None;
        }
        let index = rng.below(self.live.len());
        let stamped = self.live.swap_remove(index);
        self.verify(scope, stamped);
        Some(stamped)
    }

    /// Takes out every live object, verified.
    pub(crate) fn drain(&mut self, scope: &Scope<'_>) -> Vec<Stamped> {
        let all = std::mem::take(&mut self.live);
        for stamped in &all {
            self.verify(scope, *stamped);
        }
        all
    }

    /// Verifies and frees every live object with `free`.
    pub(crate) fn free_all<A: ObjectAlloc>(&mut self, scope: &Scope<'_>, cache: &A) {
        for stamped in self.drain(scope) {
            // SAFETY: allocated by `cache`, live, and dropped from the hand.
            unsafe { cache.free(stamped.object) };
        }
    }

    /// Number of live objects.
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    /// The live objects' addresses.
    pub(crate) fn addresses(&self) -> Vec<NonNull<u8>> {
        self.live.iter().map(|s| s.object).collect()
    }
}

/// Takes into `hand` every object the cache holds (the page budget is frozen meanwhile, so no
/// new page is taken), up to `limit`; later requests then need new pages. Returns how many.
pub(crate) fn drain_cache<A: ObjectAlloc>(
    fixture: &Fixture<A>,
    scope: &Scope<'_>,
    hand: &mut Hand,
    limit: usize,
) -> usize {
    let limit_before = fixture.pages.limit();
    fixture.freeze_pages(0);
    let mut taken = 0;
    while taken < limit {
        match fixture.cache.alloc(AllocFlags::empty()) {
            Some(object) => {
                hand.take(scope, object);
                taken += 1;
            }
            None => break,
        }
    }
    fixture.pages.set_limit(limit_before);
    taken
}

/// Bulk-allocates `count` objects; on success checks they are distinct (C-BULK-1).
pub(crate) fn alloc_bulk<A: ObjectAlloc>(
    cache: &A,
    scope: &Scope<'_>,
    flags: AllocFlags,
    count: usize,
) -> Result<Vec<NonNull<u8>>, AllocError> {
    let mut slots = vec![MaybeUninit::<NonNull<u8>>::uninit(); count];
    cache.alloc_bulk(flags, &mut slots)?;
    // SAFETY: `alloc_bulk` succeeded, so it initialised every slot.
    let objects: Vec<NonNull<u8>> = slots.iter().map(|s| unsafe { s.assume_init() }).collect();
    if let Some(address) = objects::first_duplicate(&objects) {
        scope.violation(
            "C-BULK-1",
            format!("alloc_bulk({count}, {flags:?}) returned {address:#x} twice"),
        );
    }
    Ok(objects)
}

/// Prefills `count` objects; a sheaf with fewer is a violation of C-PREFILL-1.
pub(crate) fn prefill<'c, A: ObjectAlloc>(
    cache: &'c A,
    scope: &Scope<'_>,
    flags: AllocFlags,
    count: usize,
) -> Result<A::Prefill<'c>, AllocError> {
    let sheaf = cache.prefill(flags, count)?;
    if sheaf.size() < count {
        scope.violation(
            "C-PREFILL-1",
            format!(
                "prefill({flags:?}, {count}) returned a sheaf with size() {}",
                sheaf.size()
            ),
        );
    }
    Ok(sheaf)
}

/// Allocates every object still in `sheaf` into `hand`, checking that each allocation
/// succeeds (C-PREFILL-2) and lowers `size()` by one (C-PREFILL-4).
pub(crate) fn empty_sheaf<P: Prefill>(
    sheaf: &mut P,
    hand: &mut Hand,
    scope: &Scope<'_>,
    flags: AllocFlags,
) {
    let start = sheaf.size();
    for taken in 0..start {
        let before = sheaf.size();
        match sheaf.alloc(flags) {
            Some(object) => {
                hand.take(scope, object);
                let after = sheaf.size();
                if after + 1 != before {
                    scope.violation(
                        "C-PREFILL-4",
                        format!(
                            "a successful alloc({flags:?}) took size() from {before} to {after}"
                        ),
                    );
                }
            }
            None => {
                scope.violation(
                    "C-PREFILL-2",
                    format!(
                        "alloc({flags:?}) #{} from a sheaf of size() {start} failed (size() now {})",
                        taken + 1,
                        sheaf.size()
                    ),
                );
                return;
            }
        }
    }
}

/// The flag sets the checks cycle through.
pub(crate) const FLAG_SETS: [AllocFlags; 4] = [
    AllocFlags::empty(),
    AllocFlags::NOWAIT,
    AllocFlags::ZERO,
    AllocFlags::NOWAIT.union(AllocFlags::ZERO),
];

/// Joins a scoped thread, passing its panic on.
///
/// Every thread of a check is joined explicitly before accounting is checked: the end of a
/// `std::thread::scope` waits for the threads' closures only, not for their thread-local
/// destructors, which is where a design with thread-local sheaves flushes them. `join` waits
/// for the thread to be gone.
pub(crate) fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

/// Pins the calling thread to CPU `index` (modulo the CPUs there are); best effort.
pub(crate) fn move_to_cpu(index: usize) {
    if let Some(ids) = core_affinity::get_core_ids()
        && !ids.is_empty()
    {
        core_affinity::set_for_current(ids[index % ids.len()]);
    }
}

/// CPUs this process may run on (at least 1).
pub(crate) fn cpus() -> usize {
    core_affinity::get_core_ids().map_or(1, |ids| ids.len().max(1))
}

/// Reason text for a clause that needs the page source.
pub(crate) fn needs_page_source<A: ObjectAlloc>() -> Option<String> {
    (!A::CAPABILITIES.uses_page_source).then(|| {
        format!(
            "{} takes no pages from CacheConfig::page_source, so page budgets, fault injection and \
             page accounting cannot reach it",
            A::NAME
        )
    })
}
