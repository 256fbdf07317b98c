//! The event counters each CPU keeps under its lock, with the names `stats` reports.

macro_rules! stats {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// One counted event.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub(crate) enum Stat { $($(#[$doc])* $variant,)* }

        impl Stat {
            pub(super) const ALL: &[Stat] = &[$(Stat::$variant,)*];
            pub(super) fn name(self) -> &'static str {
                match self { $(Stat::$variant => $name,)* }
            }
        }
    };
}

stats! {
    /// Allocation from the loaded magazine.
    AllocFastpath => "alloc_fastpath",
    /// Allocation that reached the slab layer.
    AllocSlowpath => "alloc_slowpath",
    /// Free into the loaded magazine.
    FreeFastpath => "free_fastpath",
    /// Free that reached the slab layer.
    FreeSlowpath => "free_slowpath",
    /// Loaded and previous magazines exchanged.
    MagazineSwap => "magazine_swap",
    /// Full magazine taken from the depot.
    DepotGet => "depot_get",
    /// No full magazine in the depot.
    DepotGetFail => "depot_get_fail",
    /// Empty magazine taken from the depot.
    DepotGetEmpty => "depot_get_empty",
    /// Full magazine put in the depot.
    DepotPut => "depot_put",
    /// Full magazine refused by the depot (at `barn_max_full`): rounds went to the slabs.
    DepotPutFail => "depot_put_fail",
    /// Empty magazine put in the depot.
    DepotPutEmpty => "depot_put_empty",
    /// Empty magazine refused by the depot (at `barn_max_empty`): freed.
    DepotPutEmptyFail => "depot_put_empty_fail",
    /// New empty magazine allocated (none in the depot).
    MagazineAlloc => "magazine_alloc",
    /// The CPU cache lock was held by another thread.
    CpuLockContended => "cpu_lock_contended",
    /// Objects handed out by `alloc_bulk`.
    AllocBulk => "alloc_bulk",
    /// Objects taken back by `free_bulk`.
    FreeBulk => "free_bulk",
}
