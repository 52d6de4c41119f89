//! Parallel listing: runs the listers of a scan's key ranges, N at a time, and splits a range
//! that turns out large so N streams stay busy on skewed keyspaces.
//!
//! Receives: the scan's ranges (planned, or resumed from their checkpoints) and `N`
//! (`--list-parallelism`). Sends on: pages to the writer through each range's lister, and
//! range splits to the writer. Invariants: the ranges cover the keyspace exactly once at every
//! commit — a split shortens a range and adds its tail as a new range in one transaction,
//! decided under the range's lock so no page relying on the shorter end reaches the writer
//! first; HEAD concurrency and the writer are shared by every range.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::keys::KeyOrder;
use crate::model::{HeadJob, RangeState, SplitMsg, WriterMsg};
use crate::s3::list::Lister;
use crate::s3::probe;
use crate::scan::lister::{self, RangeCtl, SharedRange};
use crate::scan::{PAGES_PER_EXTRA_RANGE, Splits};
use crate::store::scans::{ScanPlan, StoredCut};

/// A range is worth splitting once it has listed this many pages.
const SPLIT_AFTER_PAGES: u64 = 1;

/// What a split is assumed to cost in probes before it is tried (measured on Garage: 40 to
/// 100 one-key LISTs to find the first position where keys differ and cut the characters
/// there), so that `--split-ranges auto` tries one only when the budget can pay for it.
const SPLIT_PROBES: u64 = 48;

/// Cuts a new scan's one range at `cuts` (stored keys, compared in `order`) through the
/// writer, as a split would, before anything is listed; returns the ranges to list.
pub async fn start_cut(
    plan: &ScanPlan,
    (order, cuts): (KeyOrder, Vec<StoredCut>),
    writer: &mpsc::Sender<WriterMsg>,
) -> Result<Vec<RangeState>, Error> {
    let first = plan.ranges[0].clone();
    let at: Vec<String> = cuts.iter().map(|c| c.at.clone()).collect();
    let range = (first.range_no, first.end_key.clone());
    let mut tails = send_cuts(writer, order, range, first.range_no + 1, &at).await?;
    for (tail, cut) in tails.iter_mut().zip(cuts) {
        tail.witness = Some(cut.next);
    }
    tracing::debug!(
        "rescan starts cut into {} ranges at stored keys",
        at.len() + 1
    );
    let head = RangeState {
        end_key: at.first().cloned(),
        ..first
    };
    tails.insert(0, head);
    Ok(tails)
}

/// Sends the writer the splits that cut range `(range_no, end)` at `cuts` (increasing,
/// inside it), numbering the new ranges from `next_no`; returns them, (cut, next cut] each,
/// the last ending at `end`, without witnesses (the caller knows what each should list).
async fn send_cuts(
    writer: &mpsc::Sender<WriterMsg>,
    order: KeyOrder,
    (range_no, end): (i64, Option<String>),
    next_no: i64,
    cuts: &[String],
) -> Result<Vec<RangeState>, Error> {
    let mut tails = Vec::with_capacity(cuts.len());
    let mut cut_from = range_no;
    for (i, at) in cuts.iter().enumerate() {
        let new_no = next_no + i as i64;
        let split = SplitMsg {
            order,
            range_no: cut_from,
            at: at.clone(),
            new_range_no: new_no,
            end: end.clone(),
        };
        writer
            .send(WriterMsg::Split(split))
            .await
            .map_err(|_| lister::writer_gone())?;
        tails.push(RangeState {
            range_no: new_no,
            start_after: Some(at.clone()),
            witness: None,
            end_key: cuts.get(i + 1).cloned().or(end.clone()),
            token: None,
            last_key: None,
            done: false,
        });
        cut_from = new_no;
    }
    Ok(tails)
}

pub struct Listing {
    pub lister: Arc<Lister>,
    pub parallelism: usize,
    pub splits: Splits,
    /// A full scan: `auto` grows its streams gradually (see `run`).
    pub gradual: bool,
    pub writer: mpsc::Sender<WriterMsg>,
    pub heads: mpsc::Sender<HeadJob>,
    pub cancel: CancellationToken,
}

impl Listing {
    /// Lists every unfinished range to its end; returns the first fatal error.
    pub async fn run(self, ranges: Vec<RangeState>) -> Result<(), Error> {
        let listed = Arc::new(Notify::new());
        let mut next_no = ranges.iter().map(|r| r.range_no + 1).max().unwrap_or(0);
        let mut active: HashMap<i64, SharedRange> = HashMap::new();
        let mut tasks = JoinSet::new();
        let mut made = ranges.len();
        for range in ranges.into_iter().filter(|r| !r.done) {
            self.spawn(&mut tasks, &mut active, range, &listed);
        }
        let mut result = Ok(());
        loop {
            // Cancel safety: join_next and notified are cancel-safe.
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    None => break,
                    Some(joined) => {
                        let (no, r) = joined.map_err(|e| Error::Internal(format!("lister: {e}")))?;
                        if let Some(ctl) = active.remove(&no) {
                            let c = ctl.lock().await;
                            tracing::debug!("range {no} stopped after {} pages since its last cut", c.pages);
                        }
                        if let Err(e) = r {
                            self.cancel.cancel();
                            result = result.and(Err(e));
                        }
                    }
                },
                _ = listed.notified() => {}
            }
            // The free streams and the range being split share the tail. A full scan under
            // `auto` at most doubles its streams per split: one whose HEADs wait for keys only
            // now and then grows by the streams it needs, not by all at once (each holds a
            // page and its HEAD jobs). A rescan, whose streams hold few jobs, takes them all.
            let free = (self.parallelism + 1).saturating_sub(tasks.len());
            let pieces = match (self.splits, self.gradual) {
                (Splits::WhenListingBound, true) => free.min(tasks.len().max(1) + 1),
                _ => free,
            };
            let idle = self.parallelism > 1
                && !self.cancel.is_cancelled()
                && tasks.len() < self.parallelism
                && self.listing_bound()
                && self.affordable(made, pieces);
            let tails = if idle {
                match self.split(&active, next_no, pieces).await {
                    Err(Error::Interrupted) => Vec::new(), // a probe cut short by Ctrl-C
                    other => other?,
                }
            } else {
                Vec::new()
            };
            for range in tails {
                next_no += 1;
                made += 1;
                self.spawn(&mut tasks, &mut active, range, &listed);
            }
        }
        result
    }

    /// Whether a cut would pay: always when told so; otherwise only while the HEAD queue is
    /// at most half full, i.e. the HEADs wait for listed keys (a rescan) rather than listing
    /// waiting for the HEADs (a full scan, whose extra streams would only add probes).
    fn listing_bound(&self) -> bool {
        self.splits == Splits::Always || self.heads.capacity() * 2 >= self.heads.max_capacity()
    }

    /// Whether a split into `pieces` fits the LIST budget of `--split-ranges auto`: the
    /// probes sent so far, a split's assumed cost, and a partial page for each range past
    /// the first (`made` so far, and the new ones) within a tenth of the pages listed so
    /// far — the pages still to come only add to it, so a scan's LIST requests stay within
    /// about 1.1× its pages (issue 15), and a bucket of fewer than ~500 pages is never
    /// probed. `always` splits whenever a stream is free, whatever it costs.
    fn affordable(&self, made: usize, pieces: usize) -> bool {
        if self.splits == Splits::Always {
            return true;
        }
        let stats = &self.lister.stats;
        let probes = stats.list_probes.load(Ordering::Relaxed);
        let pages = stats
            .list_requests
            .load(Ordering::Relaxed)
            .saturating_sub(probes);
        let extra = (made + pieces).saturating_sub(2) as u64;
        probes + SPLIT_PROBES + extra <= pages / PAGES_PER_EXTRA_RANGE
    }

    fn spawn(
        &self,
        tasks: &mut JoinSet<(i64, Result<bool, Error>)>,
        active: &mut HashMap<i64, SharedRange>,
        range: RangeState,
        listed: &Arc<Notify>,
    ) {
        let keys = self.lister.range_keys(
            self.lister.order.current(),
            range.start_after.as_deref(),
            range.end_key.as_deref(),
        );
        let ctl = Arc::new(Mutex::new(RangeCtl {
            range_no: range.range_no,
            keys: Arc::new(keys),
            start_after: range.start_after.clone(),
            end: range.end_key.clone(),
            position: range.last_key.clone().or(range.start_after.clone()),
            pages: 0,
            done: false,
            split_tried_at: None,
        }));
        active.insert(range.range_no, ctl.clone());
        let run = lister::run(
            self.lister.clone(),
            range.clone(),
            ctl,
            self.writer.clone(),
            self.heads.clone(),
            (listed.clone(), self.splits),
        );
        tasks.spawn(async move { (range.range_no, run.await) });
    }

    /// Splits the active range that has listed the most pages into up to `pieces` ranges
    /// beyond its position; returns the new ranges (its tail, cut) to list.
    async fn split(
        &self,
        active: &HashMap<i64, SharedRange>,
        next_no: i64,
        pieces: usize,
    ) -> Result<Vec<RangeState>, Error> {
        let Some(victim) = self.largest(active).await else {
            return Ok(Vec::new());
        };
        let (position, end) = {
            let c = victim.lock().await;
            (c.position.clone(), c.end.clone())
        };
        if let Some(listed) = &position {
            self.lister.learn_order_around(listed).await?;
        }
        let known = self.lister.order.known();
        self.lister.witnesses.take();
        let cuts = match &position {
            Some(listed) => {
                probe::find_splits_after_key(&self.lister, listed, end.as_deref(), pieces).await?
            }
            None => probe::find_splits(&self.lister, None, end.as_deref(), pieces).await?,
        };
        if self.lister.order.known() != known {
            // A probe showed the order: the cuts were compared in another. Cut afresh.
            return Ok(Vec::new());
        }
        // Cuts in a guessed order are made where both orders agree on the listed keys
        // (`probe`), but a stored key may still lie on different sides of one in the two:
        // then the order is learnt first (cut afresh), or the range is left whole.
        let prefix = &self.lister.prefix;
        if known.is_none()
            && self
                .lister
                .order
                .stored_across(prefix, cuts.iter().map(String::as_str))
                .await?
        {
            self.lister.order.resolve_anchor(&self.lister).await?;
            if self.lister.order.known().is_none() {
                let mut c = victim.lock().await;
                c.split_tried_at = Some(c.pages);
            }
            return Ok(Vec::new());
        }
        let order = self.lister.order.current();
        let seen = self.lister.witnesses.take();
        let mut c = victim.lock().await;
        // The lister may have moved on while we probed: only cuts still ahead of it count.
        let cuts: Vec<String> = cuts
            .into_iter()
            .filter(|at| c.position.as_deref().is_none_or(|p| order.lt(p, at)))
            .filter(|at| c.end.as_deref().is_none_or(|e| order.lt(at, e)))
            .collect();
        if c.done || cuts.is_empty() {
            c.split_tried_at = Some(c.pages);
            return Ok(Vec::new());
        }
        let range = (c.range_no, c.end.clone());
        let mut tails = send_cuts(&self.writer, order, range, next_no, &cuts).await?;
        for tail in &mut tails {
            let (at, end_key) = (tail.start_after.as_deref(), tail.end_key.as_deref());
            let inside = |k: &&String| {
                at.is_some_and(|a| order.lt(a, k)) && end_key.is_none_or(|e| !order.lt(e, k))
            };
            tail.witness = seen.iter().find(inside).cloned();
        }
        tracing::debug!(
            "split range {} at {cuts:?} into {} new ranges",
            c.range_no,
            tails.len()
        );
        c.end = Some(cuts[0].clone());
        c.keys = Arc::new(self.lister.range_keys(
            order,
            c.start_after.as_deref(),
            c.end.as_deref(),
        ));
        // What is left of it is small now: the next split should pick a range not yet cut.
        c.pages = 0;
        Ok(tails)
    }

    /// The active range that has listed the most pages since it started or was last cut (the
    /// best sign of a large remainder), if one is worth splitting.
    async fn largest(&self, active: &HashMap<i64, SharedRange>) -> Option<SharedRange> {
        let mut best: Option<(u64, SharedRange)> = None;
        for ctl in active.values() {
            let c = ctl.lock().await;
            let tried = c
                .split_tried_at
                .is_some_and(|t| c.pages < t + SPLIT_AFTER_PAGES);
            if !c.done
                && c.pages >= SPLIT_AFTER_PAGES
                && !tried
                && best.as_ref().is_none_or(|b| c.pages > b.0)
            {
                best = Some((c.pages, ctl.clone()));
            }
        }
        best.map(|b| b.1)
    }
}
