//! Versioned buckets: every version and delete marker of each key, and ListObjectVersions
//! pages over them.
//!
//! Receives: writes from `Store` (a put or a delete in a bucket with versioning enabled),
//! permanent deletes from tests (`State::delete_version`), and ListObjectVersions requests
//! from the frontend. Sends on: a version for HEAD and GetObjectTagging (`versionId`), and
//! pages of XML written here (s3s would write a page's versions and delete markers as two
//! lists; AWS interleaves them in key order, newest first, as here). Invariants: a key's
//! versions are kept oldest first, the last one is the key's current state (an object, or a
//! delete marker: the key is deleted); version ids are unique in the server's life.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::store::Obj;

/// One version of a key: an object, or a delete marker (`obj: None`).
#[derive(Clone, Debug)]
pub(crate) struct Version {
    pub id: String,
    pub obj: Option<Obj>,
    pub last_modified_ms: i64,
}

/// A bucket's versions by key, each key's oldest first.
pub(crate) type History = BTreeMap<Box<str>, Vec<Version>>;

/// One ListObjectVersions page: (key, version, is-latest) in listing order.
#[derive(Debug, Default)]
pub(crate) struct VersionsPage {
    pub entries: Vec<(String, Version, bool)>,
    pub truncated: bool,
}

/// The page after (`key_marker`, `version_marker`): without a version marker, the keys after
/// the key marker; with one, that key's versions older than it, then the next keys.
pub(crate) fn page(
    history: &History,
    prefix: &str,
    key_marker: Option<&str>,
    version_marker: Option<&str>,
    max_keys: usize,
    (lossy, by_path): (bool, bool),
) -> VersionsPage {
    let mut page = VersionsPage::default();
    // `State::set_lossy_version_pages`: a continued page drops the first key it reaches.
    let mut drop_next_key = lossy && key_marker.is_some();
    let lower = match (key_marker, version_marker) {
        (Some(k), Some(_)) => Bound::Included(k),
        (Some(k), None) => Bound::Excluded(k),
        (None, _) => Bound::Unbounded,
    };
    let lower = match lower {
        Bound::Included(k) if k < prefix => Bound::Included(prefix),
        Bound::Excluded(k) if k < prefix => Bound::Included(prefix),
        Bound::Unbounded => Bound::Included(prefix),
        other => other,
    };
    let keys: Vec<(&Box<str>, &Vec<Version>)> = if by_path {
        // `State::set_path_order`: the keys in path-component order, as SeaweedFS lists.
        let mut keys: Vec<_> = history
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| match lower {
                Bound::Included(m) => crate::listing::path_cmp(m, k).is_le(),
                Bound::Excluded(m) => crate::listing::path_cmp(m, k).is_lt(),
                Bound::Unbounded => true,
            })
            .collect();
        keys.sort_by(|a, b| crate::listing::path_cmp(&a.0[..], &b.0[..]));
        keys
    } else {
        history
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .collect()
    };
    for (key, versions) in keys {
        if drop_next_key && key_marker != Some(&**key) {
            drop_next_key = false;
            continue;
        }
        let newest_first = versions.iter().rev().enumerate();
        // Inside the marker's key: only the versions after (older than) the marker.
        let mut skipping = version_marker.is_some()
            && key_marker == Some(&**key)
            && versions
                .iter()
                .any(|v| Some(v.id.as_str()) == version_marker);
        for (i, v) in newest_first {
            if skipping {
                skipping = Some(v.id.as_str()) != version_marker;
                continue;
            }
            if page.entries.len() == max_keys {
                page.truncated = true;
                return page;
            }
            page.entries.push((key.to_string(), v.clone(), i == 0));
        }
    }
    page
}

/// A page as AWS writes it: `Version` and `DeleteMarker` elements interleaved in listing
/// order, keys (and the markers) URL-encoded when asked.
pub(crate) fn xml(page: &VersionsPage, bucket: &str, prefix: &str, url: bool) -> String {
    use std::fmt::Write as _;
    let enc = |s: &str| {
        if url {
            crate::listing::url_encode(s)
        } else {
            escape(s)
        }
    };
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListVersionsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    let _ = write!(
        out,
        "<Name>{}</Name><Prefix>{}</Prefix><IsTruncated>{}</IsTruncated>",
        escape(bucket),
        enc(prefix),
        page.truncated
    );
    if url {
        out.push_str("<EncodingType>url</EncodingType>");
    }
    if let (true, Some((key, v, _))) = (page.truncated, page.entries.last()) {
        let _ = write!(
            out,
            "<NextKeyMarker>{}</NextKeyMarker><NextVersionIdMarker>{}</NextVersionIdMarker>",
            enc(key),
            escape(&v.id)
        );
    }
    for (key, v, latest) in &page.entries {
        let when = time(v.last_modified_ms);
        match &v.obj {
            Some(obj) => {
                let _ = write!(
                    out,
                    "<Version><Key>{}</Key><VersionId>{}</VersionId><IsLatest>{latest}</IsLatest><LastModified>{when}</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size><StorageClass>{}</StorageClass></Version>",
                    enc(key),
                    escape(&v.id),
                    obj.etag(),
                    obj.size,
                    obj.storage_class()
                );
            }
            None => {
                let _ = write!(
                    out,
                    "<DeleteMarker><Key>{}</Key><VersionId>{}</VersionId><IsLatest>{latest}</IsLatest><LastModified>{when}</LastModified></DeleteMarker>",
                    enc(key),
                    escape(&v.id)
                );
            }
        }
    }
    out.push_str("</ListVersionsResult>");
    out
}

fn time(ms: i64) -> String {
    let mut buf = Vec::new();
    let _ = crate::backend::timestamp(ms).format(s3s::dto::TimestampFormat::DateTime, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
