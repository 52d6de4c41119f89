//! A database shared between users (issue 13, point 2): another user reading it never breaks
//! the writer (it never creates a `-wal` or `-shm` the writer cannot use), reads under
//! SQLite's read-only WAL rules where it cannot write, and otherwise says exactly what is
//! missing. Everyone here runs as root, which ignores permission bits, so the binary runs as
//! uid 2001 (the scanning user) and 2002 (another user).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;

use common::*;

/// Names of the files in `dir` that `uid` owns.
fn owned_by(dir: &Path, uid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(Result::unwrap)
        .filter(|e| e.metadata().unwrap().uid() == uid)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `s3meta SUB --db DB ARGS…` as `uid`.
async fn run_as(env: &Env, uid: u32, sub: &str, db: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = env.bin();
    cmd.arg(sub).arg("--db").arg(db).args(args);
    output(as_user(cmd, uid)).await
}

async fn scan_as(env: &Env, uid: u32, db: &Path) -> std::process::Output {
    output(as_user(env.scan_cmd("s3://bkt", db), uid)).await
}

/// Every read command of another user works and leaves no file of its own.
async fn reader_commands_work(env: &Env, dir: &Path, db: &Path, objects: &str) {
    for (sub, args) in [
        ("query", vec!["--count"]),
        ("names", vec![]),
        ("status", vec![]),
        ("changes", vec![]),
        ("check", vec![]),
    ] {
        let out = run_as(env, READER, sub, db, &args).await;
        assert_eq!(out.status.code(), Some(0), "{sub}: {}", stderr(&out));
        if sub == "query" {
            assert_eq!(stdout(&out), objects);
        }
        assert_eq!(owned_by(dir, READER), Vec::<String>::new(), "after {sub}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_reading_never_breaks_the_writer() {
    if !can_switch_users("another_user_reading_never_breaks_the_writer") {
        return;
    }
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 40);

    // A directory everyone may write to: the reader could create files, and must not.
    let shared = user_dir(&env, "shared", WRITER, 0o777);
    let db = shared.join("s3meta.db");
    let out = scan_as(&env, WRITER, &db).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    reader_commands_work(&env, &shared, &db, "40\n").await;
    env.state().put_object("bkt", "obj-00001", b"v2", &[]);
    let out = scan_as(&env, WRITER, &db).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "the writer still writes: {}",
        stderr(&out)
    );
    assert_eq!(
        column(
            &db,
            "SELECT mode || ' ' || state FROM scans ORDER BY scan_id"
        ),
        ["full complete", "rescan complete"]
    );

    // A directory only the scanning user may write to: the reader reads all the same.
    let private = user_dir(&env, "private", WRITER, 0o755);
    let db = private.join("s3meta.db");
    let out = scan_as(&env, WRITER, &db).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    reader_commands_work(&env, &private, &db, "40\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_reads_while_a_scan_writes() {
    if !can_switch_users("another_user_reads_while_a_scan_writes") {
        return;
    }
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 250);
    let dir = user_dir(&env, "private", WRITER, 0o755);
    let db = dir.join("s3meta.db");
    env.state().hold(Op::Head, Gate::Released);
    let mut scan = as_user(env.scan_cmd("s3://bkt", &db), WRITER);
    let first = scan.stderr(Stdio::null()).spawn().unwrap();
    env.state().wait_for_requests(Some(Op::Head), 1).await;
    let out = run_as(
        &env,
        READER,
        "query",
        &db,
        &["--where", "@state=pending", "--count"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen: i64 = stdout(&out).trim().parse().unwrap();
    assert!(seen >= 100, "the committed pages are visible: {seen}");
    env.state().release(Op::Head);
    let status = tokio::task::spawn_blocking(move || first.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(status.status.code(), Some(0));
    let out = run_as(&env, READER, "query", &db, &["--count"]).await;
    assert_eq!(stdout(&out), "250\n", "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_another_user_cannot_read_is_named_with_the_fix() {
    if !can_switch_users("what_another_user_cannot_read_is_named_with_the_fix") {
        return;
    }
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 20);
    let dir = user_dir(&env, "shared", WRITER, 0o777);
    let db = dir.join("s3meta.db");
    let out = scan_as(&env, WRITER, &db).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (wal, shm) = (dir.join("s3meta.db-wal"), dir.join("s3meta.db-shm"));

    // A WAL database without its -shm (as older versions, or another tool, left it): the
    // reader would have to create it, so it refuses, and says what to do.
    std::fs::remove_file(&wal).unwrap();
    std::fs::remove_file(&shm).unwrap();
    let out = run_as(&env, READER, "query", &db, &["--count"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is in WAL mode but"), "{err}");
    assert!(
        err.contains("as uid 2002") && err.contains("owner (uid 2001)"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        !wal.exists() && !shm.exists(),
        "the refused reader created nothing"
    );
    // The owner's reader may create them, and leaves them for everyone.
    let out = run_as(&env, WRITER, "status", &db, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        owned_by(&dir, WRITER),
        ["s3meta.db", "s3meta.db-shm", "s3meta.db-wal"]
    );
    let out = run_as(&env, READER, "query", &db, &["--count"]).await;
    assert_eq!(stdout(&out), "20\n", "{}", stderr(&out));

    // Files another user's reader created (before issue 13): the writer names the fix.
    for f in [&wal, &shm] {
        std::os::unix::fs::chown(f, Some(READER), Some(READER)).unwrap();
    }
    let out = scan_as(&env, WRITER, &db).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot be written by this user"), "{err}");
    assert!(err.contains("chown --reference="), "{err}");
    for f in [&wal, &shm] {
        std::os::unix::fs::chown(f, Some(WRITER), Some(WRITER)).unwrap();
    }
    let out = scan_as(&env, WRITER, &db).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A database the other user may not read: which permission to grant.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_as(&env, READER, "query", &db, &["--count"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read"), "{err}");
    assert!(
        err.contains("ask its owner (uid 2001) to grant this user read access"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
