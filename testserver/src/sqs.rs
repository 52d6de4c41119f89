//! A minimal SQS queue, fed by the server's own S3 writes: the JSON protocol aws-sdk-sqs
//! speaks (`X-Amz-Target: AmazonSQS.*`) for ReceiveMessage, DeleteMessage,
//! DeleteMessageBatch, GetQueueAttributes and GetQueueUrl, on the S3 port.
//!
//! Receives: S3 writes from `store` (while notifications are on, [`crate::State::notify`]) and
//! raw bodies from tests. Sends on: S3 event notification messages as AWS writes them
//! (`Records`, keys form-encoded, a per-key `sequencer` unless turned off, as moto sends none).
//! Invariants: a message is delivered at least once: received messages are invisible for the
//! visibility timeout, then delivered again unless deleted with their latest receipt handle
//! (an older handle deletes nothing, as SQS may do); a long poll waits for a message or its
//! `WaitTimeSeconds`, no sleeping.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Notify;

/// The queue URL tests configure `follow` with (any path answers).
pub const QUEUE_PATH: &str = "/123456789012/s3meta-events";

/// One message in the queue.
struct Msg {
    id: String,
    body: String,
    /// The latest receipt handle, if received.
    receipt: Option<String>,
    visible_at: Instant,
    receives: u32,
}

struct Inner {
    messages: VecDeque<Msg>,
    next_id: u64,
    /// Buckets whose writes become messages, and whether they carry a sequencer.
    notifying: Vec<(String, bool)>,
    visibility: Duration,
    /// Every body ever sent, in order (for tests that re-send duplicates).
    sent: Vec<String>,
}

pub(crate) struct Sqs {
    inner: Mutex<Inner>,
    arrived: Notify,
}

impl Default for Sqs {
    fn default() -> Sqs {
        Sqs {
            inner: Mutex::new(Inner {
                messages: VecDeque::new(),
                next_id: 1,
                notifying: Vec::new(),
                visibility: Duration::from_secs(30),
                sent: Vec::new(),
            }),
            arrived: Notify::new(),
        }
    }
}

/// What happened to an object, as an event names it.
pub(crate) enum Change<'a> {
    Put { size: u64, etag: &'a str },
    Delete,
    DeleteMarker,
    Tagging,
}

impl Sqs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_notify(&self, bucket: &str, sequencer: Option<bool>) {
        let mut q = self.lock();
        q.notifying.retain(|(b, _)| b != bucket);
        if let Some(seq) = sequencer {
            q.notifying.push((bucket.to_string(), seq));
        }
    }

    pub(crate) fn set_visibility(&self, d: Duration) {
        self.lock().visibility = d;
    }

    /// Makes every received, undeleted message visible again now (as if its visibility
    /// timeout had passed).
    pub(crate) fn expire_visibility(&self) {
        let now = Instant::now();
        for m in self.lock().messages.iter_mut() {
            m.visible_at = now;
        }
        self.arrived.notify_waiters();
    }

    pub(crate) fn send_raw(&self, body: String) {
        let mut q = self.lock();
        let id = q.next_id;
        q.next_id += 1;
        q.sent.push(body.clone());
        q.messages.push_back(Msg {
            id: format!("m-{id:08}"),
            body,
            receipt: None,
            visible_at: Instant::now(),
            receives: 0,
        });
        drop(q);
        self.arrived.notify_waiters();
    }

    pub(crate) fn sent(&self) -> Vec<String> {
        self.lock().sent.clone()
    }

    /// Messages not deleted yet (visible or not).
    pub(crate) fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// Called by the store under its write lock, so sequencers follow the order of writes.
    pub(crate) fn record(&self, bucket: &str, key: &str, change: Change<'_>, seq: u64, ms: i64) {
        let with_seq = {
            let q = self.lock();
            match q.notifying.iter().find(|(b, _)| b == bucket) {
                Some((_, s)) => *s,
                None => return,
            }
        };
        let (name, mut object) = match change {
            Change::Put { size, etag } => (
                "ObjectCreated:Put",
                json!({"key": form_encode(key), "size": size, "eTag": etag}),
            ),
            Change::Delete => ("ObjectRemoved:Delete", json!({"key": form_encode(key)})),
            Change::DeleteMarker => (
                "ObjectRemoved:DeleteMarkerCreated",
                json!({"key": form_encode(key)}),
            ),
            Change::Tagging => ("ObjectTagging:Put", json!({"key": form_encode(key)})),
        };
        if with_seq {
            object["sequencer"] = Value::String(format!("{seq:016X}"));
        }
        let body = json!({"Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": crate::REGION,
            "eventTime": crate::backend::timestamp_text(ms),
            "eventName": name,
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                "object": object,
            }
        }]});
        self.send_raw(body.to_string());
    }

    /// Answers one `AmazonSQS.*` request: (status, JSON body).
    pub(crate) async fn respond(&self, target: &str, body: &[u8]) -> (u16, String) {
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match target {
            "ReceiveMessage" => {
                let max = req["MaxNumberOfMessages"]
                    .as_u64()
                    .unwrap_or(1)
                    .clamp(1, 10) as usize;
                let wait = req["WaitTimeSeconds"].as_u64().unwrap_or(0).min(20);
                let deadline = Instant::now() + Duration::from_secs(wait);
                loop {
                    // Registered before looking, so a message sent in between wakes it.
                    let arrived = self.arrived.notified();
                    let got = self.take(max);
                    if !got.is_empty() || Instant::now() >= deadline {
                        return (200, json!({"Messages": got}).to_string());
                    }
                    let next_visible = self.next_visible().unwrap_or(deadline).min(deadline);
                    let _ = tokio::time::timeout_at(next_visible.into(), arrived).await;
                }
            }
            "DeleteMessage" => {
                self.delete(req["ReceiptHandle"].as_str().unwrap_or_default());
                (200, "{}".into())
            }
            "DeleteMessageBatch" => {
                let mut ok = Vec::new();
                for e in req["Entries"].as_array().into_iter().flatten() {
                    self.delete(e["ReceiptHandle"].as_str().unwrap_or_default());
                    ok.push(json!({"Id": e["Id"]}));
                }
                (200, json!({"Successful": ok, "Failed": []}).to_string())
            }
            "GetQueueAttributes" => {
                let now = Instant::now();
                let q = self.lock();
                let visible = q.messages.iter().filter(|m| m.visible_at <= now).count();
                let hidden = q.messages.len() - visible;
                let attrs = json!({
                    "ApproximateNumberOfMessages": visible.to_string(),
                    "ApproximateNumberOfMessagesNotVisible": hidden.to_string(),
                });
                (200, json!({"Attributes": attrs}).to_string())
            }
            "GetQueueUrl" => (
                200,
                json!({"QueueUrl": format!("http://127.0.0.1{QUEUE_PATH}")}).to_string(),
            ),
            _ => (
                400,
                json!({"__type": "com.amazonaws.sqs#InvalidAction",
                       "message": format!("{target} is not supported by the test server")})
                .to_string(),
            ),
        }
    }

    fn take(&self, max: usize) -> Vec<Value> {
        let now = Instant::now();
        let mut q = self.lock();
        let visibility = q.visibility;
        let mut out = Vec::new();
        for m in q.messages.iter_mut() {
            if out.len() == max {
                break;
            }
            if m.visible_at > now {
                continue;
            }
            m.receives += 1;
            let receipt = format!("{}#{}", m.id, m.receives);
            m.receipt = Some(receipt.clone());
            m.visible_at = now + visibility;
            out.push(json!({
                "MessageId": m.id,
                "ReceiptHandle": receipt,
                "MD5OfBody": md5_hex(m.body.as_bytes()),
                "Body": m.body,
            }));
        }
        out
    }

    fn next_visible(&self) -> Option<Instant> {
        self.lock().messages.iter().map(|m| m.visible_at).min()
    }

    fn delete(&self, receipt: &str) {
        let mut q = self.lock();
        q.messages
            .retain(|m| m.receipt.as_deref() != Some(receipt) || receipt.is_empty());
    }
}

fn md5_hex(data: &[u8]) -> String {
    crate::store::md5_hex(data)
}

/// A key as S3 notifications carry it: form encoding (space as `+`), every byte but
/// unreserved ones and `/` percent-encoded.
pub fn form_encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
