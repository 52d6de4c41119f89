//! The readers: commands that answer from the index offline (`query`, `names`, `status`,
//! `changes`) or from a listing without HEADs (`estimate`).
//!
//! Receives: plain option structs (the binary builds them from its arguments) and a writer
//! for the output. Sends on: rows in one of the output formats (`output`: table, JSON, JSONL,
//! CSV). Invariant: a reader opens the database read-only and never changes it.

pub mod changes;
pub mod estimate;
pub mod export;
pub mod metrics;
pub mod names;
pub mod output;
pub mod query;
pub mod status;
pub mod unfinished;
