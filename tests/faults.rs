//! Network and server faults a scan survives (issue 6): connections dropped mid-response, a
//! stalled server, the server restarted on the same port mid-scan, a LIST page failing then
//! recovering, a continuation token rejected on resume, and a HEAD failing forever. Each
//! final database is compared with an uninterrupted scan's (canonical dump), and request
//! counts with what the fault must cost.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use s3meta::model::stats::Stats;
use s3meta::s3::retry::Policy;
use s3meta::scan::{self, Outcome};
use s3meta_testserver::TestServer;
use tokio_util::sync::CancellationToken;

/// `s3meta scan URL --db DB` with fast retries and pages of 100 keys.
fn scan_cmd(env: &Env, url: &str, db: &Path) -> Command {
    let mut cmd = env.scan_cmd(url, db);
    // One stream: these tests aim faults at the pages of one listing and count its requests
    // (tests/parallel.rs covers faults with ranges in flight).
    cmd.args(["--list-parallelism", "1"]);
    cmd
}

/// A bucket of `n` objects and the database an uninterrupted library scan makes of it;
/// request counters start from zero afterwards.
async fn with_reference(n: usize) -> (Env, std::path::PathBuf) {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", n);
    let reference = env.dir.path().join("reference.db");
    let r = env
        .scan_into(&env.config("bkt", ""), &reference)
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Complete);
    env.state().reset_counters();
    (env, reference)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropped_mid_listing_and_before_head_answers_are_retried() {
    let (env, reference) = with_reference(550).await;
    // Page 3 is cut off after half of its body, twice; two HEADs lose their connection
    // before any answer (one key twice).
    let s = env.state();
    s.add_fault(Fault::list_page(3, Action::DropConnection).times(2));
    s.add_fault(Fault::head("obj-00042", Action::DropConnection).times(2));
    s.add_fault(Fault::head("obj-00417", Action::DropConnection).times(1));

    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(s.requests(Op::List), 6 + 2);
    assert_eq!(s.requests(Op::Head), 550 + 3);
    assert_eq!(
        (
            report.stats.list_requests,
            report.stats.head_requests,
            report.stats.retries
        ),
        (8, 553, 5)
    );
    assert_eq!(count(&env.db, "SELECT count(*) FROM object_errors"), 0);
    assert_eq!(dump(&env.db), dump(&reference));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_times_out_and_is_retried() {
    let (env, reference) = with_reference(350).await;
    // Never answered: only the client's per-request timeout (--timeout 1) ends these.
    env.state()
        .add_fault(Fault::list_page(2, Action::Stall).times(1));
    env.state()
        .add_fault(Fault::head("obj-00123", Action::Stall).times(1));

    let mut cmd = scan_cmd(&env, "s3://bkt", &env.db);
    cmd.args(["--timeout", "1"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.state().requests(Op::List), 4 + 1);
    assert_eq!(env.state().requests(Op::Head), 350 + 1);
    assert_eq!(count(&env.db, "SELECT retries FROM scans"), 2);
    assert_eq!(dump(&env.db), dump(&reference));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_mid_scan_on_the_same_port_is_retried_through() {
    let (env, reference) = with_reference(1500).await;
    let mut cfg = env.config("bkt", "");
    // Patient enough to outlast a restart: about 3 s of expected back-off in all.
    cfg.policy = Policy {
        max_attempts: 10,
        base: Duration::from_millis(50),
        cap: Duration::from_secs(1),
    };
    let client = env.s3();
    let Env {
        server,
        dir: _dir,
        db,
    } = env;
    let state = server.state().clone();
    // Slow enough that the scan is still running when the server goes away.
    state.set_latency(Some(Op::Head), Duration::from_millis(2));
    let stats = Arc::new(Stats::default());
    let scan = tokio::spawn({
        let (db, stats) = (db.clone(), stats.clone());
        async move { scan::run(&cfg, client, &db, CancellationToken::new(), stats).await }
    });

    state.wait_for_requests(Some(Op::Head), 300).await;
    let addr = server.addr();
    // Closes every connection: the requests in progress get no answer.
    server.shutdown().await;
    let headed_before_restart = state.requests(Op::Head);
    // The port may be taken for a moment by one of the client's own reconnects: an outgoing
    // connection to a closed port can be given that very port as its local one and connect
    // to itself (TCP simultaneous open) until it fails. Bounded: five seconds at most.
    let mut tries = 0;
    let _restarted = loop {
        match TestServer::start_with(state.clone(), Some(addr)).await {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 250 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("restarting on {addr}: {e}"),
        }
    };

    let report = scan.await.unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert!(
        headed_before_restart < 1500,
        "the restart came mid-scan ({headed_before_restart} HEADs before it)"
    );
    assert!(report.stats.retries >= 1, "{:?}", report.stats);
    // The client counts every attempt, also those refused while the port was closed.
    assert!(report.stats.head_requests >= state.requests(Op::Head));
    assert!(state.requests(Op::Head) >= 1500);
    assert_eq!(count(&db, "SELECT count(*) FROM object_errors"), 0);
    assert_eq!(dump(&db), dump(&reference));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_page_failing_within_the_retry_budget_costs_only_its_retries() {
    let (env, reference) = with_reference(550).await;
    env.state()
        .add_fault(Fault::list_page(3, Action::Status(500)).times(3));
    env.state()
        .add_fault(Fault::list_page(5, Action::Status(503)).times(1));
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(env.state().requests(Op::List), 6 + 4);
    assert_eq!(env.state().requests(Op::Head), 550);
    assert_eq!((report.stats.retries, report.stats.throttled), (4, 1));
    assert_eq!(dump(&env.db), dump(&reference));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_page_failing_past_the_retries_is_fatal_then_resumes_at_that_page() {
    let (env, reference) = with_reference(550).await;
    // Page 3 fails every one of the 5 attempts of the first run, then recovers.
    env.state()
        .add_fault(Fault::list_page(3, Action::Status(500)).times(5));
    let out = output(scan_cmd(&env, "s3://bkt", &env.db)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "listing s3://bkt/ at {} failed after 5 attempt(s): HTTP 500 InternalError",
            env.server.endpoint()
        )),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // Pages 1 and 2 were committed with their checkpoint; nothing of page 3 was.
    assert_eq!(env.state().requests(Op::List), 2 + 5);
    assert_eq!(
        column(
            &env.db,
            "SELECT pages || ' ' || last_key || ' ' || (token IS NOT NULL) FROM scan_ranges"
        ),
        ["2 obj-00199 1"]
    );
    assert_eq!(count(&env.db, "SELECT count(*) FROM objects"), 200);
    assert_eq!(
        column(&env.db, "SELECT state || ' ' || last_error FROM scans"),
        [format!(
            "interrupted listing s3://bkt/ at {} failed after 5 attempt(s): HTTP 500 InternalError: We encountered an internal error. Please try again.",
            env.server.endpoint()
        )]
    );
    let due = count(&env.db, "SELECT count(*) FROM objects WHERE head_due = 1");

    env.state().reset_counters();
    let out = output(scan_cmd(&env, "s3://bkt", &env.db)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The resume lists from page 3 with the saved token and HEADs only what is owed.
    assert_eq!(env.state().requests(Op::List), 4);
    assert_eq!(env.state().requests(Op::Head) as i64, due + 350);
    assert_eq!(dump(&env.db), dump(&reference));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_continuation_token_resumes_after_the_last_committed_key() {
    let (env, reference) = with_reference(1000).await;
    // Stop the first run while page 4 is being listed: pages up to 3 are committed with a
    // continuation token.
    env.state()
        .add_fault(Fault::list_page(4, Action::Stall).times(1));
    let cancel = CancellationToken::new();
    let (state, trigger) = (env.state().clone(), cancel.clone());
    tokio::spawn(async move {
        state.wait_for_requests(Some(Op::List), 4).await;
        trigger.cancel();
    });
    let stats = Arc::new(Stats::default());
    let first = scan::run(&env.config("bkt", ""), env.s3(), &env.db, cancel, stats)
        .await
        .unwrap();
    assert_eq!(first.outcome, Outcome::Interrupted);
    let pages = count(
        &env.db,
        "SELECT pages FROM scan_ranges WHERE token IS NOT NULL AND state = 'listing'",
    );
    assert!((1..=3).contains(&pages), "{pages} pages committed");
    let due = count(&env.db, "SELECT count(*) FROM objects WHERE head_due = 1");

    // The store forgets its tokens (a restart, an expiry): the saved one is refused.
    env.state().rotate_tokens();
    env.state().reset_counters();
    let out = output(scan_cmd(&env, "s3://bkt", &env.db)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("the store rejected the saved continuation token"),
        "{err}"
    );
    assert!(
        err.contains("resuming after the last committed key"),
        "{err}"
    );
    // One refused request, then StartAfter = the last committed key: no page listed twice.
    assert_eq!(env.state().requests(Op::List) as i64, 1 + (10 - pages));
    assert_eq!(
        env.state().requests(Op::Head) as i64,
        due + 1000 - 100 * pages
    );
    assert_eq!(column(&env.db, "SELECT state FROM scans"), ["complete"]);
    assert_eq!(dump(&env.db), dump(&reference));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_failing_forever_is_recorded_and_the_scan_exits_3() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 120);
    env.state()
        .add_fault(Fault::head("obj-00077", Action::Status(500)));
    let reference = env.dir.path().join("reference.db");
    env.scan_into(&env.config("bkt", ""), &reference)
        .await
        .unwrap();
    env.state().reset_counters();

    let out = output(scan_cmd(&env, "s3://bkt", &env.db)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("1 object could not be read"), "{err}");
    // Every other object once, the failing one for all 5 attempts; the scan completes.
    assert_eq!(env.state().requests(Op::Head), 119 + 5);
    assert_eq!(
        column(
            &env.db,
            "SELECT key || ' ' || o.state || ' ' || e.status || ' ' || coalesce(e.code, '-') || ' ' || e.message || ' ' || e.attempts
             FROM object_errors e JOIN objects o USING (object_id)"
        ),
        ["obj-00077 error 500 - Internal Server Error 5"]
    );
    assert_eq!(
        column(&env.db, "SELECT state || ' ' || objects_failed FROM scans"),
        ["complete 1"]
    );
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE state = 'ok'"),
        119
    );
    assert_eq!(dump(&env.db), dump(&reference));
}
