//! The database's layer: the only code that opens SQLite for writing.
//!
//! Receives: messages of the pipeline (pages, splits, HEAD outcomes) for the single writer
//! (`writer`), and requests of the maintenance commands (`merge`, `forget`, `check`). Sends
//! on: scan plans and checkpoints (`scans`), owed HEADs, and read-only connections for the
//! readers (`db::open_ro`). Holds opening, migration and identity (`db`), the lock on each
//! database file (`lock`), access for other users (`access`), the canonical dump
//! (`canonical`) and the one conversion of SQLite values to JSON (`json`). Invariant: every
//! write runs in a transaction that leaves the database resumable.

pub(crate) mod access;
pub mod canonical;
pub mod check;
pub mod db;
pub mod forget;
pub(crate) mod json;
pub(crate) mod lock;
pub mod merge;
pub mod scans;
pub mod writer;

/// The `objects` columns of HEAD's further headers (schema 0003), in the order of
/// `writer::extra_values`; merge and the canonical dump carry them all.
pub const EXTRA_COLUMNS: [&str; 15] = [
    "sse",
    "sse_kms_key_id",
    "sse_bucket_key",
    "sse_customer_algorithm",
    "checksum_algorithm",
    "checksum",
    "checksum_type",
    "lock_mode",
    "lock_retain_until",
    "legal_hold",
    "replication_status",
    "restore",
    "archive_status",
    "website_redirect",
    "parts_count",
];

/// The `objects` columns of tags (schema 0003) that merge and the canonical dump carry
/// (`tags_scan` is a scan id: merge maps it, the dump says only whether it is set).
pub const TAG_COLUMNS: [&str; 2] = ["tagging_count", "tags_error"];

/// A statement written for the current versions' tables, for the table set of a scan: as
/// written when `$versions` is false, else for the versions' tables (`for_versions`), each
/// built once.
macro_rules! table_sql {
    ($versions:expr, $sql:expr) => {{
        static BOTH: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
            let sql = String::from($sql);
            let versions = $crate::store::for_versions(&sql);
            [sql, versions]
        });
        BOTH[usize::from($versions)].as_str()
    }};
}
pub(crate) use table_sql;

/// A statement written for the current versions' tables — `objects`, `metadata`, `tags`,
/// `object_errors` and the `objects_*` indexes — rewritten for every version's (schema 0004:
/// `versions`, `version_metadata`, `version_tags`, `version_errors`, `versions_*`), whose
/// columns have the same names. Only whole identifiers are rewritten, so `tags_due` or
/// `old_metadata` stay.
pub(crate) fn for_versions(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        match word {
            "objects" => out.push_str("versions"),
            "metadata" => out.push_str("version_metadata"),
            "tags" => out.push_str("version_tags"),
            "object_errors" => out.push_str("version_errors"),
            w => match w.strip_prefix("objects_") {
                Some(index) => {
                    out.push_str("versions_");
                    out.push_str(index);
                }
                None => out.push_str(w),
            },
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn statements_are_rewritten_for_the_versions_tables() {
        assert_eq!(
            super::for_versions(
                "SELECT o.tags_due, m.value FROM objects o INDEXED BY objects_head_due \
                 JOIN metadata m JOIN tags t LEFT JOIN object_errors e WHERE o.old_metadata = 'objects'"
            ),
            "SELECT o.tags_due, m.value FROM versions o INDEXED BY versions_head_due \
             JOIN version_metadata m JOIN version_tags t LEFT JOIN version_errors e WHERE o.old_metadata = 'versions'"
        );
    }
}
