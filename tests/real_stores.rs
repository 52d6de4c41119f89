//! Stores that behave unlike S3 (issue 12): path-component listing order (SeaweedFS), LIST
//! bodies cut short with a matching Content-Length, and rewrites within the second of the
//! previous write. Each equals, or is refused with one line — never a partial index.

mod common;

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use common::*;
use s3meta::scan::Outcome;

/// Keys whose order differs between S3's byte order and path-component order: directories
/// beside files and siblings that sort between `/` and the rest (`logs/` and `logs-old`,
/// `a/b` and `a!x`, `a.c`, `a0`), deep and flat parts, `n` keys in all (about).
fn sibling_keys(n: usize) -> Vec<String> {
    let mut keys: Vec<String> = [
        "a", "a/b", "a/c/d", "a/z", "a!x", "a-b", "a.c", "a0", "ab", "logs.txt", "logs-old", "d06",
        "x y", "x/y",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    for i in 0..n.saturating_sub(keys.len()) {
        keys.push(match i % 6 {
            0 => format!("logs/{:02}/obj-{i:05}", i % 9),
            1 => format!("logs-old/{i:05}"),
            2 => format!("d{:02}/sub{}/obj-{i:06}", i % 12, i % 4),
            3 => format!("d{:02}-x/{i:05}", i % 12),
            4 => format!("flat-{i:06}"),
            _ => format!("logs/{:02}-{i:05}", i % 9),
        });
    }
    keys
}

fn put_all(state: &State, keys: &[String]) {
    for (i, key) in keys.iter().enumerate() {
        let n = i.to_string();
        let meta: &[(&str, &str)] = if i % 3 == 0 {
            &[]
        } else {
            &[("n", &n), ("owner", "alice")]
        };
        state.put_object("bkt", key, key.as_bytes(), meta);
    }
}

/// Night two: rewrites, deletions and new siblings.
fn change(state: &State, keys: &[String]) {
    for (i, key) in keys.iter().enumerate() {
        match i % 17 {
            0 => drop(state.delete_object("bkt", key)),
            5 => drop(state.put_object("bkt", key, b"rewritten", &[("night", "2")])),
            _ => {}
        }
    }
    for i in 0..40 {
        state.put_object("bkt", &format!("logs-{i:02}/new"), b"n", &[]);
        state.put_object("bkt", &format!("d03/sub9/new-{i:02}"), b"n", &[]);
    }
}

/// The same scan against the same server state listed in byte order with one stream.
async fn reference(env: &Env, name: &str) -> std::path::PathBuf {
    let db = env.dir.path().join(name);
    env.state().set_path_order(false);
    env.scan_into(&env.config("bkt", ""), &db).await.unwrap();
    env.state().set_path_order(true);
    db
}

fn parallel(env: &Env) -> s3meta::scan::ScanConfig {
    s3meta::scan::ScanConfig {
        list_parallelism: 16,
        // These tests are about ranges cut in path order: cut whether or not HEADs wait.
        splits: s3meta::scan::Splits::Always,
        ..env.config("bkt", "")
    }
}

/// Issue 12: a path-order store scanned with 16 streams (the default), then rescanned after
/// a night of changes, equals a byte-order scan of the same objects; the order is learnt
/// and recorded, and the rescan records exactly the deletions that happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_order_store_is_scanned_and_rescanned_exactly() {
    let env = Env::new().await;
    let keys = sibling_keys(3000);
    put_all(env.state(), &keys);
    let night1 = reference(&env, "ref1.db").await;
    let report = env.scan(&parallel(&env)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_same_db(&env.db, &night1);
    assert_eq!(column(&env.db, "SELECT key_order FROM buckets"), ["path"]);
    let ranges = count(&env.db, "SELECT count(*) FROM scan_ranges");
    assert!(ranges > 4, "the scan was split ({ranges} ranges)");

    change(env.state(), &keys);
    let deleted = keys.len().div_ceil(17) as i64;
    let night2 = env.dir.path().join("ref2.db");
    std::fs::copy(&night1, &night2).unwrap();
    reference(&env, "ref2.db").await;
    let report = env.scan(&parallel(&env)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_same_db(&env.db, &night2);
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM changes WHERE kind = 'deleted'"
        ),
        deleted
    );
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE state = 'gone'"),
        deleted
    );
    let check: String = column(&env.db, "PRAGMA integrity_check").join(",");
    assert_eq!(check, "ok");
}

/// Issue 12: SIGKILLs of a 16-stream scan of a path-order store, then a resume, end equal
/// to an uninterrupted byte-order scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_resume_on_a_path_order_store() {
    let env = Env::new().await;
    put_all(env.state(), &sibling_keys(4000));
    let reference = reference(&env, "ref.db").await;
    env.state()
        .set_latency(Some(Op::List), Duration::from_millis(20));
    for kill_after in [30u64, 45] {
        let before = env.state().requests(Op::List);
        // Kills with ranges in flight: cut them in the full scan too (with probes, the LIST
        // count the kills wait for is reached).
        let mut child = env
            .scan_cmd("s3://bkt", &env.db)
            .args(["--split-ranges", "always"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        env.state()
            .wait_for_requests(Some(Op::List), before + kill_after)
            .await;
        child.kill().unwrap();
        assert!(child.wait().unwrap().code().is_none());
    }
    let out = output(env.scan_cmd("s3://bkt", &env.db)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_db(&env.db, &reference);
}

/// Issue 12: `plan` cuts in the store's order (and says so), and the shards merge to one
/// scan's database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_merge_on_a_path_order_store() {
    let env = Env::new().await;
    put_all(env.state(), &sibling_keys(3000));
    let reference = reference(&env, "ref.db").await;
    let mut cmd = env.bin();
    cmd.args(["plan", "s3://bkt", "--ranges", "5"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 5);
    assert!(
        lines.iter().all(|l| l.contains("\"order\":\"path\"")),
        "{lines:?}"
    );
    let mut shards = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let db = env.dir.path().join(format!("shard-{i}.db"));
        let mut cmd = env.bin();
        cmd.args(["scan", "--range-json", line, "--page-size", "100", "--db"])
            .arg(&db);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{line}: {}", stderr(&out));
        shards.push(db);
    }
    let all = env.dir.path().join("all.db");
    let mut cmd = env.bin();
    cmd.arg("merge").arg(&all).args(&shards);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The merged database holds what one scan does (its scans aside).
    assert_same_db(&all, &reference);
}

/// Issue 12: ranges cut in byte order (by an older release, which recorded no order) are
/// refused with one line once the store shows path order; and so are plan lines of an older
/// release with such cuts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_made_in_byte_order_are_refused_on_a_path_order_store() {
    let env = Env::new().await;
    put_all(env.state(), &sibling_keys(3000));
    env.state().set_path_order(false);
    env.state()
        .set_latency(Some(Op::List), Duration::from_millis(20));
    // The listing's own pages (2 on) are slow, the splitter's one-key probes (first pages)
    // are not: the scan is still listing when its first split is committed, however loaded
    // the machine is.
    for page in 2..=40 {
        env.state().add_fault(Fault::list_page(
            page,
            Action::Delay(Duration::from_millis(300)),
        ));
    }
    // Under `logs` the keys differ first at `/`, `-` and `.`: the cuts hold such characters.
    let mut child = env
        .scan_cmd("s3://bkt/logs", &env.db)
        .args(["--split-ranges", "always"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_row(
        &env.db,
        "SELECT 1 FROM scan_ranges WHERE start_after IS NOT NULL",
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    env.state().clear_faults();
    let bounds = column(
        &env.db,
        "SELECT start_after FROM scan_ranges WHERE start_after IS NOT NULL",
    );
    assert!(
        bounds
            .iter()
            .any(|b| !s3meta::keys::KeyOrder::is_neutral(b)),
        "the killed scan was split where the orders disagree: {bounds:?}"
    );
    // As an older release left it: no order recorded anywhere.
    let conn = rusqlite::Connection::open(&env.db).unwrap();
    conn.execute_batch("UPDATE buckets SET key_order = NULL; UPDATE scans SET key_order = NULL;")
        .unwrap();
    drop(conn);
    let before = dump(&env.db);
    env.state().set_path_order(true);
    env.state().set_latency(Some(Op::List), Duration::ZERO);
    let out = output(env.scan_cmd("s3://bkt/logs", &env.db)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("were cut in S3's UTF-8 byte order"), "{err}");
    assert!(err.contains("--restart"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(dump(&env.db), before);

    let old_line = r#"{"bucket":"bkt","prefix":"","start_after":"logs-old/00007","end":"logs/05/obj-00500","index":1,"of":3}"#;
    let mut cmd = env.bin();
    cmd.args(["scan", "--range-json", old_line, "--db"])
        .arg(env.dir.path().join("shard.db"));
    let out = output(cmd).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("s3meta plan"), "{err}");
}

/// Issue 12: a store that changes its order under a recorded one is refused, not scanned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_contradicts_the_recorded_order_stops_the_scan() {
    let env = Env::new().await;
    put_all(env.state(), &sibling_keys(500));
    env.state().set_path_order(false);
    let out = output(env.scan_cmd("s3://bkt", &env.db)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(column(&env.db, "SELECT key_order FROM buckets"), ["byte"]);
    env.state().set_path_order(true);
    let out = output(env.scan_cmd("s3://bkt", &env.db)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("but its earlier listings showed S3's UTF-8 byte order"),
        "{err}"
    );
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE state = 'gone'"),
        0
    );
}

/// Issue 12: a ListObjectsV2 body cut in half with a matching Content-Length is retried like
/// a 500 — on the first page and mid-listing, in a full scan and in a rescan — never taken
/// for a short page (which lost keys and made false deletions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_listing_body_is_retried_never_taken_for_a_page() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "p/", 1250);
    let reference = env.dir.path().join("ref.db");
    env.scan_into(&env.config("bkt", ""), &reference)
        .await
        .unwrap();
    for page in [1, 5] {
        env.state()
            .add_fault(Fault::list_page(page, Action::CutBody).times(1));
    }
    env.state().reset_counters();
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(env.state().requests(Op::List), 13 + 2);
    assert_same_db(&env.db, &reference);

    // A rescan of the complete prefix: no false deletions.
    for page in [2, 13] {
        env.state()
            .add_fault(Fault::list_page(page, Action::CutBody).times(1));
    }
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(report.stats.gone, 0);
    assert_eq!(count(&env.db, "SELECT count(*) FROM changes"), 0);
}

/// Issue 12: a rewrite of the same body within the second of the previous write keeps ETag,
/// size and Last-Modified, so the listing cannot show it: an object HEADed within a second of
/// its Last-Modified (by the store's Date) is HEADed again by the next rescan, and only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_second_rewrite_is_found_by_the_next_rescan() {
    let env = Env::new().await;
    let state = env.state();
    state.set_whole_seconds(true);
    state.set_object_age(Duration::ZERO);
    // Frozen near the real time: the SDK adjusts its signing clock to a skewed Date.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
    state.set_clock(Some(t0));
    state.put_object("bkt", "x", b"same body", &[("v", "A")]);
    state.put_object("bkt", "old", b"other", &[("v", "1")]);
    env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(
        column(
            &env.db,
            "SELECT key || '=' || recheck FROM objects ORDER BY key"
        ),
        ["old=1", "x=1"]
    );
    // Later in the same second, the same body with other metadata.
    state.set_clock(Some(t0 + Duration::from_millis(600)));
    state.put_object("bkt", "x", b"same body", &[("v", "B")]);
    state.set_clock(Some(t0 + Duration::from_secs(30)));
    state.reset_counters();
    env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(state.requests(Op::Head), 2);
    assert_eq!(
        column(&env.db, "SELECT value FROM v_metadata WHERE key = 'x'"),
        ["B"]
    );
    // HEADed long after Last-Modified now: the next rescan needs no HEAD.
    assert_eq!(count(&env.db, "SELECT sum(recheck) FROM objects"), 0);
    state.reset_counters();
    env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(state.requests(Op::Head), 0);
}

/// Issue 15: a small target (under 20 pages: its full scan records no order) is rescanned
/// with its pages only — no probe for the store's order — when no stored key lies on
/// different sides of a page's bounds in byte and path order; in both kinds of store, and
/// the rescan records exactly the night's changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_rescan_sends_only_its_pages_in_either_order() {
    for path_order in [false, true] {
        let env = Env::new().await;
        // 9 pages of 10 under three directories, names without `/`-adjacent ambiguity.
        let keys: Vec<String> = (0..90)
            .map(|i| format!("d{}/obj-{i:03}.bin", i % 3))
            .collect();
        put_all(env.state(), &keys);
        let night1 = reference(&env, "ref1.db").await;
        env.state().set_path_order(path_order);
        let cfg = s3meta::scan::ScanConfig {
            page_size: 10,
            ..env.config("bkt", "")
        };
        env.state().reset_counters();
        env.scan(&cfg).await.unwrap();
        assert_eq!(env.state().requests(Op::List), 9, "full scan: 9 pages");
        assert_same_db(&env.db, &night1);

        for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 7 == 0) {
            assert!(env.state().delete_object("bkt", key));
            env.state()
                .put_object("bkt", &format!("d{}/new-{i:03}", i % 3), b"n", &[]);
        }
        let night2 = env.dir.path().join("ref2.db");
        std::fs::copy(&night1, &night2).unwrap();
        reference(&env, "ref2.db").await;
        env.state().set_path_order(path_order);
        env.state().reset_counters();
        let rescan = env.scan(&cfg).await.unwrap();
        assert_eq!(rescan.mode, s3meta::model::Mode::Rescan);
        assert_eq!(
            env.state().requests(Op::List),
            9,
            "rescan of 9 pages (path order: {path_order})"
        );
        assert_same_db(&env.db, &night2);
        assert_eq!(
            count(&env.db, "SELECT count(*) FROM objects WHERE state = 'gone'"),
            13
        );
    }
}

/// Issue 15: a rescan whose stored key lies before a page's last key in one order and after
/// it in the other (`k000/x` and `k000.y`) learns the store's order before committing that
/// page. Committed in the guessed byte order, the deleted `k000/x` would fall in no page's
/// window on a path-order store once the next page showed the order (`k001/a` before
/// `k001.b`), and the index would keep it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_key_across_a_page_bound_makes_the_rescan_learn_the_order() {
    for path_order in [true, false] {
        let env = Env::new().await;
        let night1: Vec<String> = ["a/0", "k000/x", "k001/a"].map(String::from).to_vec();
        put_all(env.state(), &night1);
        let ref1 = reference(&env, "ref1.db").await;
        env.state().set_path_order(path_order);
        let cfg = s3meta::scan::ScanConfig {
            page_size: 2,
            ..env.config("bkt", "")
        };
        env.scan(&cfg).await.unwrap();
        assert_same_db(&env.db, &ref1);
        assert_eq!(
            column(
                &env.db,
                "SELECT coalesce(key_order, 'unknown') FROM buckets"
            ),
            ["unknown"],
            "no pair of these keys shows the order"
        );

        assert!(env.state().delete_object("bkt", "k000/x"));
        env.state().put_object("bkt", "k000.y", b"n", &[]);
        env.state().put_object("bkt", "k001.b", b"n", &[]);
        let ref2 = env.dir.path().join("ref2.db");
        std::fs::copy(&ref1, &ref2).unwrap();
        reference(&env, "ref2.db").await;
        env.state().set_path_order(path_order);
        env.state().reset_counters();
        env.scan(&cfg).await.unwrap();
        assert_same_db(&env.db, &ref2);
        assert_eq!(
            column(&env.db, "SELECT state FROM objects WHERE key = 'k000/x'"),
            ["gone"],
            "path order: {path_order}"
        );
        assert_eq!(
            env.state().requests(Op::List),
            3,
            "2 pages and the order's probe around a key the page lists"
        );
    }
}

/// Review of the above: a page that needs the order but lists no key with `/`, after a page
/// that listed one, while the stored anchor's directory is empty (`0/gone`): the order is
/// learnt around the key listed earlier, so the deleted `c/x` (across the bound `c-`) is
/// recorded gone on a path-order store too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_without_slashes_learns_the_order_around_a_key_listed_earlier() {
    for path_order in [true, false] {
        let env = Env::new().await;
        put_all(
            env.state(),
            &["0/gone", "a/1", "b", "c/x", "d/1"].map(String::from),
        );
        env.state().set_path_order(path_order);
        let cfg = s3meta::scan::ScanConfig {
            page_size: 2,
            ..env.config("bkt", "")
        };
        env.scan(&cfg).await.unwrap();
        assert_eq!(
            column(
                &env.db,
                "SELECT coalesce(key_order, 'unknown') FROM buckets"
            ),
            ["unknown"]
        );
        for key in ["0/gone", "c/x"] {
            assert!(env.state().delete_object("bkt", key));
        }
        for key in ["c!", "c-", "d-"] {
            env.state().put_object("bkt", key, b"n", &[]);
        }
        env.scan(&cfg).await.unwrap();
        assert_eq!(
            column(
                &env.db,
                "SELECT key FROM objects WHERE state = 'gone' ORDER BY key"
            ),
            ["0/gone", "c/x"],
            "path order: {path_order}"
        );
        let fresh = env.dir.path().join("fresh.db");
        env.scan_into(&cfg, &fresh).await.unwrap();
        let live = "SELECT key FROM objects WHERE state != 'gone' ORDER BY key";
        assert_eq!(column(&env.db, live), column(&fresh, live));
    }
}

/// Review of the above, versions: a page ending inside a key (`b`, one of its two versions)
/// has its window end at the last complete key (`a-`), which a stored version (`a/x`, since
/// deleted) lies across: the order is learnt before the page commits, and `a/x` is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_versions_page_ending_inside_a_key_is_checked_at_its_last_complete_key() {
    for path_order in [true, false] {
        let env = Env::new().await;
        let s = env.state();
        s.enable_versioning("bkt");
        for key in ["0/q", "a", "a/x", "b"] {
            s.put_object("bkt", key, b"1", &[]);
        }
        s.set_path_order(path_order);
        let mut cfg = env.config("bkt", "");
        cfg.target.versions = true;
        cfg.page_size = 4;
        env.scan(&cfg).await.unwrap();
        let ax = s.version_ids("bkt", "a/x")[0].clone();
        assert!(s.delete_version("bkt", "a/x", &ax));
        s.put_object("bkt", "a-", b"1", &[]);
        s.put_object("bkt", "b", b"2", &[]);
        s.put_object("bkt", "b/1", b"1", &[]);
        s.put_object("bkt", "b-", b"1", &[]);
        env.scan(&cfg).await.unwrap();
        assert_eq!(
            column(&env.db, "SELECT key FROM versions WHERE state = 'gone'"),
            ["a/x"],
            "path order: {path_order}"
        );
        let fresh = env.dir.path().join("fresh.db");
        env.scan_into(&cfg, &fresh).await.unwrap();
        let live = "SELECT key || ' ' || version_id FROM versions WHERE state != 'gone' ORDER BY 1";
        assert_eq!(column(&env.db, live), column(&fresh, live));
    }
}
