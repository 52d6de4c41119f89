//! A newcomer's first hour (issue 18): honest answers mid-scan, scans that never started leave
//! nothing behind, doubtful filters warned about, clean logs in pipes, readable tables, one
//! vocabulary of targets and formats, and man pages.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::Value;

/// Starts a scan of `s3://bkt` whose HEADs are all held, waits until its listing of `n`
/// objects is committed, and kills it (-9): those objects are listed and none read. Returns
/// how many were listed (the listing may have gone further).
async fn listed_not_read(env: &Env, n: usize) -> i64 {
    env.state().hold(Op::Head, Gate::Released);
    let mut child = env
        .scan_cmd("s3://bkt", &env.db)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_row(
        &env.db,
        &format!("SELECT 1 WHERE (SELECT count(*) FROM objects) >= {n}"),
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    env.state().release(Op::Head);
    count(&env.db, "SELECT count(*) FROM objects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_not_read_yet_are_unknown_not_bare() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 300);
    let listed = listed_not_read(&env, 100).await;
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM objects WHERE state = 'pending'"
        ),
        listed
    );

    // `!owner` matches only objects read and found without it: none yet (was 300).
    let out = run(&env, "query", &["--where", "!owner", "--count"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "0");
    let note = stderr(&out);
    assert!(
        note.contains(&format!("{listed} objects listed but not read yet")),
        "{note}"
    );
    assert!(
        note.contains("finish it with `s3meta scan s3://bkt/"),
        "{note}"
    );
    assert_eq!(note.lines().count(), 1, "{note}");
    let out = run(&env, "query", &["--where", "owner!=user1", "--count"]).await;
    assert_eq!(stdout(&out).trim(), "0");

    // jsonl: metadata null; a table: a marker, not an empty cell.
    let out = run(&env, "query", &["--format", "jsonl", "--limit", "1"]).await;
    let rec: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(rec["metadata"], Value::Null, "{rec}");
    assert_eq!(rec["state"], "pending");
    let out = run(&env, "query", &["--format", "table", "--limit", "1"]).await;
    assert!(stdout(&out).contains("(not read)"), "{}", stdout(&out));
    // The view says the same (migration 0006).
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM v_objects WHERE metadata IS NULL"
        ),
        listed
    );
    // `names` and `changes` warn too.
    for sub in ["names", "changes"] {
        let out = run(&env, sub, &[]).await;
        assert!(
            stderr(&out).contains("not read yet"),
            "{sub}: {}",
            stderr(&out)
        );
    }

    // Once the scan is finished: the true answer, and no note.
    let done = output(env.scan_cmd("s3://bkt", &env.db)).await;
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    let out = run(&env, "query", &["--where", "!owner", "--count"]).await;
    assert_eq!(stdout(&out).trim(), "100");
    assert_eq!(stderr(&out), "");
    let out = run(
        &env,
        "query",
        &["--where", "!owner", "--format", "jsonl", "--limit", "1"],
    )
    .await;
    let rec: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(rec["metadata"], serde_json::json!({}), "{rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_never_listed_leaves_nothing_behind() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 5);
    // A new database: not created at all.
    let fresh = env.dir.path().join("fresh.db");
    let out = output(env.scan_cmd("s3://nosuch", &fresh)).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!fresh.exists(), "a failed first scan created {fresh:?}");
    // An existing database: no scan row, no bucket row.
    let ok = output(env.scan_cmd("s3://bkt", &env.db)).await;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let out = output(env.scan_cmd("s3://nosuch", &env.db)).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(count(&env.db, "SELECT count(*) FROM scans"), 1);
    assert_eq!(count(&env.db, "SELECT count(*) FROM buckets"), 1);
    let status = run(&env, "status", &["--json"]).await;
    let doc: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(doc["scans"].as_array().unwrap().len(), 1, "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doubtful_filters_are_warned_about() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 10);
    let ok = output(env.scan_cmd("s3://bkt", &env.db)).await;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    for (filter, needle) in [
        ("owner==user1", "write `owner=user1`"),
        ("owner=user1 ", "blanks at its start or end"),
    ] {
        let out = run(&env, "query", &["--where", filter, "--count"]).await;
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(stdout(&out).trim(), "0");
        let err = stderr(&out);
        assert!(
            err.starts_with("warning: ") && err.contains(needle),
            "{err}"
        );
    }
    let out = run(&env, "query", &["--where", "owner=user1", "--count"]).await;
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out).trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_pipes_have_no_colour_and_json_logs_a_json_summary() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 20);
    // -v logs info lines; stderr is a pipe here, so no escape codes.
    let out = output({
        let mut c = env.scan_cmd("s3://bkt", &env.db);
        c.arg("-vvv");
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains('\x1b'), "{:?}", stderr(&out));
    assert!(stderr(&out).contains("full scan 1"), "{}", stderr(&out));
    // --color always forces them (a log line's level is coloured).
    let out = output({
        let mut c = env.scan_cmd("s3://bkt", &env.db);
        c.args(["-vvv", "--color", "always"]);
        c
    })
    .await;
    assert!(stderr(&out).contains('\x1b'), "{:?}", stderr(&out));
    assert!(stderr(&out).contains("(rescan 2)"), "{}", stderr(&out));
    // JSON logs: every stderr line is JSON, the summary among them.
    let out = output({
        let mut c = env.scan_cmd("s3://bkt", &env.db);
        c.args(["-v", "--log-format", "json"]);
        c
    })
    .await;
    let lines: Vec<Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let summary = lines.iter().find_map(|l| l.get("summary")).unwrap();
    assert_eq!(summary["state"], "complete");
    assert_eq!(summary["objects"]["listed"], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_terminated() {
    let env = Env::new().await;
    // Far more objects than HEADs in flight (64): the scan cannot end complete after the
    // signal, whatever the held HEADs answer once released.
    fill(env.state(), "bkt", "", 2000);
    env.state().hold(Op::Head, Gate::Released);
    let child = env
        .scan_cmd("s3://bkt", &env.db)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    env.state().wait_for_requests(Some(Op::Head), 1).await;
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    env.state().release(Op::Head);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("terminated"), "{err}");
    assert!(!err.contains("Ctrl-C"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_vocabulary_of_targets_formats_and_counts() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "a/", 6);
    fill(env.state(), "bkt", "b/", 4);
    for _ in 0..3 {
        let ok = output(env.scan_cmd("s3://bkt", &env.db)).await;
        assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    }
    // s3:// targets, as scan names them.
    let n = |out: &std::process::Output| stdout(out).trim().to_string();
    assert_eq!(
        n(&run(&env, "query", &["s3://bkt/a/", "--count"]).await),
        "6"
    );
    assert_eq!(n(&run(&env, "query", &["s3://bkt", "--count"]).await), "10");
    let clash = run(&env, "query", &["s3://bkt", "--bucket", "bkt"]).await;
    assert_eq!(clash.status.code(), Some(1));
    // --json: jsonl for records, json for documents; `text` stays an alias of table.
    let out = run(&env, "names", &["s3://bkt/a/", "--json", "--limit", "1"]).await;
    let rows: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "owner");
    let out = run(&env, "status", &["--format", "text"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // status shows the latest scans of each target; --last 0 every one.
    let out = run(&env, "status", &["--last", "1"]).await;
    let text = stdout(&out);
    assert!(text.contains("2 older scans not shown"), "{text}");
    assert_eq!(
        text.matches("\nscan ").count() + usize::from(text.starts_with("scan ")),
        1,
        "{text}"
    );
    let out = run(&env, "status", &["--json", "--last", "0"]).await;
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["scans"].as_array().unwrap().len(), 3);

    // Changes: a compact table saying what changed, --count, --kind gone, --since 1h.
    env.state().put_object(
        "bkt",
        "a/obj-00000",
        b"new",
        &[("owner", "zoe"), ("reviewed", "yes")],
    );
    env.state().delete_object("bkt", "b/obj-00001");
    let ok = output(env.scan_cmd("s3://bkt", &env.db)).await;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let out = run(&env, "changes", &["--format", "table"]).await;
    let table = stdout(&out);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["at", "kind", "key", "change"], "{table}");
    assert!(table.contains("owner: user0→zoe"), "{table}");
    assert!(
        table.contains("+reviewed") && table.contains("−project"),
        "{table}"
    );
    assert_eq!(n(&run(&env, "changes", &["--count"]).await), "2");
    assert_eq!(
        n(&run(&env, "changes", &["--count", "--kind", "gone"]).await),
        "1"
    );
    assert_eq!(
        n(&run(
            &env,
            "changes",
            &["s3://bkt/a/", "--count", "--since", "1h"]
        )
        .await),
        "1"
    );
    assert_eq!(
        n(&run(&env, "query", &["--where", "@modified>-1h", "--count"]).await),
        "9"
    );
    // -H sizes in tables.
    let out = run(
        &env,
        "query",
        &["s3://bkt/a/obj-00000", "--format", "table", "-H"],
    )
    .await;
    assert!(stdout(&out).contains("3 B"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn man_writes_a_page_per_subcommand() {
    let env = Env::new().await;
    let dir = env.dir.path().join("man1");
    let mut cmd = env.bin();
    cmd.args(["man", "--dir"]).arg(&dir);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for page in [
        "s3meta.1",
        "s3meta-scan.1",
        "s3meta-query.1",
        "s3meta-status.1",
    ] {
        assert!(dir.join(page).exists(), "{page}");
    }
    let query = std::fs::read_to_string(dir.join("s3meta-query.1")).unwrap();
    assert!(
        query.contains("owner==alice"),
        "the --where grammar is in s3meta-query(1)"
    );
    // Global flags are under their own heading, once.
    let mut cmd = env.bin();
    cmd.args(["query", "--help"]);
    let help = stdout(&output(cmd).await);
    assert!(help.contains("Global options:"), "{help}");
    assert!(!help.contains("created"), "{help}");
}
