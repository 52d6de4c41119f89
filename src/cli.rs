//! The command line: every subcommand and flag, defined once with clap.
//!
//! Receives: argv. Sends on: a parsed `Cli` to `main.rs`, which dispatches. Invariant: flags
//! shared by several subcommands (database, connection) are defined once and flattened in.

use std::path::PathBuf;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::ClientOptions;
use crate::error::Error;

#[derive(Debug, Parser)]
#[command(
    name = "s3meta",
    version,
    about = "Index the custom metadata (x-amz-meta-*) of every object in an S3-compatible bucket into SQLite, resumably, and query it offline.",
    after_help = "Exit codes: 0 success; 1 fatal error or bad input; 3 scan complete but some objects could not be read; 130 interrupted (run the same command to resume)."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug: every retry, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr: no progress, no summary.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List a bucket or prefix and HEAD its objects into the database (resumes an unfinished scan).
    Scan(ScanArgs),
    /// Remove a bucket's or prefix's rows from the database, and/or prune old change records.
    Forget(ForgetArgs),
}

#[derive(Debug, Args)]
pub struct DbArgs {
    /// The SQLite database (created by `scan` if missing).
    #[arg(long, env = "S3META_DB", default_value = "s3meta.db")]
    pub db: PathBuf,
}

#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000 (also AWS_ENDPOINT_URL). Default: AWS.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Region (default: from the AWS config chain, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config.
    #[arg(long)]
    pub profile: Option<String>,
    /// Path-style addressing (http://host/bucket/key); the default with --endpoint-url.
    #[arg(long, conflicts_with = "virtual_host_style")]
    pub path_style: bool,
    /// Virtual-host addressing (http://bucket.host/key); the default for AWS.
    #[arg(long)]
    pub virtual_host_style: bool,
    /// Send unsigned requests (public buckets); no credentials are looked up.
    #[arg(long)]
    pub no_sign_request: bool,
    /// Per-request timeout in seconds; a request that takes longer is retried.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// What to scan: s3://BUCKET or s3://BUCKET/PREFIX.
    #[arg(value_name = "S3_URL")]
    pub url: String,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// HEAD requests in flight at most (the connection pool follows it).
    #[arg(long, short = 'j', default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Keys per LIST request (S3 returns at most 1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub page_size: i32,
    /// Attempts per request before an object is recorded as failed (or a LIST failure is fatal).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Requests per second at most, LIST and HEAD together (AWS sustains about 5,500 HEAD/s per prefix).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rps: Option<u32>,
    /// First retry back-off in milliseconds; doubles per retry (jittered, at most 20 s).
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub backoff_ms: u64,
    /// Abandon the unfinished scan of this target (its committed rows stay) and start anew.
    #[arg(long)]
    pub restart: bool,
    /// HEAD every object, even where a completed scan makes a rescan possible.
    #[arg(long)]
    pub full: bool,
    /// No progress line (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// At the end (also after an interrupt or a fatal error) write a JSON summary to PATH, or `-` for stdout.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// What to remove: s3://BUCKET or s3://BUCKET/PREFIX (its objects, metadata, errors, changes and scans).
    #[arg(value_name = "S3_URL")]
    pub url: Option<String>,
    #[command(flatten)]
    pub db: DbArgs,
    /// The store the bucket was scanned at (as given to `scan`; also AWS_ENDPOINT_URL). Default: AWS.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Also delete change records older than TIME (e.g. 2026-01-31 or 2026-01-31T12:00:00Z, UTC).
    #[arg(long, value_name = "TIME")]
    pub prune_changes_before: Option<String>,
    /// Run VACUUM afterwards to give the space back to the file system.
    #[arg(long)]
    pub vacuum: bool,
}

impl ConnectionArgs {
    /// The client options these flags ask for.
    pub fn options(&self) -> Result<ClientOptions, Error> {
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            return Err(Error::BadInput(
                "--timeout must be a positive number of seconds".into(),
            ));
        }
        Ok(ClientOptions {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            path_style: match (self.path_style, self.virtual_host_style) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            no_sign_request: self.no_sign_request,
            timeout: Duration::from_secs_f64(self.timeout),
        })
    }
}
