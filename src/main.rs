//! The s3meta binary: parse the command line, set up logging and signals, run the command,
//! and map its result to the exit code (0 ok, 1 fatal or bad input, 3 finished with object
//! errors, 130 interrupted).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use s3meta::checkpoint::Target;
use s3meta::cli::{Cli, Command, ConnectionArgs, LogFormat, ScanArgs};
use s3meta::client::{self, ClientOptions};
use s3meta::progress::{self, Progress};
use s3meta::retry::Policy;
use s3meta::s3url::S3Url;
use s3meta::scan::{self, Outcome, ScanConfig};
use s3meta::stats::Stats;
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

fn client_options(c: &ConnectionArgs) -> anyhow::Result<ClientOptions> {
    if !(c.timeout > 0.0 && c.timeout.is_finite()) {
        anyhow::bail!("invalid argument: --timeout must be a positive number of seconds");
    }
    Ok(ClientOptions {
        endpoint_url: c.endpoint_url.clone(),
        region: c.region.clone(),
        profile: c.profile.clone(),
        path_style: match (c.path_style, c.virtual_host_style) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        no_sign_request: c.no_sign_request,
        timeout: Duration::from_secs_f64(c.timeout),
    })
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
    let url = S3Url::parse(&args.url)?;
    let s3 = client::build(&client_options(&args.conn)?).await?;
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
    };
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let stats = Arc::new(Stats::default());
    let show = !cli.quiet && !args.no_progress && std::io::stderr().is_terminal();
    let bar = Progress::start(stats.clone(), show);
    let result = scan::run(&cfg, s3.client, &args.db.db, cancel, stats).await;
    bar.finish();
    let report = result?;
    if !cli.quiet {
        eprintln!("{}", progress::summary(&url.to_string(), &report));
    }
    Ok(match report.outcome {
        Outcome::Complete => 0,
        Outcome::CompleteWithErrors => {
            if !cli.quiet {
                eprintln!(
                    "{} object(s) could not be read: see `s3meta status` or the object_errors table",
                    report.errors
                );
            }
            3
        }
        Outcome::Interrupted => {
            eprintln!(
                "interrupted: {} object(s) still to HEAD; run the same command again to resume scan {}",
                report.due, report.scan_id
            );
            130
        }
    })
}
