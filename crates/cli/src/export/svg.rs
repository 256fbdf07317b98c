//! SVG line charts of a sweep: throughput and p99 latency against the swept value, one line
//! per allocator, drawn by the harness's charts (the xtask's reports draw with them too).

use std::path::Path;

use harness::result::ResultFile;

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
    write(
        path,
        harness::chart::sweep(title, param, values, series, footer),
    )
}

/// Writes a drawn chart to `path` atomically; a chart that could not be drawn is an error of
/// the `--svg` option.
pub(crate) fn write<E: std::fmt::Display>(
    path: &Path,
    drawn: Result<String, E>,
) -> Result<(), CliError> {
    let svg = drawn.map_err(|e| CliError::Usage {
        option: "--svg".into(),
        message: e.to_string(),
    })?;
    harness::result::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// The footer of a chart of `results`: revision, machine and date.
pub(crate) fn footer(results: &ResultFile) -> String {
    harness::chart::footer(
        &results.machine.git,
        &results.machine.cpu,
        results.machine.cores,
        &results.date,
    )
}
