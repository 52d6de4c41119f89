//! Crash-consistency soak (issue 6): the built binary is SIGKILLed at 20 points of one scan
//! of a 20,000-object bucket, and resumed each time; the final database must equal (canonical
//! dump) an uninterrupted scan's. Then a second night: the bucket changes (objects rewritten,
//! deleted and created) and the rescan is killed 20 times too.
//!
//! The kill points are chosen by the server's request counter from a seed printed on stderr
//! (`soak seed N`); `S3META_SOAK_SEED=N cargo test --test soak` replays the same points and
//! the same bucket. After every kill the database must pass `PRAGMA integrity_check` and hold
//! exactly what its checkpoints say: every listed key up to each key range's last committed
//! key, nothing beyond it. The binary lists with its default `--list-parallelism` (16 ranges,
//! split as they go) and the reference scan with one stream, so the soak also checks that a
//! killed and resumed parallel scan equals a single-stream one.

mod common;

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::*;
use s3meta::scan::Outcome;

const OBJECTS: usize = 20_000;
const KILLS: usize = 20;

fn soak_seed() -> u64 {
    match std::env::var("S3META_SOAK_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .expect("S3META_SOAK_SEED must be an integer"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// How many requests each of `KILLS` runs may make before it is killed: the gaps between
/// `KILLS` sorted points drawn in `1..=span`, at least 1 each.
fn kill_budgets(rng: &mut fastrand::Rng, span: u64) -> Vec<u64> {
    let mut points: Vec<u64> = (0..KILLS).map(|_| rng.u64(1..=span)).collect();
    points.sort_unstable();
    let mut prev = 0;
    points
        .into_iter()
        .map(|p| {
            let gap = (p - prev).max(1);
            prev = p;
            gap
        })
        .collect()
}

fn scan_cmd(env: &Env) -> std::process::Command {
    let mut cmd = env.bin();
    cmd.args(["scan", "s3://bkt", "--db"]).arg(&env.db).args([
        // Kills with 16 ranges in flight: cut them in the full scans too.
        "--split-ranges",
        "always",
        "--backoff-ms",
        "1",
        "-j",
        "32",
        "--no-progress",
    ]);
    cmd
}

/// Runs the binary until the server has seen `budget` more requests, then SIGKILLs it.
/// Returns `None` when it was killed, or its exit status if it finished first.
async fn run_and_kill(env: &Env, budget: u64) -> Option<ExitStatus> {
    let start = env.state().total_requests();
    let mut cmd = tokio::process::Command::from(scan_cmd(env));
    let mut child = cmd.stderr(Stdio::null()).spawn().unwrap();
    // Cancel safety: both branches only wait; the child is reaped in either case.
    tokio::select! {
        _ = env.state().wait_for_requests(None, start + budget) => {
            child.start_kill().unwrap();
            let status = child.wait().await.unwrap();
            // It may have finished on its own between the count and the signal.
            status.code().map(|_| status)
        }
        status = child.wait() => Some(status.unwrap()),
    }
}

/// The keys an unfinished scan's checkpoints cover: per range (start_after, last committed
/// key], or up to the range's end once it is listed (its last page speaks for the keys after
/// it). Several ranges when the scan lists in parallel.
fn covered(conn: &rusqlite::Connection) -> impl Fn(&str) -> bool + use<> {
    let mut stmt = conn
        .prepare(
            "SELECT r.start_after, r.end_key, r.last_key, r.state = 'done'
             FROM scan_ranges r JOIN scans s USING (scan_id)
             WHERE s.state IN ('running', 'interrupted')",
        )
        .unwrap();
    // (start_after, up to); a range with nothing committed yet covers nothing.
    let ranges: Vec<(Option<String>, Option<String>)> = stmt
        .query_map([], |r| {
            let (start, end, last, done): (Option<String>, Option<String>, Option<String>, bool) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            Ok(match (done, last) {
                (true, _) => Some((start, end)),
                (false, Some(last)) => Some((start, Some(last))),
                (false, None) => None,
            })
        })
        .unwrap()
        .filter_map(Result::transpose)
        .collect::<Result<_, _>>()
        .unwrap();
    move |key: &str| {
        ranges.iter().any(|(after, upto)| {
            after.as_deref().is_none_or(|a| key > a) && upto.as_deref().is_none_or(|u| key <= u)
        })
    }
}

/// What every killed run must leave: a sound file holding exactly the keys its checkpoints
/// cover (`keys` is the bucket's listing, sorted), each HEADed or still owed a HEAD.
fn check_after_kill(db: &Path, keys: &[String], night: u32) {
    assert_eq!(column(db, "PRAGMA integrity_check"), ["ok"]);
    let conn = rusqlite::Connection::open(db).unwrap();
    let covered = covered(&conn);
    if night == 1 {
        // A first scan: the objects are exactly the listed keys the checkpoints cover.
        let stored = column(db, "SELECT key FROM objects ORDER BY key");
        let expected: Vec<&String> = keys.iter().filter(|k| covered(k)).collect();
        assert_eq!(
            stored.len(),
            expected.len(),
            "objects vs checkpoints ({} expected)",
            expected.len()
        );
        assert!(
            stored.iter().all(|k| covered(k)),
            "rows beyond the checkpoints"
        );
        assert_eq!(
            count(
                db,
                "SELECT count(*) FROM objects WHERE (head_due = 0) != (state = 'ok')"
            ),
            0,
            "an object is HEADed (ok) or owed a HEAD (pending)"
        );
        assert_eq!(
            count(
                db,
                "SELECT count(*) FROM metadata JOIN objects USING (object_id) WHERE head_due = 1"
            ),
            0,
            "metadata only on HEADed objects"
        );
    } else {
        // A rescan: nothing beyond the checkpoints is marked deleted or changed yet.
        let mut stmt = conn
            .prepare(
                "SELECT o.key FROM changes c JOIN objects o USING (object_id)
                 JOIN scans s USING (scan_id) WHERE s.state IN ('running', 'interrupted')",
            )
            .unwrap();
        let changed: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let early: Vec<&String> = changed.iter().filter(|k| !covered(k)).collect();
        assert!(
            early.is_empty(),
            "changes recorded beyond the checkpoints: {early:?}"
        );
    }
}

/// Kills a scan of the bucket at the points `budgets` give, then lets it finish.
async fn soak(env: &Env, budgets: &[u64], keys: &[String], night: u32) -> String {
    let started = Instant::now();
    let mut headed = Vec::new();
    for &budget in budgets {
        if let Some(status) = run_and_kill(env, budget).await {
            panic!("night {night}: the scan finished ({status}) before its kill");
        }
        check_after_kill(&env.db, keys, night);
        headed.push(count(
            &env.db,
            "SELECT count(*) FROM objects WHERE head_due = 0",
        ));
    }
    let out = output(scan_cmd(env)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("resumed"), "{}", stderr(&out));
    format!(
        "night {night}: {} kills, each after {budgets:?} requests, with {headed:?} objects \
         HEADed or unchanged at each; then completed in {:.1}s all told",
        budgets.len(),
        started.elapsed().as_secs_f64()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_20_points_of_a_scan_and_of_a_rescan_loses_and_duplicates_nothing() {
    let seed = soak_seed();
    eprintln!("soak seed {seed} (replay with S3META_SOAK_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let env = Env::new().await;
    env.state().fill("bkt", OBJECTS, seed);
    let mut keys: Vec<String> = (0..OBJECTS)
        .map(|i| format!("data/{:02}/obj-{i:08}", i % 100))
        .collect();
    keys.sort_unstable();
    let reference = env.dir.path().join("reference.db");
    let cfg = env.config("bkt", "");
    let r = env.scan_into(&cfg, &reference).await.unwrap();
    assert_eq!(r.outcome, Outcome::Complete);

    // Night 1: a first scan, 20,000 HEADs and 20 LISTs; the kills fall in its first 95%.
    let budgets = kill_budgets(&mut rng, (OBJECTS as u64 + 20) * 95 / 100);
    let night1 = soak(&env, &budgets, &keys, 1).await;
    assert_eq!(column(&env.db, "SELECT state FROM scans"), ["complete"]);
    assert!(
        count(&env.db, "SELECT count(*) FROM scan_ranges") > 1,
        "the binary listed key ranges in parallel"
    );
    assert_eq!(dump(&env.db), dump(&reference));

    // Night 2: rewrite 1,000 objects (half with new metadata), delete 500, create 500.
    for _ in 0..1000 {
        let i = rng.usize(0..OBJECTS);
        let key = &keys[i];
        let meta: &[(&str, &str)] = if i.is_multiple_of(2) {
            &[("owner", "night2"), ("project", "soak")]
        } else {
            &[]
        };
        env.state()
            .put_object("bkt", key, format!("v2 {i}").as_bytes(), meta);
    }
    let mut deleted = 0;
    while deleted < 500 {
        deleted += usize::from(
            env.state()
                .delete_object("bkt", &keys[rng.usize(0..OBJECTS)]),
        );
    }
    for j in 0..500 {
        let key = format!("data/{:02}/new-{j:05}", rng.usize(0..100));
        env.state()
            .put_object("bkt", &key, b"new", &[("owner", "new")]);
    }
    let keys2 = list_all(&env).await;
    env.state().reset_counters();
    env.scan_into(&cfg, &reference).await.unwrap();
    let rescan_requests = env.state().total_requests();
    let budgets = kill_budgets(&mut rng, rescan_requests * 95 / 100);
    let night2 = soak(&env, &budgets, &keys2, 2).await;
    assert_eq!(
        column(
            &env.db,
            "SELECT mode || ' ' || state FROM scans ORDER BY scan_id"
        ),
        ["full complete", "rescan complete"]
    );
    assert!(count(&env.db, "SELECT count(*) FROM changes") >= 1500);
    assert_eq!(dump(&env.db), dump(&reference));
    eprintln!("soak seed {seed}: {night1}; {night2}");
}

/// Every key of the bucket, in listing order, through the S3 API.
async fn list_all(env: &Env) -> Vec<String> {
    let client = env.s3().client;
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = client
            .list_objects_v2()
            .bucket("bkt")
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        keys.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        token = out.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return keys;
        }
    }
}
