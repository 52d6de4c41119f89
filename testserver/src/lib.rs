//! An in-memory S3 server with fault injection, for s3meta's tests, demo and benchmark.
//!
//! [`TestServer::start`] binds `127.0.0.1:0` and serves path-style S3 (CreateBucket,
//! HeadBucket, GetBucketLocation, PutObject, HeadObject, GetObject, ListObjectsV2,
//! DeleteObject, CopyObject, multipart uploads)
//! signed with [`ACCESS_KEY`]/[`SECRET_KEY`], plus an unsigned `GET /__admin/stats`.
//! Tests seed data, inject faults ([`Fault`], latency, slowdown, holds) and read request
//! counters through the shared [`State`], without HTTP.
//!
//! Over HTTP, bucket names are checked as AWS does (3–63 characters of `a-z0-9.-`, …;
//! otherwise 400 `InvalidBucketName`); `State` methods accept any name.
//!
//! Layers, outside in: `server` (TCP accept, shutdown) → `frontend` (counting and faults,
//! below S3 so it can drop or stall connections) → s3s (SigV4, HTTP↔S3 mapping) →
//! `backend` (the operations) → `store` and `listing` (data).
//! Invariant: every request that reaches the front end is counted before anything can
//! answer it, so counters and `wait_for_requests` see faulted requests too.

#![forbid(unsafe_code)]

mod admin;
mod backend;
mod control;
mod frontend;
mod listing;
mod multipart;
mod server;
mod sqs;
mod state;
mod store;
mod versions;

pub use admin::cpu_seconds;
pub use control::{Action, Fault, Gate, Op, STALL_CAP};
pub use server::TestServer;
pub use sqs::{QUEUE_PATH, form_encode};
pub use state::{Signature, State};
pub use store::{DEFAULT_CONTENT_TYPE, ObjectSpec};

/// Access key the server accepts.
pub const ACCESS_KEY: &str = "s3meta-test";
/// Secret key for [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "s3meta-test-secret";
/// Region clients should sign for (the server accepts any).
pub const REGION: &str = "us-east-1";
/// The region a 301 answer ([`Action::Status`]) says the bucket is in (`x-amz-bucket-region`).
pub const OTHER_REGION: &str = "eu-west-1";
