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
