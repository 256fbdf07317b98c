//! SVG line charts of a sweep: throughput and p99 latency against the swept value, one line
//! per allocator, drawn by the harness's charts (the xtask's reports draw with them too).

use std::path::Path;

use crate::error::CliError;

/// One allocator's points: (value index, throughput in ops/s, p99 in ns).
pub(crate) use harness::chart::SweepSeries as Series;

/// Draws the two charts side by side into `path`, `footer` (revision and machine) under them.
pub(crate) fn sweep_chart(
    path: &Path,
    title: &str,
    param: &str,
    values: &[String],
    series: &[Series],
    footer: &str,
) -> Result<(), CliError> {
    let svg = harness::chart::sweep(title, param, values, series, footer).map_err(|e| {
        CliError::Usage {
            option: "--svg".into(),
            message: e.to_string(),
        }
    })?;
    harness::result::write_atomic(path, svg.as_bytes())?;
    Ok(())
}
