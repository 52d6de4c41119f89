//! Throttling: adaptive HEAD concurrency on 503 SlowDown, and the request-rate cap (issue 6).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use s3meta::scan::Outcome;
use s3meta::stats::Stats;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowdown_above_k_in_flight_lowers_concurrency_to_at_most_2k() {
    const K: u64 = 8;
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 3000);
    env.state()
        .set_latency(Some(Op::Head), Duration::from_millis(2));
    env.state().slowdown_above_in_flight(Op::Head, Some(K));
    let mut cfg = env.config("bkt", "");
    cfg.concurrency = 64;
    cfg.page_size = 1000;

    let stats = Arc::new(Stats::default());
    let scan = tokio::spawn({
        let (client, db, stats) = (env.s3().client, env.db.clone(), stats.clone());
        async move { s3meta::scan::run(&cfg, client, &db, CancellationToken::new(), stats).await }
    });
    // Let the first bursts of SlowDowns happen and the limiter react, then measure.
    env.state().wait_for_requests(Some(Op::Head), 600).await;
    env.state().reset_counters();
    let report = scan.await.unwrap().unwrap();
    let errors = column(
        &env.db,
        "SELECT key || ' ' || status || ' ' || attempts || ' ' || message FROM object_errors JOIN objects USING (object_id)",
    );
    assert!(
        errors.is_empty(),
        "{} errors, e.g. {:?}; throttled {}",
        errors.len(),
        &errors[..errors.len().min(3)],
        report.stats.throttled
    );
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(report.errors, 0);
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE state = 'ok'"),
        3000
    );
    assert!(report.stats.throttled > 0, "the store did throttle");
    let peak = env.state().peak_in_flight(Op::Head);
    assert!(
        peak <= 2 * K,
        "peak in-flight HEADs after the first SlowDowns: {peak} > {}",
        2 * K
    );
    assert!(stats.concurrency.load(std::sync::atomic::Ordering::Relaxed) <= 2 * K);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rps_caps_the_request_rate() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 40);
    let mut cfg = env.config("bkt", "");
    cfg.max_rps = Some(200);
    let started = tokio::time::Instant::now();
    let report = env.scan(&cfg).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    let requests = env.state().total_requests();
    assert_eq!(requests, 41);
    // 41 requests spaced 5 ms apart take at least 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}
