//! The local demo: no cloud account needed.
//!
//! Starts the in-process test S3 server with a few thousand objects carrying metadata, runs
//! the `s3meta scan` pipeline against it into `./demo.db`, then prints the summary and a
//! sample query. Run with `cargo run --example demo`.

use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
use s3meta::cli::progress;
use s3meta::model::Target;
use s3meta::model::stats::Stats;
use s3meta::s3::client::{self, ClientOptions};
use s3meta::s3::retry::Policy;
use s3meta::scan::{self, ScanConfig};
use s3meta_testserver::{ACCESS_KEY, REGION, SECRET_KEY, TestServer};
use tokio_util::sync::CancellationToken;

const OBJECTS: usize = 5_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    server.state().fill("demo", OBJECTS, 42);
    println!(
        "test S3 server at {} with {OBJECTS} objects in bucket `demo`",
        server.endpoint()
    );

    let shared = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(server.endpoint())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "demo",
        )))
        .build();
    let opts = ClientOptions {
        timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    };
    let s3 = client::from_shared(&shared, &opts)?;
    let db = std::path::PathBuf::from("demo.db");
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("demo.db{suffix}"));
    }
    let cfg = ScanConfig {
        target: Target {
            store: s3.store.clone(),
            bucket: "demo".into(),
            prefix: String::new(),
            start_after: None,
            end_key: None,
        },
        concurrency: 64,
        page_size: 1000,
        policy: Policy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(20),
        },
        restart: false,
        full: false,
        grace: Duration::from_secs(10),
        max_rps: None,
        list_parallelism: 4,
        bounds_order: None,
    };
    let report = scan::run(
        &cfg,
        s3.client,
        &db,
        CancellationToken::new(),
        Arc::new(Stats::default()),
    )
    .await?;
    println!("{}", progress::summary("s3://demo", &report));

    let conn = rusqlite::Connection::open(&db)?;
    println!(
        "\nobjects per project (SELECT json_extract(metadata, '$.project'), count(*) FROM v_objects GROUP BY 1):"
    );
    let mut stmt = conn.prepare(
        "SELECT coalesce(json_extract(metadata, '$.project'), '(none)') AS project, count(*)
         FROM v_objects GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 8",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (project, n) = row?;
        println!("  {project:<12} {n}");
    }
    println!("\nthe database is ./demo.db; try:");
    println!("  cargo run -- query --db demo.db --where project=proj-08 --limit 5");
    println!("  cargo run -- names --db demo.db");
    println!("  cargo run -- status --db demo.db");
    println!("  sqlite3 demo.db 'SELECT key, metadata FROM v_objects LIMIT 5'");
    Ok(())
}
