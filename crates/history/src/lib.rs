//! The results history of sheafbench: every `run`, `sweep`, `bench`, `gate` and
//! `conformance` result kept in a database, and the noise fence a gate judges a change by.
//!
//! One interface, [`Store`], with two backends sharing one schema and one list of migrations
//! ([`schema`]): SQLite (the default, a file such as `results/history.sqlite`, WAL mode, a
//! busy timeout so that concurrent writers wait instead of failing) and PostgreSQL (a URL
//! `postgres://...`, so that many machines can write to one store). [`Location::resolve`]
//! picks one from a `--db` option, then `SHEAFBENCH_DB`, then the default file.
//!
//! A run is recorded in one transaction ([`Store::record`]): a crash in the middle loses at
//! most that run. A store written by a newer build (a schema version above
//! [`schema::VERSION`]) is refused; an older one is migrated when opened.
//!
//! What is kept ([`NewRun`]): when, what kind, the source revision, branch and dirty flag, the
//! machine's fingerprint ([`Fingerprint`]: CPU model, cores, kernel, rseq mode, governor, SMT,
//! THP), the configuration, the whole result document as written, one row per measurement
//! (spec and its hash, config, counters, memory, warnings) and named figures with every
//! round's value. [`fence`] holds the rule the gate judges a ratio by from this history.
//!
//! This crate knows the harness's result types only: it links no allocator.

pub mod fence;
mod record;
pub mod schema;
mod sql;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use record::{Figure, Fingerprint, MeasurementRow, NewRun, RunKind, git_branch};
pub use sql::{Filter, Point, RunSummary, SeriesQuery};

/// The environment variable naming the store (a SQLite file or a `postgres://` URL).
pub const ENV_VAR: &str = "SHEAFBENCH_DB";

/// The default store, relative to the workspace root.
pub const DEFAULT_FILE: &str = "results/history.sqlite";

/// Where a store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (or key=value string).
    Postgres(String),
}

impl Location {
    /// Reads a `--db` value: a `postgres://` or `postgresql://` URL, or a SQLite file path.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Self::Postgres(text.to_owned())
        } else {
            Self::Sqlite(PathBuf::from(text))
        }
    }

    /// The store to use: the `--db` option when given, else [`ENV_VAR`] when set and not
    /// empty, else [`DEFAULT_FILE`] under `root`.
    pub fn resolve(option: Option<&str>, root: &Path) -> Self {
        if let Some(text) = option {
            return Self::parse(text);
        }
        match std::env::var(ENV_VAR) {
            Ok(text) if !text.is_empty() => Self::parse(&text),
            _ => Self::Sqlite(root.join(DEFAULT_FILE)),
        }
    }

    /// The location for messages, without a password.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(url) => redact(url),
        }
    }
}

/// `url` with the password of its user part replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

/// Why the history could not be read or written. Each message is one line.
#[derive(Debug, Error)]
pub enum HistoryError {
    /// The store cannot be opened or reached.
    #[error("history store {location}: cannot open: {message}")]
    Open {
        /// Where.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// The store was written by a newer build.
    #[error(
        "history store {location}: schema version {found} is newer than this build reads ({supported}); use a newer sheafbench or another store (--db)"
    )]
    Newer {
        /// Where.
        location: String,
        /// The store's version.
        found: i64,
        /// [`schema::VERSION`].
        supported: i64,
    },
    /// A statement failed (a corrupt file, a lock held too long, a dropped connection).
    #[error("history store {location}: {message}")]
    Query {
        /// Where.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// A reference to a run names none.
    #[error("history: no run matches `{0}` (give `latest`, a run id or a revision)")]
    NoSuchRun(String),
}

/// A run's id in a store.
pub type RunId = i64;

/// The results history: one interface over both backends.
pub trait Store {
    /// Where the store lives, for messages.
    fn location(&self) -> String;

    /// The store's schema version (after migration, [`schema::VERSION`]).
    fn version(&mut self) -> Result<i64, HistoryError>;

    /// Records one run and everything in it, in one transaction; returns its id.
    fn record(&mut self, run: &NewRun) -> Result<RunId, HistoryError>;

    /// Runs matching `filter`, oldest first.
    fn list(&mut self, filter: &Filter) -> Result<Vec<RunSummary>, HistoryError>;

    /// The id a reference names: `latest` (the newest run with measurements, of `kinds`
    /// when given), `latest~N` (N runs before it), a run id, or a revision (prefix of at
    /// least 7 hex digits; the newest run at that revision).
    fn resolve(&mut self, reference: &str, kinds: &[RunKind]) -> Result<RunId, HistoryError>;

    /// The result document a run was recorded from, as written.
    fn document(&mut self, id: RunId) -> Result<serde_json::Value, HistoryError>;

    /// One figure over time, oldest first.
    fn series(&mut self, query: &SeriesQuery) -> Result<Vec<Point>, HistoryError>;
}

/// Opens (creating and migrating when needed) the store at `location`.
pub fn open(location: &Location) -> Result<Box<dyn Store>, HistoryError> {
    match location {
        Location::Sqlite(path) => Ok(Box::new(sql::SqlStore::new(sql::sqlite::open(path)?)?)),
        Location::Postgres(url) => Ok(Box::new(sql::SqlStore::new(sql::postgres::open(url)?)?)),
    }
}

#[cfg(test)]
mod tests;
