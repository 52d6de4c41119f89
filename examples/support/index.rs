//! The synthetic index of the query and export benchmarks: N objects under `data/NN/`, every
//! one with an `owner` (200 values), 70% with a `project` (skewed: see `project`), a third
//! with a unique `checksum`, and the command line both take (`[OBJECTS]`, `BENCH_DB=PATH`).
//! Included by `bench_query.rs` and `bench_export.rs`.

/// Writes the index into a new database at `path`, in one transaction.
pub fn build(path: &std::path::Path, n: u64) -> anyhow::Result<()> {
    let mut conn = s3meta::store::db::open_rw(path)?;
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO buckets (bucket_id, store, name) VALUES (1, 'http://bench', 'bench')",
        [],
    )?;
    {
        let mut obj = tx.prepare(
            "INSERT INTO objects (object_id, bucket_id, key, state, list_etag, list_size, list_modified,
                 list_storage_class, etag, size, last_modified, content_type, listed_scan, headed_scan, headed_at)
             VALUES (?1, 1, ?2, 'ok', ?3, ?4, ?5, 'STANDARD', ?3, ?4, ?5, 'application/octet-stream', 1, 1, ?5)",
        )?;
        let mut meta =
            tx.prepare("INSERT INTO metadata (object_id, name, value) VALUES (?1, ?2, ?3)")?;
        for i in 0..n {
            let id = i as i64 + 1;
            let key = format!("data/{:02}/obj-{i:08}", i % 100);
            let etag = format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let modified =
                s3meta::model::timefmt::format_epoch(1_767_225_600 + (i as i64 % 86_400) * 300, 0);
            obj.execute(rusqlite::params![
                id,
                key,
                etag,
                (i as i64 * 37) % 5000,
                modified
            ])?;
            meta.execute(rusqlite::params![id, "owner", format!("user{}", i % 200)])?;
            if let Some(p) = project(i) {
                meta.execute(rusqlite::params![id, "project", p])?;
            }
            if i % 3 == 0 {
                meta.execute(rusqlite::params![id, "checksum", &etag])?;
            }
        }
    }
    tx.commit()?;
    // Folds the WAL into the file, so its size is the database's.
    s3meta::store::db::close_rw(conn, path)?;
    Ok(())
}

/// The benchmark's database: N objects (the first argument, else `default`), built in a
/// temporary directory, or kept at `BENCH_DB=PATH` (built once, reused by later runs).
pub struct Bench {
    /// Holds the temporary directory (and the database in it) for the benchmark's run.
    dir: tempfile::TempDir,
    pub path: std::path::PathBuf,
    pub objects: u64,
    /// The file's size in bytes.
    pub bytes: u64,
    /// How long building it took (zero when `BENCH_DB` already held it).
    pub built_in: std::time::Duration,
}

impl Bench {
    /// A scratch directory for the benchmark's own output.
    #[allow(dead_code)] // bench_query writes no files
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn open(default: u64) -> anyhow::Result<Bench> {
        let objects: u64 = match std::env::args().nth(1) {
            Some(a) => a.parse()?,
            None => default,
        };
        let dir = tempfile::tempdir()?;
        let path = std::env::var_os("BENCH_DB").map_or(dir.path().join("bench.db"), Into::into);
        let t = std::time::Instant::now();
        if !path.exists() {
            build(&path, objects)?;
        }
        let built_in = t.elapsed();
        let bytes = std::fs::metadata(&path)?.len();
        Ok(Bench {
            dir,
            path,
            objects,
            bytes,
            built_in,
        })
    }
}

/// 70% of objects: apollo 40%, gemini 1%, mercury 0.01%, and 29% over 290 other values.
pub fn project(i: u64) -> Option<String> {
    match i % 10_000 {
        0 => Some("mercury".into()),
        r if r % 100 == 1 => Some("gemini".into()),
        r if r % 10 < 4 => Some("apollo".into()),
        r if r % 10 < 7 => Some(format!("p{}", r % 290)),
        _ => None,
    }
}
