//! Fault injection and counters as a client sees them over the wire: injected statuses,
//! dropped connections, stalls, delays, slowdown above an in-flight limit, holds, token
//! rotation and the admin stats.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::interceptors::AfterDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata as _, SdkError};
use aws_sdk_s3::types::EncodingType;
use common::{client, client_with_timeout, raw_exchange, raw_get, status};
use s3meta_testserver::{Action, Fault, Gate, Op, TestServer};
use tokio::time::Instant;

const BUCKET: &str = "bkt";

async fn server_with(keys: &[&str]) -> TestServer {
    let server = TestServer::start().await;
    for key in keys {
        server.state().put_object(BUCKET, key, b"data", &[]);
    }
    server
}

#[tokio::test]
async fn injected_statuses_reach_the_client_as_s3_errors() {
    let server = server_with(&["k", "other"]).await;
    let state = server.state();
    let s3 = client(&server.endpoint());
    for (code, name) in [
        (503, "SlowDown"),
        (500, "InternalError"),
        (403, "AccessDenied"),
    ] {
        state.add_fault(Fault::list_page(1, Action::Status(code)).times(1));
        let err = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap_err();
        assert_eq!((status(&err), err.code()), (Some(code), Some(name)));
    }
    state.add_fault(Fault::head("k", Action::Status(503)).times(2));
    for _ in 0..2 {
        let err = s3
            .head_object()
            .bucket(BUCKET)
            .key("k")
            .send()
            .await
            .unwrap_err();
        // HEAD errors have no body, so only the status tells.
        assert_eq!((status(&err), err.code()), (Some(503), None));
    }
    s3.head_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .unwrap();
    state.add_fault(Fault::head("k", Action::Status(404)));
    let err = s3
        .head_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_not_found());
    s3.head_object()
        .bucket(BUCKET)
        .key("other")
        .send()
        .await
        .unwrap();
    assert_eq!(state.requests(Op::Head), 5);
    assert_eq!(state.requests(Op::List), 3);
}

#[tokio::test]
async fn faults_match_listing_pages_by_number() {
    let server = TestServer::start().await;
    server.state().fill(BUCKET, 25, 3);
    server
        .state()
        .add_fault(Fault::list_page(3, Action::Status(500)));
    let s3 = client(&server.endpoint());
    let mut token = None;
    for _ in 0..2 {
        let out = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .max_keys(10)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        token = out.next_continuation_token().map(str::to_owned);
    }
    let third = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .max_keys(10)
        .set_continuation_token(token)
        .send()
        .await;
    assert_eq!(status(&third.unwrap_err()), Some(500));
}

#[tokio::test]
async fn dropped_head_connection_is_a_dispatch_failure() {
    let server = server_with(&["k"]).await;
    server
        .state()
        .add_fault(Fault::head("k", Action::DropConnection).times(1));
    let s3 = client(&server.endpoint());
    let err = s3
        .head_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
        ),
        "{err:?}"
    );
    assert!(err.raw_response().is_none());
    s3.head_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn dropped_listing_sends_headers_and_part_of_the_body() {
    let server = TestServer::start().await;
    server.state().fill(BUCKET, 50, 1);
    server
        .state()
        .add_fault(Fault::list_page(1, Action::DropConnection).times(2));
    let s3 = client(&server.endpoint());
    let err = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap_err();
    assert!(!matches!(err, SdkError::ServiceError(_)), "{err:?}");

    // On the wire: a 200 head announcing more bytes than arrive before the close.
    let raw = raw_get(server.addr(), "/bkt?list-type=2").await;
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers were sent");
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("content-length")
        .parse()
        .unwrap();
    assert!(
        !body.is_empty() && body.len() < length,
        "{} of {length}",
        body.len()
    );
    s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
}

/// The last response as it came off the wire, kept by [`Wire`].
#[derive(Debug)]
struct Seen {
    content_length: Option<String>,
    body: String,
}

/// An interceptor that keeps the last response it saw.
#[derive(Clone, Debug, Default)]
struct Wire(Arc<Mutex<Option<Seen>>>);

impl Intercept for Wire {
    fn name(&self) -> &'static str {
        "wire"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response();
        let content_length = response.headers().get("content-length").map(str::to_owned);
        let body = String::from_utf8(response.body().bytes().unwrap_or_default().to_vec())?;
        *self.0.lock().unwrap() = Some(Seen {
            content_length,
            body,
        });
        Ok(())
    }
}

/// `Action::Restyle` over the wire: every listing page re-formatted, with a `Content-Length`
/// that matches; the comment inside the first key on odd pages only, and the SDK still reads
/// that key whole; other ops untouched.
#[tokio::test]
async fn restyle_reformats_listings_and_comments_odd_pages_only() {
    let server = server_with(&["a b", "c\"d", "e", "f", "g"]).await;
    server.state().add_fault(Fault::new(None, Action::Restyle));
    let s3 = client(&server.endpoint());
    let wire = Wire::default();
    let mut keys = Vec::new();
    let mut token = None;
    for page in 1..=3 {
        let listed = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .encoding_type(EncodingType::Url)
            .max_keys(2)
            .set_continuation_token(token)
            .customize()
            .interceptor(wire.clone())
            .send()
            .await
            .unwrap();
        let n = listed.contents().len();
        keys.extend(
            listed
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .map(str::to_owned),
        );
        token = listed.next_continuation_token().map(str::to_owned);
        let Seen {
            content_length,
            body,
        } = wire.0.lock().unwrap().take().expect("a response");
        assert_eq!(content_length, Some(body.len().to_string()), "page {page}");
        // `EncodingType` moved from near the end to right after the root's start tag.
        let (_, after_root) = body.split_once("<ListBucketResult").expect(&body);
        let (_, inside) = after_root.split_once('>').expect(&body);
        assert!(
            inside.starts_with("\n<EncodingType>url</EncodingType><Name>"),
            "page {page}: {body}"
        );
        assert_eq!(body.matches("<EncodingType>").count(), 1, "{body}");
        assert_eq!(body.matches("\n  <Contents>\n    <").count(), n, "{body}");
        assert_eq!(body.matches("\n  </Contents>").count(), n, "{body}");
        assert_eq!(body.matches("<ETag>&#34;").count(), n, "{body}");
        assert!(
            !body.contains("&quot;") && !body.contains("<ETag>\""),
            "{body}"
        );
        let odd = page % 2 == 1;
        assert_eq!(body.matches("<!-- restyled -->").count(), usize::from(odd));
        assert_eq!(body.contains("<!-- restyled --></Key>"), odd, "{body}");
    }
    assert_eq!(token, None);
    assert_eq!(keys, ["a%20b", "c%22d", "e", "f", "g"]);

    // Other ops are answered unchanged.
    let got = s3
        .get_object()
        .bucket(BUCKET)
        .key("e")
        .send()
        .await
        .unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"data");
    assert_eq!(server.state().requests(Op::List), 3);
}

#[tokio::test]
async fn stall_outlasts_the_client_timeout() {
    let server = server_with(&["k"]).await;
    server
        .state()
        .add_fault(Fault::head("k", Action::Stall).times(1));
    let s3 = client_with_timeout(&server.endpoint(), Duration::from_millis(300));
    let err = s3
        .head_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    assert_eq!(server.state().requests(Op::Head), 1);
    s3.head_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn delays_and_latency_slow_requests_down() {
    let server = server_with(&["k"]).await;
    let state = server.state();
    let s3 = client(&server.endpoint());
    state.add_fault(Fault::head("k", Action::Delay(Duration::from_millis(150))).times(1));
    let t = Instant::now();
    s3.head_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));

    state.set_latency(Some(Op::List), Duration::from_millis(100));
    state.set_latency(None, Duration::from_millis(50));
    let t = Instant::now();
    s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn hold_gate_proves_concurrency_and_counts_peak_in_flight() {
    let server = server_with(&["k"]).await;
    let state = server.state().clone();
    // Only opens if all eight HEADs are in flight at once.
    state.hold(Op::Head, Gate::Requests { op: Op::Head, n: 8 });
    let s3 = client(&server.endpoint());
    let heads: Vec<_> = (0..8)
        .map(|_| {
            let s3 = s3.clone();
            tokio::spawn(async move { s3.head_object().bucket(BUCKET).key("k").send().await })
        })
        .collect();
    for h in heads {
        h.await.unwrap().unwrap();
    }
    assert_eq!(state.requests(Op::Head), 8);
    assert_eq!(state.peak_in_flight(Op::Head), 8);
    assert_eq!(state.in_flight(Op::Head), 0);
    assert_eq!(state.total_requests(), 8);
    state.reset_counters();
    assert_eq!(
        (state.total_requests(), state.peak_in_flight(Op::Head)),
        (0, 0)
    );
}

#[tokio::test]
async fn release_lets_held_requests_go() {
    let server = server_with(&["k"]).await;
    let state = server.state().clone();
    state.hold(Op::Head, Gate::Released);
    let s3 = client(&server.endpoint());
    let head = tokio::spawn(async move { s3.head_object().bucket(BUCKET).key("k").send().await });
    state.wait_for_requests(Some(Op::Head), 1).await;
    assert_eq!(state.in_flight(Op::Head), 1);
    state.release(Op::Head);
    head.await.unwrap().unwrap();
}

#[tokio::test]
async fn slowdown_above_in_flight_limit() {
    let server = server_with(&["k"]).await;
    let state = server.state().clone();
    state.slowdown_above_in_flight(Op::Head, Some(2));
    // The first two are held until the fourth arrives; the third and fourth exceed 2.
    state.hold(Op::Head, Gate::Requests { op: Op::Head, n: 4 });
    let s3 = client(&server.endpoint());
    let heads: Vec<_> = (0..4)
        .map(|_| {
            let s3 = s3.clone();
            tokio::spawn(async move { s3.head_object().bucket(BUCKET).key("k").send().await })
        })
        .collect();
    let mut statuses = Vec::new();
    for h in heads {
        statuses.push(match h.await.unwrap() {
            Ok(_) => 200,
            Err(e) => status(&e).unwrap(),
        });
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503, 503]);
    state.clear_faults();
    s3.head_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn rotated_tokens_are_refused() {
    let server = TestServer::start().await;
    server.state().fill(BUCKET, 30, 2);
    let s3 = client(&server.endpoint());
    let first = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .max_keys(10)
        .send()
        .await
        .unwrap();
    let token = first.next_continuation_token().unwrap().to_owned();
    server.state().rotate_tokens();
    let err = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .continuation_token(&token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (status(&err), err.code()),
        (Some(400), Some("InvalidArgument"))
    );
    let err = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .continuation_token("forged")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(400));
    let fresh = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .max_keys(10)
        .send()
        .await
        .unwrap();
    let next = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .continuation_token(fresh.next_continuation_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(next.key_count(), Some(20));
}

#[tokio::test]
async fn wait_for_requests_counts_faulted_requests() {
    let server = server_with(&["k"]).await;
    let state = server.state().clone();
    state.add_fault(Fault::new(None, Action::Status(500)));
    let s3 = client(&server.endpoint());
    let task = tokio::spawn(async move {
        for _ in 0..3 {
            let _ = s3.head_object().bucket(BUCKET).key("k").send().await;
        }
    });
    state.wait_for_requests(None, 3).await;
    state.wait_for_requests(Some(Op::Head), 3).await;
    task.await.unwrap();
    assert_eq!(state.requests(Op::Head), 3);
}

#[tokio::test]
async fn admin_stats_report_counts_and_cpu_without_being_counted() {
    let server = server_with(&["k"]).await;
    let s3 = client(&server.endpoint());
    s3.head_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .unwrap();
    s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    let stats = raw_get(server.addr(), "/__admin/stats").await;
    assert!(stats.starts_with("HTTP/1.1 200"), "{stats}");
    assert!(
        stats.contains("\"requests\":{\"list\":1,\"head\":1,"),
        "{stats}"
    );
    assert!(stats.contains("\"total\":2,"), "{stats}");
    assert!(stats.contains("\"cpu_seconds\":"), "{stats}");
    let reset =
        "POST /__admin/reset HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let answer = String::from_utf8(raw_exchange(server.addr(), reset).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_eq!(server.state().total_requests(), 0);
}

#[tokio::test]
async fn random_slowdown_refuses_a_seeded_share_whatever_the_load() {
    let server = server_with(&["k"]).await;
    let state = server.state().clone();
    let s3 = client(&server.endpoint());
    let mut runs = Vec::new();
    for _ in 0..2 {
        state.slowdown_at_random(Op::Head, Some(0.3), 42);
        let mut answers = Vec::new();
        for _ in 0..200 {
            let r = s3.head_object().bucket(BUCKET).key("k").send().await;
            answers.push(r.map_or_else(|e| status(&e).unwrap(), |_| 200));
        }
        runs.push(answers);
    }
    assert_eq!(runs[0], runs[1], "one seed, the same requests refused");
    let refused = runs[0].iter().filter(|s| **s == 503).count();
    assert!((40..80).contains(&refused), "{refused} of 200 refused");
    assert!(runs[0].iter().all(|s| [200, 503].contains(s)));
    // Refused one at a time: load plays no part.
    assert_eq!(state.peak_in_flight(Op::Head), 1);
}

#[tokio::test]
async fn admin_sets_slowdown_rules_and_reports_busy_time() {
    let server = server_with(&["k"]).await;
    let s3 = client(&server.endpoint());
    let post = |path: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    };
    let answer = raw_exchange(server.addr(), &post("/__admin/slowdown?above=0")).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 204"));
    let err = s3
        .head_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(503));
    let answer = raw_exchange(server.addr(), &post("/__admin/slowdown?rate=2")).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"));
    // No parameters: every HEAD rule off.
    raw_exchange(server.addr(), &post("/__admin/slowdown")).await;
    server
        .state()
        .set_latency(Some(Op::Head), Duration::from_millis(50));
    s3.head_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .unwrap();
    let stats = raw_get(server.addr(), "/__admin/stats").await;
    let busy: f64 = stats
        .split("\"busy_seconds\":{\"list\":")
        .nth(1)
        .and_then(|rest| rest.split("\"head\":").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no HEAD busy_seconds in {stats}"));
    assert!(
        busy >= 0.050,
        "{busy} s in flight for a 50 ms HEAD and a refused one"
    );
}
