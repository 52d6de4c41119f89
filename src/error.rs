//! The errors of s3meta's library, each carrying the context a person needs to act on it.
//!
//! Receives: failures from the S3 client, SQLite and the file system. Sends on: one `Error`
//! whose `Display` is the single line printed before exit code 1. Invariant: a cause is kept
//! as `#[source]`, never flattened into a string, so `-v` logs can show the whole chain.

use std::path::PathBuf;

/// Everything that stops a command. Per-object HEAD failures are *not* errors of this kind:
/// they are recorded in the database and the scan goes on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid S3 URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },

    #[error("invalid argument: {0}")]
    BadInput(String),

    #[error("{path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{path}: the disk is full: free some space, then run the same command to resume")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{path} is not an s3meta database ({detail}): pass another --db")]
    NotOurDatabase { path: PathBuf, detail: String },

    /// SQLite found damage inside a database it could open (issue 6): the file is ours, so
    /// "not an s3meta database" would mislead; nothing was written over the damage.
    #[error(
        "{path} is corrupted ({source}): restore it from a backup or scan into a new --db (`sqlite3 {path} .recover | sqlite3 new.db` may save its rows)"
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "{path} was written by a newer s3meta (schema version {found}, this build knows up to {known}): upgrade s3meta"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    #[error("database {path} does not exist: run `s3meta scan` first, or pass --db")]
    NoDatabase { path: PathBuf },

    #[error(
        "another s3meta process is writing to {path}: wait for it to finish, or use another --db"
    )]
    Locked { path: PathBuf },

    #[error(
        "{path} has {links} hard links: SQLite keeps a -wal file per path name, so two names of one database would corrupt it; remove the other names (`find / -xdev -samefile {path}`) or copy the file"
    )]
    HardLinks { path: PathBuf, links: u64 },

    #[error(
        "cannot open {path} for writing ({source}): scan, forget and merge need write access to the database file and its directory"
    )]
    OpenDb {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path} is locked by another SQLite connection: stop the program holding it (e.g. an open sqlite3 write), then retry"
    )]
    DbBusy {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "cannot read {path} ({source}): ask its owner (uid {owner}) to grant this user read access to it and to its -wal and -shm files (e.g. a shared group and chmod g+r)"
    )]
    Unreadable {
        path: PathBuf,
        owner: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path} is in WAL mode but {missing} is missing, and reading it as uid {uid} would create files its owner (uid {owner}) could not write: run any s3meta command on it once as uid {owner} (e.g. `s3meta status`; s3meta leaves those files in place for other readers), or read it as uid {owner}"
    )]
    ReaderWouldCreate {
        path: PathBuf,
        missing: PathBuf,
        uid: String,
        owner: String,
    },

    #[error(
        "{path} cannot be written by this user ({source}); another user's reader probably created it: give it to the database's owner (`chown --reference={db} {db}-wal {db}-shm`) and run again"
    )]
    CompanionNotWritable {
        path: PathBuf,
        db: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path} is damaged: {problems} problem(s), listed above: restore it from a backup or scan into a new --db (`sqlite3 {path} .recover | sqlite3 new.db` may save its rows)"
    )]
    Damaged { path: PathBuf, problems: u64 },

    #[error("cannot lock {path}: {source}")]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("bucket `{bucket}` does not exist at {store}: check the name or --endpoint-url")]
    NoSuchBucket { bucket: String, store: String },

    #[error(
        "access denied listing s3://{bucket}/{prefix} at {store} (HTTP {status}): check the credentials and the s3:ListBucket permission"
    )]
    ListDenied {
        bucket: String,
        prefix: String,
        store: String,
        status: u16,
    },

    #[error(
        "listing s3://{bucket}/{prefix} at {store} failed after {attempts} attempt(s): {detail}"
    )]
    ListFailed {
        bucket: String,
        prefix: String,
        store: String,
        attempts: u32,
        detail: String,
    },

    /// A versions scan's ListObjectVersions listing missed current objects that ListObjectsV2
    /// lists (SeaweedFS 4.48 loses keys when it pages versions).
    #[error(
        "s3://{bucket} at {store}: ListObjectVersions skipped {missing} key(s) that ListObjectsV2 lists (first: {first:?}), so its versions listing cannot be trusted; the versions recorded are kept, but the scan is not complete. A plain scan (without --all-versions) indexes every current object"
    )]
    VersionsIncomplete {
        bucket: String,
        store: String,
        missing: usize,
        first: String,
    },

    /// The store lists keys in an order s3meta cannot work with (issue 12).
    #[error("s3://{bucket} at {store} cannot be scanned safely: {detail}")]
    ListingOrder {
        bucket: String,
        store: String,
        detail: String,
    },

    /// Key ranges (of an unfinished scan, or a plan line) were cut in another order than the
    /// store lists in (issue 12).
    #[error(
        "s3://{bucket} at {store}: the key ranges of this scan were cut in {cut_in}, but the store lists in {lists_in}: run the same scan with --restart (its committed rows stay), or for a plan line make a new plan with `s3meta plan`"
    )]
    OrderChanged {
        bucket: String,
        store: String,
        cut_in: &'static str,
        lists_in: &'static str,
    },

    #[error(
        "{0}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pass --profile, or --no-sign-request for a public bucket"
    )]
    NoCredentials(String),

    #[error("S3 client setup failed: {0}")]
    ClientSetup(String),

    /// The event queue of `follow` answered with an error it will not get over by retrying.
    #[error(
        "SQS queue {url}: {detail}: check --sqs-queue-url, the credentials and the permissions sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes"
    )]
    Queue { url: String, detail: String },

    #[error(
        "--summary-json {path} cannot be written ({source}): fix the path or its permissions (nothing was scanned)"
    )]
    SummaryPath {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write the Parquet file {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// An upload to S3 (`export --out s3://…`) that failed; its multipart upload was aborted.
    #[error(
        "uploading s3://{bucket}/{key} to {store} failed: {detail}: check the credentials and the permissions s3:PutObject and s3:AbortMultipartUpload on the export prefix"
    )]
    Upload {
        bucket: String,
        key: String,
        store: String,
        detail: String,
    },

    #[error(transparent)]
    BadFilter(#[from] FilterError),

    /// SQLite's own message about a `--sql` statement, on one line. The rusqlite error is not
    /// kept as a source: all it adds is the statement text back (with its newlines) and the
    /// generic code, which would break the one-line contract of exit code 1.
    #[error("SQL error: {message}")]
    Sql { message: String },

    #[error(
        "--sql runs read-only statements, and this one would change the database: s3meta never modifies it from a query (use sqlite3 for that)"
    )]
    SqlWrites,

    /// Says which I/O error (a full disk prints "No space left on device").
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),

    /// A ListObjectsV2 page the store sent that cannot be read as one: keys out of order, a
    /// key that does not decode, a truncated page without a continuation token.
    #[error(
        "the store sent a listing s3meta cannot follow ({0}): nothing of that page was stored; please report the store and its version"
    )]
    BadListing(String),

    /// A stage of the scan stopped because the database writer had (whose own error says
    /// why; `scan::run` reports that one).
    #[error("the database writer stopped")]
    WriterGone,

    /// Ctrl-C or SIGTERM stopped a command that has nothing to commit (exit code 130).
    #[error("interrupted")]
    Interrupted,

    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Wraps a SQLite error with the database path, picking the variant a person can act on.
    pub fn db(path: impl Into<PathBuf>, source: rusqlite::Error) -> Error {
        use rusqlite::ErrorCode;
        let path = path.into();
        match source.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Error::DiskFull { path, source },
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
                Error::DbBusy { path, source }
            }
            Some(ErrorCode::NotADatabase) => Error::NotOurDatabase {
                path,
                detail: format!("{source}; it may be corrupted"),
            },
            Some(ErrorCode::DatabaseCorrupt) => Error::Corrupt { path, source },
            _ => Error::Db { path, source },
        }
    }

    /// Wraps an error from tokio-rusqlite's background thread.
    pub fn from_async_db(path: impl Into<PathBuf>, e: tokio_rusqlite::Error<Error>) -> Error {
        match e {
            tokio_rusqlite::Error::Error(inner) => inner,
            tokio_rusqlite::Error::Close((_, source)) => Error::db(path, source),
            other => Error::Internal(format!("database thread: {other}")),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `--where` forms, for messages and help.
pub const FILTER_FORMS: &str = "name=value, name!=value, name~glob (* and ?), name (has it), !name (lacks it), \
@key~glob, @size>N (also <, =, !=, >=, <=; N may end in KB, MB, GB, TB, KiB, MiB, GiB, TiB), \
@modified>2026-01-01 (also <, =, >=, <=), @etag=…, @storage_class=…, @content_type=…, \
@state=pending|ok|error|gone, @error, HEAD's headers (@sse=…, @checksum_algorithm=…, @lock_mode=…, \
@lock_retain_until>2027-01-01, @legal_hold=ON, @replication_status=…, @parts_count>1, @tagging_count>0, …), \
tag:NAME=value, tag:NAME!=value, tag:NAME~glob, tag:NAME, !tag:NAME";

/// A `--where` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --where `{expr}`: {reason}; accepted forms: {FILTER_FORMS}")]
pub struct FilterError {
    pub expr: String,
    pub reason: String,
}
