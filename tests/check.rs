//! `s3meta check` (issue 13, point 5): databases that every kind of run leaves behind pass it
//! (so its invariants are s3meta's, not wishes), and damage — to pages, to constraints the
//! writer does not check, to s3meta's own invariants — fails it with exit 1.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Stdio;

use common::*;

async fn check(env: &Env, db: &Path) -> (Option<i32>, String, String) {
    let mut cmd = env.bin();
    cmd.args(["check", "--db"]).arg(db);
    let out = output(cmd).await;
    (out.status.code(), stdout(&out), stderr(&out))
}

async fn assert_sound(env: &Env, db: &Path) {
    let (code, out, err) = check(env, db).await;
    assert_eq!(code, Some(0), "{db:?}: {out}{err}");
    assert!(out.contains(": ok ("), "{out}");
}

/// `check` fails with the problem on stdout and one line on stderr.
async fn assert_damaged(env: &Env, db: &Path, needle: &str) {
    let (code, out, err) = check(env, db).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains(needle), "expected {needle:?} in {out}{err}");
    assert!(err.contains("is damaged: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_scans_resumes_merges_and_forgets_leave_passes_check() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "a/", 1500);
    fill(env.state(), "bkt", "b/", 1500);
    env.state()
        .add_fault(Fault::head("a/obj-00007", Action::Status(403)));
    env.state()
        .set_latency(Some(Op::Head), std::time::Duration::from_millis(1));

    // Killed mid-scan with 16 listing streams: HEADs owed, ranges split (cut even though the
    // HEADs are what the scan waits for), scan `running`.
    let before = env.state().requests(Op::Head);
    let mut child = env
        .scan_cmd("s3://bkt", &env.db)
        .args(["--split-ranges", "always"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    env.state()
        .wait_for_requests(Some(Op::Head), before + 700)
        .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(count(&env.db, "SELECT count(*) FROM objects WHERE head_due = 1") > 0);
    assert_sound(&env, &env.db).await;

    // Resumed to the end (one object in error), then a rescan of a changed bucket.
    let mut resume = env.scan_cmd("s3://bkt", &env.db);
    resume.args(["--split-ranges", "always"]);
    let out = output(resume).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        count(&env.db, "SELECT count(*) FROM scan_ranges") > 1,
        "split"
    );
    for i in (0..1500).step_by(7) {
        env.state()
            .put_object("bkt", &format!("b/obj-{i:05}"), b"v2", &[("n", "2")]);
    }
    env.state().delete_object("bkt", "a/obj-00001");
    let out = output(env.scan_cmd("s3://bkt", &env.db)).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_sound(&env, &env.db).await;

    // A sharded scan merged, and a prefix forgotten.
    let shard = env.dir.path().join("shard.db");
    let line = r#"{"bucket":"bkt","prefix":"","start_after":"a/obj-00900","end":"b/obj-00100"}"#;
    let mut scan = env.bin();
    scan.args(["scan", "--range-json", line, "--backoff-ms", "1", "--db"])
        .arg(&shard);
    assert_eq!(output(scan).await.status.code(), Some(0));
    assert_sound(&env, &shard).await;
    let merged = env.dir.path().join("merged.db");
    let mut merge = env.bin();
    merge.arg("merge").arg(&merged).arg(&env.db).arg(&shard);
    let out = output(merge).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_sound(&env, &merged).await;
    let mut forget = env.bin();
    forget.args(["forget", "s3://bkt/a/", "--db"]).arg(&merged);
    assert_eq!(output(forget).await.status.code(), Some(0));
    assert_sound(&env, &merged).await;

    // The library reports its progress: the invariant walk ends at the last object.
    let progress = std::sync::Arc::new(s3meta::store::check::CheckProgress::default());
    let report = s3meta::store::check::run(&env.db, &progress).unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(progress.phase.load(Relaxed), 2);
    let max_id = count(&env.db, "SELECT max(object_id) FROM objects") as u64;
    assert_eq!(
        (progress.done.load(Relaxed), progress.total.load(Relaxed)),
        (max_id, max_id)
    );
    assert_eq!(report.objects, 3000);
    assert_eq!(report.problems_total, 0);
}

/// Runs `sql` on a copy of `db` (root, read-write, CHECKs off as the writer runs).
fn damaged_copy(env: &Env, db: &Path, name: &str, sql: &str) -> std::path::PathBuf {
    let copy = env.dir.path().join(name);
    std::fs::copy(db, &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.pragma_update(None, "ignore_check_constraints", "ON")
        .unwrap();
    conn.execute_batch(sql).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_to_pages_constraints_and_invariants_fails_check() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 2000);
    let out = output(env.scan_cmd("s3://bkt", &env.db)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_sound(&env, &env.db).await;

    for (name, sql, needle) in [
        (
            "state.db",
            "UPDATE objects SET state = 'weird' WHERE key = 'obj-00010';
             UPDATE scans SET mode = 'half'",
            "object 11: state 'weird'",
        ),
        (
            "owed.db",
            "UPDATE objects SET head_due = 1 WHERE key = 'obj-00011'",
            "owed a HEAD outside every unfinished scan (e.g. \"obj-00011\")",
        ),
        (
            "error.db",
            "UPDATE objects SET state = 'error' WHERE key = 'obj-00012'",
            "in state error without its object_errors row",
        ),
        (
            "utf8.db",
            "UPDATE metadata SET value = CAST(x'ff' AS TEXT)
             WHERE (object_id, name) = (SELECT object_id, name FROM metadata LIMIT 1)",
            "metadata name or value is not UTF-8 text",
        ),
        (
            "ranges.db",
            "UPDATE scan_ranges SET end_key = 'obj-00500'",
            "the ranges end at Some(\"obj-00500\"), not at the scan's end None",
        ),
        (
            "orphan.db",
            "PRAGMA foreign_keys = OFF; DELETE FROM buckets",
            "foreign key: ",
        ),
    ] {
        let copy = damaged_copy(&env, &env.db, name, sql);
        assert_damaged(&env, &copy, needle).await;
    }

    // Pages overwritten in the middle of the objects table.
    let copy = damaged_copy(&env, &env.db, "pages.db", "SELECT 1");
    let (pages, page_size) = objects_leaf_pages(&copy);
    let mut f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    f.seek(SeekFrom::Start(
        ((pages[pages.len() / 2] - 1) * page_size) as u64,
    ))
    .unwrap();
    f.write_all(&[0xA5; 512]).unwrap();
    drop(f);
    assert_damaged(&env, &copy, "integrity_check: Tree ").await;
}

/// Issue 13: in a bucket that lists in path order, an object whose `path_key` is not its
/// key's would fall outside every range compared in that order: `check` finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_key_that_is_not_its_keys_fails_check() {
    let env = Env::new().await;
    env.state().set_path_order(true);
    for i in 0..300 {
        let key = format!("logs/{:02}/obj-{i:04}", i % 7);
        env.state().put_object("bkt", &key, b"x", &[]);
        env.state()
            .put_object("bkt", &format!("logs-old/{i:04}"), b"x", &[]);
    }
    let out = output(env.scan_cmd("s3://bkt", &env.db)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(column(&env.db, "SELECT key_order FROM buckets"), ["path"]);
    assert_sound(&env, &env.db).await;
    for (name, sql) in [
        (
            "null.db",
            "UPDATE objects SET path_key = NULL WHERE key = 'logs/03/obj-0010'",
        ),
        (
            "other.db",
            "UPDATE objects SET path_key = (SELECT path_key FROM objects WHERE key = 'logs-old/0001')
             WHERE key = 'logs/03/obj-0010'",
        ),
    ] {
        let copy = damaged_copy(&env, &env.db, name, sql);
        assert_damaged(
            &env,
            &copy,
            "its path_key is not its key's (its bucket lists in path order)",
        )
        .await;
    }
}
