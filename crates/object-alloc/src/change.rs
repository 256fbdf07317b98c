//! Run-time changes of the sheaf capacity and the barn limits ([`LimitChange`]), for designs
//! that support them ([`ObjectAlloc::change_limits`](crate::ObjectAlloc::change_limits)).

use serde::{Deserialize, Serialize};

use crate::config::{MAX_BARN_LIMIT, MAX_SHEAF_CAPACITY};
use crate::error::ConfigError;

/// A change of a cache's sheaf capacity and barn limits while it is in use; a field left
/// `None` keeps its value (C-CONF-4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitChange {
    /// The new objects per sheaf: `1..=`[`MAX_SHEAF_CAPACITY`]. `0` (no sheaves) is refused:
    /// a running cache's sheaves are not switched off or on.
    pub sheaf_capacity: Option<usize>,
    /// The new most full sheaves per barn, up to [`MAX_BARN_LIMIT`].
    pub barn_max_full: Option<usize>,
    /// The new most empty sheaves per barn, up to [`MAX_BARN_LIMIT`].
    pub barn_max_empty: Option<usize>,
}

impl LimitChange {
    /// The first field the change sets, in declaration order (for a refusal that names it).
    pub fn first_field(&self) -> Option<(&'static str, usize)> {
        [
            ("sheaf_capacity", self.sheaf_capacity),
            ("barn_max_full", self.barn_max_full),
            ("barn_max_empty", self.barn_max_empty),
        ]
        .into_iter()
        .find_map(|(name, value)| value.map(|value| (name, value)))
    }

    /// Refuses a value no design accepts at run time, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(capacity) = self.sheaf_capacity
            && !(1..=MAX_SHEAF_CAPACITY).contains(&capacity)
        {
            return Err(ConfigError::new(
                "sheaf_capacity",
                capacity,
                format!(
                    "1 up to {MAX_SHEAF_CAPACITY} at run time (sheaves are not switched off or \
                     on while a cache is in use)"
                ),
            ));
        }
        for (field, value) in [
            ("barn_max_full", self.barn_max_full),
            ("barn_max_empty", self.barn_max_empty),
        ] {
            if let Some(value) = value
                && value > MAX_BARN_LIMIT
            {
                return Err(ConfigError::new(
                    field,
                    value,
                    format!("at most {MAX_BARN_LIMIT}"),
                ));
            }
        }
        Ok(())
    }
}

/// What a run-time change did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeReport {
    /// Objects the change itself gave back to the slabs (a flush of every sheaf with
    /// [`CacheConfig::resize_by_flush`](crate::CacheConfig::resize_by_flush); the sheaves
    /// beyond a lowered barn limit).
    pub flushed_objects: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_or_too_large_capacity_and_a_too_large_limit_are_refused_by_name() {
        let zero = LimitChange {
            sheaf_capacity: Some(0),
            ..LimitChange::default()
        };
        assert_eq!(zero.validate().unwrap_err().field, "sheaf_capacity");
        let large = LimitChange {
            barn_max_empty: Some(MAX_BARN_LIMIT + 1),
            ..LimitChange::default()
        };
        assert_eq!(large.validate().unwrap_err().field, "barn_max_empty");
        assert_eq!(
            large.first_field(),
            Some(("barn_max_empty", MAX_BARN_LIMIT + 1))
        );
        let fine = LimitChange {
            sheaf_capacity: Some(MAX_SHEAF_CAPACITY),
            barn_max_full: Some(0),
            barn_max_empty: None,
        };
        assert!(fine.validate().is_ok());
    }
}
