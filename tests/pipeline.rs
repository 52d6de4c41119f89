//! Pipeline shape over real HTTP: listing never waits for HEADs (issue 4).

mod common;

use std::time::Duration;

use common::*;
use s3meta::scan::Outcome;

/// Issue 4: the server holds every HEAD until the LIST request for page 2 has arrived. A
/// lister that waited for the HEADs of page 1 before asking for page 2 would deadlock here;
/// the timeout turns that into a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_never_waits_for_heads() {
    held_heads_until_list(2, 2500).await;
}

/// The same with HEADs held until page 3 is requested: page 1's jobs fill the HEAD queue (it
/// holds one page), so a lister that asked for the next page only after queueing the current
/// page's jobs would block on page 2's and never ask for page 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_never_waits_for_a_full_head_queue() {
    held_heads_until_list(3, 3500).await;
}

async fn held_heads_until_list(n: u64, objects: usize) {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", objects);
    env.state()
        .hold(Op::Head, Gate::Requests { op: Op::List, n });
    let mut cfg = env.config("bkt", "");
    cfg.page_size = 1000;
    // Far fewer HEADs in flight than keys per page, so each page's HEADs queue up.
    cfg.concurrency = 8;

    let scan = tokio::time::timeout(Duration::from_secs(60), env.scan(&cfg));
    let report = scan
        .await
        .expect("the scan deadlocked: listing waited for HEADs")
        .unwrap();

    assert_eq!(report.outcome, Outcome::Complete);
    let pages = objects.div_ceil(1000) as u64;
    assert_eq!(env.state().requests(Op::List), pages);
    assert_eq!(env.state().requests(Op::Head), objects as u64);
    assert!(env.state().peak_in_flight(Op::Head) <= 8);
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM objects WHERE state = 'ok' AND head_due = 0"
        ),
        objects as i64
    );
    assert_eq!(
        count(&env.db, "SELECT count(DISTINCT object_id) FROM metadata"),
        (objects - objects / 3) as i64
    );
}
