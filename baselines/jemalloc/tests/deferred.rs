//! Deferred free on `jemalloc`, alone in its binary: the read-side machinery is process-wide, and
//! another test's epoch collection could otherwise run the deferred free on its own thread.

#[test]
fn deferred_free_waits_for_readers() {
    conformance::testing::deferred_free_waits_for_readers::<baseline_jemalloc::JemallocCache>();
}
