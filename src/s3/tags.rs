//! Object tags: one GetObjectTagging request over the lean path (`wire`), and its answer.
//!
//! Receives: a key. Sends on: the object's tags sorted by key, `None` when the object is gone
//! (404), or the failure (a 403 without `s3:GetObjectTagging` among them). Invariant: a body
//! that is not a `<Tagging>` document is a failure naming the store's answer, never an empty
//! tag set: an object is never recorded as untagged on a misread.

use http::StatusCode;
use quick_xml::Reader;
use quick_xml::events::Event;

use crate::model::Failure;
use crate::s3::list::entity;
use crate::s3::wire::{HeadTarget, Versioned};

/// One GetObjectTagging attempt (`wide`: through the pool for answers with many headers).
pub async fn tags_once(
    target: &HeadTarget,
    key: Versioned<'_>,
    wide: bool,
) -> Result<Option<Vec<(String, String)>>, Failure> {
    let answer = target.get_tagging(key, wide).await?;
    match answer.status {
        StatusCode::OK => parse_tagging(&answer.body)
            .map(Some)
            .map_err(|why| Failure {
                retryable: false,
                ..Failure::transport(format!(
                    "the store's GetObjectTagging answer cannot be read: {why}"
                ))
            }),
        StatusCode::NOT_FOUND if error_code(&answer.body).as_deref() != Some("NoSuchBucket") => {
            Ok(None)
        }
        status => {
            let code = error_code(&answer.body);
            let message = error_message(&answer.body)
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
            Err(Failure::from_status(status.as_u16(), code, message))
        }
    }
}

/// `<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag>…</TagSet></Tagging>`, sorted by key.
pub fn parse_tagging(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut r = Reader::from_reader(body);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut tags = Vec::new();
    let (mut key, mut value): (Option<String>, Option<String>) = (None, None);
    let mut root_seen = false;
    loop {
        match r.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_vec();
                if path.is_empty() {
                    if name != b"Tagging" {
                        return Err(format!(
                            "its root is <{}>, not <Tagging>",
                            String::from_utf8_lossy(&name)
                        ));
                    }
                    root_seen = true;
                }
                if name == b"Tag" {
                    (key, value) = (None, None);
                }
                path.push(name);
            }
            Event::Empty(e) => {
                // `<Value/>`: an empty value.
                let name = e.local_name().as_ref().to_vec();
                if path.last().map(Vec::as_slice) == Some(b"Tag") {
                    match name.as_slice() {
                        b"Value" => value = Some(String::new()),
                        b"Key" => key = Some(String::new()),
                        _ => {}
                    }
                } else if path.is_empty() && name == b"Tagging" {
                    root_seen = true;
                }
            }
            Event::Text(t) => {
                let text = std::str::from_utf8(&t).map_err(|_| "a tag is not UTF-8".to_string())?;
                push_text(&path, &mut key, &mut value, text);
            }
            Event::GeneralRef(g) => {
                let c = entity(&g)
                    .ok_or_else(|| format!("unknown entity &{};", String::from_utf8_lossy(&g)))?;
                push_text(&path, &mut key, &mut value, c.encode_utf8(&mut [0; 4]));
            }
            Event::CData(t) => {
                let text = String::from_utf8(t.into_inner().into_owned())
                    .map_err(|_| "a tag is not UTF-8".to_string())?;
                push_text(&path, &mut key, &mut value, &text);
            }
            Event::End(_) if path.pop().as_deref() == Some(b"Tag") => {
                match (key.take(), value.take()) {
                    (Some(k), v) => tags.push((k, v.unwrap_or_default())),
                    (None, _) => return Err("a <Tag> has no <Key>".into()),
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen || !path.is_empty() {
        return Err("it is not a whole <Tagging> document".into());
    }
    tags.sort_unstable();
    Ok(tags)
}

fn push_text(path: &[Vec<u8>], key: &mut Option<String>, value: &mut Option<String>, text: &str) {
    let n = path.len();
    if n < 2 || path[n - 2] != b"Tag" {
        return;
    }
    let slot = match path[n - 1].as_slice() {
        b"Key" => key,
        b"Value" => value,
        _ => return,
    };
    slot.get_or_insert_with(String::new).push_str(text);
}

/// The `<Code>` of an S3 error document.
fn error_code(body: &[u8]) -> Option<String> {
    element(body, b"Code")
}

fn error_message(body: &[u8]) -> Option<String> {
    element(body, b"Message")
}

/// The text of the first `<name>` directly under `<Error>`.
fn element(body: &[u8], name: &[u8]) -> Option<String> {
    let mut r = Reader::from_reader(body);
    let mut depth = 0;
    let mut inside = false;
    loop {
        match r.read_event().ok()? {
            Event::Start(e) => {
                depth += 1;
                inside = depth == 2 && e.local_name().as_ref() == name;
            }
            Event::Text(t) if inside => {
                let text = std::str::from_utf8(&t).ok()?.trim().to_string();
                return (!text.is_empty()).then_some(text);
            }
            Event::End(_) => {
                depth -= 1;
                inside = false;
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tag_set_sorted_with_entities_and_empty_values() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Tagging xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><TagSet>
  <Tag><Key>team</Key><Value>a &amp; b</Value></Tag>
  <Tag><Key>empty</Key><Value></Value></Tag>
  <Tag><Key>blank</Key><Value/></Tag>
  <Tag><Key>caf&#233;</Key><Value>x</Value></Tag>
</TagSet></Tagging>"#;
        assert_eq!(
            parse_tagging(body).unwrap(),
            vec![
                ("blank".into(), "".into()),
                ("café".into(), "x".into()),
                ("empty".into(), "".into()),
                ("team".into(), "a & b".into()),
            ]
        );
    }

    #[test]
    fn an_empty_tag_set_is_no_tags_and_anything_else_is_an_error() {
        assert!(
            parse_tagging(b"<Tagging><TagSet/></Tagging>")
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_tagging(b"<Tagging><TagSet></TagSet></Tagging>")
                .unwrap()
                .is_empty()
        );
        assert!(parse_tagging(b"").is_err());
        assert!(parse_tagging(b"<Error><Code>AccessDenied</Code></Error>").is_err());
        assert!(parse_tagging(b"<Tagging><TagSet><Tag><Key>a</Key>").is_err());
        assert!(
            parse_tagging(b"<Tagging><TagSet><Tag><Value>v</Value></Tag></TagSet></Tagging>")
                .is_err()
        );
    }

    #[test]
    fn error_documents_give_their_code_and_message() {
        let body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert_eq!(error_code(body).as_deref(), Some("AccessDenied"));
        assert_eq!(error_message(body).as_deref(), Some("Access Denied"));
        assert_eq!(error_code(b"").as_deref(), None);
    }
}
