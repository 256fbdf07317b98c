//! The store over any SQL connection: the queries are written once, with `?` placeholders
//! and the types both dialects read; each backend ([`sqlite`], [`postgres`]) only runs
//! statements and names its key column and locks.

pub(crate) mod postgres;
pub(crate) mod sqlite;

use crate::record::{NewRun, RunKind};
use crate::schema::{MIGRATIONS, VERSION};
use crate::{HistoryError, RunId, Store};

/// A value passed to or read from a statement.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Value {
    fn int(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Real(r) => Some(*r as i64),
            _ => None,
        }
    }

    fn real(&self) -> Option<f64> {
        match self {
            Self::Real(r) => Some(*r),
            Self::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Self::Text(t) => Some(t.clone()),
            _ => None,
        }
    }

    fn opt_text(text: Option<&str>) -> Self {
        text.map_or(Self::Null, |t| Self::Text(t.to_owned()))
    }

    fn opt_real(value: Option<f64>) -> Self {
        value.map_or(Self::Null, Self::Real)
    }
}

/// What a backend provides: statements with parameters, and its dialect's few differences.
/// Errors are one-line messages.
pub(crate) trait Conn {
    /// Where, for messages.
    fn location(&self) -> String;
    /// The auto-numbered key column's declaration.
    fn id_column(&self) -> &'static str;
    /// Runs a statement; returns the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, String>;
    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, String>;
    /// Starts a transaction that will write (SQLite takes the write lock at once, so that
    /// two writers queue on the busy timeout instead of failing on an upgrade).
    fn begin_write(&mut self) -> Result<(), String>;
    /// Inside a write transaction: serializes schema changes with other processes.
    fn lock_schema(&mut self) -> Result<(), String>;
    /// Whether `table` exists.
    fn table_exists(&mut self, table: &str) -> Result<bool, String>;
}

/// Which runs to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Runs with a figure of this workload.
    pub workload: Option<String>,
    /// Runs with a figure of this allocator.
    pub allocator: Option<String>,
    /// Runs on a machine whose fingerprint id starts with this, or whose CPU model contains
    /// it (case-insensitive).
    pub machine: Option<String>,
    /// Runs of a revision starting with this.
    pub revision: Option<String>,
    /// Runs at or after this time (`YYYY-MM-DD` or a full `YYYY-MM-DDTHH:MM:SSZ`).
    pub since: Option<String>,
    /// Runs of this kind.
    pub kind: Option<RunKind>,
}

/// One run, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// Its id.
    pub id: RunId,
    /// When it started.
    pub time: String,
    /// What produced it.
    pub kind: String,
    /// Source revision.
    pub revision: String,
    /// Branch, when known.
    pub branch: Option<String>,
    /// Uncommitted changes.
    pub dirty: bool,
    /// Machine fingerprint id.
    pub machine: String,
    /// CPU model.
    pub cpu: String,
    /// Label of a run that is not the tree as committed.
    pub tag: Option<String>,
    /// File it came from.
    pub source: Option<String>,
    /// Measurements recorded.
    pub measurements: i64,
    /// Figures recorded.
    pub figures: i64,
}

/// One figure over runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesQuery {
    /// Workload.
    pub workload: String,
    /// Allocator.
    pub allocator: String,
    /// Figure name.
    pub name: String,
    /// Only this thread count.
    pub threads: Option<u32>,
    /// Only this machine fingerprint id.
    pub machine: Option<String>,
    /// Only runs of this kind.
    pub kind: Option<RunKind>,
    /// Leave out tagged runs (an injected slowdown).
    pub untagged: bool,
}

/// A figure in one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// The run.
    pub run: RunId,
    /// Its time.
    pub time: String,
    /// Its revision.
    pub revision: String,
    /// Its machine fingerprint id.
    pub machine: String,
    /// Worker threads.
    pub threads: Option<u32>,
    /// The figure.
    pub value: f64,
    /// Interval bounds, when recorded.
    pub low: Option<f64>,
    /// Interval bounds, when recorded.
    pub high: Option<f64>,
}

/// The store over a connection.
pub(crate) struct SqlStore<C: Conn> {
    conn: C,
}

impl<C: Conn> SqlStore<C> {
    /// Wraps `conn`, creating or migrating the schema (refusing a newer one).
    pub(crate) fn new(conn: C) -> Result<Self, HistoryError> {
        let mut store = Self { conn };
        store.migrate_to(VERSION)?;
        Ok(store)
    }

    /// Wraps `conn` without touching the schema (tests build old stores with it).
    #[cfg(test)]
    pub(crate) fn raw(conn: C) -> Self {
        Self { conn }
    }

    fn err(&self, message: String) -> HistoryError {
        HistoryError::Query {
            location: self.conn.location(),
            message,
        }
    }

    /// The version recorded, 0 for a store without the table.
    fn read_version(&mut self) -> Result<i64, String> {
        if !self.conn.table_exists("schema_version")? {
            return Ok(0);
        }
        let rows = self
            .conn
            .query("SELECT max(version) FROM schema_version", &[])?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(Value::int)
            .unwrap_or(0))
    }

    /// Brings the schema to `target`, each missing migration in one transaction with the
    /// version it sets.
    pub(crate) fn migrate_to(&mut self, target: i64) -> Result<(), HistoryError> {
        let location = self.conn.location();
        let open_err = |message: String| HistoryError::Open {
            location: location.clone(),
            message,
        };
        let found = self.read_version().map_err(&open_err)?;
        if found > VERSION {
            return Err(HistoryError::Newer {
                location,
                found,
                supported: VERSION,
            });
        }
        if found >= target {
            return Ok(());
        }
        self.conn.begin_write().map_err(&open_err)?;
        let result = self.apply_migrations(target);
        match result {
            Ok(()) => self
                .conn
                .execute("COMMIT", &[])
                .map(|_| ())
                .map_err(&open_err),
            Err(e) => {
                let _ = self.conn.execute("ROLLBACK", &[]);
                Err(e)
            }
        }
    }

    fn apply_migrations(&mut self, target: i64) -> Result<(), HistoryError> {
        let location = self.conn.location();
        let open_err = |message: String| HistoryError::Open {
            location: location.clone(),
            message,
        };
        self.conn.lock_schema().map_err(&open_err)?;
        self.conn
            .execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
                &[],
            )
            .map_err(&open_err)?;
        // Read again under the lock: another process may have migrated meanwhile.
        let found = self.read_version().map_err(&open_err)?;
        if found > VERSION {
            return Err(HistoryError::Newer {
                location,
                found,
                supported: VERSION,
            });
        }
        let id = self.conn.id_column();
        for (index, statements) in MIGRATIONS.iter().enumerate() {
            let version = index as i64 + 1;
            if version <= found || version > target {
                continue;
            }
            for statement in *statements {
                self.conn
                    .execute(&statement.replace("{id}", id), &[])
                    .map_err(|e| open_err(format!("migration {version}: {e}")))?;
            }
        }
        self.conn
            .execute("DELETE FROM schema_version", &[])
            .map_err(&open_err)?;
        self.conn
            .execute(
                "INSERT INTO schema_version (version) VALUES (?)",
                &[Value::Int(target.max(found))],
            )
            .map_err(&open_err)?;
        Ok(())
    }

    /// Inserts every row of `run`; the caller holds the transaction.
    pub(crate) fn insert(&mut self, run: &NewRun) -> Result<RunId, String> {
        let m = &run.machine;
        let rows = self.conn.query(
            "INSERT INTO runs (time, kind, revision, branch, dirty, machine, cpu, cores, kernel, \
             rseq, governor, smt, thp, config, source, document, tag) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            &[
                Value::Text(run.time.clone()),
                Value::Text(run.kind.as_str().to_owned()),
                Value::Text(run.revision.clone()),
                Value::opt_text(run.branch.as_deref()),
                Value::Int(i64::from(run.dirty)),
                Value::Text(m.id()),
                Value::Text(m.cpu.clone()),
                Value::Int(i64::from(m.cores)),
                Value::Text(m.kernel.clone()),
                Value::Text(m.rseq.clone()),
                Value::Text(m.governor.clone()),
                Value::Text(m.smt.clone()),
                Value::Text(m.thp.clone()),
                Value::Text(run.config.to_string()),
                Value::opt_text(run.source.as_deref()),
                Value::Text(run.document.to_string()),
                Value::opt_text(run.tag.as_deref()),
            ],
        )?;
        let id = first_int(&rows).ok_or("no id returned for the run")?;
        for row in &run.measurements {
            self.conn.execute(
                "INSERT INTO measurements (run_id, workload, workload_kind, allocator, threads, \
                 spec, spec_hash, config, counters, memory, stats, warnings) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    Value::Int(id),
                    Value::Text(row.workload.clone()),
                    Value::Text(row.workload_kind.clone()),
                    Value::Text(row.allocator.clone()),
                    Value::Int(i64::from(row.threads)),
                    Value::Text(row.spec.clone()),
                    Value::Text(row.spec_hash.clone()),
                    Value::Text(row.config.clone()),
                    Value::Text(row.counters.clone()),
                    Value::Text(row.memory.clone()),
                    Value::Text(row.stats.clone()),
                    Value::Text(row.warnings.clone()),
                ],
            )?;
        }
        for figure in &run.figures {
            let rows = self.conn.query(
                "INSERT INTO figures (run_id, workload, allocator, threads, name, value, low, high) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                &[
                    Value::Int(id),
                    Value::opt_text(figure.workload.as_deref()),
                    Value::opt_text(figure.allocator.as_deref()),
                    figure
                        .threads
                        .map_or(Value::Null, |t| Value::Int(i64::from(t))),
                    Value::Text(figure.name.clone()),
                    Value::Real(figure.value),
                    Value::opt_real(figure.low),
                    Value::opt_real(figure.high),
                ],
            )?;
            let figure_id = first_int(&rows).ok_or("no id returned for a figure")?;
            for (round, value) in figure.rounds.iter().enumerate() {
                self.conn.execute(
                    "INSERT INTO rounds (figure_id, round, value) VALUES (?, ?, ?)",
                    &[
                        Value::Int(figure_id),
                        Value::Int(round as i64),
                        Value::Real(*value),
                    ],
                )?;
            }
        }
        Ok(id)
    }

    /// Starts the write transaction of [`Store::record`] (tests stop half-way through it).
    pub(crate) fn begin(&mut self) -> Result<(), String> {
        self.conn.begin_write()
    }
}

fn first_int(rows: &[Vec<Value>]) -> Option<i64> {
    rows.first().and_then(|r| r.first()).and_then(Value::int)
}

/// A `LIKE` pattern matching text that starts with `prefix` (its own `%` and `_` escaped).
fn starts_with(prefix: &str) -> Value {
    let escaped: String = prefix
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    Value::Text(format!("{escaped}%"))
}

impl<C: Conn> Store for SqlStore<C> {
    fn location(&self) -> String {
        self.conn.location()
    }

    fn version(&mut self) -> Result<i64, HistoryError> {
        self.read_version().map_err(|e| self.err(e))
    }

    fn record(&mut self, run: &NewRun) -> Result<RunId, HistoryError> {
        self.begin().map_err(|e| self.err(e))?;
        match self.insert(run) {
            Ok(id) => {
                self.conn.execute("COMMIT", &[]).map_err(|e| self.err(e))?;
                Ok(id)
            }
            Err(e) => {
                let _ = self.conn.execute("ROLLBACK", &[]);
                Err(self.err(e))
            }
        }
    }

    fn list(&mut self, filter: &Filter) -> Result<Vec<RunSummary>, HistoryError> {
        let mut sql = "SELECT r.id, r.time, r.kind, r.revision, r.branch, r.dirty, r.machine, \
                       r.cpu, r.tag, r.source, \
                       (SELECT count(*) FROM measurements m WHERE m.run_id = r.id), \
                       (SELECT count(*) FROM figures f WHERE f.run_id = r.id) \
                       FROM runs r WHERE 1 = 1"
            .to_owned();
        let mut params = Vec::new();
        for (column, value) in [
            ("workload", &filter.workload),
            ("allocator", &filter.allocator),
        ] {
            if let Some(value) = value {
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM figures f WHERE f.run_id = r.id AND f.{column} = ?)"
                ));
                params.push(Value::Text(value.clone()));
            }
        }
        if let Some(machine) = &filter.machine {
            sql.push_str(" AND (r.machine LIKE ? ESCAPE '\\' OR lower(r.cpu) LIKE ? ESCAPE '\\')");
            params.push(starts_with(machine));
            let Value::Text(pattern) = starts_with(&machine.to_lowercase()) else {
                unreachable!()
            };
            params.push(Value::Text(format!("%{pattern}")));
        }
        if let Some(revision) = &filter.revision {
            sql.push_str(" AND r.revision LIKE ? ESCAPE '\\'");
            params.push(starts_with(revision));
        }
        if let Some(since) = &filter.since {
            sql.push_str(" AND r.time >= ?");
            params.push(Value::Text(since.clone()));
        }
        if let Some(kind) = filter.kind {
            sql.push_str(" AND r.kind = ?");
            params.push(Value::Text(kind.as_str().to_owned()));
        }
        sql.push_str(" ORDER BY r.time, r.id");
        let rows = self.conn.query(&sql, &params).map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| RunSummary {
                id: r[0].int().unwrap_or_default(),
                time: r[1].text().unwrap_or_default(),
                kind: r[2].text().unwrap_or_default(),
                revision: r[3].text().unwrap_or_default(),
                branch: r[4].text(),
                dirty: r[5].int() == Some(1),
                machine: r[6].text().unwrap_or_default(),
                cpu: r[7].text().unwrap_or_default(),
                tag: r[8].text(),
                source: r[9].text(),
                measurements: r[10].int().unwrap_or_default(),
                figures: r[11].int().unwrap_or_default(),
            })
            .collect())
    }

    fn resolve(&mut self, reference: &str, kinds: &[RunKind]) -> Result<RunId, HistoryError> {
        let mut kind_clause = String::new();
        let mut params = Vec::new();
        if !kinds.is_empty() {
            kind_clause = format!(" AND kind IN ({})", vec!["?"; kinds.len()].join(", "));
            params.extend(kinds.iter().map(|k| Value::Text(k.as_str().to_owned())));
        }
        let newest = |offset: i64| {
            format!(
                "SELECT id FROM runs WHERE 1 = 1{kind_clause} ORDER BY time DESC, id DESC LIMIT 1 OFFSET {offset}"
            )
        };
        let sql = if reference == "latest" {
            newest(0)
        } else if let Some(back) = reference
            .strip_prefix("latest~")
            .and_then(|n| n.parse::<u32>().ok())
        {
            newest(i64::from(back))
        } else if let Ok(id) = reference.parse::<i64>() {
            let rows = self
                .conn
                .query("SELECT id FROM runs WHERE id = ?", &[Value::Int(id)])
                .map_err(|e| self.err(e))?;
            if let Some(id) = first_int(&rows) {
                return Ok(id);
            }
            return self.by_revision(reference, &kind_clause, params);
        } else {
            return self.by_revision(reference, &kind_clause, params);
        };
        let rows = self.conn.query(&sql, &params).map_err(|e| self.err(e))?;
        first_int(&rows).ok_or_else(|| HistoryError::NoSuchRun(reference.to_owned()))
    }

    fn document(&mut self, id: RunId) -> Result<serde_json::Value, HistoryError> {
        let rows = self
            .conn
            .query("SELECT document FROM runs WHERE id = ?", &[Value::Int(id)])
            .map_err(|e| self.err(e))?;
        let text = rows
            .first()
            .and_then(|r| r.first())
            .and_then(Value::text)
            .ok_or_else(|| HistoryError::NoSuchRun(id.to_string()))?;
        serde_json::from_str(&text).map_err(|e| self.err(format!("run {id}: document: {e}")))
    }

    fn series(&mut self, query: &SeriesQuery) -> Result<Vec<Point>, HistoryError> {
        let mut sql =
            "SELECT r.id, r.time, r.revision, r.machine, f.threads, f.value, f.low, f.high \
                       FROM figures f JOIN runs r ON r.id = f.run_id \
                       WHERE f.workload = ? AND f.allocator = ? AND f.name = ?"
                .to_owned();
        let mut params = vec![
            Value::Text(query.workload.clone()),
            Value::Text(query.allocator.clone()),
            Value::Text(query.name.clone()),
        ];
        if let Some(threads) = query.threads {
            sql.push_str(" AND f.threads = ?");
            params.push(Value::Int(i64::from(threads)));
        }
        if let Some(machine) = &query.machine {
            sql.push_str(" AND r.machine = ?");
            params.push(Value::Text(machine.clone()));
        }
        if let Some(kind) = query.kind {
            sql.push_str(" AND r.kind = ?");
            params.push(Value::Text(kind.as_str().to_owned()));
        }
        if query.untagged {
            sql.push_str(" AND r.tag IS NULL");
        }
        sql.push_str(" ORDER BY r.time, r.id, f.id");
        let rows = self.conn.query(&sql, &params).map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| Point {
                run: r[0].int().unwrap_or_default(),
                time: r[1].text().unwrap_or_default(),
                revision: r[2].text().unwrap_or_default(),
                machine: r[3].text().unwrap_or_default(),
                threads: r[4].int().and_then(|t| u32::try_from(t).ok()),
                value: r[5].real().unwrap_or(f64::NAN),
                low: r[6].real(),
                high: r[7].real(),
            })
            .collect())
    }
}

impl<C: Conn> SqlStore<C> {
    fn by_revision(
        &mut self,
        reference: &str,
        kind_clause: &str,
        mut params: Vec<Value>,
    ) -> Result<RunId, HistoryError> {
        let hex = reference.len() >= 7 && reference.chars().all(|c| c.is_ascii_hexdigit());
        if !hex {
            return Err(HistoryError::NoSuchRun(reference.to_owned()));
        }
        params.insert(0, starts_with(&reference.to_lowercase()));
        let rows = self
            .conn
            .query(
                &format!(
                    "SELECT id FROM runs WHERE revision LIKE ? ESCAPE '\\'{kind_clause} \
                     ORDER BY time DESC, id DESC LIMIT 1"
                ),
                &params,
            )
            .map_err(|e| self.err(e))?;
        first_int(&rows).ok_or_else(|| HistoryError::NoSuchRun(reference.to_owned()))
    }
}
