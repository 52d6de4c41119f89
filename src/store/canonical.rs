//! The canonical dump: the one definition of "two databases are equal".
//!
//! Receives: a database connection. Sends on: text, one JSON array per line, of every object
//! (by store, bucket, key) with its listing and HEAD fields (schema 0003's too), state, owed
//! HEAD and tags read, metadata, tags and error, and of every change. Invariant: it ignores
//! what legitimately differs between an interrupted-and-resumed scan and an uninterrupted
//! one — scan ids, timestamps, counters, attempt counts, rowids — and nothing else. Lines are
//! sorted, so row order never matters.

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::store::{EXTRA_COLUMNS, TAG_COLUMNS, for_versions, json};

/// Dumps the database canonically; compare two dumps with `==`.
pub fn dump(conn: &Connection) -> rusqlite::Result<String> {
    let mut lines = objects(conn, false)?;
    lines.extend(objects(conn, true)?);
    lines.extend(changes(conn)?);
    lines.sort_unstable();
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

/// The objects, or every version (`versions`: the same columns, then is-latest and
/// delete-marker).
fn objects(conn: &Connection, versions: bool) -> rusqlite::Result<Vec<String>> {
    let version_columns: &[&str] = if versions {
        &["is_latest", "delete_marker"]
    } else {
        &[]
    };
    let extra: Vec<String> = EXTRA_COLUMNS
        .iter()
        .chain(&TAG_COLUMNS)
        .chain(version_columns)
        .map(|c| format!("o.{c}"))
        .collect();
    let sql = format!(
        "SELECT b.store, b.name, o.key, o.state, o.head_due,
                o.list_etag, o.list_size, o.list_modified, o.list_storage_class,
                o.etag, o.size, o.last_modified, o.content_type, o.cache_control,
                o.content_encoding, o.content_language, o.content_disposition, o.expires,
                o.storage_class, o.version_id, o.missing_meta,
                (SELECT json_group_array(json_array(m.name, m.value))
                   FROM (SELECT name, value FROM metadata WHERE object_id = o.object_id ORDER BY name) m),
                e.status, e.code, e.message,
                o.tags_due != 0, o.tags_scan IS NOT NULL,
                (SELECT json_group_array(json_array(t.key, t.value))
                   FROM (SELECT key, value FROM tags WHERE object_id = o.object_id ORDER BY key) t),
                {}
         FROM objects o JOIN buckets b USING (bucket_id)
         LEFT JOIN object_errors e USING (object_id)",
        extra.join(", ")
    );
    let mut stmt = conn.prepare(&if versions { for_versions(&sql) } else { sql })?;
    let columns = stmt.column_count();
    let kind = if versions { "version" } else { "object" };
    let rows = stmt.query_map([], |r| {
        let mut fields = vec![json!(kind)];
        for i in 0..columns {
            fields.push(json::value(r.get_ref(i)?, false));
        }
        Ok(Value::Array(fields).to_string())
    })?;
    rows.collect()
}

fn changes(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT b.store, b.name, o.key, c.kind, c.old_etag, c.old_size, c.old_modified,
                c.new_etag, c.new_size, c.new_modified, c.old_metadata, c.new_metadata,
                c.old_tags, c.new_tags
         FROM changes c JOIN objects o USING (object_id) JOIN buckets b USING (bucket_id)",
    )?;
    let rows = stmt.query_map([], |r| {
        let mut fields = vec![json!("change")];
        for i in 0..14 {
            fields.push(json::value(r.get_ref(i)?, false));
        }
        Ok(Value::Array(fields).to_string())
    })?;
    rows.collect()
}
