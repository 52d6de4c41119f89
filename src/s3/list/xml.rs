//! A fast path for ListObjectsV2 answers: the page body is parsed here, once, before the
//! SDK sees it.
//!
//! Receives: the body of a `200` ListObjectsV2 response, through an interceptor on the
//! request. Sends on: the page's fields to the lister (through a slot the request owns), and
//! an empty `<ListBucketResult>` to the SDK's own deserializer. Why: the SDK parses each body
//! twice (its check for an error inside a `200` walks the whole document) with a slow
//! tokenizer — two thirds of the client's CPU in an unchanged rescan, the listing-bound case.
//! Invariant: the fields s3meta reads (keys, ETag, size, Last-Modified, storage class, the
//! token, truncation, encoding) come out exactly as the SDK reads them, and anything the fast
//! path does not fully understand (CDATA, comments or elements inside a field, an empty field,
//! a carriage return, an entity other than XML's five and character references, a malformed
//! attribute, a body that is not UTF-8, a root other than `ListBucketResult`) leaves the body
//! untouched for the SDK. One difference, on purpose: fields s3meta does not use (`KeyCount`,
//! `Owner`, `RestoreStatus`, …) are not type-checked, so a store that garbles one of them gets
//! its page read where the SDK would have failed the whole listing.
//!
//! The SDK itself keeps only the text before a comment inside a field (`<Key>a<!---->b</Key>`
//! reads as `a`); no store is known to write one.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::date_time::{DateTime, Format};
use bytes::Bytes;
use http_body::{Body, Frame};
use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};

use crate::model::{ListedObject, ListedVersion, strip_quotes, timefmt};

/// Why a listing body is refused before any parser reads it.
const INCOMPLETE: &str = "the ListObjectsV2 answer is not a complete XML document (its root element is not closed): cut short on the way";

/// What the SDK deserializes instead of a page the fast path has taken.
const TAKEN: &[u8] = b"<ListBucketResult></ListBucketResult>";
/// The same for a ListObjectVersions page.
const TAKEN_VERSIONS: &[u8] = b"<ListVersionsResult></ListVersionsResult>";

/// One page as the store sent it: keys still URL-encoded when `url_encoded`.
#[derive(Debug, Default)]
pub(super) struct RawPage {
    pub entries: Vec<ListedObject>,
    /// ListObjectsV2's NextContinuationToken; ListObjectVersions' NextKeyMarker (URL-encoded
    /// as the keys).
    pub next_token: Option<String>,
    /// ListObjectVersions' NextVersionIdMarker.
    pub next_version: Option<String>,
    pub truncated: bool,
    /// `EncodingType` was `url`.
    pub url_encoded: bool,
}

/// Where a request's page lands when the fast path takes it.
pub(super) type Slot = Arc<Mutex<Option<RawPage>>>;

/// The interceptor one ListObjectsV2 request carries.
#[derive(Debug, Default)]
pub(super) struct Skim {
    slot: Slot,
    /// A ListObjectVersions request (`parse_versions`).
    versions: bool,
}

impl Skim {
    /// For a ListObjectVersions request.
    pub fn versions() -> Skim {
        Skim {
            versions: true,
            ..Skim::default()
        }
    }

    pub fn slot(&self) -> Slot {
        self.slot.clone()
    }
}

impl Intercept for Skim {
    fn name(&self) -> &'static str {
        "s3meta-list-fast-path"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        if response.status().as_u16() != 200 {
            return Ok(());
        }
        let inner = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() = SdkBody::from_body_1_x(SkimBody {
            inner,
            buf: Vec::new(),
            slot: self.slot.clone(),
            versions: self.versions,
            finished: false,
        });
        Ok(())
    }
}

/// Collects the response body; at its end, parses it and yields either `TAKEN` or, when the
/// fast path declines, the body unchanged.
struct SkimBody {
    inner: SdkBody,
    buf: Vec<u8>,
    slot: Slot,
    versions: bool,
    finished: bool,
}

impl Body for SkimBody {
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        while !this.finished {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers carry nothing the listing needs.
                    if let Ok(data) = frame.into_data() {
                        this.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.finished = true;
                    let body = std::mem::take(&mut this.buf);
                    let (parsed, taken) = if this.versions {
                        (parse_versions(&body), TAKEN_VERSIONS)
                    } else {
                        (parse(&body), TAKEN)
                    };
                    let out = match parsed {
                        Some(page) => {
                            *this.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(page);
                            Bytes::from_static(taken)
                        }
                        // The SDK's reader takes a document cut short for a shorter page (a
                        // proxy that cut bodies with a matching Content-Length made pages lose
                        // keys, issue 12): a body error is retried like a dropped connection.
                        None if !is_complete(&body) => {
                            return Poll::Ready(Some(Err(INCOMPLETE.into())));
                        }
                        None => Bytes::from(body),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
        Poll::Ready(None)
    }
}

/// The page in a ListObjectsV2 body, or `None` to leave the body to the SDK.
pub(super) fn parse(body: &[u8]) -> Option<RawPage> {
    document(body, b"ListBucketResult", known_top, |r, name, page| {
        match name {
            b"Contents" => page.entries.push(object(r)?),
            b"NextContinuationToken" => page.next_token = Some(text(r)?.into_owned()),
            _ => return Some(false),
        }
        Some(true)
    })
}

/// The page in a ListObjectVersions body — versions and delete markers in the order sent
/// (the SDK's output keeps them in two lists, losing it) — or `None` when the body holds
/// anything the fast path does not read (`parse`).
pub(super) fn parse_versions(body: &[u8]) -> Option<RawPage> {
    let known = |name: &[u8]| {
        matches!(
            name,
            b"Version"
                | b"DeleteMarker"
                | b"IsTruncated"
                | b"NextKeyMarker"
                | b"NextVersionIdMarker"
                | b"EncodingType"
        )
    };
    document(body, b"ListVersionsResult", known, |r, name, page| {
        match name {
            b"Version" | b"DeleteMarker" => {
                let mut o = object(r)?;
                let v = o.version.as_mut()?;
                v.delete_marker = name == b"DeleteMarker";
                page.entries.push(o);
            }
            b"NextKeyMarker" => page.next_token = Some(text(r)?.into_owned()),
            b"NextVersionIdMarker" => page.next_version = Some(text(r)?.into_owned()),
            _ => return Some(false),
        }
        Some(true)
    })
}

/// Walks a listing document whose root is `root`: `field` reads the top-level elements it
/// knows (`Some(false)`: skip it), this the truncation and encoding; `known` names the
/// top-level elements that must not come empty.
fn document(
    body: &[u8],
    root: &[u8],
    known: fn(&[u8]) -> bool,
    mut field: impl FnMut(&mut Reader<&[u8]>, &[u8], &mut RawPage) -> Option<bool>,
) -> Option<RawPage> {
    // The SDK reads the body as one `str`.
    std::str::from_utf8(body).ok()?;
    let mut r = Reader::from_reader(body);
    let mut first = true;
    loop {
        match r.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == root => {
                attributes_ok(&e)?;
                break;
            }
            // A declaration comes first or not at all.
            Event::Decl(_) if first => {}
            Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
            _ => return None,
        }
        first = false;
    }
    let mut page = RawPage::default();
    // A page without IsTruncated goes to the SDK, whose reading the lister refuses.
    let mut truncated = None;
    loop {
        match r.read_event().ok()? {
            Event::Start(e) => match attributes_ok(&e)?.local_name().as_ref() {
                b"IsTruncated" => {
                    truncated = match &*text(&mut r)? {
                        "true" => Some(true),
                        "false" => Some(false),
                        _ => return None,
                    }
                }
                b"EncodingType" => page.url_encoded = text(&mut r)? == "url",
                name => {
                    if !field(&mut r, name, &mut page)? {
                        skip(&mut r)?
                    }
                }
            },
            Event::Empty(e) if known(e.local_name().as_ref()) => return None,
            Event::Empty(e) => drop(attributes_ok(&e)?),
            Event::Text(_) | Event::Comment(_) => {}
            Event::GeneralRef(g) => drop(entity(&g)?),
            Event::End(_) => break,
            _ => return None,
        }
    }
    page.truncated = truncated?;
    // Nothing but whitespace, comments and instructions may follow the root.
    loop {
        match r.read_event().ok()? {
            Event::Eof => return Some(page),
            Event::Comment(_) | Event::PI(_) => {}
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
            _ => return None,
        }
    }
}

/// Whether `body` is one whole XML document: its root element closed, and nothing after it
/// but whitespace, comments and processing instructions.
pub(super) fn is_complete(body: &[u8]) -> bool {
    let mut r = Reader::from_reader(body);
    let (mut depth, mut closed) = (0u32, false);
    loop {
        match r.read_event() {
            Err(_) => return false,
            Ok(Event::Eof) => return closed,
            Ok(Event::Start(_) | Event::End(_) | Event::Empty(_)) if closed => return false,
            Ok(Event::Text(t)) if closed && !t.iter().all(u8::is_ascii_whitespace) => {
                return false;
            }
            Ok(Event::Start(_)) => depth += 1,
            Ok(Event::End(_)) => {
                depth = depth.saturating_sub(1);
                closed = depth == 0;
            }
            Ok(Event::Empty(_)) if depth == 0 => closed = true,
            Ok(_) => {}
        }
    }
}

/// The element whose start was just read, skipped to its end; `None` (leave the body to the
/// SDK) for what the SDK would refuse to tokenize there.
fn skip(r: &mut Reader<&[u8]>) -> Option<()> {
    let mut depth = 0u32;
    loop {
        match r.read_event().ok()? {
            Event::Start(e) => {
                attributes_ok(&e)?;
                depth += 1;
            }
            Event::End(_) if depth == 0 => return Some(()),
            Event::End(_) => depth -= 1,
            Event::Empty(e) => drop(attributes_ok(&e)?),
            Event::GeneralRef(g) => drop(entity(&g)?),
            Event::Text(_) | Event::Comment(_) | Event::CData(_) | Event::PI(_) => {}
            _ => return None,
        }
    }
}

/// The element, if its attributes are well-formed.
fn attributes_ok<'e, 'a>(e: &'e BytesStart<'a>) -> Option<&'e BytesStart<'a>> {
    e.attributes().all(|a| a.is_ok()).then_some(e)
}

/// The character an entity or character reference stands for: XML's five predefined
/// entities only, as the SDK's reader.
pub(crate) fn entity(g: &BytesRef<'_>) -> Option<char> {
    match g.resolve_char_ref().ok()? {
        Some(c) => Some(c),
        None => match g.as_ref() {
            b"lt" => Some('<'),
            b"gt" => Some('>'),
            b"amp" => Some('&'),
            b"quot" => Some('"'),
            b"apos" => Some('\''),
            _ => None,
        },
    }
}

fn known_top(name: &[u8]) -> bool {
    matches!(
        name,
        b"Contents" | b"IsTruncated" | b"NextContinuationToken" | b"EncodingType"
    )
}

/// One `<Contents>` (or `<Version>`, `<DeleteMarker>`: with a `VersionId`) element, its
/// start already read; `None` without a key.
fn object(r: &mut Reader<&[u8]>) -> Option<ListedObject> {
    let mut key = None;
    let (mut version_id, mut is_latest) = (None, false);
    let mut o = ListedObject {
        key: String::new(),
        etag: None,
        size: None,
        last_modified: None,
        storage_class: None,
        version: None,
    };
    loop {
        match r.read_event().ok()? {
            Event::Start(e) => match attributes_ok(&e)?.local_name().as_ref() {
                b"Key" => key = Some(text(r)?.into_owned()),
                b"ETag" => o.etag = Some(strip_quotes(&text(r)?)),
                b"Size" => o.size = Some(text(r)?.parse().ok()?),
                b"LastModified" => {
                    let t = DateTime::from_str(&text(r)?, Format::DateTime).ok()?;
                    o.last_modified = Some(timefmt::from_smithy(&t));
                }
                b"StorageClass" => o.storage_class = Some(text(r)?.into_owned()),
                b"VersionId" => version_id = Some(text(r)?.into_owned()),
                b"IsLatest" => {
                    is_latest = match &*text(r)? {
                        "true" => true,
                        "false" => false,
                        _ => return None,
                    }
                }
                _ => skip(r)?,
            },
            Event::Empty(e)
                if matches!(
                    e.local_name().as_ref(),
                    b"Key"
                        | b"ETag"
                        | b"Size"
                        | b"LastModified"
                        | b"StorageClass"
                        | b"VersionId"
                        | b"IsLatest"
                ) =>
            {
                return None;
            }
            Event::Empty(e) => drop(attributes_ok(&e)?),
            Event::Text(_) | Event::Comment(_) => {}
            Event::GeneralRef(g) => drop(entity(&g)?),
            Event::End(_) => {
                o.key = key?;
                o.version = version_id.map(|version_id| ListedVersion {
                    version_id,
                    is_latest,
                    delete_marker: false,
                });
                return Some(o);
            }
            _ => return None,
        }
    }
}

/// A field's text, entities resolved, its start already read: borrowed from the body unless
/// it holds entities. `None` for anything but plain text and entity references, or an empty
/// field.
fn text<'a>(r: &mut Reader<&'a [u8]>) -> Option<Cow<'a, str>> {
    let mut s = Cow::Borrowed("");
    loop {
        match r.read_event().ok()? {
            Event::Text(t) => match t.into_inner() {
                Cow::Borrowed(b) if s.is_empty() => s = Cow::Borrowed(std::str::from_utf8(b).ok()?),
                b => s.to_mut().push_str(std::str::from_utf8(&b).ok()?),
            },
            Event::GeneralRef(g) => s.to_mut().push(entity(&g)?),
            Event::End(_) => break,
            _ => return None,
        }
    }
    // The SDK keeps carriage returns as sent; XML readers may normalize them.
    (!s.is_empty() && !s.contains('\r')).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix></Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated><Contents><Key>a%26b</Key><LastModified>2024-05-01T10:20:30.123Z</LastModified><ETag>&quot;0123abc&quot;</ETag><ChecksumAlgorithm>CRC32</ChecksumAlgorithm><Size>42</Size><Owner><ID>x</ID></Owner><StorageClass>STANDARD</StorageClass></Contents><Contents><Key>c&#x41;&#66;</Key><Size>0</Size></Contents><NextContinuationToken>tok&amp;en</NextContinuationToken><StartAfter/></ListBucketResult>
"#;

    #[test]
    fn parses_a_page() {
        let p = parse(PAGE.as_bytes()).unwrap();
        assert!(p.truncated && p.url_encoded);
        assert_eq!(p.next_token.as_deref(), Some("tok&en"));
        assert_eq!(
            p.entries,
            [
                ListedObject {
                    key: "a%26b".into(),
                    etag: Some("0123abc".into()),
                    size: Some(42),
                    last_modified: Some("2024-05-01T10:20:30.123Z".into()),
                    storage_class: Some("STANDARD".into()),
                    version: None,
                },
                ListedObject {
                    key: "cAB".into(),
                    etag: None,
                    size: Some(0),
                    last_modified: None,
                    storage_class: None,
                    version: None,
                }
            ]
        );
    }

    #[test]
    fn leaves_what_it_does_not_know_to_the_sdk() {
        for odd in [
            "<Key><![CDATA[a]]></Key>",
            "<Key>a<!-- c -->b</Key>",
            "<Key></Key>",
            "<Key/>",
            "<Key>a\r\nb</Key>",
            "<Key>&nbsp;</Key>",
            "<Key><b>a</b></Key>",
            "<Size>4x</Size>",
            "<LastModified>yesterday</LastModified>",
            "<Size>1</Size>",
        ] {
            let body = format!("<ListBucketResult><Contents>{odd}</Contents></ListBucketResult>");
            assert!(parse(body.as_bytes()).is_none(), "{odd}");
        }
        for odd in [
            "<ListBucketResult><Prefix>&nbsp;</Prefix></ListBucketResult>",
            "<ListBucketResult><Contents><Key>a</Key><Owner><ID>&x;</ID></Owner></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key a=b>a</Key></Contents></ListBucketResult>",
            "<ListBucketResult><Name x=1/></ListBucketResult>",
            " <?xml version=\"1.0\"?><ListBucketResult></ListBucketResult>",
            "<Error><Code>InternalError</Code></Error>",
            "<ListBucketResult><IsTruncated>yes</IsTruncated></ListBucketResult>",
            "<ListBucketResult><IsTruncated/></ListBucketResult>",
            "<ListBucketResult>",
            "<ListBucketResult></ListBucketResult><more/>",
            "",
        ] {
            assert!(parse(odd.as_bytes()).is_none(), "{odd}");
        }
        assert!(parse(b"<ListBucketResult><Name>\xff</Name></ListBucketResult>").is_none());
        let plain = parse(b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>")
            .unwrap();
        assert!(plain.entries.is_empty() && !plain.truncated && plain.next_token.is_none());
        // No IsTruncated: the SDK reads it, and the lister refuses what it read (decode.rs).
        assert!(parse(b"<ListBucketResult></ListBucketResult>").is_none());
    }

    /// Issue 12: a body cut anywhere is never taken for a whole page by either parser.
    #[test]
    fn a_cut_body_is_not_a_complete_document() {
        assert!(is_complete(PAGE.as_bytes()));
        assert!(is_complete(
            b"<?xml version=\"1.0\"?><a><b/></a> <!-- c -->\n"
        ));
        for at in 1..PAGE.trim_end().len() {
            let cut = &PAGE.as_bytes()[..at];
            assert!(
                !is_complete(cut),
                "cut at {at}: {:?}",
                String::from_utf8_lossy(cut)
            );
            assert!(parse(cut).is_none(), "cut at {at}");
        }
        assert!(!is_complete(b"<a></a><b/>"));
        assert!(!is_complete(b""));
    }
}
