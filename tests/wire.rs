//! The lean HEAD path (issue 15): what the SDK did for HEAD still holds now that s3meta signs
//! and sends HEADs itself — session tokens and credentials that expire mid-scan, unsigned
//! requests, a bucket in another region, HTTPS with a certificate of our own, and answers
//! with hundreds or thousands of metadata names (issue 16 §1). Hostile keys and the SDK as
//! an oracle are in tests/hostile.rs; timeouts, dropped connections and retries in
//! tests/faults.rs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_s3::config::Credentials;
use common::*;
use s3meta::s3::client::{self, ClientOptions, S3};
use s3meta::s3::head::head_once;
use s3meta::s3::wire::MAX_HEADERS;
use s3meta_testserver::{ACCESS_KEY, OTHER_REGION, REGION, SECRET_KEY, Signature};

/// Temporary credentials, as STS or SSO hand them out: each call a new session token,
/// expiring `ttl` after it is made.
#[derive(Debug)]
struct Temporary {
    calls: Arc<AtomicU32>,
    ttl: Duration,
}

impl ProvideCredentials for Temporary {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        future::ProvideCredentials::ready(Ok(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            Some(format!("session-{n}")),
            Some(SystemTime::now() + self.ttl),
            "temporary",
        )))
    }
}

fn s3_with(env: &Env, provider: Option<SharedCredentialsProvider>) -> S3 {
    let no_sign_request = provider.is_none();
    let mut shared = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(env.server.endpoint());
    shared.set_credentials_provider(provider);
    let opts = ClientOptions {
        timeout: Duration::from_secs(2),
        no_sign_request,
        ..ClientOptions::default()
    };
    client::from_shared(&shared.build(), &opts).unwrap()
}

/// Credentials that expire during the scan are replaced before they do: every HEAD carries
/// a session token, more than one token is used, and every object is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tokens_are_sent_and_refreshed_mid_scan() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 400);
    // 400 HEADs of 5 ms, 4 at a time: the scan lasts at least 500 ms, and credentials
    // are replaced 10 s + the 2 s timeout before they expire, so each set lasts 300 ms.
    env.state()
        .set_latency(Some(Op::Head), Duration::from_millis(5));
    let calls = Arc::new(AtomicU32::new(0));
    let provider = SharedCredentialsProvider::new(Temporary {
        calls: calls.clone(),
        ttl: Duration::from_millis(12_300),
    });
    let s3 = s3_with(&env, Some(provider));
    let mut cfg = env.config("bkt", "");
    cfg.concurrency = 4;
    env.state().reset_counters();
    let report = s3meta::scan::run(&cfg, s3, &env.db, Default::default(), Default::default())
        .await
        .unwrap();
    assert_eq!(report.stats.headed, 400);
    let signatures = env.state().signatures();
    let tokens: Vec<_> = signatures
        .iter()
        .filter_map(|(s, n)| match s {
            Signature::Signed {
                session_token: Some(t),
            } => Some((t.clone(), *n)),
            _ => None,
        })
        .collect();
    let signed: u64 = tokens.iter().map(|(_, n)| n).sum();
    assert_eq!(
        signed,
        env.state().total_requests(),
        "every request carries a token: {signatures:?}"
    );
    assert!(tokens.len() >= 2, "credentials were refreshed: {tokens:?}");
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE state = 'ok'"),
        400
    );
}

/// `--no-sign-request`: the HEAD goes out without a signature (the test server refuses
/// anonymous requests, so the answer is 403, recorded as such).
#[tokio::test]
async fn an_unsigned_head_carries_no_signature() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 1);
    let s3 = s3_with(&env, None);
    let target = s3.head_target("bkt").await.unwrap();
    env.state().reset_counters();
    let failure = head_once(&target, "000000").await.unwrap_err();
    assert_eq!(failure.status, Some(403), "{failure}");
    assert!(!failure.retryable);
    assert_eq!(
        env.state().signatures().into_iter().collect::<Vec<_>>(),
        [(Signature::Unsigned, 1)]
    );
}

/// A 301 names the region the bucket is in; the object error says which flag to pass, and
/// the request is not retried.
#[tokio::test]
async fn a_head_redirected_to_another_region_says_which() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 3);
    env.state()
        .add_fault(Fault::new(Some(Op::Head), Action::Status(301)));
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!((report.stats.failed, report.stats.head_requests), (3, 3));
    let messages = column(
        &env.db,
        "SELECT message || ' / ' || attempts FROM object_errors",
    );
    let want = format!("the bucket is in region {OTHER_REGION}: pass --region {OTHER_REGION} / 1");
    assert_eq!(messages, vec![want; 3]);
}

/// Objects with many metadata names are read whole, up to the bound; one over it is an
/// object error naming the bound, after one attempt, and the scan goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_with_thousands_of_metadata_names_are_read_up_to_the_bound() {
    let env = Env::new().await;
    env.state().create_bucket("bkt");
    let over = MAX_HEADERS + 10;
    for n in [95, 500, 2000, over] {
        let meta = (0..n)
            .map(|i| (format!("name-{i:05}"), format!("value {i}")))
            .collect();
        let spec = ObjectSpec {
            meta,
            ..ObjectSpec::default()
        };
        env.state()
            .put_object_with("bkt", &format!("meta-{n:05}"), spec);
    }
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    // 95 names fit the everyday pool (NARROW_HEADERS); 500, 2,000 and the one over the bound
    // are asked again through the wide pool, each attempt counted.
    assert_eq!(
        (report.stats.head_requests, report.stats.failed),
        (1 + 3 * 2, 1)
    );
    assert_eq!(env.state().requests(Op::Head), 7);
    for n in [95, 500, 2000] {
        let got = count(
            &env.db,
            &format!(
                "SELECT count(*) FROM metadata JOIN objects USING (object_id) \
                 WHERE key = 'meta-{n:05}' AND value = 'value ' || CAST(substr(name, 6) AS INTEGER)"
            ),
        );
        assert_eq!(got, n as i64, "{n} names");
    }
    let error = column(
        &env.db,
        &format!(
            "SELECT message || ' / ' || attempts FROM object_errors JOIN objects USING (object_id) \
             WHERE key = 'meta-{over:05}'"
        ),
    );
    assert_eq!(error.len(), 1);
    // Two attempts: the everyday pool's, then the wide pool's.
    assert!(
        error[0].contains(&format!("bound of {MAX_HEADERS} headers")) && error[0].ends_with("/ 2"),
        "{error:?}"
    );
}

/// HTTPS: a store behind TLS with a certificate from a private CA, trusted through
/// `SSL_CERT_FILE` (read by the platform-roots loader both the SDK and the HEAD path use).
/// The scan lists and HEADs through TLS and stores every object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_over_https_with_a_private_ca_reads_everything() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 50);
    let (endpoint, ca) = tls_front(&env).await;
    let db = env.dir.path().join("tls.db");
    let mut cmd = bin_for(&endpoint, env.dir.path());
    cmd.env("SSL_CERT_FILE", &ca)
        .args(["scan", "s3://bkt", "--db"])
        .arg(&db)
        .args(["--backoff-ms", "1"]);
    env.state().reset_counters();
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        count(&db, "SELECT count(*) FROM objects WHERE state = 'ok'"),
        50
    );
    assert_eq!(env.state().requests(Op::Head), 50);

    // Without the CA the certificate is refused: the scan fails, it does not go around TLS.
    let mut cmd = bin_for(&endpoint, env.dir.path());
    cmd.args(["scan", "s3://bkt", "--db"])
        .arg(env.dir.path().join("untrusted.db"))
        .args(["--backoff-ms", "1", "--max-attempts", "1"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

/// A TLS front for the test server on `127.0.0.1:0`, with a certificate for 127.0.0.1 signed
/// by a CA of its own; returns the HTTPS endpoint and the CA's PEM file.
async fn tls_front(env: &Env) -> (String, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use tokio_rustls::rustls;

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let ca_file = env.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = env
        .server
        .endpoint()
        .trim_start_matches("http://")
        .to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut up = tokio::net::TcpStream::connect(&backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (format!("https://127.0.0.1:{port}"), ca_file)
}
