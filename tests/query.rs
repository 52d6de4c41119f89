//! `s3meta query` through the built binary, on databases produced by real scans of the test
//! server (issue 3). `names`, `status`, and both while a scan runs: tests/status.rs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};

use common::*;
use serde_json::{Map, Value, json};

type Record = Map<String, Value>;

/// The JSON lines records of `query ARGS`; the command must succeed.
async fn records(env: &Env, args: &[&str]) -> Vec<Record> {
    let out = run(env, "query", args).await;
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `bucket/key` of each record of `query --where W…` (one `--where` per item, plus extra flags).
async fn matches(env: &Env, filters: &[&str], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = filters.iter().flat_map(|f| ["--where", f]).collect();
    args.extend(extra);
    records(env, &args).await.iter().map(bucket_key).collect()
}

/// A record's `bucket/key`.
fn bucket_key(r: &Record) -> String {
    format!(
        "{}/{}",
        r["bucket"].as_str().unwrap(),
        r["key"].as_str().unwrap()
    )
}

/// Exit code 1 and exactly one line on stderr containing `needle`.
fn assert_fails(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
}

const WEIRD: &str = "weird,\"key\"\nline";

/// Two buckets scanned into the env's database: metadata of every shape, a GLACIER object, a
/// 404 (gone) and a 403 (error), keys with glob and LIKE characters. Returns docs/a.txt's ETag.
async fn scanned(env: &Env) -> String {
    let s = env.state();
    let etag = s.put_object(
        "bkt",
        "docs/a.txt",
        &[b'a'; 100],
        &[("project", "apollo"), ("Owner", "ann")],
    );
    s.put_object(
        "bkt",
        "docs/b.txt",
        b"b",
        &[
            ("project", "gemini"),
            ("owner", "bob"),
            ("title", "=?UTF-8?B?w6l0w6k=?="),
        ],
    );
    s.put_object("bkt", "docs/[draft]*.md", b"", &[("project", "[x] y*")]);
    s.put_object_with(
        "bkt",
        "logs/2026/01.log",
        ObjectSpec {
            body_len: Some(5000),
            meta: vec![("owner".into(), "ann".into())],
            storage_class: Some("GLACIER".into()),
            content_type: Some("text/plain".into()),
            ..ObjectSpec::default()
        },
    );
    s.put_object("bkt", "logs/2026/02.log", b"", &[]);
    s.put_object("bkt", "100%_done", b"12345", &[("project", "apollo")]);
    s.put_object("bkt", "gone.txt", b"g", &[("project", "apollo")]);
    s.put_object("bkt", "denied.txt", b"d", &[]);
    s.add_fault(Fault::head("gone.txt", Action::Status(404)));
    s.add_fault(Fault::head("denied.txt", Action::Status(403)));
    s.put_object("other", "docs/a.txt", b"o", &[("project", "apollo")]);
    s.put_object("other", WEIRD, b"w", &[("note", "x,\"y\"\nz")]);
    env.scan(&env.config("bkt", "")).await.unwrap();
    env.scan(&env.config("other", "")).await.unwrap();
    etag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_selects_exactly_its_objects() {
    let env = Env::new().await;
    let etag = scanned(&env).await;
    let bkt = ["--bucket", "bkt"];
    let by_etag = format!("@etag={etag}");
    let cases: Vec<(Vec<&str>, &[&str], Vec<&str>)> = vec![
        (
            vec!["project=apollo"],
            &[],
            vec!["bkt/100%_done", "bkt/docs/a.txt", "other/docs/a.txt"],
        ),
        (
            vec!["PROJECT=apollo"],
            &bkt,
            vec!["bkt/100%_done", "bkt/docs/a.txt"],
        ),
        // `!=`: the name with another value; objects without it do not match.
        (
            vec!["project!=apollo"],
            &bkt,
            vec!["bkt/docs/[draft]*.md", "bkt/docs/b.txt"],
        ),
        (
            vec!["project~ap*"],
            &bkt,
            vec!["bkt/100%_done", "bkt/docs/a.txt"],
        ),
        (vec!["project~[x]*"], &bkt, vec!["bkt/docs/[draft]*.md"]),
        (vec!["project~?emini"], &bkt, vec!["bkt/docs/b.txt"]),
        (
            vec!["owner"],
            &bkt,
            vec!["bkt/docs/a.txt", "bkt/docs/b.txt", "bkt/logs/2026/01.log"],
        ),
        (
            // Not denied.txt: its HEAD was refused, so its metadata is unknown (issue 18).
            vec!["!owner"],
            &bkt,
            vec![
                "bkt/100%_done",
                "bkt/docs/[draft]*.md",
                "bkt/logs/2026/02.log",
            ],
        ),
        (
            vec!["project=apollo", "owner=ann"],
            &[],
            vec!["bkt/docs/a.txt"],
        ),
        // RFC 2047 values are stored, matched and shown decoded.
        (vec!["title=été"], &[], vec!["bkt/docs/b.txt"]),
        (
            vec!["@key~docs/*"],
            &[],
            vec![
                "bkt/docs/[draft]*.md",
                "bkt/docs/a.txt",
                "bkt/docs/b.txt",
                "other/docs/a.txt",
            ],
        ),
        (
            vec!["@key~docs/[draft]*"],
            &[],
            vec!["bkt/docs/[draft]*.md"],
        ),
        (
            vec!["@key~*.log"],
            &[],
            vec!["bkt/logs/2026/01.log", "bkt/logs/2026/02.log"],
        ),
        (vec!["@size>1000"], &[], vec!["bkt/logs/2026/01.log"]),
        (
            vec!["@size>=5", "@size<5KB"],
            &[],
            vec!["bkt/100%_done", "bkt/docs/a.txt"],
        ),
        (
            vec!["@size=0"],
            &[],
            vec!["bkt/docs/[draft]*.md", "bkt/logs/2026/02.log"],
        ),
        (vec![&by_etag], &[], vec!["bkt/docs/a.txt"]),
        (
            vec!["@storage_class=GLACIER"],
            &[],
            vec!["bkt/logs/2026/01.log"],
        ),
        (
            vec!["@content_type=text/plain"],
            &[],
            vec!["bkt/logs/2026/01.log"],
        ),
        (vec!["@error"], &[], vec!["bkt/denied.txt"]),
        (vec!["@state=gone"], &[], vec!["bkt/gone.txt"]),
        (vec!["@key=gone.txt"], &[], vec![]),
        (
            vec!["@key=gone.txt"],
            &["--include-gone"],
            vec!["bkt/gone.txt"],
        ),
        // Prefixes are key comparisons: `%`, `_`, `[`, `*` are literal.
        (vec![], &["--prefix", "100%_"], vec!["bkt/100%_done"]),
        (
            vec![],
            &["--prefix", "docs/["],
            vec!["bkt/docs/[draft]*.md"],
        ),
        (
            vec![],
            &["--prefix", "docs/", "--bucket", "other"],
            vec!["other/docs/a.txt"],
        ),
        (
            vec!["project"],
            &["--limit", "2"],
            vec!["bkt/100%_done", "bkt/docs/[draft]*.md"],
        ),
    ];
    for (filters, extra, want) in cases {
        assert_eq!(
            matches(&env, &filters, extra).await,
            want,
            "{filters:?} {extra:?}"
        );
    }
    let count = run(&env, "query", &["--where", "project", "--count"]).await;
    assert_eq!(stdout(&count), "5\n", "{}", stderr(&count));

    let b = &records(&env, &["--where", "@key=docs/b.txt"]).await[0];
    assert_eq!(
        b["metadata"],
        json!({"owner": "bob", "project": "gemini", "title": "été"})
    );
    let denied = &records(&env, &["--where", "@error"]).await[0];
    assert_eq!(denied["error_status"], 403);
    assert_eq!(denied["state"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modified_compares_at_the_precision_written() {
    let env = Env::new().await;
    scanned(&env).await;
    let all = records(&env, &["--include-gone"]).await;
    let lm = |r: &Record| r["last_modified"].as_str().unwrap().to_string();
    let t = lm(&all[0]);
    let (day, second) = (&t[..10], &t[..19]);
    let keys = |keep: &dyn Fn(&str) -> bool| -> Vec<String> {
        all.iter()
            .filter(|r| r["state"] != "gone" && keep(&lm(r)))
            .map(bucket_key)
            .collect()
    };
    let cases: Vec<(String, Vec<String>)> = vec![
        (format!("@modified={day}"), keys(&|m| &m[..10] == day)),
        (format!("@modified>{day}"), keys(&|m| &m[..10] > day)),
        (format!("@modified<={day}"), keys(&|m| &m[..10] <= day)),
        (format!("@modified={second}"), keys(&|m| &m[..19] == second)),
        (format!("@modified<{second}Z"), keys(&|m| &m[..19] < second)),
        (
            format!("@modified>={second}"),
            keys(&|m| &m[..19] >= second),
        ),
        ("@modified<2000-01-01".into(), vec![]),
    ];
    assert!(!cases[0].1.is_empty());
    for (filter, want) in cases {
        assert_eq!(matches(&env, &[&filter], &[]).await, want, "{filter}");
    }
}

/// Splits RFC 4180 CSV (quoted fields may hold commas, quotes, newlines) into records.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && row.is_empty() && !quoted,
        "CSV ends with CRLF"
    );
    rows
}

/// A JSON value as the CSV writer must show it.
fn csv_form(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_parses_back_to_the_same_records() {
    let env = Env::new().await;
    scanned(&env).await;
    let all = ["--include-gone", "--format"];
    let jsonl = records(&env, &[&all[..], &["jsonl"]].concat()).await;
    assert_eq!(jsonl.len(), 10);
    let weird = jsonl.iter().find(|r| r["key"] == WEIRD).unwrap();
    assert_eq!(weird["metadata"], json!({"note": "x,\"y\"\nz"}));
    // Fields in the documented order: the CSV header, and the first JSON line's text.
    let fields: Vec<&str> = s3meta::read::query::RECORD
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(
        fields[..8],
        [
            "bucket",
            "key",
            "size",
            "etag",
            "last_modified",
            "storage_class",
            "content_type",
            "metadata"
        ]
    );
    let out = run(&env, "query", &[&all[..], &["jsonl"]].concat()).await;
    let first = stdout(&out).lines().next().unwrap().to_string();
    let at: Vec<usize> = fields
        .iter()
        .map(|f| first.find(&format!("\"{f}\":")).unwrap())
        .collect();
    assert!(at.is_sorted(), "{first}");
    assert_eq!(jsonl[0].len(), fields.len());

    let out = run(&env, "query", &[&all[..], &["json"]].concat()).await;
    let json: Vec<Record> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json, jsonl);

    let out = run(&env, "query", &[&all[..], &["csv"]].concat()).await;
    let csv = parse_csv(&stdout(&out));
    assert_eq!(csv[0], fields);
    assert_eq!(csv.len(), jsonl.len() + 1);
    for (row, rec) in csv[1..].iter().zip(&jsonl) {
        assert_eq!(row.len(), fields.len());
        for (cell, name) in row.iter().zip(&fields) {
            if *name == "metadata" && cell.is_empty() {
                // Unknown metadata (an object whose HEAD failed): an empty field, null in JSON.
                assert_eq!(rec[*name], Value::Null);
            } else if *name == "metadata" {
                assert_eq!(serde_json::from_str::<Value>(cell).unwrap(), rec[*name]);
            } else {
                assert_eq!(cell, &csv_form(&rec[*name]), "{name}");
            }
        }
    }

    let out = run(&env, "query", &[&all[..], &["table"]].concat()).await;
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), jsonl.len() + 1, "{table}");
    assert!(lines[0].starts_with("bucket  key "), "{table}");
    for (line, rec) in lines[1..].iter().zip(&jsonl) {
        let key = rec["key"].as_str().unwrap().replace('\n', "\\n");
        let rest = line.strip_prefix(rec["bucket"].as_str().unwrap()).unwrap();
        assert!(rest.trim_start().starts_with(&key), "{line:?} vs {key:?}");
    }
    assert!(
        table.contains("owner=bob, project=gemini, title=été"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_read_only_and_bad_input_is_one_line() {
    let env = Env::new().await;
    scanned(&env).await;
    let before = dump(&env.db);

    let out = run(
        &env,
        "query",
        &["--sql", "SELECT key, json_extract(metadata, '$.owner') AS owner FROM v_objects \
                    WHERE json_extract(metadata, '$.project') = 'apollo' AND state = 'ok' ORDER BY bucket, key"],
    )
    .await;
    assert_eq!(
        stdout(&out),
        "{\"key\":\"100%_done\",\"owner\":null}\n{\"key\":\"docs/a.txt\",\"owner\":\"ann\"}\n{\"key\":\"docs/a.txt\",\"owner\":null}\n",
        "{}",
        stderr(&out)
    );
    for write in [
        "DELETE FROM objects",
        "DROP VIEW v_objects",
        "PRAGMA user_version = 7",
        "VACUUM",
    ] {
        assert_fails(
            &run(&env, "query", &["--sql", write]).await,
            "--sql runs read-only statements",
        );
    }
    assert_fails(
        &run(&env, "query", &["--sql", "SELEC * FROM v_objects"]).await,
        "SQL error: near \"SELEC\": syntax error",
    );
    assert_fails(
        &run(&env, "query", &["--sql", "SELECT nope\nFROM v_objects"]).await,
        "SQL error: no such column: nope",
    );
    assert_fails(
        &run(&env, "query", &["--where", "size>5"]).await,
        "for a listing field write `@size>5`",
    );
    let bad = run(&env, "query", &["--where", "@colour=red"]).await;
    assert_fails(
        &bad,
        "invalid --where `@colour=red`: unknown field `@colour`",
    );
    assert!(stderr(&bad).contains("accepted forms: name=value, name!=value, name~glob"));
    // A usage error is clap's (several lines, with the usage), still exit code 1.
    let usage = run(&env, "query", &["--where", "x", "--sql", "SELECT 1"]).await;
    assert_eq!(usage.status.code(), Some(1));
    assert!(stderr(&usage).contains("'--where <EXPR>' cannot be used with '--sql <SQL>'"));
    assert_eq!(dump(&env.db), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_newer_databases_are_refused_untouched() {
    let env = Env::new().await;
    let missing = env.dir.path().join("missing.db");
    for sub in ["query", "names", "status"] {
        let mut cmd = env.bin();
        cmd.args([sub, "--db"]).arg(&missing);
        assert_fails(
            &output(cmd).await,
            "does not exist: run `s3meta scan` first",
        );
        assert!(!missing.exists(), "{sub} created the database");
    }
    scanned(&env).await;
    let before = dump(&env.db);
    rusqlite::Connection::open(&env.db)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    for sub in ["query", "names", "status"] {
        assert_fails(
            &run(&env, sub, &[]).await,
            "written by a newer s3meta (schema version 99",
        );
    }
    rusqlite::Connection::open(&env.db)
        .unwrap()
        .pragma_update(None, "user_version", s3meta::store::db::SCHEMA_VERSION)
        .unwrap();
    assert_eq!(dump(&env.db), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_pipe_exits_0_quietly() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 3000);
    env.scan(&env.config("bkt", "")).await.unwrap();
    let mut cmd = env.bin();
    cmd.args(["query", "--db"])
        .arg(&env.db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (first, out) = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        drop(reader); // `| head -1`
        (line, child.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    assert!(
        first.starts_with("{\"bucket\":\"bkt\",\"key\":\"obj-00000\""),
        "{first}"
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
}

/// Issue 14 (bug 2): an output that cannot be written says which I/O error stopped it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_cannot_be_written_says_why() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 100);
    env.scan(&env.config("bkt", "")).await.unwrap();
    // (`changes` after one scan has nothing to write.)
    for command in ["query", "status", "names"] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut cmd = env.bin();
        cmd.arg(command).arg("--db").arg(&env.db).stdout(full);
        let out = output(cmd).await;
        assert_fails(&out, "cannot write the output: No space left on device");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_filters_use_the_name_value_index() {
    use s3meta::read::query::{Plan, Scope, Selection, count_sql, filter::Filter, records_sql};
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 20);
    env.scan(&env.config("bkt", "")).await.unwrap();
    let conn = s3meta::store::db::open_ro(&env.db).unwrap();
    for filters in [
        vec!["project=apollo"],
        vec!["owner"],
        vec!["owner=user1", "@size>0"],
    ] {
        let parsed: Vec<Filter> = filters.iter().map(|f| Filter::parse(f).unwrap()).collect();
        let sel = Selection::new(&Scope::default(), &parsed, Plan::Index);
        let (_, params) = sel.render();
        for sql in [records_sql(&sel, Some(100)), count_sql(&sel)] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map(params.as_slice(), |r| r.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(
                plan.iter()
                    .any(|p| p.contains("USING COVERING INDEX metadata_by_name_value (name=?")),
                "{filters:?}: {plan:#?}"
            );
        }
    }
}
