//! Who may create a database's `-wal` and `-shm` files: the rules that keep a database
//! usable by its writer while other users read it (issue 13).
//!
//! Receives: a database path, before a connection to it is opened. Sends on: nothing, or the
//! one-line reason a command cannot go on (what is missing, which permission to grant).
//! Invariants:
//! - a reader never creates a `-wal` or `-shm` that the database's owner could not write:
//!   SQLite gives them the database file's mode but the *creating* user's ownership (unless
//!   it runs as root), so a reader may let SQLite create them only as the owner or root;
//! - writers leave both files in place when they close (checkpointed, the WAL truncated to
//!   nothing), so another user's reader finds them and reads under SQLite's read-only WAL
//!   rules instead of creating its own; s3meta's readers leave them in place too;
//! - these checks open (and close) descriptors of their own, so they run before the first
//!   connection of this process to the database (see `lock.rs` on POSIX locks).

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `<db>-wal` and `<db>-shm`, named as SQLite names them.
pub fn companions(db: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// The effective uid of this process (the owner of `/proc/self`, Linux); `None` elsewhere,
/// which the checks treat as "not the owner".
fn effective_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Before a read-only open: the database must be readable, and if it is in WAL mode without
/// its `-wal` or `-shm`, only its owner (or root) may let SQLite create them.
pub fn check_reader(db: &Path) -> Result<()> {
    let owner = std::fs::metadata(db).map(|m| m.uid()).ok();
    let unreadable = |source: std::io::Error| Error::Unreadable {
        path: db.to_path_buf(),
        owner: owner.map_or("unknown".into(), |o| o.to_string()),
        source,
    };
    let mut header = [0u8; 20];
    let mut file = File::open(db).map_err(unreadable)?;
    let read = read_up_to(&mut file, &mut header).map_err(unreadable)?;
    drop(file);
    // Bytes 18 and 19 of the header, the file format's write and read versions: 2 is WAL.
    if read < header.len() || header[18] != 2 || header[19] != 2 {
        return Ok(());
    }
    let Some(missing) = companions(db).into_iter().find(|f| !f.exists()) else {
        return Ok(());
    };
    let me = effective_uid();
    if me == Some(0) || (me.is_some() && me == owner) {
        return Ok(());
    }
    Err(Error::ReaderWouldCreate {
        path: db.to_path_buf(),
        missing,
        uid: me.map_or("unknown".into(), |u| u.to_string()),
        owner: owner.map_or("unknown".into(), |o| o.to_string()),
    })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Before a writer opens: a `-wal` or `-shm` this user cannot write (left by another user's
/// reader, e.g. from an s3meta before issue 13) is reported with the fix, rather than
/// SQLite's "attempt to write a readonly database" after the scan has started.
pub fn check_writer(db: &Path) -> Result<()> {
    for file in companions(db) {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::CompanionNotWritable {
                    path: file,
                    db: db.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companions_are_named_as_sqlite_names_them() {
        let [wal, shm] = companions(Path::new("/d/x.db"));
        assert_eq!(
            (wal, shm),
            (PathBuf::from("/d/x.db-wal"), PathBuf::from("/d/x.db-shm"))
        );
    }

    #[test]
    fn the_owner_and_root_may_read_a_wal_database_without_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        drop(conn);
        assert!(companions(&db).iter().all(|f| !f.exists()));
        // The tests run as root (and as the owner): allowed.
        check_reader(&db).unwrap();
        check_writer(&db).unwrap();
        let short = dir.path().join("short.db");
        std::fs::write(&short, b"SQLite").unwrap();
        check_reader(&short).unwrap();
    }
}
