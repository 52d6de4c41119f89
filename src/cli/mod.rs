//! The command line.

mod args;
pub mod commands;
pub mod progress;
pub mod summary;

pub use args::*;
