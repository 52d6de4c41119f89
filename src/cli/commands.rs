//! The glue of every subcommand: from parsed arguments to the library calls, the progress
//! line, the summary line and document, stdout, and the exit code.
//!
//! Receives: clap arguments and the process's cancellation token. Sends on: an exit code
//! (0 ok, 3 complete with object errors, 130 interrupted) or the fatal `Error` (exit 1).
//! Invariant: `--summary-json` is written however the scan ends, fatal errors included.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use tokio_util::sync::CancellationToken;

use crate::cli::progress::{self, Progress};
use crate::cli::summary::Summary;
use crate::cli::ui;
use crate::cli::{
    ChangesArgs, CheckArgs, Cli, DocFormatArg, EstimateArgs, FollowArgs, ForgetArgs, MergeArgs,
    NamesArgs, PlanArgs, QueryArgs, ScanArgs, SplitRanges, StatusArgs, TagsArg,
};
use s3meta::error::Error;
use s3meta::keys::Bounds;
use s3meta::model::RangeLine;
use s3meta::model::Target;
use s3meta::model::s3url::S3Url;
use s3meta::model::stats::Stats;
use s3meta::model::words;
use s3meta::read::estimate;
use s3meta::s3::client;
use s3meta::s3::list::Lister;
use s3meta::s3::retry::Policy;
use s3meta::scan::{self, Outcome, ScanConfig, ScanReport};

/// `s3meta scan`.
pub async fn scan(args: &ScanArgs, quiet: bool, cancel: CancellationToken) -> Result<u8, Error> {
    let (started, stats) = (Instant::now(), Arc::new(Stats::default()));
    if let Some(dest) = &args.summary_json {
        Summary::check_writable(dest).map_err(|source| Error::SummaryPath {
            path: dest.clone(),
            source,
        })?;
    }
    if let Some(path) = &args.metrics_file {
        crate::cli::metrics::check(path)?;
    }
    let mut target = None;
    let result = scan_once(args, quiet, cancel, &stats, &mut target).await;
    let code = match &result {
        Ok(r) => match r.outcome {
            Outcome::Complete => 0,
            Outcome::CompleteWithErrors => 3,
            Outcome::Interrupted => 130,
        },
        Err(_) => 1,
    };
    let ui = ui::Ui::get();
    if args.summary_json.is_some() || (ui.json && !ui.quiet) {
        let error = result.as_ref().err().map(ToString::to_string);
        let outcome = result
            .as_ref()
            .map_err(|_| error.as_deref().unwrap_or_default());
        let scan = stats.scan.get().copied();
        let doc = Summary::new(
            target.as_ref(),
            outcome,
            code,
            &stats.snapshot(),
            scan,
            stats.head_due.get().copied(),
            started.elapsed(),
        );
        if ui.json && !ui.quiet {
            ui::json_line(&serde_json::json!({ "summary": doc }));
        }
        if let Some(dest) = &args.summary_json {
            doc.write(dest).map_err(|source| Error::Write {
                path: dest.clone(),
                source,
            })?;
        }
    }
    if let (Some(path), Some(target)) = (&args.metrics_file, &target) {
        let run = s3meta::read::metrics::ScanRun {
            target,
            stats: stats.snapshot(),
            duration: started.elapsed(),
            exit_code: code,
            ended_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        };
        crate::cli::metrics::write(path, &args.db.db, &run)?;
    }
    let report = result?;
    if !ui.json {
        ui::notice(&progress::summary(&scan_url(args)?.to_string(), &report));
    }
    match report.outcome {
        Outcome::CompleteWithErrors => ui::notice(&format!(
            "{} could not be read: see `s3meta status` or `s3meta query --where @error`",
            words::count(report.errors as u64, "object")
        )),
        Outcome::Interrupted => ui::notice(&format!(
            "{}: {} still to HEAD; run the same command again to resume scan {}",
            ui::stop_word(),
            words::count(report.due.max(0) as u64, "object"),
            report.scan_id
        )),
        _ => {}
    }
    Ok(code)
}

/// The URL a scan's summary names.
fn scan_url(args: &ScanArgs) -> Result<S3Url, Error> {
    scan_target(args).map(|(url, _)| url)
}

async fn scan_once(
    args: &ScanArgs,
    quiet: bool,
    cancel: CancellationToken,
    stats: &Arc<Stats>,
    target: &mut Option<Target>,
) -> Result<ScanReport, Error> {
    let (url, range) = scan_target(args)?;
    let s3 = client::build(&args.conn.options()?).await?;
    let cfg = ScanConfig {
        target: Target {
            versions: args.all_versions,
            ..match &range {
                Some(r) => r.target(&s3.store),
                None => target_of(&url, &s3.store),
            }
        },
        concurrency: args.concurrency as usize,
        page_size: args.page_size,
        policy: policy(args.max_attempts, args.backoff_ms),
        restart: args.restart,
        full: args.full,
        grace: Duration::from_secs(10),
        max_rps: args.max_rps,
        list_parallelism: args.list_parallelism as usize,
        splits: match args.split_ranges {
            SplitRanges::Auto => scan::Splits::WhenListingBound,
            SplitRanges::Always => scan::Splits::Always,
        },
        bounds_order: range.as_ref().and_then(|r| r.order),
        tags: args.tags.map(TagsArg::mode),
        trust_tag_count: args.trust_tag_count,
    };
    *target = Some(cfg.target.clone());
    let show = !quiet && !args.no_progress && std::io::stderr().is_terminal();
    let bar = Progress::start(stats.clone(), show);
    let result = scan::run(&cfg, s3, &args.db.db, cancel, stats.clone()).await;
    bar.finish();
    result
}

/// The URL to scan and, with `--range-json`, the key range (which names bucket and prefix).
fn scan_target(args: &ScanArgs) -> Result<(S3Url, Option<RangeLine>), Error> {
    let range = args
        .range_json
        .as_deref()
        .map(RangeLine::parse)
        .transpose()?;
    let url = match (&args.url, &range) {
        (Some(u), _) => S3Url::parse(u)?,
        (None, Some(r)) => S3Url {
            bucket: r.bucket.clone(),
            prefix: r.prefix.clone(),
        },
        (None, None) => {
            return Err(Error::BadInput(
                "give s3://BUCKET[/PREFIX] or --range-json".into(),
            ));
        }
    };
    if let Some(r) = &range
        && (r.bucket != url.bucket || r.prefix != url.prefix)
    {
        return Err(Error::BadInput(format!(
            "--range-json is a range of s3://{}/{}, not of {url}",
            r.bucket, r.prefix
        )));
    }
    Ok((url, range))
}

/// `s3meta plan`: prints the ranges, one JSON object per line.
pub async fn plan(args: &PlanArgs, cancel: CancellationToken) -> Result<u8, Error> {
    let url = S3Url::parse(&args.url)?;
    let s3 = client::build(&args.conn.options()?).await?;
    let lister = lister_for(&url, s3, cancel);
    let whole = Bounds {
        start_after: None,
        end: None,
    };
    let ranges = s3meta::s3::probe::plan(&lister, whole, args.ranges as usize).await?;
    let order = lister.order.known();
    for line in RangeLine::lines(&url.bucket, &url.prefix, &ranges, order) {
        println!("{}", serde_json::to_string(&line).expect("serializable"));
    }
    Ok(0)
}

/// `s3meta merge`.
pub fn merge(args: &MergeArgs, quiet: bool) -> Result<u8, Error> {
    let inputs: Vec<&std::path::Path> = args.inputs.iter().map(|p| p.as_path()).collect();
    let m = s3meta::store::merge::merge(&args.out, &inputs)?;
    if !quiet {
        ui::notice(&format!(
            "merged {} into {}: {}, {}",
            words::count(inputs.len() as u64, "database"),
            args.out.display(),
            words::count(m.keyspaces as u64, "keyspace"),
            words::count(m.objects as u64, "object")
        ));
    }
    Ok(0)
}

/// `s3meta check`: the problems on stdout, one per line, then a summary line; exit 1 if any.
pub async fn check(args: &CheckArgs, quiet: bool) -> Result<u8, Error> {
    let progress = Arc::new(s3meta::store::check::CheckProgress::default());
    let show = !quiet && !args.no_progress && std::io::stderr().is_terminal();
    let bar = Progress::start_check(progress.clone(), show);
    let path = args.db.db.clone();
    let p = progress.clone();
    let report = tokio::task::spawn_blocking(move || s3meta::store::check::run(&path, &p))
        .await
        .map_err(|e| Error::Internal(format!("check: {e}")))?;
    bar.finish();
    let r = report?;
    let path = args.db.db.display();
    for p in &r.problems {
        println!("{}", s3meta::read::output::escape_controls(p));
    }
    if r.problems_total > r.problems.len() as u64 {
        println!(
            "… and {} more",
            progress::thousands(r.problems_total - r.problems.len() as u64)
        );
    }
    if r.problems_total > 0 {
        return Err(Error::Damaged {
            path: args.db.db.clone(),
            problems: r.problems_total,
        });
    }
    println!(
        "{path}: ok ({} pages, {} objects, {} scans): SQLite's integrity_check and s3meta's invariants hold",
        progress::thousands(r.pages),
        progress::thousands(r.objects),
        progress::thousands(r.scans)
    );
    Ok(0)
}

/// `s3meta forget`: the store is resolved as `scan` resolves it (no request is sent).
pub async fn forget(args: &ForgetArgs, quiet: bool) -> Result<u8, Error> {
    let store = match &args.url {
        Some(_) => {
            let opts = client::ClientOptions {
                endpoint_url: args.endpoint_url.clone(),
                profile: args.profile.clone(),
                ..client::ClientOptions::default()
            };
            Some(client::store_of(&opts).await?)
        }
        None => None,
    };
    let report = s3meta::store::forget::run(&args.options(), store.as_deref())?;
    if !quiet {
        for line in report.done {
            ui::notice(&line);
        }
    }
    Ok(0)
}

fn lister_for(url: &S3Url, s3: client::S3, cancel: CancellationToken) -> Lister {
    Lister {
        client: s3.client,
        store: s3.store,
        bucket: url.bucket.clone(),
        prefix: url.prefix.clone(),
        page_size: 1000,
        policy: policy(5, 100),
        stats: Arc::new(Stats::default()),
        cancel,
        rate: None,
        order: Arc::new(s3meta::s3::list::Order::new(None)),
        witnesses: Default::default(),
        versions: false,
        first: Default::default(),
    }
}

fn target_of(url: &S3Url, store: &str) -> Target {
    Target {
        store: store.to_string(),
        bucket: url.bucket.clone(),
        prefix: url.prefix.clone(),
        start_after: None,
        end_key: None,
        versions: false,
    }
}

fn policy(max_attempts: u32, backoff_ms: u64) -> Policy {
    Policy::new(max_attempts, Duration::from_millis(backoff_ms))
}

/// `s3meta estimate`: prints the estimate on stdout.
pub async fn estimate(args: &EstimateArgs, cancel: CancellationToken) -> Result<u8, Error> {
    let url = S3Url::parse(&args.url)?;
    let s3 = client::build(&args.conn.options()?).await?;
    let target = Target {
        versions: args.all_versions,
        ..target_of(&url, &s3.store)
    };
    let lister = Arc::new(Lister {
        versions: args.all_versions,
        ..lister_for(&url, s3, cancel)
    });
    let e = estimate::run(
        lister,
        &target,
        &args.db,
        (args.list_price, args.head_price),
    )
    .await?;
    let text = match (args.json, args.format) {
        (true, _) | (_, DocFormatArg::Json) => {
            serde_json::to_string_pretty(&e).expect("serializable")
        }
        (false, DocFormatArg::Table) => estimate_text(&url, &e),
    };
    println!("{text}");
    Ok(0)
}

fn estimate_text(url: &S3Url, e: &estimate::Estimate) -> String {
    let n = progress::thousands;
    let listed = if e.all_versions {
        format!(
            "{} ({} of them delete markers)",
            words::count(e.objects, "version"),
            n(e.delete_markers)
        )
    } else {
        words::count(e.objects, "object")
    };
    let mut out = format!(
        "{url}: {listed} in {}\nfull scan: {} LIST + {}, ${:.4}",
        words::count(e.list_requests, "LIST request"),
        n(e.list_requests),
        words::count(e.full_heads, "HEAD request"),
        e.full_cost_usd
    );
    match (e.rescan_heads, e.rescan_cost_usd) {
        (Some(heads), Some(cost)) => out.push_str(&format!(
            "\nrescan:    {} LIST + {}, ${cost:.4}  (what `s3meta scan` would do now, split probes aside)",
            n(e.list_requests),
            words::count(heads, "HEAD request")
        )),
        _ => out.push_str("\nno completed scan of this prefix in the database: the next scan is a full scan"),
    }
    let tag_cost = |n: u64| n as f64 * e.head_price / 1000.0;
    out.push_str(&format!(
        "\n--tags adds at most {} GetObjectTagging to a full scan (${:.4})",
        n(e.tags_full),
        tag_cost(e.tags_full)
    ));
    if let (Some(all), Some(skip)) = (e.tags_rescan, e.tags_rescan_skip_unchanged) {
        out.push_str(&format!(
            ", {} to a rescan (${:.4}; --tags=skip-unchanged: {}, ${:.4})",
            n(all),
            tag_cost(all),
            n(skip),
            tag_cost(skip)
        ));
    }
    out
}

/// `s3meta completions SHELL`.
/// `query`: the index searched offline, written to stdout.
pub fn query(args: &QueryArgs) -> Result<u8, Error> {
    let opts = args.options()?;
    for f in &opts.filters {
        // A filter that does not parse is refused by the query itself, with the accepted forms.
        if let Some(doubt) = s3meta::read::query::filter::Filter::parse(f)
            .ok()
            .and_then(|f| f.doubt())
        {
            ui::warn(&doubt);
        }
    }
    if opts.sql.is_none() {
        note_unread(
            &opts.db,
            opts.bucket.as_deref(),
            opts.prefix.as_deref(),
            opts.all_versions,
        )?;
    }
    to_stdout(|out, tty| s3meta::read::query::run(&opts, out, tty)).map(|()| 0)
}

/// `names`: the metadata names in the index.
pub fn names(args: &NamesArgs) -> Result<u8, Error> {
    let opts = args.options()?;
    note_unread(
        &opts.db,
        opts.bucket.as_deref(),
        opts.prefix.as_deref(),
        false,
    )?;
    to_stdout(|out, tty| s3meta::read::names::run(&opts, out, tty)).map(|()| 0)
}

/// `changes`: what the rescans recorded.
pub fn changes(args: &ChangesArgs) -> Result<u8, Error> {
    let opts = args.options()?;
    note_unread(
        &opts.db,
        opts.bucket.as_deref(),
        opts.prefix.as_deref(),
        false,
    )?;
    to_stdout(|out, tty| s3meta::read::changes::run(&opts, out, tty)).map(|()| 0)
}

/// One line on stderr when an unfinished scan has listed objects in the scope without reading
/// them yet: the answer that follows treats their metadata as unknown, and the line says how
/// many there are and the command that reads them.
fn note_unread(
    db: &std::path::Path,
    bucket: Option<&str>,
    prefix: Option<&str>,
    versions: bool,
) -> Result<(), Error> {
    let Some(unread) = s3meta::read::unfinished::in_scope(db, bucket, prefix, versions)? else {
        return Ok(());
    };
    ui::warn(&unread_line(db, &unread));
    Ok(())
}

fn unread_line(db: &std::path::Path, u: &s3meta::read::unfinished::Unread) -> String {
    let objects = if u.scans.first().is_some_and(|s| s.versions) {
        words::count(u.objects as u64, "version")
    } else {
        words::count(u.objects as u64, "object")
    };
    let head = format!("{objects} listed but not read yet (metadata unknown, shown as null)");
    let Some(scan) = u.scans.first() else {
        return format!(
            "{head}: `s3meta status --db {}` shows the scans",
            db.display()
        );
    };
    let what = match scan.state {
        s3meta::model::ScanState::Running => {
            format!("scan {} is running (or was killed)", scan.scan_id)
        }
        _ => format!("scan {} was interrupted", scan.scan_id),
    };
    if scan.range {
        return format!(
            "{head}: {what}; run its `s3meta scan --range-json` line again to finish it"
        );
    }
    let mut cmd = format!("s3meta scan s3://{}/{}", scan.bucket, scan.prefix);
    if scan.store != client::AWS_STORE {
        cmd.push_str(&format!(" --endpoint-url {}", scan.store));
    }
    if scan.versions {
        cmd.push_str(" --all-versions");
    }
    if db != std::path::Path::new("s3meta.db") {
        cmd.push_str(&format!(" --db {}", db.display()));
    }
    let more = match u.scans.len() {
        1 => String::new(),
        n => format!(" ({} unfinished in all)", words::count(n as u64, "scan")),
    };
    format!("{head}: {what}{more}; finish it with `{cmd}`")
}

/// `status`: the scans of a database.
pub fn status(args: &StatusArgs) -> Result<u8, Error> {
    to_stdout(|out, _| s3meta::read::status::run(&args.options(), out)).map(|()| 0)
}

pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "s3meta", &mut std::io::stdout());
}

/// `s3meta man`: the page of s3meta on stdout, or with `--dir` one page per subcommand.
pub fn man(dir: Option<&std::path::Path>) -> Result<(), Error> {
    let write_err = |path: std::path::PathBuf| move |source| Error::Write { path, source };
    let Some(dir) = dir else {
        return clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(write_err("stdout".into()));
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir.to_path_buf()))?;
    let cmd = Cli::command();
    let mut pages = vec![("s3meta.1".to_string(), clap_mangen::Man::new(cmd.clone()))];
    for sub in cmd.get_subcommands() {
        let name = format!("s3meta-{}", sub.get_name());
        let mut sub = sub.clone().name(name.clone()).display_name(name.clone());
        if sub.get_name() == "s3meta-query" {
            sub = sub.after_long_help(crate::cli::QUERY_GRAMMAR);
        }
        pages.push((format!("{name}.1"), clap_mangen::Man::new(sub)));
    }
    for (file, page) in pages {
        let path = dir.join(file);
        let mut buf = Vec::new();
        page.render(&mut buf).map_err(write_err(path.clone()))?;
        std::fs::write(&path, buf).map_err(write_err(path.clone()))?;
    }
    Ok(())
}

/// Runs `body` on a buffered stdout (told whether it is a terminal) and flushes it. A closed
/// pipe (`s3meta query | head`) is the reader's way of saying "enough": it ends in success.
fn to_stdout(body: impl FnOnce(&mut dyn Write, bool) -> Result<(), Error>) -> Result<(), Error> {
    let stdout = io::stdout();
    let terminal = stdout.is_terminal();
    let mut out = BufWriter::new(stdout.lock());
    let result = body(&mut out, terminal).and_then(|()| out.flush().map_err(Error::Output));
    match result {
        Err(Error::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// `s3meta follow`: applies the store's event notifications until stopped (130), or with
/// `--once` until the queue is empty (0; 3 when a message was malformed or a HEAD failed).
pub async fn follow(
    args: &FollowArgs,
    quiet: bool,
    cancel: CancellationToken,
) -> Result<u8, Error> {
    if let Some(dest) = &args.summary_json {
        Summary::check_writable(dest).map_err(|source| Error::SummaryPath {
            path: dest.clone(),
            source,
        })?;
    }
    let started = Instant::now();
    let mut report = None;
    let result = follow_once(args, cancel.clone(), &mut report).await;
    let code = match &result {
        Ok(()) if cancel.is_cancelled() => 130,
        Ok(()) => {
            let r = report.as_ref();
            if r.is_some_and(|r| r.malformed > 0 || r.failed > 0) {
                3
            } else {
                0
            }
        }
        Err(Error::Interrupted) => 130,
        Err(_) => 1,
    };
    if let Some(dest) = &args.summary_json {
        let doc = serde_json::json!({
            "command": "follow",
            "target": args.url,
            "exit_code": code,
            "error": result.as_ref().err().map(ToString::to_string),
            "elapsed_secs": started.elapsed().as_secs_f64(),
            "follow": report,
        });
        let mut text = serde_json::to_string_pretty(&doc).expect("serializable");
        text.push('\n');
        let written = if dest.as_os_str() == "-" {
            io::stdout().lock().write_all(text.as_bytes())
        } else {
            std::fs::write(dest, text)
        };
        written.map_err(|source| Error::Write {
            path: dest.clone(),
            source,
        })?;
    }
    match result {
        Err(Error::Interrupted) => {}
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    if let (Some(r), false) = (&report, quiet) {
        ui::notice(&follow_line(&args.url, r, started.elapsed()));
    }
    Ok(code)
}

fn follow_line(url: &str, r: &scan::follow::FollowReport, elapsed: Duration) -> String {
    let n = progress::thousands;
    let c = words::count;
    let mut line = format!(
        "{url}: {}, {} applied ({} stale, {} ignored), {}, {} in {:.1} s (follow session {})",
        c(r.messages, "message"),
        c(r.events_applied, "event"),
        n(r.events_stale),
        n(r.events_ignored),
        c(r.changes, "change"),
        c(r.heads, "HEAD"),
        elapsed.as_secs_f64(),
        r.scan_id
    );
    if r.malformed > 0 {
        line.push_str(&format!(
            "; {} left in the queue",
            c(r.malformed, "malformed message")
        ));
    }
    if r.failed > 0 {
        line.push_str(&format!(
            "; {} could not be read (recorded in error)",
            c(r.failed, "object")
        ));
    }
    line
}

async fn follow_once(
    args: &FollowArgs,
    cancel: CancellationToken,
    report: &mut Option<scan::follow::FollowReport>,
) -> Result<(), Error> {
    use scan::follow::{FollowConfig, Follower};
    let url = S3Url::parse(&args.url)?;
    if let Some(addr) = args.listen {
        if !addr.ip().is_loopback() && !args.allow_remote {
            return Err(Error::BadInput(format!(
                "--listen {addr} is not a loopback address: add --allow-remote and --auth-token to accept events from other hosts"
            )));
        }
        if !addr.ip().is_loopback() && args.auth_token.is_none() {
            return Err(Error::BadInput(format!(
                "--listen {addr} with --allow-remote needs --auth-token (a shared secret senders send)"
            )));
        }
    }
    let opts = args.conn.options()?;
    let s3 = client::build(&opts).await?;
    let cfg = FollowConfig {
        target: target_of(&url, &s3.store),
        concurrency: args.concurrency as usize,
        policy: policy(args.max_attempts, 100),
        tags: args.tags.then_some(s3meta::model::TagsMode::SkipUnchanged),
        trust_tag_count: args.trust_tag_count,
        batch: args.batch as usize,
    };
    let queue = match &args.sqs_queue_url {
        Some(q) => Some(
            s3meta::s3::queue::Queue::connect(&opts, q, args.sqs_endpoint_url.as_deref()).await?,
        ),
        None => None,
    };
    let stats = Arc::new(Stats::default());
    let mut follower = Follower::start(cfg, &s3, &args.db.db, cancel.clone(), stats).await?;
    let metrics_server = match args.metrics_addr {
        Some(addr) => Some(
            crate::cli::webhook::serve_metrics(addr, follower.metrics.clone(), cancel.clone())
                .await?,
        ),
        None => None,
    };
    let tick = |r: &scan::follow::FollowReport, depth: Option<u64>| {
        tracing::info!(
            "follow: {} events applied, {} stale, {} ignored, lag {}, queue depth {}",
            r.events_applied,
            r.events_stale,
            r.events_ignored,
            r.lag_secs.map_or("-".to_string(), |l| format!("{l:.1} s")),
            depth.map_or("-".to_string(), |d| d.to_string())
        );
    };
    let result = match (&queue, args.listen) {
        (Some(q), _) => {
            scan::follow::run_sqs(&mut follower, q, args.wait_seconds, args.once, tick).await
        }
        (None, Some(addr)) => {
            crate::cli::webhook::serve(&mut follower, addr, args.auth_token.clone(), tick).await
        }
        (None, None) => unreachable!("clap requires a source"),
    };
    if let Some(server) = metrics_server {
        server.abort();
    }
    let last_error = result.as_ref().err().map(ToString::to_string);
    let finished = follower.finish(last_error).await;
    match finished {
        Ok(r) => *report = Some(r),
        Err(e) if result.is_ok() => return Err(e),
        Err(_) => {}
    }
    result
}
