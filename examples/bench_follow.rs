//! The `follow` benchmark (issue 17): events applied per second next to a full scan's
//! objects per second, in one run, on the in-process test server. Figures, never assertions.
//!
//! Each round writes N new objects with notifications on (one S3 event message each, with a
//! sequencer), then times `s3meta follow --once` applying them and `s3meta scan` of the same
//! objects into a fresh database, alternating which goes first. Both are HEAD-bound: follow
//! HEADs each object an event names (no LIST), the scan HEADs each object it lists.
//!
//! Build first: `cargo build --release --bin s3meta`, then
//! `cargo run --release --example bench_follow -- [--objects N] [--rounds R] [--concurrency C]`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::Parser;
use s3meta_testserver::{ACCESS_KEY, QUEUE_PATH, REGION, SECRET_KEY, TestServer};

#[derive(Debug, Parser)]
struct Args {
    /// New objects (events) per round.
    #[arg(long, default_value_t = 20_000)]
    objects: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// HEAD concurrency of both programs.
    #[arg(long, default_value_t = 32)]
    concurrency: u32,
}

fn s3meta_bin() -> PathBuf {
    // target/release/examples/bench_follow → target/release/s3meta
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("s3meta");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release --bin s3meta` first",
        bin.display()
    );
    bin
}

fn command(bin: &Path, endpoint: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn timed(mut cmd: Command) -> f64 {
    let t = Instant::now();
    let status = cmd.status().expect("runs");
    assert!(status.success() || status.code() == Some(3), "{status}");
    t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let bin = s3meta_bin();
    let server = TestServer::start().await;
    let endpoint = server.endpoint();
    let state = server.state().clone();
    let dir = tempfile::tempdir().expect("scratch dir");
    let followed = dir.path().join("followed.db");
    state.create_bucket("bench");
    state.notify("bench", Some(true));
    let queue = format!("{endpoint}{QUEUE_PATH}");
    let (mut follow_rates, mut scan_rates) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        for i in 0..args.objects {
            let key = format!("r{round}/obj-{i:07}");
            state.put_object(
                "bench",
                &key,
                b"body",
                &[("owner", "bench"), ("round", "x")],
            );
        }
        let follow = || {
            let mut cmd = command(&bin, &endpoint);
            cmd.args(["follow", "s3://bench", "--once", "--wait-seconds", "1"])
                .args(["--sqs-queue-url", &queue, "--db"])
                .arg(&followed)
                .args(["--concurrency", &args.concurrency.to_string()]);
            cmd
        };
        let fresh = dir.path().join(format!("scan{round}.db"));
        let scan = || {
            let mut cmd = command(&bin, &endpoint);
            cmd.args(["scan", &format!("s3://bench/r{round}/"), "--db"])
                .arg(&fresh)
                .args(["--concurrency", &args.concurrency.to_string()]);
            cmd
        };
        let n = args.objects as f64;
        let (f, s) = if round % 2 == 0 {
            let f = timed(follow());
            (f, timed(scan()))
        } else {
            let s = timed(scan());
            (timed(follow()), s)
        };
        follow_rates.push(n / f);
        scan_rates.push(n / s);
        println!(
            "round {round}: follow --once {:.0} events/s ({f:.2} s), scan {:.0} objects/s ({s:.2} s)",
            n / f,
            n / s
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (f, s) = (median(&mut follow_rates), median(&mut scan_rates));
    println!(
        "median of {} rounds of {} objects, concurrency {}: follow {f:.0} events/s, scan {s:.0} objects/s, ratio {:.2}",
        args.rounds,
        args.objects,
        args.concurrency,
        f / s
    );
}
