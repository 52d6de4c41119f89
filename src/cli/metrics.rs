//! `scan --metrics-file`: the run's metrics written for node_exporter's textfile collector.
//!
//! Receives: the flag's path, the target and how the run ended. Sends on: one file, written
//! atomically (a temporary file in the same directory, then a rename), so the collector never
//! reads half a file. Invariant: a directory gets one file per target (named by
//! `read::metrics::file_name`), so several targets' series never overwrite each other.

use std::io::Write;
use std::path::{Path, PathBuf};

use s3meta::error::Error;
use s3meta::model::Target;
use s3meta::read::metrics::{self, ScanRun};

/// Where a target's metrics go: `path` itself, or a file of its own in the directory `path`.
pub fn destination(path: &Path, target: &Target) -> PathBuf {
    if path.is_dir() {
        path.join(metrics::file_name(target))
    } else {
        path.to_path_buf()
    }
}

/// Refuses, before the scan, a path whose directory does not exist.
pub fn check(path: &Path) -> Result<(), Error> {
    let dir = match path.parent() {
        _ if path.is_dir() => path,
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::BadInput(format!(
            "--metrics-file {}: the directory {} does not exist (give a file path, or the textfile collector's directory)",
            path.display(),
            dir.display()
        )))
    }
}

/// Writes the metrics of a run; the database (read-only) gives the last success.
pub fn write(path: &Path, db: &Path, run: &ScanRun<'_>) -> Result<(), Error> {
    let last = metrics::last_success(db, run.target).unwrap_or_else(|e| {
        tracing::warn!("--metrics-file: no last-success time: {e}");
        None
    });
    let text = metrics::scan_exposition(run, last);
    let dest = destination(path, run.target);
    atomic_write(&dest, text.as_bytes()).map_err(|source| Error::Write { path: dest, source })
}

/// A temporary file beside `dest`, then a rename over it.
pub fn atomic_write(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The collector reads only `*.prom`: a temporary name must not end so.
    let tmp = dest.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
