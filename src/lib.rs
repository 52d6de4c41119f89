//! s3meta: index the custom metadata of S3 objects into SQLite, resumably.
//!
//! The scan pipeline, one module per stage: `lister` (ListObjectsV2 pages) → `writer` (the
//! single SQLite writer, committing each page with its checkpoint) → `head` (the bounded HEAD
//! pool) → `writer` again (HEAD results). `scan` wires them; `checkpoint` starts, resumes and
//! finishes scans; `db` opens and migrates; `retry` is the one retry loop; `canonical` defines
//! database equality for tests. Offline, `query` searches the index (`--where` filters,
//! read-only SQL, the output writers), `query::names` lists metadata names, `status` the scans.

#![forbid(unsafe_code)]

pub mod access;
pub mod canonical;
pub mod changes;
pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod client;
pub mod commands;
pub mod db;
pub mod error;
pub mod estimate;
pub mod forget;
pub mod head;
pub mod keyspace;
pub mod limit;
pub mod lister;
pub mod listing;
pub mod lock;
pub mod progress;
pub mod query;
pub mod ranges;
pub mod retry;
pub mod rfc2047;
pub mod s3url;
pub mod scan;
pub mod shard;
pub mod stats;
pub mod status;
pub mod summary;
pub mod timefmt;
pub mod writer;

pub use error::{Error, Result};
