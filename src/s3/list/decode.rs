//! From a ListObjectsV2 answer to the page the lister hands on: keys decoded, ETags without
//! quotes, times in the database's one convention.
//!
//! Receives: a page the fast path parsed (`xml::RawPage`) or, when it declined, the SDK's
//! output. Sends on: the `Page` of listed objects. Invariant: both paths end in `decode_keys`,
//! so a key is decoded one way whichever parser read it.

use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::types::EncodingType;

use super::{Page, xml};
use crate::model::{ListedObject, strip_quotes, timefmt};

/// A page the SDK deserialized (the fast path declined its body).
pub(super) fn decode_page(out: ListObjectsV2Output) -> Result<Page, String> {
    let entries = out
        .contents()
        .iter()
        .map(|o| {
            Ok(ListedObject {
                key: o
                    .key()
                    .ok_or("the store listed an object without a key")?
                    .to_string(),
                etag: o.e_tag().map(strip_quotes),
                size: o.size(),
                last_modified: o.last_modified().map(timefmt::from_smithy),
                storage_class: o.storage_class().map(|s| s.as_str().to_string()),
                version: None,
            })
        })
        .collect::<Result<_, String>>()?;
    decode_keys(xml::RawPage {
        entries,
        next_token: out.next_continuation_token().map(str::to_string),
        next_version: None,
        // Garage, SeaweedFS, moto and AWS always send it; without it a page cannot be told
        // from the last one.
        truncated: out
            .is_truncated()
            .ok_or("the store answered a ListObjectsV2 page without IsTruncated: s3meta cannot tell whether the listing goes on")?,
        url_encoded: out.encoding_type() == Some(&EncodingType::Url),
    })
}

/// The page with its keys decoded, whichever path parsed it.
pub(super) fn decode_keys(raw: xml::RawPage) -> Result<Page, String> {
    let mut entries = raw.entries;
    if raw.url_encoded {
        for e in &mut entries {
            e.key = url_decode_owned(std::mem::take(&mut e.key))
                .map_err(|raw| format!("the store listed an undecodable key {raw:?}"))?;
        }
    }
    Ok(Page {
        entries,
        next_token: raw.next_token,
        truncated: raw.truncated,
        from_start_after: false,
        partial: None,
    })
}

/// A ListObjectVersions page with its keys decoded; its token is the position after it (the
/// NextKeyMarker and NextVersionIdMarker pair, `VersionMarker`), and `partial` the key it
/// may end inside.
pub(super) fn decode_versions(raw: xml::RawPage) -> Result<Page, String> {
    let key_marker = match (&raw.next_token, raw.url_encoded) {
        (Some(k), true) => Some(
            url_decode(k)
                .ok_or_else(|| format!("the store sent an undecodable NextKeyMarker {k:?}"))?,
        ),
        (k, _) => k.clone(),
    };
    let version_marker = raw.next_version.clone();
    let mut page = decode_keys(raw)?;
    if !page.truncated {
        page.next_token = None;
        return Ok(page);
    }
    let Some(key) = key_marker else {
        return Err("a truncated ListObjectVersions page without a NextKeyMarker".into());
    };
    // The lister keeps it only if the page (in listing order) ends with that key.
    page.partial = version_marker.is_some().then(|| key.clone());
    page.next_token = Some(
        VersionMarker {
            key,
            version_id: version_marker,
        }
        .encode(),
    );
    Ok(page)
}

/// Where a ListObjectVersions listing goes on: after `version_id` of `key` (or, without
/// one, after the key), as a page's `NextKeyMarker` and `NextVersionIdMarker` said; kept in
/// a range's checkpoint as its token, a JSON pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMarker {
    pub key: String,
    pub version_id: Option<String>,
}

impl VersionMarker {
    pub fn encode(&self) -> String {
        serde_json::json!([self.key, self.version_id]).to_string()
    }

    pub fn decode(token: &str) -> Option<VersionMarker> {
        let (key, version_id): (String, Option<String>) = serde_json::from_str(token).ok()?;
        Some(VersionMarker { key, version_id })
    }
}

/// `url_decode` that keeps the key's allocation when it has nothing to decode; gives the key
/// back when it cannot be decoded.
fn url_decode_owned(key: String) -> Result<String, String> {
    if !key.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(key);
    }
    url_decode(&key).ok_or(key)
}

/// Decodes an `encoding-type=url` key: `%XX` escapes, and `+` for a space as S3 sends it.
pub fn url_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_decodes_keys() {
        assert_eq!(url_decode("a+b%2Bc%0A%F0%9F%8E%89").unwrap(), "a b+c\n🎉");
        assert_eq!(url_decode("plain/key").unwrap(), "plain/key");
        assert_eq!(url_decode("%zz"), None);
        assert_eq!(url_decode("%ff"), None);
    }

    #[test]
    fn strips_etag_quotes() {
        assert_eq!(strip_quotes("\"abc-2\""), "abc-2");
        assert_eq!(strip_quotes("abc"), "abc");
    }
}
