//! Offline commands.

pub mod changes;
pub mod estimate;
pub mod names;
pub mod output;
pub mod query;
pub mod status;
