//! The hyper service in front of s3s: classifies each request, counts it, applies the
//! injected rules (slowdown, hold, latency, faults), then forwards it to s3s.
//!
//! Receives every HTTP request of a connection; sends on an HTTP response, or an error that
//! makes hyper close the connection (how `DropConnection` and `Stall` end).
//! Invariants: the request is counted before any rule runs and stays "in flight" until its
//! response is produced or hyper drops it; `/__admin/*` requests bypass counting and rules.
//! Rules run in a fixed order: slowdown limit, random slowdown, hold, latency, then the first
//! matching fault. Both slowdowns answer at once (no latency), as a store refusing work does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use percent_encoding::percent_decode_str;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};

use crate::backend::Backend;
use crate::control::{Action, Op, RequestInfo, STALL_CAP};
use crate::listing::Token;
use crate::state::State;
use crate::{ACCESS_KEY, OTHER_REGION, SECRET_KEY, admin};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// One per server; cloned into every connection.
#[derive(Clone)]
pub(crate) struct Frontend {
    s3: S3Service,
    state: Arc<State>,
}

/// What the rules decided for a request.
enum Verdict {
    Forward,
    Answer(Response<RespBody>),
    /// Close the connection without answering.
    Drop,
    /// Forward, then send the headers and half the body and close the connection.
    ForwardTruncated,
    /// Forward, then re-format the ListObjectsV2 XML (`Action::Restyle`) of this page.
    ForwardRestyled {
        page: u32,
    },
    /// Forward, then send half the body as if it were all of it (`Action::CutBody`).
    ForwardCut,
}

impl Frontend {
    pub fn new(state: Arc<State>) -> Frontend {
        let mut builder = S3ServiceBuilder::new(Backend {
            state: state.clone(),
        });
        // Without an auth provider s3s answers every signed request 501.
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        Frontend {
            s3: builder.build(),
            state,
        }
    }

    async fn handle(self, req: Request<Incoming>) -> Result<Response<RespBody>, BoxError> {
        if let Some(resp) = admin::respond(&self.state, &req) {
            return Ok(resp);
        }
        let info = classify(&req);
        self.state.note_signature(req.headers());
        let _in_flight = self.state.control.arrive(info.op);
        let mut resp = self.respond(&info, req).await?;
        if let Some(now) = self.state.frozen_clock() {
            let date = httpdate::fmt_http_date(now);
            if let Ok(v) = HeaderValue::from_str(&date) {
                resp.headers_mut().insert(header::DATE, v);
            }
        }
        Ok(resp)
    }

    async fn respond(
        &self,
        info: &RequestInfo,
        req: Request<Incoming>,
    ) -> Result<Response<RespBody>, BoxError> {
        match self.apply_rules(info, req.method() == Method::HEAD).await {
            // s3s would write a page's versions and its delete markers as two lists.
            Verdict::Forward if info.op == Op::ListVersions => Ok(self.list_versions(info, &req)),
            Verdict::Forward
                if matches!(info.op, Op::SqsReceive | Op::SqsDelete | Op::SqsOther) =>
            {
                self.sqs(req).await
            }
            Verdict::Forward => self.forward(req).await,
            Verdict::Answer(resp) => Ok(resp),
            Verdict::Drop => Err("injected fault: connection dropped".into()),
            Verdict::ForwardTruncated => Ok(truncate(self.forward(req).await?).await),
            Verdict::ForwardRestyled { page } => Ok(restyle(self.forward(req).await?, page).await),
            Verdict::ForwardCut => Ok(cut(self.forward(req).await?).await),
        }
    }

    async fn apply_rules(&self, info: &RequestInfo, head: bool) -> Verdict {
        let control = &self.state.control;
        if control.over_slowdown_limit(info.op) || control.random_slowdown(info.op) {
            return Verdict::Answer(error_response(503, info, head, true));
        }
        control.pass_hold(info.op).await;
        let latency = control.latency(info.op);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match control.take_fault(info) {
            None => Verdict::Forward,
            Some(Action::Status(code)) => {
                let bucket_exists = info
                    .bucket
                    .as_deref()
                    .is_some_and(|b| self.state.store.bucket_exists(b));
                Verdict::Answer(error_response(code, info, head, bucket_exists))
            }
            Some(Action::Delay(d)) => {
                tokio::time::sleep(d).await;
                Verdict::Forward
            }
            Some(Action::Stall) => {
                // Usually the client gives up first and hyper drops this future.
                tokio::time::sleep(STALL_CAP).await;
                Verdict::Drop
            }
            Some(Action::DropConnection) if info.op == Op::List => Verdict::ForwardTruncated,
            Some(Action::DropConnection) => Verdict::Drop,
            Some(Action::Restyle) if info.op == Op::List => {
                Verdict::ForwardRestyled { page: info.page }
            }
            Some(Action::Restyle) => Verdict::Forward,
            Some(Action::CutBody) => Verdict::ForwardCut,
            Some(Action::RefuseChecksumMode) => {
                Verdict::Answer(error_response(403, info, head, true))
            }
        }
    }

    /// A ListObjectVersions page, written here (`versions`).
    fn list_versions(&self, info: &RequestInfo, req: &Request<Incoming>) -> Response<RespBody> {
        let query = query_pairs(req.uri().query().unwrap_or_default());
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let bucket = info.bucket.as_deref().unwrap_or_default();
        let max_keys = param("max-keys")
            .and_then(|m| m.parse().ok())
            .unwrap_or(crate::listing::MAX_KEYS)
            .min(crate::listing::MAX_KEYS);
        let prefix = param("prefix").unwrap_or_default();
        let markers = (param("key-marker"), param("version-id-marker"));
        let url = param("encoding-type") == Some("url");
        match self.state.store.versions_page(
            bucket,
            prefix,
            markers,
            max_keys,
            (self.state.lossy_version_pages(), self.state.path_order()),
        ) {
            Err(_) => error_response(404, info, false, false),
            Ok(page) => {
                let xml = crate::versions::xml(&page, bucket, prefix, url);
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/xml")
                    .body(
                        Full::new(Bytes::from(xml))
                            .map_err(|never| match never {})
                            .boxed_unsync(),
                    )
                    .unwrap_or_default()
            }
        }
    }

    /// An SQS request (JSON protocol), answered by the server's queue (`sqs`).
    async fn sqs(&self, req: Request<Incoming>) -> Result<Response<RespBody>, BoxError> {
        let target = req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.strip_prefix("AmazonSQS."))
            .unwrap_or_default()
            .to_string();
        let body = req.into_body().collect().await?.to_bytes();
        let (status, json) = self.state.sqs.respond(&target, &body).await;
        Ok(Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/x-amz-json-1.0")
            .body(
                Full::new(Bytes::from(json))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap_or_default())
    }

    async fn forward(&self, req: Request<Incoming>) -> Result<Response<RespBody>, BoxError> {
        let resp = self.s3.call(req.map(s3s::Body::from)).await?;
        Ok(resp.map(|body| body.boxed_unsync()))
    }
}

impl hyper::service::Service<Request<Incoming>> for Frontend {
    type Response = Response<RespBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Box::pin(self.clone().handle(req))
    }
}

/// Query parameters that do not turn a bucket or object request into a sub-resource one.
const PLAIN_PARAMS: [&str; 12] = [
    "list-type",
    "prefix",
    "delimiter",
    "max-keys",
    "continuation-token",
    "start-after",
    "encoding-type",
    "fetch-owner",
    "marker",
    "x-id",
    "versionId",
    "partNumber",
];

fn is_plain_param(name: &str) -> bool {
    PLAIN_PARAMS.contains(&name) || name.starts_with("response-") || name.starts_with("X-Amz-")
}

/// Path-style classification: `/bucket` and `/bucket/key`, percent-decoded.
pub(crate) fn classify<B>(req: &Request<B>) -> RequestInfo {
    let path = req.uri().path().strip_prefix('/').unwrap_or_default();
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) => (b, Some(k).filter(|k| !k.is_empty())),
        None => (path, None),
    };
    let bucket = Some(bucket).filter(|b| !b.is_empty()).map(decode);
    let key = key.map(decode);
    let query = query_pairs(req.uri().query().unwrap_or_default());
    let sub = query.iter().any(|(k, _)| !is_plain_param(k));
    let tagging = query.iter().any(|(k, _)| k == "tagging");
    let versions = query.iter().any(|(k, _)| k == "versions");
    let upload_id = query.iter().any(|(k, _)| k == "uploadId");
    let uploads = query.iter().any(|(k, _)| k == "uploads");
    let sqs = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("AmazonSQS."));
    let op = match (req.method(), bucket.is_some(), key.is_some(), sub) {
        (&Method::POST, ..) if sqs.is_some() => match sqs {
            Some("ReceiveMessage") => Op::SqsReceive,
            Some("DeleteMessage" | "DeleteMessageBatch") => Op::SqsDelete,
            _ => Op::SqsOther,
        },
        (&Method::GET, true, true, true) if tagging => Op::GetTagging,
        (&Method::PUT, true, true, true) if upload_id => Op::UploadPart,
        (&Method::POST | &Method::DELETE, true, true, true) if upload_id || uploads => {
            Op::Multipart
        }
        (&Method::GET, true, false, true) if versions => Op::ListVersions,
        (&Method::GET, true, false, false) => Op::List,
        (&Method::HEAD, true, true, false) => Op::Head,
        (&Method::GET, true, true, false) => Op::Get,
        (&Method::PUT, true, true, false) if req.headers().contains_key("x-amz-copy-source") => {
            Op::Copy
        }
        (&Method::PUT, true, true, false) => Op::Put,
        (&Method::PUT, true, false, false) => Op::CreateBucket,
        (&Method::DELETE, true, true, false) => Op::Delete,
        _ => Op::Other,
    };
    let page = query
        .iter()
        .find(|(k, _)| k == "continuation-token")
        .and_then(|(_, v)| Token::decode(v))
        .map_or(1, |t| t.page.saturating_add(1));
    let checksum_mode = req
        .headers()
        .get("x-amz-checksum-mode")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"enabled"));
    RequestInfo {
        op,
        bucket,
        key,
        page,
        checksum_mode,
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
        })
        .collect()
}

/// An S3-style error answer for an injected status; HEAD answers carry no body, as AWS's.
fn error_response(
    status: u16,
    info: &RequestInfo,
    head: bool,
    bucket_exists: bool,
) -> Response<RespBody> {
    let (code, message) = match status {
        503 => ("SlowDown", "Please reduce your request rate."),
        500 => (
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        403 => ("AccessDenied", "Access Denied"),
        404 if info.op == Op::List || !bucket_exists => {
            ("NoSuchBucket", "The specified bucket does not exist")
        }
        404 => ("NoSuchKey", "The specified key does not exist."),
        400 => ("InvalidRequest", "Injected bad request."),
        301 => (
            "PermanentRedirect",
            "The bucket you are attempting to access must be addressed using the specified endpoint.",
        ),
        _ => ("InjectedFault", "Injected fault."),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let request_id = "s3meta-testserver-fault";
    let body = if head {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
             <Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
        )
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert("x-amz-request-id", HeaderValue::from_static(request_id));
    if status == StatusCode::MOVED_PERMANENTLY {
        // As AWS answers for a bucket in another region than the request was signed for.
        headers.insert(
            "x-amz-bucket-region",
            HeaderValue::from_static(OTHER_REGION),
        );
    }
    if !head {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
    }
    resp
}

/// A forwarded response's head and whole body (empty if the body failed).
async fn collected(resp: Response<RespBody>) -> (http::response::Parts, Bytes) {
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    (parts, bytes)
}

/// Keeps the status and headers (with the full `Content-Length`), sends half the body,
/// then fails the body so hyper closes the connection mid-response.
async fn truncate(resp: Response<RespBody>) -> Response<RespBody> {
    let (mut parts, bytes) = collected(resp).await;
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let half = bytes.slice(..bytes.len() / 2);
    let first = futures::stream::iter([Ok::<_, BoxError>(Frame::data(half))]);
    let fail = futures::stream::once(async {
        // One poll pending lets hyper flush the headers and the first half first.
        tokio::task::yield_now().await;
        Err::<Frame<Bytes>, BoxError>("injected fault: connection dropped mid-body".into())
    });
    Response::from_parts(parts, StreamBody::new(first.chain(fail)).boxed_unsync())
}

/// The first half of the body, with a `Content-Length` saying that is all of it.
async fn cut(resp: Response<RespBody>) -> Response<RespBody> {
    let (mut parts, bytes) = collected(resp).await;
    let half = bytes.slice(..bytes.len() / 2);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(half.len()));
    Response::from_parts(parts, full(half))
}

/// A ListObjectsV2 answer re-formatted by `restyled_listing` (other answers unchanged).
async fn restyle(resp: Response<RespBody>, page: u32) -> Response<RespBody> {
    let (mut parts, bytes) = collected(resp).await;
    let out = match std::str::from_utf8(&bytes) {
        Ok(xml) if parts.status == StatusCode::OK && xml.contains("<ListBucketResult") => {
            Bytes::from(restyled_listing(xml, page % 2 == 1))
        }
        _ => bytes,
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Response::from_parts(parts, full(out))
}

/// The listing XML as another store might write it (see `Action::Restyle`). Plain string
/// edits: s3meta asks for URL-encoded keys, so no text holds `<`.
fn restyled_listing(xml: &str, comment_in_key: bool) -> String {
    let mut xml = xml
        .replace("&quot;", "\"")
        .replace("<ETag>\"", "<ETag>&#34;")
        .replace("\"</ETag>", "&#34;</ETag>");
    // First instead of last (where s3s writes it).
    let encoding = "<EncodingType>url</EncodingType>";
    if let Some(at) = xml.find(encoding) {
        xml.replace_range(at..at + encoding.len(), "");
        if let Some(root) = xml.find("<ListBucketResult")
            && let Some(end) = xml[root..].find('>')
        {
            xml.insert_str(root + end + 1, &format!("\n{encoding}"));
        }
    }
    let mut xml = xml
        .replace("<Contents>", "\n  <Contents>\n    ")
        .replace("</Contents>", "\n  </Contents>");
    if comment_in_key && let Some(at) = xml.find("</Key>") {
        xml.insert_str(at, "<!-- restyled -->");
    }
    xml
}

/// A complete body.
pub(crate) fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restyles_a_listing() {
        let xml = "<?xml version=\"1.0\"?><ListBucketResult xmlns=\"x\">\
            <Contents><Key>a%20b</Key><ETag>\"e1\"</ETag></Contents>\
            <Contents><Key>c</Key><ETag>&quot;e2&quot;</ETag></Contents>\
            <EncodingType>url</EncodingType></ListBucketResult>";
        let odd = restyled_listing(xml, true);
        assert_eq!(
            odd,
            "<?xml version=\"1.0\"?><ListBucketResult xmlns=\"x\">\n<EncodingType>url</EncodingType>\
             \n  <Contents>\n    <Key>a%20b<!-- restyled --></Key><ETag>&#34;e1&#34;</ETag>\
             \n  </Contents>\n  <Contents>\n    <Key>c</Key><ETag>&#34;e2&#34;</ETag>\
             \n  </Contents></ListBucketResult>"
        );
        let even = restyled_listing(xml, false);
        assert_eq!(even, odd.replace("<!-- restyled -->", ""));
    }

    fn info(method: Method, uri: &str) -> RequestInfo {
        classify(&Request::builder().method(method).uri(uri).body(()).unwrap())
    }

    #[test]
    fn classifies_path_style_requests() {
        let i = info(Method::GET, "/b?list-type=2&prefix=a%2F&max-keys=5");
        assert_eq!(
            (i.op, i.bucket.as_deref(), i.page),
            (Op::List, Some("b"), 1)
        );
        let i = info(Method::HEAD, "/b/dir/a%20b%0A%2B+");
        assert_eq!((i.op, i.key.as_deref()), (Op::Head, Some("dir/a b\n++")));
        let i = info(Method::HEAD, "/b//lead");
        assert_eq!(i.key.as_deref(), Some("/lead"));
        assert_eq!(info(Method::GET, "/b/k?x-id=GetObject").op, Op::Get);
        assert_eq!(info(Method::GET, "/b?location").op, Op::Other);
        assert_eq!(info(Method::GET, "/b/k?tagging").op, Op::GetTagging);
        assert_eq!(info(Method::PUT, "/b/k?tagging").op, Op::Other);
        assert_eq!(info(Method::PUT, "/b").op, Op::CreateBucket);
        assert_eq!(info(Method::HEAD, "/b").op, Op::Other);
        assert_eq!(info(Method::DELETE, "/b/k").op, Op::Delete);
    }

    #[test]
    fn listing_page_comes_from_the_token() {
        let token = Token {
            epoch: 0,
            page: 4,
            marker: "k".into(),
        };
        let uri = format!("/b?list-type=2&continuation-token={}", token.encode());
        assert_eq!(info(Method::GET, &uri).page, 5);
    }
}
