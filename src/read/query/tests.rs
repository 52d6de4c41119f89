//! Unit tests of the query module on a small database written by hand (the end-to-end tests
//! on scanned databases are in tests/query.rs).

use super::*;
use serde_json::Value;

/// (key, state, size, last_modified, metadata)
type Obj<'a> = (&'a str, &'a str, i64, &'a str, &'a [(&'a str, &'a str)]);

const OBJECTS: [Obj<'static>; 8] = [
    (
        "a/1",
        "ok",
        10,
        "2026-01-01T00:00:00.000Z",
        &[("project", "apollo"), ("owner", "ann")],
    ),
    (
        "a/2",
        "ok",
        2000,
        "2026-01-01T23:59:59.000Z",
        &[("project", "gemini")],
    ),
    ("a/3", "ok", 0, "2026-01-02T00:00:00.000Z", &[]),
    (
        "a%/_x",
        "ok",
        5,
        "2026-02-01T10:30:00.000Z",
        &[("project", "[draft] a*")],
    ),
    (
        "b*/1",
        "ok",
        7,
        "2026-03-01T00:00:00.000Z",
        &[("owner", "bob")],
    ),
    (
        "gone",
        "gone",
        1,
        "2026-01-01T00:00:00.000Z",
        &[("project", "apollo")],
    ),
    ("err", "error", 1, "2026-01-01T00:00:00.000Z", &[]),
    ("pend", "pending", 3, "2026-01-05T00:00:00.000Z", &[]),
];

fn database() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let conn = db::open_rw(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO buckets (bucket_id, store, name) VALUES (1, 'http://s', 'bkt'), (2, 'http://s', 'other');
         INSERT INTO objects (object_id, bucket_id, key, state) VALUES (100, 2, 'a/1', 'ok');
         INSERT INTO metadata VALUES (100, 'project', 'apollo');",
    )
    .unwrap();
    for (i, (key, state, size, modified, meta)) in OBJECTS.iter().enumerate() {
        let id = i as i64 + 1;
        conn.execute(
            "INSERT INTO objects (object_id, bucket_id, key, state, list_size, list_modified, list_etag,
                 headed_scan)
             VALUES (?1, 1, ?2, ?3, ?4, ?5, 'e' || ?1, CASE WHEN ?3 IN ('ok', 'gone') THEN 1 END)",
            rusqlite::params![id, key, state, size, modified],
        )
        .unwrap();
        for (n, v) in *meta {
            conn.execute(
                "INSERT INTO metadata VALUES (?1, ?2, ?3)",
                rusqlite::params![id, n, v],
            )
            .unwrap();
        }
    }
    conn.execute(
        "INSERT INTO object_errors VALUES (7, 1, 403, 'AccessDenied', 'denied', 1, 'now')",
        [],
    )
    .unwrap();
    (dir, path)
}

/// The keys (bucket `bkt` only) a list of `--where` texts selects; both plans must agree.
fn keys(path: &Path, filters: &[&str]) -> Vec<String> {
    let conn = db::open_ro(path).unwrap();
    let filters: Vec<Filter> = filters.iter().map(|f| Filter::parse(f).unwrap()).collect();
    let scope = Scope {
        bucket: Some("bkt".into()),
        ..Scope::default()
    };
    let [by_index, by_key] = [Plan::Index, Plan::KeyOrder].map(|plan| {
        let sel = Selection::new(&scope, &filters, plan);
        let (_, params) = sel.render();
        let mut stmt = conn.prepare(&records_sql(&sel, None)).unwrap();
        let rows = stmt
            .query_map(params.as_slice(), |r| r.get::<_, String>(1))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>()
    });
    assert_eq!(by_index, by_key, "{filters:?}");
    by_index
}

#[test]
fn metadata_filters_select_what_they_say() {
    let (_dir, db) = database();
    assert_eq!(keys(&db, &["project=apollo"]), ["a/1"]);
    assert_eq!(keys(&db, &["PROJECT=apollo"]), ["a/1"]);
    // `!=`: has the name, with another value; objects without it do not match.
    assert_eq!(keys(&db, &["project!=apollo"]), ["a%/_x", "a/2"]);
    assert_eq!(keys(&db, &["project~*a*"]), ["a%/_x", "a/1"]);
    assert_eq!(keys(&db, &["project~[draft]*"]), ["a%/_x"]);
    assert_eq!(keys(&db, &[r"project~*\*"]), ["a%/_x"]);
    assert_eq!(keys(&db, &["project~ap?llo"]), ["a/1"]);
    assert_eq!(keys(&db, &["owner"]), ["a/1", "b*/1"]);
    // Only objects whose metadata was read can lack a name (issue 18): not `err` (never
    // read: its HEAD failed) nor `pend` (not read yet).
    assert_eq!(keys(&db, &["!project"]), ["a/3", "b*/1"]);
    assert_eq!(keys(&db, &["project", "owner"]), ["a/1"]);
    assert_eq!(
        keys(&db, &["project=apollo", "owner=bob"]),
        Vec::<String>::new()
    );
}

#[test]
fn field_filters_select_what_they_say() {
    let (_dir, db) = database();
    assert_eq!(keys(&db, &["@key~a/*"]), ["a/1", "a/2", "a/3"]);
    assert_eq!(keys(&db, &["@key~b[*]*"]), Vec::<String>::new());
    assert_eq!(keys(&db, &[r"@key~b\**"]), ["b*/1"]);
    assert_eq!(keys(&db, &["@key>a/3"]), ["b*/1", "err", "pend"]);
    assert_eq!(keys(&db, &["@key=a/2"]), ["a/2"]);
    assert_eq!(
        keys(&db, &["@size>5", "@size<=2000"]),
        ["a/1", "a/2", "b*/1"]
    );
    assert_eq!(keys(&db, &["@size=0"]), ["a/3"]);
    assert_eq!(keys(&db, &["@size>=2KB"]), ["a/2"]);
    assert_eq!(keys(&db, &["@etag=e2"]), ["a/2"]);
    assert_eq!(keys(&db, &["@error"]), ["err"]);
    assert_eq!(keys(&db, &["@state=pending"]), ["pend"]);
    // Asking for gone objects finds them although they are excluded by default.
    assert_eq!(keys(&db, &["@state=gone"]), ["gone"]);
    assert_eq!(
        keys(&db, &["@storage_class=STANDARD"]),
        Vec::<String>::new()
    );
}

#[test]
fn times_compare_at_the_precision_written() {
    let (_dir, db) = database();
    assert_eq!(keys(&db, &["@modified=2026-01-01"]), ["a/1", "a/2", "err"]);
    assert_eq!(
        keys(&db, &["@modified>2026-01-01"]),
        ["a%/_x", "a/3", "b*/1", "pend"]
    );
    assert_eq!(
        keys(&db, &["@modified>=2026-01-02", "@modified<2026-02-01"]),
        ["a/3", "pend"]
    );
    assert_eq!(
        keys(&db, &["@modified<=2026-01-01", "@key~a*"]),
        ["a/1", "a/2"]
    );
    assert_eq!(keys(&db, &["@modified<2026-01-01"]), Vec::<String>::new());
    assert_eq!(keys(&db, &["@modified=2026-02-01T10:30"]), ["a%/_x"]);
    assert_eq!(keys(&db, &["@modified=2026-01-01T23:59:59"]), ["a/2"]);
    assert_eq!(
        keys(&db, &["@modified>2026-01-01T23:59:58.999Z", "@key~a/*"]),
        ["a/2", "a/3"]
    );
    assert_eq!(
        keys(&db, &["@modified=2026-01-01T23:59:59.001"]),
        Vec::<String>::new()
    );
}

#[test]
fn scope_uses_key_comparisons_and_excludes_gone() {
    let (_dir, db) = database();
    let conn = db::open_ro(&db).unwrap();
    let count_of = |bucket: Option<&str>, prefix: &str, include_gone| {
        let scope = Scope {
            bucket: bucket.map(String::from),
            prefix: Some(prefix.into()),
            include_gone,
            versions: false,
        };
        count(&conn, &Selection::new(&scope, &[], Plan::Index)).unwrap()
    };
    // `%` and `_` are literal: LIKE would have matched `a/...` too.
    assert_eq!(count_of(Some("bkt"), "a%/_", false), 1);
    assert_eq!(count_of(Some("bkt"), "b*", false), 1);
    assert_eq!(count_of(Some("bkt"), "a", false), 4);
    assert_eq!(count_of(None, "a", false), 5);
    assert_eq!(count_of(Some("bkt"), "", false), 7);
    assert_eq!(count_of(Some("bkt"), "", true), 8);
    assert_eq!(count_of(Some("nosuch"), "", true), 0);
}

#[test]
fn metadata_equality_and_existence_use_the_name_value_index() {
    let (_dir, db) = database();
    let conn = db::open_ro(&db).unwrap();
    for filters in [
        vec!["project=apollo"],
        vec!["project"],
        vec!["project!=x", "owner=bob"],
        vec!["!owner", "project~ap*"],
    ] {
        let parsed: Vec<Filter> = filters.iter().map(|f| Filter::parse(f).unwrap()).collect();
        assert_eq!(choose_plan(&conn, &parsed).unwrap(), Plan::Index);
        let sel = Selection::new(&Scope::default(), &parsed, Plan::Index);
        for sql in [records_sql(&sel, Some(100)), count_sql(&sel)] {
            let plan = plan(&conn, &sel, &sql);
            assert!(
                plan.contains("COVERING INDEX metadata_by_name_value (name=?"),
                "{filters:?}: {plan}"
            );
            assert!(!plan.contains("SCAN m"), "{plan}");
        }
    }
}

#[test]
fn key_order_plan_streams_without_sorting() {
    let (_dir, db) = database();
    let conn = db::open_ro(&db).unwrap();
    for filters in [
        vec![],
        vec!["!project"],
        vec!["project", "@size>1"],
        vec!["@key~a/*"],
    ] {
        let parsed: Vec<Filter> = filters.iter().map(|f| Filter::parse(f).unwrap()).collect();
        let scope = Scope {
            prefix: Some("a".into()),
            ..Scope::default()
        };
        let sel = Selection::new(&scope, &parsed, Plan::KeyOrder);
        let plan = plan(&conn, &sel, &records_sql(&sel, None));
        assert!(!plan.contains("TEMP B-TREE"), "{filters:?}: {plan}");
        assert!(
            plan.contains("sqlite_autoindex_objects_1 (bucket_id=? AND key>? AND key<?)"),
            "{plan}"
        );
    }
    // A test with no metadata, or one matching many entries, walks the keys.
    assert_eq!(choose_plan(&conn, &[]).unwrap(), Plan::KeyOrder);
    assert_eq!(
        choose_plan(&conn, &[Filter::parse("!x").unwrap()]).unwrap(),
        Plan::KeyOrder
    );
}

fn plan(conn: &Connection, sel: &Selection, sql: &str) -> String {
    let (_, params) = sel.render();
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let rows = stmt
        .query_map(params.as_slice(), |r| r.get::<_, String>(3))
        .unwrap();
    rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
}

fn args(db: &Path, filters: &[&str], sql: Option<&str>, format: Format) -> QueryOptions {
    QueryOptions {
        db: db.into(),
        bucket: Some("bkt".into()),
        prefix: None,
        filters: filters.iter().map(|f| f.to_string()).collect(),
        sql: sql.map(String::from),
        format: Some(format),
        table: Default::default(),
        limit: None,
        count: false,
        include_gone: false,
        all_versions: false,
    }
}

fn run_to_string(a: &QueryOptions) -> Result<String> {
    let mut out = Vec::new();
    run(a, &mut out, false)?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn records_have_every_field_in_order() {
    let (_dir, db) = database();
    let text = run_to_string(&args(&db, &["@key=a/1"], None, Format::Jsonl)).unwrap();
    let line = text.lines().next().unwrap();
    let order: Vec<&str> = RECORD.iter().map(|(n, _)| *n).collect();
    let mut at = 0;
    for name in &order {
        let found = line[at..]
            .find(&format!("\"{name}\":"))
            .unwrap_or_else(|| panic!("{name} after {at} in {line}"));
        at += found;
    }
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v.as_object().unwrap().len(), RECORD.len());
    assert_eq!(
        v["metadata"],
        serde_json::json!({"owner": "ann", "project": "apollo"})
    );
    assert_eq!(v["size"], 10);
    assert_eq!(v["etag"], "e1");
    assert_eq!(v["error_status"], Value::Null);
}

#[test]
fn sql_is_read_only_and_reports_sqlite_messages() {
    let (_dir, db) = database();
    let sql = |s: &str| run_to_string(&args(&db, &[], Some(s), Format::Jsonl));
    assert_eq!(
        sql("SELECT key, size FROM v_objects WHERE key = 'a/2' AND bucket = 'bkt'").unwrap(),
        "{\"key\":\"a/2\",\"size\":2000}\n"
    );
    for write in [
        "DELETE FROM objects",
        "UPDATE objects SET state = 'ok'",
        "CREATE TABLE t (x)",
        "PRAGMA user_version = 9",
    ] {
        assert!(matches!(sql(write), Err(Error::SqlWrites)), "{write}");
    }
    let err = sql("SELEC key FROM v_objects").unwrap_err().to_string();
    assert!(
        err.starts_with("SQL error: near \"SELEC\": syntax error"),
        "{err}"
    );
    let err = sql("SELECT nosuch FROM v_objects").unwrap_err().to_string();
    assert_eq!(err, "SQL error: no such column: nosuch (at offset 7)");
    let err = sql("SELECT 1; DELETE FROM objects")
        .unwrap_err()
        .to_string();
    assert!(err.contains("--sql takes one statement"), "{err}");
    assert_eq!(count_rows(&db), 9);
}

fn count_rows(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn count_and_limit() {
    let (_dir, db) = database();
    let mut a = args(&db, &["project"], None, Format::Jsonl);
    a.count = true;
    assert_eq!(run_to_string(&a).unwrap(), "3\n");
    a.count = false;
    a.limit = Some(2);
    assert_eq!(run_to_string(&a).unwrap().lines().count(), 2);
    let mut s = args(
        &db,
        &[],
        Some("SELECT key FROM objects ORDER BY key"),
        Format::Csv,
    );
    s.limit = Some(1);
    assert_eq!(run_to_string(&s).unwrap(), "key\r\na%/_x\r\n");
}
