//! The s3meta binary: parse the command line, set up logging and signals, run the command,
//! and map its result to the exit code.
//!
//! Receives: the arguments, SIGINT and SIGTERM. Sends on: the command's output, and an exit
//! code (0 ok, 1 fatal or bad input, 3 finished with object errors, 130 interrupted).
//! Invariant: every failure ends as one line on stderr (`error: …`) and exit code 1.

#![recursion_limit = "256"]

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

mod cli;
use crate::cli::{Cli, Command, LogFormat, commands};
use tokio_util::sync::CancellationToken;

/// A scan allocates and frees small objects on every request (the SDK's per-request config
/// layers, headers, futures) across threads; glibc malloc spent ~17% of the client's CPU on
/// that, mimalloc about a quarter of it (see the README's performance section). `no_thp`:
/// transparent huge pages would double the peak RSS.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            eprint!("{}", crate::cli::usage_error(&e));
            return ExitCode::from(1);
        }
        Err(e) => {
            // --help and --version: clap prints them to stdout.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let color = cli::ui::color_wanted(
        cli.color,
        std::io::stderr().is_terminal(),
        std::env::var("NO_COLOR").ok().as_deref(),
    );
    cli::ui::Ui {
        quiet: cli.quiet,
        json: cli.log_format == LogFormat::Json,
    }
    .install();
    init_logging(&cli, color);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(async {
        match cli.command {
            Command::Scan(ref a) => commands::scan(a, cli.quiet, signals()).await,
            Command::Estimate(ref a) => commands::estimate(a, signals()).await,
            Command::Follow(ref a) => commands::follow(a, cli.quiet, signals()).await,
            Command::Plan(ref a) => commands::plan(a, signals()).await,
            Command::Merge(ref a) => commands::merge(a, cli.quiet),
            Command::Completions { shell } => {
                commands::completions(shell);
                Ok(0)
            }
            Command::Man { ref dir } => commands::man(dir.as_deref()).map(|()| 0),
            Command::Changes(ref a) => commands::changes(a),
            Command::Forget(ref a) => commands::forget(a, cli.quiet).await,
            Command::Check(ref a) => commands::check(a, cli.quiet).await,
            Command::Query(ref a) => commands::query(a),
            Command::Export(ref a) => cli::export::export(a, cli.quiet, signals()).await,
            Command::Names(ref a) => commands::names(a),
            Command::Status(ref a) => commands::status(a),
        }
    });
    // In-flight HEADs abandoned after the grace period must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match code {
        Ok(code) => ExitCode::from(code),
        Err(s3meta::Error::Interrupted) => {
            cli::ui::notice(cli::ui::stop_word());
            ExitCode::from(130)
        }
        Err(e) => {
            // Our messages carry their context; `{:#}` would repeat causes they already name.
            cli::ui::error(&e.to_string());
            ExitCode::from(1)
        }
    }
}

fn init_logging(cli: &Cli, color: bool) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        // The SDK's own warnings (e.g. no instance metadata for the region) only with -v.
        (false, 0) => "s3meta=warn,error",
        (false, 1) => "s3meta=info,warn",
        (false, 2) => "s3meta=debug,info",
        _ => "trace",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .with_writer(crate::cli::progress::LogWriter);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

/// A token cancelled on the first Ctrl-C or SIGTERM; a second Ctrl-C exits at once.
fn signals() -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        // Cancel safety: both are signal streams; losing the other branch loses nothing.
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::warn!(
                    "interrupted (Ctrl-C): finishing in-flight requests and committing (Ctrl-C again to quit now)"
                );
            }
            _ = term.recv() => {
                cli::ui::set_terminated();
                tracing::warn!("terminated (SIGTERM): finishing in-flight requests and committing");
            }
        }
        cancel.cancel();
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
    token
}
