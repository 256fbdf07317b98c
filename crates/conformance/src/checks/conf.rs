//! C-CONF-1/2: configurations refused with the field named; capacity 0 honours every prefill
//! clause. C-CONF-3: no configuration a constructor accepts gives objects outside the memory
//! the design mapped. C-CONF-4: run-time capacity and barn-limit changes, for the designs that
//! make them (`ObjectAlloc::LIMIT_CHANGES`).

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use object_alloc::{
    AllocFlags, CacheConfig, DebugOptions, MAX_BARN_LIMIT, MAX_OBJECT_SIZE, MAX_SHEAF_CAPACITY,
    MAX_SIMULATED_NODES, NodeMap, ObjectAlloc, PAGE_SIZE, PageError, PageSource, PageSourceStats,
};

use super::{Ctx, describe, prefill};
use crate::Verdict;

/// The refused configurations and the field each error must name.
fn bad_configs() -> Vec<(&'static str, CacheConfig)> {
    vec![
        ("object_size", CacheConfig::new(0)),
        ("object_size", CacheConfig::new(MAX_OBJECT_SIZE + 1)),
        ("object_size", CacheConfig::new(usize::MAX)),
        ("align", CacheConfig::new(64).with_align(0)),
        ("align", CacheConfig::new(64).with_align(3)),
        ("align", CacheConfig::new(64).with_align(24)),
        ("align", CacheConfig::new(64).with_align(2 * PAGE_SIZE)),
        (
            "sheaf_capacity",
            CacheConfig::new(64).with_sheaf_capacity(MAX_SHEAF_CAPACITY + 1),
        ),
        (
            "sheaf_capacity",
            CacheConfig::new(64).with_sheaf_capacity(usize::MAX),
        ),
        (
            "barn_max_full",
            CacheConfig::new(64).with_barn_limits(MAX_BARN_LIMIT + 1, 1),
        ),
        (
            "barn_max_empty",
            CacheConfig::new(64).with_barn_limits(1, MAX_BARN_LIMIT + 1),
        ),
        (
            "nodes",
            CacheConfig::new(64).with_nodes(NodeMap::Simulated { nodes: 0 }),
        ),
        (
            "nodes",
            CacheConfig::new(64).with_nodes(NodeMap::Simulated {
                nodes: MAX_SIMULATED_NODES + 1,
            }),
        ),
    ]
}

/// Valid edge configurations that must be accepted.
fn good_configs() -> Vec<CacheConfig> {
    vec![
        CacheConfig::new(1),
        CacheConfig::new(MAX_OBJECT_SIZE),
        CacheConfig::new(64).with_align(PAGE_SIZE),
        CacheConfig::new(64).with_sheaf_capacity(0),
        CacheConfig::new(64).with_sheaf_capacity(1),
        CacheConfig::new(64).with_barn_limits(0, 0),
        CacheConfig::new(64).with_nodes(NodeMap::Simulated {
            nodes: MAX_SIMULATED_NODES,
        }),
    ]
}

/// C-CONF-1: `A::new` refuses every bad configuration with an error naming the field, and
/// accepts the valid edge cases.
pub(crate) fn bad_configs_refused<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let scope = ctx.scope(format!("{}::new", A::NAME));
    let bad = bad_configs();
    for (field, config) in &bad {
        match A::new(config) {
            Ok(_) => scope.violation(
                "C-CONF-1",
                format!("accepted a configuration with a bad `{field}`: {config:?}"),
            ),
            Err(error) if error.field != *field => scope.violation(
                "C-CONF-1",
                format!(
                    "refused {config:?} naming `{}` instead of `{field}` ({error})",
                    error.field
                ),
            ),
            Err(error) => {
                let message = error.to_string();
                if !message.contains(field) {
                    scope.violation(
                        "C-CONF-1",
                        format!("the message for a bad `{field}` does not name it: {message}"),
                    );
                }
            }
        }
    }
    let good = good_configs();
    for config in &good {
        if let Err(error) = A::new(config) {
            scope.violation(
                "C-CONF-1",
                format!("refused the valid configuration {config:?}: {error}"),
            );
        }
    }
    Verdict::Ran(format!(
        "{} bad configurations refused naming the field, {} valid edge configurations accepted",
        bad.len(),
        good.len()
    ))
}

/// C-CONF-2: the prefill clauses (C-PREFILL-1..8) run again on a cache with `sheaf_capacity = 0`.
pub(crate) fn capacity_zero<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let context = Some("C-CONF-2");
    let mut parts = Vec::new();
    let verdicts = [
        ("C-PREFILL-1", prefill::holds_n::<A>(ctx, context)),
        (
            "C-PREFILL-2",
            prefill::n_allocs_never_fail::<A>(ctx, context),
        ),
        ("C-PREFILL-3", prefill::empty_fails::<A>(ctx, context)),
        ("C-PREFILL-4", prefill::size_drops_by_one::<A>(ctx, context)),
        ("C-PREFILL-5", prefill::oversize::<A>(ctx, context)),
        ("C-PREFILL-6", prefill::failed_prefill::<A>(ctx, context)),
        ("C-PREFILL-7", prefill::prefill_zero::<A>(ctx, context)),
        ("C-PREFILL-8", prefill::ordinary_objects::<A>(ctx, context)),
    ];
    for (id, verdict) in verdicts {
        match verdict {
            Verdict::Ran(_) => parts.push(id.to_owned()),
            Verdict::NotApplicable(reason) => parts.push(format!("{id} n/a ({reason})")),
        }
    }
    Verdict::Ran(format!("with sheaf_capacity 0: {}", parts.join(", ")))
}

/// Debugging aids that make a design write whole objects on its slow paths (poison) and walk
/// its slabs (invariant checks): the settings under which a wrong geometry writes out of
/// bounds.
const WRITE_EVERYTHING: DebugOptions = DebugOptions {
    poison: true,
    check_invariants: true,
};

/// Geometries no slab can hold, or that no alignment rule allows, and the field each refusal
/// must name.
fn unusable_geometries() -> Vec<(&'static str, CacheConfig)> {
    [
        ("object_size", CacheConfig::new(MAX_OBJECT_SIZE + 1)),
        ("object_size", CacheConfig::new(1 << 20)),
        ("object_size", CacheConfig::new(2 << 20)),
        ("object_size", CacheConfig::new(usize::MAX / 2 + 1)),
        ("object_size", CacheConfig::new(usize::MAX)),
        ("align", CacheConfig::new(64).with_align(PAGE_SIZE * 2)),
        ("align", CacheConfig::new(64).with_align(1 << 40)),
        (
            "align",
            CacheConfig::new(64).with_align(1 << (usize::BITS - 1)),
        ),
        ("align", CacheConfig::new(64).with_align(usize::MAX)),
    ]
    .into_iter()
    .map(|(field, config)| (field, config.with_debug(WRITE_EVERYTHING)))
    .collect()
}

/// The largest and most awkward geometries a design must accept (C-CONF-1's range), as
/// `(object_size, align)`.
const EDGE_GEOMETRIES: [(usize, usize); 6] = [
    (MAX_OBJECT_SIZE, 1),
    (MAX_OBJECT_SIZE, 8),
    (MAX_OBJECT_SIZE, PAGE_SIZE),
    (MAX_OBJECT_SIZE - 1, PAGE_SIZE),
    (PAGE_SIZE + 1, PAGE_SIZE),
    (1, 1),
];

/// A page source that remembers every chunk it has handed out and not taken back.
#[derive(Debug, Default)]
struct RecordingPages {
    inner: slab::MmapPages,
    chunks: Mutex<Vec<(usize, usize)>>,
}

impl RecordingPages {
    /// Whether `[start, start + len)` lies inside one chunk held now.
    fn contains(&self, start: usize, len: usize) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        let chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        chunks
            .iter()
            .any(|&(base, bytes)| start >= base && end <= base + bytes)
    }
}

// SAFETY: every chunk comes from the inner `MmapPages` and goes back to it; the record is
// bookkeeping only.
unsafe impl PageSource for RecordingPages {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn alloc_chunk(&self, bytes: usize) -> Result<NonNull<u8>, PageError> {
        let chunk = self.inner.alloc_chunk(bytes)?;
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        chunks.push((chunk.addr().get(), bytes));
        Ok(chunk)
    }

    unsafe fn free_chunk(&self, chunk: NonNull<u8>, bytes: usize) {
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        chunks.retain(|&(base, _)| base != chunk.addr().get());
        drop(chunks);
        // SAFETY: forwarded from the caller; the chunk came from `inner`.
        unsafe { self.inner.free_chunk(chunk, bytes) };
    }

    fn stats(&self) -> PageSourceStats {
        self.inner.stats()
    }
}

/// C-CONF-3: every constructor refuses the unusable geometries (naming the field) with
/// poisoning and invariant checks on; at each accepted edge geometry, every object of two
/// slabs' worth lies inside a chunk the page source handed out (checked before anything is
/// written to it), and a prefill of an impossible count is refused rather than sized.
pub(crate) fn unusable_geometries_refused<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    let scope = ctx.scope(format!("{}::new", A::NAME));
    let refused = unusable_geometries();
    for (field, config) in &refused {
        match A::new(config) {
            Ok(_) => scope.violation(
                "C-CONF-3",
                format!("accepted an unusable geometry ({})", describe(config)),
            ),
            Err(error) if error.field != *field => scope.violation(
                "C-CONF-3",
                format!(
                    "refused {} naming `{}` instead of `{field}` ({error})",
                    describe(config),
                    error.field
                ),
            ),
            Err(_) => {}
        }
    }
    let mut contained = 0usize;
    for (size, align) in EDGE_GEOMETRIES {
        let pages = Arc::new(RecordingPages::default());
        let config = CacheConfig::new(size)
            .with_align(align)
            .with_sheaf_capacity(4)
            .with_debug(WRITE_EVERYTHING)
            .with_page_source(Arc::clone(&pages) as Arc<dyn PageSource>);
        let scope = scope.with(describe(&config));
        let cache = match A::new(&config) {
            Ok(cache) => cache,
            Err(error) => {
                scope.violation("C-CONF-3", format!("refused a valid geometry: {error}"));
                continue;
            }
        };
        // Two 1 MiB slabs' worth of the largest objects, fewer of the small ones.
        let count = (2 * (1 << 20) / size.max(PAGE_SIZE)).clamp(2, 40);
        let mut objects = Vec::with_capacity(count);
        for _ in 0..count {
            let Some(object) = cache.alloc(AllocFlags::empty()) else {
                scope.violation("C-CONF-3", "alloc failed with an unlimited page source");
                break;
            };
            let start = object.addr().get();
            if A::CAPABILITIES.uses_page_source && !pages.contains(start, size) {
                scope.violation(
                    "C-CONF-3",
                    format!("object {object:p} of {size} bytes is not inside a chunk it mapped"),
                );
                // Not written: it may overrun the mapping.
                continue;
            }
            // SAFETY: `size` bytes of a live object of this cache, ours (and, where the page
            // source is used, checked to lie inside a mapped chunk).
            unsafe { object.as_ptr().write_bytes(0xa5, size) };
            objects.push(object);
            contained += 1;
        }
        for object in objects {
            // SAFETY: live objects of this cache, each freed once.
            unsafe { cache.free(object) };
        }
        if cache.prefill(AllocFlags::empty(), usize::MAX).is_ok() {
            scope.violation("C-CONF-3", "prefill(usize::MAX) succeeded");
        }
        cache.barrier();
        cache.shrink();
    }
    let where_checked = if A::CAPABILITIES.uses_page_source {
        "every object inside a chunk of the page source".to_owned()
    } else {
        format!(
            "objects written whole; {} takes no pages from CacheConfig::page_source, so their \
             addresses cannot be compared with its mappings",
            A::NAME
        )
    };
    Verdict::Ran(format!(
        "{} unusable geometries refused with poisoning on, naming the field; {contained} objects \
         at {} edge geometries ({where_checked}); prefill(usize::MAX) refused",
        refused.len(),
        EDGE_GEOMETRIES.len()
    ))
}

/// C-CONF-4: run-time changes of the sheaf capacity or the barn limits: a refused change
/// names its field; a prefilled sheaf keeps its promise across changes; then workers allocate,
/// free, prefill and use every promised object while a changer moves the capacity (across
/// the prefill sizes) and the limits back and forth; nothing may fail, and everything is
/// given back at the end.
pub(crate) fn runtime_changes<A: ObjectAlloc>(ctx: &Ctx<'_>) -> Verdict {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use object_alloc::{LimitChange, Prefill};

    if !A::LIMIT_CHANGES {
        return Verdict::NotApplicable(format!(
            "{} fixes its sheaf capacity and barn limits when the cache is created \
             (ObjectAlloc::LIMIT_CHANGES is false and change_limits refuses; a design's own \
             automatic resizing, such as magazine's on depot contention, is exercised only as \
             far as the other clauses' scenarios happen to trigger it)",
            A::NAME
        ));
    }
    const RUN: Duration = Duration::from_millis(300);
    let config = super::standard_config().with_sheaf_capacity(16);
    let fixture = super::Fixture::<A>::new(config.clone());
    let scope = ctx.scope(describe(&config));
    let cache = &fixture.cache;
    let capacity = |n: usize| LimitChange {
        sheaf_capacity: Some(n),
        ..LimitChange::default()
    };
    match cache.change_limits(&capacity(0)) {
        Ok(_) => scope.violation("C-CONF-4", "change_limits accepted sheaf_capacity 0"),
        Err(e) if e.field != "sheaf_capacity" => scope.violation(
            "C-CONF-4",
            format!(
                "change_limits refused sheaf_capacity 0 naming `{}`",
                e.field
            ),
        ),
        Err(_) => {}
    }
    // A loan of more than the coming capacity keeps its promise.
    let mut loan = match super::prefill(cache, &scope, AllocFlags::empty(), 14) {
        Ok(loan) => Some(loan),
        Err(e) => {
            scope.violation("C-CONF-4", format!("prefill(14) failed: {e}"));
            None
        }
    };
    if let Err(e) = cache.change_limits(&capacity(4)) {
        scope.violation(
            "C-CONF-4",
            format!("change_limits(sheaf_capacity 4) refused: {e}"),
        );
    }
    let mut hand = super::Hand::for_config(&config, 1);
    if let Some(loan) = loan.as_mut() {
        for i in 0..14 {
            match loan.alloc(AllocFlags::empty()) {
                Some(object) => {
                    hand.take(&scope, object);
                }
                None => scope.violation(
                    "C-CONF-4",
                    format!("allocation {i} of 14 from a sheaf prefilled before the change failed"),
                ),
            }
        }
    }
    drop(loan);
    let stop = AtomicBool::new(false);
    let failures = AtomicU64::new(0);
    let prefills = AtomicU64::new(0);
    let changes = std::thread::scope(|s| {
        let (stop, failures, prefills) = (&stop, &failures, &prefills);
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                let (scope, config) = (&scope, &config);
                s.spawn(move || {
                    let mut mine = super::Hand::for_config(config, 2 + t);
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        if i.is_multiple_of(3) {
                            let n = 1 + (i * 5) % 24;
                            match cache.prefill(AllocFlags::empty(), n) {
                                Ok(mut loan) => {
                                    prefills.fetch_add(1, Ordering::Relaxed);
                                    if loan.size() < n {
                                        failures.fetch_add(1, Ordering::Relaxed);
                                    }
                                    for _ in 0..n {
                                        match loan.alloc(AllocFlags::empty()) {
                                            Some(object) => {
                                                mine.take(scope, object);
                                            }
                                            None => {
                                                failures.fetch_add(1, Ordering::Relaxed);
                                            }
                                        }
                                    }
                                }
                                Err(_) => {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        } else if mine.len() < 48 {
                            match cache.alloc(AllocFlags::empty()) {
                                Some(object) => {
                                    mine.take(scope, object);
                                }
                                None => {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        } else {
                            mine.free_all(scope, cache);
                        }
                    }
                    mine.free_all(scope, cache);
                })
            })
            .collect();
        let start = Instant::now();
        let mut k = 0usize;
        while start.elapsed() < RUN {
            let (full, empty) = [(0, 0), (10, 10), (2, 1)][k % 3];
            let change = LimitChange {
                sheaf_capacity: Some([4, 24, 8, 32][k % 4]),
                barn_max_full: Some(full),
                barn_max_empty: Some(empty),
            };
            if let Err(e) = cache.change_limits(&change) {
                scope.violation(
                    "C-CONF-4",
                    format!("change_limits({change:?}) refused: {e}"),
                );
            }
            k += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker
                .join()
                .expect("a worker of the change scenario panicked");
        }
        k
    });
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        scope.violation(
            "C-CONF-4",
            format!(
                "{failed} allocations, prefills or allocations from prefilled sheaves failed \
                 (or a prefilled sheaf held fewer than promised) while the limits changed"
            ),
        );
    }
    hand.free_all(&scope, cache);
    fixture.expect_empty(&scope, "C-CONF-4", "after the run-time changes");
    Verdict::Ran(format!(
        "sheaf_capacity 0 refused by name; a loan of 14 used whole after the capacity fell to 4; \
         {changes} changes of the capacity (4..32) and the barn limits beside 2 threads \
         allocating, freeing and using {} prefills of 1..24 for {} ms, then everything given back",
        prefills.load(Ordering::Relaxed),
        RUN.as_millis()
    ))
}
