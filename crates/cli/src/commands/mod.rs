//! One module per subcommand.

pub(crate) mod ab;
pub(crate) mod compare;
pub(crate) mod conformance;
pub(crate) mod history;
pub(crate) mod list;
pub(crate) mod measure;
pub(crate) mod programs;
pub(crate) mod run;
pub(crate) mod scale;
pub(crate) mod sweep;
pub(crate) mod trace;
