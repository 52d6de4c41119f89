//! One endpoint per command (issue 13, point 1): the URL requests go to, the store id rows are
//! filed under and the default addressing come from one resolution — `--endpoint-url`, then
//! `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the profile's `[services]` s3 `endpoint_url`, its
//! `endpoint_url` — in `scan`, `estimate`, `plan` and `forget` alike.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// The built binary with no endpoint in its environment, and `vars` set.
fn bin_with(env: &Env, vars: &[(&str, &str)]) -> Command {
    let mut cmd = env.bin();
    cmd.env_remove("AWS_ENDPOINT_URL");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

async fn run_ok(mut cmd: Command, args: &[&str]) -> String {
    cmd.args(args);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

fn stores(db: &std::path::Path) -> Vec<String> {
    column(db, "SELECT store FROM buckets ORDER BY store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_of_the_endpoint_names_the_store_requests_go_to() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 20);
    let server = env.server.endpoint();
    let dead = "http://127.0.0.1:1";
    let db = |name: &str| env.dir.path().join(name);
    let scan = |vars: &[(&str, &str)], d: &std::path::Path| {
        let mut cmd = bin_with(&env, vars);
        cmd.args(["scan", "s3://bkt", "--max-attempts", "1", "--db"])
            .arg(d);
        cmd
    };

    // Only the S3-specific variable: the rows are the store's, not `aws`'s.
    let a = db("s3-only.db");
    run_ok(scan(&[("AWS_ENDPOINT_URL_S3", &server)], &a), &[]).await;
    assert_eq!(stores(&a), [server.as_str()]);
    assert_eq!(count(&a, "SELECT count(*) FROM objects"), 20);

    // The S3-specific variable wins over the global one, for requests and rows alike.
    let b = db("both.db");
    let both = [("AWS_ENDPOINT_URL", dead), ("AWS_ENDPOINT_URL_S3", &server)];
    run_ok(scan(&both, &b), &[]).await;
    assert_eq!(stores(&b), [server.as_str()]);

    // The flag wins over both.
    let c = db("flag.db");
    let neither = [("AWS_ENDPOINT_URL", dead), ("AWS_ENDPOINT_URL_S3", dead)];
    run_ok(scan(&neither, &c), &["--endpoint-url", &server]).await;
    assert_eq!(stores(&c), [server.as_str()]);

    // `localhost` is a custom endpoint like any other: path-style, so `bkt.localhost` is
    // never looked up.
    let local = server.replace("127.0.0.1", "localhost");
    let d = db("localhost.db");
    run_ok(scan(&[("AWS_ENDPOINT_URL_S3", &local)], &d), &[]).await;
    assert_eq!(stores(&d), [local.as_str()]);
    assert_eq!(count(&d, "SELECT count(*) FROM objects"), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_endpoints_and_every_command_agree_on_the_store() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 30);
    let server = env.server.endpoint();
    let local = server.replace("127.0.0.1", "localhost");
    let config = env.dir.path().join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[profile svc]\nservices = local\n\n[services local]\ns3 =\n  endpoint_url = {local}\n\n\
             [profile plain]\nendpoint_url = {server}\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let db = env.db.display().to_string();

    let mut scan = bin_with(&env, &[("AWS_CONFIG_FILE", &config)]);
    scan.args(["scan", "s3://bkt", "--profile", "svc", "--db", &db]);
    run_ok(scan, &[]).await;
    assert_eq!(stores(&env.db), [local.as_str()]);
    let mut scan = bin_with(&env, &[("AWS_CONFIG_FILE", &config)]);
    scan.args(["scan", "s3://bkt", "--profile", "plain", "--db", &db]);
    run_ok(scan, &[]).await;
    assert_eq!(stores(&env.db), [server.as_str(), local.as_str()]);

    // estimate finds the rows of the store it lists: the next scan is a rescan.
    let mut estimate = bin_with(&env, &[("AWS_ENDPOINT_URL_S3", &local)]);
    estimate.args(["estimate", "s3://bkt", "--format", "json", "--db", &db]);
    let e: Value = serde_json::from_str(&run_ok(estimate, &[]).await).unwrap();
    assert_eq!(e["next_scan"], "rescan", "{e}");
    assert_eq!(e["rescan_heads"], 0, "{e}");

    // plan lists through the S3-specific variable too.
    let mut plan = bin_with(&env, &[("AWS_ENDPOINT_URL_S3", &server)]);
    plan.args(["plan", "s3://bkt", "--ranges", "2"]);
    let lines = run_ok(plan, &[]).await;
    assert!(lines.lines().count() >= 1, "{lines}");

    // forget resolves the store as scan does (it read only AWS_ENDPOINT_URL).
    let mut forget = bin_with(&env, &[("AWS_ENDPOINT_URL_S3", &local)]);
    forget.args(["forget", "s3://bkt", "--db", &db]);
    let out = output(forget).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stores(&env.db), [server.as_str()]);
    let mut forget = bin_with(&env, &[("AWS_CONFIG_FILE", &config)]);
    forget.args(["forget", "s3://bkt", "--profile", "plain", "--db", &db]);
    let out = output(forget).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stores(&env.db).is_empty());
}
