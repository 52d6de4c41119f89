//! Standalone test server for the demo and the benchmark:
//! `s3meta-test-server [--objects N] [--latency-ms MS] [--port P] [--bucket NAME]`.
//!
//! Fills bucket NAME (default `demo`) with N generated objects, prints exactly one line,
//! `endpoint=http://127.0.0.1:PORT`, to stdout once it accepts connections, and serves
//! until killed. Invariant: nothing else is written to stdout, so a parent can read that
//! line and go.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use s3meta_testserver::{State, TestServer};

struct Args {
    objects: usize,
    latency_ms: u64,
    port: u16,
    bucket: String,
}

const USAGE: &str =
    "usage: s3meta-test-server [--objects N] [--latency-ms MS] [--port P] [--bucket NAME]";

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        objects: 0,
        latency_ms: 0,
        port: 0,
        bucket: "demo".to_owned(),
    };
    while let Some(flag) = argv.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = argv
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}\n{USAGE}");
        match flag.as_str() {
            "--objects" => args.objects = value.parse().map_err(bad)?,
            "--latency-ms" => args.latency_ms = value.parse().map_err(bad)?,
            "--port" => args.port = value.parse().map_err(bad)?,
            "--bucket" => args.bucket = value,
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::FAILURE;
        }
    };
    let state = State::new();
    state.create_bucket(&args.bucket);
    state.fill(&args.bucket, args.objects, 0x5e3d);
    state.set_latency(None, Duration::from_millis(args.latency_ms));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let server = match TestServer::start_with(state, Some(addr)).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "endpoint={}", server.endpoint())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(stdout);
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn parses_flags_and_defaults() {
        let a = parse("").unwrap();
        assert_eq!(
            (a.objects, a.latency_ms, a.port, a.bucket.as_str()),
            (0, 0, 0, "demo")
        );
        let a = parse("--objects 10 --latency-ms 5 --port 9000 --bucket b").unwrap();
        assert_eq!(
            (a.objects, a.latency_ms, a.port, a.bucket.as_str()),
            (10, 5, 9000, "b")
        );
        assert!(parse("--objects x").is_err());
        assert!(parse("--port").is_err());
        assert!(parse("--nope 1").is_err());
    }
}
