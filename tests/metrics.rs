//! Metrics (issue 19): `scan --metrics-file` for node_exporter's textfile collector, after
//! every run (exit 0, 1 and 130), one file per target in a directory, the last success read
//! from the database; `follow`'s `/metrics` on the webhook address and on `--metrics-addr`.
//! Every exposition is parsed by the format's rules, not searched for substrings.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text exposition format strictly: every family has `# HELP` then `# TYPE`
/// before its samples, is declared once, every sample belongs to the family declared last
/// (a histogram's `_bucket`, `_sum`, `_count` included), label values are unescaped.
fn parse(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "ends with a newline");
    let mut declared = std::collections::HashSet::new();
    let (mut family, mut kind) = (String::new(), String::new());
    let mut samples = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(declared.insert(name.clone()), "{name} declared twice");
            let ty = lines.next().expect("TYPE after HELP");
            let ty = ty.strip_prefix(&format!("# TYPE {name} ")).expect(ty);
            assert!(["counter", "gauge", "histogram"].contains(&ty), "{ty}");
            (family, kind) = (name, ty.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line}");
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("no value: {line}"),
        };
        let ok = match kind.as_str() {
            "histogram" => [
                family.clone() + "_bucket",
                family.clone() + "_sum",
                family.clone() + "_count",
            ]
            .contains(&name.to_string()),
            _ => name == family,
        };
        assert!(ok, "{name} outside its family {family}");
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(body) = rest.strip_prefix('{') {
            let read = parse_labels(body, &mut labels);
            rest = &body[read..];
        }
        let value = rest.trim();
        let v = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value {v:?} in {line}")),
        };
        samples.push((name.to_string(), labels, v));
    }
    samples
}

/// Labels `k="v",…}`: adds them; returns the bytes read, `}` included.
fn parse_labels(text: &str, labels: &mut BTreeMap<String, String>) -> usize {
    let mut pos = 0;
    loop {
        let eq = text[pos..].find("=\"").unwrap() + pos;
        let key = text[pos..eq].to_string();
        let mut value = String::new();
        let mut it = text[eq + 2..].char_indices();
        let close = loop {
            let (j, c) = it.next().expect("unterminated label value");
            match c {
                '\\' => match it.next().unwrap().1 {
                    'n' => value.push('\n'),
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    other => panic!("bad escape \\{other}"),
                },
                '"' => break eq + 2 + j,
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        match &text[close + 1..close + 2] {
            "," => pos = close + 2,
            "}" => return close + 2,
            other => panic!("after a label: {other}"),
        }
    }
}

/// The value of the sample `name` whose labels include `with`.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

fn prom_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Two targets into one textfile directory: a file each, every series labelled; a failed run
/// (exit 1) keeps the last success the database recorded.
#[tokio::test]
async fn metrics_files_per_target_survive_a_failed_run() {
    let env = Env::new().await;
    fill(env.state(), "archive", "a/", 30);
    fill(env.state(), "archive", "b\"q/", 12);
    let dir = env.dir.path().join("textfile");
    std::fs::create_dir(&dir).unwrap();
    let before = now();
    for url in ["s3://archive/a/", "s3://archive/b\"q/"] {
        let mut cmd = env.scan_cmd(url, &env.db);
        cmd.arg("--metrics-file").arg(&dir);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let files = prom_files(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.ends_with(".prom") && f.starts_with("s3meta_scan_archive_"))
    );
    let mut all = Vec::new();
    for f in &files {
        all.extend(parse(&std::fs::read_to_string(dir.join(f)).unwrap()));
    }
    let store = env.s3().store;
    for (prefix, n) in [("a/", 30.0), ("b\"q/", 12.0)] {
        let l = [
            ("store", store.as_str()),
            ("bucket", "archive"),
            ("prefix", prefix),
        ];
        assert_eq!(value(&all, "s3meta_scan_objects_listed", &l), Some(n));
        assert_eq!(value(&all, "s3meta_scan_objects_headed", &l), Some(n));
        assert_eq!(value(&all, "s3meta_scan_exit_code", &l), Some(0.0));
        let mut lh = l.to_vec();
        lh.push(("operation", "head"));
        assert_eq!(value(&all, "s3meta_scan_requests", &lh), Some(n));
        let last = value(&all, "s3meta_scan_last_success_timestamp_seconds", &l).unwrap();
        assert!(
            last >= before.floor() - 1.0 && last <= now() + 1.0,
            "{last}"
        );
    }
    // Every series carries the three target labels.
    assert!(all.iter().all(|(_, l, _)| {
        ["store", "bucket", "prefix"]
            .iter()
            .all(|k| l.contains_key(*k))
    }));

    // The bucket disappears: exit 1, and the success time is still the first run's.
    let file_a = files
        .iter()
        .find(|f| {
            std::fs::read_to_string(dir.join(f))
                .unwrap()
                .contains("prefix=\"a/\"")
        })
        .unwrap()
        .clone();
    let first = parse(&std::fs::read_to_string(dir.join(&file_a)).unwrap());
    env.state()
        .add_fault(Fault::new(Some(Op::List), Action::Status(404)));
    let mut cmd = env.scan_cmd("s3://archive/a/", &env.db);
    cmd.arg("--metrics-file").arg(&dir);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        prom_files(&dir),
        files,
        "no temporary file left, no new name"
    );
    let again = parse(&std::fs::read_to_string(dir.join(&file_a)).unwrap());
    let l = [("prefix", "a/")];
    assert_eq!(value(&again, "s3meta_scan_exit_code", &l), Some(1.0));
    assert_eq!(
        value(&again, "s3meta_scan_last_success_timestamp_seconds", &l),
        value(&first, "s3meta_scan_last_success_timestamp_seconds", &l)
    );
}

/// An interrupted scan (SIGINT, exit 130) writes its metrics too, to the file it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_scan_writes_its_metrics() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 50);
    env.state().hold(Op::Head, Gate::Released);
    let file = env.dir.path().join("scan.prom");
    let mut cmd = env.scan_cmd("s3://bkt", &env.db);
    // Fewer HEADs in flight than objects: the interrupt leaves some unread.
    cmd.args(["--concurrency", "2"])
        .arg("--metrics-file")
        .arg(&file)
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    env.state().wait_for_requests(Some(Op::Head), 1).await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    env.state().release(Op::Head);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(130));
    let samples = parse(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(
        value(&samples, "s3meta_scan_exit_code", &[("bucket", "bkt")]),
        Some(130.0)
    );
    assert_eq!(
        value(&samples, "s3meta_scan_objects_listed", &[]),
        Some(50.0)
    );
    // No scan of the target ever completed: no success time at all.
    assert_eq!(
        value(&samples, "s3meta_scan_last_success_timestamp_seconds", &[]),
        None
    );
}

/// A bad --metrics-file is refused before anything is scanned.
#[tokio::test]
async fn a_metrics_file_in_a_missing_directory_is_refused() {
    let env = Env::new().await;
    fill(env.state(), "bkt", "", 3);
    let mut cmd = env.scan_cmd("s3://bkt", &env.db);
    cmd.arg("--metrics-file")
        .arg(env.dir.path().join("nope/x.prom"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert_eq!(env.state().requests(Op::List), 0);
}

async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8(answer).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

async fn post(addr: std::net::SocketAddr, body: &str, token: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer)[9..12].parse().unwrap()
}

fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// `follow --listen` answers `GET /metrics` (behind its token) and `--metrics-addr` serves
/// it alone: events applied, lag, the HEAD latency histogram, the webhook's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_serves_metrics() {
    let env = Env::new().await;
    let s = env.state();
    s.create_bucket("bkt");
    s.notify("bkt", Some(true));
    for i in 0..5 {
        s.put_object("bkt", &format!("k/{i}"), b"x", &[("owner", "ann")]);
    }
    let bodies = s.sqs_sent();
    assert_eq!(bodies.len(), 5);
    let (addr, maddr) = (free_port(), free_port());
    let mut cmd = env.bin();
    cmd.args(["follow", "s3://bkt", "--listen", &addr.to_string()])
        .args([
            "--auth-token",
            "s3cret",
            "--metrics-addr",
            &maddr.to_string(),
        ])
        .arg("--db")
        .arg(&env.db)
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(err));
    // Both listeners are bound once both lines are out.
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        assert!(
            line.contains("listening") || line.contains("serving metrics"),
            "{line}"
        );
    }
    std::thread::spawn(move || for _ in lines {});
    for b in &bodies {
        assert_eq!(post(addr, b, "s3cret").await, 200);
    }
    assert_eq!(get(addr, "/metrics", None).await.0, 401);
    let (status, on_listen) = get(addr, "/metrics", Some("s3cret")).await;
    assert_eq!(status, 200);
    let (status, body) = get(maddr, "/metrics", None).await;
    assert_eq!(status, 200);
    assert_eq!(get(maddr, "/", None).await.0, 404);
    for text in [on_listen, body] {
        let samples = parse(&text);
        let l = [("bucket", "bkt"), ("prefix", "")];
        assert_eq!(
            value(&samples, "s3meta_follow_events_applied_total", &l),
            Some(5.0)
        );
        let lag = value(&samples, "s3meta_follow_lag_seconds", &l).unwrap();
        assert!((0.0..600.0).contains(&lag), "{lag}");
        assert_eq!(value(&samples, "s3meta_follow_queue_depth", &l), Some(0.0));
        let heads = value(&samples, "s3meta_follow_head_duration_seconds_count", &l).unwrap();
        // One HEAD per event at least (a key HEADed while the index changed is HEADed again).
        assert!(heads >= 5.0, "{heads}");
        let inf = value(
            &samples,
            "s3meta_follow_head_duration_seconds_bucket",
            &[("le", "+Inf")],
        );
        assert_eq!(inf, Some(heads));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(130));
}
