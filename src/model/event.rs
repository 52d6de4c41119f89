//! S3 event notifications as `follow` reads them: the JSON a store sends to a queue or a
//! webhook, in its three shapes, reduced to what the index needs.
//!
//! Receives: one message body (an SQS message, or a webhook POST). Sends on: the events it
//! carries (bucket, decoded key, kind, sequencer, event time), or why it is not an S3 event.
//! Invariants: a key is decoded exactly as S3 encodes it in notifications (form encoding:
//! `+` is a space, `%XX` a byte; the bytes must be UTF-8), and an event name that is not
//! known is an error, never a guess: the message is then left to the queue's redrive policy.

use std::cmp::Ordering;

use serde_json::Value;

/// What one event does to a current object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `ObjectCreated:*`, restores, storage-class transitions: the object as HEAD finds it.
    Created,
    /// `ObjectRemoved:*` (a delete marker too: the key has no current object), lifecycle
    /// expiry.
    Removed,
    /// `ObjectTagging:*`: the tags changed, nothing else.
    Tagging,
}

/// One event, its key decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Event {
    pub bucket: String,
    pub key: String,
    pub kind: EventKind,
    /// The event's name as sent (`ObjectCreated:Put`, `Object Deleted`, …).
    pub name: String,
    /// S3's per-key order of PUTs and DELETEs (hex), if the store sends one.
    pub sequencer: Option<String>,
    /// When the store says the event happened (RFC 3339), if it says.
    pub event_time: Option<String>,
}

/// What one message body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// S3 events (a `Records` array, SNS-wrapped or not, or one EventBridge event).
    Events(Vec<S3Event>),
    /// `s3:TestEvent` (sent when a notification is configured) or an event of a kind the
    /// index has nothing to do with (ACLs, replication): delete it, apply nothing.
    Ignored(String),
}

/// Parses one message body.
pub fn parse(body: &str) -> Result<Message, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    // SNS → SQS without raw delivery: the S3 message is the string `Message`.
    if v.get("Type").and_then(Value::as_str) == Some("Notification") {
        let inner = v
            .get("Message")
            .and_then(Value::as_str)
            .ok_or("an SNS notification without a Message string")?;
        return parse(inner);
    }
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Message::Ignored("s3:TestEvent".into()));
    }
    if let Some(records) = v.get("Records") {
        let records = records.as_array().ok_or("Records is not an array")?;
        let mut events = Vec::with_capacity(records.len());
        for r in records {
            if let Some(e) = record(r)? {
                events.push(e);
            }
        }
        if events.is_empty() {
            return Ok(Message::Ignored("no object events".into()));
        }
        return Ok(Message::Events(events));
    }
    if v.get("source").and_then(Value::as_str) == Some("aws.s3") {
        return eventbridge(&v);
    }
    Err("neither S3 event Records, an SNS notification nor an EventBridge S3 event".into())
}

/// One element of `Records`; `None` for a known event the index ignores.
fn record(r: &Value) -> Result<Option<S3Event>, String> {
    let name = str_at(r, &["eventName"]).ok_or("a record without eventName")?;
    // MinIO prefixes names with `s3:`.
    let short = name.strip_prefix("s3:").unwrap_or(name);
    let Some(kind) = kind_of(short)? else {
        return Ok(None);
    };
    let bucket = str_at(r, &["s3", "bucket", "name"]).ok_or("a record without s3.bucket.name")?;
    let raw = str_at(r, &["s3", "object", "key"]).ok_or("a record without s3.object.key")?;
    Ok(Some(S3Event {
        bucket: bucket.to_string(),
        key: decode_key(raw)?,
        kind,
        name: short.to_string(),
        sequencer: str_at(r, &["s3", "object", "sequencer"])
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        event_time: str_at(r, &["eventTime"])
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    }))
}

/// The kind an S3 notification event name means; `None` for names the index ignores.
fn kind_of(name: &str) -> Result<Option<EventKind>, String> {
    let (family, _) = name.split_once(':').unwrap_or((name, ""));
    Ok(match family {
        "ObjectCreated" | "ObjectRestore" | "LifecycleTransition" | "IntelligentTiering" => {
            Some(EventKind::Created)
        }
        "ObjectRemoved" | "LifecycleExpiration" => Some(EventKind::Removed),
        "ObjectTagging" => Some(EventKind::Tagging),
        "ObjectAcl" | "Replication" | "ReducedRedundancyLostObject" => None,
        _ => return Err(format!("unknown event name {name:?}")),
    })
}

/// One EventBridge event (`source: aws.s3`).
fn eventbridge(v: &Value) -> Result<Message, String> {
    let name = str_at(v, &["detail-type"]).ok_or("an EventBridge event without detail-type")?;
    let kind = match name {
        "Object Created"
        | "Object Restore Completed"
        | "Object Storage Class Changed"
        | "Object Access Tier Changed" => EventKind::Created,
        "Object Deleted" => EventKind::Removed,
        "Object Tags Added" | "Object Tags Deleted" => EventKind::Tagging,
        "Object ACL Updated" | "Object Restore Initiated" | "Object Restore Expired" => {
            return Ok(Message::Ignored(name.to_string()));
        }
        _ => return Err(format!("unknown EventBridge detail-type {name:?}")),
    };
    let bucket = str_at(v, &["detail", "bucket", "name"]).ok_or("no detail.bucket.name")?;
    let raw = str_at(v, &["detail", "object", "key"]).ok_or("no detail.object.key")?;
    Ok(Message::Events(vec![S3Event {
        bucket: bucket.to_string(),
        key: decode_key(raw)?,
        kind,
        name: name.to_string(),
        sequencer: str_at(v, &["detail", "object", "sequencer"]).map(str::to_string),
        event_time: str_at(v, &["time"]).map(str::to_string),
    }]))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// An object key as S3 notifications encode it: `application/x-www-form-urlencoded`
/// (`red flower.jpg` is `red+flower.jpg`), percent escapes of UTF-8 bytes.
pub fn decode_key(raw: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut it = raw.bytes();
    while let Some(b) = it.next() {
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = [it.next(), it.next()];
                let digit = |d: Option<u8>| d.and_then(|d| (d as char).to_digit(16));
                match (digit(hex[0]), digit(hex[1])) {
                    (Some(h), Some(l)) => bytes.push((h * 16 + l) as u8),
                    _ => return Err(format!("key {raw:?}: a % not followed by two hex digits")),
                }
            }
            _ => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("key {raw:?} does not decode to UTF-8"))
}

/// S3's order of two sequencers of one key: hex strings, the shorter zero-padded on the
/// right (as S3 documents), compared case-insensitively.
pub fn sequencer_cmp(a: &str, b: &str) -> Ordering {
    let n = a.len().max(b.len());
    let pad = |s: &str| {
        let mut s = s.to_ascii_uppercase();
        s.extend(std::iter::repeat_n('0', n - s.len()));
        s
    };
    pad(a).cmp(&pad(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(name: &str, key: &str, seq: Option<&str>) -> String {
        let mut object = serde_json::json!({"key": key, "size": 3, "eTag": "abc"});
        if let Some(s) = seq {
            object["sequencer"] = s.into();
        }
        serde_json::json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
            "eventTime": "2026-12-02T10:00:00.000Z",
            "s3": {"bucket": {"name": "bkt"}, "object": object}
        }]})
        .to_string()
    }

    fn one(body: &str) -> S3Event {
        match parse(body).unwrap() {
            Message::Events(mut e) if e.len() == 1 => e.remove(0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_decode_as_s3_encodes_them() {
        assert_eq!(decode_key("red+flower.jpg").unwrap(), "red flower.jpg");
        assert_eq!(decode_key("a%2Bb%2Fc%20d").unwrap(), "a+b/c d");
        assert_eq!(decode_key("caf%C3%A9/%F0%9F%98%80").unwrap(), "café/😀");
        assert!(decode_key("50%").is_err());
        assert!(decode_key("%zz").is_err());
        assert!(decode_key("%FF").is_err());
    }

    #[test]
    fn the_three_shapes_parse() {
        let plain = notification("ObjectCreated:Put", "dir/a+b", Some("0055AED6DCD90281E5"));
        let e = one(&plain);
        assert_eq!(
            (e.bucket.as_str(), e.key.as_str(), e.kind),
            ("bkt", "dir/a b", EventKind::Created)
        );
        assert_eq!(e.sequencer.as_deref(), Some("0055AED6DCD90281E5"));
        let sns = serde_json::json!({"Type": "Notification", "Message": plain}).to_string();
        assert_eq!(one(&sns), e);
        let eb = serde_json::json!({
            "version": "0", "detail-type": "Object Deleted", "source": "aws.s3",
            "time": "2026-12-02T10:00:00Z",
            "detail": {"bucket": {"name": "bkt"}, "object": {"key": "x%2By", "sequencer": "617f08299329d189"},
                       "reason": "DeleteObject", "deletion-type": "Permanently Deleted"}
        })
        .to_string();
        let e = one(&eb);
        assert_eq!((e.key.as_str(), e.kind), ("x+y", EventKind::Removed));
        let minio = notification("s3:ObjectRemoved:Delete", "k", None);
        assert_eq!(one(&minio).kind, EventKind::Removed);
        assert_eq!(
            one(&notification(
                "ObjectRemoved:DeleteMarkerCreated",
                "k",
                None
            ))
            .kind,
            EventKind::Removed
        );
        assert_eq!(
            one(&notification("ObjectTagging:Put", "k", None)).kind,
            EventKind::Tagging
        );
    }

    #[test]
    fn test_events_and_ignored_kinds_apply_nothing_and_unknown_ones_are_errors() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-02T10:00:00Z","Bucket":"bkt"}"#;
        assert!(matches!(parse(test), Ok(Message::Ignored(_))));
        assert!(matches!(
            parse(&notification("ObjectAcl:Put", "k", None)),
            Ok(Message::Ignored(_))
        ));
        assert!(parse(&notification("ObjectExploded:Boom", "k", None)).is_err());
        assert!(parse("{not json").is_err());
        assert!(parse(r#"{"hello": 1}"#).is_err());
        assert!(parse(&notification("ObjectCreated:Put", "bad%", None)).is_err());
    }

    #[test]
    fn sequencers_compare_as_s3_documents() {
        assert_eq!(sequencer_cmp("0A", "0B"), Ordering::Less);
        assert_eq!(sequencer_cmp("0A", "0A00"), Ordering::Equal);
        assert_eq!(sequencer_cmp("0A1", "0A"), Ordering::Greater);
        assert_eq!(sequencer_cmp("0a", "0A"), Ordering::Equal);
        assert_eq!(
            sequencer_cmp("0055AED6DCD90281E5", "0055AED6DCD90281E6"),
            Ordering::Less
        );
    }
}
