//! Errors of allocation and of configuration.

use thiserror::Error;

/// Why an allocation, bulk allocation, prefill or refill failed.
///
/// A failed operation never leaks: whatever it had gathered is back in the cache.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocError {
    /// The page source refused to hand out more pages (its budget is spent, or a fault was
    /// injected). Free objects, call `shrink()`, or give the page source a larger budget.
    #[error("out of memory: the page source refused a new slab")]
    OutOfMemory,
    /// The request was made with `NOWAIT` and could not be served from memory the cache
    /// already holds. Retry without `NOWAIT` where sleeping or growing is allowed.
    #[error("would grow the cache, which NOWAIT forbids")]
    WouldGrow,
    /// The request is larger than this design can serve at all.
    #[error("request for {requested} objects exceeds the design's limit of {limit}")]
    TooLarge {
        /// Objects requested.
        requested: usize,
        /// The most this design can serve in one request.
        limit: usize,
    },
}

/// A cache configuration that was refused at creation (contract clause C-CONF-1).
///
/// The message names the field, the value given and what would be accepted.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("invalid cache configuration: `{field}` = {value}: {expected}")]
pub struct ConfigError {
    /// The `CacheConfig` field that holds the bad value (for example `"object_size"`).
    pub field: &'static str,
    /// The value given, as text.
    pub value: String,
    /// What a valid value looks like.
    pub expected: String,
}

impl ConfigError {
    /// A refusal of `field`, whose value was `value`, with a hint of what is expected.
    pub fn new(field: &'static str, value: impl ToString, expected: impl Into<String>) -> Self {
        Self {
            field,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}
