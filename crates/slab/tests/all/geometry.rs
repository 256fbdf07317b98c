//! Every configuration the safe constructors accept gives a geometry whose objects lie inside
//! their slab; every other one is refused with an error naming the field.

use std::collections::HashSet;
use std::sync::Arc;

use object_alloc::{CacheConfig, DebugOptions, MAX_OBJECT_SIZE, NodeMap, PAGE_SIZE};
use proptest::prelude::*;
use slab::{LimitedPages, MAX_SLAB_BYTES, POISON_FREE, PageSource, SlabLayout, SlabPool};

use crate::{slots, taken};

const POISON: DebugOptions = DebugOptions {
    poison: true,
    check_invariants: true,
};

/// Panics unless every object of `layout`'s slab, the header before them and the slab's
/// alignment fit inside `slab_bytes`.
fn assert_objects_inside(layout: &SlabLayout, config: &CacheConfig) {
    let what = format!("{config:?} -> {layout:?}");
    assert!(layout.objects_per_slab >= 1, "{what}");
    assert!(
        layout.slab_bytes.is_power_of_two()
            && (PAGE_SIZE..=MAX_SLAB_BYTES).contains(&layout.slab_bytes),
        "{what}"
    );
    assert!(
        layout.align.is_power_of_two() && layout.align <= PAGE_SIZE,
        "{what}"
    );
    assert!(layout.stride >= layout.object_size.max(8), "{what}");
    assert!(layout.stride.is_multiple_of(layout.align), "{what}");
    assert!(layout.first_offset.is_multiple_of(layout.align), "{what}");
    assert!(layout.object_size >= config.object_size, "{what}");
    let last = layout.objects_per_slab - 1;
    let end = (layout.first_offset + last * layout.stride)
        .checked_add(layout.stride)
        .expect("no overflow");
    assert!(
        end <= layout.slab_bytes,
        "last object ends at {end}: {what}"
    );
}

/// An alignment from every class: powers of two far beyond a page, zero, and odd values.
fn align() -> impl Strategy<Value = usize> {
    prop_oneof![
        (0u32..usize::BITS).prop_map(|shift| 1usize << shift),
        Just(0usize),
        any::<usize>(),
        1usize..10_000,
    ]
}

/// An object size from every class: zero, the accepted range, just beyond it, near the top.
fn object_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        1usize..=MAX_OBJECT_SIZE,
        Just(0usize),
        MAX_OBJECT_SIZE..4 * MAX_SLAB_BYTES,
        (usize::MAX - 8192)..=usize::MAX,
        any::<usize>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn accepted_configurations_keep_objects_inside_the_slab(
        size in object_size(),
        align in align(),
    ) {
        let config = CacheConfig::new(size).with_align(align);
        match SlabLayout::new(&config) {
            Ok(layout) => {
                prop_assert!(config.validate().is_ok());
                assert_objects_inside(&layout, &config);
            }
            Err(err) => {
                prop_assert_eq!(Err(err.clone()), config.validate(), "{:?}", config);
                prop_assert!(err.field == "object_size" || err.field == "align", "{}", err);
                prop_assert!(SlabPool::new(&config).is_err());
            }
        }
    }
}

#[test]
fn objects_larger_than_a_slab_are_refused_before_any_memory_is_written() {
    // A 2 MiB object would need a slab above the largest (1 MiB); poisoning a new slab would
    // then write far beyond the chunk.
    for size in [MAX_OBJECT_SIZE + 1, MAX_SLAB_BYTES, 2 << 20, usize::MAX] {
        let config = CacheConfig::new(size).with_debug(POISON);
        let err = SlabPool::new(&config).unwrap_err();
        assert_eq!(err.field, "object_size", "{size}: {err}");
        assert_eq!(
            SlabLayout::new(&config).unwrap_err().field,
            "object_size",
            "{size}"
        );
    }
    for align in [0, 3, 2 * PAGE_SIZE, 1 << 40, usize::MAX] {
        let config = CacheConfig::new(64).with_align(align);
        let err = SlabPool::with_min_partial(&config, 1).unwrap_err();
        assert_eq!(err.field, "align", "{align}: {err}");
    }
    let nodes = CacheConfig::new(64).with_nodes(NodeMap::Simulated { nodes: 0 });
    assert_eq!(SlabPool::new(&nodes).unwrap_err().field, "nodes");
}

#[test]
fn the_largest_objects_are_carved_and_poisoned_inside_their_chunk() {
    // With poisoning, a new slab is filled from its first object to the end of its last one;
    // every object must lie in the chunk the page source handed out.
    for (size, align) in [
        (MAX_OBJECT_SIZE, 8),
        (MAX_OBJECT_SIZE, PAGE_SIZE),
        (MAX_OBJECT_SIZE - 1, 1),
        (PAGE_SIZE + 1, PAGE_SIZE),
    ] {
        let pages = Arc::new(LimitedPages::unlimited());
        let config = CacheConfig::new(size)
            .with_align(align)
            .with_debug(POISON)
            .with_page_source(pages.clone());
        let pool = SlabPool::new(&config).unwrap();
        let layout = *pool.layout();
        assert_objects_inside(&layout, &config);
        let n = layout.objects_per_slab;
        let mut out = slots(n);
        pool.alloc_bulk(0, true, &mut out).unwrap();
        let objects = taken(&out, n);
        assert_eq!(pool.stats().slabs, 1, "one slab holds them all");
        let base = layout.slab_base(objects[0]).addr().get();
        let mut seen = HashSet::new();
        for &object in &objects {
            let start = object.addr().get();
            assert!(start >= base + layout.first_offset);
            assert!(start + size <= base + layout.slab_bytes, "{size}/{align}");
            assert!(start.is_multiple_of(align));
            assert!(seen.insert(start));
            // SAFETY: the object is `size` bytes of this pool's memory, ours now.
            let last = unsafe { object.as_ptr().add(size - 1).read() };
            assert_eq!(last, POISON_FREE);
        }
        // SAFETY: live objects of this pool, each once.
        unsafe { pool.free_bulk(&objects) };
        pool.shrink();
        assert_eq!(pages.stats().held_bytes, 0);
    }
}
