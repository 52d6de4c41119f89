//! Multipart uploads (CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
//! AbortMultipartUpload), kept in memory until completed or aborted.
//!
//! Receives: the backend's calls. Sends on: the completed object to the store, with S3's
//! multipart ETag (hex MD5 of the parts' binary MD5s, `-N`). Invariant: nothing is visible
//! under the key before CompleteMultipartUpload; an aborted or unknown upload id is
//! `NoSuchUpload`; parts are joined in the order the Complete request lists them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

/// One upload in progress.
struct Upload {
    bucket: String,
    key: String,
    content_type: Option<String>,
    parts: BTreeMap<i32, Bytes>,
}

/// The uploads in progress, and counters tests read.
#[derive(Default)]
pub(crate) struct Uploads {
    open: Mutex<BTreeMap<String, Upload>>,
    next: AtomicU64,
    completed: AtomicU64,
    aborted: AtomicU64,
}

/// Why a multipart call is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NoSuchUpload,
    /// A part the Complete request names was never uploaded, or its ETag differs.
    InvalidPart(i32),
    /// The Complete request lists no parts, or lists them out of order.
    InvalidPartOrder,
}

/// A completed upload: its body, ETag and content type.
pub(crate) struct Completed {
    pub body: Bytes,
    pub etag: String,
    pub content_type: Option<String>,
}

impl Uploads {
    pub fn create(&self, bucket: &str, key: &str, content_type: Option<String>) -> String {
        let id = format!("upload-{}", self.next.fetch_add(1, Ordering::SeqCst) + 1);
        let upload = Upload {
            bucket: bucket.to_string(),
            key: key.to_string(),
            content_type,
            parts: BTreeMap::new(),
        };
        self.open.lock().unwrap().insert(id.clone(), upload);
        id
    }

    /// Stores a part (replacing one of the same number); returns its ETag (hex MD5).
    pub fn part(
        &self,
        id: &str,
        bucket: &str,
        key: &str,
        n: i32,
        body: Bytes,
    ) -> Result<String, Refusal> {
        let mut open = self.open.lock().unwrap();
        let u = open
            .get_mut(id)
            .filter(|u| u.bucket == bucket && u.key == key)
            .ok_or(Refusal::NoSuchUpload)?;
        let etag = crate::store::md5_hex(&body);
        u.parts.insert(n, body);
        Ok(etag)
    }

    /// Joins the parts `listed` (number, ETag without quotes) and forgets the upload.
    pub fn complete(
        &self,
        id: &str,
        bucket: &str,
        key: &str,
        listed: &[(i32, Option<String>)],
    ) -> Result<Completed, Refusal> {
        let mut open = self.open.lock().unwrap();
        let u = open
            .get(id)
            .filter(|u| u.bucket == bucket && u.key == key)
            .ok_or(Refusal::NoSuchUpload)?;
        if listed.is_empty() || listed.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(Refusal::InvalidPartOrder);
        }
        let mut body = BytesMut::new();
        let mut digests = Vec::new();
        for (n, etag) in listed {
            let part = u.parts.get(n).ok_or(Refusal::InvalidPart(*n))?;
            let md5 = crate::store::md5_hex(part);
            if etag.as_deref().is_some_and(|e| e.trim_matches('"') != md5) {
                return Err(Refusal::InvalidPart(*n));
            }
            digests.extend_from_slice(&hex_bytes(&md5));
            body.extend_from_slice(part);
        }
        let etag = format!("{}-{}", crate::store::md5_hex(&digests), listed.len());
        let u = open.remove(id).expect("checked above");
        self.completed.fetch_add(1, Ordering::SeqCst);
        Ok(Completed {
            body: body.freeze(),
            etag,
            content_type: u.content_type,
        })
    }

    pub fn abort(&self, id: &str, bucket: &str, key: &str) -> Result<(), Refusal> {
        let mut open = self.open.lock().unwrap();
        match open.get(id) {
            Some(u) if u.bucket == bucket && u.key == key => {
                open.remove(id);
                self.aborted.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            _ => Err(Refusal::NoSuchUpload),
        }
    }

    /// (in progress, completed, aborted).
    pub fn counts(&self) -> (usize, u64, u64) {
        (
            self.open.lock().unwrap().len(),
            self.completed.load(Ordering::SeqCst),
            self.aborted.load(Ordering::SeqCst),
        )
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_join_in_order_with_s3s_etag() {
        let u = Uploads::default();
        let id = u.create("b", "k", None);
        let e2 = u
            .part(&id, "b", "k", 2, Bytes::from_static(b"world"))
            .unwrap();
        let e1 = u
            .part(&id, "b", "k", 1, Bytes::from_static(b"hello "))
            .unwrap();
        assert_eq!(
            u.part("nope", "b", "k", 1, Bytes::new()),
            Err(Refusal::NoSuchUpload)
        );
        let done = u
            .complete(
                &id,
                "b",
                "k",
                &[(1, Some(e1)), (2, Some(format!("\"{e2}\"")))],
            )
            .unwrap();
        assert_eq!(&done.body[..], b"hello world");
        assert!(done.etag.ends_with("-2"), "{}", done.etag);
        assert_eq!(u.counts(), (0, 1, 0));
        let id = u.create("b", "k", None);
        assert_eq!(
            u.complete(&id, "b", "k", &[]).err(),
            Some(Refusal::InvalidPartOrder)
        );
        u.abort(&id, "b", "k").unwrap();
        assert_eq!(u.abort(&id, "b", "k"), Err(Refusal::NoSuchUpload));
        assert_eq!(u.counts(), (0, 1, 1));
    }
}
