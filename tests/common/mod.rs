//! Shared helpers for the integration tests: a test server, a client with static test
//! credentials, library scans with a fresh token, the built binary with an isolated AWS
//! environment, and the canonical dump.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
use s3meta::model::Target;
use s3meta::model::stats::Stats;
use s3meta::s3::client::{self, ClientOptions, S3};
use s3meta::s3::retry::Policy;
use s3meta::scan::{self, ScanConfig, ScanReport};
use s3meta_testserver::{ACCESS_KEY, REGION, SECRET_KEY, TestServer};
use tokio_util::sync::CancellationToken;

pub use s3meta_testserver::{Action, Fault, Gate, ObjectSpec, Op, State};

/// A test server, a scratch directory and a database path in it.
pub struct Env {
    pub server: TestServer,
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl Env {
    pub async fn new() -> Env {
        let server = TestServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s3meta.db");
        Env { server, dir, db }
    }

    pub fn state(&self) -> &Arc<State> {
        self.server.state()
    }

    pub fn s3(&self) -> S3 {
        s3_for(&self.server.endpoint(), SECRET_KEY)
    }

    /// A scan of `s3://bucket/prefix` with test-friendly retry settings.
    pub fn config(&self, bucket: &str, prefix: &str) -> ScanConfig {
        ScanConfig {
            target: Target {
                store: self.s3().store,
                bucket: bucket.into(),
                prefix: prefix.into(),
                start_after: None,
                end_key: None,
                versions: false,
            },
            concurrency: 16,
            page_size: 100,
            policy: Policy {
                max_attempts: 5,
                base: Duration::from_millis(1),
                cap: Duration::from_millis(20),
            },
            restart: false,
            full: false,
            grace: Duration::from_secs(5),
            max_rps: None,
            list_parallelism: 1,
            splits: Default::default(),
            bounds_order: None,
            tags: None,
            trust_tag_count: false,
        }
    }

    /// Runs a scan through the library into `db` (default: the env's database).
    /// Runs a scan in-process; then, however it ended, checks the database's integrity and
    /// the schema's CHECK constraints (issue 14: the writer does not evaluate them).
    pub async fn scan_into(&self, cfg: &ScanConfig, db: &Path) -> s3meta::Result<ScanReport> {
        let report = scan::run(
            cfg,
            self.s3(),
            db,
            CancellationToken::new(),
            Arc::new(Stats::default()),
        )
        .await;
        if db.exists() {
            assert_integrity(db);
        }
        report
    }

    pub async fn scan(&self, cfg: &ScanConfig) -> s3meta::Result<ScanReport> {
        self.scan_into(cfg, &self.db).await
    }

    /// The built binary, with an environment that can never reach the host's AWS setup.
    pub fn bin(&self) -> Command {
        bin_for(&self.server.endpoint(), self.dir.path())
    }

    /// `s3meta scan URL --db DB` with fast retries and pages of 100 keys; callers add flags.
    pub fn scan_cmd(&self, url: &str, db: &Path) -> Command {
        let mut cmd = self.bin();
        cmd.args(["scan", url, "--db"])
            .arg(db)
            .args(["--backoff-ms", "1", "--page-size", "100"]);
        cmd
    }
}

/// A client exactly as s3meta builds it, with static credentials.
pub fn s3_for(endpoint: &str, secret: &str) -> S3 {
    let shared = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            ACCESS_KEY, secret, None, None, "test",
        )))
        .build();
    let opts = ClientOptions {
        timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    client::from_shared(&shared, &opts).unwrap()
}

pub fn bin_for(endpoint: &str, dir: &Path) -> Command {
    let empty = dir.join("empty-aws-file");
    std::fs::write(&empty, "").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3meta"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .stdin(Stdio::null());
    cmd
}

/// Runs a command to its end without blocking the async runtime.
pub async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// `s3meta SUB --db <env db> ARGS…` run to its end.
pub async fn run(env: &Env, sub: &str, args: &[&str]) -> Output {
    let mut cmd = env.bin();
    cmd.arg(sub).arg("--db").arg(&env.db).args(args);
    output(cmd).await
}

/// The canonical dump of a database — after checking that SQLite finds it sound: `PRAGMA
/// integrity_check` on a read-write connection also checks every row against the schema's
/// CHECK constraints, which the writer does not evaluate (issue 14: its types make a bad
/// state unrepresentable, and this proves it after every test that compares databases).
pub fn dump(db: &Path) -> String {
    assert_integrity(db);
    let conn = rusqlite::Connection::open(db).unwrap();
    s3meta::store::canonical::dump(&conn).unwrap()
}

/// `PRAGMA integrity_check` is `ok`: on a read-write connection it also checks every row
/// against the schema's CHECK constraints.
pub fn assert_integrity(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let check: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(check, ["ok"], "{}", db.display());
}

/// Runs a query on a database and returns the first column of each row as text.
pub fn column(db: &Path, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| {
        let v: rusqlite::types::Value = r.get(0)?;
        Ok(match v {
            rusqlite::types::Value::Null => "NULL".to_string(),
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Waits, polling read-only, until `sql` over a database another process is writing returns
/// a row (a condition to wait on, not a guessed delay); fails after a minute.
pub async fn wait_for_row(db: &Path, sql: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let found = rusqlite::Connection::open_with_flags(db, flags)
            .and_then(|c| c.query_row(sql, [], |_| Ok(())))
            .is_ok();
        if found {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no row for {sql}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The leaf pages of the objects table, in file order, and the page size, once the WAL is
/// folded into the file (for tests that damage pages on disk).
pub fn objects_leaf_pages(db: &Path) -> (Vec<i64>, i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT pageno FROM dbstat WHERE name = 'objects' AND pagetype = 'leaf' ORDER BY pageno",
        )
        .unwrap();
    let pages: Vec<i64> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let size: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    (pages, size)
}

pub fn count(db: &Path, sql: &str) -> i64 {
    column(db, sql)[0].parse().unwrap()
}

/// Permission tests (issue 13) run the binary as other users: everyone here runs as root, and
/// root ignores permission bits. These are "the scanning user" and "another user".
pub const WRITER: u32 = 2001;
pub const READER: u32 = 2002;

/// Whether this process can start commands as other users; permission tests print
/// `SKIPPED` and return when it cannot.
pub fn can_switch_users(test: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        eprintln!("SKIPPED {test}: needs root to run the binary under uids {WRITER} and {READER}");
    }
    root
}

/// The command, run as `uid` (its group `uid` too, no supplementary groups).
pub fn as_user(mut cmd: Command, uid: u32) -> Command {
    use std::os::unix::process::CommandExt;
    cmd.uid(uid).gid(uid);
    cmd
}

/// A directory `name` in the env's scratch directory (made traversable by everyone), owned by
/// `owner` with permission bits `mode`.
pub fn user_dir(env: &Env, name: &str, owner: u32, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = env.dir.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(owner), Some(owner)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// Fills `bucket` with `n` objects under `prefix`, two thirds with metadata.
pub fn fill(state: &State, bucket: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let key = format!("{prefix}obj-{i:05}");
        let owner = format!("user{}", i % 7);
        if i % 3 == 2 {
            state.put_object(bucket, &key, b"x", &[]);
        } else {
            state.put_object(
                bucket,
                &key,
                key.as_bytes(),
                &[("owner", &owner), ("project", "apollo")],
            );
        }
    }
}

/// Asserts two databases are equal by the canonical dump, showing only the lines that
/// differ (a whole dump of thousands of objects is unreadable).
pub fn assert_same_db(got: &Path, want: &Path) {
    let (g, w) = (dump(got), dump(want));
    if g == w {
        return;
    }
    let gl: std::collections::BTreeSet<&str> = g.lines().collect();
    let wl: std::collections::BTreeSet<&str> = w.lines().collect();
    let extra: Vec<&&str> = gl.difference(&wl).take(5).collect();
    let missing: Vec<&&str> = wl.difference(&gl).take(5).collect();
    panic!(
        "databases differ: {} lines only in {}, {} only in {}\nonly in got: {extra:#?}\nonly in want: {missing:#?}",
        gl.difference(&wl).count(),
        got.display(),
        wl.difference(&gl).count(),
        want.display()
    );
}

/// HEAD's further headers (issue 16 §4) for object number `i`, a different mix for each `i`
/// (none at all for every fifth), as `ObjectSpec::headers`.
pub fn extra_headers(i: usize) -> Vec<(String, String)> {
    let all: [(&str, String); 14] = [
        (
            "x-amz-server-side-encryption",
            ["AES256", "aws:kms", "aws:kms:dsse"][i % 3].into(),
        ),
        (
            "x-amz-server-side-encryption-aws-kms-key-id",
            format!("arn:aws:kms:us-east-1:111122223333:key/{i:04}"),
        ),
        (
            "x-amz-server-side-encryption-bucket-key-enabled",
            ["true", "false"][i % 2].into(),
        ),
        (
            "x-amz-server-side-encryption-customer-algorithm",
            "AES256".into(),
        ),
        (
            [
                "x-amz-checksum-crc32",
                "x-amz-checksum-crc32c",
                "x-amz-checksum-crc64nvme",
                "x-amz-checksum-sha1",
                "x-amz-checksum-sha256",
            ][i % 5],
            format!("c2hhLXtpfQ=={i}"),
        ),
        (
            "x-amz-checksum-type",
            ["FULL_OBJECT", "COMPOSITE"][i % 2].into(),
        ),
        (
            "x-amz-object-lock-mode",
            ["GOVERNANCE", "COMPLIANCE"][i % 2].into(),
        ),
        (
            "x-amz-object-lock-retain-until-date",
            format!("2030-0{}-15T10:20:30.{:03}Z", i % 9 + 1, i % 1000),
        ),
        ("x-amz-object-lock-legal-hold", ["ON", "OFF"][i % 2].into()),
        (
            "x-amz-replication-status",
            ["COMPLETED", "PENDING", "FAILED", "REPLICA"][i % 4].into(),
        ),
        (
            "x-amz-restore",
            format!(
                "ongoing-request=\"false\", expiry-date=\"Fri, 2{} Dec 2029 00:00:00 GMT\"",
                i % 8
            ),
        ),
        (
            "x-amz-archive-status",
            ["ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"][i % 2].into(),
        ),
        ("x-amz-website-redirect-location", format!("/elsewhere/{i}")),
        ("x-amz-mp-parts-count", format!("{}", i % 4 + 1)),
    ];
    if i % 5 == 4 {
        return Vec::new();
    }
    all.into_iter()
        .enumerate()
        .filter(|(j, _)| !(i + j).is_multiple_of(3) || *j == 4)
        .map(|(_, (n, v))| (n.to_string(), v))
        .collect()
}
