//! Talking to the store.

pub mod client;
pub mod head;
pub mod limit;
pub mod list;
pub mod probe;
pub mod retry;
pub mod rfc2047;
