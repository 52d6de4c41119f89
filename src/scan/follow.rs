//! `follow`: keeping the index live from the store's event notifications, between the nightly
//! rescans that stay its safety net.
//!
//! Receives: S3 event messages (an SQS queue, or webhook POSTs handed over by the binary).
//! Sends on: per batch, one transaction (`writer::apply_follow`) with what a HEAD made after
//! the events says of each key they name; then, and only then, the messages' deletion (or the
//! webhook's 200). Invariants:
//! - delivery is at least once and out of order: an event no newer than the key's stored
//!   sequencer is stale; without sequencers a HEAD made after the event decides, for removals
//!   too (404: gone; 200: the object as it is now), so applying a message twice, or late,
//!   cannot change the result;
//! - one writer: the database's lock is taken for each commit only, so a nightly `scan` runs
//!   beside `follow` (while it holds the lock, events wait in the queue); HEADs made before a
//!   scan committed anything are made again (`scans_fingerprint`), so a scan's newer answer is
//!   never overwritten with an older one;
//! - a malformed message (not JSON, an unknown event name, a key that does not decode) is
//!   logged, counted and never deleted: the queue's redrive policy decides its fate.

pub mod metrics;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::model::event::{self, Message, S3Event, sequencer_cmp};
use crate::model::stats::{Snapshot, Stats};
use crate::model::{HeadJob, HeadResult, TagsMode, Target, Work, WriterMsg};
use crate::s3::client::S3;
use crate::s3::head::HeadPool;
use crate::s3::queue::{Queue, RECEIVE_MAX};
use crate::s3::retry::Policy;
use crate::store::scans::{self, FollowSession};
use crate::store::writer::{self, FollowItem, WriterCtx};
use crate::store::{db, lock};

/// What `follow` is asked.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// The objects followed (current versions: `versions` is false).
    pub target: Target,
    /// HEAD requests in flight at most.
    pub concurrency: usize,
    pub policy: Policy,
    /// `--tags`: read the tags of the objects events name (and on ObjectTagging events).
    pub tags: Option<TagsMode>,
    pub trust_tag_count: bool,
    /// Messages applied per commit at most.
    pub batch: usize,
}

/// What a `follow` run did, for its summary and its log line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowReport {
    /// The session's id in `scans` (its change rows carry it).
    pub scan_id: i64,
    pub messages: u64,
    pub events_applied: u64,
    /// Outside the target, test events, kinds that mean nothing to the index.
    pub events_ignored: u64,
    /// Older than what the index holds (by the key's sequencer): changed nothing.
    pub events_stale: u64,
    /// Messages that are not S3 events (left in the queue).
    pub malformed: u64,
    /// Change rows written.
    pub changes: u64,
    pub heads: u64,
    /// Objects whose HEAD failed for good (recorded in error; the next rescan reads them).
    pub failed: u64,
    /// Seconds between the newest applied event's time and its commit.
    pub lag_secs: Option<f64>,
    /// Commits that waited for a scan holding the database.
    pub lock_waits: u64,
}

/// The part of `follow` both sources share: a session, a HEAD pool, and the rule that turns
/// events into one commit.
pub struct Follower {
    cfg: FollowConfig,
    db_path: PathBuf,
    pool: Arc<HeadPool>,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    /// Begun with the first commit (so `follow` starts while a scan holds the database).
    session: Option<FollowSession>,
    flushed: Snapshot,
    pub report: FollowReport,
    /// What `/metrics` shows, updated after each commit.
    pub metrics: metrics::FollowMetrics,
}

/// One event a batch carries, reduced per key.
struct KeyEvents {
    /// The newest sequencer (when every event of the key has one).
    sequencer: Option<String>,
    /// An event without a sequencer came: a HEAD decides whatever the stored sequencer says.
    unsequenced: bool,
    events: u64,
}

impl Follower {
    /// Checks the bucket can be addressed; the session (a scans row) begins with the first
    /// commit.
    pub async fn start(
        cfg: FollowConfig,
        s3: &S3,
        db_path: &Path,
        cancel: CancellationToken,
        stats: Arc<Stats>,
    ) -> Result<Follower, Error> {
        let heads = s3.head_target(&cfg.target.bucket).await?;
        let latency = Arc::new(crate::model::metrics::Histogram::new(
            &crate::model::metrics::LATENCY_BUCKETS,
        ));
        let pool = Arc::new(HeadPool {
            target: heads,
            concurrency: cfg.concurrency,
            policy: cfg.policy.clone(),
            stats: stats.clone(),
            // A batch in progress is finished (then committed) when follow is asked to stop.
            cancel: CancellationToken::new(),
            rate: None,
            grace: Duration::from_secs(10),
            read_tags: cfg.tags.is_some(),
            tags_refused: Default::default(),
            checksum_refused: Default::default(),
            trust_tag_count: cfg.trust_tag_count,
            latency: Some(latency.clone()),
        });
        Ok(Follower {
            metrics: metrics::FollowMetrics {
                target: cfg.target.clone(),
                live: Default::default(),
                latency,
            },
            report: FollowReport::default(),
            cfg,
            db_path: db_path.to_path_buf(),
            pool,
            flushed: stats.snapshot(),
            stats,
            cancel,
            session: None,
        })
    }

    /// The token that stops `follow` (SIGINT, SIGTERM).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Messages applied per commit at most.
    pub fn batch_size(&self) -> usize {
        self.cfg.batch
    }

    /// Parses message bodies: their events (those inside the target), for each message
    /// whether it can be deleted once they are committed (`false`: malformed), and how many
    /// events mean nothing to the target. Every kind of event leads to a HEAD: a removal is
    /// confirmed by its 404, a tagging event read by the HEAD's count (and `--tags`).
    pub fn parse(&mut self, bodies: &[&str]) -> (Vec<S3Event>, Vec<bool>, u64) {
        let mut ignored = 0;
        let mut events = Vec::new();
        let mut done = Vec::with_capacity(bodies.len());
        for body in bodies {
            self.report.messages += 1;
            match event::parse(body) {
                Ok(Message::Events(es)) => {
                    for e in es {
                        if e.bucket == self.cfg.target.bucket
                            && e.key.starts_with(&self.cfg.target.prefix)
                        {
                            events.push(e);
                        } else {
                            ignored += 1;
                        }
                    }
                    done.push(true);
                }
                Ok(Message::Ignored(why)) => {
                    tracing::debug!("message ignored: {why}");
                    ignored += 1;
                    done.push(true);
                }
                Err(why) => {
                    self.report.malformed += 1;
                    tracing::warn!(
                        "a message that is not an S3 event was left in the queue ({why}): {}",
                        excerpt(body)
                    );
                    done.push(false);
                }
            }
        }
        (events, done, ignored)
    }

    /// HEADs what the events name and commits it; returns once committed.
    pub async fn apply(&mut self, events: Vec<S3Event>, ignored: u64) -> Result<(), Error> {
        let newest = events.iter().filter_map(|e| e.event_time.clone()).max();
        let mut keys: BTreeMap<String, KeyEvents> = BTreeMap::new();
        for e in events {
            let k = keys.entry(e.key.clone()).or_insert(KeyEvents {
                sequencer: None,
                unsequenced: false,
                events: 0,
            });
            k.events += 1;
            match &e.sequencer {
                None => k.unsequenced = true,
                Some(s) => {
                    if k.sequencer
                        .as_deref()
                        .is_none_or(|old| sequencer_cmp(s, old).is_gt())
                    {
                        k.sequencer = Some(s.clone());
                    }
                }
            }
        }
        loop {
            let wanted: Vec<(String, Option<String>, bool, u64)> = keys
                .iter()
                .map(|(k, v)| (k.clone(), v.sequencer.clone(), v.unsequenced, v.events))
                .collect();
            // What the index holds now, read without the lock (SQLite's snapshot). A database
            // not there yet (or not yet upgraded: the first commit does it) is not known: its
            // HEADs are made again under the lock.
            let known = {
                let (path, t) = (self.db_path.clone(), self.cfg.target.clone());
                let keys: Vec<String> = wanted.iter().map(|w| w.0.clone()).collect();
                blocking(move || Ok(read_known(&path, &t, &keys))).await?
            };
            let (before, stored) = match known {
                Some((fp, stored)) => (Some(fp), stored),
                None => (None, vec![None; wanted.len()]),
            };
            let mut stale = 0;
            let mut to_head = Vec::new();
            for ((key, seq, unsequenced, n), stored) in wanted.into_iter().zip(stored) {
                if !unsequenced && writer::is_stale(stored.as_deref(), seq.as_deref()) {
                    stale += n;
                } else {
                    to_head.push((key, seq, n));
                }
            }
            let outcomes = self.head(&to_head).await;
            let items: Vec<FollowItem> = to_head
                .into_iter()
                .zip(outcomes)
                .map(|((key, sequencer, events), (result, tags))| FollowItem {
                    key,
                    sequencer,
                    result,
                    tags,
                    events,
                })
                .collect();
            let now = self.stats.snapshot();
            let requests = delta(&now, &self.flushed);
            let (target, cfg_tags) = (self.cfg.target.clone(), self.cfg.tags);
            let (session, path) = (self.session.clone(), self.db_path.clone());
            let newest_time = newest.clone();
            let (session, committed) = with_db(
                &self.db_path,
                &self.cancel,
                &mut self.report.lock_waits,
                move |conn, p| {
                    let dbe = |e| Error::db(p, e);
                    let session = match session {
                        Some(s) => s,
                        None => scans::begin_follow(conn, &target, cfg_tags).map_err(dbe)?,
                    };
                    let fp = scans::scans_fingerprint(conn, session.bucket_id).map_err(dbe)?;
                    // Unknown before (no database yet): the HEADs are made again, once.
                    if before.as_ref() != Some(&fp) {
                        return Ok((session, None));
                    }
                    let ctx = WriterCtx {
                        scan_id: session.scan_id,
                        bucket_id: session.bucket_id,
                        mode: crate::model::Mode::Rescan,
                        record_created: session.record_created,
                        tags: cfg_tags,
                        versions: false,
                        follow: true,
                        path,
                        recorded_order: std::sync::Mutex::new(None),
                    };
                    let t = writer::apply_follow(
                        conn,
                        &ctx,
                        items,
                        &requests,
                        (ignored, newest_time.as_deref()),
                    )
                    .map_err(dbe)?;
                    Ok((session, Some(t)))
                },
            )
            .await?;
            self.report.scan_id = session.scan_id;
            self.session = Some(session);
            let Some(t) = committed else {
                tracing::debug!("the index changed while follow's HEADs ran: HEADing again");
                continue;
            };
            self.flushed = now;
            let r = &mut self.report;
            r.events_applied += t.applied;
            r.events_stale += t.stale + stale;
            r.events_ignored += ignored;
            r.changes += t.changed;
            if let Some(lag) = newest.as_deref().and_then(lag_secs) {
                r.lag_secs = Some(lag);
            }
            let report = r.clone();
            self.metrics.update(|l| l.report = report);
            return Ok(());
        }
    }

    /// HEADs the keys through the pool; one outcome per key, in order.
    async fn head(
        &mut self,
        keys: &[(String, Option<String>, u64)],
    ) -> Vec<(HeadResult, Option<crate::model::TagsRead>)> {
        let mut out: Vec<Option<(HeadResult, Option<crate::model::TagsRead>)>> =
            (0..keys.len()).map(|_| None).collect();
        if keys.is_empty() {
            return Vec::new();
        }
        let (jobs_tx, jobs_rx) = mpsc::channel(keys.len());
        let (res_tx, mut res_rx) = mpsc::channel(keys.len());
        for (i, (key, _, _)) in keys.iter().enumerate() {
            // The channel holds them all.
            let _ = jobs_tx.try_send(HeadJob {
                object_id: i as i64,
                key: key.clone(),
                version_id: None,
                work: Work::Head,
            });
        }
        drop(jobs_tx);
        let run = tokio::spawn(self.pool.clone().run(jobs_rx, res_tx));
        while let Some(msg) = res_rx.recv().await {
            if let WriterMsg::Head(o) = msg
                && let Some(slot) = out.get_mut(o.object_id as usize)
            {
                self.report.heads += 1;
                if matches!(o.result, HeadResult::Failed { .. }) {
                    self.report.failed += 1;
                }
                *slot = Some((o.result, o.tags));
            }
        }
        let _ = run.await;
        // The pool answers every job unless cancelled, and its token is never cancelled.
        out.into_iter()
            .map(|o| o.unwrap_or((HeadResult::NotHeaded, None)))
            .collect()
    }

    /// Ends the session: `complete` (every event applied so far is committed).
    pub async fn finish(self, last_error: Option<String>) -> Result<FollowReport, Error> {
        let Some(session) = &self.session else {
            return Ok(self.report);
        };
        let id = session.scan_id;
        let mut waits = 0;
        with_db(
            &self.db_path,
            &CancellationToken::new(),
            &mut waits,
            move |conn, path| {
                scans::end_follow(conn, id, last_error.as_deref()).map_err(|e| Error::db(path, e))
            },
        )
        .await?;
        Ok(self.report)
    }
}

/// How often `follow` reads the SQS queue's depth.
const DEPTH_EVERY: Duration = Duration::from_secs(15);

/// Follows an SQS queue until cancelled (or, `once`, until a receive finds it empty).
pub async fn run_sqs(
    follower: &mut Follower,
    queue: &Queue,
    wait_secs: i32,
    once: bool,
    mut tick: impl FnMut(&FollowReport, Option<u64>),
) -> Result<(), Error> {
    let cancel = follower.cancel.clone();
    let mut last_tick = Instant::now();
    // Read at the first pass, then every `DEPTH_EVERY` (one GetQueueAttributes each).
    let mut last_depth = Instant::now()
        .checked_sub(DEPTH_EVERY)
        .unwrap_or_else(Instant::now);
    let mut depth = None;
    loop {
        let wait = if once { wait_secs.min(1) } else { wait_secs };
        let mut received = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = queue.receive(RECEIVE_MAX, wait) => r?,
        };
        if received.is_empty() {
            if once {
                return Ok(());
            }
        } else {
            // A full receive means more are waiting: take them into this commit.
            while received.len() < follower.cfg.batch
                && received.len() % RECEIVE_MAX as usize == 0
                && !cancel.is_cancelled()
            {
                let more = queue.receive(RECEIVE_MAX, 0).await?;
                if more.is_empty() {
                    break;
                }
                received.extend(more);
            }
            let bodies: Vec<&str> = received.iter().map(|m| m.body.as_str()).collect();
            let (events, done, ignored) = follower.parse(&bodies);
            follower.apply(events, ignored).await?;
            let receipts: Vec<String> = received
                .iter()
                .zip(done)
                .filter(|(_, d)| *d)
                .map(|(m, _)| m.receipt.clone())
                .collect();
            let refused = queue.delete(&receipts).await?;
            if refused > 0 {
                tracing::warn!(
                    "the queue refused to delete {refused} applied message(s): they will come again, and change nothing"
                );
            }
        }
        if last_depth.elapsed() >= DEPTH_EVERY {
            // The depth is for the log line and `/metrics`: a failure to read it stops nothing.
            depth = queue.depth().await.ok().flatten();
            follower.metrics.update(|l| l.queue_depth = depth);
            last_depth = Instant::now();
        }
        if last_tick.elapsed() >= Duration::from_secs(60) {
            tick(&follower.report, depth);
            last_tick = Instant::now();
        }
    }
}

/// What the scans of a bucket have committed (`scans::scans_fingerprint`).
type Fingerprint = (i64, String);

/// The scans' fingerprint of the target's bucket and the stored sequencers of `keys`, read
/// without the lock; `None` when the database cannot be read (missing, older schema).
fn read_known(
    path: &Path,
    t: &Target,
    keys: &[String],
) -> Option<(Fingerprint, Vec<Option<String>>)> {
    let conn = db::open_ro(path).ok()?;
    let Some(bucket_id) = db::bucket_id(&conn, &t.store, &t.bucket).ok()? else {
        return Some(((0, String::new()), vec![None; keys.len()]));
    };
    let fp = scans::scans_fingerprint(&conn, bucket_id).ok()?;
    let mut stored = Vec::with_capacity(keys.len());
    for k in keys {
        stored.push(writer::stored_sequencer(&conn, bucket_id, k).ok()?);
    }
    Some((fp, stored))
}

/// Runs `work` on a connection to the database under its lock, on a blocking thread; waits
/// (a second at a time, counting in `waits`) while another process holds the lock.
async fn with_db<T: Send + 'static>(
    db_path: &Path,
    cancel: &CancellationToken,
    waits: &mut u64,
    work: impl FnOnce(&mut rusqlite::Connection, &Path) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let path = db_path.to_path_buf();
    let mut work = Some(work);
    let mut said = false;
    loop {
        let p = path.clone();
        let attempt = blocking(move || match lock::acquire(&p) {
            Ok(guard) => Ok(Some(guard)),
            Err(Error::Locked { .. }) => Ok(None),
            Err(e) => Err(e),
        })
        .await?;
        let Some(guard) = attempt else {
            if !said {
                tracing::info!(
                    "another s3meta process (a scan) holds {}: events wait in the queue until it ends",
                    path.display()
                );
                said = true;
            }
            *waits += 1;
            tokio::select! {
                // Asked to stop while waiting: the batch's messages stay in the queue.
                _ = cancel.cancelled() => return Err(Error::Interrupted),
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        };
        let work = work.take().expect("runs once");
        let p = path.clone();
        return blocking(move || {
            let mut conn = db::open_rw(&p)?;
            let out = work(&mut conn, &p);
            let closed = db::close_rw(conn, &p);
            drop(guard);
            let out = out?;
            closed?;
            Ok(out)
        })
        .await;
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("follow's database task failed: {e}")))?
}

fn delta(now: &Snapshot, before: &Snapshot) -> Snapshot {
    Snapshot {
        head_requests: now.head_requests - before.head_requests,
        tag_requests: now.tag_requests - before.tag_requests,
        retries: now.retries - before.retries,
        throttled: now.throttled - before.throttled,
        ..Snapshot::default()
    }
}

/// Seconds from an event's time (RFC 3339) to now.
fn lag_secs(event_time: &str) -> Option<f64> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let t = DateTime::from_str(event_time, Format::DateTime).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some((now - t.as_secs_f64()).max(0.0))
}

/// The start of a message body for a log line.
fn excerpt(body: &str) -> String {
    let mut s: String = body.chars().take(200).collect();
    if s.len() < body.len() {
        s.push('…');
    }
    s.escape_debug().to_string()
}
