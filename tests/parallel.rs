//! Parallel listing of key ranges: equal to a single stream on uniform, skewed and flat
//! keyspaces, for full scans and rescans; resumable after SIGKILL with several ranges in
//! flight (issue 7).

mod common;

use std::process::Stdio;
use std::sync::Arc;

use common::*;
use s3meta::model::stats::Stats;
use s3meta::s3::list::Lister;
use s3meta::s3::probe;
use s3meta::scan::Outcome;
use tokio_util::sync::CancellationToken;

/// Keys spread over 20 "directories" (uniform), 90% under one prefix (skewed), or flat.
fn key_for(shape: &str, i: usize) -> String {
    match shape {
        "uniform" => format!("dir-{:02}/file-{i:05}", i % 20),
        "skewed" if !i.is_multiple_of(10) => format!("big/part-{i:05}"),
        "skewed" => format!("small-{:02}/file-{i:05}", i % 7),
        _ => format!("obj{i:06}"),
    }
}

fn populate(state: &State, shape: &str, n: usize) {
    for i in 0..n {
        let key = key_for(shape, i);
        let meta = [("n", i.to_string())];
        let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
        state.put_object(
            "bkt",
            &key,
            key.as_bytes(),
            if i % 3 == 0 { &[] } else { &meta },
        );
    }
}

/// Night two: rewrite, delete and add some objects.
fn change(state: &State, shape: &str, n: usize) {
    populate(state, shape, n + 57);
    for i in (0..n).step_by(13) {
        let key = key_for(shape, i);
        if i % 2 == 0 {
            state.delete_object("bkt", &key);
        } else {
            state.put_object("bkt", &key, b"rewritten", &[("night", "2")]);
        }
    }
}

async fn parallel_equals_single_stream(shape: &str) {
    let env = Env::new().await;
    const N: usize = 3000;
    populate(env.state(), shape, N);
    let single = env.dir.path().join("single.db");
    env.scan_into(&env.config("bkt", ""), &single)
        .await
        .unwrap();

    let mut cfg = env.config("bkt", "");
    cfg.list_parallelism = 8;
    // Ranges are the point here: cut them in a full scan too (whose HEADs would otherwise
    // keep it at one stream, see `Splits`).
    cfg.splits = s3meta::scan::Splits::Always;
    let report = env.scan(&cfg).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    let ranges = count(&env.db, "SELECT count(*) FROM scan_ranges");
    assert!(ranges >= 4, "{shape}: only {ranges} ranges");
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM scan_ranges WHERE state != 'done'"
        ),
        0
    );
    assert_eq!(
        count(&env.db, "SELECT sum(keys_listed) FROM scan_ranges"),
        N as i64,
        "{shape}: every key listed once"
    );
    assert_eq!(dump(&env.db), dump(&single), "{shape}: full scan");

    change(env.state(), shape, N);
    env.scan_into(&env.config("bkt", ""), &single)
        .await
        .unwrap();
    let night2 = env.scan(&cfg).await.unwrap();
    assert_eq!(night2.mode, s3meta::model::Mode::Rescan);
    assert!(count(&env.db, "SELECT count(*) FROM changes") > 200);
    assert_eq!(dump(&env.db), dump(&single), "{shape}: rescan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_listing_equals_a_single_stream_on_a_uniform_keyspace() {
    parallel_equals_single_stream("uniform").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_listing_equals_a_single_stream_on_a_skewed_keyspace() {
    parallel_equals_single_stream("skewed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_listing_equals_a_single_stream_on_a_flat_keyspace() {
    parallel_equals_single_stream("flat").await;
}

/// Issue 15: by default (`Splits::WhenListingBound`) a full scan whose HEADs are slower than
/// its listing lists with one stream and sends no probe: every LIST is a page. A rescan of the
/// same unchanged bucket, which waits on nothing but listing, starts cut at quantiles of the
/// stored keys — one range per ten pages — and sends no split probe: its LIST requests are
/// the pages, one partial page per extra range, and the probe that establishes the store's
/// order (which any rescan of these keys needs once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scan_bound_by_its_heads_sends_no_split_probes() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "d/", 1000);
    let mut cfg = env.config("bkt", "");
    cfg.list_parallelism = 16;
    // 100 HEADs a page, four at a time at 20 ms: a page's HEADs take half a second, its LIST
    // a millisecond.
    cfg.concurrency = 4;
    env.state()
        .set_latency(Some(Op::Head), std::time::Duration::from_millis(20));
    let full = env.scan(&cfg).await.unwrap();
    assert_eq!(full.outcome, Outcome::Complete);
    assert_eq!(env.state().requests(Op::List), 10, "10 pages, no probe");
    assert_eq!(count(&env.db, "SELECT count(*) FROM scan_ranges"), 1);

    env.state()
        .set_latency(Some(Op::Head), std::time::Duration::ZERO);
    env.state()
        .set_latency(Some(Op::List), std::time::Duration::from_millis(20));
    cfg.page_size = 20; // 50 pages, a second of listing for one stream
    env.state().reset_counters();
    let rescan = env.scan(&cfg).await.unwrap();
    assert_eq!(rescan.mode, s3meta::model::Mode::Rescan);
    assert_eq!(rescan.outcome, Outcome::Complete);
    let ranges = count(
        &env.db,
        "SELECT count(*) FROM scan_ranges WHERE scan_id = 2",
    );
    assert_eq!(
        ranges, 6,
        "1,000 stored keys, pages of 20: one range per 200 keys"
    );
    let lists = env.state().requests(Op::List);
    assert!(lists <= 50 + 5 + 2, "{lists} LIST requests for 50 pages");
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects WHERE state = 'ok'"),
        1000
    );
    assert_eq!(count(&env.db, "SELECT count(*) FROM changes"), 0);

    // The order is known now: the next rescan sends no probe at all.
    env.state().reset_counters();
    env.scan(&cfg).await.unwrap();
    let lists = env.state().requests(Op::List);
    assert!(lists <= 50 + 5, "{lists} LIST requests for 50 pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_several_ranges_in_flight_then_resume() {
    let env = Env::new().await;
    populate(env.state(), "uniform", 8000);
    let single = env.dir.path().join("single.db");
    env.scan_into(&env.config("bkt", ""), &single)
        .await
        .unwrap();
    // Listing is the slow part, so ranges are still listing whatever the client's speed: 80
    // pages at 30 ms, while a split alone costs some 50 one-key probes.
    env.state()
        .set_latency(Some(Op::List), std::time::Duration::from_millis(30));

    let scan = || {
        let mut cmd = env.bin();
        cmd.args([
            "scan",
            "s3://bkt",
            "--list-parallelism",
            "8",
            "--split-ranges",
            "always",
            "--page-size",
            "100",
            "--backoff-ms",
            "1",
            "--db",
        ])
        .arg(&env.db);
        cmd
    };
    // Kill points by the server's LIST counter: past the first split, before the last page.
    for kill_after in [90u64, 40] {
        let before = env.state().requests(Op::List);
        let mut child = scan().stderr(Stdio::null()).spawn().unwrap();
        env.state()
            .wait_for_requests(Some(Op::List), before + kill_after)
            .await;
        child.kill().unwrap();
        assert!(child.wait().unwrap().code().is_none());
    }
    let in_flight = count(
        &env.db,
        "SELECT count(*) FROM scan_ranges WHERE state = 'listing'",
    );
    assert!(
        in_flight >= 2,
        "killed with {in_flight} ranges still listing"
    );
    let out = output(scan()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("resumed"));
    assert_eq!(dump(&env.db), dump(&single));
}

/// Issue 7 with faults: LIST errors on the pages and probes of ranges in flight are retried
/// (500s and SlowDowns); a page that fails for good stops the scan (exit 1) with every range's
/// checkpoint intact, and once the store recovers the resumed scan equals a single stream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_faults_with_ranges_in_flight_are_retried_or_resumed() {
    let env = Env::new().await;
    populate(env.state(), "uniform", 3000);
    let single = env.dir.path().join("single.db");
    env.scan_into(&env.config("bkt", ""), &single)
        .await
        .unwrap();
    let scan = |db: &std::path::Path| {
        let mut cmd = env.bin();
        cmd.args([
            "scan",
            "s3://bkt",
            "--split-ranges",
            "always",
            "--page-size",
            "100",
            "--backoff-ms",
            "1",
        ])
        .args(["--no-progress", "--db"])
        .arg(db);
        cmd
    };

    // Transient (fewer than --max-attempts in a row, since a retry asks for the same page):
    // page 1 of a listing is also what every one-key probe asks for.
    env.state()
        .add_fault(Fault::list_page(1, Action::Status(503)).times(12));
    env.state()
        .add_fault(Fault::list_page(3, Action::Status(500)).times(4));
    let lists = env.state().requests(Op::List);
    let out = output(scan(&env.db)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(count(&env.db, "SELECT count(*) FROM scan_ranges") > 1);
    assert_eq!(count(&env.db, "SELECT retries FROM scans"), 16);
    assert_eq!(
        count(&env.db, "SELECT list_requests FROM scans") as u64,
        env.state().requests(Op::List) - lists
    );
    assert_eq!(dump(&env.db), dump(&single));

    // For good: the fourth page of every range fails until the store recovers.
    env.state().clear_faults();
    env.state()
        .add_fault(Fault::list_page(4, Action::Status(500)));
    let db = env.dir.path().join("second.db");
    let out = output(scan(&db)).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("listing s3://bkt/"),
        "{}",
        stderr(&out)
    );
    assert_eq!(column(&db, "PRAGMA integrity_check"), ["ok"]);
    assert_eq!(column(&db, "SELECT state FROM scans"), ["interrupted"]);
    assert!(
        count(
            &db,
            "SELECT count(*) FROM scan_ranges WHERE state != 'done'"
        ) >= 1
    );
    env.state().clear_faults();
    let out = output(scan(&db)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("resumed"), "{}", stderr(&out));
    assert_eq!(dump(&db), dump(&single));
}

fn lister(env: &Env, bucket: &str) -> Lister {
    let s3 = env.s3();
    Lister {
        client: s3.client,
        store: s3.store,
        bucket: bucket.into(),
        prefix: String::new(),
        page_size: 1000,
        policy: env.config(bucket, "").policy,
        stats: Arc::new(Stats::default()),
        cancel: CancellationToken::new(),
        rate: None,
        order: Arc::new(s3meta::s3::list::Order::new(None)),
        witnesses: Default::default(),
        versions: false,
        first: Default::default(),
    }
}

/// How many of `keys` each piece between consecutive cuts holds (after `from`).
fn piece_sizes(keys: &[String], from: Option<&str>, cuts: &[String]) -> Vec<usize> {
    let mut bounds: Vec<Option<&str>> = vec![from];
    bounds.extend(cuts.iter().map(|c| Some(c.as_str())));
    bounds.push(None);
    bounds
        .windows(2)
        .map(|w| {
            keys.iter()
                .filter(|k| w[0].is_none_or(|a| k.as_str() > a))
                .filter(|k| w[1].is_none_or(|b| k.as_str() <= b))
                .count()
        })
        .collect()
}

/// Issue 7: when the first position where keys differ has fewer characters than the pieces
/// wanted (ten digits in `data/NN/…` for 16 streams), the cuts go one position deeper, so every
/// piece holds a fair share; and no cut lies past the last key (no empty last stream).
#[tokio::test]
async fn a_range_splits_into_sixteen_fair_pieces_over_ten_digits() {
    let env = Env::new().await;
    env.state().fill("bkt", 3000, 7);
    let mut keys: Vec<String> = (0..3000)
        .map(|i| format!("data/{:02}/obj-{i:08}", i % 100))
        .collect();
    keys.sort();
    let lister = lister(&env, "bkt");

    let cuts = probe::find_splits(&lister, None, None, 16).await.unwrap();
    assert_eq!(cuts.len(), 15, "{cuts:?}");
    for n in piece_sizes(&keys, None, &cuts) {
        assert!((150..=240).contains(&n), "pieces {cuts:?}");
    }

    // A range being listed is cut after its last listed key, from that key alone.
    let listed = "data/42/obj-00000042";
    let cuts = probe::find_splits_after_key(&lister, listed, None, 4)
        .await
        .unwrap();
    assert_eq!(cuts.len(), 3, "{cuts:?}");
    assert!(cuts.iter().all(|c| c.as_str() > listed), "{cuts:?}");
    for n in piece_sizes(&keys, Some(listed), &cuts) {
        assert!(n >= 200, "pieces {cuts:?}");
    }

    // A folder marker is a prefix of every key after it: the keys left differ only beyond it.
    env.state().put_object("bkt", "data/50/", b"", &[]);
    let cuts = probe::find_splits_after_key(&lister, "data/50/", Some("data/50/z"), 2)
        .await
        .unwrap();
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    assert!(cuts[0].starts_with("data/50/obj-"), "{cuts:?}");
}

/// Issue 15: a new rescan starts cut at quantiles of the keys the database holds (one range
/// per ten pages, here 30 pages → 4 ranges) with no split probe, and ends equal to a single
/// stream's rescan — also when the cut keys themselves, the keys just after them (the new
/// ranges' witnesses), the first and the last key are deleted, and keys appear right after
/// each cut, before the first key and after the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescan_starts_cut_at_stored_keys_and_equals_a_single_stream() {
    let env = Env::new().await;
    const N: usize = 3000;
    populate(env.state(), "uniform", N);
    let single = env.dir.path().join("single.db");
    let one = env.config("bkt", "");
    env.scan_into(&one, &single).await.unwrap();
    let mut cfg = env.config("bkt", "");
    cfg.list_parallelism = 8;
    env.state().reset_counters();
    env.scan(&cfg).await.unwrap();
    assert_eq!(dump(&env.db), dump(&single));
    // The listing did not show the order (every pair agrees in both): at the end of 30
    // pages the full scan learns it with two one-key LISTs, so the rescan need not.
    assert_eq!(env.state().requests(Op::List), 30 + 2);
    assert_eq!(column(&env.db, "SELECT key_order FROM buckets"), ["byte"]);
    assert_eq!(column(&single, "SELECT key_order FROM buckets"), ["byte"]);

    let mut keys: Vec<String> = (0..N).map(|i| key_for("uniform", i)).collect();
    keys.sort();
    let cuts: Vec<usize> = (1..4).map(|i| i * N / 4 - 1).collect();
    for &c in &cuts {
        env.state().delete_object("bkt", &keys[c]);
        env.state().delete_object("bkt", &keys[c + 1]);
        env.state()
            .put_object("bkt", &format!("{}0", keys[c]), b"new", &[("new", "1")]);
    }
    for k in [&keys[0], &keys[N - 1]] {
        env.state().delete_object("bkt", k);
    }
    for k in ["a-before-everything", "zz-after-everything"] {
        env.state().put_object("bkt", k, b"new", &[]);
    }

    env.scan_into(&one, &single).await.unwrap();
    env.state().reset_counters();
    let rescan = env.scan(&cfg).await.unwrap();
    assert_eq!(rescan.mode, s3meta::model::Mode::Rescan);
    assert_eq!(dump(&env.db), dump(&single), "rescan cut at stored keys");
    let ranges = column(
        &env.db,
        "SELECT coalesce(start_after, '-') FROM scan_ranges WHERE scan_id = 2 ORDER BY range_no",
    );
    let want: Vec<String> = std::iter::once("-".to_string())
        .chain(cuts.iter().map(|&c| keys[c].clone()))
        .collect();
    assert_eq!(ranges, want);
    // 30 pages and at most one partial page per extra range: no probe (the order is known).
    let lists = env.state().requests(Op::List);
    assert!(lists <= 30 + 3, "{lists} LIST requests");
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM changes WHERE scan_id = 2"),
        3 * 3 + 4
    );
}

/// HEAD answers waiting for a busy writer count against the pool's bound: with a writer that
/// takes one answer and no more, the pool sends `IN_PROGRESS_PER_SLOT × concurrency` + 1
/// HEADs and stops (it used to go on through every queued job, holding each answer: 111 MB at
/// a million objects when 16 listing streams outran the writer). The half second only bounds
/// how long a HEAD that must not come is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_waiting_for_the_writer_bound_the_heads_sent() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 200);
    let cancel = CancellationToken::new();
    let pool = Arc::new(s3meta::s3::head::HeadPool {
        target: env.s3().head_target("bkt").await.unwrap(),
        concurrency: 2,
        policy: env.config("bkt", "").policy,
        stats: Arc::new(Stats::default()),
        cancel: cancel.clone(),
        rate: None,
        grace: std::time::Duration::from_millis(10),
        read_tags: false,
        tags_refused: Default::default(),
        checksum_refused: Default::default(),
        trust_tag_count: false,
        latency: None,
    });
    let (jobs_tx, jobs_rx) = tokio::sync::mpsc::channel(200);
    for i in 0..200 {
        let job = s3meta::model::HeadJob {
            object_id: i + 1,
            key: format!("obj-{i:05}"),
            version_id: None,
            work: s3meta::model::Work::Head,
        };
        jobs_tx.send(job).await.unwrap();
    }
    let (results_tx, _unread) = tokio::sync::mpsc::channel(1);
    let run = tokio::spawn(pool.run(jobs_rx, results_tx));
    let bound = 2 * s3meta::s3::head::IN_PROGRESS_PER_SLOT as u64 + 1;
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        env.state().wait_for_requests(Some(Op::Head), bound),
    )
    .await
    .expect("the pool sent fewer HEADs than its bound allows");
    let more = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        env.state().wait_for_requests(Some(Op::Head), bound + 1),
    )
    .await;
    assert!(more.is_err(), "a HEAD beyond the bound was sent");
    cancel.cancel();
    run.await.unwrap();
    assert_eq!(env.state().requests(Op::Head), bound);
}

/// A listing-bound full scan under `--split-ranges auto` grows its streams by doubling: its
/// first split, affordable after about 490 pages, adds one stream rather than fifteen (each
/// stream holds a page and its HEAD jobs), and the result equals one stream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scan_split_under_auto_adds_one_stream_at_first() {
    let env = Env::new().await;
    populate(env.state(), "uniform", 8000);
    let single = env.dir.path().join("single.db");
    let mut one = env.config("bkt", "");
    one.page_size = 10;
    env.scan_into(&one, &single).await.unwrap();
    // 800 pages; each LIST slower than its 10 HEADs: the listing is the bottleneck.
    env.state()
        .set_latency(Some(Op::List), std::time::Duration::from_millis(2));
    let cfg = s3meta::scan::ScanConfig {
        list_parallelism: 16,
        ..one.clone()
    };
    let report = env.scan(&cfg).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(dump(&env.db), dump(&single));
    // Here it splits once, into 2 (all at once, it made 5); 1 if a loaded machine's HEADs
    // fell behind the listing and no split was due.
    let ranges = count(&env.db, "SELECT count(*) FROM scan_ranges");
    assert!(
        ranges <= 3,
        "{ranges} ranges: the first split of a full scan doubles its one stream"
    );
}
