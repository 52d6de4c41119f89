//! Issue 17: `follow` keeps the index live from S3 event notifications (the test server's SQS
//! queue, fed by its own writes, and webhook POSTs): after each step the live objects equal a
//! full scan's; duplicated, reordered and malformed messages change nothing (malformed ones
//! stay in the queue); a kill -9 between commit and delete loses and doubles nothing; a scan
//! runs beside it; and a rescan finds nothing to change unless events were lost, which it
//! repairs.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::Value;

fn queue_url(env: &Env) -> String {
    format!("{}{}", env.server.endpoint(), s3meta_testserver::QUEUE_PATH)
}

/// `s3meta follow s3://bkt --sqs-queue-url … --once`, with its summary.
async fn follow_once(env: &Env, extra: &[&str]) -> (i32, Value, String) {
    let summary = env.dir.path().join("follow.json");
    let mut cmd = env.bin();
    cmd.args(["follow", "s3://bkt", "--once", "--sqs-queue-url"])
        .arg(queue_url(env))
        .arg("--db")
        .arg(&env.db)
        .arg("--summary-json")
        .arg(&summary)
        .args(extra);
    let out = output(cmd).await;
    let doc: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    (out.status.code().unwrap_or(-1), doc, stderr(&out))
}

/// The canonical dump's lines of objects that exist (follow keeps deleted ones as `gone`, a
/// fresh scan never saw them).
fn live(db: &std::path::Path) -> Vec<String> {
    dump(db)
        .lines()
        .filter(|l| l.starts_with("[\"object\""))
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v[4] != "gone"
        })
        .map(str::to_string)
        .collect()
}

/// A fresh full scan of the bucket, into its own database.
async fn fresh_scan(env: &Env, name: &str) -> std::path::PathBuf {
    let db = env.dir.path().join(name);
    let _ = std::fs::remove_file(&db);
    env.scan_into(&env.config("bkt", ""), &db).await.unwrap();
    db
}

fn assert_live_equal(env: &Env, fresh: &std::path::Path, step: &str) {
    let (got, want) = (live(&env.db), live(fresh));
    assert_eq!(
        got, want,
        "after {step}: the followed index differs from a full scan"
    );
}

fn kinds(db: &std::path::Path) -> Vec<String> {
    column(
        db,
        "SELECT c.kind || ' ' || o.key FROM changes c JOIN objects o USING (object_id) ORDER BY change_id",
    )
}

const HOSTILE: &str = "dir/a b+c é😀%.txt";

/// The scenario the issue names, step by step: put, overwrite, delete, re-create, a metadata
/// change — each followed, then compared with a full scan; a rescan after it finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_followed_equals_a_full_scan() {
    let env = Env::new().await;
    let s = env.state();
    // AWS lists whole seconds, as HEAD's Last-Modified says them.
    s.set_whole_seconds(true);
    fill(s, "bkt", "", 20);
    env.scan(&env.config("bkt", "")).await.unwrap();
    s.notify("bkt", Some(true));
    type Step = Box<dyn Fn(&State)>;
    let steps: Vec<(&str, Step)> = vec![
        (
            "put",
            Box::new(|s| {
                s.put_object("bkt", "new.txt", b"new", &[("owner", "ann")]);
                s.put_object("bkt", HOSTILE, b"hostile", &[("owner", "bob")]);
            }),
        ),
        (
            "overwrite",
            Box::new(|s| {
                s.put_object("bkt", "new.txt", b"newer body", &[("owner", "ann")]);
            }),
        ),
        (
            "delete",
            Box::new(|s| {
                assert!(s.delete_object("bkt", "new.txt"));
                assert!(s.delete_object("bkt", "obj-00003"));
            }),
        ),
        (
            "re-create",
            Box::new(|s| {
                s.put_object("bkt", "new.txt", b"again", &[("owner", "cy")]);
            }),
        ),
        (
            "metadata",
            Box::new(|s| {
                s.put_object("bkt", HOSTILE, b"hostile", &[("owner", "dee")]);
            }),
        ),
    ];
    for (i, (step, apply)) in steps.iter().enumerate() {
        apply(s);
        let (code, doc, err) = follow_once(&env, &[]).await;
        assert_eq!(code, 0, "{step}: {err}");
        assert_eq!(s.sqs_len(), 0, "{step}: every applied message is deleted");
        assert!(
            doc["follow"]["events_applied"].as_u64().unwrap() > 0,
            "{doc}"
        );
        let fresh = fresh_scan(&env, &format!("fresh{i}.db")).await;
        assert_live_equal(&env, &fresh, step);
    }
    let changes = kinds(&env.db);
    let key = |k: &str, key: &str| format!("{k} {key}");
    for want in [
        key("created", "new.txt"),
        key("created", HOSTILE),
        key("modified", "new.txt"),
        key("deleted", "new.txt"),
        key("deleted", "obj-00003"),
        key("metadata", HOSTILE),
    ] {
        assert!(changes.contains(&want), "{want} missing from {changes:?}");
    }
    assert_eq!(
        changes.iter().filter(|c| *c == "created new.txt").count(),
        2,
        "{changes:?}"
    );

    // The nightly rescan after a day of following: nothing to HEAD, nothing changed.
    s.reset_counters();
    let before = changes.len();
    env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(
        s.requests(Op::Head),
        0,
        "the rescan HEADs nothing follow applied"
    );
    assert_eq!(kinds(&env.db).len(), before, "{:?}", kinds(&env.db));
    let fresh = fresh_scan(&env, "fresh-last.db").await;
    assert_live_equal(&env, &fresh, "the rescan");
    let check = run(&env, "check", &[]).await;
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    // `status` tells follow sessions from scans, and counts their events.
    let st = run(&env, "status", &["--format", "json", "--last", "0"]).await;
    let doc: Value = serde_json::from_slice(&st.stdout).unwrap();
    let sessions: Vec<&Value> = doc["scans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["follow"] == true)
        .collect();
    assert_eq!(sessions.len(), steps.len());
    assert!(sessions.iter().all(|s| s["state"] == "complete"), "{doc}");
    let text = stdout(&run(&env, "status", &[]).await);
    assert!(text.contains("follow session, complete"), "{text}");
    assert!(text.contains("events: 2 applied"), "{text}");
}

/// At least once, out of order, and not always S3 events: every message again in reverse
/// order, plus malformed ones, change nothing; the malformed ones stay in the queue and make
/// the exit code 3. With sequencers and without (then a HEAD decides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_reordered_and_malformed_messages_change_nothing() {
    for sequencer in [true, false] {
        let env = Env::new().await;
        let s = env.state();
        s.set_whole_seconds(true);
        fill(s, "bkt", "", 5);
        env.scan(&env.config("bkt", "")).await.unwrap();
        s.notify("bkt", Some(sequencer));
        for i in 0..5 {
            s.put_object("bkt", &format!("k{i}"), format!("v{i}").as_bytes(), &[]);
        }
        s.put_object("bkt", "k1", b"v1 again", &[("rev", "2")]);
        assert!(s.delete_object("bkt", "k2"));
        assert!(s.delete_object("bkt", "obj-00001"));
        assert!(s.set_tags("bkt", "k3", &[("t", "1")]));
        let (code, _, err) = follow_once(&env, &[]).await;
        assert_eq!(code, 0, "{err}");
        let applied = kinds(&env.db);

        let mut again = s.sqs_sent();
        again.reverse();
        for body in &again {
            s.sqs_send_raw(body);
        }
        let malformed = [
            "{not json".to_string(),
            r#"{"Records":[{"eventName":"ObjectExploded:Boom","s3":{"bucket":{"name":"bkt"},"object":{"key":"k0"}}}]}"#.to_string(),
            r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"bkt"},"object":{"key":"bad%zzkey"}}}]}"#.to_string(),
        ];
        for m in &malformed {
            s.sqs_send_raw(m);
        }
        s.sqs_send_raw(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"bkt"}"#);
        let (code, doc, err) = follow_once(&env, &[]).await;
        assert_eq!(code, 3, "malformed messages make exit code 3: {err}");
        assert!(err.contains("left in the queue"), "{err}");
        let f = &doc["follow"];
        assert_eq!(f["malformed"], 3, "{doc}");
        if sequencer {
            // k2 was put and deleted before the index knew it: no row keeps its sequencer,
            // so its two events cost one HEAD (404) again.
            assert_eq!(
                f["events_stale"].as_u64(),
                Some(again.len() as u64 - 2),
                "every other duplicate is stale by its sequencer: {doc}"
            );
            assert_eq!(f["heads"], 1, "{doc}");
        }
        assert_eq!(
            kinds(&env.db),
            applied,
            "sequencer {sequencer}: duplicates changed nothing"
        );
        assert_eq!(s.sqs_len(), 3, "only the malformed messages stay");
        let fresh = fresh_scan(&env, "fresh.db").await;
        assert_live_equal(&env, &fresh, "duplicates");
    }
}

/// kill -9 after the commit, before the messages are deleted: they come again and are
/// applied again without changing the result (no change row twice, nothing lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_commit_and_delete_loses_and_doubles_nothing() {
    let env = Env::new().await;
    let s = env.state();
    s.set_whole_seconds(true);
    fill(s, "bkt", "", 5);
    env.scan(&env.config("bkt", "")).await.unwrap();
    s.notify("bkt", Some(false));
    for i in 0..30 {
        s.put_object("bkt", &format!("k{i:02}"), b"x", &[("n", &i.to_string())]);
    }
    assert!(s.delete_object("bkt", "obj-00002"));
    s.hold(Op::SqsDelete, Gate::Released);
    let mut cmd = env.bin();
    cmd.args(["follow", "s3://bkt", "--sqs-queue-url"])
        .arg(queue_url(&env))
        .arg("--db")
        .arg(&env.db)
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    s.wait_for_requests(Some(Op::SqsDelete), 1).await;
    // The delete is held: the commit is done.
    child.kill().unwrap();
    child.wait().unwrap();
    // Counted while the delete is still held: once released, the server may yet finish the
    // request of the killed process (its connection closing races the release).
    assert_eq!(s.sqs_len(), 31, "nothing was deleted");
    s.release(Op::SqsDelete);
    let applied = kinds(&env.db);
    assert_eq!(applied.len(), 31, "{applied:?}");
    s.sqs_expire_visibility();
    let (code, _, err) = follow_once(&env, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(kinds(&env.db), applied, "applied twice, changed once");
    assert_eq!(s.sqs_len(), 0);
    let fresh = fresh_scan(&env, "fresh.db").await;
    assert_live_equal(&env, &fresh, "the restart");
    // The killed session stays `running` in the record, the finished one is complete.
    let states = column(
        &env.db,
        "SELECT state FROM scans WHERE follow ORDER BY scan_id",
    );
    assert_eq!(states, ["running", "complete"]);
}

/// Events lost on purpose (written while notifications were off): follow cannot know, the
/// nightly rescan repairs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescan_repairs_what_lost_events_missed() {
    let env = Env::new().await;
    let s = env.state();
    s.set_whole_seconds(true);
    fill(s, "bkt", "", 10);
    env.scan(&env.config("bkt", "")).await.unwrap();
    s.notify("bkt", Some(true));
    s.put_object("bkt", "seen", b"1", &[]);
    s.notify("bkt", None);
    s.put_object("bkt", "lost", b"2", &[("owner", "x")]);
    assert!(s.delete_object("bkt", "obj-00004"));
    s.notify("bkt", Some(true));
    let (code, _, err) = follow_once(&env, &[]).await;
    assert_eq!(code, 0, "{err}");
    let fresh = fresh_scan(&env, "fresh.db").await;
    assert_ne!(live(&env.db), live(&fresh), "the lost events are missing");
    s.reset_counters();
    env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(s.requests(Op::Head), 1, "only the lost object is HEADed");
    assert_live_equal(&env, &fresh, "the rescan");
    let changes = kinds(&env.db);
    assert!(changes.contains(&"created lost".to_string()), "{changes:?}");
    assert!(
        changes.contains(&"deleted obj-00004".to_string()),
        "{changes:?}"
    );
}

/// One writer: while a scan holds the database, follow's commit waits (the events stay in
/// the queue), then HEADs again what the scan may have overtaken, and commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_waits_for_a_scan_and_heads_again_after_it() {
    let env = Env::new().await;
    let s = env.state();
    s.set_whole_seconds(true);
    fill(s, "bkt", "", 10);
    env.scan(&env.config("bkt", "")).await.unwrap();
    s.notify("bkt", Some(true));
    for i in 0..5 {
        s.put_object("bkt", &format!("n{i}"), b"n", &[]);
    }
    // A scan that holds the lock, stopped at its first LIST.
    s.reset_counters();
    s.hold(Op::List, Gate::Released);
    let mut scan = env.scan_cmd("s3://bkt", &env.db);
    scan.stderr(Stdio::null());
    let scan = tokio::task::spawn_blocking(move || scan.output().unwrap());
    s.wait_for_requests(Some(Op::List), 1).await;
    let summary = env.dir.path().join("f.json");
    let mut cmd = env.bin();
    cmd.args(["-v", "follow", "s3://bkt", "--once", "--sqs-queue-url"])
        .arg(queue_url(&env))
        .arg("--db")
        .arg(&env.db)
        .arg("--summary-json")
        .arg(&summary)
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let err = child.stderr.take().unwrap();
    // Follow says when it waits for the lock: then the scan may go on.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tx = Some(tx);
        let mut all = String::new();
        for line in std::io::BufReader::new(err).lines() {
            let line = line.unwrap();
            if line.contains("holds")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.await.expect("follow waits for the scan's lock");
    assert_eq!(s.requests(Op::Head), 5, "follow HEADed before waiting");
    s.release(Op::List);
    let scanned = scan.await.unwrap();
    assert_eq!(scanned.status.code(), Some(0));
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    let doc: Value = serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap();
    assert!(doc["follow"]["lock_waits"].as_u64().unwrap() >= 1, "{doc}");
    assert_eq!(
        doc["follow"]["heads"], 10,
        "the keys are HEADed again after the scan committed: {doc}"
    );
    let fresh = fresh_scan(&env, "fresh.db").await;
    assert_live_equal(&env, &fresh, "the scan beside follow");
}

/// POSTs `body` to the webhook; the status, or `None` when the connection failed.
async fn post(addr: std::net::SocketAddr, body: &str, token: Option<&str>) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn listen(env: &Env, addr: std::net::SocketAddr) -> std::process::Child {
    let mut cmd = env.bin();
    cmd.args([
        "follow",
        "s3://bkt",
        "--listen",
        &addr.to_string(),
        "--auth-token",
        "s3cret",
    ])
    .arg("--db")
    .arg(&env.db)
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // It says when it listens (the line comes after the bind).
    let err = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(err));
    let line = lines.next().unwrap().unwrap();
    assert!(line.contains("listening"), "{line}");
    std::thread::spawn(move || for _ in lines {});
    child
}

/// A burst of 10,000 POSTed events, the follower killed mid-burst, the senders' retries
/// delivered after a restart: every event answered 200 is committed, and the database equals
/// a full scan. A wrong token gets 401, a body that is not S3 events 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_burst_survives_a_kill_and_the_senders_retries() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let env = Env::new().await;
    let s = env.state();
    s.set_whole_seconds(true);
    s.create_bucket("bkt");
    s.notify("bkt", Some(true));
    for i in 0..10_000 {
        let owner = format!("o{}", i % 7);
        s.put_object("bkt", &format!("k/{i:05}"), b"x", &[("owner", &owner)]);
    }
    let bodies = Arc::new(s.sqs_sent());
    assert_eq!(bodies.len(), 10_000);
    let addr = free_port();
    let mut child = listen(&env, addr);
    assert_eq!(post(addr, &bodies[0], Some("wrong")).await, Some(401));
    assert_eq!(post(addr, &bodies[0], None).await, Some(401));
    assert_eq!(post(addr, "{not json", Some("s3cret")).await, Some(400));

    let acked = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..32 {
        let (bodies, acked, next) = (bodies.clone(), acked.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                let Some(body) = bodies.get(i) else { return };
                // A store's webhook retries until it gets its 200.
                while post(addr, body, Some("s3cret")).await != Some(200) {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                acked.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    while acked.load(Ordering::SeqCst) < 3_000 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = acked.load(Ordering::SeqCst);
    assert!(at_kill < 10_000, "the kill came mid-burst");
    let committed = count(&env.db, "SELECT count(*) FROM objects WHERE state = 'ok'");
    assert!(
        committed as u64 >= at_kill.min(3_000),
        "every answered event is committed: {committed} rows, {at_kill} answered"
    );
    let mut child = listen(&env, addr);
    for t in senders {
        t.await.unwrap();
    }
    // SIGTERM: it drains, commits and exits 130.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(130));
    let fresh = fresh_scan(&env, "fresh.db").await;
    assert_eq!(live(&fresh).len(), 10_000);
    assert_live_equal(&env, &fresh, "the burst");
}

/// Anything but loopback needs --allow-remote and a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_listen_address_needs_an_explicit_flag_and_a_token() {
    let env = Env::new().await;
    for (args, want) in [
        (vec!["--listen", "0.0.0.0:0"], "--allow-remote"),
        (
            vec!["--listen", "0.0.0.0:0", "--allow-remote"],
            "--auth-token",
        ),
    ] {
        let mut cmd = env.bin();
        cmd.args(["follow", "s3://bkt", "--db"])
            .arg(&env.db)
            .args(&args);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains(want) && err.lines().count() == 1, "{err}");
    }
    assert!(!env.db.exists(), "nothing was written");
}

/// Events carry no listing fields: what follow writes from HEAD (Last-Modified to the second,
/// no storage class for STANDARD) meets a listing with milliseconds and STANDARD, and the
/// rescan after it neither HEADs nor records a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_written_rows_meet_a_listing_with_milliseconds() {
    let env = Env::new().await;
    let s = env.state();
    // Listings say .123 (a frozen clock); HEAD's Last-Modified has whole seconds.
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_800_000_000_123);
    s.set_clock(Some(at));
    fill(s, "bkt", "", 3);
    env.scan(&env.config("bkt", "")).await.unwrap();
    s.notify("bkt", Some(true));
    s.put_object("bkt", "new", b"n", &[("owner", "ann")]);
    s.put_object("bkt", "obj-00001", b"rewritten", &[]);
    let (code, _, err) = follow_once(&env, &[]).await;
    assert_eq!(code, 0, "{err}");
    let ms = column(
        &env.db,
        "SELECT list_modified FROM objects WHERE key = 'new'",
    );
    assert!(ms[0].ends_with(".000Z"), "from HEAD: {ms:?}");
    let before = kinds(&env.db);
    s.reset_counters();
    env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(s.requests(Op::Head), 0);
    assert_eq!(kinds(&env.db), before);
    let ms = column(
        &env.db,
        "SELECT list_modified || ' ' || list_from_head FROM objects WHERE key = 'new'",
    );
    assert!(
        !ms[0].ends_with(".000Z 0") && ms[0].ends_with(" 0"),
        "the listing's own now: {ms:?}"
    );
}
