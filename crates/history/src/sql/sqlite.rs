//! The SQLite backend: one file, WAL mode (readers never wait for the writer, and a process
//! killed mid-write leaves the last commit intact), a busy timeout so that two writers
//! queue instead of failing.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::{Conn, Value};
use crate::HistoryError;

/// How long a writer waits for another one's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A SQLite store's connection.
pub(crate) struct Sqlite {
    conn: rusqlite::Connection,
    path: String,
}

/// Opens (creating it and its directory if needed) the file at `path`.
pub(crate) fn open(path: &Path) -> Result<Sqlite, HistoryError> {
    let location = path.display().to_string();
    let err = |e: &dyn std::fmt::Display| HistoryError::Open {
        location: location.clone(),
        message: one_line(e),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    }
    let conn = rusqlite::Connection::open(path).map_err(|e| err(&e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| err(&e))?;
    // The first statement that reads the file: a file that is not a database fails here.
    // Switching a new file to WAL needs it to itself, and SQLite answers "busy" at once,
    // without the busy handler, while another process is creating or switching it too: so
    // that one is waited for here, up to the same timeout.
    let started = std::time::Instant::now();
    let mode: String = loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Ok(mode) => break mode,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(err(&e)),
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(err(&format!("cannot switch to WAL mode (got {mode})")));
    }
    // In WAL mode NORMAL loses no committed transaction when the process dies; only a power
    // loss can take back the last ones.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| err(&e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| err(&e))?;
    Ok(Sqlite {
        conn,
        path: location,
    })
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().collect::<Vec<_>>().join("; ")
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(*r)),
            Value::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        })
    }
}

impl Conn for Sqlite {
    fn location(&self) -> String {
        self.path.clone()
    }

    fn id_column(&self) -> &'static str {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, String> {
        let mut statement = self.conn.prepare_cached(sql).map_err(|e| one_line(&e))?;
        statement
            .execute(rusqlite::params_from_iter(params))
            .map(|n| n as u64)
            .map_err(|e| one_line(&e))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, String> {
        let mut statement = self.conn.prepare_cached(sql).map_err(|e| one_line(&e))?;
        let columns = statement.column_count();
        let mut rows = statement
            .query(rusqlite::params_from_iter(params))
            .map_err(|e| one_line(&e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| one_line(&e))? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i).map_err(|e| one_line(&e))? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(r) => Value::Real(r),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(values);
        }
        Ok(out)
    }

    fn begin_write(&mut self) -> Result<(), String> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| one_line(&e))
    }

    fn lock_schema(&mut self) -> Result<(), String> {
        // BEGIN IMMEDIATE already holds the only write lock.
        Ok(())
    }

    fn table_exists(&mut self, table: &str) -> Result<bool, String> {
        let rows = self.query(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            &[Value::Text(table.to_owned())],
        )?;
        Ok(super::first_int(&rows).unwrap_or(0) > 0)
    }
}
