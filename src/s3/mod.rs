//! The store's layer: every request s3meta sends to S3, and nothing else.
//!
//! Receives: targets, keys and cursors from the pipeline (`scan`) and the readers that list
//! (`read::estimate`, the `plan` command). Sends on: decoded pages, HEAD outcomes, probe answers. Holds
//! the client (`client`: endpoint resolution and the store id), the one retry loop (`retry`)
//! with the adaptive HEAD limit (`limit`) and the rate cap (`rate`), one listing (`list`:
//! the XML fast path, the order a store lists in), the HEAD pool (`head`) over the lean HEAD
//! path (`wire`, signed with cached `credentials`) and split probes (`probe`). Invariant: it
//! never touches the database; what it learns goes out as values.

pub mod client;
pub(crate) mod credentials;
pub mod head;
pub(crate) mod limit;
pub mod list;
pub mod probe;
pub mod queue;
pub(crate) mod rate;
pub mod retry;
pub(crate) mod rfc2047;
pub mod tags;
pub mod upload;
pub mod wire;
