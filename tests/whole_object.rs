//! The whole object (issue 16): every header HEAD returns, object tags (`--tags`), and a
//! database of the previous release migrated in place.

mod common;

use std::path::Path;

use common::*;
use s3meta::model::TagsMode;
use s3meta::scan::{Outcome, ScanConfig};
use s3meta_testserver::{Action, Fault, ObjectSpec, Op};

/// The value of header `name` among `headers`, as stored text.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn one(db: &Path, sql: &str) -> String {
    let mut rows = column(db, sql);
    assert_eq!(rows.len(), 1, "{sql}");
    rows.remove(0)
}

/// Issue 16 §4: each header is stored as sent (the retain-until date normalized), the part
/// count comes from the ETag, and each is an `@` field of `query`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_header_head_returns_is_recorded_and_queryable() {
    let env = Env::new().await;
    let n = 20;
    for i in 0..n {
        let spec = ObjectSpec {
            body: Some(vec![b'x'; i]),
            etag: (i % 3 == 0).then(|| format!("{:032x}-{}", i + 1, i + 2)),
            headers: extra_headers(i),
            ..ObjectSpec::default()
        };
        env.state()
            .put_object_with("bkt", &format!("k{i:02}"), spec);
    }
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    for i in 0..n {
        let h = extra_headers(i);
        let row = |col: &str| {
            one(
                &env.db,
                &format!("SELECT {col} FROM v_objects WHERE key = 'k{i:02}'"),
            )
        };
        let text = |name: &str| header(&h, name).unwrap_or("NULL").to_string();
        assert_eq!(row("sse"), text("x-amz-server-side-encryption"), "{i}");
        assert_eq!(
            row("sse_kms_key_id"),
            text("x-amz-server-side-encryption-aws-kms-key-id")
        );
        let bucket_key = header(&h, "x-amz-server-side-encryption-bucket-key-enabled")
            .map_or("NULL", |v| if v == "true" { "1" } else { "0" });
        assert_eq!(row("sse_bucket_key"), bucket_key);
        assert_eq!(
            row("sse_customer_algorithm"),
            text("x-amz-server-side-encryption-customer-algorithm")
        );
        let checksum = h
            .iter()
            .find(|(n, _)| n.starts_with("x-amz-checksum-") && n != "x-amz-checksum-type");
        assert_eq!(
            row("checksum_algorithm"),
            checksum.map_or("NULL".into(), |(n, _)| n["x-amz-checksum-".len()..]
                .to_ascii_uppercase())
        );
        assert_eq!(
            row("checksum"),
            checksum.map_or("NULL", |(_, v)| v.as_str())
        );
        assert_eq!(row("checksum_type"), text("x-amz-checksum-type"));
        assert_eq!(row("lock_mode"), text("x-amz-object-lock-mode"));
        // Stored as every time here: RFC 3339 UTC with milliseconds.
        assert_eq!(
            row("lock_retain_until"),
            text("x-amz-object-lock-retain-until-date")
        );
        assert_eq!(row("legal_hold"), text("x-amz-object-lock-legal-hold"));
        assert_eq!(row("replication_status"), text("x-amz-replication-status"));
        assert_eq!(row("restore"), text("x-amz-restore"));
        assert_eq!(row("archive_status"), text("x-amz-archive-status"));
        assert_eq!(
            row("website_redirect"),
            text("x-amz-website-redirect-location")
        );
        let parts = if i % 3 == 0 {
            (i + 2).to_string()
        } else {
            "NULL".into()
        };
        assert_eq!(row("parts_count"), parts);
        assert_eq!(row("is_multipart"), if i % 3 == 0 { "1" } else { "0" });
        // No tags: AWS then sends no count, which is "not known".
        assert_eq!(row("tagging_count"), "NULL");
        assert_eq!(row("tags"), "NULL");
    }

    // Each is a filter, and a jsonl field.
    let kms = (0..n)
        .filter(|i| header(&extra_headers(*i), "x-amz-server-side-encryption") == Some("aws:kms"))
        .count();
    let multipart = (0..n).filter(|i| i % 3 == 0).count();
    let locked_late = (0..n)
        .filter(|i| {
            header(&extra_headers(*i), "x-amz-object-lock-retain-until-date")
                .is_some_and(|d| d > "2030-05-01")
        })
        .count();
    for (filter, want) in [
        ("@sse=aws:kms", kms),
        ("@parts_count>1", multipart),
        ("@lock_retain_until>=2030-05-01", locked_late),
    ] {
        let out = run(&env, "query", &["--where", filter, "--count"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), want.to_string(), "{filter}");
        assert!(want > 0 && want < n, "{filter}: {want}");
    }
    let out = run(&env, "query", &["--format", "jsonl", "--where", "@key=k00"]).await;
    let record: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    for field in [
        "sse",
        "checksum_algorithm",
        "lock_mode",
        "parts_count",
        "is_multipart",
        "tags",
    ] {
        assert!(record.get(field).is_some(), "{field}: {record}");
    }
    assert_eq!(record["parts_count"], 2);
    assert_eq!(record["is_multipart"], 1);
}

/// Objects for the tag tests: tagged (HEAD counts them), untagged without a count (as AWS
/// sends), and untagged with an explicit `x-amz-tagging-count: 0`.
fn put_tag_objects(env: &Env) {
    for i in 0..4 {
        let spec = ObjectSpec {
            body: Some(vec![b't'; i + 1]),
            meta: vec![("owner".into(), "alice".into())],
            tags: vec![
                ("team".into(), format!("t{i}")),
                ("env".into(), "prod".into()),
            ],
            ..ObjectSpec::default()
        };
        env.state()
            .put_object_with("bkt", &format!("tagged/{i}"), spec);
    }
    for i in 0..4 {
        env.state()
            .put_object("bkt", &format!("plain/{i}"), b"p", &[("owner", "bob")]);
    }
    for i in 0..2 {
        let spec = ObjectSpec {
            body: Some(b"z".to_vec()),
            headers: vec![("x-amz-tagging-count".into(), "0".into())],
            ..ObjectSpec::default()
        };
        env.state()
            .put_object_with("bkt", &format!("zero/{i}"), spec);
    }
}

fn tags_cfg(env: &Env, mode: Option<TagsMode>) -> ScanConfig {
    ScanConfig {
        tags: mode,
        ..env.config("bkt", "")
    }
}

/// Issue 16 §2: GetObjectTagging only where HEAD does not count 0; a `--tags` rescan finds
/// added, changed and removed tags on unchanged objects (one request each, no HEAD); the
/// `skip-unchanged` mode sends none and misses them; a scan without `--tags` leaves tags be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_read_where_needed_and_rescans_find_tag_only_changes() {
    let env = Env::new().await;
    put_tag_objects(&env);
    let s = env.state();
    let report = env
        .scan(&tags_cfg(&env, Some(TagsMode::All)))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    // 4 tagged + 4 without a count; the two counted 0 cost nothing.
    assert_eq!(s.requests(Op::GetTagging), 8);
    assert_eq!((report.stats.tag_requests, report.stats.tags_read), (8, 10));
    assert_eq!(
        one(&env.db, "SELECT tags FROM v_objects WHERE key = 'tagged/2'"),
        r#"{"env":"prod","team":"t2"}"#
    );
    assert_eq!(
        column(
            &env.db,
            "SELECT DISTINCT tags FROM v_objects WHERE key NOT LIKE 'tagged/%'"
        ),
        ["{}"]
    );
    assert_eq!(
        one(
            &env.db,
            "SELECT tagging_count FROM objects WHERE key = 'tagged/0'"
        ),
        "2"
    );
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM v_tags WHERE tag = 'team'"),
        4
    );

    // Tags change; ETag and Last-Modified stay, so the listing shows nothing.
    assert!(s.set_tags("bkt", "tagged/0", &[("team", "t9"), ("env", "prod")]));
    assert!(s.set_tags("bkt", "tagged/1", &[]));
    assert!(s.set_tags("bkt", "plain/0", &[("new", "yes")]));
    s.reset_counters();
    let report = env
        .scan(&tags_cfg(&env, Some(TagsMode::SkipUnchanged)))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!((s.requests(Op::Head), s.requests(Op::GetTagging)), (0, 0));
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM changes WHERE kind = 'tags'"),
        0
    );

    s.reset_counters();
    let report = env
        .scan(&tags_cfg(&env, Some(TagsMode::All)))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!((s.requests(Op::Head), s.requests(Op::GetTagging)), (0, 10));
    assert_eq!(
        column(
            &env.db,
            "SELECT key || ' ' || old_tags || ' ' || new_tags FROM v_changes WHERE kind = 'tags' ORDER BY key"
        ),
        [
            r#"plain/0 {} {"new":"yes"}"#,
            r#"tagged/0 {"env":"prod","team":"t0"} {"env":"prod","team":"t9"}"#,
            r#"tagged/1 {"env":"prod","team":"t1"} {}"#,
        ]
    );
    assert_eq!(
        one(&env.db, "SELECT tags FROM v_objects WHERE key = 'plain/0'"),
        r#"{"new":"yes"}"#
    );
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE tags_due = 1"),
        0
    );

    // Without --tags nothing is asked, and what is known stays.
    s.reset_counters();
    env.scan(&tags_cfg(&env, None)).await.unwrap();
    assert_eq!(s.requests(Op::GetTagging), 0);
    assert_eq!(count(&env.db, "SELECT count(*) FROM tags"), 7);

    // The filters: tag keys keep their case and cannot be mistaken for metadata.
    for (filter, want) in [
        ("tag:team=t9", vec!["bkt/tagged/0"]),
        ("tag:team~t[23]", vec![]),
        (
            "tag:team~t*",
            vec!["bkt/tagged/0", "bkt/tagged/2", "bkt/tagged/3"],
        ),
        ("tag:team!=t9", vec!["bkt/tagged/2", "bkt/tagged/3"]),
        ("tag:new", vec!["bkt/plain/0"]),
    ] {
        let out = run(&env, "query", &["--format", "jsonl", "--where", filter]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let got: Vec<String> = stdout(&out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{}/{}",
                    v["bucket"].as_str().unwrap(),
                    v["key"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(got, want, "{filter}");
    }
    let out = run(&env, "query", &["--where", "!tag:team", "--count"]).await;
    assert_eq!(stdout(&out).trim(), "7");

    // `status` says what each scan did with tags.
    let out = run(&env, "status", &["--format", "json", "--last", "0"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let scans = status["scans"].as_array().expect("scans");
    let tags: Vec<String> = scans
        .iter()
        .map(|s| format!("{} {} {}", s["tags"], s["tag_requests"], s["tags_read"]))
        .collect();
    assert_eq!(
        tags,
        [
            r#""all" 8 10"#,
            r#""skip-unchanged" 0 0"#,
            r#""all" 10 10"#,
            "null 0 0"
        ]
    );
    let out = run(&env, "status", &[]).await;
    assert!(
        stdout(&out).contains("tags (all): 10 read, 10 GetObjectTagging"),
        "{}",
        stdout(&out)
    );

    // `names --tags`: the tag keys, as `names` shows metadata names.
    let out = run(&env, "names", &["--tags", "--format", "jsonl"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let names: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {}",
                v["name"].as_str().unwrap(),
                v["objects"],
                v["values"]
            )
        })
        .collect();
    assert_eq!(names, ["env 3 1", "new 1 1", "team 3 3"]);
    let out = run(&env, "names", &["--format", "jsonl"]).await;
    assert!(stdout(&out).contains("\"owner\"") && !stdout(&out).contains("\"team\""));
}

/// Objects whose tags were never read match no tag test, `!tag:` included: unknown is not
/// "none". (HEAD's count of 0 is known without `--tags`: those two match `!tag:`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tags_match_no_tag_filter() {
    let env = Env::new().await;
    put_tag_objects(&env);
    env.scan(&tags_cfg(&env, None)).await.unwrap();
    assert_eq!(env.state().requests(Op::GetTagging), 0);
    for (filter, want) in [("!tag:team", "2"), ("tag:team", "0"), ("tag:team!=x", "0")] {
        let out = run(&env, "query", &["--where", filter, "--count"]).await;
        assert_eq!(stdout(&out).trim(), want, "{filter}");
    }
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM v_objects WHERE tags IS NULL"),
        8
    );
    assert_eq!(
        column(
            &env.db,
            "SELECT key FROM v_objects WHERE tags = '{}' ORDER BY key"
        ),
        ["zero/0", "zero/1"]
    );
}

/// Issue 16 §2: without `s3:GetObjectTagging` the scan completes, warns once, and each
/// object keeps its HEAD fields and records why its tags are not known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tags_read_is_one_warning_and_the_objects_stay_ok() {
    let env = Env::new().await;
    put_tag_objects(&env);
    env.state()
        .add_fault(Fault::new(Some(Op::GetTagging), Action::Status(403)));
    let mut cmd = env.scan_cmd("s3://bkt", &env.db);
    cmd.arg("--tags");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("GetObjectTagging refused").count(), 1, "{err}");
    assert!(err.contains("s3:GetObjectTagging"), "{err}");
    // Refusals are not retried.
    assert_eq!(env.state().requests(Op::GetTagging), 8);
    assert_eq!(
        column(&env.db, "SELECT DISTINCT state FROM objects"),
        ["ok"]
    );
    assert_eq!(
        column(
            &env.db,
            "SELECT DISTINCT tags_error FROM objects WHERE tags_error IS NOT NULL"
        ),
        ["HTTP 403 AccessDenied: Access Denied"]
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM objects WHERE tags_error IS NOT NULL"
        ),
        8
    );
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM v_objects WHERE tags IS NULL"),
        8
    );
}

/// A `--tags` rescan cut off mid-way resumes to exactly the database of an uninterrupted one
/// (the tag reads it owed are committed as owed, `tags_due`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_tags_rescan_resumes_to_the_uninterrupted_result() {
    let env = Env::new().await;
    let s = env.state();
    fill(s, "bkt", "", 550);
    let reference = env.dir.path().join("reference.db");
    let cfg = tags_cfg(&env, Some(TagsMode::All));
    env.scan_into(&cfg, &reference).await.unwrap();
    env.scan(&cfg).await.unwrap();
    assert_eq!(dump(&env.db), dump(&reference));
    // A night of tag changes on every seventh object.
    let keys = column(&reference, "SELECT key FROM objects ORDER BY key");
    for k in keys.iter().step_by(7) {
        assert!(s.set_tags("bkt", k, &[("night", "2")]));
    }
    env.scan_into(&cfg, &reference).await.unwrap();
    // The same rescan, cut off at the fourth page (a refusal is fatal), then resumed.
    s.add_fault(Fault::list_page(4, Action::Status(403)));
    let cut = env.scan(&cfg).await;
    assert!(cut.is_err(), "{cut:?}");
    s.clear_faults();
    let resumed = env.scan(&cfg).await.unwrap();
    assert!(resumed.resumed);
    assert_eq!(resumed.outcome, Outcome::Complete);
    assert_eq!(dump(&env.db), dump(&reference));
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM changes WHERE kind = 'tags'"),
        keys.len().div_ceil(7) as i64
    );
}

/// `merge` carries every new column and the tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_carries_headers_and_tags() {
    let env = Env::new().await;
    put_tag_objects(&env);
    for i in 0..5 {
        let spec = ObjectSpec {
            headers: extra_headers(i),
            ..ObjectSpec::default()
        };
        env.state()
            .put_object_with("bkt", &format!("hdr/{i}"), spec);
    }
    env.scan(&tags_cfg(&env, Some(TagsMode::All)))
        .await
        .unwrap();
    let merged = env.dir.path().join("merged.db");
    let mut merge = env.bin();
    merge.arg("merge").arg(&merged).arg(&env.db);
    let out = output(merge).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(dump(&merged), dump(&env.db));
    assert!(dump(&merged).contains("aws:kms"));
    assert_eq!(count(&merged, "SELECT count(*) FROM tags"), 8);
}

/// Issue 16 §4: a database written by an earlier release (schema 2 and schema 3, committed as
/// `tests/fixtures/schema{2,3}.db`: two scans of five objects, a metadata change, a deletion, a
/// new key) is refused by readers with one line saying what upgrades it, then migrated in
/// place by the first writer, every row kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_release_is_migrated_in_place() {
    for version in [2, 3] {
        migrated_in_place(version).await;
    }
}

async fn migrated_in_place(version: i64) {
    let env = Env::new().await;
    let db = env.dir.path().join("old.db");
    let fixture = format!(
        "{}/tests/fixtures/schema{version}.db",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::copy(&fixture, &db).unwrap();
    let before_objects = column(
        &db,
        "SELECT key || ' ' || state || ' ' || COALESCE(etag, '') FROM objects ORDER BY key",
    );
    let before_meta = column(
        &db,
        "SELECT object_id || name || value FROM metadata ORDER BY 1",
    );
    let before_changes = column(
        &db,
        "SELECT change_id || kind || COALESCE(new_metadata, '') FROM changes ORDER BY 1",
    );
    assert_eq!(one(&db, "PRAGMA user_version"), version.to_string());

    let mut query = env.bin();
    query.args(["query", "--count", "--db"]).arg(&db);
    let out = output(query).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("schema version {version}"))
            && err.contains("`s3meta scan`")
            && err.contains("write access"),
        "{err}"
    );
    assert_eq!(one(&db, "PRAGMA user_version"), version.to_string());

    // Any writer upgrades it: here a scan of another store into the same file.
    env.state().put_object("bkt", "k", b"v", &[]);
    let mut scan = env.scan_cmd("s3://bkt", &db);
    scan.arg("-q");
    let out = output(scan).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        one(&db, "PRAGMA user_version"),
        s3meta::store::db::SCHEMA_VERSION.to_string()
    );
    assert_integrity(&db);
    let after_objects = column(
        &db,
        "SELECT key || ' ' || state || ' ' || COALESCE(etag, '') FROM objects WHERE key != 'k' ORDER BY key",
    );
    assert_eq!(after_objects, before_objects);
    assert_eq!(
        column(
            &db,
            "SELECT object_id || name || value FROM metadata WHERE object_id IN (SELECT object_id FROM objects WHERE key != 'k') ORDER BY 1"
        ),
        before_meta
    );
    assert_eq!(
        column(
            &db,
            "SELECT change_id || kind || COALESCE(new_metadata, '') FROM changes ORDER BY 1"
        ),
        before_changes
    );
    // Rows HEADed by the old release: the new fields are not known.
    assert_eq!(
        column(
            &db,
            "SELECT DISTINCT COALESCE(sse, 'null') || COALESCE(tags, 'null') FROM v_objects WHERE key != 'k'"
        ),
        ["nullnull"]
    );
    let mut query = env.bin();
    query.args(["query", "--count", "--db"]).arg(&db);
    let out = output(query).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "6");
}

/// `--trust-tag-count`: only objects HEAD counts tags on cost a GetObjectTagging; the others
/// are recorded untagged, as AWS's missing count means.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusting_the_tag_count_reads_only_tagged_objects() {
    let env = Env::new().await;
    put_tag_objects(&env);
    let cfg = ScanConfig {
        trust_tag_count: true,
        ..tags_cfg(&env, Some(TagsMode::All))
    };
    let report = env.scan(&cfg).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(env.state().requests(Op::GetTagging), 4);
    assert_eq!(report.stats.tags_read, 10);
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM v_objects WHERE tags = '{}'"),
        6
    );
    assert_eq!(count(&env.db, "SELECT count(*) FROM tags"), 8);
    // Without --tags the flag is refused.
    let mut cmd = env.scan_cmd("s3://bkt", &env.db);
    cmd.arg("--trust-tag-count");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

/// AWS refuses a HEAD asking for the checksum of a KMS-encrypted object without
/// `kms:Decrypt` (403): each such object is HEADed again without asking and stored whole
/// (checksum NULL), with one warning for the scan; a plain 403 costs the same second HEAD and
/// stays an object error (with both attempts counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_refused_for_its_checksum_is_read_without_it() {
    let env = Env::new().await;
    let n = 20;
    for i in 0..n {
        let spec = ObjectSpec {
            meta: vec![("i".into(), i.to_string())],
            headers: vec![
                ("x-amz-checksum-crc32".into(), "AAAAAA==".into()),
                ("x-amz-server-side-encryption".into(), "aws:kms".into()),
            ],
            ..ObjectSpec::default()
        };
        env.state()
            .put_object_with("bkt", &format!("kms/{i:02}"), spec);
    }
    env.state().put_object("bkt", "locked", b"x", &[]);
    let s = env.state();
    s.add_fault(Fault::head("locked", Action::Status(403)));
    s.add_fault(Fault::new(Some(Op::Head), Action::RefuseChecksumMode));
    let mut cmd = env.scan_cmd("s3://bkt", &env.db);
    cmd.args(["--concurrency", "1"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).matches("answered without").count(),
        1,
        "{}",
        stderr(&out)
    );
    // Every object twice: with the mode, then without.
    assert_eq!(s.requests(Op::Head) as usize, 2 * (n + 1));
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM objects WHERE key GLOB 'kms/*' AND state = 'ok' AND checksum IS NULL AND sse = 'aws:kms'"
        ),
        n as i64
    );
    assert_eq!(count(&env.db, "SELECT count(*) FROM metadata"), n as i64);
    assert_eq!(
        one(
            &env.db,
            "SELECT state || ' ' || e.attempts FROM objects JOIN object_errors e USING (object_id) WHERE key = 'locked'"
        ),
        "error 2"
    );
}

/// A `--tags` rescan cut off and then abandoned (`--restart`) leaves no tag read owed to it:
/// the new scan owes its own, and `check` finds the database sound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_tags_rescan_owes_nothing() {
    let env = Env::new().await;
    let s = env.state();
    fill(s, "bkt", "", 550);
    let cfg = tags_cfg(&env, Some(TagsMode::All));
    env.scan(&cfg).await.unwrap();
    s.add_fault(Fault::list_page(4, Action::Status(403)));
    assert!(env.scan(&cfg).await.is_err());
    assert!(count(&env.db, "SELECT count(*) FROM objects WHERE tags_due != 0") > 0);
    s.clear_faults();
    let restarted = ScanConfig {
        restart: true,
        tags: None,
        ..cfg
    };
    let report = env.scan(&restarted).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE tags_due != 0"),
        0
    );
    let out = run(&env, "check", &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// A rewrite whose tags changed too stays a `modified` (or `metadata`) change carrying the old
/// and new tags; only a change of the tags alone is of kind `tags`; `changes --kind tags`
/// lists those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_changes_ride_on_the_change_that_says_more() {
    let env = Env::new().await;
    let put = |key: &str, body: &[u8], owner: &str, team: &str| {
        let spec = ObjectSpec {
            body: Some(body.to_vec()),
            meta: vec![("owner".into(), owner.into())],
            tags: vec![("team".into(), team.into())],
            ..ObjectSpec::default()
        };
        env.state().put_object_with("bkt", key, spec);
    };
    for k in ["body", "meta", "tags", "same"] {
        put(k, b"v1", "alice", "a");
    }
    let cfg = tags_cfg(&env, Some(TagsMode::All));
    env.scan(&cfg).await.unwrap();
    put("body", b"v2", "alice", "b");
    put("meta", b"v1", "zoe", "b");
    assert!(env.state().set_tags("bkt", "tags", &[("team", "b")]));
    env.scan(&cfg).await.unwrap();
    assert_eq!(
        column(
            &env.db,
            "SELECT key || ' ' || kind || ' ' || old_tags || ' ' || new_tags FROM v_changes ORDER BY key"
        ),
        [
            r#"body modified {"team":"a"} {"team":"b"}"#,
            r#"meta metadata {"team":"a"} {"team":"b"}"#,
            r#"tags tags {"team":"a"} {"team":"b"}"#,
        ]
    );
    let out = run(&env, "changes", &["--kind", "tags", "--format", "jsonl"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["key"], "tags");
    assert_eq!(rows[0]["new_tags"], serde_json::json!({"team": "b"}));
    // `check` finds nothing wrong with a database holding tags and tag changes.
    let out = run(&env, "check", &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// A resume keeps the scan's `--trust-tag-count`, as it keeps `--tags`: the untagged objects
/// it HEADs cost no GetObjectTagging even when the resuming command forgot the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_keeps_trusting_the_tag_count() {
    let env = Env::new().await;
    put_tag_objects(&env);
    let s = env.state();
    let trusting = ScanConfig {
        trust_tag_count: true,
        page_size: 3,
        ..tags_cfg(&env, Some(TagsMode::All))
    };
    s.add_fault(Fault::list_page(2, Action::Status(403)));
    assert!(env.scan(&trusting).await.is_err());
    assert_eq!(column(&env.db, "SELECT trust_tag_count FROM scans"), ["1"]);
    s.clear_faults();
    let forgot = ScanConfig {
        trust_tag_count: false,
        ..trusting
    };
    let report = env.scan(&forgot).await.unwrap();
    assert!(report.resumed);
    assert_eq!(report.outcome, Outcome::Complete);
    // The first run's page held only untagged objects (plain/0..2); the resume reads the four
    // tagged ones and not plain/3, which HEAD counts nothing on.
    assert_eq!(s.requests(Op::GetTagging), 4);
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM v_objects WHERE tags = '{}'"),
        6
    );
    assert_eq!(count(&env.db, "SELECT count(*) FROM tags"), 8);
}
