//! Integration tests of the `maple` crate (one binary, several modules).

mod allocators;
mod concurrent;
mod streams;
mod stress;
mod traces;
mod tree;

use maple::testing::TestAlloc;
use object_alloc::ObjectAlloc;

pub(crate) fn cache() -> TestAlloc {
    TestAlloc::new(&maple::node_cache_config()).expect("valid node cache config")
}
