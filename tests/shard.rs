//! Sharding across machines: plan → range scans → merge equals one scan, night after night
//! (issue 7).

mod common;

use std::path::PathBuf;

use common::*;
use s3meta::scan::ScanConfig;
use serde_json::Value;

async fn run_ok(mut cmd: std::process::Command) -> String {
    cmd.args(["--backoff-ms", "1"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn fill_tree(state: &State, night: u32) {
    for i in 0..2400 {
        let key = format!(
            "{}/{:03}/obj\t{i}",
            ["alpha", "beta", "gamma..", "delta\n"][i % 4],
            i % 37
        );
        if night == 2 && i % 11 == 0 {
            state.delete_object("bkt", &key);
        } else if night == 2 && i % 7 == 0 {
            state.put_object("bkt", &key, b"v2", &[("night", "2")]);
        } else if night == 1 {
            state.put_object("bkt", &key, key.as_bytes(), &[("i", &i.to_string())]);
        }
    }
    if night == 2 {
        state.put_object("bkt", "zeta/new", b"n", &[]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_range_scans_and_merge_equal_one_scan_on_two_nights() {
    let env = Env::new().await;
    fill_tree(env.state(), 1);
    let single = env.dir.path().join("single.db");
    let merged = env.dir.path().join("merged.db");

    let mut plan = env.bin();
    plan.args(["plan", "s3://bkt", "--ranges", "5"]);
    let out = output(plan).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    let ranges: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(ranges[0]["start_after"].is_null() && ranges[4]["end"].is_null());
    for pair in ranges.windows(2) {
        assert_eq!(
            pair[0]["end"], pair[1]["start_after"],
            "ranges are contiguous"
        );
        assert!(
            pair[1]["start_after"].as_str().unwrap()
                > pair[0]["start_after"].as_str().unwrap_or("")
        );
    }

    for night in 1..=2 {
        if night == 2 {
            fill_tree(env.state(), 2);
        }
        env.scan_into(&env.config("bkt", ""), &single)
            .await
            .unwrap();
        let mut shards: Vec<PathBuf> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let db = env.dir.path().join(format!("shard-{i}.db"));
            let mut scan = env.bin();
            scan.args(["scan", "--range-json", line, "--page-size", "100", "--db"])
                .arg(&db);
            run_ok(scan).await;
            shards.push(db);
        }
        let mut merge = env.bin();
        merge.arg("merge").arg(&merged).args(&shards);
        let out = output(merge).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(dump(&merged), dump(&single), "night {night}");
        if night == 2 {
            assert_eq!(
                count(
                    &shards[0],
                    "SELECT count(*) FROM scans WHERE mode = 'rescan'"
                ),
                1,
                "shards rescan incrementally"
            );
            assert!(count(&merged, "SELECT count(*) FROM changes") > 300);
            assert_eq!(count(&merged, "SELECT count(*) FROM scans"), 10);
        }
    }

    // A range line of another bucket, and a malformed line, are refused.
    let mut bad = env.bin();
    bad.args(["scan", "s3://other", "--range-json", &lines[0], "--db"])
        .arg(&merged);
    let out = output(bad).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is a range of s3://bkt/"),
        "{}",
        stderr(&out)
    );
    let mut bad = env.bin();
    bad.args(["scan", "--range-json", "{\"bucket\":", "--db"])
        .arg(&merged);
    let out = output(bad).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("expected one line printed by `s3meta plan`"),
        "{}",
        stderr(&out)
    );
}

/// Issue 13: a range line's bucket is checked like an `s3://` URL's before anything is sent,
/// and an empty range is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_json_lines_with_bad_buckets_or_empty_ranges_are_refused() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 5);
    for (bucket, needle) in [
        ("s3://x", "bucket name `s3://x` contains `:`"),
        ("a/../b", "bucket name `a/../b` contains `/`"),
        ("", "must be 3 to 255 characters long"),
        ("bkt\n", "contains `\\n`"),
    ] {
        let line =
            serde_json::json!({"bucket": bucket, "prefix": "", "start_after": null, "end": "k"});
        let mut cmd = env.bin();
        cmd.args(["scan", "--range-json", &line.to_string(), "--db"])
            .arg(&env.db);
        let out = output(cmd).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("--range-json: "), "{err}");
        assert!(err.contains(needle), "expected {needle:?} in {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let empty = r#"{"bucket":"bkt","prefix":"","start_after":"m","end":"c"}"#;
    let mut cmd = env.bin();
    cmd.args(["scan", "--range-json", empty, "--db"])
        .arg(&env.db);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the range is empty"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.state().requests(Op::List), 0, "nothing was sent");
    assert!(!env.db.exists());
}

/// Issue 13: merge checks every input before it creates or changes OUT, and attaches the
/// inputs read-only, so a missing or mistyped input is an error and never an empty database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_checks_every_input_before_touching_out() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 40);
    let good = env.dir.path().join("good.db");
    env.scan_into(&env.config("bkt", ""), &good).await.unwrap();
    let unfinished = env.dir.path().join("unfinished.db");
    // Refused after its first page (a scan refused at once leaves no database, issue 18).
    env.state()
        .add_fault(Fault::list_page(2, Action::Status(403)).times(1));
    let cfg = ScanConfig {
        page_size: 10,
        ..env.config("bkt", "")
    };
    assert!(env.scan_into(&cfg, &unfinished).await.is_err());
    let missing = env.dir.path().join("misspelled.db");
    let out = env.dir.path().join("out.db");
    let merge = |inputs: &[&PathBuf]| {
        let mut cmd = env.bin();
        cmd.arg("merge").arg(&out).args(inputs);
        output(cmd)
    };
    for (inputs, needle) in [
        (vec![&good, &missing], "misspelled.db does not exist"),
        (vec![&good, &unfinished], "holds an unfinished scan"),
        (vec![&good, &good], "is given twice"),
    ] {
        let o = merge(&inputs).await;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(needle), "expected {needle:?} in {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            !out.exists(),
            "OUT is not created before the inputs are checked"
        );
        assert!(!missing.exists(), "a missing input is never created");
    }
    let o = merge(&[&good]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(dump(&out), dump(&good));
    let mut cmd = env.bin();
    cmd.arg("merge").arg(&good).arg(&out);
    let o = output(cmd).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut cmd = env.bin();
    cmd.arg("merge").arg(&out).arg(&out);
    let o = output(cmd).await;
    assert!(stderr(&o).contains("into itself"), "{}", stderr(&o));
}
