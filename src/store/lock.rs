//! The advisory lock that keeps two writers off one database.
//!
//! Receives: a database path. Sends on: a guard holding an OS lock (`flock`) on the database
//! file itself, or, for `status`, whether some process holds it. Invariants (issue 13):
//! - one lock per database *file*, not per path name: every path to the file (symlinks
//!   included) reaches the same lock, and no file can be deleted to get around it (a separate
//!   lock file could be, mid-scan); nothing is ever unlinked;
//! - a database file with more than one hard link is refused: SQLite names the `-wal` after
//!   the path, so two names would give one database two write-ahead logs;
//! - the OS drops the lock when the process ends in any way, `kill -9` included;
//! - `flock` locks are separate from SQLite's POSIX (`fcntl`) locks, but closing *any*
//!   descriptor of the file drops every POSIX lock the process holds on it, SQLite's included
//!   (sqlite.org, "How To Corrupt", 2.2). So a guard opens its descriptor before the first
//!   connection to the database and must be dropped after the last one is closed.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;

/// Held for the whole of a write command (or a merge, on each input); dropping it releases
/// the lock. Drop it only after the command's connections to the database are closed.
#[derive(Debug)]
pub struct DbLock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the writer's lock without waiting, creating the database file if it is missing;
/// another holder is reported as `Error::Locked`.
pub fn acquire(db: &Path) -> Result<DbLock, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(db)
        .map_err(|source| Error::OpenDb {
            path: db.to_path_buf(),
            source,
        })?;
    lock(file, db)
}

/// Takes the lock of an existing database that is only read (a merge input), so that no scan
/// starts on it meanwhile; read access suffices.
pub fn acquire_existing(db: &Path) -> Result<DbLock, Error> {
    let file = File::open(db).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::NoDatabase {
            path: db.to_path_buf(),
        },
        _ => Error::OpenDb {
            path: db.to_path_buf(),
            source,
        },
    })?;
    lock(file, db)
}

fn lock(file: File, db: &Path) -> Result<DbLock, Error> {
    check_links(&file, db)?;
    // A few short retries: `status` holds the lock for an instant to see whether a scan runs.
    for _ in 0..BRIEF_HOLD_RETRIES {
        match file.try_lock() {
            Ok(()) => {
                return Ok(DbLock {
                    _file: file,
                    path: db.to_path_buf(),
                });
            }
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(10)),
            Err(TryLockError::Error(source)) => {
                return Err(Error::LockFile {
                    path: db.to_path_buf(),
                    source,
                });
            }
        }
    }
    Err(Error::Locked {
        path: db.to_path_buf(),
    })
}

/// Attempts, 10 ms apart, before another holder is reported.
const BRIEF_HOLD_RETRIES: u32 = 20;

/// Refuses an open database file with more than one hard link.
fn check_links(file: &File, db: &Path) -> Result<(), Error> {
    let links = file
        .metadata()
        .map_err(|source| Error::OpenDb {
            path: db.to_path_buf(),
            source,
        })?
        .nlink();
    if links > 1 {
        return Err(Error::HardLinks {
            path: db.to_path_buf(),
            links,
        });
    }
    Ok(())
}

/// Refuses a database path whose file has more than one hard link (for readers, which open
/// no descriptor of their own: see the module's note on POSIX locks). A missing file passes.
pub fn refuse_hard_links(db: &Path) -> Result<(), Error> {
    match std::fs::metadata(db) {
        Ok(m) if m.nlink() > 1 => Err(Error::HardLinks {
            path: db.to_path_buf(),
            links: m.nlink(),
        }),
        _ => Ok(()),
    }
}

/// Whether a writer holds a database's lock, as `status` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Held,
    Free,
    /// The lock could not be tested (why): never to be taken for `Free`.
    Unknown(String),
}

/// A test of the lock, holding its (read-only) descriptor until dropped: drop it after the
/// connections to the database are closed, like a `DbLock`.
#[derive(Debug)]
pub struct Probe {
    _file: Option<File>,
    pub liveness: Liveness,
}

/// Tests the lock without waiting and without taking it for more than an instant, through a
/// read-only descriptor: `flock` needs no write access, so any user who can read the database
/// can tell a running scan from an interrupted one. A missing database is not held.
pub fn probe(db: &Path) -> Probe {
    let file = match File::open(db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Probe {
                _file: None,
                liveness: Liveness::Free,
            };
        }
        Err(e) => {
            return Probe {
                _file: None,
                liveness: Liveness::Unknown(format!("cannot open {}: {e}", db.display())),
            };
        }
    };
    let liveness = match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Liveness::Free
        }
        Err(TryLockError::WouldBlock) => Liveness::Held,
        Err(TryLockError::Error(e)) => {
            Liveness::Unknown(format!("cannot test the lock of {}: {e}", db.display()))
        }
    };
    Probe {
        _file: Some(file),
        liveness,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_tells_without_taking_or_creating() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        assert_eq!(probe(&db).liveness, Liveness::Free);
        assert!(!db.exists(), "status must not create the database");
        let guard = acquire(&db).unwrap();
        assert_eq!(probe(&db).liveness, Liveness::Held);
        drop(guard);
        assert_eq!(probe(&db).liveness, Liveness::Free);
        // The probe released what it took.
        acquire(&db).unwrap();
    }

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let first = acquire(&db).unwrap();
        assert!(matches!(acquire(&db), Err(Error::Locked { .. })));
        assert!(matches!(acquire_existing(&db), Err(Error::Locked { .. })));
        drop(first);
        acquire(&db).unwrap();
    }

    /// Issue 13: one lock per file, whatever the path; hard links refused.
    #[test]
    fn every_path_to_one_file_shares_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("real.db");
        let alias = dir.path().join("alias.db");
        let first = acquire(&db).unwrap();
        std::os::unix::fs::symlink(&db, &alias).unwrap();
        assert!(matches!(acquire(&alias), Err(Error::Locked { .. })));
        assert_eq!(probe(&alias).liveness, Liveness::Held);
        drop(first);

        let link = dir.path().join("link.db");
        std::fs::hard_link(&db, &link).unwrap();
        for path in [&db, &link, &alias] {
            assert!(matches!(
                acquire(path),
                Err(Error::HardLinks { links: 2, .. })
            ));
            assert!(refuse_hard_links(path).is_err());
        }
        std::fs::remove_file(&link).unwrap();
        acquire(&alias).unwrap();
    }
}
