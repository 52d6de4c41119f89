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

/// Issue 14: a resumed scan's owed HEADs and its next pages go on together. The first run
/// lists two pages while no HEAD is answered and is stopped, so the resume owes more HEADs
/// than the HEAD queue and pool hold. The server then holds every HEAD until two more pages
/// are requested: a resume that queued its owed HEADs before listing on would block on the
/// full queue and never list; the timeout turns that into a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_lists_on_while_its_owed_heads_wait() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 1000);
    let mut cfg = env.config("bkt", "");
    cfg.concurrency = 2;
    cfg.page_size = 50;
    cfg.grace = Duration::from_millis(50);
    // What the HEAD queue and the pool can hold at once.
    let capacity = cfg.concurrency.max(cfg.page_size as usize) + cfg.concurrency;
    // First run: no HEAD is answered; stop once the third page is requested.
    env.state().hold(Op::Head, Gate::Released);
    let cancel = tokio_util::sync::CancellationToken::new();
    let scan = {
        let (cfg, client, db, cancel) = (cfg.clone(), env.s3(), env.db.clone(), cancel.clone());
        tokio::spawn(async move {
            s3meta::scan::run(&cfg, client, &db, cancel, Default::default()).await
        })
    };
    env.state().wait_for_requests(Some(Op::List), 3).await;
    cancel.cancel();
    let first = scan.await.unwrap().unwrap();
    assert_eq!(first.outcome, Outcome::Interrupted);
    let owed = count(&env.db, "SELECT count(*) FROM objects WHERE head_due = 1");
    assert!(
        owed as usize > capacity,
        "{owed} HEADs owed: the test needs more than the queue and pool hold ({capacity})"
    );

    env.state().release(Op::Head);
    env.state().reset_counters();
    env.state()
        .hold(Op::Head, Gate::Requests { op: Op::List, n: 2 });
    let resumed = tokio::time::timeout(Duration::from_secs(60), env.scan(&cfg))
        .await
        .expect("the resume never listed on: it waited for its owed HEADs")
        .unwrap();
    assert_eq!(resumed.outcome, Outcome::Complete);
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE state = 'ok'"),
        1000
    );
}
