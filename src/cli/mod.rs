//! The command line (the binary's side; the library never sees clap or prints).
//!
//! Receives: parsed arguments. Sends on: plain option structs to the library, a progress
//! line and a summary to stderr, exit codes to `main`. Invariant: bad input is refused here
//! or by the library with one line, before anything is written.

mod args;
pub mod commands;
pub mod export;
pub mod metrics;
pub mod progress;
pub mod summary;
pub mod ui;
mod webhook;

pub use args::*;
