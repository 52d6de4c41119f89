//! `follow --listen`: S3 event JSON POSTed by a store (MinIO's webhook target, Ceph RGW's HTTP
//! push endpoint), answered 200 only after what it carries is committed.
//!
//! Receives: HTTP/1.1 POSTs on one address. Sends on: their bodies, a batch at a time, to the
//! follower; the answer to each sender after the batch's commit. Invariants: at most
//! `QUEUED` requests wait for a commit (a sender beyond them waits for its answer, so memory is
//! bounded); a body over `MAX_BODY` is refused (413); a body that is not S3 events gets 400
//! (retrying cannot help); a failed commit gets 503 and the sender retries; the token is
//! compared in constant time.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use s3meta::error::Error;
use s3meta::scan::follow::metrics::FollowMetrics;
use s3meta::scan::follow::{FollowReport, Follower};
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for a commit at most.
const QUEUED: usize = 1024;
/// The largest body accepted (a store sends one event, or a few, per POST).
const MAX_BODY: usize = 1 << 20;

struct Posted {
    body: String,
    reply: oneshot::Sender<StatusCode>,
}

/// Serves until `follower`'s cancellation; what was received by then is committed and
/// answered first.
pub async fn serve(
    follower: &mut Follower,
    addr: SocketAddr,
    token: Option<String>,
    mut tick: impl FnMut(&FollowReport, Option<u64>),
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::BadInput(format!("--listen {addr}: cannot bind ({e})")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    tracing::warn!("listening for S3 event POSTs on http://{bound}/");
    let (tx, mut rx) = mpsc::channel::<Posted>(QUEUED);
    let token = Arc::new(token);
    let metrics = follower.metrics.clone();
    let cancel = follower.cancel_token();
    let accept = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = cancel.cancelled() => break,
                    s = listener.accept() => match s { Ok((s, _)) => s, Err(_) => continue },
                };
                let (tx, token, metrics) = (tx.clone(), token.clone(), metrics.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, tx.clone(), token.clone(), metrics.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    };
    let mut last_tick = std::time::Instant::now();
    let batch = follower.batch_size();
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => None,
            p = rx.recv() => p,
        };
        let Some(first) = first else { break };
        let mut posted = vec![first];
        while posted.len() < batch {
            match rx.try_recv() {
                Ok(p) => posted.push(p),
                Err(_) => break,
            }
        }
        commit(follower, posted).await?;
        let waiting = rx.len() as u64;
        follower.metrics.update(|l| l.waiting = Some(waiting));
        if last_tick.elapsed() >= std::time::Duration::from_secs(60) {
            tick(&follower.report, None);
            last_tick = std::time::Instant::now();
        }
    }
    accept.abort();
    // Requests already taken in are committed and answered before the exit.
    rx.close();
    let mut rest = Vec::new();
    while let Some(p) = rx.recv().await {
        rest.push(p);
    }
    if !rest.is_empty() {
        commit(follower, rest).await?;
    }
    Ok(())
}

async fn commit(follower: &mut Follower, posted: Vec<Posted>) -> Result<(), Error> {
    let bodies: Vec<&str> = posted.iter().map(|p| p.body.as_str()).collect();
    let (events, ok, ignored) = follower.parse(&bodies);
    match follower.apply(events, ignored).await {
        Ok(()) => {
            for (p, ok) in posted.into_iter().zip(ok) {
                let status = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_REQUEST
                };
                let _ = p.reply.send(status);
            }
            Ok(())
        }
        Err(e) => {
            for p in posted {
                let _ = p.reply.send(StatusCode::SERVICE_UNAVAILABLE);
            }
            Err(e)
        }
    }
}

/// Serves `GET /metrics` alone on `addr` (`follow --metrics-addr`) until `cancel`.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: FollowMetrics,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::BadInput(format!("--metrics-addr {addr}: cannot bind ({e})")))?;
    if let Ok(bound) = listener.local_addr() {
        tracing::warn!("serving metrics on http://{bound}/metrics");
    }
    Ok(tokio::spawn(async move {
        loop {
            // Cancel safety: an accept not taken is a connection left in the backlog.
            let stream = tokio::select! {
                _ = cancel.cancelled() => break,
                s = listener.accept() => match s { Ok((s, _)) => s, Err(_) => continue },
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let m = metrics.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(match metrics_answer(&req, &m) {
                            Some(r) => r,
                            None => text(StatusCode::NOT_FOUND, "GET /metrics"),
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

/// The exposition, for `GET /metrics`; `None` for any other request.
fn metrics_answer<B>(req: &Request<B>, metrics: &FollowMetrics) -> Option<Response<Full<Bytes>>> {
    if req.method() != http::Method::GET || req.uri().path() != "/metrics" {
        return None;
    }
    let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Some(r)
}

fn text(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<Incoming>,
    tx: mpsc::Sender<Posted>,
    token: Arc<Option<String>>,
    metrics: FollowMetrics,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let answer = |status: StatusCode, t: &str| Ok(text(status, t));
    if let Some(want) = token.as_deref() {
        let got = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v));
        if !got.is_some_and(|g| same(g.as_bytes(), want.as_bytes())) {
            return answer(
                StatusCode::UNAUTHORIZED,
                "missing or wrong Authorization token",
            );
        }
    }
    // Behind the token too, when there is one (Prometheus sends it as `authorization`).
    if let Some(r) = metrics_answer(&req, &metrics) {
        return Ok(r);
    }
    if req.method() != http::Method::POST {
        return answer(StatusCode::METHOD_NOT_ALLOWED, "POST S3 event JSON here");
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return answer(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB"),
    };
    let Ok(body) = String::from_utf8(body.to_vec()) else {
        return answer(StatusCode::BAD_REQUEST, "body is not UTF-8");
    };
    let (reply, wait) = oneshot::channel();
    if tx.send(Posted { body, reply }).await.is_err() {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "stopping");
    }
    match wait.await {
        Ok(StatusCode::OK) => answer(StatusCode::OK, "committed"),
        Ok(StatusCode::BAD_REQUEST) => answer(StatusCode::BAD_REQUEST, "not S3 event JSON"),
        _ => answer(StatusCode::SERVICE_UNAVAILABLE, "not committed; retry"),
    }
}

/// Constant-time equality (for the token).
fn same(a: &[u8], b: &[u8]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(u8::from(a.len() != b.len()), |d, (x, y)| d | (x ^ y));
    diff == 0
}
