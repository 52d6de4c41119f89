//! s3meta: index the custom metadata of S3 objects into SQLite, resumably.
//!
//! The scan pipeline, one module per stage: `lister` (ListObjectsV2 pages) → `writer` (the
//! single SQLite writer, committing each page with its checkpoint) → `head` (the bounded HEAD
//! pool) → `writer` again (HEAD results). `scan` wires them; `checkpoint` starts, resumes and
//! finishes scans; `db` opens and migrates; `retry` is the one retry loop; `canonical` defines
//! database equality for tests. Offline, `query` searches the index (`--where` filters,
//! read-only SQL, the output writers), `query::names` lists metadata names, `status` the scans.

#![forbid(unsafe_code)]

pub mod error;
pub mod keys;
pub mod model;
pub mod read;
pub mod s3;
pub mod scan;
pub mod store;

pub use error::{Error, Result};
