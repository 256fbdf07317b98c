//! The shared deferred-free check, in a binary of its own as it requires.

#[test]
fn deferred_free_waits_for_readers() {
    conformance::testing::deferred_free_waits_for_readers::<locked_slab::LockedSlab>();
}
