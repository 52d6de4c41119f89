//! `s3meta export` through the built binary (issue 19), on databases from real scans of the
//! test server: the Parquet read back with the `parquet` crate equals `query --format jsonl`
//! record for record; the Hive layout with one and two stores; `--where`; JSON lines and CSV;
//! `--changes`; `s3://` destinations (multipart uploads, the pointer written last, aborts);
//! bad input; memory bounded by the row group at 100,000 objects.

mod common;

use std::path::Path;

use common::*;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use s3meta::model::TagsMode;
use serde_json::{Map, Value, json};

type Record = Map<String, Value>;

/// The JSON lines of `SUB --db DB ARGS` (must succeed).
async fn jsonl(env: &Env, db: &Path, sub: &str, args: &[&str]) -> Vec<Record> {
    let mut cmd = env.bin();
    cmd.arg(sub).arg("--db").arg(db).args(args);
    let out = output(cmd).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{sub} {args:?}: {}",
        stderr(&out)
    );
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `export --db DB ARGS`: its output.
async fn export(env: &Env, db: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = env.bin();
    cmd.arg("export").arg("--db").arg(db).args(args);
    output(cmd).await
}

async fn export_ok(env: &Env, db: &Path, args: &[&str]) {
    let out = export(env, db, args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "export {args:?}: {}",
        stderr(&out)
    );
}

/// A Parquet value as `query`'s JSON shows it.
fn to_json(f: &Field) -> Value {
    match f {
        Field::Null => Value::Null,
        Field::Long(n) => json!(n),
        Field::Str(s) => json!(s),
        Field::MapInternal(m) => Value::Object(
            m.entries()
                .iter()
                .map(|(k, v)| {
                    let Field::Str(k) = k else {
                        panic!("map key {k:?}")
                    };
                    (k.clone(), to_json(v))
                })
                .collect(),
        ),
        other => panic!("unexpected Parquet value {other:?}"),
    }
}

/// Every `*.parquet` file under `dir`, relative paths sorted.
fn parquet_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// `%XX` decoded, as engines read a Hive partition value.
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The rows of one Parquet file (its bytes), with the partition columns of `rel` added back.
fn read_rows(bytes: Vec<u8>, rel: &str) -> (Vec<Record>, Vec<String>) {
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
    let columns: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let mut rows = Vec::new();
    for row in reader.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        let mut rec: Record = row
            .get_column_iter()
            .map(|(n, f)| (n.clone(), to_json(f)))
            .collect();
        for seg in rel.split('/') {
            if let Some((k, v)) = seg.split_once('=') {
                rec.insert(k.to_string(), json!(unescape(v)));
            }
        }
        rows.push(rec);
    }
    (rows, columns)
}

/// Every row of every Parquet file under `dir`, partition columns added back, in file order.
fn read_dir_rows(dir: &Path) -> Vec<Record> {
    parquet_files(dir)
        .iter()
        .flat_map(|rel| read_rows(std::fs::read(dir.join(rel)).unwrap(), rel).0)
        .collect()
}

/// Objects worth exporting: keys with a newline and emoji, non-ASCII metadata, no metadata,
/// tags on some, and an object that is gone after a rescan.
fn seed(state: &State, bucket: &str) {
    let keys = [
        "plain.txt",
        "line\nbreak",
        "emoji-🎉/ü.bin",
        "a/b/c",
        "no-meta",
    ];
    for (i, key) in keys.iter().enumerate() {
        let meta: Vec<(String, String)> = if *key == "no-meta" {
            Vec::new()
        } else {
            vec![
                ("owner".into(), format!("user{}", i % 2)),
                ("note".into(), "café ☕ \"quoted\"\nnext".into()),
            ]
        };
        let tags = if i % 2 == 0 {
            vec![("team".into(), format!("t{i}"))]
        } else {
            Vec::new()
        };
        state.put_object_with(
            bucket,
            key,
            ObjectSpec {
                body: Some(vec![b'x'; i * 10]),
                meta,
                tags,
                content_type: Some("text/plain".into()),
                ..ObjectSpec::default()
            },
        );
    }
}

/// Issue 19: the Parquet files hold exactly `query --format jsonl`'s records, every column,
/// the metadata and tags maps, NULLs, keys with newlines and emoji; bucket is a partition.
#[tokio::test]
async fn parquet_reads_back_as_query_jsonl() {
    let env = Env::new().await;
    seed(env.state(), "photos");
    fill(env.state(), "logs", "x/", 20);
    let tagged = s3meta::scan::ScanConfig {
        tags: Some(TagsMode::All),
        ..env.config("photos", "")
    };
    env.scan(&tagged).await.unwrap();
    env.scan(&env.config("logs", "")).await.unwrap();
    let out = env.dir.path().join("out");
    export_ok(
        &env,
        &env.db,
        &["--out", out.to_str().unwrap(), "--row-group-rows", "3"],
    )
    .await;
    let files = parquet_files(&out);
    assert_eq!(
        files,
        [
            "bucket=logs/part-00000.parquet",
            "bucket=photos/part-00000.parquet"
        ]
    );
    assert!(out.join("_SUCCESS").exists());
    let (_, columns) = read_rows(std::fs::read(out.join(&files[1])).unwrap(), &files[1]);
    assert!(!columns.contains(&"bucket".to_string()), "{columns:?}");
    assert!(
        columns.contains(&"store".to_string()),
        "one store: a column, not a partition"
    );
    let got = read_dir_rows(&out);
    let want = jsonl(&env, &env.db, "query", &["--format", "jsonl"]).await;
    assert_eq!(got.len(), 25);
    assert_eq!(got, want);
    let emoji = got.iter().find(|r| r["key"] == "emoji-🎉/ü.bin").unwrap();
    assert_eq!(emoji["metadata"]["note"], "café ☕ \"quoted\"\nnext");
    assert_eq!(emoji["tags"], json!({"team": "t2"}));
    assert_eq!(emoji["error_status"], Value::Null);
    let no_meta = got.iter().find(|r| r["key"] == "no-meta").unwrap();
    assert_eq!(no_meta["metadata"], json!({}));
    assert!(got.iter().any(|r| r["key"] == "line\nbreak"));
    // Row groups of at most 3 rows: 20 logs rows are 7 groups.
    let reader =
        SerializedFileReader::new(std::fs::File::open(out.join(&files[0])).unwrap()).unwrap();
    assert_eq!(reader.metadata().num_row_groups(), 7);
    let codec = reader.metadata().row_group(0).column(0).compression();
    assert!(
        matches!(codec, parquet::basic::Compression::ZSTD(_)),
        "{codec:?}"
    );
}

/// Two stores in one database: `store=` is a partition too, its URL escaped into one path
/// segment, and neither partition column is inside the files.
#[tokio::test]
async fn two_stores_partition_by_store_then_bucket() {
    let env = Env::new().await;
    let other = Env::new().await;
    fill(env.state(), "data", "", 5);
    fill(other.state(), "data", "", 3);
    env.scan(&env.config("data", "")).await.unwrap();
    other
        .scan_into(&other.config("data", ""), &env.db)
        .await
        .unwrap();
    let out = env.dir.path().join("out");
    export_ok(&env, &env.db, &["--out", out.to_str().unwrap()]).await;
    let files = parquet_files(&out);
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        let segs: Vec<&str> = f.split('/').collect();
        assert_eq!(segs.len(), 3, "{f}");
        assert!(
            segs[0].starts_with("store=http%3A%2F%2F127.0.0.1%3A"),
            "{f}"
        );
        assert_eq!(segs[1], "bucket=data");
        let (_, columns) = read_rows(std::fs::read(out.join(f)).unwrap(), f);
        assert!(
            !columns.iter().any(|c| c == "store" || c == "bucket"),
            "{columns:?}"
        );
    }
    let mut got = read_dir_rows(&out);
    let mut want = jsonl(&env, &env.db, "query", &["--format", "jsonl"]).await;
    let order = |r: &Record| (r["store"].to_string(), r["key"].to_string());
    got.sort_by_key(order);
    want.sort_by_key(order);
    assert_eq!(got.len(), 8);
    assert_eq!(got, want);
}

/// `--where`, `--bucket` and `--prefix` select what `query` selects (the same code).
#[tokio::test]
async fn where_and_scope_select_as_query() {
    let env = Env::new().await;
    fill(env.state(), "aaa", "p/", 30);
    fill(env.state(), "aaa", "q/", 10);
    fill(env.state(), "bbb", "p/", 10);
    for b in ["aaa", "bbb"] {
        env.scan(&env.config(b, "")).await.unwrap();
    }
    let cases: [&[&str]; 4] = [
        &["--where", "owner=user1"],
        &["--bucket", "aaa", "--prefix", "p/", "--where", "project"],
        &["--where", "!owner"],
        &["--where", "@size>4", "--where", "owner~user1*"],
    ];
    for (i, args) in cases.iter().enumerate() {
        let out = env.dir.path().join(format!("out{i}"));
        let mut full = vec!["--out", out.to_str().unwrap()];
        full.extend_from_slice(args);
        export_ok(&env, &env.db, &full).await;
        let got = read_dir_rows(&out);
        let mut q = vec!["--format", "jsonl"];
        q.extend_from_slice(args);
        let want = jsonl(&env, &env.db, "query", &q).await;
        assert!(!want.is_empty(), "{args:?}");
        assert_eq!(got, want, "{args:?}");
    }
}

/// JSON lines and CSV: the files, concatenated, are `query`'s output byte for byte, cut
/// into files of `--file-rows`.
#[tokio::test]
async fn jsonl_and_csv_files_are_query_output() {
    let env = Env::new().await;
    seed(env.state(), "photos");
    fill(env.state(), "photos", "z/", 12);
    env.scan(&env.config("photos", "")).await.unwrap();
    for format in ["jsonl", "csv"] {
        let out = env.dir.path().join(format);
        export_ok(
            &env,
            &env.db,
            &[
                "--format",
                format,
                "--out",
                out.to_str().unwrap(),
                "--file-rows",
                "10",
            ],
        )
        .await;
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "_SUCCESS".to_string(),
                format!("objects-00000.{format}"),
                format!("objects-00001.{format}")
            ]
        );
        let mut q = env.bin();
        q.args(["query", "--format", format, "--db"]).arg(&env.db);
        let want = stdout(&output(q).await);
        let parts: Vec<String> = names[1..]
            .iter()
            .map(|n| std::fs::read_to_string(out.join(n)).unwrap())
            .collect();
        if format == "jsonl" {
            assert_eq!(parts.concat(), want);
            assert_eq!(parts[0].lines().count(), 10);
        } else {
            // Each CSV file has its header.
            let header = want.split("\r\n").next().unwrap();
            assert!(parts.iter().all(|p| p.starts_with(header)));
            let body: String = parts
                .iter()
                .map(|p| p[header.len() + 2..].to_string())
                .collect();
            assert_eq!(format!("{header}\r\n{body}"), want);
        }
    }
}

/// `--changes`: the changes table, as `s3meta changes` prints it, in each format.
#[tokio::test]
async fn changes_export_as_changes_prints() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 10);
    env.scan(&env.config("bkt", "")).await.unwrap();
    env.state()
        .put_object("bkt", "obj-00001", b"new body", &[("owner", "zoe")]);
    env.state()
        .put_object("bkt", "new-key", b"n", &[("owner", "ann")]);
    env.state().delete_object("bkt", "obj-00002");
    env.scan(&env.config("bkt", "")).await.unwrap();
    let want = jsonl(&env, &env.db, "changes", &["--format", "jsonl"]).await;
    assert!(want.len() >= 3, "{want:?}");
    let out = env.dir.path().join("changes-jsonl");
    export_ok(
        &env,
        &env.db,
        &[
            "--changes",
            "--format",
            "jsonl",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    let text = std::fs::read_to_string(out.join("changes-00000.jsonl")).unwrap();
    let got: Vec<Record> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, want);
    let out = env.dir.path().join("changes-parquet");
    export_ok(
        &env,
        &env.db,
        &["--changes", "--out", out.to_str().unwrap()],
    )
    .await;
    assert_eq!(parquet_files(&out), ["bucket=bkt/part-00000.parquet"]);
    let got = read_dir_rows(&out);
    assert_eq!(got, want);
    let meta = got.iter().find(|r| r["key"] == "obj-00001").unwrap();
    assert_eq!(meta["new_metadata"]["owner"], "zoe");
}

/// To s3://: each run under its own `export-<time>/` prefix with its `_SUCCESS`, every file a
/// completed multipart upload (several parts when large), and `LATEST` naming the run.
#[tokio::test]
async fn s3_destination_writes_a_run_then_the_pointer() {
    let env = Env::new().await;
    // ~6 MiB of JSON lines: two parts of 5 MiB.
    for i in 0..60 {
        let meta: Vec<(String, String)> = (0..100)
            .map(|j| {
                (
                    format!("name-{j:03}"),
                    format!("{i}-{j}-{}", "v".repeat(1000)),
                )
            })
            .collect();
        let spec = ObjectSpec {
            body: Some(vec![b'x'; 3]),
            meta,
            ..ObjectSpec::default()
        };
        env.state()
            .put_object_with("data", &format!("k{i:03}"), spec);
    }
    env.state().create_bucket("exports");
    env.scan(&env.config("data", "")).await.unwrap();
    let mut runs = Vec::new();
    for format in ["parquet", "jsonl"] {
        export_ok(
            &env,
            &env.db,
            &[
                "--format",
                format,
                "--out",
                "s3://exports/nightly",
                "--part-size-mib",
                "5",
            ],
        )
        .await;
        let pointer = env
            .state()
            .object_body("exports", "nightly/LATEST")
            .unwrap()
            .0;
        let pointer = String::from_utf8(pointer).unwrap();
        let prefix = pointer
            .strip_prefix("s3://exports/")
            .and_then(|p| p.strip_suffix('\n'))
            .unwrap()
            .to_string();
        assert!(
            prefix.starts_with("nightly/export-") && prefix.ends_with("Z/"),
            "{prefix}"
        );
        runs.push(prefix);
    }
    assert_ne!(runs[0], runs[1]);
    let keys = env.state().keys("exports");
    let want: Vec<String> = [
        format!("{}_SUCCESS", runs[0]),
        format!("{}bucket=data/part-00000.parquet", runs[0]),
        format!("{}_SUCCESS", runs[1]),
        format!("{}objects-00000.jsonl", runs[1]),
        "nightly/LATEST".to_string(),
    ]
    .into_iter()
    .collect::<std::collections::BTreeSet<_>>()
    .into_iter()
    .collect();
    assert_eq!(keys, want);
    assert_eq!(env.state().multipart_counts(), (0, 2, 0));
    let (body, etag) = env
        .state()
        .object_body("exports", &format!("{}objects-00000.jsonl", runs[1]))
        .unwrap();
    assert!(body.len() > 5 << 20, "{}", body.len());
    assert!(etag.ends_with("-2"), "two parts: {etag}");
    let mut q = env.bin();
    q.args(["query", "--format", "jsonl", "--db"]).arg(&env.db);
    assert_eq!(String::from_utf8(body).unwrap(), stdout(&output(q).await));
    let rel = "bucket=data/part-00000.parquet";
    let (pq, _) = env
        .state()
        .object_body("exports", &format!("{}{rel}", runs[0]))
        .unwrap();
    let want = jsonl(&env, &env.db, "query", &["--format", "jsonl"]).await;
    assert_eq!(read_rows(pq, rel).0, want);
}

/// A failed upload is aborted, and the pointer is not moved to a run that is not complete.
#[tokio::test]
async fn failed_upload_is_aborted_and_leaves_the_pointer() {
    let env = Env::new().await;
    fill(env.state(), "data", "", 5);
    env.state().create_bucket("exports");
    env.scan(&env.config("data", "")).await.unwrap();
    export_ok(&env, &env.db, &["--out", "s3://exports/x/"]).await;
    let before = env.state().object_body("exports", "x/LATEST").unwrap().0;
    env.state()
        .add_fault(Fault::new(Some(Op::UploadPart), Action::Status(403)));
    let out = export(&env, &env.db, &["--out", "s3://exports/x/"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("s3:PutObject"), "{err}");
    assert_eq!(env.state().multipart_counts(), (0, 1, 1));
    assert_eq!(
        env.state().object_body("exports", "x/LATEST").unwrap().0,
        before
    );
    let runs: std::collections::BTreeSet<String> = env
        .state()
        .keys("exports")
        .iter()
        .filter_map(|k| k.split('/').nth(1).map(str::to_string))
        .collect();
    assert_eq!(runs.len(), 2, "the first run and LATEST only: {runs:?}");
}

/// Bad input: one line that says what is wrong, exit code 1, nothing written.
#[tokio::test]
async fn bad_input_is_one_line_and_exit_1() {
    let env = Env::new().await;
    fill(env.state(), "data", "", 3);
    env.scan(&env.config("data", "")).await.unwrap();
    let file = env.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let full = env.dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("old.parquet"), "x").unwrap();
    let missing = env.dir.path().join("missing.db");
    let fresh = env.dir.path().join("fresh");
    let cases: Vec<(Vec<&str>, &Path, &str)> = vec![
        (vec!["--out", file.to_str().unwrap()], &env.db, "is a file"),
        (
            vec!["--out", full.to_str().unwrap()],
            &env.db,
            "is not empty",
        ),
        (
            vec!["--out", fresh.to_str().unwrap()],
            &missing,
            "does not exist",
        ),
        (
            vec!["--out", fresh.to_str().unwrap(), "--where", "@nope=1"],
            &env.db,
            "invalid --where",
        ),
        (vec!["--out", "s3://x/"], &env.db, "bucket name"),
        (
            vec![
                "--out",
                fresh.to_str().unwrap(),
                "--changes",
                "--where",
                "a=b",
            ],
            &env.db,
            "cannot be used with",
        ),
    ];
    for (args, db, needle) in cases {
        let out = export(&env, db, &args).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.lines().next().unwrap().contains(needle),
            "{args:?}: {err}"
        );
        assert!(err.lines().count() <= 2, "{args:?}: {err}");
    }
    assert!(!fresh.join("_SUCCESS").exists());
    // Clap's own errors: the first line names the problem, the second the usage.
    let out = export(&env, &env.db, &["--format", "orc", "--out", "x"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.lines().next().unwrap().contains("orc"), "{err}");
}

/// Issue 19: memory is bounded by the row group, not the database: 100,000 objects exported
/// with small row groups stay under a fixed peak RSS (measured by the kernel, `wait4`).
#[tokio::test]
async fn export_of_100k_objects_stays_under_fixed_rss() {
    let env = Env::new().await;
    fill(env.state(), "big", "", 1000);
    env.scan(&env.config("big", "")).await.unwrap();
    multiply(&env.db, 100);
    assert_eq!(count(&env.db, "SELECT count(*) FROM objects"), 100_000);
    let db_size = std::fs::metadata(&env.db).unwrap().len();
    if let Some(keep) = std::env::var_os("S3META_KEEP_DB") {
        std::fs::copy(&env.db, keep).unwrap();
    }
    let out = env.dir.path().join("out");
    let run = export(
        &env,
        &env.db,
        &["--out", out.to_str().unwrap(), "--row-group-rows", "5000"],
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    // The process's own VmHWM (a child's `ru_maxrss` would carry the test's, from before exec).
    let err = stderr(&run);
    let peak: f64 = err
        .split("peak RSS ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {err}"));
    eprintln!(
        "export of 100,000 objects: peak RSS {peak} MiB, database {} MiB",
        db_size >> 20
    );
    assert!(peak < 48.0, "peak RSS {peak} MiB");
    let rows: i64 = parquet_files(&out)
        .iter()
        .map(|f| {
            SerializedFileReader::new(std::fs::File::open(out.join(f)).unwrap())
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows()
        })
        .sum();
    assert_eq!(rows, 100_000);
}

/// Copies every object of the database `times - 1` times under suffixed keys, with its
/// metadata (SQL: a scan of 100,000 objects would only slow the test down).
fn multiply(db: &Path, times: usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let cols: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('objects')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let select: Vec<String> = cols
        .iter()
        .map(|c| match c.as_str() {
            "object_id" => "NULL".to_string(),
            "key" => "key || ?1".to_string(),
            other => other.to_string(),
        })
        .collect();
    conn.execute_batch("BEGIN").unwrap();
    conn.execute_batch(
        "CREATE TEMP TABLE originals AS SELECT object_id, bucket_id, key FROM objects",
    )
    .unwrap();
    for i in 1..times {
        let suffix = format!("~{i:03}");
        conn.execute(
            &format!(
                "INSERT INTO objects ({}) SELECT {} FROM objects WHERE object_id IN (SELECT object_id FROM originals)",
                cols.join(", "),
                select.join(", ")
            ),
            [&suffix],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO metadata (object_id, name, value)
             SELECT n.object_id, m.name, m.value FROM originals o
             JOIN objects n ON n.bucket_id = o.bucket_id AND n.key = o.key || ?1
             JOIN metadata m ON m.object_id = o.object_id",
            [&suffix],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
}
