//! Scan end to end over real HTTP against the in-process test server (issue 2).

mod common;

use common::*;
use s3meta::scan::Outcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_page_listing_with_prefix_indexes_exactly_the_prefix() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "a/", 250);
    fill(env.state(), "bkt", "b/", 30);
    env.state().put_object("bkt", "a", b"x", &[]);
    let report = env.scan(&env.config("bkt", "a/")).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(count(&env.db, "SELECT count(*) FROM objects"), 250);
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM objects WHERE state = 'ok' AND head_due = 0"
        ),
        250
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM objects WHERE key NOT BETWEEN 'a/' AND 'a/~'"
        ),
        0
    );
    assert_eq!(
        count(&env.db, "SELECT count(DISTINCT object_id) FROM metadata"),
        167
    );
    assert_eq!(
        column(
            &env.db,
            "SELECT value FROM metadata m JOIN objects o USING (object_id) WHERE o.key = 'a/obj-00007' ORDER BY name"
        ),
        ["user0", "apollo"]
    );
    assert_eq!(env.state().requests(Op::List), 3);
    assert_eq!(env.state().requests(Op::Head), 250);
    assert_eq!(report.stats.listed, 250);
    assert_eq!(column(&env.db, "SELECT state FROM scans"), ["complete"]);
    assert_eq!(
        column(
            &env.db,
            "SELECT state || ' ' || keys_listed FROM scan_ranges"
        ),
        ["done 250"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricky_keys_and_metadata_are_stored_exactly() {
    let env = Env::new().await;
    let long = "k".repeat(1024);
    let keys = [
        "with space",
        "plus+sign",
        "percent%20and%",
        "new\nline",
        "tab\there",
        "emoji 🎉/ü",
        "../dots/..",
        "/leading",
        "glob*?[x]",
        "xml<&>\"'",
        "under_score",
        &long,
    ];
    for k in keys {
        env.state().put_object("bkt", k, b"body", &[("k", k)]);
    }
    let spec = ObjectSpec {
        body: Some(b"x".to_vec()),
        meta: vec![
            ("Mixed-Case".into(), "v".into()),
            ("unicode".into(), "été 日本 🎉".into()),
            ("empty".into(), "".into()),
            ("spaces".into(), "  a  b  ".into()),
        ],
        content_type: Some("text/plain; charset=utf-8".into()),
        cache_control: Some("max-age=60".into()),
        content_encoding: Some("gzip".into()),
        content_language: Some("fr".into()),
        content_disposition: Some("attachment; filename=\"a b.txt\"".into()),
        expires: Some("Thu, 01 Dec 2050 16:00:00 GMT".into()),
        storage_class: Some("STANDARD_IA".into()),
        missing_meta: Some(2),
        ..ObjectSpec::default()
    };
    env.state().put_object_with("bkt", "full", spec);
    env.state().put_object("bkt", "bare", b"", &[]);
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    let mut want: Vec<String> = keys
        .iter()
        .map(|k| k.to_string())
        .chain(["full".into(), "bare".into()])
        .collect();
    want.sort();
    assert_eq!(
        column(&env.db, "SELECT key FROM objects ORDER BY key"),
        want
    );
    for k in keys {
        let got = rusqlite::Connection::open(&env.db)
            .unwrap()
            .query_row(
                "SELECT value FROM metadata JOIN objects USING (object_id) WHERE key = ?1 AND name = 'k'",
                [k],
                |r| r.get::<_, String>(0),
            )
            .unwrap();
        assert_eq!(got, k, "metadata of {k:?}");
    }
    assert_eq!(
        column(
            &env.db,
            "SELECT name || '=' || value FROM metadata JOIN objects USING (object_id) WHERE key = 'full' ORDER BY name"
        ),
        // HTTP trims a header value's outer whitespace (so does S3); inner spaces stay.
        [
            "empty=",
            "mixed-case=v",
            "spaces=a  b",
            "unicode=été 日本 🎉"
        ]
    );
    assert_eq!(
        column(
            &env.db,
            "SELECT concat_ws('|', content_type, cache_control, content_encoding, content_language, content_disposition,
                    expires, storage_class, missing_meta, size, list_size, list_storage_class)
             FROM objects WHERE key = 'full'"
        ),
        ["text/plain; charset=utf-8|max-age=60|gzip|fr|attachment; filename=\"a b.txt\"|Thu, 01 Dec 2050 16:00:00 GMT|STANDARD_IA|2|1|1|STANDARD_IA"]
    );
    // ETags without quotes, equal in listing and HEAD; times in the one format.
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM objects WHERE etag != list_etag OR etag LIKE '%\"%'"
        ),
        0
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM objects WHERE last_modified NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]Z'"
        ),
        0
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM metadata JOIN objects USING (object_id) WHERE key = 'bare'"
        ),
        0
    );
    assert_eq!(
        column(&env.db, "SELECT state FROM objects WHERE key = 'bare'"),
        ["ok"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_404_is_gone_and_403_is_an_error_with_exit_3() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 20);
    env.state()
        .add_fault(Fault::head("obj-00003", Action::Status(404)));
    env.state()
        .add_fault(Fault::head("obj-00004", Action::Status(403)));
    env.state()
        .add_fault(Fault::head("obj-00005", Action::Status(400)));
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.outcome, Outcome::CompleteWithErrors);
    assert_eq!(report.errors, 2);
    assert_eq!(
        column(&env.db, "SELECT state FROM objects WHERE key = 'obj-00003'"),
        ["gone"]
    );
    assert_eq!(
        column(
            &env.db,
            "SELECT key || ' ' || status || ' ' || attempts FROM object_errors JOIN objects USING (object_id) ORDER BY key"
        ),
        // A 403 is asked once more without x-amz-checksum-mode (KMS objects), both counted.
        ["obj-00004 403 2", "obj-00005 400 1"]
    );
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE state = 'ok'"),
        17
    );
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM changes"),
        0,
        "a first scan records no changes"
    );
    assert_eq!(column(&env.db, "SELECT state FROM scans"), ["complete"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowdown_storms_and_500s_succeed_after_retries() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 60);
    env.state()
        .add_fault(Fault::new(Some(Op::Head), Action::Status(503)).times(15));
    // Fewer 500s than --max-attempts: after the storm the concurrency is low, and a single
    // request may meet all of them in a row.
    env.state()
        .add_fault(Fault::new(Some(Op::Head), Action::Status(500)).times(4));
    env.state()
        .add_fault(Fault::new(Some(Op::List), Action::Status(503)).times(2));
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    let errors = column(
        &env.db,
        "SELECT key || ' ' || status || ' ' || attempts FROM object_errors JOIN objects USING (object_id)",
    );
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE state = 'ok'"),
        60
    );
    assert_eq!(env.state().requests(Op::Head), 79);
    assert_eq!(report.stats.retries, 21);
    assert_eq!(report.stats.throttled, 17);
    assert_eq!(
        column(
            &env.db,
            "SELECT retries || ' ' || list_requests || ' ' || head_requests || ' ' || throttled FROM scans"
        ),
        ["21 3 79 17"],
        "{:?}",
        report.stats
    );
    assert_eq!(count(&env.db, "SELECT head_requests FROM scans"), 79);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_scan_resumes_to_the_same_database() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "p/", 900);
    env.state()
        .add_fault(Fault::head("p/obj-00500", Action::Status(404)));
    env.state()
        .add_fault(Fault::head("p/obj-00600", Action::Status(403)));
    let reference = env.dir.path().join("reference.db");
    env.scan_into(&env.config("bkt", "p/"), &reference)
        .await
        .unwrap();

    let cfg = env.config("bkt", "p/");
    let cancel = tokio_util::sync::CancellationToken::new();
    let state = env.state().clone();
    let trigger = cancel.clone();
    let before = state.requests(Op::Head);
    tokio::spawn(async move {
        state.wait_for_requests(Some(Op::Head), before + 300).await;
        trigger.cancel();
    });
    let stats = std::sync::Arc::new(s3meta::model::stats::Stats::default());
    let first = s3meta::scan::run(&cfg, env.s3(), &env.db, cancel, stats)
        .await
        .unwrap();
    assert_eq!(first.outcome, Outcome::Interrupted);
    assert_eq!(column(&env.db, "SELECT state FROM scans"), ["interrupted"]);
    let done = count(&env.db, "SELECT count(*) FROM objects WHERE head_due = 0");
    assert!(
        done > 0 && done < 900,
        "{done} HEADs committed before the cancel"
    );

    let second = env.scan(&cfg).await.unwrap();
    assert!(second.resumed);
    assert_eq!(second.scan_id, first.scan_id);
    assert_eq!(second.outcome, Outcome::CompleteWithErrors);
    assert_eq!(column(&env.db, "SELECT state FROM scans"), ["complete"]);
    assert_eq!(dump(&env.db), dump(&reference));
}
