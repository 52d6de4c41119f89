//! The s3meta binary: parse the command line, set up logging and signals, run the command,
//! and map its result to the exit code (0 ok, 1 fatal or bad input, 3 finished with object
//! errors, 130 interrupted).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use s3meta::checkpoint::Target;
use s3meta::cli::{Cli, Command, LogFormat, ScanArgs};
use s3meta::client;
use s3meta::progress::{self, Progress};
use s3meta::retry::Policy;
use s3meta::s3url::S3Url;
use s3meta::scan::{self, Outcome, ScanConfig, ScanReport};
use s3meta::stats::Stats;
use s3meta::summary::Summary;
use std::io::IsTerminal;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    init_logging(&cli);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(async {
        match cli.command {
            Command::Scan(ref args) => run_scan(&cli, args).await,
            Command::Forget(ref args) => s3meta::forget::run(args, cli.quiet)
                .map(|()| 0)
                .map_err(Into::into),
        }
    });
    // In-flight HEADs abandoned after the grace period must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match code {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "s3meta=info,warn",
        (false, 2) => "s3meta=debug,info",
        _ => "trace",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

/// Cancels the token on the first Ctrl-C or SIGTERM; a second Ctrl-C exits at once.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::warn!(
            "interrupted: finishing in-flight requests and committing (Ctrl-C again to quit now)"
        );
        cancel.cancel();
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}

async fn run_scan(cli: &Cli, args: &ScanArgs) -> anyhow::Result<u8> {
    let (started, stats) = (Instant::now(), Arc::new(Stats::default()));
    let mut target = None;
    let result = scan_once(cli, args, &stats, &mut target).await;
    let code = match &result {
        Ok(r) => match r.outcome {
            Outcome::Complete => 0,
            Outcome::CompleteWithErrors => 3,
            Outcome::Interrupted => 130,
        },
        Err(_) => 1,
    };
    if let Some(dest) = &args.summary_json {
        let error = result.as_ref().err().map(|e| format!("{e:#}"));
        let outcome = result
            .as_ref()
            .map_err(|_| error.as_deref().unwrap_or_default());
        let doc = Summary::new(
            target.as_ref(),
            outcome,
            code,
            &stats.snapshot(),
            started.elapsed(),
        );
        doc.write(dest)
            .map_err(|e| anyhow::anyhow!("cannot write --summary-json {}: {e}", dest.display()))?;
    }
    let report = result?;
    match report.outcome {
        Outcome::CompleteWithErrors if !cli.quiet => {
            eprintln!(
                "{} object(s) could not be read: see `s3meta status` or the object_errors table",
                report.errors
            )
        }
        Outcome::Interrupted => eprintln!(
            "interrupted: {} object(s) still to HEAD; run the same command again to resume scan {}",
            report.due, report.scan_id
        ),
        _ => {}
    }
    Ok(code)
}

async fn scan_once(
    cli: &Cli,
    args: &ScanArgs,
    stats: &Arc<Stats>,
    target: &mut Option<Target>,
) -> anyhow::Result<ScanReport> {
    let url = S3Url::parse(&args.url)?;
    let s3 = client::build(&args.conn.options()?).await?;
    let cfg = ScanConfig {
        target: Target {
            store: s3.store.clone(),
            bucket: url.bucket.clone(),
            prefix: url.prefix.clone(),
            start_after: None,
            end_key: None,
        },
        concurrency: args.concurrency as usize,
        page_size: args.page_size,
        policy: Policy {
            max_attempts: args.max_attempts,
            base: Duration::from_millis(args.backoff_ms),
            cap: Duration::from_secs(20),
        },
        restart: args.restart,
        full: args.full,
        grace: Duration::from_secs(10),
        max_rps: args.max_rps,
    };
    *target = Some(cfg.target.clone());
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let show = !cli.quiet && !args.no_progress && std::io::stderr().is_terminal();
    let bar = Progress::start(stats.clone(), show);
    let result = scan::run(&cfg, s3.client, &args.db.db, cancel, stats.clone()).await;
    bar.finish();
    let report = result?;
    if !cli.quiet {
        eprintln!("{}", progress::summary(&url.to_string(), &report));
    }
    Ok(report)
}
