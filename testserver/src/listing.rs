//! ListObjectsV2 pages over a bucket: prefix, delimiter roll-up, start-after, max-keys, and
//! the opaque continuation token.
//!
//! Receives a bucket's key-ordered map and a [`ListRequest`]; returns one [`Page`].
//! Invariants: entries come out in UTF-8 byte order of keys (the `BTreeMap<Box<str>, _>`
//! order); a page holds at most `max_keys` entries *and* common prefixes together, as S3
//! counts them; a common prefix is reported once and the page resumes after every key under
//! it; a token encodes the epoch it was issued in, so `rotate_tokens` invalidates it.
//! `list_page_by_path` lists as SeaweedFS does instead: path-component order (`/` before every
//! other character), and a StartAfter that also skips the keys under `StartAfter/`.

use std::ops::Bound;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::store::{Bucket, Obj};

/// The S3 cap (and default) for `max-keys`.
pub(crate) const MAX_KEYS: usize = 1000;

/// One page's parameters, after the token was decoded.
#[derive(Debug)]
pub(crate) struct ListRequest<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Exclusive lower bound: the token's marker, else `start-after`.
    pub after: Option<&'a str>,
    pub max_keys: usize,
    /// `after` is a `start-after` (not a token's marker).
    pub start_after: bool,
}

/// What a listed object shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub key: String,
    pub size: u64,
    pub last_modified_ms: i64,
    pub etag: String,
    pub storage_class: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Page {
    pub entries: Vec<Entry>,
    pub common_prefixes: Vec<String>,
    /// More results follow; the next page starts after `last`.
    pub truncated: bool,
    /// The last key or common prefix on this page.
    pub last: Option<String>,
}

/// Computes one page. Cost: the returned items plus, for common prefixes whose delimiter
/// ends in `char::MAX`, the keys under them.
pub(crate) fn list_page(objects: &Bucket, req: &ListRequest<'_>) -> Page {
    let mut page = Page::default();
    if req.max_keys == 0 {
        return page;
    }
    let mut lower = start_bound(req);
    // Set after a common prefix that has no successor string: skip its keys one by one.
    let mut skip: Option<String> = None;
    'scan: loop {
        let range = (lower.as_ref().map(String::as_str), Bound::Unbounded);
        for (key, obj) in objects.range::<str, _>(range) {
            let key: &str = key;
            if !key.starts_with(req.prefix) {
                break 'scan;
            }
            if skip.as_deref().is_some_and(|s| key.starts_with(s)) {
                continue;
            }
            if page.entries.len() + page.common_prefixes.len() == req.max_keys {
                page.truncated = true;
                break 'scan;
            }
            let Some(cp) = common_prefix(key, req) else {
                page.entries.push(entry(key, obj));
                page.last = Some(key.to_owned());
                continue;
            };
            page.common_prefixes.push(cp.to_owned());
            page.last = Some(cp.to_owned());
            match successor(cp) {
                Some(next) => {
                    lower = Bound::Included(next);
                    continue 'scan;
                }
                None => skip = Some(cp.to_owned()),
            }
        }
        break;
    }
    page
}

/// One page in path-component order, as SeaweedFS lists (its namespace is a directory tree):
/// keys compare component by component, so `a/b` comes before `a!x`; StartAfter=S lists after
/// S *and its subtree* `S/…` (SeaweedFS skips the directory S), unless S ends with `/`; a
/// token resumes right after its marker. Delimiters are not rolled up. Cost: the prefix's
/// keys, sorted per page (test buckets only).
pub(crate) fn list_page_by_path(objects: &Bucket, req: &ListRequest<'_>) -> Page {
    let mut keys: Vec<(&str, &Obj)> = objects
        .range::<str, _>((Bound::Included(req.prefix), Bound::Unbounded))
        .map(|(k, o)| (&**k, o))
        .take_while(|(k, _)| k.starts_with(req.prefix))
        .collect();
    keys.sort_by(|a, b| path_cmp(a.0, b.0));
    let skipped = req
        .after
        .filter(|a| req.start_after && !a.ends_with('/'))
        .map(|a| format!("{a}/"));
    let mut page = Page::default();
    let listed = keys.into_iter().filter(|(k, _)| {
        req.after.is_none_or(|a| path_cmp(a, k).is_lt())
            && skipped.as_deref().is_none_or(|s| !k.starts_with(s))
    });
    for (key, obj) in listed {
        if page.entries.len() == req.max_keys {
            page.truncated = true;
            break;
        }
        page.entries.push(entry(key, obj));
        page.last = Some(key.to_owned());
    }
    page
}

/// Byte order with `/` below every other byte: path components compared one by one.
pub(crate) fn path_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let rank = |b: &u8| if *b == b'/' { 0 } else { u16::from(*b) + 1 };
    a.as_bytes()
        .iter()
        .map(rank)
        .cmp(b.as_bytes().iter().map(rank))
}

fn start_bound(req: &ListRequest<'_>) -> Bound<String> {
    let Some(after) = req.after.filter(|a| *a >= req.prefix) else {
        return Bound::Included(req.prefix.to_owned());
    };
    // A marker under a common prefix (a previous page's last item, or a start-after inside
    // a rolled-up group) resumes after the whole group: the group was already reported.
    if let Some(next) = common_prefix(after, req).and_then(successor) {
        return Bound::Included(next);
    }
    Bound::Excluded(after.to_owned())
}

/// The common prefix `key` rolls up into: up to and including the first delimiter after
/// the prefix.
fn common_prefix<'k>(key: &'k str, req: &ListRequest<'_>) -> Option<&'k str> {
    let delim = req.delimiter.filter(|d| !d.is_empty())?;
    let rest = key.strip_prefix(req.prefix)?;
    let at = rest.find(delim)?;
    Some(&key[..req.prefix.len() + at + delim.len()])
}

/// The least string greater than every string starting with `p` (`None` if `p` ends in
/// `char::MAX`). UTF-8 byte order is code point order, so bumping the last char works.
fn successor(p: &str) -> Option<String> {
    let last = p.chars().next_back()?;
    let next = match last {
        '\u{D7FF}' => '\u{E000}',
        c => char::from_u32(u32::from(c) + 1)?,
    };
    let mut out = p[..p.len() - last.len_utf8()].to_owned();
    out.push(next);
    Some(out)
}

fn entry(key: &str, obj: &Obj) -> Entry {
    Entry {
        key: key.to_owned(),
        size: obj.size,
        last_modified_ms: obj.last_modified_ms,
        etag: obj.etag().into_owned(),
        storage_class: obj.storage_class().to_owned(),
    }
}

/// A decoded continuation token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// `State`'s token epoch when issued.
    pub epoch: u64,
    /// 1-based number of the page that issued it.
    pub page: u32,
    /// Resume after this key or common prefix.
    pub marker: String,
}

const TOKEN_TAG: &str = "s3mt1";

impl Token {
    pub fn encode(&self) -> String {
        let raw = format!("{TOKEN_TAG}:{}:{}:{}", self.epoch, self.page, self.marker);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// `None` for anything this server did not issue.
    pub fn decode(token: &str) -> Option<Token> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        let mut parts = raw.splitn(4, ':');
        if parts.next()? != TOKEN_TAG {
            return None;
        }
        Some(Token {
            epoch: parts.next()?.parse().ok()?,
            page: parts.next()?.parse().ok()?,
            marker: parts.next()?.to_owned(),
        })
    }
}

/// Everything but unreserved characters and `/` is escaped, spaces as `%20`, so both
/// `unquote` and `unquote_plus` style decoders get the key back.
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// `encoding-type=url` form of a key or prefix.
pub(crate) fn url_encode(s: &str) -> String {
    utf8_percent_encode(s, URL_ENCODE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectSpec;

    fn bucket(keys: &[&str]) -> Bucket {
        keys.iter()
            .map(|k| (Box::from(*k), Obj::from_spec(ObjectSpec::default())))
            .collect()
    }

    fn req<'a>(prefix: &'a str, delim: Option<&'a str>, after: Option<&'a str>) -> ListRequest<'a> {
        ListRequest {
            prefix,
            delimiter: delim,
            after,
            max_keys: 1000,
            start_after: true,
        }
    }

    #[test]
    fn path_order_lists_like_seaweedfs() {
        let b = bucket(&[
            "ab", "a0", "a.c", "a-b", "a!x", "a/z", "a/c/d", "a/b", "a", "d06", "d06/s/1", "d07",
        ]);
        let all = list_page_by_path(&b, &req("", None, None));
        assert_eq!(
            keys(&all),
            [
                "a", "a/b", "a/c/d", "a/z", "a!x", "a-b", "a.c", "a0", "ab", "d06", "d06/s/1",
                "d07"
            ]
        );
        // StartAfter skips the directory; a trailing slash lists inside it; a token does not skip.
        assert_eq!(
            keys(&list_page_by_path(&b, &req("", None, Some("d06")))),
            ["d07"]
        );
        assert_eq!(
            keys(&list_page_by_path(&b, &req("", None, Some("d06/")))),
            ["d06/s/1", "d07"]
        );
        let mut token = req("", None, Some("d06"));
        token.start_after = false;
        assert_eq!(keys(&list_page_by_path(&b, &token)), ["d06/s/1", "d07"]);
        assert_eq!(
            keys(&list_page_by_path(&b, &req("a/", None, None))),
            ["a/b", "a/c/d", "a/z"]
        );
    }

    fn keys(p: &Page) -> Vec<&str> {
        p.entries.iter().map(|e| e.key.as_str()).collect()
    }

    fn prefixes(p: &Page) -> Vec<&str> {
        p.common_prefixes.iter().map(String::as_str).collect()
    }

    #[test]
    fn byte_order_prefix_and_start_after() {
        let b = bucket(&["b", "a/2", "a/1", "é", "z", "a/10", "\u{1F600}"]);
        let all = list_page(&b, &req("", None, None));
        assert_eq!(
            keys(&all),
            ["a/1", "a/10", "a/2", "b", "z", "é", "\u{1F600}"]
        );
        assert_eq!(
            keys(&list_page(&b, &req("a/", None, Some("a/1")))),
            ["a/10", "a/2"]
        );
        assert_eq!(keys(&list_page(&b, &req("a/", None, Some("0")))).len(), 3);
    }

    #[test]
    fn delimiter_rolls_up_and_pages_resume_after_groups() {
        let b = bucket(&["a/1", "a/2", "b", "c/x/1", "c/y", "d"]);
        let mut r = req("", Some("/"), None);
        r.max_keys = 2;
        let p1 = list_page(&b, &r);
        assert_eq!((keys(&p1), prefixes(&p1)), (vec!["b"], vec!["a/"]));
        assert!(p1.truncated);
        r.after = p1.last.as_deref();
        let p2 = list_page(&b, &r);
        assert_eq!((keys(&p2), prefixes(&p2)), (vec!["d"], vec!["c/"]));
        assert!(!p2.truncated);
        let nested = list_page(&b, &req("c/", Some("/"), None));
        assert_eq!(
            (keys(&nested), prefixes(&nested)),
            (vec!["c/y"], vec!["c/x/"])
        );
    }

    #[test]
    fn page_is_truncated_only_when_more_follow() {
        let b = bucket(&["a", "b"]);
        let mut r = req("", None, None);
        r.max_keys = 2;
        assert!(!list_page(&b, &r).truncated);
        r.max_keys = 1;
        assert!(list_page(&b, &r).truncated);
    }

    #[test]
    fn successor_handles_surrogate_gap_and_max() {
        assert_eq!(successor("a/").as_deref(), Some("a0"));
        assert_eq!(successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(successor("x\u{10FFFF}"), None);
    }

    #[test]
    fn delimiter_ending_in_char_max_falls_back_to_skipping() {
        let m = "\u{10FFFF}";
        let (k1, k2, k3) = (format!("a{m}1"), format!("a{m}2"), "b".to_owned());
        let b = bucket(&[&k1, &k2, &k3]);
        let p = list_page(&b, &req("", Some(m), None));
        assert_eq!(keys(&p), ["b"]);
        assert_eq!(p.common_prefixes, [format!("a{m}")]);
    }

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let t = Token {
            epoch: 3,
            page: 7,
            marker: "a:b\n\u{1F600}".into(),
        };
        assert_eq!(Token::decode(&t.encode()), Some(t));
        assert_eq!(Token::decode("bm90IGEgdG9rZW4"), None);
        assert_eq!(Token::decode("%%%"), None);
    }

    #[test]
    fn url_encoding_escapes_controls_and_spaces() {
        assert_eq!(url_encode("a b/c+d\n%é"), "a%20b/c%2Bd%0A%25%C3%A9");
    }
}
