//! Benchmark of parallel listing (issue 7): an unchanged rescan, which is all LIST, with one
//! listing stream and with several, behind a per-request latency.
//!
//! Starts the test server binary in its own process with N objects and no latency, indexes
//! them with one full scan, then sets the server's latency (`POST /__admin/latency`) and
//! rescans copies of that database with each `--list-parallelism`. Prints, per run: wall time
//! (the listing phase: an unchanged rescan sends no HEAD), keys listed per second, LIST
//! requests (pages + split probes), the extrapolation to a billion objects, and the CPU µs per
//! key of s3meta and of the server. Never asserts.
//!
//! `cargo build --release --workspace --bins && cargo run --release --example bench_listing --
//!  [--objects N] [--latency-ms L] [--parallelism P,...]` (defaults 1000000, 20, 1,16).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

mod support;
use support::{Server, admin};

const BUCKET: &str = "bench";

fn main() -> Result<(), String> {
    let (objects, latency_ms, parallelism) = args()?;
    let bins = bin_dir()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = Server::start(&bins.join("s3meta-test-server"), objects, 0, BUCKET)?;
    let endpoint = server.endpoint.clone();
    let base = dir.path().join("base.db");
    eprintln!("indexing {objects} objects (full scan, no latency)...");
    let full = scan(&bins, &endpoint, &base, 1, 64)?;
    eprintln!("full scan: {:.1} s", full.0);
    admin(
        &endpoint,
        "POST",
        &format!("/__admin/latency?ms={latency_ms}"),
    )?;
    println!("unchanged rescan of {objects} objects, {latency_ms} ms per request, one machine:");
    println!(
        "{:>12} {:>10} {:>14} {:>10} {:>8} {:>18} {:>14} {:>14}",
        "parallelism",
        "seconds",
        "keys/s",
        "LISTs",
        "HEADs",
        "1e9 objects (h)",
        "client µs/key",
        "server µs/key"
    );
    let mut first_rate = None;
    for p in parallelism {
        let db = dir.path().join(format!("rescan-{p}.db"));
        copy_db(&base, &db)?;
        let server_cpu = server_cpu_seconds(&endpoint)?;
        let (secs, summary) = scan(&bins, &endpoint, &db, p, 64)?;
        let server_cpu = server_cpu_seconds(&endpoint)? - server_cpu;
        let r = &summary["resources"];
        let client_cpu = r["cpu_user_seconds"].as_f64().unwrap_or(0.0)
            + r["cpu_system_seconds"].as_f64().unwrap_or(0.0);
        if std::env::var_os("BENCH_DEBUG").is_some() {
            eprintln!("{summary}");
        }
        let listed = summary["objects"]["listed"].as_f64().unwrap_or(0.0);
        let rate = listed / secs;
        let hours = 1e9 / rate / 3600.0;
        println!(
            "{p:>12} {secs:>10.2} {rate:>14.0} {:>10} {:>8} {hours:>18.2} {:>14.1} {:>14.1}",
            summary["requests"]["list"].as_u64().unwrap_or(0),
            summary["requests"]["head"].as_u64().unwrap_or(0),
            client_cpu / listed * 1e6,
            server_cpu / listed * 1e6
        );
        if let Some(r1) = first_rate {
            println!("{:>12} {:>10} speed-up {:.1}x", "", "", rate / r1);
        } else {
            first_rate = Some(rate);
        }
    }
    drop(server);
    Ok(())
}

fn args() -> Result<(usize, u64, Vec<usize>), String> {
    let (mut objects, mut latency, mut parallelism) = (1_000_000usize, 20u64, vec![1usize, 16]);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--objects" => objects = value.parse().map_err(|_| "--objects N")?,
            "--latency-ms" => latency = value.parse().map_err(|_| "--latency-ms L")?,
            "--parallelism" => {
                parallelism = value
                    .split(',')
                    .map(|v| v.parse().map_err(|_| "--parallelism P,..."))
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok((objects, latency, parallelism))
}

fn bin_dir() -> Result<PathBuf, String> {
    let dir = std::env::var_os("BENCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release"));
    for bin in ["s3meta", "s3meta-test-server"] {
        if !dir.join(bin).exists() {
            return Err(format!(
                "{} is missing: run `cargo build --release --workspace --bins` first",
                dir.join(bin).display()
            ));
        }
    }
    Ok(dir)
}

/// Copies a database with everything committed (its WAL checkpointed first).
fn copy_db(from: &Path, to: &Path) -> Result<(), String> {
    let conn = rusqlite::Connection::open(from).map_err(|e| e.to_string())?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .map_err(|e| e.to_string())?;
    drop(conn);
    std::fs::copy(from, to).map(drop).map_err(|e| e.to_string())
}

/// The server process's CPU seconds so far, from `GET /__admin/stats`.
fn server_cpu_seconds(endpoint: &str) -> Result<f64, String> {
    let body = admin(endpoint, "GET", "/__admin/stats")?;
    let stats: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(stats["cpu_seconds"].as_f64().unwrap_or(0.0))
}

/// Runs one scan; returns its wall time and its summary document.
fn scan(
    bins: &Path,
    endpoint: &str,
    db: &Path,
    parallelism: usize,
    concurrency: usize,
) -> Result<(f64, Value), String> {
    let summary = db.with_extension("json");
    let empty = db.with_extension("empty");
    std::fs::write(&empty, "").map_err(|e| e.to_string())?;
    let started = Instant::now();
    let status = Command::new(bins.join("s3meta"))
        .args([
            "scan",
            &format!("s3://{BUCKET}"),
            "--endpoint-url",
            endpoint,
            "--db",
        ])
        .arg(db)
        .args([
            "--list-parallelism",
            &parallelism.to_string(),
            "--concurrency",
            &concurrency.to_string(),
        ])
        .args(["--no-progress", "-q", "--summary-json"])
        .arg(&summary)
        .env("AWS_ACCESS_KEY_ID", s3meta_testserver::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", s3meta_testserver::SECRET_KEY)
        .env("AWS_REGION", s3meta_testserver::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .status()
        .map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!("scan exited with {status}"));
    }
    let text = std::fs::read_to_string(&summary).map_err(|e| e.to_string())?;
    Ok((
        secs,
        serde_json::from_str(&text).map_err(|e| e.to_string())?,
    ))
}
