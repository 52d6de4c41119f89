//! The lean HEAD path: HeadObject (and GetObjectTagging) signed with aws-sigv4 and sent over
//! s3meta's own hyper pool.
//!
//! A scan sends millions of identical small requests; the SDK's per-operation orchestrator
//! (config layering, interceptors, endpoint rules, deserialization) cost about 40% of the
//! client's CPU on Garage. This path does what object_store (arrow-rs) does: the URL, the
//! signature and the headers, nothing else. The SDK still resolves credentials, region and
//! the endpoint (once per target, with the same rules it applies to its own requests), and
//! still sends every other request.
//!
//! Receives: a bucket (once) and keys. Sends on: each answer's status and headers, or a
//! `Failure`. Invariants: one connection pool per target, reused, never churned; every key
//! is encoded exactly as SigV4 wants it (each byte outside `A-Za-z0-9-._~/` percent-encoded,
//! no path normalization), so the bytes signed are the bytes sent; the response's header
//! section is bounded by `MAX_HEADERS` names and `MAX_HEADER_BYTES` bytes, and an answer over
//! the bound is an object error naming the bound, not a dropped connection; each attempt is
//! bounded by the timeout, connecting included.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_types::Document;
use bytes::Bytes;
use http::header::{HOST, HeaderValue, USER_AGENT};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::Error;
use crate::model::Failure;
use crate::s3::credentials::CachedCredentials;
use crate::s3::retry::root_cause;

/// Header names a HEAD answer may carry: S3 allows 2 KB of user metadata, but other stores
/// take far more (SeaweedFS stores 95 names, the test server any number). hyper's default,
/// 100, made an object with ~90 metadata names unreadable.
pub const MAX_HEADERS: usize = 4096;
/// Header names the everyday pool reads: hyper sets aside room for its bound on every answer
/// it parses (32 bytes a header, zeroed), which at 4,096 cost a tenth of the client's CPU on
/// Garage. An answer with more (an object with over ~140 metadata names) is asked again
/// through the wide pool, which reads up to `MAX_HEADERS`.
pub const NARROW_HEADERS: usize = 160;
/// Bytes a HEAD answer's header section may take (hyper's read buffer bound).
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// Bytes of a GetObjectTagging answer's body: S3 allows 10 tags of at most 128 + 256
/// characters (under 8 KiB as XML), other stores a few more; an answer over this is an object
/// error naming it (and a store answering `?tagging` with the object cannot hold more than
/// this per request in flight).
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// Bytes of a key sent as they are; every other byte is percent-encoded (SigV4's URI
/// encoding, with `/` kept as the path separator S3 keys use).
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// The same for a query value (a version id): `/` is escaped too, as SigV4's canonical query
/// string has it.
const VALUE_ENCODE: &AsciiSet = &KEY_ENCODE.add(b'/');

/// SHA-256 of the empty body: HEAD has none, and S3 wants the payload hash signed.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const AGENT: &str = concat!("s3meta/", env!("CARGO_PKG_VERSION"));

/// How s3meta reaches a store, as the SDK config it also builds from says.
#[derive(Debug, Clone)]
pub struct WireOptions {
    /// `None` with `--no-sign-request`.
    pub credentials: Option<SharedCredentialsProvider>,
    pub region: String,
    /// The endpoint URL; `None` is AWS S3 itself.
    pub endpoint: Option<String>,
    pub path_style: bool,
    pub use_fips: bool,
    pub use_dual_stack: bool,
    /// Per attempt, connecting included.
    pub timeout: Duration,
}

/// One bucket's HEAD requests: where they go, how they are signed, the pool they share.
#[derive(Debug, Clone)]
pub struct HeadTarget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Up to `NARROW_HEADERS` headers an answer.
    http: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// Up to `MAX_HEADERS`: for answers over the narrow bound (`Failure::wider`).
    wide: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    credentials: Option<CachedCredentials>,
    /// The bucket's URL as the endpoint rules give it, without a trailing `/`.
    base: String,
    host: HeaderValue,
    signing_region: String,
    signing_name: String,
    timeout: Duration,
}

/// An object's key and, for one version of it (`--all-versions`), its version id.
pub type Versioned<'a> = (&'a str, Option<&'a str>);

/// What a request adds to the object's URL and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query {
    None,
    /// HEAD with `x-amz-checksum-mode: ENABLED`.
    Checksum,
    /// `?tagging`: GetObjectTagging.
    Tagging,
}

/// The answer to one request: its status, headers and body (empty for HEAD).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HeadTarget {
    /// Resolves the bucket's endpoint with the SDK's S3 rules (virtual-host or path style,
    /// FIPS, dual-stack, the signing region) and builds the connection pool.
    pub async fn new(opts: &WireOptions, bucket: &str) -> Result<HeadTarget, Error> {
        let params = Params::builder()
            .bucket(bucket)
            .region(opts.region.clone())
            .set_endpoint(opts.endpoint.clone())
            .force_path_style(opts.path_style)
            .use_fips(opts.use_fips)
            .use_dual_stack(opts.use_dual_stack)
            .build()
            .map_err(|e| Error::BadInput(format!("cannot address bucket `{bucket}`: {e}")))?;
        let endpoint = DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .map_err(|e| Error::BadInput(format!("cannot address bucket `{bucket}`: {e}")))?;
        let base = endpoint.url().trim_end_matches('/').to_string();
        let (signing_region, signing_name) = signing_scope(&endpoint, opts, bucket)?;
        let uri: http::Uri = base
            .parse()
            .map_err(|e| Error::BadInput(format!("endpoint URL `{base}` is not a URL: {e}")))?;
        let host = host_header(&uri)
            .ok_or_else(|| Error::BadInput(format!("endpoint URL `{base}` has no host")))?;
        Ok(HeadTarget {
            inner: Arc::new(Inner {
                http: pool(
                    uri.scheme_str() == Some("https"),
                    opts.timeout,
                    NARROW_HEADERS,
                )?,
                wide: pool(uri.scheme_str() == Some("https"), opts.timeout, MAX_HEADERS)?,
                credentials: opts
                    .credentials
                    .clone()
                    .map(|p| CachedCredentials::new(p, opts.timeout)),
                base,
                host,
                signing_region,
                signing_name,
                timeout: opts.timeout,
            }),
        })
    }

    /// One HEAD request for `key`: signed, sent, answered or failed within the timeout.
    /// `checksum`: with `x-amz-checksum-mode: ENABLED` (the object's checksum, when it has
    /// one: HEAD omits it unless asked; AWS then also wants `kms:Decrypt` for a KMS-encrypted
    /// object and answers 403 without it, see `HeadPool::head`). `wide`: through the pool that
    /// reads up to `MAX_HEADERS` (after a `Failure::wider`).
    pub async fn head(
        &self,
        key: Versioned<'_>,
        checksum: bool,
        wide: bool,
    ) -> Result<Answer, Failure> {
        let query = if checksum {
            Query::Checksum
        } else {
            Query::None
        };
        self.send(Method::HEAD, key, query, wide).await
    }

    /// One GetObjectTagging request (`GET /KEY?tagging`); the body is read, up to
    /// `MAX_BODY_BYTES`.
    pub async fn get_tagging(&self, key: Versioned<'_>, wide: bool) -> Result<Answer, Failure> {
        self.send(Method::GET, key, Query::Tagging, wide).await
    }

    /// One request for `key`: signed, sent, answered (body included) or failed within the
    /// timeout.
    async fn send(
        &self,
        method: Method,
        (key, version): Versioned<'_>,
        query: Query,
        wide: bool,
    ) -> Result<Answer, Failure> {
        let inner = &*self.inner;
        let mut uri = format!("{}/{}", inner.base, utf8_percent_encode(key, KEY_ENCODE));
        // Sorted as the signature's canonical query string has them.
        let mut sep = '?';
        if query == Query::Tagging {
            uri.push_str("?tagging");
            sep = '&';
        }
        if let Some(v) = version {
            uri.push(sep);
            uri.push_str("versionId=");
            uri.extend(utf8_percent_encode(v, VALUE_ENCODE));
        }
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri.as_str())
            .header(HOST, inner.host.clone())
            .header(USER_AGENT, AGENT);
        if query == Query::Checksum {
            // The object's checksum (x-amz-checksum-*), when it has one: HEAD omits it unless asked.
            req = req.header("x-amz-checksum-mode", "ENABLED");
        }
        let mut req = req.body(Empty::new()).map_err(|e| Failure {
            retryable: false,
            ..Failure::transport(format!("cannot build the request: {e}"))
        })?;
        if let Some(credentials) = &inner.credentials {
            let credentials = credentials.get().await?;
            inner.sign(&mut req, &uri, credentials.into())?;
        }
        let exchange = async {
            let http = if wide { &inner.wide } else { &inner.http };
            let resp = http
                .request(req)
                .await
                .map_err(|e| transport_failure(&e, wide))?;
            let (parts, body) = resp.into_parts();
            let body = if method == Method::HEAD {
                Bytes::new()
            } else {
                Limited::new(body, MAX_BODY_BYTES)
                    .collect()
                    .await
                    .map_err(|e| match e.downcast_ref::<LengthLimitError>() {
                        Some(_) => Failure {
                            retryable: false,
                            ..Failure::transport(format!(
                                "the answer's body is over s3meta's bound of {MAX_BODY_BYTES} bytes"
                            ))
                        },
                        None => Failure::transport(format!("the answer's body was cut off: {e}")),
                    })?
                    .to_bytes()
            };
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(inner.timeout, exchange).await {
            Err(_) => Err(Failure::transport("timed out".into())),
            Ok(answer) => answer,
        }
    }
}

impl Inner {
    /// Signs `req`, whose URI is `uri` (the text it was built from, so it is not written
    /// out again for every request).
    fn sign(
        &self,
        req: &mut Request<Empty<Bytes>>,
        uri: &str,
        identity: aws_smithy_runtime_api::client::identity::Identity,
    ) -> Result<(), Failure> {
        let unsignable = |e: &dyn std::fmt::Display| Failure {
            retryable: false,
            ..Failure::transport(format!("cannot sign the request: {e}"))
        };
        let mut settings = SigningSettings::default();
        // S3's own rules: the path is encoded once and never normalized (`a//b/../c` is a
        // key), and the payload hash is a signed header.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.signing_region)
            .name(&self.signing_name)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| unsignable(&e))?
            .into();
        let headers = req
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)));
        let signable = SignableRequest::new(
            req.method().as_str(),
            uri,
            headers,
            SignableBody::Precomputed(EMPTY_SHA256.into()),
        )
        .map_err(|e| unsignable(&e))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| unsignable(&e))?
            .into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }
}

/// The region and service name to sign for, from the endpoint's auth schemes; a scheme
/// s3meta cannot sign with (S3 Express directory buckets, SigV4a multi-region access points)
/// is refused at the start, not discovered per object.
fn signing_scope(
    endpoint: &aws_smithy_types::endpoint::Endpoint,
    opts: &WireOptions,
    bucket: &str,
) -> Result<(String, String), Error> {
    let Some(scheme) = endpoint.auth_schemes().first() else {
        return Ok((opts.region.clone(), "s3".into()));
    };
    let field = |name: &str| match scheme.get(name) {
        Some(Document::String(s)) => Some(s.clone()),
        _ => None,
    };
    match scheme.name() {
        "sigv4" => Ok((
            field("signingRegion").unwrap_or_else(|| opts.region.clone()),
            field("signingName").unwrap_or_else(|| "s3".into()),
        )),
        other => Err(Error::BadInput(format!(
            "bucket `{bucket}` needs the `{other}` signing scheme, which s3meta does not speak \
             (S3 Express directory buckets and multi-region access points are not supported)"
        ))),
    }
}

/// `host[:port]` as SigV4 and HTTP/1.1 both want it: the port only when not the scheme's default.
fn host_header(uri: &http::Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let value = match uri.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    HeaderValue::from_str(&value).ok()
}

/// The pool: HTTP/1.1 keep-alive connections, TLS (rustls, the platform's roots, as the SDK
/// uses; `SSL_CERT_FILE` names another bundle) when the endpoint is HTTPS.
fn pool(
    https: bool,
    timeout: Duration,
    max_headers: usize,
) -> Result<Client<HttpsConnector<HttpConnector>, Empty<Bytes>>, Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
    let tls = if https {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| Error::BadInput(format!("cannot load TLS root certificates: {e}")))?
    } else {
        // Never used to connect: an http:// endpoint never asks for TLS.
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("TLS configuration: {e}")))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
    };
    let connector = tls.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .http1_max_headers(max_headers)
        .http1_max_buf_size(MAX_HEADER_BYTES)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector))
}

/// A request that got no answer: a connection refused or dropped, a header section over the
/// bound (permanent: the same object answers the same way again; over the narrow pool's, a
/// `wider` failure).
fn transport_failure(e: &hyper_util::client::legacy::Error, wide: bool) -> Failure {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<hyper::Error>()
            && h.is_parse_too_large()
        {
            if !wide {
                return Failure {
                    retryable: false,
                    wider: true,
                    ..Failure::transport(format!(
                        "the answer has more than {NARROW_HEADERS} headers (or over {} KiB of them)",
                        MAX_HEADER_BYTES / 1024
                    ))
                };
            }
            return Failure {
                retryable: false,
                ..Failure::transport(format!(
                    "the answer's headers exceed s3meta's bound of {MAX_HEADERS} headers or \
                     {} KiB (too much metadata on one object)",
                    MAX_HEADER_BYTES / 1024
                ))
            };
        }
        cause = c.source();
    }
    if e.is_connect() {
        Failure::transport(format!("cannot connect: {}", root_cause(e)))
    } else {
        Failure::transport(format!(
            "connection dropped or response unreadable: {}",
            root_cause(e)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_as_sigv4_wants() {
        let enc = |k: &str| utf8_percent_encode(k, KEY_ENCODE).to_string();
        assert_eq!(enc("a/b c+d"), "a/b%20c%2Bd");
        assert_eq!(enc("~._-/"), "~._-/");
        assert_eq!(enc("é?#%"), "%C3%A9%3F%23%25");
        assert_eq!(enc("a//../b"), "a//../b");
        assert_eq!(enc("\n\t "), "%0A%09%20");
    }

    #[test]
    fn the_host_header_omits_only_the_default_port() {
        let h = |u: &str| host_header(&u.parse().unwrap()).unwrap();
        assert_eq!(h("http://127.0.0.1:9000/b"), "127.0.0.1:9000");
        assert_eq!(h("http://s3.local:80"), "s3.local");
        assert_eq!(h("https://s3.local:443/b"), "s3.local");
        assert_eq!(h("https://s3.local:80/b"), "s3.local:80");
        assert_eq!(
            h("https://b.s3.us-east-1.amazonaws.com"),
            "b.s3.us-east-1.amazonaws.com"
        );
    }

    fn aws(region: &str, path_style: bool) -> WireOptions {
        WireOptions {
            credentials: None,
            region: region.into(),
            endpoint: None,
            path_style,
            use_fips: false,
            use_dual_stack: false,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn aws_buckets_are_addressed_as_the_sdk_addresses_them() {
        let t = HeadTarget::new(&aws("eu-west-1", false), "my-bucket")
            .await
            .unwrap();
        assert_eq!(t.inner.base, "https://my-bucket.s3.eu-west-1.amazonaws.com");
        assert_eq!(t.inner.signing_region, "eu-west-1");
        let t = HeadTarget::new(&aws("eu-west-1", true), "my-bucket")
            .await
            .unwrap();
        assert_eq!(t.inner.base, "https://s3.eu-west-1.amazonaws.com/my-bucket");
        // Dots cannot be in a TLS wildcard name: the rules fall back to path style.
        let t = HeadTarget::new(&aws("us-east-1", false), "a.b.c")
            .await
            .unwrap();
        assert_eq!(t.inner.base, "https://s3.us-east-1.amazonaws.com/a.b.c");
        let custom = WireOptions {
            endpoint: Some("http://127.0.0.1:9000".into()),
            ..aws("us-east-1", true)
        };
        let t = HeadTarget::new(&custom, "b").await.unwrap();
        assert_eq!(t.inner.base, "http://127.0.0.1:9000/b");
        assert_eq!(t.inner.host, "127.0.0.1:9000");
    }

    #[tokio::test]
    async fn directory_buckets_are_refused_at_the_start() {
        let e = HeadTarget::new(&aws("us-east-1", false), "data--use1-az4--x-s3").await;
        let e = e.map(|t| t.inner.base.clone()).unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}
