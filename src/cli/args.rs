//! The command line: every subcommand and flag, defined once with clap.
//!
//! Receives: argv. Sends on: a parsed `Cli` to `main.rs`, which dispatches. Invariant: flags
//! shared by several subcommands (database, connection) are defined once and flattened in.

use std::path::PathBuf;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use s3meta::model::{ChangeKind, TagsMode};
use s3meta::read::changes::ChangesOptions;
use s3meta::read::names::NamesOptions;
use s3meta::read::output;
use s3meta::read::query::QueryOptions;
use s3meta::read::status::StatusOptions;
use s3meta::s3::retry::Policy;
use s3meta::store::forget::ForgetOptions;

use s3meta::error::Error;
use s3meta::s3::client::ClientOptions;

pub use crate::cli::ui::ColorChoice;

/// The `--where` grammar, in `s3meta query --help` and `s3meta-query(1)`.
pub const QUERY_GRAMMAR: &str = "\
Filters (--where EXPR, repeat to AND them):
  NAME=VALUE      custom metadata NAME (x-amz-meta-NAME, any case) equals VALUE exactly
  NAME!=VALUE     has NAME with another value
  NAME~GLOB       value matches GLOB (* any run, ? one character, \\ escapes)
  NAME            has NAME;   !NAME  lacks NAME (objects not read yet match neither)
  tag:KEY=VALUE, tag:KEY!=VALUE, tag:KEY~GLOB, tag:KEY, !tag:KEY
                  object tags (scans with --tags); objects whose tags were never read match no tag test
  @FIELD OP VALUE listing and HEAD fields: @key (=, !=, <, <=, >, >=, ~), @size (10MB, 2GiB),
                  @modified and @lock_retain_until (2026-01-31, 2026-01-31T12:00Z, -7d, -24h),
                  @etag, @storage_class, @content_type, @state (pending, ok, error, gone),
                  @version_id, @sse, @checksum_algorithm, @parts_count, @tagging_count, ...
  @error          objects whose HEAD failed for good
The operator is the first `=`, `!=` or `~`: `owner==alice` tests for the value `=alice` (a
warning says so). Metadata of objects listed but not read yet is unknown: null in JSON and
CSV, `(not read)` in tables, and `!NAME`/`NAME!=VALUE` do not match them.

Examples:
  s3meta query s3://archive/2026/ --where project=apollo --where '@size>1GiB'
  s3meta query --where '!owner' --count
  s3meta query --sql 'SELECT owner, count(*) FROM v_objects GROUP BY 1'";

/// The help heading of the flags every subcommand takes.
const GLOBAL: &str = "Global options";

#[derive(Debug, Parser)]
#[command(
    name = "s3meta",
    version,
    about = "Index the custom metadata (x-amz-meta-*) of every object in an S3-compatible bucket into SQLite, resumably, and query it offline.",
    after_help = "Exit codes: 0 success; 1 fatal error or bad input; 3 scan complete but some objects could not be read; 130 interrupted (run the same command to resume)."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug: every retry, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Only errors on stderr: no progress, no summary.
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// Log format on stderr; with json, notices, the scan's summary and the final error are
    /// JSON objects too.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text, global = true, help_heading = GLOBAL)]
    pub log_format: LogFormat,
    /// Colour on stderr: auto (only when stderr is a terminal and NO_COLOR is unset), always, never.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto, global = true, help_heading = GLOBAL)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

/// `--tags[=WHICH]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TagsArg {
    /// Tags of every object, unchanged ones included.
    All,
    /// Tags only of objects whose listing changed (and new ones).
    SkipUnchanged,
}

impl TagsArg {
    pub fn mode(self) -> TagsMode {
        match self {
            TagsArg::All => TagsMode::All,
            TagsArg::SkipUnchanged => TagsMode::SkipUnchanged,
        }
    }
}

/// `--split-ranges`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitRanges {
    Auto,
    Always,
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
    /// Keep the index live from the store's event notifications (an SQS queue, or webhook
    /// POSTs) until stopped; nightly rescans remain the safety net.
    Follow(FollowArgs),
    /// Search the index offline: objects by metadata and listing fields, or one read-only SQL statement.
    #[command(after_long_help = QUERY_GRAMMAR)]
    Query(QueryArgs),
    /// The metadata names in use, with object counts and their most common values.
    Names(NamesArgs),
    /// The scans recorded in the database, their progress and errors, and the objects in error.
    Status(StatusArgs),
    /// List what rescans noticed: created, modified, metadata changed, deleted objects.
    Changes(ChangesArgs),
    /// Write the index (or its changes) as Parquet, JSON lines or CSV files, to a directory or
    /// to s3:// (DuckDB, Athena, Trino and Spark read the Parquet as is).
    Export(crate::cli::export::ExportArgs),
    /// List only (no HEAD) and report the requests, and their cost, of a scan or a rescan.
    Estimate(EstimateArgs),
    /// Cut a bucket or prefix into N key ranges (JSON lines) for `scan --range-json` on many machines.
    Plan(PlanArgs),
    /// Merge range databases into OUT (each replaces its keyspace's contents in OUT).
    Merge(MergeArgs),
    /// Remove a bucket's or prefix's rows from the database, and/or prune old change records.
    Forget(ForgetArgs),
    /// Read the whole database: SQLite's integrity_check and s3meta's own invariants (slow on large databases).
    Check(CheckArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions {
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout (`s3meta man > s3meta.1`), or write one page per
    /// subcommand into a directory (`s3meta man --dir /usr/local/share/man/man1`).
    Man {
        /// Write s3meta.1 and s3meta-SUBCOMMAND.1 pages into DIR (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The database of commands that write it (`scan`, `follow`): created if missing.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// The SQLite database (created if missing).
    #[arg(long, env = "S3META_DB", default_value = "s3meta.db")]
    pub db: PathBuf,
}

/// The database of `forget`, which changes one but never creates it.
#[derive(Debug, Args)]
pub struct EditDbArgs {
    /// The SQLite database to change (written by `s3meta scan`; it must exist).
    #[arg(long, env = "S3META_DB", default_value = "s3meta.db")]
    pub db: PathBuf,
}

/// The database of commands that only read it: it must exist.
#[derive(Debug, Args)]
pub struct ReadDbArgs {
    /// The SQLite database to read (written by `s3meta scan`; opened read-only).
    #[arg(long, env = "S3META_DB", default_value = "s3meta.db")]
    pub db: PathBuf,
}

#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000 (else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's). Default: AWS.
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
    /// Per-request timeout in seconds (more than 0, at most 3600); a request that takes longer is retried.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = timeout_secs)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// What to scan: s3://BUCKET or s3://BUCKET/PREFIX (optional with --range-json).
    #[arg(value_name = "S3_URL", required_unless_present = "range_json")]
    pub url: Option<String>,
    /// Scan only this key range: one line printed by `s3meta plan` (JSON).
    #[arg(long, value_name = "LINE")]
    pub range_json: Option<String>,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// HEAD requests in flight at most, 1 to 4096 (the connection pool follows it).
    #[arg(long, short = 'j', value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Key ranges listed at once: the keyspace is cut with one-key probes, and large ranges are
    /// split while the scan runs so the streams stay busy (1: one stream, no probes; at most 256).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub list_parallelism: u32,
    /// When to cut a range for the free listing streams: auto, only while the HEADs wait for
    /// listed keys (rescans; a full scan bound by its HEADs lists with one stream and sends no
    /// probes), or always, whenever a stream is free.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = SplitRanges::Auto)]
    pub split_ranges: SplitRanges,
    /// Record object tags too (GetObjectTagging, one request per tagged object a HEAD finds;
    /// HEAD's count of 0 saves it). `--tags` alone is `all`: a rescan also reads the tags of
    /// every unchanged object (one request each), as tags change without touching the
    /// listing; `skip-unchanged` reads them only where the listing changed, and misses tag-only
    /// changes on the rest.
    #[arg(long, value_enum, value_name = "WHICH", num_args = 0..=1, require_equals = true, default_missing_value = "all")]
    pub tags: Option<TagsArg>,
    /// With --tags: take a HEAD without x-amz-tagging-count to mean no tags, so only tagged
    /// objects cost a GetObjectTagging (AWS, MinIO, SeaweedFS and moto send the count on every
    /// tagged object the caller may read). Off: a missing count is not known, and read. On a
    /// store that never sends the count this records every object as untagged.
    #[arg(long, requires = "tags")]
    pub trust_tag_count: bool,
    /// Record every version and delete marker (ListObjectVersions; a HEAD with versionId per
    /// version never seen before) instead of the current versions. A target of its own: plain
    /// scans and --all-versions scans of one bucket share a database without touching each
    /// other's rows; query them with `s3meta query --all-versions` or the view v_versions.
    #[arg(long)]
    pub all_versions: bool,
    /// Keys per LIST request, 1 to 1000 (S3 returns at most 1000).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub page_size: i32,
    /// Attempts per request, 1 to 100, before an object is recorded as failed (or a LIST failure
    /// is fatal); throttled answers (503 SlowDown, 429) get 4 times as many.
    #[arg(long, value_name = "N", default_value_t = Policy::default().max_attempts, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Requests per second at most, LIST and HEAD together, 1 to 1000000 (AWS sustains about 5,500 HEAD/s per prefix).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_rps: Option<u32>,
    /// First retry back-off in milliseconds, 0 to 20000; doubles per retry (jittered, at most 20 s), except for HEADs refused by random, load-independent throttling, which wait the first step again.
    #[arg(long, value_name = "MS", default_value_t = Policy::default().base.as_millis() as u64, value_parser = clap::value_parser!(u64).range(0..=20_000))]
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
    /// At the end of every run (also after an interrupt or a fatal error) write Prometheus
    /// metrics for node_exporter's textfile collector to PATH (atomically); a directory gets
    /// one file per target.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["sqs_queue_url", "listen"])))]
pub struct FollowArgs {
    /// What to follow: s3://BUCKET or s3://BUCKET/PREFIX (events for other keys are ignored).
    #[arg(value_name = "S3_URL")]
    pub url: String,
    /// The SQS queue the bucket's notifications go to (S3 → SQS, SNS → SQS or EventBridge → SQS).
    #[arg(long, value_name = "URL")]
    pub sqs_queue_url: Option<String>,
    /// SQS endpoint (default: AWS_ENDPOINT_URL_SQS, else the queue URL's own host when it is not AWS's).
    #[arg(long, value_name = "URL", requires = "sqs_queue_url")]
    pub sqs_endpoint_url: Option<String>,
    /// With SQS: apply what the queue holds, then exit (0) once a receive finds it empty.
    #[arg(long, requires = "sqs_queue_url")]
    pub once: bool,
    /// Long-poll wait of each SQS receive in seconds, 1 to 20.
    #[arg(long, value_name = "SECS", default_value_t = 20, requires = "sqs_queue_url", value_parser = clap::value_parser!(i32).range(1..=20))]
    pub wait_seconds: i32,
    /// Serve webhook POSTs of S3 event JSON on ADDR (MinIO's webhook target, Ceph RGW's HTTP
    /// push endpoint); each is answered 200 only after what it carries is committed.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics (with --listen, its address serves
    /// /metrics too): events applied, lag, HEAD latency, queue depth.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Let --listen bind an address other than loopback (needs --auth-token).
    #[arg(long, requires = "listen")]
    pub allow_remote: bool,
    /// The shared secret webhook senders must send as `Authorization: Bearer TOKEN` (or the
    /// token alone); also read from S3META_AUTH_TOKEN.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "S3META_AUTH_TOKEN",
        hide_env_values = true,
        requires = "listen"
    )]
    pub auth_token: Option<String>,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// HEAD requests in flight at most, 1 to 4096.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Read the tags of the objects events name (GetObjectTagging where HEAD does not count 0).
    #[arg(long)]
    pub tags: bool,
    /// With --tags: a HEAD without x-amz-tagging-count means no tags (see `scan --trust-tag-count`).
    #[arg(long, requires = "tags")]
    pub trust_tag_count: bool,
    /// Messages applied per commit at most, 1 to 10000.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Attempts per HEAD, 1 to 100, before an object is recorded in error.
    #[arg(long, value_name = "N", default_value_t = Policy::default().max_attempts, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// At the end (also after an interrupt or a fatal error) write a JSON summary to PATH, or `-` for stdout.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EstimateArgs {
    /// What a scan would cover: s3://BUCKET or s3://BUCKET/PREFIX.
    #[arg(value_name = "S3_URL")]
    pub url: String,
    /// The database a rescan would read (opened read-only; missing: the next scan is a full scan).
    #[arg(long, env = "S3META_DB", default_value = "s3meta.db")]
    pub db: PathBuf,
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// What `scan --all-versions` would send: every version and delete marker
    /// (ListObjectVersions), HEADs of versions never HEADed before.
    #[arg(long)]
    pub all_versions: bool,
    /// Price of 1,000 LIST requests in USD, 0 to 1000 (default: AWS S3 Standard).
    #[arg(long, value_name = "USD", default_value_t = s3meta::read::estimate::LIST_PRICE, value_parser = price)]
    pub list_price: f64,
    /// Price of 1,000 HEAD requests in USD, 0 to 1000 (default: AWS S3 Standard, GET class).
    #[arg(long, value_name = "USD", default_value_t = s3meta::read::estimate::HEAD_PRICE, value_parser = price)]
    pub head_price: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DocFormatArg::Table)]
    pub format: DocFormatArg,
    /// Shorthand for --format json.
    #[arg(long)]
    pub json: bool,
}

/// The formats of a one-document report (`status`, `estimate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DocFormatArg {
    /// For a person (`text` is an alias).
    #[value(alias = "text")]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ChangesArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub db: ReadDbArgs,
    /// Only changes recorded by scan SCAN and later ones, or at or after TIME: a UTC date or
    /// time (2026-01-31, 2026-01-31T12:00Z) or a span back from now (24h, 7d, 30m).
    #[arg(long, value_name = "SCAN|TIME")]
    pub since: Option<String>,
    /// Only changes of this kind (`gone` is `deleted`, as `@state=gone` names it).
    #[arg(long, value_parser = ["created", "modified", "metadata", "tags", "deleted", "gone"])]
    pub kind: Option<String>,
    /// At most N rows (0 to 2^63-1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    pub limit: Option<i64>,
    /// Print only the number of matching changes.
    #[arg(long, conflicts_with = "limit")]
    pub count: bool,
    #[command(flatten)]
    pub output: RecordsFormat,
}

/// `--format` and `--json` of commands that print records.
#[derive(Debug, Args)]
pub struct RecordsFormat {
    /// Output format [default: table when stdout is a terminal, else jsonl].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Shorthand for --format jsonl.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Sizes in binary units in tables (1.2 MiB); JSON and CSV keep bytes.
    #[arg(short = 'H', long)]
    pub human: bool,
}

impl RecordsFormat {
    /// How tables are drawn: to the terminal's width when stdout is one.
    pub fn style(&self) -> output::TableStyle {
        output::TableStyle {
            width: crate::cli::ui::terminal_width(),
            human: self.human,
        }
    }

    pub fn format(&self) -> Option<output::Format> {
        match (self.json, self.format) {
            (true, _) => Some(output::Format::Jsonl),
            (false, f) => f.map(Into::into),
        }
    }
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// What to cut: s3://BUCKET or s3://BUCKET/PREFIX.
    #[arg(value_name = "S3_URL")]
    pub url: String,
    /// How many ranges (fewer when the keyspace holds too few distinct keys).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub ranges: u32,
    #[command(flatten)]
    pub conn: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The database to update (created if missing).
    #[arg(value_name = "OUT.db")]
    pub out: PathBuf,
    /// Range databases, merged in order.
    #[arg(value_name = "IN.db", required = true)]
    pub inputs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// What to remove: s3://BUCKET or s3://BUCKET/PREFIX (its objects, metadata, errors, changes and scans).
    #[arg(value_name = "S3_URL")]
    pub url: Option<String>,
    #[command(flatten)]
    pub db: EditDbArgs,
    /// The store the bucket was scanned at, resolved as `scan` does (flag, AWS_ENDPOINT_URL_S3,
    /// AWS_ENDPOINT_URL, the profile's endpoint). Default: AWS.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Named profile from ~/.aws/config, read for its endpoint only (no credentials are used).
    #[arg(long)]
    pub profile: Option<String>,
    /// Also delete change records older than TIME (e.g. 2026-01-31 or 2026-01-31T12:00:00Z, UTC).
    #[arg(long, value_name = "TIME")]
    pub prune_changes_before: Option<String>,
    /// Run VACUUM afterwards to give the space back to the file system.
    #[arg(long)]
    pub vacuum: bool,
}

/// Output formats of `query` and `names` (and of `changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns, for a person (the default when stdout is a terminal).
    Table,
    /// One JSON object per line (the default otherwise).
    Jsonl,
    /// One JSON array.
    Json,
    /// RFC 4180 CSV with a header; metadata as one JSON column.
    Csv,
}

/// Which objects `query`, `names` and `changes` look at.
#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// Only this bucket and prefix, as `scan` names them: s3://BUCKET or s3://BUCKET/PREFIX (in
    /// every store the database holds that bucket of; the store is the `store` column).
    #[arg(value_name = "S3_URL", conflicts_with_all = ["bucket", "prefix"])]
    pub url: Option<String>,
    /// Only this bucket.
    #[arg(long)]
    pub bucket: Option<String>,
    /// Only keys starting with this prefix (compared as keys: `%`, `_`, `*` are literal).
    #[arg(long)]
    pub prefix: Option<String>,
}

impl ScopeArgs {
    /// (bucket, prefix) from the target or the flags.
    pub fn resolve(&self) -> Result<(Option<String>, Option<String>), Error> {
        match &self.url {
            Some(u) => {
                let url = s3meta::model::s3url::S3Url::parse(u)?;
                let prefix = (!url.prefix.is_empty()).then_some(url.prefix);
                Ok((Some(url.bucket), prefix))
            }
            None => Ok((self.bucket.clone(), self.prefix.clone())),
        }
    }
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub db: ReadDbArgs,
    /// A filter; repeat to AND them: name=value, name!=value, name~glob, name, !name,
    /// tag:NAME=value, @key~glob, @size>10MB, @modified>2026-01-01, @modified>-7d, @etag=…,
    /// @storage_class=…, @state=pending|ok|error|gone, @error (the grammar: `man s3meta-query`).
    #[arg(
        long = "where",
        short = 'w',
        value_name = "EXPR",
        allow_hyphen_values = true
    )]
    pub filters: Vec<String>,
    /// Run one read-only SQL statement instead (views: v_objects, v_metadata, v_tags,
    /// v_changes, v_versions, v_version_metadata, v_version_tags).
    #[arg(long, value_name = "SQL", conflicts_with_all = ["filters", "url", "bucket", "prefix", "count", "include_gone"])]
    pub sql: Option<String>,
    #[command(flatten)]
    pub output: RecordsFormat,
    /// At most N objects (rows), 0 to 2^63-1.
    #[arg(long, value_name = "N", value_parser = count_parser())]
    pub limit: Option<u64>,
    /// Print only the number of matching objects.
    #[arg(long, conflicts_with = "limit")]
    pub count: bool,
    /// Include objects recorded as gone (deleted, or HEAD answered 404).
    #[arg(long)]
    pub include_gone: bool,
    /// Every version and delete marker recorded by `s3meta scan --all-versions`, newest first
    /// per key, with the fields is_latest and delete_marker (filters @version_id, @is_latest,
    /// @delete_marker); without it, the current objects of plain scans.
    #[arg(long)]
    pub all_versions: bool,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub db: ReadDbArgs,
    #[command(flatten)]
    pub output: RecordsFormat,
    /// At most N names (in name order).
    #[arg(long, value_name = "N", value_parser = count_parser())]
    pub limit: Option<u64>,
    /// The tag keys in use (scans with `--tags`) instead of the metadata names.
    #[arg(long)]
    pub tags: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub db: ReadDbArgs,
    /// No progress line (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub db: ReadDbArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DocFormatArg::Table)]
    pub format: DocFormatArg,
    /// Shorthand for --format json.
    #[arg(long)]
    pub json: bool,
    /// List at most N objects in error, 0 to 2^63-1 (the total is always shown).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = count_parser())]
    pub errors: u64,
    /// Show the latest N scans of each target (0: every scan recorded); unfinished scans are
    /// always shown.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = count_parser())]
    pub last: u64,
}

/// `--timeout`: seconds, more than 0 and at most an hour (a larger value would only hide a
/// dead connection; `1e308` would overflow a `Duration`).
fn timeout_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err("expected a number of seconds more than 0 and at most 3600".into()),
    }
}

/// `--list-price`, `--head-price`: USD per 1,000 requests, 0 to 1000.
fn price(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1000.0).contains(&v) => Ok(v),
        _ => Err("expected a price in USD per 1,000 requests, 0 to 1000".into()),
    }
}

/// Counts that end up in SQL `LIMIT` (an `i64`).
fn count_parser() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=i64::MAX as u64)
}

/// A clap usage error in at most two lines: the error, its details and tips on the first,
/// clap's usage line (or its pointer to `--help`) on the second. Clap itself prints three to
/// seven lines; the README promises one line per error, whatever the command.
pub fn usage_error(e: &clap::Error) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "error: no command given\nUsage: s3meta [OPTIONS] <COMMAND> (try 's3meta --help')\n"
            .into();
    }
    usage_lines(&e.render().to_string())
}

/// The two lines of `usage_error`, from clap's rendered paragraphs.
fn usage_lines(rendered: &str) -> String {
    let mut paragraphs = rendered.split("\n\n").map(|p| {
        p.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    });
    let mut first = paragraphs.next().unwrap_or_default();
    let (mut usage, mut more) = (None, None);
    for p in paragraphs {
        if p.starts_with("Usage:") {
            usage = Some(p);
        } else if p.starts_with("For more information") {
            more = Some(p);
        } else if !p.is_empty() {
            first = format!("{first} ({p})");
        }
    }
    match usage.or(more) {
        Some(hint) => format!("{first}\n{hint}\n"),
        None => format!("{first}\n"),
    }
}

impl From<Format> for output::Format {
    fn from(f: Format) -> output::Format {
        match f {
            Format::Table => output::Format::Table,
            Format::Jsonl => output::Format::Jsonl,
            Format::Json => output::Format::Json,
            Format::Csv => output::Format::Csv,
        }
    }
}

impl QueryArgs {
    pub fn options(&self) -> Result<QueryOptions, Error> {
        let (bucket, prefix) = self.scope.resolve()?;
        Ok(QueryOptions {
            db: self.db.db.clone(),
            bucket,
            prefix,
            filters: self.filters.clone(),
            sql: self.sql.clone(),
            format: self.output.format(),
            table: self.output.style(),
            limit: self.limit,
            count: self.count,
            include_gone: self.include_gone,
            all_versions: self.all_versions,
        })
    }
}

impl NamesArgs {
    pub fn options(&self) -> Result<NamesOptions, Error> {
        let (bucket, prefix) = self.scope.resolve()?;
        Ok(NamesOptions {
            db: self.db.db.clone(),
            bucket,
            prefix,
            format: self.output.format(),
            table: self.output.style(),
            tags: self.tags,
            limit: self.limit,
        })
    }
}

impl ChangesArgs {
    pub fn options(&self) -> Result<ChangesOptions, Error> {
        let (bucket, prefix) = self.scope.resolve()?;
        Ok(ChangesOptions {
            db: self.db.db.clone(),
            bucket,
            prefix,
            since: self.since.clone(),
            kind: self.kind.as_deref().and_then(|k| match k {
                "gone" => Some(ChangeKind::Deleted),
                k => ChangeKind::parse(k),
            }),
            limit: self.limit,
            count: self.count,
            format: self.output.format(),
            table: self.output.style(),
        })
    }
}

impl StatusArgs {
    pub fn options(&self) -> StatusOptions {
        StatusOptions {
            db: self.db.db.clone(),
            format: match (self.json, self.format) {
                (true, _) | (_, DocFormatArg::Json) => output::DocFormat::Json,
                (false, DocFormatArg::Table) => output::DocFormat::Table,
            },
            errors: self.errors,
            last: self.last,
        }
    }
}

impl ForgetArgs {
    pub fn options(&self) -> ForgetOptions {
        ForgetOptions {
            db: self.db.db.clone(),
            url: self.url.clone(),
            prune_changes_before: self.prune_changes_before.clone(),
            vacuum: self.vacuum,
        }
    }
}

impl ConnectionArgs {
    /// The client options these flags ask for.
    pub fn options(&self) -> Result<ClientOptions, Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18: every option of every subcommand says what it does.
    #[test]
    fn every_option_has_a_description() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let mut missing = Vec::new();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && id != "help" && id != "version" {
                    missing.push(format!("{} {id}", sub.get_name()));
                }
            }
        }
        assert_eq!(missing, Vec::<String>::new());
    }

    /// Issue 13: clap's paragraphs become at most two lines.
    #[test]
    fn usage_errors_fold_into_two_lines() {
        let rendered = "error: the following required arguments were not provided:\n  <S3_URL>\n\n  tip: try this\n\nUsage: s3meta scan <S3_URL>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_lines(rendered),
            "error: the following required arguments were not provided: <S3_URL> (tip: try this)\nUsage: s3meta scan <S3_URL>\n"
        );
        assert_eq!(
            usage_lines("error: invalid value 'x'\n\nFor more information, try '--help'.\n"),
            "error: invalid value 'x'\nFor more information, try '--help'.\n"
        );
        let parsed = Cli::try_parse_from(["s3meta", "scan", "s3://b", "--timeout", "1e308"]);
        let text = usage_error(&parsed.unwrap_err());
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("at most 3600"), "{text}");
    }
}
