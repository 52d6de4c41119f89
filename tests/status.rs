//! `s3meta names` and `s3meta status` through the built binary, on databases produced by real
//! scans of the test server, and `query` and `status` while a scan writes (issue 3).

mod common;

use std::process::Stdio;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_counts_objects_and_shows_common_values() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 70);
    fill(env.state(), "bkt", "z/", 7);
    env.scan(&env.config("bkt", "")).await.unwrap();
    let out = run(&env, "names", &["--format", "json"]).await;
    let names: Value = serde_json::from_str(&stdout(&out)).unwrap();
    // 47 + 5 objects with metadata; owner user0..user6 (user0, user1, user3 hold 8 each).
    assert_eq!(
        names,
        json!([
            {"name": "owner", "objects": 52, "values": 7, "samples": ["user0", "user1", "user3"]},
            {"name": "project", "objects": 52, "values": 1, "samples": ["apollo"]},
        ])
    );
    let out = run(&env, "names", &["--prefix", "z/", "--format", "jsonl"]).await;
    let first: Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert_eq!(first["objects"], 5);
    let out = run(&env, "names", &["--format", "table"]).await;
    assert_eq!(
        stdout(&out),
        "name     objects  values  samples\n\
         owner    52       7       user0, user1, user3\n\
         project  52       1       apollo\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_scans_and_caps_the_objects_in_error() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 30);
    for i in [3, 4, 5] {
        env.state()
            .add_fault(Fault::head(&format!("obj-{i:05}"), Action::Status(403)));
    }
    env.scan(&env.config("bkt", "")).await.unwrap();
    let out = run(&env, "status", &["--format", "json", "--errors", "2"]).await;
    let s: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let scan = &s["scans"][0];
    assert_eq!(scan["bucket"], "bkt");
    assert_eq!(scan["state"], "complete");
    assert_eq!(scan["stale"], false);
    assert_eq!(scan["mode"], "full");
    assert_eq!(scan["objects_listed"], 30);
    assert_eq!(scan["heads_ok"], 27);
    assert_eq!(scan["objects_in_error"], 3);
    assert_eq!(s["errors_total"], 3);
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["key"], "obj-00003");
    assert_eq!(errors[0]["status"], 403);

    let out = run(&env, "status", &["--errors", "1"]).await;
    let text = stdout(&out);
    assert!(text.contains("s3://bkt/  at http://127.0.0.1:"), "{text}");
    assert!(text.contains("full scan, complete"), "{text}");
    assert!(text.contains("listed 30 · HEAD ok 27"), "{text}");
    assert!(
        text.contains("objects in error: 3\n  s3://bkt/obj-00003  403 "),
        "{text}"
    );
    assert!(text.contains("… and 2 more"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_status_run_while_a_scan_writes() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 250);
    env.state().hold(Op::Head, Gate::Released);
    let scan = || {
        let mut cmd = env.bin();
        cmd.args(["scan", "s3://bkt", "--db"])
            .arg(&env.db)
            .args(["--backoff-ms", "1", "--page-size", "100"])
            .stderr(Stdio::null());
        cmd
    };
    let mut first = scan().spawn().unwrap();
    env.state().wait_for_requests(Some(Op::Head), 1).await;

    // The listed pages are committed; their HEADs are owed.
    // The listed pages are committed, their HEADs owed; the lister may commit more meanwhile.
    let before = count(&env.db, "SELECT count(*) FROM objects");
    assert!(before >= 100, "{before}");
    let out = run(&env, "query", &["--where", "@state=pending", "--count"]).await;
    let seen: i64 = stdout(&out)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}", stderr(&out)));
    let after = count(&env.db, "SELECT count(*) FROM objects");
    assert!(
        before <= seen && seen <= after,
        "{before} <= {seen} <= {after}"
    );
    let status = |env: &Env| {
        let env_db = env.db.clone();
        let mut cmd = env.bin();
        cmd.args(["status", "--format", "json", "--db"]).arg(env_db);
        async move {
            let out = output(cmd).await;
            serde_json::from_str::<Value>(&stdout(&out)).unwrap()["scans"][0].clone()
        }
    };
    let live = status(&env).await;
    assert_eq!(
        (live["state"].clone(), live["stale"].clone()),
        (json!("running"), json!(false))
    );

    // Killed, the scan is still recorded as running: status sees no lock holder.
    first.kill().unwrap();
    tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    let stale = status(&env).await;
    assert_eq!(
        (stale["state"].clone(), stale["stale"].clone()),
        (json!("interrupted"), json!(true))
    );
    let text = stdout(&run(&env, "status", &[]).await);
    assert!(text.contains("interrupted (stale"), "{text}");

    env.state().release(Op::Head);
    let resumed = output(scan()).await;
    assert_eq!(resumed.status.code(), Some(0));
    let out = run(
        &env,
        "query",
        &[
            "--where",
            "@state=ok",
            "--where",
            "project=apollo",
            "--count",
        ],
    )
    .await;
    assert_eq!(stdout(&out), "167\n");
    assert_eq!(status(&env).await["state"], "complete");
}

/// Issue 13: another user, who cannot write the database or its directory, still tells a
/// running scan from a killed one: the lock is tested through a read-only descriptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_by_another_user_tells_running_from_killed() {
    if !can_switch_users("status_by_another_user_tells_running_from_killed") {
        return;
    }
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 250);
    let dir = user_dir(&env, "scans", WRITER, 0o755);
    let db = dir.join("s3meta.db");
    env.state().hold(Op::Head, Gate::Released);
    let mut scan = as_user(env.scan_cmd("s3://bkt", &db), WRITER);
    let mut first = scan.stderr(Stdio::null()).spawn().unwrap();
    env.state().wait_for_requests(Some(Op::Head), 1).await;
    let status = || {
        let mut cmd = env.bin();
        cmd.args(["status", "--format", "json", "--db"]).arg(&db);
        let cmd = as_user(cmd, READER);
        async move {
            let out = output(cmd).await;
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            serde_json::from_str::<Value>(&stdout(&out)).unwrap()["scans"][0].clone()
        }
    };
    let live = status().await;
    assert_eq!(
        (live["state"].clone(), live["stale"].clone()),
        (json!("running"), json!(false)),
        "{live}"
    );
    first.kill().unwrap();
    tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    let killed = status().await;
    assert_eq!(
        (killed["state"].clone(), killed["stale"].clone()),
        (json!("interrupted"), json!(true)),
        "{killed}"
    );
    env.state().release(Op::Head);
}
