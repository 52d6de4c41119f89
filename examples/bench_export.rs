//! Export benchmark (issue 19; a measurement, not a test: it prints figures and asserts nothing).
//!
//! Builds an N-object database directly with SQL (as `bench_query`: one bucket, every object
//! with an `owner`, 70% with a `project`, a third with a `checksum`), then exports it through the
//! library (`s3meta::read::export::run`, as the binary calls it) as Parquet and as JSON lines,
//! and prints rows/s, bytes per object of each output next to the SQLite file's, and the peak
//! RSS of the process. Run with
//! `cargo run --release --example bench_export [OBJECTS]` (default 1,000,000); BENCH_DB=PATH
//! keeps the database between runs.

use std::time::Instant;

#[path = "support/index.rs"]
mod index;
use index::Bench;

use s3meta::read::export::{self, ExportFormat, ExportOptions, parquet::RowGroupLimits};

const DEFAULT_OBJECTS: u64 = 1_000_000;

fn main() -> anyhow::Result<()> {
    let bench = Bench::open(DEFAULT_OBJECTS)?;
    let (dir, path, n) = (bench.dir(), bench.path.clone(), bench.objects);
    println!(
        "database: {n} objects, {:.1} MB, {:.0} bytes/object (built in {:.1} s)",
        bench.bytes as f64 / 1e6,
        bench.bytes as f64 / n as f64,
        bench.built_in.as_secs_f64()
    );
    for format in [ExportFormat::Parquet, ExportFormat::Jsonl] {
        let out = dir.join(format!("{format:?}"));
        let opts = ExportOptions {
            db: path.clone(),
            out: out.clone(),
            format,
            changes: false,
            bucket: None,
            prefix: None,
            filters: Vec::new(),
            include_gone: false,
            all_versions: false,
            since: None,
            row_group: RowGroupLimits {
                max_rows: export::ROW_GROUP_ROWS,
                max_bytes: export::ROW_GROUP_BYTES,
            },
            file_rows: export::FILE_ROWS,
            cancel: Default::default(),
        };
        let t = Instant::now();
        let report = export::run(&opts)?;
        let secs = t.elapsed().as_secs_f64();
        let bytes: u64 = report.files.iter().map(|f| f.bytes).sum();
        println!(
            "export {format:?}: {} rows in {secs:.2} s = {:.0} rows/s, {} file(s), {:.1} MB = {:.1} bytes/object ({:.1}% of the SQLite file)",
            report.rows,
            report.rows as f64 / secs,
            report.files.len(),
            bytes as f64 / 1e6,
            bytes as f64 / report.rows.max(1) as f64,
            100.0 * bytes as f64 / bench.bytes as f64
        );
        std::fs::remove_dir_all(&out)?;
    }
    let r = s3meta::model::stats::resources();
    println!(
        "peak RSS of the process {:.1} MB (database build included)",
        r.peak_rss_bytes as f64 / 1e6
    );
    Ok(())
}
