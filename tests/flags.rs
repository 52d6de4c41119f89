//! Bounded numeric flags and one-line usage errors (issue 13, point 5): every numeric flag has
//! a documented range, a value outside it is refused with one line (plus clap's usage hint on
//! a second line at most) and exit code 1 — never a panic — and nothing is created.

mod common;

use common::*;

/// Runs `args`; returns (exit code, stderr).
async fn run_args(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = env.bin();
    cmd.args(args);
    let out = output(cmd).await;
    (out.status.code(), stderr(&out))
}

fn assert_usage_error(args: &[&str], code: Option<i32>, err: &str, needle: &str) {
    assert_eq!(code, Some(1), "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err:?}"
    );
    assert!(
        err.trim_end().lines().count() <= 2,
        "{args:?}: at most two lines: {err:?}"
    );
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_flags_outside_their_range_are_one_line_errors() {
    let env = Env::new().await;
    let db = env.db.display().to_string();
    // `--flag=value`, so that `-1` is a value and not a flag.
    let mut cases: Vec<(Vec<String>, &str)> = Vec::new();
    let mut case = |cmd: &[&str], flag: &'static str, v: &str| {
        let mut args: Vec<String> = cmd.iter().map(|a| a.to_string()).collect();
        args.push(format!("{flag}={v}"));
        cases.push((args, flag));
    };
    let scan = ["scan", "s3://bkt"];
    for v in [
        "99999999999999999999",
        "1e308",
        "0",
        "-1",
        "nan",
        "inf",
        "3600.5",
    ] {
        case(&scan, "--timeout", v);
    }
    for (flag, bad) in [
        ("--concurrency", ["0", "4097"]),
        ("--list-parallelism", ["0", "257"]),
        ("--page-size", ["0", "1001"]),
        ("--max-attempts", ["0", "101"]),
        ("--max-rps", ["0", "1000001"]),
        ("--backoff-ms", ["20001", "-1"]),
    ] {
        for v in bad {
            case(&scan, flag, v);
        }
    }
    for v in ["-1", "nan", "1e308", "1000.01"] {
        case(&["estimate", "s3://bkt"], "--list-price", v);
        case(&["estimate", "s3://bkt"], "--head-price", v);
    }
    case(&["plan", "s3://bkt"], "--ranges", "0");
    case(&["plan", "s3://bkt"], "--ranges", "100001");
    let huge = "9223372036854775808";
    case(&["query"], "--limit", huge);
    case(&["changes"], "--limit", huge);
    case(&["changes"], "--limit", "-3");
    case(&["status"], "--errors", huge);
    case(&["status"], "--errors", "-1");
    for (mut args, needle) in cases {
        args.extend(["--db".to_string(), db.clone()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, err) = run_args(&env, &args).await;
        assert_usage_error(&args, code, &err, needle);
        assert!(err.contains("invalid value"), "{args:?}: {err}");
    }
    assert!(
        !env.db.exists(),
        "no database is created by a refused command"
    );
    assert_eq!(env.state().requests(Op::List), 0);

    // The bounds themselves are accepted: the command then fails on the URL, not the flag.
    for (flag, v) in [
        ("--timeout", "3600"),
        ("--timeout", "0.001"),
        ("--concurrency", "4096"),
        ("--list-parallelism", "256"),
        ("--max-rps", "1000000"),
        ("--backoff-ms", "0"),
    ] {
        let (code, err) = run_args(&env, &["scan", "s3://x", flag, v, "--db", &db]).await;
        assert_eq!(code, Some(1), "{flag} {v}: {err}");
        assert!(err.contains("invalid S3 URL"), "{flag} {v}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_are_one_line_plus_the_usage_hint() {
    let env = Env::new().await;
    for (args, needle) in [
        (vec!["scan", "s3://bkt", "--no-such-flag"], "--no-such-flag"),
        (vec!["scan"], "<S3_URL>"),
        (vec!["nosuch"], "unrecognized subcommand"),
        (vec![], "no command given"),
        (vec!["query", "--format", "xml"], "possible values"),
        (
            vec!["scan", "s3://bkt", "--path-style", "--virtual-host-style"],
            "cannot be used with",
        ),
        (vec!["scan", "s3://bkt", "--pagesize", "4"], "'--page-size'"),
        (
            vec!["scan", "s3://bkt", "--concurrency"],
            "a value is required",
        ),
        (vec!["completions"], "<SHELL>"),
    ] {
        let (code, err) = run_args(&env, &args).await;
        assert_usage_error(&args, code, &err, needle);
    }
    // --help and --version are not errors.
    let mut help = env.bin();
    help.args(["scan", "--help"]);
    let out = output(help).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("--timeout <SECS>"));
}
