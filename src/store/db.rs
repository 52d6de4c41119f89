//! Opening the database: pragmas, identification, and schema migrations.
//!
//! Receives: a path. Sends on: a configured `rusqlite::Connection` — read-write (created and
//! migrated as needed) for the scan's single writer, or read-only for queries. Invariants: a
//! file that is not an s3meta database, or one written by a newer s3meta, is refused before
//! anything in it is modified; migrations run in one exclusive transaction, so a database is
//! at one schema version or the next, never between; writers and readers leave `-wal` and
//! `-shm` in place when they close, so that readers of other users never create them
//! (`access.rs`, issue 13).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::{Error, Result};
use crate::keys::{KeyOrder, path_key};

/// `PRAGMA application_id` of s3meta databases: "S3MT".
pub const APPLICATION_ID: i64 = 0x5333_4d54;

/// The embedded migrations; the index + 1 is the `user_version` each one brings a database to.
const MIGRATIONS: &[&str] = &[
    include_str!("../../schema/0001_init.sql"),
    include_str!("../../schema/0002_key_order.sql"),
    include_str!("../../schema/0003_whole_object.sql"),
    include_str!("../../schema/0004_versions.sql"),
    include_str!("../../schema/0005_follow.sql"),
    include_str!("../../schema/0006_pending.sql"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a statement waits for another SQLite connection's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if needed) and migrates the database for writing. Close it with
/// `close_rw` (or `checkpoint_for_close` then close) to fold the WAL into the file.
pub fn open_rw(path: &Path) -> Result<Connection> {
    let db = |e| Error::db(path, e);
    crate::store::access::check_writer(path)?;
    let conn = Connection::open(path).map_err(db)?;
    keep_wal_files(&conn).map_err(db)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
    let version = check_identity(&conn, path)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
    if version < SCHEMA_VERSION {
        migrate(&conn, path)?;
    }
    Ok(conn)
}

/// Opens an existing database read-only (`query_only`), never creating one.
pub fn open_ro(path: &Path) -> Result<Connection> {
    if !path.exists() {
        return Err(Error::NoDatabase {
            path: path.to_path_buf(),
        });
    }
    crate::store::lock::refuse_hard_links(path)?;
    crate::store::access::check_reader(path)?;
    let db = |e| Error::db(path, e);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(db)?;
    keep_wal_files(&conn).map_err(db)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
    let version = check_identity(&conn, path)?;
    if version == 0 {
        return Err(Error::NotOurDatabase {
            path: path.to_path_buf(),
            detail: "it holds no s3meta tables".into(),
        });
    }
    if version < SCHEMA_VERSION {
        return Err(Error::BadInput(format!(
            "{} has schema version {version} (an older s3meta's); this s3meta reads version {SCHEMA_VERSION}: run `s3meta scan` on it once with write access (it upgrades the file in place, every row kept)",
            path.display()
        )));
    }
    conn.pragma_update(None, "query_only", "ON").map_err(db)?;
    Ok(conn)
}

/// The last connection to a WAL database closing would checkpoint and delete `-wal` and
/// `-shm`; then the next reader of another user would have to create them, owned by itself,
/// and the writer could not use them. With this, they stay (`close_rw` checkpoints first).
fn keep_wal_files(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map(|_| ())
}

/// Folds the WAL into the database file and truncates it, without waiting for readers (one
/// that is reading keeps the rest for the next writer): the file alone is then the whole
/// database once s3meta exits (copies, backups). A failure here loses nothing.
pub fn checkpoint_for_close(conn: &Connection) {
    let _ = conn.busy_timeout(Duration::ZERO);
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        // The next writer checkpoints what is left (e.g. after a full disk).
        tracing::debug!("checkpoint before closing: {e}");
    }
}

/// Checkpoints (see `checkpoint_for_close`) and closes a writer's connection.
pub fn close_rw(conn: Connection, path: &Path) -> Result<()> {
    checkpoint_for_close(&conn);
    conn.close().map_err(|(_, e)| Error::db(path, e))
}

/// A `file:` URI opening `path` read-only, for `ATTACH` (the connection must accept URIs,
/// as rusqlite's default flags do): a missing file is then an error, never created.
pub fn read_only_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut uri = String::from("file:");
    for &b in absolute.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?mode=ro");
    uri
}

/// Returns the schema version of an s3meta (or empty) database; refuses anything else.
fn check_identity(conn: &Connection, path: &Path) -> Result<i64> {
    let db = |e| Error::db(path, e);
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(db)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db)?;
    if app_id == 0 {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(db)?;
        if tables > 0 {
            return Err(Error::NotOurDatabase {
                path: path.to_path_buf(),
                detail: "it is an SQLite database of another program".into(),
            });
        }
        return Ok(0);
    }
    if app_id != APPLICATION_ID {
        return Err(Error::NotOurDatabase {
            path: path.to_path_buf(),
            detail: format!("its application_id is {app_id:#x}"),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(Error::TooNew {
            path: path.to_path_buf(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    Ok(version)
}

/// The id of a (store, bucket) row, if the database has one.
pub fn bucket_id(conn: &Connection, store: &str, bucket: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT bucket_id FROM buckets WHERE store = ?1 AND name = ?2")?
        .query_row([store, bucket], |r| r.get(0))
        .optional()
}

/// The id of a (store, bucket) row, created if missing.
pub fn ensure_bucket(conn: &Connection, store: &str, bucket: &str) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO buckets (store, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        [store, bucket],
    )?;
    Ok(bucket_id(conn, store, bucket)?.expect("the row was just inserted"))
}

/// The listing order recorded for a bucket, if known.
pub fn key_order(conn: &Connection, bucket_id: i64) -> rusqlite::Result<Option<KeyOrder>> {
    conn.prepare_cached("SELECT key_order FROM buckets WHERE bucket_id = ?1")?
        .query_row([bucket_id], |r| r.get(0))
}

/// Records a bucket's listing order (once known) and, for path order, gives every object of
/// the bucket its `path_key` (objects listed before the order was known have none).
pub fn record_key_order(
    conn: &Connection,
    bucket_id: i64,
    order: KeyOrder,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE buckets SET key_order = ?2 WHERE bucket_id = ?1 AND key_order IS NOT ?2",
    )?
    .execute(rusqlite::params![bucket_id, order])?;
    if order != KeyOrder::Path {
        return Ok(());
    }
    // A chunk at a time, so memory stays flat over a large bucket; the versions of
    // `--all-versions` scans too (their ranges and sweeps are read in it as well).
    for table in ["objects", "versions"] {
        let mut missing = conn.prepare_cached(&format!(
            "SELECT object_id, key FROM {table} WHERE bucket_id = ?1 AND path_key IS NULL LIMIT 10000"
        ))?;
        let mut set = conn.prepare_cached(&format!(
            "UPDATE {table} SET path_key = ?2 WHERE object_id = ?1"
        ))?;
        loop {
            let rows: Vec<(i64, String)> = missing
                .query_map([bucket_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            if rows.is_empty() {
                break;
            }
            for (id, key) in rows {
                set.execute(rusqlite::params![id, path_key(&key)])?;
            }
        }
    }
    Ok(())
}

/// Applies the missing migrations in one exclusive transaction.
fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let db = |e| Error::db(path, e);
    conn.execute_batch("BEGIN EXCLUSIVE").map_err(db)?;
    let result = (|| {
        // Read again under the lock: another process may have migrated meanwhile.
        let version = check_identity(conn, path)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(sql).map_err(db)?;
            conn.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(db)?;
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(db)?;
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(db),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_migrates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        drop(open_rw(&path).unwrap());
        let conn = open_rw(&path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let ro = open_ro(&path).unwrap();
        let err = ro.execute("DELETE FROM objects", []).unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }

    /// Issue 13: an attached input is opened read-only by URI, whatever its name holds.
    #[test]
    fn read_only_uris_attach_any_name_and_never_create() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a?b#c%d é.db");
        drop(open_rw(&odd).unwrap());
        let conn = Connection::open_in_memory().unwrap();
        conn.execute("ATTACH ?1 AS src", [read_only_uri(&odd)])
            .unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM src.objects", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        let err = conn
            .execute(
                "INSERT INTO src.buckets (store, name) VALUES ('a', 'b')",
                [],
            )
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        let missing = dir.path().join("missing.db");
        assert!(
            conn.execute("ATTACH ?1 AS gone", [read_only_uri(&missing)])
                .is_err()
        );
        assert!(!missing.exists());
    }

    #[test]
    fn refuses_newer_foreign_and_garbage_files_without_touching_them() {
        let dir = tempfile::tempdir().unwrap();
        let newer = dir.path().join("newer.db");
        drop(open_rw(&newer).unwrap());
        Connection::open(&newer)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(open_rw(&newer), Err(Error::TooNew { .. })));
        assert!(matches!(open_ro(&newer), Err(Error::TooNew { .. })));

        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        assert!(matches!(
            open_rw(&foreign),
            Err(Error::NotOurDatabase { .. })
        ));

        let garbage = dir.path().join("garbage.db");
        let bytes = vec![b'x'; 8192];
        std::fs::write(&garbage, &bytes).unwrap();
        assert!(matches!(
            open_rw(&garbage),
            Err(Error::NotOurDatabase { .. })
        ));
        assert_eq!(std::fs::read(&garbage).unwrap(), bytes);

        let missing = dir.path().join("missing.db");
        assert!(matches!(open_ro(&missing), Err(Error::NoDatabase { .. })));
        assert!(!missing.exists());
    }
}
