//! The built binary: SIGKILL and resume, the scan lock, fatal errors and exit codes (issue 2).

mod common;

use std::process::Stdio;

use common::*;

fn scan_cmd(env: &Env, url: &str) -> std::process::Command {
    env.scan_cmd(url, &env.db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_scans_resume_to_the_same_database() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 1500);
    env.state()
        .add_fault(Fault::head("obj-00700", Action::Status(404)));
    let reference = env.dir.path().join("reference.db");
    env.scan_into(&env.config("bkt", ""), &reference)
        .await
        .unwrap();
    env.state()
        .set_latency(Some(Op::Head), std::time::Duration::from_millis(2));

    for kill_at in [200, 300, 300] {
        let before = env.state().requests(Op::Head);
        let mut child = scan_cmd(&env, "s3://bkt")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        env.state()
            .wait_for_requests(Some(Op::Head), before + kill_at)
            .await;
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "killed by a signal, not finished (HEADs from {before})"
        );
    }
    let run = output(scan_cmd(&env, "s3://bkt")).await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(stderr(&run).contains("resumed"), "{}", stderr(&run));
    assert_eq!(column(&env.db, "SELECT state FROM scans"), ["complete"]);
    assert_eq!(dump(&env.db), dump(&reference));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_scan_on_the_same_database_is_refused() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 50);
    // Hold every HEAD until the test lets them go.
    env.state().hold(Op::Head, Gate::Released);
    let mut first = scan_cmd(&env, "s3://bkt")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    env.state().wait_for_requests(Some(Op::Head), 1).await;

    let second = output(scan_cmd(&env, "s3://bkt")).await;
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("another s3meta process is writing to"),
        "{}",
        stderr(&second)
    );
    assert_eq!(stderr(&second).lines().count(), 1, "{}", stderr(&second));

    env.state().release(Op::Head);
    let status = tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE state = 'ok'"),
        50
    );
}

/// Runs a scan that must fail: exit code 1 and one line on stderr containing `needle`.
async fn assert_fatal(cmd: std::process::Command, needle: &str) {
    let out = output(cmd).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_exit_1_with_one_clear_line() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 5);
    let endpoint = env.server.endpoint();

    assert_fatal(
        scan_cmd(&env, "s3://nosuch"),
        &format!("bucket `nosuch` does not exist at {endpoint}"),
    )
    .await;
    assert_fatal(
        scan_cmd(&env, "bkt/x"),
        "invalid S3 URL `bkt/x`: expected s3://BUCKET[/PREFIX]",
    )
    .await;
    assert_fatal(scan_cmd(&env, "s3://"), "no bucket name").await;

    let mut bad_creds = scan_cmd(&env, "s3://bkt");
    bad_creds.env("AWS_SECRET_ACCESS_KEY", "wrong");
    assert_fatal(bad_creds, "access denied listing s3://bkt/").await;

    let mut no_creds = scan_cmd(&env, "s3://bkt");
    no_creds
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    assert_fatal(no_creds, "no usable AWS credentials: none found").await;

    env.state()
        .add_fault(Fault::list_page(1, Action::Status(403)).times(1));
    assert_fatal(
        scan_cmd(&env, "s3://bkt"),
        "check the credentials and the s3:ListBucket permission",
    )
    .await;
    // Issue 18: none of these scans listed anything, so none created the database.
    assert!(!env.db.exists());
    // Refused on a later page, the failed scan is recorded, resumable, with its error.
    fill(env.state(), "bkt", "more-", 200);
    env.state()
        .add_fault(Fault::list_page(2, Action::Status(403)).times(1));
    assert_fatal(
        scan_cmd(&env, "s3://bkt"),
        "check the credentials and the s3:ListBucket permission",
    )
    .await;
    let bkt_scans = &format!(
        "SELECT state FROM scans JOIN buckets USING (bucket_id) WHERE name = 'bkt' AND store = '{endpoint}'"
    );
    assert_eq!(column(&env.db, bkt_scans), ["interrupted"]);
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM scans WHERE last_error LIKE 'access denied%'"
        ),
        1
    );

    let mut unreachable = scan_cmd(&env, "s3://bkt");
    unreachable.args([
        "--endpoint-url",
        "http://127.0.0.1:1",
        "--max-attempts",
        "2",
    ]);
    assert_fatal(unreachable, "cannot reach the store").await;

    let mut usage = scan_cmd(&env, "s3://bkt");
    usage.arg("--no-such-flag");
    let out = output(usage).await;
    assert_eq!(out.status.code(), Some(1));

    // The resumable scan then completes.
    let ok = output(scan_cmd(&env, "s3://bkt")).await;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(column(&env.db, bkt_scans), ["complete"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_corrupt_and_newer_databases_are_refused_untouched() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 3);

    let garbage = env.dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 4096]).unwrap();
    assert_fatal(
        env.scan_cmd("s3://bkt", &garbage),
        "is not an s3meta database",
    )
    .await;
    assert_eq!(std::fs::read(&garbage).unwrap(), vec![7u8; 4096]);

    let foreign = env.dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE notes (x)")
        .unwrap();
    assert_fatal(
        env.scan_cmd("s3://bkt", &foreign),
        "SQLite database of another program",
    )
    .await;

    let ok = output(scan_cmd(&env, "s3://bkt")).await;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let before = dump(&env.db);
    rusqlite::Connection::open(&env.db)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    assert_fatal(
        scan_cmd(&env, "s3://bkt"),
        "written by a newer s3meta (schema version 99",
    )
    .await;
    rusqlite::Connection::open(&env.db)
        .unwrap()
        .pragma_update(None, "user_version", 1)
        .unwrap();
    assert_eq!(dump(&env.db), before);
}

/// Issue 13: one scan per database *file*: a symlink, a deleted lock file or a hard link does
/// not let a second writer in, and a database with two hard links is refused untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lock_per_database_file_whatever_the_path() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 50);
    env.state().hold(Op::Head, Gate::Released);
    let mut first = scan_cmd(&env, "s3://bkt")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    env.state().wait_for_requests(Some(Op::Head), 1).await;

    let alias = env.dir.path().join("alias.db");
    std::os::unix::fs::symlink(&env.db, &alias).unwrap();
    // What a user might delete to "unstick" a scan (the lock of earlier versions).
    let _ = std::fs::remove_file(env.dir.path().join("s3meta.db.lock"));
    for db in [&env.db, &alias] {
        assert_fatal(
            env.scan_cmd("s3://bkt", db),
            "another s3meta process is writing to",
        )
        .await;
        let mut forget = env.bin();
        forget.args(["forget", "s3://bkt", "--db"]).arg(db);
        assert_fatal(forget, "another s3meta process is writing to").await;
    }

    env.state().release(Op::Head);
    let status = tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(column(&env.db, "SELECT state FROM scans"), ["complete"]);
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE state = 'ok'"),
        50
    );

    // A scan through the symlink is a rescan of the same database.
    let out = output(env.scan_cmd("s3://bkt", &alias)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        column(&env.db, "SELECT mode FROM scans ORDER BY scan_id"),
        ["full", "rescan"]
    );

    // Two hard links: every command refuses the file, which stays as it was.
    let before = dump(&env.db);
    let link = env.dir.path().join("link.db");
    std::fs::hard_link(&env.db, &link).unwrap();
    for db in [&env.db, &link] {
        assert_fatal(env.scan_cmd("s3://bkt", db), "has 2 hard links").await;
        for sub in ["query", "status", "names"] {
            let mut cmd = env.bin();
            cmd.arg(sub).arg("--db").arg(db);
            assert_fatal(cmd, "has 2 hard links").await;
        }
    }
    let mut merge = env.bin();
    merge
        .arg("merge")
        .arg(env.dir.path().join("out.db"))
        .arg(&link);
    assert_fatal(merge, "has 2 hard links").await;
    assert!(!env.dir.path().join("out.db").exists());
    std::fs::remove_file(&link).unwrap();
    assert_eq!(dump(&env.db), before);
}
