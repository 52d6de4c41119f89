//! Operations: the --summary-json document, `estimate`, completions and the man page (issue 8).

mod common;

use std::process::Stdio;

use common::*;
use serde_json::Value;

fn scan_cmd(env: &Env, url: &str, summary: &std::path::Path) -> std::process::Command {
    let mut cmd = env.scan_cmd(url, &env.db);
    cmd.arg("--summary-json").arg(summary);
    cmd
}

fn read(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_json_after_complete_partial_interrupted_and_fatal_runs() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 300);
    let path = env.dir.path().join("summary.json");

    // Partial: one object unreadable → exit 3.
    env.state()
        .add_fault(Fault::head("obj-00007", Action::Status(403)));
    let out = output(scan_cmd(&env, "s3://bkt", &path)).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let s = read(&path);
    assert_eq!(s["state"], "complete_with_errors");
    assert_eq!(s["exit_code"], 3);
    assert_eq!(s["store"], env.server.endpoint());
    assert_eq!(
        (s["bucket"].as_str(), s["prefix"].as_str()),
        (Some("bkt"), Some(""))
    );
    assert_eq!(s["mode"], "full");
    assert_eq!(s["scan_id"], 1);
    assert_eq!(s["objects"]["listed"], 300);
    assert_eq!(s["objects"]["headed"], 300);
    assert_eq!(s["objects"]["errored"], 1);
    assert_eq!(
        s["objects"]["with_metadata"], 199,
        "obj-00007 has metadata but failed"
    );
    // Three pages, plus split probes when it lists in parallel (the default).
    let lists = env.state().requests(Op::List);
    assert!(lists >= 3);
    assert_eq!(s["requests"]["list"], lists);
    assert_eq!(s["requests"]["head"], env.state().requests(Op::Head));
    // obj-00007's 403 is asked once more without x-amz-checksum-mode (see `CHECKSUM_REFUSALS`).
    assert_eq!(s["requests"]["total"], lists + 301);
    assert!(s["duration_seconds"].as_f64().unwrap() > 0.0);
    assert!(s["resources"]["peak_rss_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(s["error"].is_null());

    // Complete: the rescan HEADs only the failed object.
    env.state().clear_faults();
    let out = output(scan_cmd(&env, "s3://bkt", &path)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = read(&path);
    assert_eq!(
        (
            s["state"].as_str(),
            s["mode"].as_str(),
            s["exit_code"].as_u64()
        ),
        (Some("complete"), Some("rescan"), Some(0))
    );
    assert_eq!(
        (
            s["objects"]["headed"].as_u64(),
            s["objects"]["skipped"].as_u64()
        ),
        (Some(1), Some(299))
    );

    // Interrupted: SIGTERM mid-scan → exit 130, resumable.
    env.state().put_object("bkt", "zzz", b"x", &[]);
    env.state().hold(Op::Head, Gate::Released);
    let mut full = scan_cmd(&env, "s3://bkt", &path);
    full.arg("--full").stderr(Stdio::null());
    let child = full.spawn().unwrap();
    let before = env.state().requests(Op::Head);
    env.state()
        .wait_for_requests(Some(Op::Head), before + 1)
        .await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    env.state().release(Op::Head);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130));
    let s = read(&path);
    assert_eq!(
        (s["state"].as_str(), s["exit_code"].as_u64()),
        (Some("interrupted"), Some(130))
    );
    assert!(s["objects"]["head_due"].as_i64().unwrap() > 0, "{s}");

    // Fatal: the bucket does not exist → exit 1, with the error.
    let out = output(scan_cmd(&env, "s3://nosuch", &path)).await;
    assert_eq!(out.status.code(), Some(1));
    let s = read(&path);
    assert_eq!(
        (s["state"].as_str(), s["exit_code"].as_u64()),
        (Some("failed"), Some(1))
    );
    assert!(
        s["error"]
            .as_str()
            .unwrap()
            .contains("bucket `nosuch` does not exist"),
        "{s}"
    );

    // `-` writes the document to stdout.
    let mut cmd = env.bin();
    cmd.args(["scan", "s3://bkt", "-q", "--summary-json", "-", "--db"])
        .arg(&env.db);
    let out = output(cmd).await;
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["state"], "complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimate_counts_match_what_the_scan_sends() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "p/", 2500);
    let estimate = |extra: &[&str]| {
        let mut cmd = env.bin();
        cmd.args(["estimate", "s3://bkt/p/", "--format", "json", "--db"])
            .arg(&env.db)
            .args(extra);
        output(cmd)
    };
    let out = estimate(&[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            e["objects"].as_u64(),
            e["list_requests"].as_u64(),
            e["full_heads"].as_u64()
        ),
        (Some(2500), Some(3), Some(2500))
    );
    assert!(e["rescan_heads"].is_null());
    assert_eq!(e["next_scan"], "full");
    assert!(
        (e["full_cost_usd"].as_f64().unwrap() - (3.0 * 0.005 + 2500.0 * 0.0004) / 1000.0).abs()
            < 1e-12
    );
    assert_eq!(env.state().requests(Op::Head), 0, "estimate never HEADs");
    assert!(!env.db.exists(), "estimate never creates a database");

    let mut cfg = env.config("bkt", "p/");
    cfg.page_size = 1000;
    env.scan(&cfg).await.unwrap();
    assert_eq!(env.state().requests(Op::Head), 2500);
    for i in 0..7 {
        env.state()
            .put_object("bkt", &format!("p/obj-{i:05}"), b"changed", &[]);
    }
    env.state().put_object("bkt", "p/new", b"n", &[]);
    let out = estimate(&["--list-price", "1", "--head-price", "2"]).await;
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (e["rescan_heads"].as_u64(), e["next_scan"].as_str()),
        (Some(8), Some("rescan"))
    );
    assert!((e["rescan_cost_usd"].as_f64().unwrap() - (3.0 + 16.0) / 1000.0).abs() < 1e-12);
    // What --tags would add: at most one GetObjectTagging per object, or per HEADed one.
    assert_eq!(
        (
            e["tags_full"].as_u64(),
            e["tags_rescan"].as_u64(),
            e["tags_rescan_skip_unchanged"].as_u64()
        ),
        (Some(2501), Some(2501), Some(8))
    );

    env.state().reset_counters();
    let report = env.scan(&cfg).await.unwrap();
    assert_eq!(
        env.state().requests(Op::Head),
        8,
        "the rescan sends what estimate said"
    );
    assert_eq!(env.state().requests(Op::List), 3);
    assert_eq!(report.stats.headed, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_man_page_are_generated() {
    let env = Env::new().await;
    for (shell, needle) in [
        ("bash", "_s3meta()"),
        ("zsh", "#compdef s3meta"),
        ("fish", "complete -c s3meta"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let mut cmd = env.bin();
        cmd.args(["completions", shell]);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(needle),
            "{shell}: {}",
            &text[..text.len().min(200)]
        );
        assert!(
            text.contains("summary-json"),
            "{shell} completes scan's flags"
        );
    }
    let mut cmd = env.bin();
    cmd.arg("man");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0));
    let roff = String::from_utf8(out.stdout).unwrap();
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH s3meta"),
        "{}",
        &roff[..200]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_retry_is_logged_at_debug_and_logs_can_be_json() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 5);
    env.state()
        .add_fault(Fault::head("obj-00003", Action::Status(500)).times(2));
    let mut cmd = env.bin();
    cmd.args(["scan", "s3://bkt", "-vv", "--backoff-ms", "1", "--db"])
        .arg(&env.db);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("retry 1 of 4 for HEAD \"obj-00003\": HTTP 500"),
        "{err}"
    );
    assert!(
        err.contains("retry 2 of 4 for HEAD \"obj-00003\": HTTP 500"),
        "{err}"
    );

    env.state()
        .add_fault(Fault::head("obj-00004", Action::Status(503)).times(1));
    let mut cmd = env.bin();
    cmd.args([
        "scan",
        "s3://bkt",
        "--full",
        "-vv",
        "--log-format",
        "json",
        "--backoff-ms",
        "1",
        "--db",
    ])
    .arg(&env.db);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0));
    let json_lines: Vec<Value> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        json_lines.iter().any(|v| v["level"] == "DEBUG"
            && v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("retry 1 of 19 for HEAD \"obj-00004\": HTTP 503"))),
        "{json_lines:?}"
    );

    // RUST_LOG overrides -v: nothing at debug.
    let mut cmd = env.bin();
    cmd.args(["scan", "s3://bkt", "--full", "-vv", "--db"])
        .arg(&env.db)
        .env("RUST_LOG", "error");
    env.state()
        .add_fault(Fault::head("obj-00004", Action::Status(503)).times(1));
    let out = output(cmd).await;
    assert!(!stderr(&out).contains("retry"), "{}", stderr(&out));
}

/// Issue 13: a failed run reports the HEADs it still owes, as the database records them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_json_head_due_is_what_a_failed_run_still_owes() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 300);
    env.state()
        .set_latency(Some(Op::Head), std::time::Duration::from_millis(10));
    env.state()
        .add_fault(Fault::list_page(3, Action::Status(500)));
    let path = env.dir.path().join("summary.json");
    let mut cmd = scan_cmd(&env, "s3://bkt", &path);
    cmd.args(["--max-attempts", "1", "--list-parallelism", "1", "-j", "1"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = read(&path);
    assert_eq!(s["state"], "failed");
    let owed = count(&env.db, "SELECT count(*) FROM objects WHERE head_due = 1");
    // Pages 1 and 2 are committed; the HEAD queue holds a page, so page 3 is asked for (and
    // fails) while a page of HEADs is still owed.
    assert!(owed > 0, "{owed}");
    assert_eq!(s["objects"]["head_due"], owed, "{s}");
}

/// Issue 13: an unwritable --summary-json is refused before anything is scanned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_summary_path_is_refused_before_the_scan() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 30);
    for dest in [
        env.dir.path().join("no-such-dir").join("s.json"),
        env.dir.path().to_path_buf(),
    ] {
        let out = output(scan_cmd(&env, "s3://bkt", &dest)).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "--summary-json {} cannot be written",
                dest.display()
            )),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert_eq!(env.state().requests(Op::List), 0, "nothing was listed");
        assert!(!env.db.exists(), "no database was created");
    }
    // A writable path that does not exist yet is not left behind by the check.
    let fresh = env.dir.path().join("fresh.json");
    let mut cmd = scan_cmd(&env, "s3://nosuch", &fresh);
    cmd.args(["--max-attempts", "1"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(read(&fresh)["state"], "failed");
}
