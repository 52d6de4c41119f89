//! `s3meta export`: its flags, and the glue from the library's export (files in a local
//! directory) to the destination (that directory, or an `s3://` prefix).
//!
//! Receives: the parsed flags and the process's cancellation token. Sends on: the files, a
//! summary line on stderr, an exit code. Invariant: to `s3://`, a run writes everything under
//! its own `export-<UTC time>/` prefix, its `_SUCCESS` marker after its files, and the
//! `LATEST` pointer to it last, so a reader that follows `LATEST` never sees half a run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::cli::ConnectionArgs;
use crate::cli::progress::thousands;
use s3meta::error::Error;
use s3meta::model::s3url::S3Url;
use s3meta::model::stats::Stats;
use s3meta::read::export::{
    self, ExportFormat, ExportOptions, ExportReport, parquet::RowGroupLimits,
};
use s3meta::s3::client;
use s3meta::s3::retry::Policy;
use s3meta::s3::upload::{self, Uploader};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    /// Parquet in a Hive layout (bucket=NAME/part-00000.parquet), ZSTD-compressed.
    Parquet,
    /// JSON lines: `query --format jsonl`'s records.
    Jsonl,
    /// CSV: `query --format csv`'s.
    Csv,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The SQLite database to export.
    #[arg(long, env = "S3META_DB", default_value = "s3meta.db")]
    pub db: PathBuf,
    /// File format.
    #[arg(long, value_enum, default_value_t = ExportFormatArg::Parquet)]
    pub format: ExportFormatArg,
    /// Where: a new or empty local directory, or s3://BUCKET/PREFIX (each run under its own
    /// PREFIX/export-<UTC time>/, then PREFIX/LATEST naming it, written last).
    #[arg(long, value_name = "DIR|S3_URL")]
    pub out: String,
    /// Only this bucket.
    #[arg(long)]
    pub bucket: Option<String>,
    /// Only keys starting with this prefix (compared as keys).
    #[arg(long)]
    pub prefix: Option<String>,
    /// A filter, as `query --where`; repeat to AND them (objects only).
    #[arg(
        long = "where",
        short = 'w',
        value_name = "EXPR",
        allow_hyphen_values = true
    )]
    pub filters: Vec<String>,
    /// Include objects recorded as gone.
    #[arg(long)]
    pub include_gone: bool,
    /// Every version and delete marker (`scan --all-versions`), as `query --all-versions`.
    #[arg(long)]
    pub all_versions: bool,
    /// Export the changes table (`s3meta changes`'s rows) instead of the objects.
    #[arg(long, conflicts_with_all = ["filters", "all_versions", "include_gone"])]
    pub changes: bool,
    /// With --changes: only changes of scan SCAN and later, or at or after TIME.
    #[arg(long, value_name = "SCAN|TIME", requires = "changes")]
    pub since: Option<String>,
    /// Rows per Parquet row group at most, 1 to 10000000.
    #[arg(long, value_name = "N", default_value_t = export::ROW_GROUP_ROWS as u64, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub row_group_rows: u64,
    /// Bytes of values per row group at most, in MiB, 1 to 4096 (rows with thousands of
    /// metadata names close a group early).
    #[arg(long, value_name = "MIB", default_value_t = (export::ROW_GROUP_BYTES >> 20) as u64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub row_group_mib: u64,
    /// Rows per file at most (a larger partition is cut into part-00000, part-00001, …).
    #[arg(long, value_name = "N", default_value_t = export::FILE_ROWS, value_parser = clap::value_parser!(u64).range(1..))]
    pub file_rows: u64,
    /// To s3://: the multipart upload's part size in MiB, 5 to 5120.
    #[arg(long, value_name = "MIB", default_value_t = (upload::PART_SIZE >> 20) as u64, value_parser = clap::value_parser!(u64).range(5..=5120))]
    pub part_size_mib: u64,
    /// To s3://: where the files are written before they are uploaded (default: the system's
    /// temporary directory); it needs room for one export.
    #[arg(long, value_name = "DIR")]
    pub staging_dir: Option<PathBuf>,
    #[command(flatten)]
    pub conn: ConnectionArgs,
}

impl ExportArgs {
    fn options(&self, out: PathBuf, cancel: CancellationToken) -> ExportOptions {
        ExportOptions {
            db: self.db.clone(),
            out,
            format: match self.format {
                ExportFormatArg::Parquet => ExportFormat::Parquet,
                ExportFormatArg::Jsonl => ExportFormat::Jsonl,
                ExportFormatArg::Csv => ExportFormat::Csv,
            },
            changes: self.changes,
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            filters: self.filters.clone(),
            include_gone: self.include_gone,
            all_versions: self.all_versions,
            since: self.since.clone(),
            row_group: RowGroupLimits {
                max_rows: self.row_group_rows as usize,
                max_bytes: (self.row_group_mib as usize) << 20,
            },
            file_rows: self.file_rows,
            cancel,
        }
    }
}

/// `s3meta export`.
pub async fn export(
    args: &ExportArgs,
    quiet: bool,
    cancel: CancellationToken,
) -> Result<u8, Error> {
    let started = Instant::now();
    let dest = if args.out.to_ascii_lowercase().starts_with("s3://") {
        Some(S3Url::parse(&args.out)?)
    } else {
        None
    };
    let Some(url) = dest else {
        let report = run_blocking(args.options(PathBuf::from(&args.out), cancel)).await?;
        if !quiet {
            eprintln!("{}", line(&report, &args.out, started.elapsed()));
        }
        return Ok(0);
    };
    // The client first: a bad endpoint or missing credentials fail before anything is read.
    let s3 = client::build(&args.conn.options()?).await?;
    let run = format!("export-{}", compact(&s3meta::model::timefmt::now()));
    let staging_root = args.staging_dir.clone().unwrap_or_else(std::env::temp_dir);
    let staging = staging_root.join(format!("s3meta-{}-{run}", std::process::id()));
    let result = upload_run(args, &s3, &url, &run, &staging, cancel).await;
    // The staging copy goes whatever happened: the export lives in S3 or nowhere.
    let _ = std::fs::remove_dir_all(&staging);
    let (report, dest) = result?;
    if !quiet {
        eprintln!("{}", line(&report, &dest, started.elapsed()));
    }
    Ok(0)
}

async fn upload_run(
    args: &ExportArgs,
    s3: &client::S3,
    url: &S3Url,
    run: &str,
    staging: &Path,
    cancel: CancellationToken,
) -> Result<(ExportReport, String), Error> {
    let report = run_blocking(args.options(staging.to_path_buf(), cancel.clone())).await?;
    let base = match url.prefix.as_str() {
        "" => String::new(),
        p if p.ends_with('/') => p.to_string(),
        p => format!("{p}/"),
    };
    let run_prefix = format!("{base}{run}/");
    let stats = Stats::default();
    let up = Uploader {
        s3,
        bucket: url.bucket.clone(),
        part_size: (args.part_size_mib as usize) << 20,
        policy: Policy::new(5, Duration::from_millis(100)),
        stats: &stats,
        cancel: &cancel,
        requests: Default::default(),
    };
    for f in &report.files {
        up.upload_file(&staging.join(&f.path), &format!("{run_prefix}{}", f.path))
            .await?;
    }
    up.put_small(
        &format!("{run_prefix}{}", export::SUCCESS),
        b"",
        "text/plain",
    )
    .await?;
    let pointer = format!("s3://{}/{run_prefix}\n", url.bucket);
    up.put_small(&format!("{base}LATEST"), pointer.as_bytes(), "text/plain")
        .await?;
    Ok((report, pointer.trim_end().to_string()))
}

async fn run_blocking(opts: ExportOptions) -> Result<ExportReport, Error> {
    tokio::task::spawn_blocking(move || export::run(&opts))
        .await
        .map_err(|e| Error::Internal(format!("export: {e}")))?
}

/// `2026-12-03T10:15:00.123Z` as `20261203T101500.123Z`: sortable, and no `:` in a key.
fn compact(time: &str) -> String {
    time.chars().filter(|c| !matches!(c, '-' | ':')).collect()
}

fn line(r: &ExportReport, dest: &str, elapsed: Duration) -> String {
    let bytes: u64 = r.files.iter().map(|f| f.bytes).sum();
    let rss = s3meta::model::stats::resources().peak_rss_bytes;
    format!(
        "exported {} row(s) into {} file(s), {} bytes, to {dest} in {:.1} s (peak RSS {:.1} MiB)",
        thousands(r.rows),
        thousands(r.files.len() as u64),
        thousands(bytes),
        elapsed.as_secs_f64(),
        rss as f64 / f64::from(1 << 20)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_names_sort_as_times() {
        assert_eq!(
            super::compact("2026-12-03T10:15:00.123Z"),
            "20261203T101500.123Z"
        );
    }
}
