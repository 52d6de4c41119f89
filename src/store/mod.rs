//! The database.

pub mod access;
pub mod canonical;
pub mod check;
pub mod db;
pub mod forget;
pub mod lock;
pub mod merge;
pub mod scans;
pub mod writer;
