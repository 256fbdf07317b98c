//! The one place that maps allocator names to designs.
//!
//! Every measured loop is generic over `A: ObjectAlloc`; the CLI reaches the monomorphized
//! instance for a name through [`with_allocator`], which hands the type to an
//! [`AllocVisitor`]. Adding a design is one line in the `registry!` invocation below.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use object_alloc::{
    AllocError, AllocFlags, AllocStats, BulkPrefill, CacheConfig, Capabilities, ChangeReport,
    ConfigError, LimitChange, ObjectAlloc,
};

/// Something to do with a design, given as a type.
pub(crate) trait AllocVisitor {
    /// What the visit returns.
    type Output;
    /// Does it with design `A`.
    fn visit<A: ObjectAlloc>(self) -> Self::Output;
}

/// A registered design: its name and one-line description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// `ObjectAlloc::NAME`.
    pub(crate) name: &'static str,
    /// `ObjectAlloc::DESCRIPTION`.
    pub(crate) description: &'static str,
}

macro_rules! registry {
    ($($design:ty),* $(,)?) => {
        /// Every registered design, in the order `--alloc all` runs them.
        pub(crate) const ALLOCATORS: &[Entry] = &[
            $(Entry {
                name: <$design as ObjectAlloc>::NAME,
                description: <$design as ObjectAlloc>::DESCRIPTION,
            }),*
        ];

        /// Visits the design called `name`; `None` if no design has that name.
        pub(crate) fn with_allocator<V: AllocVisitor>(name: &str, visitor: V) -> Option<V::Output> {
            $(
                if name == <$design as ObjectAlloc>::NAME {
                    return Some(visitor.visit::<$design>());
                }
            )*
            None
        }
    };
}

registry!(
    sheaf::Cache<sheaf::PerCpu>,
    sheaf::Cache<sheaf::PerThread>,
    SheafBulkPrefill,
    baseline_system::SystemCache,
    baseline_mimalloc::MimallocCache,
    baseline_jemalloc::JemallocCache,
    slub_cpu_slab::SlubCpuSlab,
    magazine::MagazineCache,
    locked_slab::LockedSlab,
);

/// `sheaf` (per-CPU slots) with its native prefill replaced by the bulk emulation every
/// design without sheaves uses ([`BulkPrefill`]): everything else is `sheaf` itself, so
/// comparing the two isolates what the prefill API gains.
#[derive(Debug)]
pub(crate) struct SheafBulkPrefill {
    inner: sheaf::Cache<sheaf::PerCpu>,
    object_size: usize,
    capacity: usize,
}

impl ObjectAlloc for SheafBulkPrefill {
    const NAME: &'static str = "sheaf-bulkprefill";
    const DESCRIPTION: &'static str =
        "sheaf (per-CPU slots) with prefill emulated by bulk alloc/free instead of sheaves";
    const CAPABILITIES: Capabilities = Capabilities {
        native_prefill: false,
        ..<sheaf::Cache<sheaf::PerCpu> as ObjectAlloc>::CAPABILITIES
    };
    type Prefill<'a> = BulkPrefill<'a, Self>;

    fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            inner: sheaf::Cache::<sheaf::PerCpu>::new(config)?,
            object_size: config.object_size,
            capacity: config.effective_sheaf_capacity(),
        })
    }

    #[inline]
    fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        self.inner.alloc(flags)
    }

    #[inline]
    unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: the caller's obligations are those of the inner cache's `free`.
        unsafe { self.inner.free(object) }
    }

    fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        self.inner.alloc_bulk(flags, out)
    }

    unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        // SAFETY: forwarded caller contract.
        unsafe { self.inner.free_bulk(objects) }
    }

    unsafe fn free_deferred(&self, object: NonNull<u8>) {
        // SAFETY: forwarded caller contract.
        unsafe { self.inner.free_deferred(object) }
    }

    fn prefill(&self, flags: AllocFlags, count: usize) -> Result<Self::Prefill<'_>, AllocError> {
        BulkPrefill::new(self, self.object_size, self.capacity, flags, count)
    }

    fn barrier(&self) {
        self.inner.barrier()
    }

    fn shrink(&self) {
        self.inner.shrink()
    }

    fn stats(&self) -> AllocStats {
        self.inner.stats()
    }

    const LIMIT_CHANGES: bool = true;

    fn change_limits(&self, change: &LimitChange) -> Result<ChangeReport, ConfigError> {
        // The emulated prefill keeps reporting the capacity the cache was made with.
        self.inner.change_limits(change)
    }
}

/// The names of every registered design.
pub(crate) fn names() -> Vec<&'static str> {
    ALLOCATORS.iter().map(|e| e.name).collect()
}

struct Caps;
impl AllocVisitor for Caps {
    type Output = Capabilities;
    fn visit<A: ObjectAlloc>(self) -> Capabilities {
        A::CAPABILITIES
    }
}

/// Whether the spec field `field` changes how design `name` works. Only the sheaf-layer
/// fields are selective: `sheaf_capacity` sizes the sheaves of the designs that have a sheaf
/// layer and the magazines of `magazine`, while every other design reads it only as the
/// capacity its emulated prefill handle reports; the barn limits apply to sheaf layers only.
/// Every other field applies to every design.
pub(crate) fn reads_field(name: &str, field: &str) -> bool {
    let sheaf_layer = with_allocator(name, Caps).is_some_and(|c| c.sheaf_layer);
    match field {
        "sheaf_capacity" => sheaf_layer || name == <magazine::MagazineCache as ObjectAlloc>::NAME,
        "barn_max_full" | "barn_max_empty" => sheaf_layer,
        _ => true,
    }
}

struct LimitChanges;
impl AllocVisitor for LimitChanges {
    type Output = bool;
    fn visit<A: ObjectAlloc>(self) -> bool {
        A::LIMIT_CHANGES
    }
}

/// Whether design `name` can change its sheaf capacity and barn limits at run time (a spec's
/// `phases`).
pub(crate) fn changes_limits(name: &str) -> bool {
    with_allocator(name, LimitChanges).unwrap_or(false)
}

/// The registered designs that `field` changes, in registry order (see [`reads_field`]).
pub(crate) fn reading(field: &str) -> Vec<&'static str> {
    names()
        .into_iter()
        .filter(|name| reads_field(name, field))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Name;
    impl AllocVisitor for Name {
        type Output = &'static str;
        fn visit<A: ObjectAlloc>(self) -> &'static str {
            A::NAME
        }
    }

    #[test]
    fn every_entry_dispatches_to_its_own_design() {
        let mut seen = std::collections::HashSet::new();
        for entry in ALLOCATORS {
            assert!(seen.insert(entry.name), "{} registered twice", entry.name);
            assert_eq!(with_allocator(entry.name, Name), Some(entry.name));
        }
        assert_eq!(with_allocator("no-such-design", Name), None);
    }

    #[test]
    fn the_sheaf_fields_select_the_designs_that_read_them() {
        assert_eq!(
            reading("sheaf_capacity"),
            ["sheaf", "sheaf-thread", "sheaf-bulkprefill", "magazine"]
        );
        assert_eq!(
            reading("barn_max_full"),
            ["sheaf", "sheaf-thread", "sheaf-bulkprefill"]
        );
        assert_eq!(reading("object_size"), names());
        assert!(!reads_field("system", "sheaf_capacity"));
    }
}
