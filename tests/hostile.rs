//! Hostile and odd input (issue 6): every key, prefix, metadata name and value below is stored
//! exactly as S3 holds it, or refused with a clear message — nothing silently dropped or
//! altered. Extends tests/scan.rs's `tricky_keys_and_metadata_are_stored_exactly`.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::*;
use s3meta::model::Mode;
use s3meta::model::stats::Stats;
use s3meta::scan::{self, Outcome, ScanConfig};
use tokio_util::sync::CancellationToken;

/// Keys S3 accepts that break naive code: size limits, control characters, path tricks,
/// escape and glob syntax, XML syntax, Unicode look-alikes, and twins that a decoding or
/// normalizing bug would merge.
fn hostile_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        // 1,024 bytes, S3's limit, in 1-, 2- and 4-byte characters and in path segments.
        "k".repeat(1023) + "\n",
        "é".repeat(512),
        "🎉".repeat(256),
        "a/".repeat(512),
        // Line breaks and tabs anywhere.
        "line1\nline2".into(),
        "trailing\n".into(),
        "crlf\r\n".into(),
        "cr\rcr".into(),
        "a\tb\t".into(),
        "\tleading tab".into(),
        // Other control characters.
        "bell\u{7}".into(),
        "del\u{7f}".into(),
        "\u{1}start".into(),
        // Path tricks.
        "..".into(),
        "../..".into(),
        "a/../b".into(),
        "./x".into(),
        "a/./b".into(),
        "/".into(),
        "//double".into(),
        "/leading/../x".into(),
        "dir/".into(),
        "dir//".into(),
        // Percent sequences, and the keys they would decode to.
        "%".into(),
        "%%".into(),
        "%2F".into(),
        "a%2Fb".into(),
        "a/b".into(),
        "%00".into(),
        "%zz".into(),
        "%C3%A9".into(),
        "é".into(),
        "a%20b".into(),
        "a b".into(),
        "a+b".into(),
        "100%".into(),
        // Glob and regex syntax.
        "*".into(),
        "?".into(),
        "[".into(),
        "]".into(),
        "[!a]".into(),
        "a*b?c[d]".into(),
        "**/x".into(),
        "back\\slash".into(),
        "^$.|(){}".into(),
        // XML syntax (listings are XML).
        "<".into(),
        ">".into(),
        "&".into(),
        "&amp;".into(),
        "&#x41;".into(),
        "'\"".into(),
        "<![CDATA[x]]>".into(),
        "]]>".into(),
        "<?xml version=\"1.0\"?>".into(),
        // Unicode: normalization twins, invisible and extreme code points.
        "caf\u{e9}".into(),
        "cafe\u{301}".into(),
        "\u{feff}bom".into(),
        "zero\u{200b}width".into(),
        "\u{202e}rtl".into(),
        "\u{fffd}".into(),
        "\u{ffff}".into(),
        "\u{10ffff}".into(),
        // Outer spaces (keys made only of whitespace: see the test below).
        " leading space".into(),
        "trailing space ".into(),
        " both ".into(),
    ]
    .into_iter()
    .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_are_stored_byte_exact_and_rescan_to_no_change() {
    let env = Env::new().await;
    let keys = hostile_keys();
    for k in &keys {
        assert!(k.len() <= 1024, "{k:?}");
        // Angle brackets keep the value's outer whitespace away from HTTP's trimming.
        env.state()
            .put_object("bkt", k, k.as_bytes(), &[("k", &format!("<{k}>"))]);
    }
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    let conn = rusqlite::Connection::open(&env.db).unwrap();
    let stored: Vec<(String, String, String, i64)> = conn
        .prepare(
            "SELECT key, state, value, size FROM objects JOIN metadata USING (object_id)
             WHERE name = 'k' ORDER BY key",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want: Vec<(String, String, String, i64)> = keys
        .iter()
        .map(|k| (k.clone(), "ok".into(), format!("<{k}>"), k.len() as i64))
        .collect();
    assert_eq!(stored, want);
    assert_eq!(
        count(&env.db, "SELECT count(*) FROM objects"),
        keys.len() as i64
    );

    // Had any key been altered on the way in, the rescan would see a deletion and a creation.
    env.state().reset_counters();
    let before = dump(&env.db);
    let again = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(again.mode, Mode::Rescan);
    assert_eq!(again.stats.skipped, keys.len() as u64);
    assert_eq!(env.state().requests(Op::Head), 0);
    assert_eq!(count(&env.db, "SELECT count(*) FROM changes"), 0);
    assert_eq!(dump(&env.db), before);
}

/// Issue 15: the lean HEAD path and an SDK HeadObject give the same fields for every hostile
/// key, with system headers and metadata of every kind (non-ASCII, RFC 2047-encoded, outer
/// spaces, commas). The SDK is the oracle here only; production sends no SDK HEAD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_head_path_reads_what_the_sdk_reads() {
    use aws_sdk_s3::operation::head_object::HeadObjectOutput;
    use s3meta::model::{ExtraHeaders, HeadFields, parts_count, strip_quotes, timefmt};

    // The test server sends a non-ASCII value as one RFC 2047 word; s3meta decodes it.
    fn decoded(v: &str) -> String {
        use base64::Engine as _;
        v.strip_prefix("=?UTF-8?B?")
            .and_then(|b| b.strip_suffix("?="))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_else(|| v.to_string())
    }
    fn by_sdk(out: HeadObjectOutput, recheck: bool) -> HeadFields {
        let mut metadata: Vec<(String, String)> = out
            .metadata()
            .into_iter()
            .flatten()
            .map(|(n, v)| (n.to_ascii_lowercase(), decoded(v)))
            .collect();
        metadata.sort_unstable();
        let s = |v: Option<&str>| v.map(str::to_string);
        HeadFields {
            etag: out.e_tag().map(strip_quotes),
            size: out.content_length(),
            last_modified: out.last_modified().map(timefmt::from_smithy),
            content_type: s(out.content_type()),
            cache_control: s(out.cache_control()),
            content_encoding: s(out.content_encoding()),
            content_language: s(out.content_language()),
            content_disposition: s(out.content_disposition()),
            expires: s(out.expires_string()),
            storage_class: out.storage_class().map(|c| c.as_str().to_string()),
            version_id: s(out.version_id()),
            missing_meta: out.missing_meta(),
            extra: by_sdk_extra(&out),
            tagging_count: out.tag_count().map(i64::from),
            recheck,
            metadata,
        }
    }
    fn by_sdk_extra(out: &HeadObjectOutput) -> ExtraHeaders {
        let s = |v: Option<&str>| v.map(str::to_string);
        let checksums = [
            ("CRC32", out.checksum_crc32()),
            ("CRC32C", out.checksum_crc32_c()),
            ("CRC64NVME", out.checksum_crc64_nvme()),
            ("SHA1", out.checksum_sha1()),
            ("SHA256", out.checksum_sha256()),
            ("SHA512", out.checksum_sha512()),
            ("MD5", out.checksum_md5()),
            ("XXHASH64", out.checksum_xxhash64()),
            ("XXHASH3", out.checksum_xxhash3()),
            ("XXHASH128", out.checksum_xxhash128()),
        ];
        let checksum = checksums.iter().find_map(|(a, v)| Some((*a, (*v)?)));
        ExtraHeaders {
            sse: out.server_side_encryption().map(|v| v.as_str().to_string()),
            sse_kms_key_id: s(out.ssekms_key_id()),
            sse_bucket_key: out.bucket_key_enabled(),
            sse_customer_algorithm: s(out.sse_customer_algorithm()),
            checksum_algorithm: checksum.map(|(a, _)| a.to_string()),
            checksum: checksum.map(|(_, v)| v.to_string()),
            checksum_type: out.checksum_type().map(|v| v.as_str().to_string()),
            lock_mode: out.object_lock_mode().map(|v| v.as_str().to_string()),
            lock_retain_until: out
                .object_lock_retain_until_date()
                .map(timefmt::from_smithy),
            legal_hold: out
                .object_lock_legal_hold_status()
                .map(|v| v.as_str().to_string()),
            replication_status: out.replication_status().map(|v| v.as_str().to_string()),
            restore: s(out.restore()),
            archive_status: out.archive_status().map(|v| v.as_str().to_string()),
            website_redirect: s(out.website_redirect_location()),
            parts_count: out.e_tag().and_then(parts_count),
        }
    }

    let env = Env::new().await;
    env.state().create_bucket("bkt");
    let keys = hostile_keys();
    for (i, k) in keys.iter().enumerate() {
        let spec = ObjectSpec {
            body: Some(k.as_bytes().to_vec()),
            meta: vec![
                ("plain".into(), format!("<{k}>")),
                ("Mixed-Case".into(), "a, b,c".into()),
                ("utf8".into(), "é 🎉 \u{202e}".into()),
                ("encoded".into(), "=?UTF-8?B?w6kg8J+OiQ==?=".into()),
                (
                    "spaces".into(),
                    format!("{}x{}", " ".repeat(i % 3), " ".repeat(i % 2)),
                ),
            ],
            content_type: Some("text/plain; charset=utf-8".into()),
            cache_control: (i % 2 == 0).then(|| "max-age=60".into()),
            content_encoding: (i % 3 == 0).then(|| "gzip".into()),
            content_language: (i % 4 == 0).then(|| "fr-CA".into()),
            content_disposition: (i % 5 == 0).then(|| format!("attachment; filename=\"{i}.txt\"")),
            expires: (i % 6 == 0).then(|| "Thu, 01 Dec 2094 16:00:00 GMT".into()),
            storage_class: (i % 7 == 0).then(|| "GLACIER".into()),
            missing_meta: (i % 8 == 0).then_some(2),
            etag: (i % 9 == 0).then(|| format!("{:032x}-{}", i, i % 17 + 2)),
            tags: if i % 2 == 0 {
                vec![("t".into(), format!("{i}")), ("k 2".into(), String::new())]
            } else {
                Vec::new()
            },
            headers: extra_headers(i),
            ..ObjectSpec::default()
        };
        env.state().put_object_with("bkt", k, spec);
    }
    let s3 = env.s3();
    let target = s3.head_target("bkt").await.unwrap();
    for k in &keys {
        let lean = s3meta::s3::head::head_once(&target, k)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{k:?} gone"));
        let sdk = s3
            .client
            .head_object()
            .bucket("bkt")
            .key(k)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(lean, by_sdk(sdk, lean.recheck), "{k:?}");
        assert!(
            lean.metadata
                .iter()
                .any(|(n, v)| n == "mixed-case" && v == "a, b,c")
        );
    }
    let gone = s3meta::s3::head::head_once(&target, "never-put")
        .await
        .unwrap();
    assert_eq!(gone, None);
}

/// Issue 7's LIST fast path (`src/s3/list/xml.rs`) must read exactly what the SDK reads. The
/// test server re-formats every listing the way other stores write XML (indentation, `&#34;`,
/// `EncodingType` last) and puts a comment inside a key on odd pages, which the fast path
/// leaves to the SDK: both paths, over hostile keys, must store what a plain listing stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restyled_listings_read_by_either_parser_store_the_same() {
    let env = Env::new().await;
    for k in hostile_keys() {
        env.state()
            .put_object("bkt", &k, k.as_bytes(), &[("k", "v")]);
    }
    let mut cfg = env.config("bkt", "");
    cfg.page_size = 7;
    // Returns how many pages went to the SDK's parser, and how many LISTs there were.
    let scan = |cfg: ScanConfig, db: std::path::PathBuf| {
        let client = env.s3();
        async move {
            let stats = Arc::new(Stats::default());
            let report = scan::run(&cfg, client, &db, CancellationToken::new(), stats.clone())
                .await
                .unwrap();
            assert_eq!(report.outcome, Outcome::Complete);
            (
                stats.lists_parsed_by_sdk.load(Ordering::Relaxed),
                report.stats.list_requests,
            )
        }
    };
    let plain = env.dir.path().join("plain.db");
    let (by_sdk, _) = scan(cfg.clone(), plain.clone()).await;
    assert_eq!(by_sdk, 0, "the fast path reads every plain page");

    env.state()
        .add_fault(Fault::new(Some(Op::List), Action::Restyle));
    for parallelism in [1, 4] {
        let db = env.dir.path().join(format!("restyled-{parallelism}.db"));
        cfg.list_parallelism = parallelism;
        cfg.splits = s3meta::scan::Splits::Always;
        let (by_sdk, lists) = scan(cfg.clone(), db.clone()).await;
        // Odd pages (a comment in a key) go to the SDK, even ones through the fast path.
        assert!(by_sdk > 0 && by_sdk < lists, "{by_sdk} of {lists}");
        assert_eq!(dump(&db), dump(&plain), "--list-parallelism {parallelism}");
    }
}

/// `s3meta scan URL` into a fresh database; returns the database.
async fn scan_fresh(env: &Env, url: &str, name: &str) -> std::path::PathBuf {
    let db = env.dir.path().join(name);
    let mut cmd = env.bin();
    cmd.args(["scan", url, "--db"])
        .arg(&db)
        .args(["--page-size", "3", "--backoff-ms", "1"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{url}: {}", stderr(&out));
    db
}

fn keys_in(db: &Path) -> Vec<String> {
    column(db, "SELECT key FROM objects ORDER BY key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_with_glob_escape_and_percent_characters_match_only_as_prefixes() {
    let env = Env::new().await;
    let keys = [
        "a*/1", "a*/2", "a*x", "ab/1", "ab", "a?/1", "ax/1", "a[b]/1", "ab]/1", "a%/1", "a%2F/1",
        "a/1", "a_/1", "aZ/1", "a\\/1", "a\\", "a./1", "a.b", "a", "b*/1", "%a", "_a",
    ];
    for k in keys {
        env.state().put_object("bkt", k, b"x", &[]);
    }
    // Glob (`*?[]`), LIKE (`%_`), regex (`.`) and escape (`\`) characters are plain text.
    for (i, prefix) in [
        "a*", "a?", "a[b]", "a[", "a%", "a%2F", "a_", "a\\", "a.", "%", "_", "a*/",
    ]
    .into_iter()
    .enumerate()
    {
        let db = scan_fresh(&env, &format!("s3://bkt/{prefix}"), &format!("p{i}.db")).await;
        let mut want: Vec<String> = keys
            .iter()
            .filter(|k| k.starts_with(prefix))
            .map(|k| k.to_string())
            .collect();
        want.sort();
        assert!(!want.is_empty(), "{prefix:?}");
        assert_eq!(keys_in(&db), want, "prefix {prefix:?}");
        assert_eq!(column(&db, "SELECT prefix FROM scans"), [prefix]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_and_doubled_slashes_are_part_of_the_prefix() {
    let env = Env::new().await;
    for k in ["/lead", "//two", "dir/a", "dir//b", "dir-x", "dir", "x"] {
        env.state().put_object("bkt", k, b"x", &[]);
    }
    for (i, (url, prefix, want)) in [
        (
            "s3://bkt",
            "",
            vec!["//two", "/lead", "dir", "dir-x", "dir//b", "dir/a", "x"],
        ),
        (
            "s3://bkt/",
            "",
            vec!["//two", "/lead", "dir", "dir-x", "dir//b", "dir/a", "x"],
        ),
        ("s3://bkt//", "/", vec!["//two", "/lead"]),
        ("s3://bkt///", "//", vec!["//two"]),
        (
            "s3://bkt/dir",
            "dir",
            vec!["dir", "dir-x", "dir//b", "dir/a"],
        ),
        ("s3://bkt/dir/", "dir/", vec!["dir//b", "dir/a"]),
        ("s3://bkt/dir//", "dir//", vec!["dir//b"]),
        ("S3://bkt/dir/a", "dir/a", vec!["dir/a"]),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("s{i}.db");
        let db = scan_fresh(&env, url, &name).await;
        assert_eq!(keys_in(&db), want, "{url}");
        assert_eq!(column(&db, "SELECT prefix FROM scans"), [prefix], "{url}");
        std::fs::remove_file(&db).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bucket_urls_are_refused_with_one_line_before_the_database_is_touched() {
    let env = Env::new().await;
    env.state().put_object("bkt", "k", b"x", &[]);
    let db = env.dir.path().join("never.db");
    let expected = "expected s3://BUCKET[/PREFIX]";
    for (url, needle) in [
        ("bkt", expected),
        ("bkt/logs/", expected),
        ("//bkt/x", expected),
        ("https://bkt/x", expected),
        ("s3:/bkt", expected),
        ("s3:bkt", expected),
        ("", expected),
        ("s3://", "no bucket name after s3://"),
        ("s3:///", "no bucket name after s3://"),
        ("s3:///logs", "no bucket name after s3://"),
        ("s3://ab", "must be 3 to 255 characters long"),
        ("s3://bad bucket", "contains ` `"),
        ("s3://-bkt", "must start with a letter or a digit"),
        (".bkt", expected),
        ("s3://.bkt", "must start with a letter or a digit"),
        ("s3://bkt:9000/x", "contains `:`"),
        ("s3://user@bkt", "contains `@`"),
        ("s3://bkt?versionId=1", "contains `?`"),
        ("s3://bkt#frag", "contains `#`"),
        ("s3://bkt\\x", "contains `\\`"),
        ("s3://bkt\n/x", "contains `\\n`"),
        ("s3://bkt\t", "contains `\\t`"),
        ("s3://bücket", "contains `ü`"),
    ] {
        let mut cmd = env.bin();
        cmd.args(["scan", url, "--db"]).arg(&db);
        let out = output(cmd).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{url:?}: {err}");
        let shown: String = url
            .chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect();
        assert!(
            err.starts_with(&format!("error: invalid S3 URL `{shown}`: ")),
            "{url:?}: {err}"
        );
        assert!(
            err.contains(needle),
            "{url:?}: expected {needle:?} in {err:?}"
        );
        // Control characters are shown escaped, so the message stays one line.
        assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
        assert!(!db.exists(), "{url:?} created the database");
    }
    // Names our parser lets through for on-premises stores, but this store refuses: the
    // store's own reason, exit 1, and (issue 18) no database: the scan never listed.
    for name in ["Upper_Case", &"b".repeat(64)] {
        let mut cmd = env.bin();
        cmd.args(["scan", &format!("s3://{name}/x"), "--db"])
            .arg(&db)
            .args(["--backoff-ms", "1"]);
        let out = output(cmd).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(&format!("listing s3://{name}/x at "))
                && err.contains("HTTP 400 InvalidBucketName"),
            "{name}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    }
    assert!(
        !db.exists(),
        "a scan that never listed created the database"
    );
}

/// The metadata of `key` as `name=value` lines, by name.
fn metadata_of(db: &Path, key: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.prepare(
        "SELECT name || '=' || value FROM metadata JOIN objects USING (object_id)
         WHERE key = ?1 ORDER BY name",
    )
    .unwrap()
    .query_map([key], |r| r.get(0))
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn spec(meta: &[(&str, &str)]) -> ObjectSpec {
    ObjectSpec {
        body: Some(b"x".to_vec()),
        meta: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ObjectSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_at_the_limits_is_stored_exactly() {
    let env = Env::new().await;
    let s = env.state();
    // 2 KB of user metadata, S3's limit: printable ASCII, and two-byte UTF-8 (sent encoded).
    let ascii: String = (0..2000)
        .map(|i| char::from(b' ' + (i % 95) as u8))
        .collect::<String>()
        .trim()
        .to_string();
    let utf8 = "é".repeat(1000);
    s.put_object_with("bkt", "2k-ascii", spec(&[("big", &ascii)]));
    s.put_object_with("bkt", "2k-utf8", spec(&[("big", &utf8)]));
    // Many names (as many as the HTTP client accepts headers: see the test below).
    let names: Vec<(String, String)> = (0..80)
        .map(|i| (format!("m{i:03}"), format!("v{i}")))
        .collect();
    let many: Vec<(&str, &str)> = names
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    s.put_object_with("bkt", "many-names", spec(&many));
    // Names given in mixed case arrive as one lower-case name each.
    s.put_object_with(
        "bkt",
        "mixed-case",
        spec(&[("Mixed-Case", "1"), ("UPPER", "2"), ("camelCaseName", "3")]),
    );
    s.put_object_with("bkt", "empty-only", spec(&[("empty", "")]));
    // RFC 2047 encoded-words sent verbatim by the store, as AWS and others write them.
    s.put_object_with(
        "bkt",
        "rfc2047",
        spec(&[
            ("b", "=?UTF-8?B?w6l0w6k=?="),
            ("q", "=?UTF-8?Q?caf=C3=A9_cr=C3=A8me?="),
            ("lower-q", "=?utf-8?q?=E2=82=AC?="),
            (
                "words",
                "=?UTF-8?B?w6k=?= =?UTF-8?Q?=C3=A8?=  =?UTF-8?B?8J+OiQ==?=",
            ),
            ("in-text", "prix: =?UTF-8?Q?10_=E2=82=AC?= TTC"),
            ("latin1", "=?ISO-8859-1?Q?na=EFve?="),
            ("language", "=?UTF-8*fr?Q?=C3=A9t=C3=A9?="),
            ("not-base64", "=?UTF-8?B?not base64?="),
            ("unknown-charset", "=?KOI8-R?B?w6k=?="),
            ("unknown-encoding", "=?UTF-8?X?abc?="),
            ("bad-utf8", "=?UTF-8?B?/w==?="),
            ("lone", "a=?b"),
        ]),
    );
    // Values the store itself must encode: non-ASCII, control characters, an `=?` inside.
    s.put_object_with(
        "bkt",
        "encoded-by-store",
        spec(&[
            ("unicode", "ünïcödé 日本語 🎉"),
            ("control", "tab\there\nnewline"),
            ("looks-encoded", "é =?UTF-8?B?w6k=?= é"),
        ]),
    );
    // `x-amz-missing-meta`: values the store could not return, with and without others.
    s.put_object_with(
        "bkt",
        "missing-only",
        ObjectSpec {
            missing_meta: Some(3),
            ..spec(&[])
        },
    );
    s.put_object_with(
        "bkt",
        "missing-and-some",
        ObjectSpec {
            missing_meta: Some(1),
            ..spec(&[("kept", "yes")])
        },
    );
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    let db = &env.db;

    assert_eq!(metadata_of(db, "2k-ascii"), [format!("big={ascii}")]);
    assert_eq!(metadata_of(db, "2k-utf8"), [format!("big={utf8}")]);
    let want: Vec<String> = names.iter().map(|(n, v)| format!("{n}={v}")).collect();
    assert_eq!(metadata_of(db, "many-names"), want);
    assert_eq!(
        metadata_of(db, "mixed-case"),
        ["camelcasename=3", "mixed-case=1", "upper=2"]
    );
    assert_eq!(metadata_of(db, "empty-only"), ["empty="]);
    assert_eq!(
        metadata_of(db, "rfc2047"),
        [
            "b=été",
            "bad-utf8==?UTF-8?B?/w==?=",
            "in-text=prix: 10 € TTC",
            "language=été",
            "latin1=naïve",
            "lone=a=?b",
            "lower-q=€",
            "not-base64==?UTF-8?B?not base64?=",
            "q=café crème",
            "unknown-charset==?KOI8-R?B?w6k=?=",
            "unknown-encoding==?UTF-8?X?abc?=",
            "words=éè🎉",
        ]
    );
    assert_eq!(
        metadata_of(db, "encoded-by-store"),
        [
            "control=tab\there\nnewline",
            "looks-encoded=é =?UTF-8?B?w6k=?= é",
            "unicode=ünïcödé 日本語 🎉",
        ]
    );
    assert_eq!(
        column(
            db,
            "SELECT key || ' ' || state || ' ' || missing_meta FROM objects
             WHERE missing_meta IS NOT NULL ORDER BY key"
        ),
        ["missing-and-some ok 1", "missing-only ok 3"]
    );
    assert!(metadata_of(db, "missing-only").is_empty());
    assert_eq!(metadata_of(db, "missing-and-some"), ["kept=yes"]);
    // Every object was read; none has an error.
    assert_eq!(
        count(db, "SELECT count(*) FROM objects WHERE state = 'ok'"),
        9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_without_etags_is_stored_as_such_and_head_fills_them_in() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 250);
    env.state().set_listing_etags(false);
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(
        column(
            &env.db,
            "SELECT count(*) || ' ' || count(list_etag) || ' ' || count(etag) || ' ' || count(list_size)
             FROM objects WHERE state = 'ok'"
        ),
        ["250 0 250 250"]
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT count(*) FROM objects WHERE length(etag) != 32 OR etag GLOB '*[^0-9a-f]*'"
        ),
        0
    );
}

/// Keys made only of whitespace are valid S3 keys, but aws-sdk-s3 refuses to build a
/// HeadObject request for them ("key was missing": it treats a blank required field as
/// unset); s3meta rewrites the request path before signing, so they are HEADed like any key
/// (issue 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_only_keys_are_stored_exactly_and_headed() {
    let env = Env::new().await;
    let blank = [" ", "  ", "\t", "\n", "\r\n"];
    for (i, k) in blank.iter().chain(&["normal"]).enumerate() {
        env.state()
            .put_object("bkt", k, b"x", &[("i", &i.to_string())]);
    }
    let report = env.scan(&env.config("bkt", "")).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    let mut want: Vec<(String, String)> = blank
        .iter()
        .copied()
        .chain(["normal"])
        .enumerate()
        .map(|(i, k)| (k.to_string(), i.to_string()))
        .collect();
    want.sort();
    let got: Vec<(String, String)> = rusqlite::Connection::open(&env.db)
        .unwrap()
        .prepare("SELECT key, value FROM objects JOIN metadata USING (object_id) WHERE state = 'ok' ORDER BY key")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        got, want,
        "each blank key HEADed as itself, with its own metadata"
    );
    assert_eq!(env.state().requests(Op::Head), 6);
}
