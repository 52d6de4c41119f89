//! The database's layer: the only code that opens SQLite for writing.
//!
//! Receives: messages of the pipeline (pages, splits, HEAD outcomes) for the single writer
//! (`writer`), and requests of the maintenance commands (`merge`, `forget`, `check`). Sends
//! on: scan plans and checkpoints (`scans`), owed HEADs, and read-only connections for the
//! readers (`db::open_ro`). Holds opening, migration and identity (`db`), the lock on each
//! database file (`lock`), access for other users (`access`), the canonical dump
//! (`canonical`) and the one conversion of SQLite values to JSON (`json`). Invariant: every
//! write runs in a transaction that leaves the database resumable.

pub(crate) mod access;
pub mod canonical;
pub mod check;
pub mod db;
pub mod forget;
pub(crate) mod json;
pub(crate) mod lock;
pub mod merge;
pub mod scans;
pub mod writer;

/// The `objects` columns of HEAD's further headers (schema 0003), in the order of
/// `writer::extra_values`; merge and the canonical dump carry them all.
pub const EXTRA_COLUMNS: [&str; 15] = [
    "sse",
    "sse_kms_key_id",
    "sse_bucket_key",
    "sse_customer_algorithm",
    "checksum_algorithm",
    "checksum",
    "checksum_type",
    "lock_mode",
    "lock_retain_until",
    "legal_hold",
    "replication_status",
    "restore",
    "archive_status",
    "website_redirect",
    "parts_count",
];

/// The `objects` columns of tags (schema 0003) that merge and the canonical dump carry
/// (`tags_scan` is a scan id: merge maps it, the dump says only whether it is set).
pub const TAG_COLUMNS: [&str; 2] = ["tagging_count", "tags_error"];
