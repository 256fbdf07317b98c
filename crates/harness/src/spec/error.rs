//! Why a workload spec was refused.

use thiserror::Error;

/// Why a workload spec was refused. Each message says what to change.
#[derive(Debug, Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{file}: cannot read workload spec: {source}")]
    Read {
        /// The spec file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown field or a value of the wrong type.
    #[error("{file}: {message}")]
    Yaml {
        /// The spec file.
        file: String,
        /// `yaml_serde`'s message, with field path, line and column.
        message: String,
    },
    /// A field holds a value the harness cannot run.
    #[error("{file}: `{field}` = {value}: expected {expected}")]
    Invalid {
        /// The spec file, or `--set` for an override.
        file: String,
        /// The field, as a dotted path (`params.working_set`).
        field: String,
        /// The value given.
        value: String,
        /// What would be accepted.
        expected: String,
    },
    /// A kind parameter was given to a kind that does not take it.
    #[error("{file}: `params.{param}` does not apply to kind `{kind}`; it takes: {takes}")]
    NotApplicable {
        /// The spec file.
        file: String,
        /// The parameter.
        param: String,
        /// The spec's kind.
        kind: String,
        /// The parameters the kind takes.
        takes: String,
    },
    /// The trace named by `params.trace` could not be read or parsed.
    #[error("{file}: `params.trace` = {trace}: {message}")]
    Trace {
        /// The spec file.
        file: String,
        /// The trace file, as resolved against the spec's directory.
        trace: String,
        /// What is wrong (a parse error names the trace's line).
        message: String,
    },
    /// A `--set` argument is not of the form `key=value` or names no field.
    #[error("--set {arg}: {message}")]
    Override {
        /// The argument as given.
        arg: String,
        /// What is wrong and what would be accepted.
        message: String,
    },
}
