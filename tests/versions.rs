//! Issue 16 §3: versioned buckets. `scan --all-versions` records every version and delete
//! marker (ListObjectVersions, a HEAD with versionId per version never seen), rescans HEAD
//! only new version ids and record vanished ones as gone, a kill -9 resumes to the
//! uninterrupted result, and plain and versions scans share one database in either order.

mod common;

use std::process::Stdio;

use common::*;
use s3meta::model::Mode;
use s3meta::scan::{Outcome, ScanConfig};

/// Turns versioning on and writes `n` keys, key `i` with `i % versions + 1` versions (metadata
/// `v` = its number), every `delete_every`-th then deleted (a delete marker on top).
fn fill_versions(
    s: &State,
    n: usize,
    key: impl Fn(usize) -> String,
    versions: usize,
    delete_every: usize,
) {
    s.enable_versioning("bkt");
    for i in 0..n {
        let key = key(i);
        for v in 0..=(i % versions) {
            let body = format!("{i}.{v}");
            s.put_object("bkt", &key, body.as_bytes(), &[("v", &v.to_string())]);
        }
        if i % delete_every == 0 {
            s.delete_object("bkt", &key);
        }
    }
}

fn versions_cfg(env: &Env, page_size: i32) -> ScanConfig {
    let mut cfg = env.config("bkt", "");
    cfg.target.versions = true;
    cfg.page_size = page_size;
    cfg
}

/// `a` has three versions (metadata changing), `b` two and a delete marker on top, `c` one,
/// `old` was written before versioning (its `null` version), `d` was deleted and written
/// again. Returns the number of versions (markers excluded) and of markers.
fn put_history(env: &Env) -> (i64, i64) {
    let s = env.state();
    s.put_object("bkt", "old", b"before versioning", &[("era", "old")]);
    s.enable_versioning("bkt");
    for i in 0..3 {
        let v = i.to_string();
        s.put_object("bkt", "a", v.as_bytes(), &[("rev", &v)]);
    }
    s.put_object("bkt", "b", b"b1", &[]);
    s.put_object("bkt", "b", b"b2", &[("owner", "bo")]);
    assert!(s.delete_object("bkt", "b"));
    s.put_object("bkt", "c", b"c", &[("owner", "cy")]);
    s.put_object("bkt", "d", b"d1", &[]);
    assert!(s.delete_object("bkt", "d"));
    s.put_object("bkt", "d", b"d2", &[]);
    (3 + 2 + 1 + 1 + 2, 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_and_delete_marker_is_recorded() {
    let env = Env::new().await;
    let (versions, markers) = put_history(&env);
    // Pages of two entries: a's three versions and b's three entries span pages.
    let report = env.scan(&versions_cfg(&env, 2)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    let s = env.state();
    assert_eq!(s.requests(Op::ListVersions), 6, "11 entries, 2 a page");
    // The check that every current key has its versions recorded: 4 keys, pages of 2.
    assert_eq!(s.requests(Op::List), 2);
    assert_eq!(s.requests(Op::Head), versions as u64);
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM versions WHERE NOT delete_marker AND state = 'ok'"
        ),
        versions
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM versions WHERE delete_marker AND state = 'ok' AND head_due = 0"
        ),
        markers
    );
    // Each key's versions as the store has them, newest first, the newest one latest.
    for key in ["a", "b", "c", "d", "old"] {
        let got = column(
            &env.db,
            &format!(
                "SELECT version_id FROM versions WHERE key = '{key}' ORDER BY list_modified DESC, object_id DESC"
            ),
        );
        assert_eq!(got, s.version_ids("bkt", key), "{key}");
        let latest = column(
            &env.db,
            &format!("SELECT version_id FROM versions WHERE key = '{key}' AND is_latest"),
        );
        assert_eq!(latest, s.version_ids("bkt", key)[..1], "{key}");
    }
    assert_eq!(
        column(&env.db, "SELECT version_id FROM versions WHERE key = 'old'"),
        ["null"]
    );
    // Each version's own metadata, read with versionId.
    assert_eq!(
        column(
            &env.db,
            "SELECT m.value FROM version_metadata m JOIN versions v USING (object_id)
             WHERE v.key = 'a' AND m.name = 'rev' ORDER BY v.list_modified"
        ),
        ["0", "1", "2"]
    );
    // A plain scan's tables are untouched.
    assert_eq!(count(&env.db, "SELECT count(*) FROM objects"), 0);

    // The query side: current versions by default, every version with --all-versions.
    let out = run(&env, "query", &["--all-versions", "--count"]).await;
    assert_eq!(stdout(&out).trim(), (versions + markers).to_string());
    let out = run(
        &env,
        "query",
        &[
            "--all-versions",
            "-w",
            "@delete_marker=true",
            "--format",
            "csv",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let out = run(
        &env,
        "query",
        &[
            "--all-versions",
            "-w",
            "@key=a",
            "-w",
            "@is_latest=false",
            "-w",
            "rev",
            "--format",
            "jsonl",
        ],
    )
    .await;
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["metadata"]["rev"], "1", "newest first");
    assert_eq!(lines[0]["is_latest"], 0);
    let out = run(&env, "query", &["-w", "@is_latest=true"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--all-versions"), "{}", stderr(&out));
    let out = run(
        &env,
        "query",
        &[
            "--sql",
            "SELECT count(*) AS n FROM v_versions WHERE is_latest AND NOT delete_marker",
            "--format",
            "csv",
        ],
    )
    .await;
    assert_eq!(stdout(&out).lines().nth(1), Some("4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescan_heads_only_new_versions_and_records_vanished_ones() {
    let env = Env::new().await;
    let (versions, _) = put_history(&env);
    let cfg = versions_cfg(&env, 2);
    env.scan(&cfg).await.unwrap();
    let s = env.state();
    // A night: a new version of `c`, `a`'s oldest version expires, the marker on `b` is
    // removed (b2 is current again).
    s.put_object("bkt", "c", b"c2", &[("owner", "cy2")]);
    let a_oldest = s.version_ids("bkt", "a")[2].clone();
    assert!(s.delete_version("bkt", "a", &a_oldest));
    let b_marker = s.version_ids("bkt", "b")[0].clone();
    assert!(s.delete_version("bkt", "b", &b_marker));
    let heads = s.requests(Op::Head);
    let report = env.scan(&cfg).await.unwrap();
    assert_eq!(report.mode, Mode::Rescan);
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(s.requests(Op::Head) - heads, 1, "only the new version of c");
    assert_eq!(report.stats.gone, 2);
    assert_eq!(
        column(
            &env.db,
            &format!("SELECT state FROM versions WHERE version_id IN ('{a_oldest}', '{b_marker}')")
        ),
        ["gone", "gone"]
    );
    assert_eq!(
        column(
            &env.db,
            "SELECT count(*) FROM versions WHERE key = 'c' AND is_latest"
        ),
        ["1"]
    );
    assert_eq!(
        column(
            &env.db,
            "SELECT m.value FROM version_metadata m JOIN versions v USING (object_id)
             WHERE v.key = 'c' AND v.is_latest"
        ),
        ["cy2"]
    );
    // b2 is latest again; nothing else changed: the database is what a fresh scan gives,
    // gone rows aside.
    let fresh = env.dir.path().join("fresh.db");
    env.scan_into(&cfg, &fresh).await.unwrap();
    let live = |db: &std::path::Path| {
        column(
            db,
            "SELECT key || ' ' || version_id || ' ' || is_latest || ' ' || delete_marker || ' '
                    || COALESCE(etag, '') || ' ' || COALESCE((SELECT group_concat(name || '=' || value)
                       FROM version_metadata m WHERE m.object_id = v.object_id), '')
             FROM versions v WHERE state != 'gone' ORDER BY 1",
        )
    };
    assert_eq!(live(&env.db), live(&fresh));
    assert_eq!(live(&fresh).len() as i64, versions + 2 + 1 - 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_versions_scan_resumes_to_the_uninterrupted_result() {
    let env = Env::new().await;
    let s = env.state();
    // 60 keys of up to 7 versions each, some deleted: pages of 5 end inside keys.
    fill_versions(s, 60, |i| format!("k/{i:03}"), 7, 5);
    let reference = env.dir.path().join("reference.db");
    env.scan_into(&versions_cfg(&env, 5), &reference)
        .await
        .unwrap();
    s.set_latency(Some(Op::ListVersions), std::time::Duration::from_millis(5));
    let scan = || {
        let mut cmd = env.bin();
        cmd.args([
            "scan",
            "s3://bkt",
            "--all-versions",
            "--page-size",
            "5",
            "--backoff-ms",
            "1",
            "--db",
        ])
        .arg(&env.db);
        cmd
    };
    for kill_at in [8, 8, 8] {
        let before = s.requests(Op::ListVersions);
        let mut child = scan().stderr(Stdio::null()).spawn().unwrap();
        s.wait_for_requests(Some(Op::ListVersions), before + kill_at)
            .await;
        child.kill().unwrap();
        assert!(
            child.wait().unwrap().code().is_none(),
            "killed, not finished"
        );
    }
    let out = output(scan()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("resumed"), "{}", stderr(&out));
    assert_same_db(&env.db, &reference);
    // And a rescan after a night of changes, killed and resumed, too.
    for i in (0..60).step_by(4) {
        s.put_object("bkt", &format!("k/{i:03}"), b"night", &[("v", "night")]);
    }
    let oldest = s.version_ids("bkt", "k/006").pop().unwrap();
    assert!(s.delete_version("bkt", "k/006", &oldest));
    env.scan_into(&versions_cfg(&env, 5), &reference)
        .await
        .unwrap();
    let before = s.requests(Op::ListVersions);
    let mut child = scan().stderr(Stdio::null()).spawn().unwrap();
    s.wait_for_requests(Some(Op::ListVersions), before + 30)
        .await;
    child.kill().unwrap();
    assert!(
        child.wait().unwrap().code().is_none(),
        "killed, not finished"
    );
    let out = output(scan()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_db(&env.db, &reference);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_versions_scans_share_a_database_in_either_order() {
    for versions_first in [false, true] {
        let env = Env::new().await;
        let (versions, markers) = put_history(&env);
        let plain = env.config("bkt", "");
        let all = versions_cfg(&env, 3);
        let (first, second) = if versions_first {
            (&all, &plain)
        } else {
            (&plain, &all)
        };
        let a = env.scan(first).await.unwrap();
        let b = env.scan(second).await.unwrap();
        // Two targets: the second is a full scan of its own, not a rescan of the first.
        assert_eq!((a.mode, b.mode), (Mode::Full, Mode::Full));
        let current = count(&env.db, "SELECT count(*) FROM objects WHERE state = 'ok'");
        assert_eq!(current, 4, "old, a, c, d");
        assert_eq!(
            count(&env.db, "SELECT count(*) FROM versions"),
            versions + markers
        );
        // Each one's rescan is a rescan of its own rows only.
        let heads = env.state().requests(Op::Head);
        let again = env.scan(first).await.unwrap();
        let again2 = env.scan(second).await.unwrap();
        assert_eq!((again.mode, again2.mode), (Mode::Rescan, Mode::Rescan));
        assert_eq!(env.state().requests(Op::Head), heads, "nothing changed");
        assert_eq!(
            count(&env.db, "SELECT count(*) FROM scans WHERE versions = 1"),
            2
        );
        let out = run(&env, "query", &["--count"]).await;
        assert_eq!(stdout(&out).trim(), "4");
    }
}

/// Parallel key ranges: a versions scan split while it lists (the splitter's probes list
/// current keys; a key whose versions span pages stays in one range) gives the database one
/// stream gives, and so does its rescan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_versions_scan_equals_one_stream() {
    let env = Env::new().await;
    let s = env.state();
    fill_versions(s, 400, |i| format!("p{}/k{i:04}", i % 4), 3, 9);
    let reference = env.dir.path().join("reference.db");
    env.scan_into(&versions_cfg(&env, 7), &reference)
        .await
        .unwrap();
    let mut parallel = versions_cfg(&env, 7);
    parallel.list_parallelism = 8;
    parallel.splits = s3meta::scan::Splits::Always;
    let report = env.scan(&parallel).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert!(
        count(&env.db, "SELECT count(*) FROM scan_ranges") > 1,
        "the scan was split"
    );
    assert_same_db(&env.db, &reference);
    for i in (0..400).step_by(11) {
        s.put_object("bkt", &format!("p{}/k{i:04}", i % 4), b"new", &[]);
    }
    env.scan_into(&versions_cfg(&env, 7), &reference)
        .await
        .unwrap();
    let report = env.scan(&parallel).await.unwrap();
    assert_eq!(report.mode, Mode::Rescan);
    assert_same_db(&env.db, &reference);
}

/// `plan` + `scan --range-json LINE --all-versions` per range + `merge` gives the database
/// one versions scan gives, beside a plain scan of the same bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_versions_shards_equal_one_versions_scan() {
    let env = Env::new().await;
    let s = env.state();
    fill_versions(s, 90, |i| format!("m/{i:03}"), 3, 8);
    let whole = env.dir.path().join("whole.db");
    env.scan_into(&versions_cfg(&env, 10), &whole)
        .await
        .unwrap();
    env.scan_into(&env.config("bkt", ""), &whole).await.unwrap();
    let mut plan = env.bin();
    plan.args(["plan", "s3://bkt", "--ranges", "3"]);
    let out = output(plan).await;
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", stderr(&out));
    let mut shards = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let db = env.dir.path().join(format!("shard{i}.db"));
        for versions in [true, false] {
            let mut cmd = env.bin();
            cmd.args(["scan", "--range-json", line, "--db"]).arg(&db);
            if versions {
                cmd.arg("--all-versions");
            }
            let out = output(cmd).await;
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        }
        shards.push(db);
    }
    let merged = env.dir.path().join("merged.db");
    let mut merge = env.bin();
    merge.arg("merge").arg(&merged).args(&shards);
    let out = output(merge).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_db(&merged, &whole);
    assert!(count(&merged, "SELECT count(*) FROM versions") > 150);
}

/// A store whose ListObjectVersions loses keys when it pages (SeaweedFS 4.48, through any
/// client): the versions scan checks every current key ListObjectsV2 lists against what it
/// recorded, and fails loudly (exit 1, one line) instead of completing an index that lacks
/// them; the versions it did record stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_losing_keys_in_versions_pages_fails_the_scan_loudly() {
    let env = Env::new().await;
    let s = env.state();
    put_history(&env);
    s.set_lossy_version_pages(true);
    let mut cmd = env.bin();
    cmd.args([
        "scan",
        "s3://bkt",
        "--all-versions",
        "--page-size",
        "2",
        "--db",
    ])
    .arg(&env.db);
    let out = output(cmd).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ListObjectVersions skipped"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(count(&env.db, "SELECT count(*) FROM versions") > 0);
    assert_eq!(column(&env.db, "SELECT state FROM scans"), ["interrupted"]);
    // Once the store pages right, a new scan (--restart) completes.
    s.set_lossy_version_pages(false);
    let report = env
        .scan(&s3meta::scan::ScanConfig {
            restart: true,
            ..versions_cfg(&env, 1000)
        })
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM versions WHERE state != 'gone'"
        ),
        11
    );
}

/// `forget` removes a bucket's versions with its objects (the bucket row goes too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_removes_versions_too() {
    let env = Env::new().await;
    put_history(&env);
    env.scan(&versions_cfg(&env, 3)).await.unwrap();
    env.scan(&env.config("bkt", "")).await.unwrap();
    let out = run(&env, "forget", &["s3://bkt"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for table in [
        "versions",
        "version_metadata",
        "objects",
        "scans",
        "buckets",
    ] {
        assert_eq!(
            count(&env.db, &format!("SELECT count(*) FROM {table}")),
            0,
            "{table}"
        );
    }
}

/// `estimate --all-versions` counts what a versions scan sends: its ListObjectVersions pages
/// plus the ListObjectsV2 pass over the current keys, a HEAD per version (markers none), and
/// for a rescan the HEADs of the version ids never seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimate_counts_what_a_versions_scan_sends() {
    let env = Env::new().await;
    fill_versions(env.state(), 700, |i| format!("k{i:04}"), 3, 5);
    let estimate = || {
        let mut cmd = env.bin();
        cmd.args(["estimate", "s3://bkt", "--all-versions", "--format", "json"])
            .arg("--db")
            .arg(&env.db);
        async {
            let out = output(cmd).await;
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        }
    };
    let e = estimate().await;
    let (versions, markers) = ((0..700u64).map(|i| i % 3 + 1).sum::<u64>(), 140);
    assert_eq!(
        (
            e["objects"].as_u64(),
            e["delete_markers"].as_u64(),
            e["full_heads"].as_u64(),
            e["list_requests"].as_u64(),
            e["next_scan"].as_str(),
        ),
        (
            Some(versions + markers),
            Some(markers),
            Some(versions),
            Some(2 + 1),
            Some("full")
        )
    );
    assert_eq!(env.state().requests(Op::Head), 0, "estimate never HEADs");

    let cfg = versions_cfg(&env, 1000);
    env.state().reset_counters();
    env.scan(&cfg).await.unwrap();
    let sent = |op| env.state().requests(op);
    assert_eq!(
        (sent(Op::ListVersions) + sent(Op::List), sent(Op::Head)),
        (3, versions),
        "the scan sends what estimate said"
    );

    for i in [1, 2, 3] {
        env.state()
            .put_object("bkt", &format!("k{i:04}"), b"new", &[]);
    }
    let e = estimate().await;
    assert_eq!(
        (e["rescan_heads"].as_u64(), e["next_scan"].as_str()),
        (Some(3), Some("rescan"))
    );
    env.state().reset_counters();
    env.scan(&cfg).await.unwrap();
    assert_eq!(
        env.state().requests(Op::Head),
        3,
        "the rescan sends what estimate said"
    );
}

/// `status` says a scan is a versions scan and lists its versions in error (with the
/// version id), counted with the current objects'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_versions_scans_and_their_errors() {
    let env = Env::new().await;
    fill_versions(env.state(), 20, |i| format!("k{i:02}"), 2, 100);
    env.state()
        .add_fault(Fault::head("k03", Action::Status(403)));
    env.scan(&versions_cfg(&env, 7)).await.unwrap();
    let ids = env.state().version_ids("bkt", "k03");
    let mut cmd = env.bin();
    cmd.args(["status", "--format", "json", "--db"])
        .arg(&env.db);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["scans"][0]["versions"], true);
    assert_eq!(s["scans"][0]["objects_in_error"], ids.len());
    assert_eq!(s["errors_total"], ids.len());
    let mut listed: Vec<String> = s["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version_id"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut ids = ids;
    ids.sort();
    assert_eq!(listed, ids);

    let mut cmd = env.bin();
    cmd.args(["status", "--db"]).arg(&env.db);
    let out = output(cmd).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("full scan, every version, complete"),
        "{text}"
    );
    assert!(
        text.contains(&format!("s3://bkt/k03 (version {})", ids[0])),
        "{text}"
    );
}

/// Tags change while a version does not (PutObjectTagging): a `--tags` (all) rescan of a
/// versions scan reads the tags of every version again, `--tags=skip-unchanged` of none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tags_rescan_reads_the_tags_of_unchanged_versions() {
    use s3meta::model::TagsMode;
    let env = Env::new().await;
    fill_versions(env.state(), 10, |i| format!("k{i}"), 2, 100);
    let versions = (0..10).map(|i| i % 2 + 1).sum::<u64>();
    let cfg = |mode| ScanConfig {
        tags: Some(mode),
        ..versions_cfg(&env, 4)
    };
    env.scan(&cfg(TagsMode::All)).await.unwrap();
    let tag_of = |key: &str| -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(&env.db).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT t.tag, t.value FROM v_version_tags t JOIN versions v USING (key, version_id)
                 WHERE t.key = ?1 AND v.is_latest ORDER BY 1",
            )
            .unwrap();
        stmt.query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert!(tag_of("k2").is_empty());

    assert!(env.state().set_tags("bkt", "k2", &[("team", "blue")]));
    env.state().reset_counters();
    env.scan(&cfg(TagsMode::All)).await.unwrap();
    assert_eq!(
        (
            env.state().requests(Op::Head),
            env.state().requests(Op::GetTagging)
        ),
        (0, versions),
        "nothing new to HEAD; every version's tags read"
    );
    assert_eq!(tag_of("k2"), [("team".to_string(), "blue".to_string())]);

    assert!(env.state().set_tags("bkt", "k3", &[("team", "red")]));
    env.state().reset_counters();
    env.scan(&cfg(TagsMode::SkipUnchanged)).await.unwrap();
    assert_eq!(env.state().requests(Op::GetTagging), 0);
    assert!(
        tag_of("k3").is_empty(),
        "skip-unchanged skips them, as named"
    );
}
