//! `s3meta query`: offline search over the index, with `--where` filters or one read-only SQL
//! statement.
//!
//! Receives: `QueryOptions` (the database path among them) and an output. Sends on: one record per
//! matching object (or the SQL statement's rows, or a count) to an output writer, as rows are
//! read. Invariants: the database is opened read-only and `query_only`, so nothing here can
//! change it; user text reaches SQL only as bound parameters; prefixes are key comparisons
//! (never LIKE or GLOB); records come in (store, bucket, key) order, and a query matching many
//! objects streams them in that order without sorting (see [`Plan`]).

pub mod filter;

use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode, ToSql};

use crate::error::{Error, Result};
use crate::keys::{KeyOrder, KeyRange};
use crate::model::ObjectState;
use crate::read::output::{Format, RowWriter, TableStyle};
use crate::store::{db, for_versions, json};
use filter::{Field, Filter, MetaTest, Op, Operand};

/// The fields of a record, in output order, with the SQL that reads each from
/// `objects o JOIN buckets b LEFT JOIN object_errors e`. They mirror the view `v_objects`.
pub const RECORD: [(&str, &str); 44] = [
    ("bucket", "b.name"),
    ("key", "o.key"),
    ("size", "COALESCE(o.size, o.list_size)"),
    ("etag", "COALESCE(o.etag, o.list_etag)"),
    (
        "last_modified",
        "COALESCE(o.last_modified, o.list_modified)",
    ),
    (
        "storage_class",
        "COALESCE(o.storage_class, o.list_storage_class)",
    ),
    ("content_type", "o.content_type"),
    // Unknown (NULL) until a HEAD has read it: an object listed but not read has no metadata
    // rows because nobody has asked, not because it has none.
    (
        "metadata",
        "CASE WHEN o.headed_scan IS NULL THEN NULL ELSE (SELECT json_group_object(m.name, m.value) FROM metadata m WHERE m.object_id = o.object_id) END",
    ),
    ("store", "b.store"),
    ("state", "o.state"),
    ("cache_control", "o.cache_control"),
    ("content_encoding", "o.content_encoding"),
    ("content_language", "o.content_language"),
    ("content_disposition", "o.content_disposition"),
    ("expires", "o.expires"),
    ("version_id", "o.version_id"),
    ("missing_meta", "o.missing_meta"),
    ("list_etag", "o.list_etag"),
    ("list_size", "o.list_size"),
    ("list_modified", "o.list_modified"),
    ("list_storage_class", "o.list_storage_class"),
    ("headed_at", "o.headed_at"),
    ("error_status", "e.status"),
    ("error_code", "e.code"),
    ("error_message", "e.message"),
    ("sse", "o.sse"),
    ("sse_kms_key_id", "o.sse_kms_key_id"),
    ("sse_bucket_key", "o.sse_bucket_key"),
    ("sse_customer_algorithm", "o.sse_customer_algorithm"),
    ("checksum_algorithm", "o.checksum_algorithm"),
    ("checksum", "o.checksum"),
    ("checksum_type", "o.checksum_type"),
    ("lock_mode", "o.lock_mode"),
    ("lock_retain_until", "o.lock_retain_until"),
    ("legal_hold", "o.legal_hold"),
    ("replication_status", "o.replication_status"),
    ("restore", "o.restore"),
    ("archive_status", "o.archive_status"),
    ("website_redirect", "o.website_redirect"),
    ("parts_count", "o.parts_count"),
    (
        "is_multipart",
        "CASE WHEN o.headed_scan IS NULL THEN NULL ELSE o.parts_count IS NOT NULL END",
    ),
    ("tagging_count", "o.tagging_count"),
    (
        "tags",
        "CASE WHEN o.tags_scan IS NULL THEN NULL ELSE (SELECT json_group_object(t.key, t.value) FROM tags t WHERE t.object_id = o.object_id) END",
    ),
    ("tags_error", "o.tags_error"),
];

/// The fields a record of a version has besides `RECORD`'s (`--all-versions`; read from
/// `versions o`, whose other columns are `objects`'s).
pub const VERSION_RECORD: [(&str, &str); 2] = [
    ("is_latest", "o.is_latest"),
    ("delete_marker", "o.delete_marker"),
];

/// The fields of a record: `RECORD`, and for versions `VERSION_RECORD` after it.
pub fn record(versions: bool) -> Vec<(&'static str, &'static str)> {
    let extra: &[(&str, &str)] = if versions { &VERSION_RECORD } else { &[] };
    RECORD.iter().chain(extra).copied().collect()
}

/// The columns a table shows (a terminal is narrow); the other formats show all of `RECORD`.
const TABLE: [&str; 5] = ["bucket", "key", "size", "last_modified", "metadata"];
/// The same for versions: which version, and whether it is the current one.
const TABLE_VERSIONS: [&str; 7] = [
    "bucket",
    "key",
    "version_id",
    "is_latest",
    "size",
    "last_modified",
    "metadata",
];
const TABLE_ERRORS: [&str; 5] = [
    "bucket",
    "key",
    "error_status",
    "error_code",
    "error_message",
];

/// Which objects a command looks at.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    /// Objects recorded as gone count too.
    pub include_gone: bool,
    /// Every version recorded by `--all-versions` scans (`versions`), not the current ones.
    pub versions: bool,
}

/// What `s3meta query` is asked: filters or one SQL statement, over a scope, in a format.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    pub db: PathBuf,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    /// `--where` expressions, ANDed.
    pub filters: Vec<String>,
    pub sql: Option<String>,
    /// `None`: a table at a terminal, else JSON lines.
    pub format: Option<Format>,
    pub table: TableStyle,
    pub limit: Option<u64>,
    pub count: bool,
    pub include_gone: bool,
    /// Versions (`--all-versions`) instead of current objects.
    pub all_versions: bool,
}

/// How SQLite finds the objects of a query. Without ANALYZE statistics its planner cannot tell
/// a rare metadata value from a common one, so s3meta chooses (`choose_plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Start from the (name, value) index: the objects matching a metadata test, then sort
    /// them by key. Right when few match: a value held by 1% of a million objects is 10,000
    /// index entries.
    Index,
    /// Walk the buckets and their keys in order, testing each object's metadata by its primary
    /// key: nothing is sorted, the first rows come at once, memory stays flat. Right when many
    /// objects match, or no metadata test narrows the search.
    KeyOrder,
}

/// Above this many index entries for its most selective metadata test, a query walks the keys
/// in order rather than sorting what the index gives.
const INDEX_PLAN_MAX: i64 = 20_000;

/// Picks the plan for listing records: `Index` when some metadata or tag test (not `!name`)
/// matches at most `INDEX_PLAN_MAX` index entries, counted with a bounded index probe.
pub fn choose_plan(conn: &Connection, filters: &[Filter]) -> rusqlite::Result<Plan> {
    choose_plan_in(conn, filters, false)
}

/// `choose_plan` over the current objects' tables, or the versions' (`versions`).
pub fn choose_plan_in(
    conn: &Connection,
    filters: &[Filter],
    versions: bool,
) -> rusqlite::Result<Plan> {
    for f in filters {
        let (table, column, name, test) = match f {
            Filter::Meta { name, test } => ("metadata", "name", name, test),
            Filter::Tag { key, test } => ("tags", "key", key, test),
            _ => continue,
        };
        let (cond, value) = match test {
            MetaTest::Eq(v) => ("AND value = ?2", v.clone()),
            MetaTest::Ne(v) => ("AND value != ?2", v.clone()),
            MetaTest::Glob(g) => ("AND value GLOB ?2", filter::to_sqlite_glob(g)),
            MetaTest::Has => ("AND ?2 IS NOT NULL", String::new()),
            MetaTest::Lacks => continue,
        };
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {column} = ?1 {cond} LIMIT ?3)"
        );
        let sql = if versions { for_versions(&sql) } else { sql };
        let n: i64 = conn.query_row(
            &sql,
            rusqlite::params![name, value, INDEX_PLAN_MAX + 1],
            |r| r.get(0),
        )?;
        if n <= INDEX_PLAN_MAX {
            return Ok(Plan::Index);
        }
    }
    Ok(Plan::KeyOrder)
}

/// The (name, value) pairs a `--where` test reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pairs {
    Metadata,
    Tags,
}

/// Conditions on `objects o` and `buckets b`, with their bound parameters.
#[derive(Debug)]
pub struct Selection {
    plan: Plan,
    versions: bool,
    clauses: String,
    params: Vec<(String, SqlValue)>,
    keys: KeyRange,
}

impl Selection {
    pub fn new(scope: &Scope, filters: &[Filter], plan: Plan) -> Selection {
        let mut sel = Selection {
            plan,
            versions: scope.versions,
            clauses: String::new(),
            params: Vec::new(),
            keys: KeyRange::prefix(KeyOrder::Byte, scope.prefix.as_deref().unwrap_or("")),
        };
        if let Some(bucket) = &scope.bucket {
            let p = sel.bind(bucket.clone());
            sel.clauses.push_str(&format!(" AND b.name = {p}"));
        }
        let state_filter = filters.iter().any(|f| {
            matches!(
                f,
                Filter::Field {
                    field: Field::State,
                    ..
                }
            )
        });
        // Asking for a state (`@state=gone`) is asking for it, whatever the default.
        if !scope.include_gone && !state_filter {
            sel.clauses.push_str(" AND o.state != ");
            sel.clauses.push_str(ObjectState::Gone.sql());
        }
        for f in filters {
            sel.push(f);
        }
        sel
    }

    /// Binds a value; returns its parameter name.
    fn bind(&mut self, v: impl Into<SqlValue>) -> String {
        let name = format!(":p{}", self.params.len() + 1);
        self.params.push((name.clone(), v.into()));
        name
    }

    fn push(&mut self, f: &Filter) {
        let clause = match f {
            Filter::Meta { name, test } => self.pairs_clause(Pairs::Metadata, name, test),
            Filter::Tag { key, test } => self.pairs_clause(Pairs::Tags, key, test),
            Filter::Field { field, op, value } => self.field_clause(*field, *op, value),
            Filter::Error => format!("o.state = {}", ObjectState::Error.sql()),
        };
        self.clauses.push_str(" AND ");
        self.clauses.push_str(&clause);
    }

    /// A test on (name, value) pairs, metadata or tags. With `Plan::Index` it selects object
    /// ids from the table's (name, value) index; with `Plan::KeyOrder` it looks up the current
    /// object's row by the primary key (object_id, name). `!name` is always such a lookup: it
    /// can only be decided per object — and an object whose tags were never read lacks none.
    fn pairs_clause(&mut self, pairs: Pairs, name: &str, test: &MetaTest) -> String {
        let (table, column) = match pairs {
            Pairs::Metadata => ("metadata", "name"),
            Pairs::Tags => ("tags", "key"),
        };
        let name = self.bind(name.to_string());
        let cond = match test {
            MetaTest::Eq(v) => format!(" AND value = {}", self.bind(v.clone())),
            MetaTest::Ne(v) => format!(" AND value != {}", self.bind(v.clone())),
            MetaTest::Glob(g) => {
                format!(" AND value GLOB {}", self.bind(filter::to_sqlite_glob(g)))
            }
            MetaTest::Has | MetaTest::Lacks => String::new(),
        };
        let per_object = format!(
            "EXISTS (SELECT 1 FROM {table} p WHERE p.object_id = o.object_id AND p.{column} = {name}{cond})"
        );
        match (test, self.plan, pairs) {
            // Only an object whose metadata was read can lack a name.
            (MetaTest::Lacks, _, Pairs::Metadata) => {
                format!("(o.headed_scan IS NOT NULL AND NOT {per_object})")
            }
            (MetaTest::Lacks, _, Pairs::Tags) => {
                format!("(o.tags_scan IS NOT NULL AND NOT {per_object})")
            }
            (_, Plan::KeyOrder, _) => per_object,
            (_, Plan::Index, _) => format!(
                "o.object_id IN (SELECT object_id FROM {table} WHERE {column} = {name}{cond})"
            ),
        }
    }

    fn field_clause(&mut self, field: Field, op: Op, value: &Operand) -> String {
        let col = field_sql(field);
        match value {
            Operand::Time { at, precision } => {
                let start = self.bind(at.clone());
                match precision.span_modifier() {
                    // Compare with the span the user wrote: `=2026-01-01` is that whole day.
                    Some(m) => {
                        let end = format!("strftime('%Y-%m-%dT%H:%M:%fZ', {start}, '{m}')");
                        match op {
                            Op::Eq => format!("({col} >= {start} AND {col} < {end})"),
                            Op::Lt => format!("{col} < {start}"),
                            Op::Ge => format!("{col} >= {start}"),
                            Op::Gt => format!("{col} >= {end}"),
                            _ => format!("{col} < {end}"),
                        }
                    }
                    None => format!("{col} {} {start}", sql_op(op)),
                }
            }
            Operand::Int(n) => format!("{col} {} {}", sql_op(op), self.bind(*n)),
            Operand::Text(t) if op == Op::Glob => {
                format!("{col} GLOB {}", self.bind(filter::to_sqlite_glob(t)))
            }
            Operand::Text(t) => format!("{col} {} {}", sql_op(op), self.bind(t.clone())),
        }
    }

    /// The ` AND …` conditions and the parameters they name.
    pub fn render(&self) -> (String, Vec<(&str, &dyn ToSql)>) {
        let (range, range_params) = self.keys.sql("o.key");
        let mut params: Vec<(&str, &dyn ToSql)> = range_params;
        params.extend(
            self.params
                .iter()
                .map(|(n, v)| (n.as_str(), v as &dyn ToSql)),
        );
        (format!("{range}{}", self.clauses), params)
    }
}

fn field_sql(field: Field) -> &'static str {
    let name = match field {
        Field::Modified => "last_modified",
        other => other.name(),
    };
    RECORD
        .iter()
        .chain(&VERSION_RECORD)
        .find(|(n, _)| *n == name)
        .map_or("NULL", |(_, sql)| sql)
}

fn sql_op(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "!=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Glob => "GLOB",
    }
}

/// The statement listing the records of a selection, in (store, bucket, key) order.
pub fn records_sql(sel: &Selection, limit: Option<u64>) -> String {
    let cols: Vec<&str> = record(sel.versions).iter().map(|(_, sql)| *sql).collect();
    let (conds, _) = sel.render();
    let limit = limit.map_or(String::new(), |n| format!(" LIMIT {n}"));
    // CROSS JOIN fixes the loop order: buckets by (store, name), then each bucket's keys by
    // the (bucket_id, key) index, which is the output order, so nothing is sorted.
    let from = match sel.plan {
        Plan::Index => "objects o JOIN buckets b USING (bucket_id)",
        Plan::KeyOrder => "buckets b CROSS JOIN objects o ON o.bucket_id = b.bucket_id",
    };
    // A key's versions newest first, as ListObjectVersions lists them.
    let versions = if sel.versions {
        ", o.list_modified DESC, o.object_id DESC"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {} FROM {from} LEFT JOIN object_errors e ON e.object_id = o.object_id \
         WHERE 1{conds} ORDER BY b.store, b.name, o.key{versions}{limit}",
        cols.join(", ")
    );
    sel.tables(sql)
}

pub fn count_sql(sel: &Selection) -> String {
    let (conds, _) = sel.render();
    sel.tables(format!(
        "SELECT count(*) FROM objects o JOIN buckets b USING (bucket_id) WHERE 1{conds}"
    ))
}

impl Selection {
    /// Whether the selection reads versions (`--all-versions`).
    pub fn versions(&self) -> bool {
        self.versions
    }

    /// `sql`, written for the current objects' tables, for the selection's.
    fn tables(&self, sql: String) -> String {
        if self.versions {
            for_versions(&sql)
        } else {
            sql
        }
    }
}

/// Runs `s3meta query`, writing to `out` (a terminal gets a table unless `--format` says).
pub fn run(args: &QueryOptions, out: &mut dyn Write, terminal: bool) -> Result<()> {
    let format = args.format.unwrap_or(Format::default_for(terminal));
    let filters = parse_filters(&args.filters)?;
    let path = args.db.as_path();
    let conn = db::open_ro(path)?;
    if let Some(sql) = &args.sql {
        return run_sql(&conn, sql, args.limit, format, args.table, out);
    }
    check_version_fields(args, &filters)?;
    let db = |e| Error::db(path, e);
    if args.count {
        // No order to keep: the planner may start from whichever index it likes.
        let sel = Selection::new(&scope_of(args), &filters, Plan::Index);
        let n = count(&conn, &sel).map_err(db)?;
        return writeln!(out, "{n}").map_err(Error::Output);
    }
    let sel = selection(&conn, args, &filters)?;
    let fields = record(args.all_versions);
    let table: &[&str] = if filters.contains(&Filter::Error) {
        &TABLE_ERRORS
    } else if args.all_versions {
        &TABLE_VERSIONS
    } else {
        &TABLE
    };
    let shown: Vec<usize> = match format {
        Format::Table => table
            .iter()
            .filter_map(|c| fields.iter().position(|(n, _)| n == c))
            .collect(),
        _ => (0..fields.len()).collect(),
    };
    let names = shown.iter().map(|&i| fields[i].0.to_string()).collect();
    write_records(
        &conn,
        path,
        &sel,
        args.limit,
        &shown,
        RowWriter::new(format, names, out).styled(args.table),
    )
}

fn scope_of(args: &QueryOptions) -> Scope {
    Scope {
        bucket: args.bucket.clone(),
        prefix: args.prefix.clone(),
        include_gone: args.include_gone,
        versions: args.all_versions,
    }
}

/// `@is_latest` and `@delete_marker` are fields of versions only.
fn check_version_fields(args: &QueryOptions, filters: &[Filter]) -> Result<()> {
    let version_only = filters.iter().find_map(|f| match f {
        Filter::Field {
            field: field @ (Field::IsLatest | Field::DeleteMarker),
            ..
        } if !args.all_versions => Some(field.name()),
        _ => None,
    });
    match version_only {
        Some(name) => Err(Error::BadInput(format!(
            "@{name} is a field of versions: add --all-versions (versions recorded by `s3meta scan --all-versions`)"
        ))),
        None => Ok(()),
    }
}

/// The records `query` lists for these options (`--where` parsed into `filters`): the one
/// selection behind `query` and `export`, so both select the same objects.
pub fn selection(conn: &Connection, args: &QueryOptions, filters: &[Filter]) -> Result<Selection> {
    check_version_fields(args, filters)?;
    let plan = choose_plan_in(conn, filters, args.all_versions)
        .map_err(|e| Error::db(args.db.as_path(), e))?;
    Ok(Selection::new(&scope_of(args), filters, plan))
}

/// Parses `--where` expressions.
pub fn parse_filters(exprs: &[String]) -> Result<Vec<Filter>> {
    exprs
        .iter()
        .map(|f| Filter::parse(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Into::into)
}

/// The number of objects a selection matches.
pub fn count(conn: &Connection, sel: &Selection) -> rusqlite::Result<i64> {
    let (_, params) = sel.render();
    conn.query_row(&count_sql(sel), params.as_slice(), |r| r.get(0))
}

/// Streams the records of a selection, the columns `shown` (indices into `RECORD`).
fn write_records<W: Write>(
    conn: &Connection,
    path: &Path,
    sel: &Selection,
    limit: Option<u64>,
    shown: &[usize],
    mut w: RowWriter<W>,
) -> Result<()> {
    let db = |e| Error::db(path, e);
    let (_, params) = sel.render();
    let fields = record(sel.versions);
    let mut stmt = conn.prepare(&records_sql(sel, limit)).map_err(db)?;
    let mut rows = stmt.query(params.as_slice()).map_err(db)?;
    let mut values = Vec::with_capacity(shown.len());
    let table = w.format() == Format::Table;
    while let Some(row) = rows.next().map_err(db)? {
        values.clear();
        for &i in shown {
            let value = json::value(
                row.get_ref(i).map_err(db)?,
                matches!(fields[i].0, "metadata" | "tags"),
            );
            // A table tells unknown metadata from none (an empty cell).
            values.push(match (value, fields[i].0) {
                (serde_json::Value::Null, "metadata") if table => NOT_READ.into(),
                (v, _) => v,
            });
        }
        w.write_row(&values).map_err(Error::Output)?;
    }
    w.finish().map_err(Error::Output)?;
    Ok(())
}

/// What a table shows for metadata not read yet (JSON and CSV: null, an empty field).
pub const NOT_READ: &str = "(not read)";

/// Runs one read-only statement; its column names are the output's columns.
fn run_sql(
    conn: &Connection,
    sql: &str,
    limit: Option<u64>,
    format: Format,
    style: TableStyle,
    out: &mut dyn Write,
) -> Result<()> {
    let mut stmt = conn.prepare(sql).map_err(sql_error)?;
    if !stmt.readonly() {
        return Err(Error::SqlWrites);
    }
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let n = columns.len();
    let mut w = RowWriter::new(format, columns, out).styled(style);
    let mut rows = stmt.query([]).map_err(sql_error)?;
    let mut written = 0u64;
    while limit.is_none_or(|l| written < l) {
        let Some(row) = rows.next().map_err(sql_error)? else {
            break;
        };
        let values = (0..n)
            .map(|i| row.get_ref(i).map(|v| json::value(v, false)))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql_error)?;
        w.write_row(&values).map_err(Error::Output)?;
        written += 1;
    }
    w.finish().map_err(Error::Output)?;
    Ok(())
}

/// SQLite's own message, on one line; a write attempt is the read-only refusal.
fn sql_error(e: rusqlite::Error) -> Error {
    if e.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
        return Error::SqlWrites;
    }
    let message = match &e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        rusqlite::Error::SqlInputError { msg, offset, .. } => format!("{msg} (at offset {offset})"),
        rusqlite::Error::MultipleStatement => "--sql takes one statement".to_string(),
        other => other.to_string(),
    };
    Error::Sql {
        message: message.replace(['\n', '\r'], " "),
    }
}

#[cfg(test)]
mod tests;
