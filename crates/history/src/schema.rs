//! The schema, shared by both backends: one list of migrations, each a list of statements
//! applied in one transaction. `{id}` stands for the dialect's auto-numbered key column;
//! every other type is written the way both SQLite and PostgreSQL read it (`BIGINT`,
//! `DOUBLE PRECISION`, `TEXT`; flags are `BIGINT` 0 or 1, documents are JSON text).
//!
//! The table `schema_version` holds one row, the version applied last. A store whose version
//! is below [`VERSION`] gets the missing migrations when opened; one above it is refused.

/// The schema version this build writes.
pub const VERSION: i64 = 2;

/// Migration `n` (1-based) takes a store from version `n - 1` to `n`.
pub const MIGRATIONS: &[&[&str]] = &[
    // 1: runs, their measurements and figures, and every round of a figure.
    &[
        "CREATE TABLE runs (
            id {id},
            time TEXT NOT NULL,
            kind TEXT NOT NULL,
            revision TEXT NOT NULL,
            branch TEXT,
            dirty BIGINT NOT NULL,
            machine TEXT NOT NULL,
            cpu TEXT NOT NULL,
            cores BIGINT NOT NULL,
            kernel TEXT NOT NULL,
            rseq TEXT NOT NULL,
            governor TEXT NOT NULL,
            smt TEXT NOT NULL,
            thp TEXT NOT NULL,
            config TEXT NOT NULL,
            source TEXT,
            document TEXT NOT NULL
        )",
        "CREATE TABLE measurements (
            id {id},
            run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            workload TEXT NOT NULL,
            workload_kind TEXT NOT NULL,
            allocator TEXT NOT NULL,
            threads BIGINT NOT NULL,
            spec TEXT NOT NULL,
            spec_hash TEXT NOT NULL,
            config TEXT NOT NULL,
            counters TEXT NOT NULL,
            memory TEXT NOT NULL,
            stats TEXT NOT NULL,
            warnings TEXT NOT NULL
        )",
        "CREATE TABLE figures (
            id {id},
            run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            workload TEXT,
            allocator TEXT,
            threads BIGINT,
            name TEXT NOT NULL,
            value DOUBLE PRECISION NOT NULL,
            low DOUBLE PRECISION,
            high DOUBLE PRECISION
        )",
        "CREATE TABLE rounds (
            figure_id BIGINT NOT NULL REFERENCES figures(id) ON DELETE CASCADE,
            round BIGINT NOT NULL,
            value DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (figure_id, round)
        )",
    ],
    // 2: a tag for runs that are not the tree as committed (a gate with an injected
    // slowdown), and the indexes the history queries use.
    &[
        "ALTER TABLE runs ADD COLUMN tag TEXT",
        "CREATE INDEX runs_by_machine ON runs (machine, kind, time)",
        "CREATE INDEX runs_by_revision ON runs (revision)",
        "CREATE INDEX figures_by_name ON figures (workload, allocator, name)",
        "CREATE INDEX figures_by_run ON figures (run_id)",
        "CREATE INDEX measurements_by_run ON measurements (run_id)",
    ],
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_has_its_migration() {
        assert_eq!(MIGRATIONS.len() as i64, VERSION);
        assert!(MIGRATIONS.iter().all(|m| !m.is_empty()));
    }
}
