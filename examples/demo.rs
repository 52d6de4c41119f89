//! The local demo: no cloud account needed.
//!
//! Starts the in-process test S3 server with a few thousand objects carrying metadata, builds
//! the `s3meta` binary, and runs the real command line against it — the same `s3meta scan`
//! (progress line and summary) a user runs on their own bucket — into `./demo.db`, then a
//! sample `query` and `names`, and prints the commands to go on with. Run with
//! `cargo run --example demo`.

use std::path::{Path, PathBuf};
use std::process::Command;

use s3meta_testserver::{ACCESS_KEY, REGION, SECRET_KEY, TestServer};

const OBJECTS: usize = 5_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin = build_s3meta()?;
    let server = TestServer::start().await;
    server.state().fill("demo", OBJECTS, 42);
    let endpoint = server.endpoint();
    println!("test S3 server at {endpoint} with {OBJECTS} objects in bucket `demo`\n");
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("demo.db{suffix}"));
    }
    let scan = [
        "scan",
        "s3://demo",
        "--endpoint-url",
        &endpoint,
        "--db",
        "demo.db",
    ];
    run(&bin, &scan).await?;
    run(
        &bin,
        &[
            "query",
            "--db",
            "demo.db",
            "--where",
            "project=proj-08",
            "--limit",
            "5",
            "--format",
            "table",
        ],
    )
    .await?;
    run(&bin, &["names", "--db", "demo.db", "--format", "table"]).await?;
    let shown = bin.display();
    println!("\nthe index is ./demo.db (the server is gone now; these work offline):");
    println!("  {shown} query --db demo.db --where owner=alice --count");
    println!("  {shown} query --db demo.db --where '@size>40' --format table --limit 10");
    println!("  {shown} status --db demo.db");
    println!("  sqlite3 demo.db 'SELECT key, metadata FROM v_objects LIMIT 5'");
    println!("\nyour own bucket (credentials from the usual AWS chain):");
    println!("  {shown} scan s3://YOUR-BUCKET --db my.db");
    println!("  {shown} scan s3://YOUR-BUCKET --endpoint-url http://minio.local:9000 --db my.db");
    Ok(())
}

/// Builds the `s3meta` binary with the profile of this example, and returns its path. The
/// example is named in the build so that the binary shares its (and the tests') dependency
/// features: a plain `cargo build` would compile the dependencies once more.
fn build_s3meta() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let exe = std::env::current_exe()?;
    // target/<profile>/examples/demo → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("cannot tell the target directory from {exe:?}"))?;
    let mut build = Command::new(cargo);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    build
        .args([
            "build",
            "--bin",
            "s3meta",
            "--example",
            "demo",
            "--manifest-path",
        ])
        .arg(manifest);
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        build.arg("--release");
    }
    let status = build.status()?;
    anyhow::ensure!(status.success(), "building s3meta failed");
    Ok(profile_dir.join("s3meta"))
}

/// Runs the binary as a user would (its output on this terminal), with the test server's
/// credentials, while the server keeps serving.
async fn run(bin: &Path, args: &[&str]) -> anyhow::Result<()> {
    println!("$ s3meta {}", args.join(" "));
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let status = cmd.status().await?;
    println!();
    anyhow::ensure!(status.success(), "s3meta {} failed: {status}", args[0]);
    Ok(())
}
