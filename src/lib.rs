//! s3meta: index the custom metadata of S3 objects into SQLite, resumably.
//!
//! The modules are layers; each uses only the ones below it (tests/layers.rs checks it):
//!
//! - `scan` (the pipeline: range scheduler, range listers and resume feeder, wired to the
//!   HEAD pool of `s3` and the single writer of `store`) and `read` (the offline readers and
//!   `estimate`);
//! - `s3` (every request to the store) and `store` (the only SQLite writer, checkpoints,
//!   merge, forget, check, canonical dump);
//! - `model` (the messages and states every layer names), `keys` (key order and ranges) and
//!   `error`.
//!
//! The binary (`main.rs`, `cli/`) turns arguments into the option structs of these modules,
//! prints, and maps results to exit codes.

#![forbid(unsafe_code)]

pub mod error;
pub mod keys;
pub mod model;
pub mod read;
pub mod s3;
pub mod scan;
pub mod store;

pub use error::{Error, Result};
