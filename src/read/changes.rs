//! `s3meta changes`: what rescans noticed — created, modified, metadata changed, deleted.
//!
//! Receives: the database (read-only) and filters (since a scan or a time, bucket, prefix,
//! kind). Sends on: rows in the query formats (table, JSON lines, JSON, CSV), oldest first.
//! Invariant: prefixes are compared as keys, never with LIKE/GLOB; rows stream, memory does
//! not grow with the result.

use std::io::Write;

use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, Value as SqlValue};

use crate::error::{Error, Result};
use crate::keys::{KeyOrder, KeyRange};
use crate::model::{ChangeKind, timefmt};
use crate::read::output::{Format, RowWriter, TableStyle};
use crate::store::{db, json};
use serde_json::Value;

pub const COLUMNS: [&str; 17] = [
    "change_id",
    "scan_id",
    "at",
    "kind",
    "store",
    "bucket",
    "key",
    "old_etag",
    "old_size",
    "old_modified",
    "new_etag",
    "new_size",
    "new_modified",
    "old_metadata",
    "new_metadata",
    "old_tags",
    "new_tags",
];

/// `--since`: a scan id (that scan and later ones) or a time (at or after it).
enum Since {
    Scan(i64),
    Time(String),
}

fn parse_since(text: &str) -> Result<Since> {
    if let Ok(id) = text.parse::<i64>() {
        return Ok(Since::Scan(id));
    }
    timefmt::parse_user_time(text).map(Since::Time).ok_or_else(|| {
        Error::BadInput(format!(
            "--since {text:?}: expected a scan id (e.g. 12, see `s3meta status`) or a time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)"
        ))
    })
}

/// What `s3meta changes` is asked.
#[derive(Debug, Clone)]
pub struct ChangesOptions {
    pub db: std::path::PathBuf,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    /// A scan id or a time (`parse_since`).
    pub since: Option<String>,
    pub kind: Option<ChangeKind>,
    pub limit: Option<i64>,
    /// Print the number of matching changes only.
    pub count: bool,
    pub format: Option<Format>,
    pub table: TableStyle,
}

/// The columns of the table a person reads: when, what kind, which key, and what changed in
/// words (`owner: alice→zoe, +reviewed, −draft`); the other formats carry every column.
const TABLE: [&str; 4] = ["at", "kind", "key", "change"];

/// The statement listing the changes `args` selects, with its bound parameters: the one
/// selection behind `changes` and `export --changes`. `by_bucket`: in (store, bucket) order
/// first, so an export writes one partition after the other (SQLite sorts, spilling to
/// temporary files, not memory, past its cache).
pub fn changes_sql(
    args: &ChangesOptions,
    by_bucket: bool,
) -> Result<(String, Vec<(&'static str, SqlValue)>)> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let mut sql = String::from(
        "SELECT c.change_id, c.scan_id, c.at, c.kind, b.store, b.name, o.key, c.old_etag,
                c.old_size, c.old_modified, c.new_etag, c.new_size, c.new_modified,
                c.old_metadata, c.new_metadata, c.old_tags, c.new_tags
         FROM changes c JOIN objects o USING (object_id) JOIN buckets b USING (bucket_id)
         WHERE 1",
    );
    let mut params: Vec<(&'static str, SqlValue)> = Vec::new();
    match since {
        Some(Since::Scan(id)) => {
            sql.push_str(" AND c.scan_id >= :since");
            params.push((":since", id.into()));
        }
        Some(Since::Time(t)) => {
            sql.push_str(" AND c.at >= :since");
            params.push((":since", t.into()));
        }
        None => {}
    }
    if let Some(b) = &args.bucket {
        sql.push_str(" AND b.name = :bucket");
        params.push((":bucket", b.clone().into()));
    }
    let keys = KeyRange::prefix(KeyOrder::Byte, args.prefix.as_deref().unwrap_or(""));
    let (frag, key_params) = keys.sql("o.key");
    sql.push_str(&frag);
    for (name, v) in key_params {
        let v = match v.to_sql() {
            Ok(ToSqlOutput::Borrowed(r)) => owned(r),
            Ok(ToSqlOutput::Owned(v)) => v,
            _ => {
                return Err(Error::Internal(
                    "a key range bound is not a plain value".into(),
                ));
            }
        };
        params.push((name, v));
    }
    if let Some(k) = &args.kind {
        sql.push_str(" AND c.kind = :kind");
        params.push((":kind", k.as_str().to_string().into()));
    }
    sql.push_str(if by_bucket {
        " ORDER BY b.store, b.name, c.change_id"
    } else {
        " ORDER BY c.change_id"
    });
    if let Some(n) = &args.limit {
        sql.push_str(" LIMIT :limit");
        params.push((":limit", (*n).into()));
    }
    Ok((sql, params))
}

/// A borrowed SQLite value as an owned one (for parameters that outlive their source).
pub(crate) fn owned(r: rusqlite::types::ValueRef<'_>) -> SqlValue {
    use rusqlite::types::ValueRef;
    match r {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(f) => SqlValue::Real(f),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

pub fn run(args: &ChangesOptions, out: &mut dyn Write, terminal: bool) -> Result<()> {
    let (sql, params) = changes_sql(args, false)?;
    let params: Vec<(&str, &dyn ToSql)> =
        params.iter().map(|(n, v)| (*n, v as &dyn ToSql)).collect();
    let path = args.db.as_path();
    let conn = db::open_ro(path)?;
    let dbe = |e| Error::db(path, e);
    if args.count {
        let n: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM ({sql})"),
                params.as_slice(),
                |r| r.get(0),
            )
            .map_err(dbe)?;
        return writeln!(out, "{n}").map_err(Error::Output);
    }
    let mut stmt = conn.prepare(&sql).map_err(dbe)?;
    let mut rows = stmt.query(params.as_slice()).map_err(dbe)?;
    let format = args.format.unwrap_or(Format::default_for(terminal));
    let table = format == Format::Table;
    let columns = match table {
        true => TABLE.iter().map(|c| c.to_string()).collect(),
        false => COLUMNS.iter().map(|c| c.to_string()).collect(),
    };
    // A key alone is ambiguous when the changes span buckets.
    let buckets: i64 = match &args.bucket {
        Some(_) => 1,
        None => conn
            .query_row("SELECT count(*) FROM buckets", [], |r| r.get(0))
            .map_err(dbe)?,
    };
    let mut writer = RowWriter::new(format, columns, out).styled(args.table);
    let mut values = Vec::with_capacity(COLUMNS.len());
    while let Some(row) = rows.next().map_err(dbe)? {
        values.clear();
        for i in 0..COLUMNS.len() {
            let v = row.get_ref(i).map_err(dbe)?;
            // Metadata and tags columns hold JSON objects: emitted as objects, not as strings.
            values.push(json::value(v, i >= 13));
        }
        if table {
            let c =
                |name: &str| &values[COLUMNS.iter().position(|c| *c == name).expect("a column")];
            let key = match (buckets > 1, c("bucket").as_str(), c("key").as_str()) {
                (true, Some(b), Some(k)) => format!("{b}/{k}"),
                (_, _, k) => k.unwrap_or_default().to_string(),
            };
            let at = c("at").as_str().unwrap_or_default();
            let row = [
                Value::from(at.replace('T', " ").trim_end_matches('Z').to_string()),
                c("kind").clone(),
                Value::from(key),
                Value::from(describe(&values)),
            ];
            writer.write_row(&row).map_err(Error::Output)?;
        } else {
            writer.write_row(&values).map_err(Error::Output)?;
        }
    }
    writer.finish().map_err(Error::Output)?;
    Ok(())
}

/// What a change row changed, in words: `size 10 B→1.2 KiB, etag`, `owner: alice→zoe,
/// +reviewed, −draft`, `tag team: core→web`. `row` holds `COLUMNS`' values.
fn describe(row: &[Value]) -> String {
    let c = |name: &str| &row[COLUMNS.iter().position(|c| *c == name).expect("a column")];
    let mut parts = Vec::new();
    if c("kind") == "deleted" {
        // What was lost is in the old_* columns of the other formats; the kind says it all.
        return String::new();
    }
    let (old_size, new_size) = (c("old_size").as_u64(), c("new_size").as_u64());
    let bytes = crate::model::words::bytes;
    match (old_size, new_size) {
        (Some(a), Some(b)) if a != b => parts.push(format!("size {}→{}", bytes(a), bytes(b))),
        (None, Some(b)) => parts.push(format!("size {}", bytes(b))),
        _ => {}
    }
    if !c("old_etag").is_null() && !c("new_etag").is_null() && c("old_etag") != c("new_etag") {
        parts.push("etag".to_string());
    }
    pairs_diff(c("old_metadata"), c("new_metadata"), "", &mut parts);
    pairs_diff(c("old_tags"), c("new_tags"), "tag ", &mut parts);
    parts.join(", ")
}

/// `name: old→new` for a changed value, `+name` for an added one, `−name` for a removed one.
fn pairs_diff(old: &Value, new: &Value, label: &str, parts: &mut Vec<String>) {
    let empty = serde_json::Map::new();
    let (Some(o), Some(n)) = (
        old.as_object().or(new.as_object().map(|_| &empty)),
        new.as_object().or(old.as_object().map(|_| &empty)),
    ) else {
        return;
    };
    let text = |v: &Value| crate::read::output::escape_controls(v.as_str().unwrap_or_default());
    for (name, value) in n {
        match o.get(name) {
            Some(before) if before != value => parts.push(format!(
                "{label}{}: {}→{}",
                crate::read::output::escape_controls(name),
                text(before),
                text(value)
            )),
            Some(_) => {}
            None => parts.push(format!(
                "+{label}{}",
                crate::read::output::escape_controls(name)
            )),
        }
    }
    for name in o.keys().filter(|k| !n.contains_key(*k)) {
        parts.push(format!(
            "−{label}{}",
            crate::read::output::escape_controls(name)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(pairs: &[(&str, Value)]) -> Vec<Value> {
        COLUMNS
            .iter()
            .map(|c| {
                pairs
                    .iter()
                    .find(|(n, _)| n == c)
                    .map_or(Value::Null, |(_, v)| v.clone())
            })
            .collect()
    }

    /// Issue 18: the table says what changed, not fifteen columns of JSON.
    #[test]
    fn describes_what_changed() {
        let metadata = row(&[
            ("old_metadata", json!({"owner": "alice", "draft": "1"})),
            ("new_metadata", json!({"owner": "zoe", "reviewed": "yes"})),
        ]);
        assert_eq!(describe(&metadata), "owner: alice→zoe, +reviewed, −draft");
        let modified = row(&[
            ("old_size", json!(10)),
            ("new_size", json!(1_258_291)),
            ("old_etag", json!("a")),
            ("new_etag", json!("b")),
        ]);
        assert_eq!(describe(&modified), "size 10 B→1.2 MiB, etag");
        let created = row(&[("new_size", json!(5)), ("new_metadata", json!({"k": "v"}))]);
        assert_eq!(describe(&created), "size 5 B, +k");
        let tags = row(&[
            ("old_tags", json!({"team": "core"})),
            ("new_tags", json!({"team": "web"})),
        ]);
        assert_eq!(describe(&tags), "tag team: core→web");
        assert_eq!(describe(&row(&[])), "");
    }
}
