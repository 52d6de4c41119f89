//! Building the one S3 client a command shares, and naming the store it talks to.
//!
//! Receives: the connection flags (endpoint, region, profile, addressing, signing, timeout).
//! Sends on: an `aws_sdk_s3::Client` with the SDK's own retries off (s3meta's retry loop
//! counts every attempt) and the store id used in the database. Invariants: one client per
//! command, so its connection pool is shared and connections are reused, never churned; the
//! endpoint is resolved once (`StoreEndpoint::resolve`), and the URL the client sends to, the store
//! id rows are filed under and the default addressing all come from that one value (issue 13).

use std::sync::Mutex;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::endpoint::{
    DefaultResolver, Endpoint, EndpointFuture, Params, ResolveEndpoint,
};
use aws_sdk_s3::config::{
    Region, RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
};
use aws_types::service_config::ServiceConfigKey;

use crate::error::Error;
use crate::s3::wire::{HeadTarget, WireOptions};

/// The store id of AWS S3 itself (no custom endpoint).
pub const AWS_STORE: &str = "aws";

#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    /// `Some(true)` path-style, `Some(false)` virtual-host style, `None`: path-style exactly
    /// when a custom endpoint is used.
    pub path_style: Option<bool>,
    pub no_sign_request: bool,
    /// Per-attempt timeout of each request.
    pub timeout: Duration,
}

/// The client, the store id it talks to, and how HEADs reach the same store (`wire`).
#[derive(Debug, Clone)]
pub struct S3 {
    pub client: aws_sdk_s3::Client,
    pub store: String,
    pub wire: WireOptions,
}

impl S3 {
    /// The lean HEAD path to one bucket of this store, with the SDK's credentials, region
    /// and endpoint.
    pub async fn head_target(&self, bucket: &str) -> Result<HeadTarget, Error> {
        HeadTarget::new(&self.wire, bucket).await
    }
}

/// Where a command's requests go, resolved once from every source of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreEndpoint {
    /// The URL requests are sent to, as configured; `None` is AWS S3 itself.
    pub url: Option<String>,
    /// The store id rows are filed under: the normalized URL, or `aws`.
    pub store: String,
}

impl StoreEndpoint {
    /// The endpoint, highest precedence first: `--endpoint-url`, then what the AWS
    /// configuration names for S3 — `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the profile's
    /// `services` section (`s3 = endpoint_url = …`), the profile's `endpoint_url` (aws-config
    /// reads the environment and the profile, and honours `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`).
    /// The SDK applies the same order when it builds an S3 config, but s3meta sets the result
    /// on the config explicitly, so the store id can never name another endpoint than the
    /// one requests go to.
    pub fn resolve(flag: Option<&str>, shared: &SdkConfig) -> Result<StoreEndpoint, Error> {
        let key = ServiceConfigKey::builder()
            .service_id("S3")
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .expect("every part of the key is set");
        let url = match flag {
            Some(url) => Some(url.to_string()),
            None => shared
                .service_config()
                .and_then(|c| c.load_config(key))
                .or_else(|| shared.endpoint_url().map(str::to_string)),
        };
        let store = match &url {
            Some(url) => normalize_endpoint(url)?,
            None => AWS_STORE.to_string(),
        };
        Ok(StoreEndpoint { url, store })
    }

    /// Path-style addressing unless asked otherwise, exactly when the endpoint is not AWS's:
    /// S3-compatible stores (`http://localhost:9000` included) rarely resolve
    /// `bucket.host` names.
    pub fn path_style(&self, asked: Option<bool>) -> bool {
        asked.unwrap_or(self.url.is_some())
    }
}

/// Loads credentials and region from aws-config's default chain and builds the client.
pub async fn build(opts: &ClientOptions) -> Result<S3, Error> {
    from_shared(&load(opts, opts.no_sign_request).await, opts)
}

/// The store id the options name, as `build` would compute it, without credentials or any
/// request (for `forget`, which works offline).
pub async fn store_of(opts: &ClientOptions) -> Result<String, Error> {
    let offline = ClientOptions {
        // A region given, no instance metadata is asked for one.
        region: Some(opts.region.clone().unwrap_or_else(|| "us-east-1".into())),
        ..opts.clone()
    };
    let shared = load(&offline, true).await;
    Ok(StoreEndpoint::resolve(opts.endpoint_url.as_deref(), &shared)?.store)
}

/// aws-config's view of the environment and profile files, with the flags applied.
pub(crate) async fn load(opts: &ClientOptions, no_credentials: bool) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = &opts.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &opts.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if no_credentials {
        loader = loader.no_credentials();
    }
    loader.load().await
}

/// Builds the client from an already loaded configuration (tests pass static credentials).
pub fn from_shared(shared: &SdkConfig, opts: &ClientOptions) -> Result<S3, Error> {
    let endpoint = StoreEndpoint::resolve(opts.endpoint_url.as_deref(), shared)?;
    let mut config = aws_sdk_s3::config::Builder::from(shared);
    config.set_endpoint_url(endpoint.url.clone());
    let mut config = config
        .force_path_style(endpoint.path_style(opts.path_style))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
                .operation_attempt_timeout(opts.timeout)
                .build(),
        )
        // HEAD and LIST carry no payload to checksum, and our per-attempt timeout already
        // bounds a stalled response: these two only cost CPU per request.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .endpoint_resolver(CachedResolver::default());
    if shared.region().is_none() {
        // Most S3-compatible stores accept any region; AWS redirects and we say so.
        config = config.region(Region::new("us-east-1"));
    }
    let config = config.build();
    let wire = WireOptions {
        credentials: shared.credentials_provider(),
        region: config
            .region()
            .map_or_else(|| "us-east-1".to_string(), |r| r.to_string()),
        endpoint: endpoint.url.clone(),
        path_style: endpoint.path_style(opts.path_style),
        use_fips: shared.use_fips().unwrap_or(false),
        use_dual_stack: shared.use_dual_stack().unwrap_or(false),
        timeout: opts.timeout,
    };
    Ok(S3 {
        client: aws_sdk_s3::Client::from_conf(config),
        store: endpoint.store,
        wire,
    })
}

/// The SDK's endpoint resolver, remembering its answers. S3's endpoint rules (URL parsing,
/// bucket-name and ARN checks) run for every request, and again to choose the auth scheme; the
/// SDK's own one-entry cache never hits for HEAD, because its parameters include the object's
/// key. The rules bind `Key`, `Prefix` and `CopySource` but never read them (the SDK's tests
/// say they "should not be used in endpoint evaluation"), so answers are kept per value of
/// every other parameter: a scan asks one question (its bucket, region, endpoint) each time.
#[derive(Debug, Default)]
struct CachedResolver {
    rules: DefaultResolver,
    known: Mutex<Vec<(Params, Endpoint)>>,
}

/// Distinct parameter sets kept at most (a command uses one or two buckets).
const ENDPOINTS_KEPT: usize = 16;

/// Whether the rules give `a` and `b` the same endpoint: equal in everything but the object.
/// A test checks the fields compared against the SDK's, so an upgrade that adds a parameter
/// cannot go unnoticed.
fn same_endpoint(a: &Params, b: &Params) -> bool {
    a.bucket() == b.bucket()
        && a.region() == b.region()
        && a.use_fips() == b.use_fips()
        && a.use_dual_stack() == b.use_dual_stack()
        && a.endpoint() == b.endpoint()
        && a.force_path_style() == b.force_path_style()
        && a.accelerate() == b.accelerate()
        && a.use_global_endpoint() == b.use_global_endpoint()
        && a.use_object_lambda_endpoint() == b.use_object_lambda_endpoint()
        && a.disable_access_points() == b.disable_access_points()
        && a.disable_multi_region_access_points() == b.disable_multi_region_access_points()
        && a.use_arn_region() == b.use_arn_region()
        && a.use_s3_express_control_endpoint() == b.use_s3_express_control_endpoint()
        && a.disable_s3_express_session_auth() == b.disable_s3_express_session_auth()
}

impl ResolveEndpoint for CachedResolver {
    fn resolve_endpoint<'a>(&'a self, params: &'a Params) -> EndpointFuture<'a> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, endpoint)) = known.iter().find(|(p, _)| same_endpoint(p, params)) {
            return EndpointFuture::ready(Ok(endpoint.clone()));
        }
        drop(known);
        let resolving = self.rules.resolve_endpoint(params);
        EndpointFuture::new(async move {
            let endpoint = resolving.await?;
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            if known.len() < ENDPOINTS_KEPT && !known.iter().any(|(p, _)| same_endpoint(p, params))
            {
                known.push((params.clone(), endpoint.clone()));
            }
            Ok(endpoint)
        })
    }
}

/// Normalizes an endpoint URL into a store id: lower-case scheme and host, no default port,
/// no trailing slash. `HTTP://Minio.local:80/` and `http://minio.local` are one store.
pub fn normalize_endpoint(url: &str) -> Result<String, Error> {
    let bad = |reason: &str| {
        Error::BadInput(format!(
            "endpoint URL `{url}` {reason}: expected e.g. http://127.0.0.1:9000 or https://s3.example.com"
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("has no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad("must start with http:// or https://"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    let mut authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    if authority.ends_with(default_port) {
        authority.truncate(authority.len() - default_port.len());
    }
    Ok(format!("{scheme}://{authority}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Params` fields `same_endpoint` ignores.
    const OBJECT_SCOPED: [&str; 3] = ["key", "prefix", "copy_source"];

    /// The fields `same_endpoint` compares, by name.
    const COMPARED: [&str; 14] = [
        "bucket",
        "region",
        "use_fips",
        "use_dual_stack",
        "endpoint",
        "force_path_style",
        "accelerate",
        "use_global_endpoint",
        "use_object_lambda_endpoint",
        "disable_access_points",
        "disable_multi_region_access_points",
        "use_arn_region",
        "use_s3_express_control_endpoint",
        "disable_s3_express_session_auth",
    ];

    fn params(bucket: &str, key: &str) -> Params {
        Params::builder()
            .bucket(bucket)
            .key(key)
            .region("us-east-1")
            .endpoint("http://127.0.0.1:9000")
            .force_path_style(true)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn endpoint_answers_are_remembered_per_bucket_not_per_key() {
        let cached = CachedResolver::default();
        let rules = DefaultResolver::new();
        for (bucket, key) in [("a", "k1"), ("a", "k2"), ("b", "k1"), ("a", "k3")] {
            let p = params(bucket, key);
            let got = cached.resolve_endpoint(&p).await.unwrap();
            assert_eq!(got, rules.resolve_endpoint(&p).await.unwrap());
            assert_eq!(got.url(), format!("http://127.0.0.1:9000/{bucket}"));
        }
        assert_eq!(cached.known.lock().unwrap().len(), 2);
    }

    /// An SDK upgrade that adds an endpoint parameter must be added to `same_endpoint`.
    #[test]
    fn same_endpoint_compares_every_parameter_but_the_object() {
        let debug = format!("{:?}", params("a", "k"));
        let body = debug.split_once('{').unwrap().1;
        let mut names: Vec<&str> = body
            .split(", ")
            .filter_map(|f| f.split_once(':').map(|(n, _)| n.trim()))
            .filter(|n| {
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .collect();
        names.sort_unstable();
        let mut expected: Vec<&str> = COMPARED.iter().chain(&OBJECT_SCOPED).copied().collect();
        expected.sort_unstable();
        assert_eq!(names, expected, "{debug}");
        assert!(same_endpoint(&params("a", "k1"), &params("a", "k2")));
        assert!(!same_endpoint(&params("a", "k1"), &params("b", "k1")));
    }

    /// What aws-config would read from the environment and the profile for S3.
    #[derive(Debug)]
    struct Configured(Option<&'static str>);

    impl aws_types::service_config::LoadServiceConfig for Configured {
        fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
            assert_eq!(
                (key.service_id(), key.env(), key.profile()),
                ("S3", "AWS_ENDPOINT_URL", "endpoint_url")
            );
            self.0.map(str::to_string)
        }
    }

    fn shared(global: Option<&str>, s3: Option<&'static str>) -> SdkConfig {
        let mut b = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .service_config(Configured(s3));
        b.set_endpoint_url(global.map(str::to_string));
        b.build()
    }

    /// Issue 13: the flag, then S3's own configuration, then the global endpoint; the store
    /// id and the addressing follow the endpoint chosen.
    #[test]
    fn the_endpoint_is_resolved_once_and_names_the_store() {
        let e = StoreEndpoint::resolve(None, &shared(None, None)).unwrap();
        assert_eq!((e.url.as_deref(), e.store.as_str()), (None, AWS_STORE));
        assert!(!e.path_style(None));
        let e = StoreEndpoint::resolve(None, &shared(Some("http://g:1"), None)).unwrap();
        assert_eq!(e.store, "http://g:1");
        let e = StoreEndpoint::resolve(
            None,
            &shared(Some("http://g:1"), Some("http://LOCALHOST:8333/")),
        )
        .unwrap();
        assert_eq!(e.url.as_deref(), Some("http://LOCALHOST:8333/"));
        assert_eq!(e.store, "http://localhost:8333");
        assert!(e.path_style(None), "a custom endpoint is path-style");
        assert!(!e.path_style(Some(false)));
        let e = StoreEndpoint::resolve(
            Some("http://flag:2"),
            &shared(Some("http://g:1"), Some("http://s3:3")),
        )
        .unwrap();
        assert_eq!(e.store, "http://flag:2");
        assert!(StoreEndpoint::resolve(None, &shared(None, Some("localhost:1"))).is_err());
    }

    #[test]
    fn normalizes_endpoints() {
        assert_eq!(
            normalize_endpoint("HTTP://Minio.local:80/").unwrap(),
            "http://minio.local"
        );
        assert_eq!(
            normalize_endpoint("https://s3.example.com:443/base/").unwrap(),
            "https://s3.example.com/base"
        );
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert!(normalize_endpoint("127.0.0.1:9000").is_err());
        assert!(normalize_endpoint("ftp://x").is_err());
    }
}
