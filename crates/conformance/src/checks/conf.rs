//! C-CONF-1/2: configurations refused with the field named; capacity 0 honours every prefill
//! clause.

use object_alloc::{
    CacheConfig, MAX_BARN_LIMIT, MAX_OBJECT_SIZE, MAX_SHEAF_CAPACITY, MAX_SIMULATED_NODES, NodeMap,
    ObjectAlloc, PAGE_SIZE,
};

use super::{Ctx, prefill};
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
