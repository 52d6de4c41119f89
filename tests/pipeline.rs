//! Pipeline shape over real HTTP: listing never waits for HEADs (issue 4).

mod common;

use std::time::Duration;

use common::*;
use s3meta::scan::Outcome;

/// Issue 4: the server holds every HEAD until the LIST request for page 2 has arrived. A
/// lister that waited for the HEADs of page 1 (or blocked queueing them behind a full HEAD
/// queue) before asking for page 2 would deadlock here; the timeout turns that into a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_never_waits_for_heads() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 2500);
    env.state()
        .hold(Op::Head, Gate::Requests { op: Op::List, n: 2 });
    let mut cfg = env.config("bkt", "");
    cfg.page_size = 1000;
    // Far fewer HEADs in flight than keys per page, so page 1's HEADs queue up.
    cfg.concurrency = 8;

    let scan = tokio::time::timeout(Duration::from_secs(60), env.scan(&cfg));
    let report = scan
        .await
        .expect("the scan deadlocked: listing waited for HEADs")
        .unwrap();

    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(env.state().requests(Op::List), 3);
    assert_eq!(env.state().requests(Op::Head), 2500);
    assert!(env.state().peak_in_flight(Op::Head) <= 8);
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM objects WHERE state = 'ok' AND head_due = 0"
        ),
        2500
    );
    assert_eq!(
        count(&env.db, "SELECT count(DISTINCT object_id) FROM metadata"),
        1667
    );
}
