//! What the user sees: tables on stdout, warnings and progress on stderr.

pub(crate) mod format;
pub(crate) mod interrupt;
pub(crate) mod progress;
pub(crate) mod table;
pub(crate) mod warnings;
