//! Errors of the command line. Bad input exits with code 2 before anything runs; failed
//! measurements or conformance failures exit with code 1; an interrupted run with 130.

use harness::SpecError;
use harness::result::ResultError;
use thiserror::Error;

/// What went wrong, with how to fix it.
#[derive(Debug, Error)]
pub(crate) enum CliError {
    /// A workload spec or override is wrong.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// `--alloc` names no registered design.
    #[error("unknown allocator `{name}`; registered: {known} (see `sheafbench list`)")]
    UnknownAllocator {
        /// The name given.
        name: String,
        /// Registered names.
        known: String,
    },
    /// `--baseline` names a design that is not being run.
    #[error(
        "--baseline {name}: not among the allocators of this run ({running}); add it to --alloc"
    )]
    Baseline {
        /// The name given.
        name: String,
        /// The allocators of the run.
        running: String,
    },
    /// A command-line value is malformed.
    #[error("{option}: {message}")]
    Usage {
        /// The option.
        option: String,
        /// What is wrong and what would be accepted.
        message: String,
    },
    /// A result file cannot be read or written.
    #[error(transparent)]
    Result(#[from] ResultError),
    /// Some measurements failed (each was reported when it failed).
    #[error("{failed} of {total} measurements failed (see above)")]
    MeasurementsFailed {
        /// Failed measurements.
        failed: usize,
        /// All measurements.
        total: usize,
    },
    /// A measurement found a problem (child side).
    #[error(transparent)]
    Measure(#[from] harness::MeasureError),
    /// Ctrl-C or SIGTERM stopped the run; what was finished is kept.
    #[error("interrupted: {kept} finished measurement(s) {files}")]
    Interrupted {
        /// Measurements finished (results and failures).
        kept: usize,
        /// Where they were kept.
        files: String,
    },
    /// `compare` was given files measured with different settings.
    #[error(
        "compare: the files were measured with different settings ({0}); pass --allow-config-change to compare them anyway"
    )]
    ConfigsDiffer(String),
    /// The results history cannot be read or written (`history` commands, `compare` of
    /// history references).
    #[error(transparent)]
    History(#[from] history::HistoryError),
    /// The programs manifest is wrong (the message names the file, the program and the
    /// field).
    #[error("{0}")]
    Manifest(String),
    /// Some programs failed under some allocators (each was reported when it failed).
    #[error("programs: {0} failure(s) (see above and `failures` in the result file)")]
    ProgramsFailed(usize),
    /// `ab --fail-on-slower` found rows the new build made slower.
    #[error("ab: {} row(s) slower in the new build: {}", .0.len(), .0.join(", "))]
    Slower(Vec<String>),
    /// Some applicable contract clause failed.
    #[error("conformance: {0} applicable clause check(s) failed")]
    ConformanceFailed(usize),
}

impl CliError {
    /// The process exit code: 2 for bad input, 1 for failures found while running.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::MeasurementsFailed { .. }
            | CliError::ConformanceFailed(_)
            | CliError::ProgramsFailed(_)
            | CliError::Slower(_)
            | CliError::Measure(_) => 1,
            CliError::Result(ResultError::Write { .. }) => 1,
            // The shell's status for a process ended by SIGINT.
            CliError::Interrupted { .. } => 130,
            _ => 2,
        }
    }
}
