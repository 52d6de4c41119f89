//! The advisory lock that keeps two scans off one database.
//!
//! Receives: the database path. Sends on: a guard holding an exclusive OS lock (`flock`) on
//! `<db>.lock`. Invariant: the OS drops the lock when the process ends in any way, `kill -9`
//! included, so a killed scan never blocks the resume.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;

/// Held for the whole of a write command; dropping it releases the lock.
#[derive(Debug)]
pub struct DbLock {
    _file: File,
    pub path: PathBuf,
}

pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock without waiting; another holder is reported as `Error::Locked`.
pub fn acquire(db: &Path) -> Result<DbLock, Error> {
    let path = lock_path(db);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::LockFile {
            path: path.clone(),
            source,
        })?;
    // A few short retries: `status` holds the lock for an instant to see whether a scan runs.
    for _ in 0..BRIEF_HOLD_RETRIES {
        match file.try_lock() {
            Ok(()) => return Ok(DbLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(10)),
            Err(TryLockError::Error(source)) => return Err(Error::LockFile { path, source }),
        }
    }
    Err(Error::Locked {
        path: db.to_path_buf(),
        lock: path,
    })
}

/// Attempts, 10 ms apart, before another holder is reported.
const BRIEF_HOLD_RETRIES: u32 = 20;

/// Whether a process holds the lock now, for `status`. It never creates the lock file (a
/// missing one is not held) and never waits: it tries the lock and, if it got it, releases
/// it at once. A scan starting in that instant retries for a moment (see `acquire`).
pub fn is_held(db: &Path) -> bool {
    let Ok(file) = OpenOptions::new().write(true).open(lock_path(db)) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_held_tells_without_taking_or_creating() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        assert!(!is_held(&db));
        assert!(
            !lock_path(&db).exists(),
            "status must not create the lock file"
        );
        let guard = acquire(&db).unwrap();
        assert!(is_held(&db));
        drop(guard);
        assert!(!is_held(&db));
        // The probe released what it took.
        acquire(&db).unwrap();
    }

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let first = acquire(&db).unwrap();
        assert!(matches!(acquire(&db), Err(Error::Locked { .. })));
        drop(first);
        acquire(&db).unwrap();
    }
}
