//! Macros that write the [`ObjectAlloc`](crate::ObjectAlloc) methods several designs share
//! word for word, so that each design's `impl` says only what is its own.
//!
//! Each macro expands to methods inside an `impl ObjectAlloc for T` block. The methods are the
//! same code a design would write by hand: direct, statically dispatched calls, with the same
//! `#[inline]` attributes, so nothing is added to a measured path.
//!
//! - [`emulated_prefill_and_deferral!`](crate::emulated_prefill_and_deferral): deferred free
//!   through a [`Deferrer`](crate::rcu::Deferrer) field, and prefill emulated with
//!   [`BulkPrefill`](crate::BulkPrefill) (every design without native sheaves).
//! - [`bulk_by_single_calls!`](crate::bulk_by_single_calls): `alloc_bulk` and `free_bulk` as
//!   loops of single calls (general-purpose allocators, which have no batch path).
//! - [`object_ops_via!`](crate::object_ops_via): the object operations forwarded to an inner
//!   cache that has them as inherent methods (designs that wrap their cache in a `Deferrer`).

/// Expands, inside `impl ObjectAlloc for T`, to `type Prefill`, `prefill`, `free_deferred` and
/// `barrier` for a design that defers frees through its [`Deferrer`](crate::rcu::Deferrer)
/// field `deferrer` and emulates prefill with [`BulkPrefill`](crate::BulkPrefill) over its
/// `object_size` and `sheaf_capacity` fields (the names are the macro's arguments).
///
/// ```ignore
/// impl ObjectAlloc for MyCache {
///     // NAME, DESCRIPTION, CAPABILITIES, new, alloc, free, alloc_bulk, free_bulk, ...
///     object_alloc::emulated_prefill_and_deferral!(
///         deferrer: deferrer,
///         object_size: object_size,
///         sheaf_capacity: sheaf_capacity
///     );
/// }
/// ```
#[macro_export]
macro_rules! emulated_prefill_and_deferral {
    (deferrer: $deferrer:ident, object_size: $size:ident, sheaf_capacity: $capacity:ident) => {
        type Prefill<'a> = $crate::BulkPrefill<'a, Self>;

        fn prefill(
            &self,
            flags: $crate::AllocFlags,
            count: usize,
        ) -> ::core::result::Result<Self::Prefill<'_>, $crate::AllocError> {
            $crate::BulkPrefill::new(self, self.$size, self.$capacity, flags, count)
        }

        #[inline]
        unsafe fn free_deferred(&self, object: ::core::ptr::NonNull<u8>) {
            // SAFETY: the caller hands over a live object of this cache; the deferrer's target
            // frees it once its grace period has passed, as `free` would.
            unsafe { self.$deferrer.defer_free(object) };
        }

        fn barrier(&self) {
            self.$deferrer.barrier();
        }
    };
}

/// Expands, inside `impl ObjectAlloc for T`, to `alloc_bulk` and `free_bulk` built from the
/// design's own `alloc` and `free`: [`bulk::alloc_each`](crate::bulk::alloc_each) (all or
/// nothing) and [`bulk::free_each`](crate::bulk::free_each).
#[macro_export]
macro_rules! bulk_by_single_calls {
    () => {
        fn alloc_bulk(
            &self,
            flags: $crate::AllocFlags,
            out: &mut [::core::mem::MaybeUninit<::core::ptr::NonNull<u8>>],
        ) -> ::core::result::Result<(), $crate::AllocError> {
            $crate::bulk::alloc_each(self, flags, out)
        }

        #[inline]
        unsafe fn free_bulk(&self, objects: &[::core::ptr::NonNull<u8>]) {
            // SAFETY: the caller's contract of `free_bulk` is `free_each`'s.
            unsafe { $crate::bulk::free_each(self, objects) };
        }
    };
}

/// Expands, inside `impl ObjectAlloc for T`, to `alloc`, `free`, `alloc_bulk`, `free_bulk` and
/// `shrink` forwarded to the inner cache that `self.$inner()` returns, whose inherent methods
/// of those names have the same contracts.
#[macro_export]
macro_rules! object_ops_via {
    ($inner:ident) => {
        #[inline]
        fn alloc(
            &self,
            flags: $crate::AllocFlags,
        ) -> ::core::option::Option<::core::ptr::NonNull<u8>> {
            self.$inner().alloc(flags)
        }

        #[inline]
        unsafe fn free(&self, object: ::core::ptr::NonNull<u8>) {
            // SAFETY: the caller's contract is the inner cache's.
            unsafe { self.$inner().free(object) };
        }

        fn alloc_bulk(
            &self,
            flags: $crate::AllocFlags,
            out: &mut [::core::mem::MaybeUninit<::core::ptr::NonNull<u8>>],
        ) -> ::core::result::Result<(), $crate::AllocError> {
            self.$inner().alloc_bulk(flags, out)
        }

        unsafe fn free_bulk(&self, objects: &[::core::ptr::NonNull<u8>]) {
            // SAFETY: the caller's contract is the inner cache's.
            unsafe { self.$inner().free_bulk(objects) };
        }

        fn shrink(&self) {
            self.$inner().shrink();
        }
    };
}
