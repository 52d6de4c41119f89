//! The shared vocabulary of every layer.

pub mod s3url;
pub mod stats;
pub mod timefmt;
