//! Result files, each format behind the [`Exporter`] trait, written atomically.

mod json;
mod markdown;
pub(crate) mod svg;

use std::path::Path;

use harness::ResultFile;
use harness::result::write_atomic;

use crate::error::CliError;

pub(crate) use json::JsonExporter;
pub(crate) use markdown::MarkdownExporter;

/// Turns a result file into bytes of one format.
pub(crate) trait Exporter {
    /// The bytes of `results` in this format; `baseline` is the allocator ratios refer to.
    fn serialize(&self, results: &ResultFile, baseline: Option<&str>) -> Vec<u8>;
}

/// Writes a JSON document (`compare --json`, `ab --verdicts`) to `path`, atomically.
pub(crate) fn write_value(path: &Path, doc: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_vec_pretty(doc).map_err(|e| harness::result::ResultError::Write {
        file: path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(path, &text)?;
    Ok(())
}

/// Writes `results` with `exporter` to `path`, atomically.
pub(crate) fn write(
    exporter: &dyn Exporter,
    results: &ResultFile,
    baseline: Option<&str>,
    path: &Path,
) -> Result<(), CliError> {
    write_atomic(path, &exporter.serialize(results, baseline))?;
    Ok(())
}
