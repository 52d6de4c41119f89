//! `s3meta export`: the index (or its changes) as files other engines read — Parquet in a Hive
//! layout for DuckDB, Athena, Trino and Spark, or JSON lines / CSV with `query`'s columns.
//!
//! Receives: `ExportOptions` (the selection is `query`'s or `changes`'s own code, so an export
//! holds exactly what those commands print) and an empty local directory. Sends on: the files,
//! a `_SUCCESS` marker written last, and an `ExportReport` naming every file (the binary
//! uploads them when the destination is `s3://`). Invariants: the database is opened
//! read-only; rows stream from one SQLite statement in (store, bucket) order, so one file is
//! open at a time and memory is bounded by a row group, never by the database; a partition
//! column (`bucket`, and `store` when the database holds more than one) is a directory level
//! only, never a column inside the files.

pub mod parquet;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rusqlite::ToSql;
use rusqlite::types::ValueRef;

use crate::error::{Error, Result};
use crate::read::changes::{self, ChangesOptions};
use crate::read::output::{Format, RowWriter};
use crate::read::query::{self, QueryOptions};
use crate::store::{db, json};
use parquet::{Kind, PartWriter, RowGroupLimits};

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Parquet files in a Hive layout (`bucket=NAME/part-00000.parquet`).
    Parquet,
    /// JSON lines, `query --format jsonl`'s records.
    Jsonl,
    /// CSV, `query --format csv`'s.
    Csv,
}

impl ExportFormat {
    fn extension(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Csv => "csv",
        }
    }
}

/// What `s3meta export` is asked.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub db: PathBuf,
    /// A directory that does not exist yet or is empty.
    pub out: PathBuf,
    pub format: ExportFormat,
    /// The changes table (`s3meta changes`'s rows) instead of the objects.
    pub changes: bool,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    /// `--where` expressions, ANDed, as `query` reads them (objects only).
    pub filters: Vec<String>,
    pub include_gone: bool,
    pub all_versions: bool,
    /// `--since` of `changes` (changes only).
    pub since: Option<String>,
    pub row_group: RowGroupLimits,
    /// Rows per file at most: a partition larger than this is cut into several parts, so an
    /// engine can spread one bucket over many readers.
    pub file_rows: u64,
    /// Checked between rows: a cancelled export stops with `Error::Interrupted`, its
    /// `_SUCCESS` marker unwritten.
    pub cancel: tokio_util::sync::CancellationToken,
}

/// Default bounds of a row group: 100,000 rows, or 32 MiB of buffered values (objects may
/// carry 2,000 metadata names: such rows close a group after a few hundred).
pub const ROW_GROUP_ROWS: usize = 100_000;
pub const ROW_GROUP_BYTES: usize = 32 << 20;
pub const FILE_ROWS: u64 = 10_000_000;

/// One file an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    /// Relative to the export's directory, `/`-separated.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    pub rows: u64,
    /// In the order written; the `_SUCCESS` marker is not among them.
    pub files: Vec<ExportFile>,
}

/// The marker written last into a complete export (Hadoop's and Spark's convention; engines
/// skip names starting with `_`).
pub const SUCCESS: &str = "_SUCCESS";

/// Runs an export into `args.out`.
pub fn run(args: &ExportOptions) -> Result<ExportReport> {
    // Bad input is refused before the directory is made.
    query::parse_filters(&args.filters)?;
    let conn = db::open_ro(&args.db)?;
    prepare_out(&args.out)?;
    let report = if args.changes {
        export_changes(&conn, args)?
    } else {
        export_objects(&conn, args)?
    };
    write_file(&args.out.join(SUCCESS), b"")?;
    Ok(report)
}

/// Refuses an `--out` that is a file or a directory holding anything; creates it if missing.
pub fn prepare_out(out: &Path) -> Result<()> {
    match std::fs::metadata(out) {
        Ok(m) if !m.is_dir() => Err(Error::BadInput(format!(
            "--out {} is a file, not a directory: give a new or empty directory",
            out.display()
        ))),
        Ok(_) => {
            let mut entries = std::fs::read_dir(out).map_err(|source| Error::Write {
                path: out.to_path_buf(),
                source,
            })?;
            if entries.next().is_some() {
                return Err(Error::BadInput(format!(
                    "--out {} is not empty: export into a new or empty directory (readers glob **/*.parquet, so old files would be read too)",
                    out.display()
                )));
            }
            Ok(())
        }
        Err(_) => std::fs::create_dir_all(out).map_err(|source| Error::Write {
            path: out.to_path_buf(),
            source,
        }),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The Parquet kind of a column of `query`'s records or `changes`' rows.
pub fn kind_of(column: &str) -> Kind {
    match column {
        "metadata" | "tags" | "old_metadata" | "new_metadata" | "old_tags" | "new_tags" => {
            Kind::Map
        }
        "size" | "missing_meta" | "list_size" | "error_status" | "sse_bucket_key"
        | "parts_count" | "is_multipart" | "tagging_count" | "is_latest" | "delete_marker"
        | "change_id" | "scan_id" | "old_size" | "new_size" => Kind::Int,
        _ => Kind::Text,
    }
}

/// A Hive partition value as a path segment: the characters of Hive's `escapePathName` (`/`,
/// `:`, `=`, `%`, `"`, `#`, control characters, …) as `%XX`, which Hive, Spark, Trino and DuckDB
/// decode back. `http://h:9000` is `http%3A%2F%2Fh%3A9000`.
pub fn partition_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        let escape = c.is_ascii_control()
            || matches!(
                c,
                '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^'
            );
        if escape {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The statement, its parameters and its column names.
struct Source {
    sql: String,
    params: Vec<(String, rusqlite::types::Value)>,
    columns: Vec<&'static str>,
}

fn export_objects(conn: &rusqlite::Connection, args: &ExportOptions) -> Result<ExportReport> {
    let q = QueryOptions {
        db: args.db.clone(),
        bucket: args.bucket.clone(),
        prefix: args.prefix.clone(),
        filters: args.filters.clone(),
        sql: None,
        format: None,
        table: Default::default(),
        limit: None,
        count: false,
        include_gone: args.include_gone,
        all_versions: args.all_versions,
    };
    let filters = query::parse_filters(&args.filters)?;
    let sel = query::selection(conn, &q, &filters)?;
    let (_, params) = sel.render();
    let params = owned_params(&params)?;
    let source = Source {
        sql: query::records_sql(&sel, None),
        params,
        columns: query::record(sel.versions())
            .iter()
            .map(|(n, _)| *n)
            .collect(),
    };
    stream(conn, args, &source, "objects")
}

fn export_changes(conn: &rusqlite::Connection, args: &ExportOptions) -> Result<ExportReport> {
    if !args.filters.is_empty() {
        return Err(Error::BadInput(
            "--where selects objects, not changes: with --changes use --bucket, --prefix and --since".into(),
        ));
    }
    let c = ChangesOptions {
        db: args.db.clone(),
        bucket: args.bucket.clone(),
        prefix: args.prefix.clone(),
        since: args.since.clone(),
        kind: None,
        limit: None,
        count: false,
        format: None,
        table: Default::default(),
    };
    let (sql, params) = changes::changes_sql(&c, args.format == ExportFormat::Parquet)?;
    let source = Source {
        sql,
        params: params
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
        columns: changes::COLUMNS.to_vec(),
    };
    stream(conn, args, &source, "changes")
}

fn owned_params(params: &[(&str, &dyn ToSql)]) -> Result<Vec<(String, rusqlite::types::Value)>> {
    use rusqlite::types::ToSqlOutput;
    params
        .iter()
        .map(|(n, v)| match v.to_sql() {
            Ok(ToSqlOutput::Borrowed(r)) => Ok((n.to_string(), changes::owned(r))),
            Ok(ToSqlOutput::Owned(v)) => Ok((n.to_string(), v)),
            _ => Err(Error::Internal(format!(
                "parameter {n} is not a plain value"
            ))),
        })
        .collect()
}

/// Whether the database's buckets span more than one store (then `store` is a partition).
fn many_stores(conn: &rusqlite::Connection, path: &Path) -> Result<bool> {
    conn.query_row("SELECT count(DISTINCT store) > 1 FROM buckets", [], |r| {
        r.get(0)
    })
    .map_err(|e| Error::db(path, e))
}

/// Runs the statement and writes its rows into files of the export's format.
fn stream(
    conn: &rusqlite::Connection,
    args: &ExportOptions,
    src: &Source,
    table: &str,
) -> Result<ExportReport> {
    let path = args.db.as_path();
    let dbe = |e| Error::db(path, e);
    let params: Vec<(&str, &dyn ToSql)> = src
        .params
        .iter()
        .map(|(n, v)| (n.as_str(), v as &dyn ToSql))
        .collect();
    let mut stmt = conn.prepare(&src.sql).map_err(dbe)?;
    let mut rows = stmt.query(params.as_slice()).map_err(dbe)?;
    let position = |name: &str| src.columns.iter().position(|c| *c == name);
    let (store_at, bucket_at) = (position("store"), position("bucket"));
    let mut files = Files::new(
        args,
        table,
        src,
        many_stores(conn, path)?,
        store_at,
        bucket_at,
    );
    while let Some(row) = rows.next().map_err(dbe)? {
        if files.report.rows.is_multiple_of(1024) && args.cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        files.write(row).map_err(|e| match e {
            Error::Db { source, .. } => Error::db(path, source),
            other => other,
        })?;
    }
    files.finish()
}

/// The file being written and those done.
struct Files<'a> {
    args: &'a ExportOptions,
    table: &'a str,
    /// Indices of the columns written into the files (all but the partition columns).
    inside: Vec<usize>,
    /// The Parquet columns: names and kinds of `inside`.
    schema: Vec<(String, Kind)>,
    names: Vec<String>,
    store_at: Option<usize>,
    bucket_at: Option<usize>,
    partition_by_store: bool,
    /// The partition directory of the open file, and the part number in it.
    partition: Option<String>,
    part: u32,
    open: Option<Open>,
    report: ExportReport,
}

enum Open {
    Parquet(PartWriter, String),
    Rows(RowWriter<BufWriter<File>>, String, u64),
}

impl<'a> Files<'a> {
    fn new(
        args: &'a ExportOptions,
        table: &'a str,
        src: &Source,
        many_stores: bool,
        store_at: Option<usize>,
        bucket_at: Option<usize>,
    ) -> Files<'a> {
        let parquet = args.format == ExportFormat::Parquet;
        let partition_by_store = parquet && many_stores;
        let inside: Vec<usize> = (0..src.columns.len())
            .filter(|&i| {
                !parquet || !(Some(i) == bucket_at || (partition_by_store && Some(i) == store_at))
            })
            .collect();
        let schema = inside
            .iter()
            .map(|&i| (src.columns[i].to_string(), kind_of(src.columns[i])))
            .collect();
        let names = src.columns.iter().map(|c| c.to_string()).collect();
        Files {
            args,
            table,
            inside,
            schema,
            names,
            store_at,
            bucket_at,
            partition_by_store,
            partition: None,
            part: 0,
            open: None,
            report: ExportReport::default(),
        }
    }

    /// The partition directory of a row (`""` for JSON lines and CSV, which keep every column).
    fn partition_of(&self, row: &rusqlite::Row<'_>) -> rusqlite::Result<String> {
        if self.args.format != ExportFormat::Parquet {
            return Ok(String::new());
        }
        let text = |at: Option<usize>| -> rusqlite::Result<String> {
            match at {
                Some(i) => Ok(row.get::<_, Option<String>>(i)?.unwrap_or_default()),
                None => Ok(String::new()),
            }
        };
        let bucket = format!("bucket={}/", partition_value(&text(self.bucket_at)?));
        Ok(if self.partition_by_store {
            format!("store={}/{bucket}", partition_value(&text(self.store_at)?))
        } else {
            bucket
        })
    }

    fn write(&mut self, row: &rusqlite::Row<'_>) -> Result<()> {
        let db = |source| Error::Db {
            path: PathBuf::new(),
            source,
        };
        let partition = self.partition_of(row).map_err(db)?;
        let full = match &self.open {
            Some(Open::Parquet(w, _)) => w.total_rows >= self.args.file_rows,
            Some(Open::Rows(_, _, n)) => *n >= self.args.file_rows,
            None => false,
        };
        if self.partition.as_deref() != Some(partition.as_str()) || full {
            self.close()?;
            if self.partition.as_deref() != Some(partition.as_str()) {
                self.part = 0;
            }
            self.partition = Some(partition);
            self.open_file()?;
        }
        self.report.rows += 1;
        match self.open.as_mut().expect("a file is open") {
            Open::Parquet(w, _) => {
                let values = self
                    .inside
                    .iter()
                    .map(|&i| row.get_ref(i))
                    .collect::<rusqlite::Result<Vec<ValueRef<'_>>>>()
                    .map_err(db)?;
                w.push(values)
            }
            Open::Rows(w, _, n) => {
                *n += 1;
                let values = (0..self.names.len())
                    .map(|i| {
                        row.get_ref(i)
                            .map(|v| json::value(v, kind_of(&self.names[i]) == Kind::Map))
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(db)?;
                w.write_row(&values).map_err(Error::Output)
            }
        }
    }

    fn open_file(&mut self) -> Result<()> {
        let dir = self.partition.clone().unwrap_or_default();
        let ext = self.args.format.extension();
        let rel = match self.args.format {
            ExportFormat::Parquet => format!("{dir}part-{:05}.{ext}", self.part),
            _ => format!("{}-{:05}.{ext}", self.table, self.part),
        };
        self.part += 1;
        let path = self.args.out.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        self.open = Some(match self.args.format {
            ExportFormat::Parquet => Open::Parquet(
                PartWriter::create(&path, &self.schema, self.args.row_group)?,
                rel,
            ),
            format => {
                let file = File::create(&path).map_err(|source| Error::Write {
                    path: path.clone(),
                    source,
                })?;
                let f = if format == ExportFormat::Csv {
                    Format::Csv
                } else {
                    Format::Jsonl
                };
                let w = RowWriter::new(f, self.names.clone(), BufWriter::new(file));
                Open::Rows(w, rel, 0)
            }
        });
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let (rel, rows, bytes) = match open {
            Open::Parquet(w, rel) => {
                let rows = w.total_rows;
                (rel, rows, w.finish()?)
            }
            Open::Rows(w, rel, rows) => {
                let mut out = w.finish().map_err(Error::Output)?;
                out.flush().map_err(Error::Output)?;
                let bytes = out
                    .get_ref()
                    .metadata()
                    .map(|m| m.len())
                    .map_err(Error::Output)?;
                (rel, rows, bytes)
            }
        };
        self.report.files.push(ExportFile {
            path: rel,
            rows,
            bytes,
        });
        Ok(())
    }

    fn finish(mut self) -> Result<ExportReport> {
        if self.open.is_none()
            && self.report.files.is_empty()
            && self.args.format != ExportFormat::Parquet
        {
            // JSON lines and CSV: an empty selection is one empty file (CSV: its header).
            self.partition = Some(String::new());
            self.open_file()?;
        }
        self.close()?;
        Ok(self.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_path_segments() {
        assert_eq!(partition_value("my-bucket.v2"), "my-bucket.v2");
        assert_eq!(
            partition_value("http://127.0.0.1:9000"),
            "http%3A%2F%2F127.0.0.1%3A9000"
        );
        assert_eq!(partition_value("a=b%c é\n"), "a%3Db%25c é%0A");
    }

    #[test]
    fn every_record_column_has_its_kind() {
        for (name, _) in query::record(true) {
            let k = kind_of(name);
            if matches!(name, "metadata" | "tags") {
                assert_eq!(k, Kind::Map);
            }
            if name.ends_with("size") || name.ends_with("_count") {
                assert_eq!(k, Kind::Int, "{name}");
            }
        }
    }
}
