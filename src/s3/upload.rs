//! Uploads of `export --out s3://…`: local files as multipart uploads, then a small object
//! written last that names the run.
//!
//! Receives: the command's one client, a destination bucket and key, a local file. Sends on:
//! CreateMultipartUpload, UploadPart (one part of `part_size` bytes in memory at a time, each
//! attempt retried by s3meta's own retry loop), CompleteMultipartUpload — or, when anything
//! fails or the command is interrupted, AbortMultipartUpload, so no part is left billed.
//! Invariant: an object exists under its key only once its upload completed.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::model::Failure;
use crate::model::stats::Stats;
use crate::s3::client::S3;
use crate::s3::retry::{self, Outcome, Policy, Retrier};

/// The smallest part S3 takes (but the last), and the default.
pub const MIN_PART_SIZE: usize = 5 << 20;
pub const PART_SIZE: usize = 16 << 20;

/// Where and how uploads go.
pub struct Uploader<'a> {
    pub s3: &'a S3,
    pub bucket: String,
    pub part_size: usize,
    pub policy: Policy,
    /// Retries and throttled answers are counted here.
    pub stats: &'a Stats,
    pub cancel: &'a CancellationToken,
    /// Every attempt of every upload request.
    pub requests: AtomicU64,
}

impl Uploader<'_> {
    fn retrier(&self) -> Retrier<'_> {
        Retrier {
            policy: &self.policy,
            stats: self.stats,
            cancel: self.cancel,
            pace: None,
        }
    }

    fn failed(&self, key: &str, detail: String) -> Error {
        Error::Upload {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            store: self.s3.store.clone(),
            detail,
        }
    }

    fn outcome<T>(&self, key: &str, o: Outcome<T>) -> Result<T> {
        match o {
            Outcome::Ok(v) => Ok(v),
            Outcome::Cancelled => Err(Error::Interrupted),
            Outcome::Failed { failure, attempts } => Err(self.failed(
                key,
                format!("{} (after {attempts} attempt(s))", failure.message),
            )),
        }
    }

    /// Uploads `file` to `key` as one multipart upload (a single part when it is small).
    pub async fn upload_file(&self, file: &Path, key: &str) -> Result<u64> {
        let c = &self.s3.client;
        let requests = &self.requests;
        let created = retry::run(self.retrier(), requests, &key, &(), || async {
            c.create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| Failure::from_sdk(&e))
        })
        .await;
        let created = self.outcome(key, created)?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(self.failed(key, "CreateMultipartUpload answered no UploadId".into()));
        };
        match self.parts(file, key, &upload_id).await {
            Ok(n) => Ok(n),
            Err(e) => {
                // Best effort, and not cancellable: an abandoned upload keeps its parts billed.
                let _ = c
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    async fn parts(&self, file: &Path, key: &str, upload_id: &str) -> Result<u64> {
        let c = &self.s3.client;
        let requests = &self.requests;
        let io = |source| Error::Write {
            path: file.to_path_buf(),
            source,
        };
        let mut f = std::fs::File::open(file).map_err(io)?;
        let mut done = Vec::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; self.part_size];
        loop {
            let n = read_full(&mut f, &mut buf).map_err(io)?;
            if n == 0 && !done.is_empty() {
                break;
            }
            let number = done.len() as i32 + 1;
            let body = bytes::Bytes::copy_from_slice(&buf[..n]);
            let part = retry::run(self.retrier(), requests, &key, &(), || async {
                c.upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body.clone()))
                    .send()
                    .await
                    .map_err(|e| Failure::from_sdk(&e))
            })
            .await;
            let part = self.outcome(key, part)?;
            done.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
            total += n as u64;
            if n < buf.len() {
                break;
            }
        }
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(done))
            .build();
        let completed = retry::run(self.retrier(), requests, &key, &(), || async {
            c.complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(parts.clone())
                .send()
                .await
                .map_err(|e| Failure::from_sdk(&e))
        })
        .await;
        self.outcome(key, completed)?;
        Ok(total)
    }

    /// A small object in one PutObject (the `_SUCCESS` marker, the `LATEST` pointer).
    pub async fn put_small(&self, key: &str, body: &[u8], content_type: &str) -> Result<()> {
        let c = &self.s3.client;
        let body = bytes::Bytes::copy_from_slice(body);
        let put = retry::run(self.retrier(), &self.requests, &key, &(), || async {
            c.put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type)
                .body(ByteStream::from(body.clone()))
                .send()
                .await
                .map_err(|e| Failure::from_sdk(&e))
        })
        .await;
        self.outcome(key, put).map(|_| ())
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
