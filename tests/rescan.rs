//! Nightly rescans: HEAD only what changed, record deletions and changes (issue 5).

mod common;

use common::*;
use s3meta::model::Mode;
use s3meta::scan::Outcome;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_bucket_rescans_with_zero_heads() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 450);
    let first = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(first.mode, Mode::Full);
    let before = dump(&env.db);
    env.state().reset_counters();

    let second = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(second.mode, Mode::Rescan);
    assert_eq!(second.outcome, Outcome::Complete);
    assert_eq!(env.state().requests(Op::Head), 0);
    assert_eq!(env.state().requests(Op::List), 5);
    assert_eq!(second.stats.skipped, 450);
    assert_eq!(dump(&env.db), before);
    assert_eq!(
        column(
            &env.db,
            "SELECT mode || ' ' || state FROM scans ORDER BY scan_id"
        ),
        ["full complete", "rescan complete"]
    );

    // --full HEADs everything again, and finds nothing changed.
    env.state().reset_counters();
    let mut full = env.config("bkt", "");
    full.full = true;
    let third = env.scan(&full).await.unwrap();
    assert_eq!(third.mode, Mode::Full);
    assert_eq!(env.state().requests(Op::Head), 450);
    assert_eq!(dump(&env.db), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_object_costs_one_head_and_one_change_row() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 100);
    env.scan(&env.config("bkt", "")).await.unwrap();
    env.state().put_object(
        "bkt",
        "obj-00010",
        b"new body",
        &[("owner", "bob"), ("stage", "final")],
    );
    env.state().put_object("bkt", "obj-00011", b"x", &[]); // same body and (no) metadata: listing changes only
    env.state()
        .put_object("bkt", "new-object", b"n", &[("owner", "carol")]);
    assert!(env.state().delete_object("bkt", "obj-00020"));
    env.state().reset_counters();

    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.mode, Mode::Rescan);
    assert_eq!(env.state().requests(Op::Head), 3);
    assert_eq!(report.stats.skipped, 97);
    let changes = column(
        &env.db,
        "SELECT o.key || ' ' || c.kind || ' ' || coalesce(c.old_metadata, '-') || ' ' || coalesce(c.new_metadata, '-')
         FROM changes c JOIN objects o USING (object_id) ORDER BY o.key",
    );
    assert_eq!(
        changes,
        [
            "new-object created - {\"owner\":\"carol\"}",
            "obj-00010 metadata {\"owner\":\"user3\",\"project\":\"apollo\"} {\"owner\":\"bob\",\"stage\":\"final\"}",
            "obj-00011 modified - -",
            "obj-00020 deleted - -",
        ]
    );
    assert_eq!(
        column(
            &env.db,
            "SELECT name || '=' || value FROM metadata JOIN objects USING (object_id) WHERE key = 'obj-00010' ORDER BY name"
        ),
        ["owner=bob", "stage=final"]
    );
    assert_eq!(
        column(&env.db, "SELECT state FROM objects WHERE key = 'obj-00020'"),
        ["gone"]
    );
    // The old listing fields are kept on the change row.
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM changes WHERE kind = 'modified' AND old_etag = new_etag AND old_modified < new_modified"
        ),
        1
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT objects_gone FROM scans WHERE mode = 'rescan'"
        ),
        1
    );

    // A key that comes back is `created` again.
    env.state().put_object("bkt", "obj-00020", b"back", &[]);
    env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(
        column(&env.db, "SELECT state FROM objects WHERE key = 'obj-00020'"),
        ["ok"]
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM changes JOIN objects USING (object_id) WHERE key = 'obj-00020' AND kind = 'created'"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_scan_never_touches_keys_outside_its_prefix() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "a/", 50);
    fill(env.state(), "bkt", "a%/", 5);
    fill(env.state(), "bkt", "a_/", 5);
    fill(env.state(), "bkt", "b/", 50);
    env.scan(&env.config("bkt", "")).await.unwrap();
    // Everything outside a/ disappears; a rescan of a/ must not notice.
    for i in 0..50 {
        env.state().delete_object("bkt", &format!("b/obj-{i:05}"));
    }
    for i in 0..5 {
        env.state().delete_object("bkt", &format!("a%/obj-{i:05}"));
        env.state().delete_object("bkt", &format!("a_/obj-{i:05}"));
    }
    env.state().delete_object("bkt", "a/obj-00049");
    let report = env.scan(&env.config("bkt", "a/")).await.unwrap();
    assert_eq!(
        report.mode,
        Mode::Rescan,
        "the completed bucket scan covers a/"
    );
    assert_eq!(
        column(&env.db, "SELECT key FROM objects WHERE state = 'gone'"),
        ["a/obj-00049"]
    );
    assert_eq!(count(&env.db, "SELECT count(*) FROM changes"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rescan_resumes_to_the_same_database() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 1200);
    let reference = env.dir.path().join("reference.db");
    env.scan(&env.config("bkt", "")).await.unwrap();
    env.scan_into(&env.config("bkt", ""), &reference)
        .await
        .unwrap();
    // Change a third of the objects, delete some, add some.
    for i in (0..1200).step_by(3) {
        env.state().put_object(
            "bkt",
            &format!("obj-{i:05}"),
            b"v2",
            &[("owner", "night2"), ("i", &i.to_string())],
        );
    }
    for i in (1..1200).step_by(50) {
        env.state().delete_object("bkt", &format!("obj-{i:05}"));
    }
    for i in 0..40 {
        env.state()
            .put_object("bkt", &format!("obj-{i:05}-new"), b"n", &[("owner", "new")]);
    }
    env.scan_into(&env.config("bkt", ""), &reference)
        .await
        .unwrap();

    let cfg = env.config("bkt", "");
    for stop_after in [60, 120] {
        let cancel = CancellationToken::new();
        let (state, trigger) = (env.state().clone(), cancel.clone());
        let before = state.requests(Op::Head);
        tokio::spawn(async move {
            state
                .wait_for_requests(Some(Op::Head), before + stop_after)
                .await;
            trigger.cancel();
        });
        let stats = std::sync::Arc::new(s3meta::model::stats::Stats::default());
        let r = s3meta::scan::run(&cfg, env.s3(), &env.db, cancel, stats)
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::Interrupted);
        assert_eq!(r.mode, Mode::Rescan);
    }
    let last = env.scan(&cfg).await.unwrap();
    assert!(last.resumed);
    assert_eq!(last.outcome, Outcome::Complete);
    assert!(count(&env.db, "SELECT count(*) FROM changes") > 400);
    assert_eq!(dump(&env.db), dump(&reference));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_whose_head_failed_or_listing_lacks_an_etag_are_headed_again() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 30);
    env.state()
        .add_fault(Fault::head("obj-00005", Action::Status(403)));
    let first = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(first.outcome, Outcome::CompleteWithErrors);
    env.state().clear_faults();
    env.state().reset_counters();
    let second = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(second.outcome, Outcome::Complete);
    assert_eq!(env.state().requests(Op::Head), 1);
    assert_eq!(count(&env.db, "SELECT count(*) FROM object_errors"), 0);

    env.state().set_listing_etags(false);
    env.state().reset_counters();
    env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(env.state().requests(Op::Head), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_removes_a_prefix_and_prune_bounds_the_changes() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "a/", 30);
    fill(env.state(), "bkt", "b/", 20);
    env.scan(&env.config("bkt", "")).await.unwrap();
    env.scan(&env.config("bkt", "a/")).await.unwrap();
    env.state()
        .put_object("bkt", "b/obj-00001", b"changed", &[("owner", "z")]);
    env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(count(&env.db, "SELECT count(*) FROM changes"), 1);

    let forget = |args: &[&str]| {
        let mut cmd = env.bin();
        cmd.arg("forget").args(args).arg("--db").arg(&env.db);
        output(cmd)
    };
    let out = forget(&["s3://bkt/a/"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("30 objects, 1 scans"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count(&env.db, "SELECT count(*) FROM objects"), 20);
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM objects WHERE key >= 'a/' AND key < 'a0'"
        ),
        0
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM metadata m LEFT JOIN objects o USING (object_id) WHERE o.key IS NULL"
        ),
        0
    );
    assert_eq!(
        column(&env.db, "SELECT prefix FROM scans ORDER BY scan_id"),
        ["", ""]
    );
    assert!(column(&env.db, "PRAGMA foreign_key_check").is_empty());

    let out = forget(&["s3://bkt/", "--endpoint-url", "http://elsewhere:9000"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "holds bucket `bkt` only at {}",
            env.server.endpoint()
        )),
        "{}",
        stderr(&out)
    );
    let out = forget(&["--prune-changes-before", "yesterday"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("expected a date"), "{}", stderr(&out));

    let out = forget(&["--prune-changes-before", "2999-01-01", "--vacuum"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(count(&env.db, "SELECT count(*) FROM changes"), 0);
    assert_eq!(column(&env.db, "PRAGMA integrity_check"), ["ok"]);
    assert_eq!(count(&env.db, "SELECT count(*) FROM objects"), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_lists_what_rescans_noticed_in_the_query_formats() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 20);
    env.scan(&env.config("bkt", "")).await.unwrap();
    env.state()
        .put_object("bkt", "obj-00001", b"v2", &[("owner", "dora")]);
    env.scan(&env.config("bkt", "")).await.unwrap();
    env.state().delete_object("bkt", "obj-00002");
    env.state().put_object("bkt", "late", b"n", &[]);
    let third = env.scan(&env.config("bkt", "")).await.unwrap();

    let changes = |args: &[&str]| {
        let mut cmd = env.bin();
        cmd.arg("changes").args(args).arg("--db").arg(&env.db);
        output(cmd)
    };
    let out = changes(&["--format", "jsonl"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["kind"].as_str().unwrap(),
                r["key"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        summary,
        ["metadata obj-00001", "created late", "deleted obj-00002"]
    );
    assert_eq!(
        rows[0]["old_metadata"],
        serde_json::json!({"owner": "user1", "project": "apollo"})
    );
    assert_eq!(
        rows[0]["new_metadata"],
        serde_json::json!({"owner": "dora"})
    );
    assert_eq!(rows[0]["bucket"], "bkt");

    let out = changes(&["--since", &third.scan_id.to_string(), "--format", "csv"]).await;
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().count(), 3, "header + 2 rows: {csv}");
    assert!(
        csv.starts_with("change_id,scan_id,at,kind,store,bucket,key,"),
        "{csv}"
    );
    let out = changes(&["--kind", "deleted", "--format", "json"]).await;
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    let out = changes(&["--since", "2999-01-01", "--format", "jsonl"]).await;
    assert!(out.stdout.is_empty());
    let out = changes(&["--since", "last tuesday"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("expected a scan id"),
        "{}",
        stderr(&out)
    );
}

/// Review finding (issue 5): a page whose window spans thousands of deleted keys marks them
/// gone a chunk at a time, never loading the window whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_spanning_thousands_of_deleted_keys_marks_them_all_gone() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "k/", 2600);
    env.state().put_object("bkt", "z", b"z", &[]);
    env.scan(&env.config("bkt", "")).await.unwrap();
    for i in 0..2600 {
        env.state().delete_object("bkt", &format!("k/obj-{i:05}"));
    }
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.stats.gone, 2600);
    assert_eq!(
        env.state().requests(Op::Head),
        2601,
        "no HEAD in the rescan"
    );
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE state = 'gone'"),
        2600
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM changes WHERE kind = 'deleted'"
        ),
        2600
    );
}

/// Review finding (issue 5): an object rewritten and then deleted before its HEAD records the
/// listing known before this scan as its old side, not the new listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_object_answering_404_keeps_its_old_listing_on_the_deleted_row() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 5);
    env.scan(&env.config("bkt", "")).await.unwrap();
    let old_etag = column(
        &env.db,
        "SELECT list_etag FROM objects WHERE key = 'obj-00001'",
    );
    env.state()
        .put_object("bkt", "obj-00001", b"rewritten", &[]);
    env.state()
        .add_fault(Fault::head("obj-00001", Action::Status(404)));
    env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(
        column(
            &env.db,
            "SELECT kind || ' ' || old_etag || ' ' || coalesce(new_etag, '-') FROM changes"
        ),
        [format!("deleted {} -", old_etag[0])]
    );
}

/// Issue 13: `--full` is honoured when an unfinished rescan would be resumed: the rescan is
/// abandoned (and the log says so) and a full scan HEADs every object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_abandons_an_unfinished_rescan_and_says_so() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 450);
    let scan = |extra: &[&str]| {
        let mut cmd = env.scan_cmd("s3://bkt", &env.db);
        cmd.args(["--list-parallelism", "1", "--max-attempts", "1"])
            .args(extra);
        output(cmd)
    };
    let out = scan(&[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.state().put_object("bkt", "obj-00001", b"v2", &[]);
    env.state()
        .add_fault(Fault::list_page(3, Action::Status(500)).times(1));
    let out = scan(&[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        column(
            &env.db,
            "SELECT mode || ' ' || state FROM scans ORDER BY scan_id"
        ),
        ["full complete", "rescan interrupted"]
    );

    let before = env.state().requests(Op::Head);
    let out = scan(&["--full"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("--full: abandoned the unfinished rescan 2"),
        "{err}"
    );
    assert_eq!(env.state().requests(Op::Head) - before, 450, "every object");
    assert_eq!(
        column(
            &env.db,
            "SELECT mode || ' ' || state FROM scans ORDER BY scan_id"
        ),
        ["full complete", "rescan abandoned", "full complete"]
    );

    // Without --full an unfinished full scan is resumed as before; --full resumes it too.
    env.state()
        .add_fault(Fault::list_page(3, Action::Status(500)).times(1));
    env.state().reset_counters();
    let out = scan(&["--full"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = scan(&["--full"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("abandoned"), "{}", stderr(&out));
    assert_eq!(
        column(
            &env.db,
            "SELECT mode || ' ' || state FROM scans WHERE scan_id = 4"
        ),
        ["full complete"]
    );
}

/// Issue 14: a key deleted and then re-created is a `created` change like any new key — no
/// old metadata, the new metadata — and its earlier life's metadata rows are not carried over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_key_is_created_without_its_earlier_life() {
    let env = Env::new().await;
    let state = env.state();
    state.put_object(
        "bkt",
        "k",
        b"first",
        &[("owner", "alice"), ("draft", "yes")],
    );
    state.put_object("bkt", "other", b"o", &[]);
    env.scan(&env.config("bkt", "")).await.unwrap();
    state.delete_object("bkt", "k");
    env.scan(&env.config("bkt", "")).await.unwrap();
    // Re-created with the same metadata, and without one of its names.
    state.put_object("bkt", "k", b"second", &[("owner", "alice")]);
    env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(
        column(
            &env.db,
            "SELECT kind || ' ' || coalesce(old_metadata, '-') || ' ' || coalesce(new_metadata, '-')
             FROM v_changes WHERE key = 'k' ORDER BY change_id"
        ),
        ["deleted - -", r#"created - {"owner":"alice"}"#]
    );
    assert_eq!(
        column(
            &env.db,
            "SELECT name || '=' || value FROM v_metadata WHERE key = 'k'"
        ),
        ["owner=alice"]
    );
}
