//! Request counters and fault-injection rules, consulted by the HTTP front end for every S3
//! request before the S3 layer sees it.
//!
//! Receives: one `arrive(op)` per request (the returned guard leaves on drop, adding the time
//! it was in flight to `busy`), then queries for the slowdown threshold, the random slowdown,
//! holds, latency and the first matching [`Fault`].
//! Invariants: a request is counted (in `requests`, `total` and `in_flight`) before any rule
//! is applied to it, so a request answered by an injected fault is counted like any other,
//! and `wait_for_requests`/[`Gate`]s are woken only after the counters moved. The random
//! slowdown refuses the n-th request it is asked about iff a hash of (seed, n) says so, so
//! a seed fixes which arrivals are refused, whatever the load and the timing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The kind of an S3 request, as classified from its method, path and query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `GET /bucket` (ListObjectsV2, or V1).
    List,
    /// `HEAD /bucket/key`.
    Head,
    /// `GET /bucket/key`.
    Get,
    /// `PUT /bucket/key` without `x-amz-copy-source`.
    Put,
    /// `DELETE /bucket/key`.
    Delete,
    /// `PUT /bucket/key` with `x-amz-copy-source`.
    Copy,
    /// `PUT /bucket`.
    CreateBucket,
    /// `GET /bucket/key?tagging` (GetObjectTagging).
    GetTagging,
    /// `GET /bucket?versions` (ListObjectVersions).
    ListVersions,
    /// `PUT /bucket/key?partNumber=N&uploadId=…` (UploadPart).
    UploadPart,
    /// Create, Complete and AbortMultipartUpload (`POST ?uploads`, `POST ?uploadId`,
    /// `DELETE ?uploadId`).
    Multipart,
    /// SQS ReceiveMessage (`X-Amz-Target: AmazonSQS.ReceiveMessage`).
    SqsReceive,
    /// SQS DeleteMessage and DeleteMessageBatch.
    SqsDelete,
    /// Any other SQS action (GetQueueAttributes, GetQueueUrl, …).
    SqsOther,
    /// Anything else (HeadBucket, sub-resources, unknown paths).
    Other,
}

const OPS: usize = 15;

impl Op {
    /// Every op, in a stable order (the order of the admin JSON).
    pub const ALL: [Op; OPS] = [
        Op::List,
        Op::Head,
        Op::Get,
        Op::Put,
        Op::Delete,
        Op::Copy,
        Op::CreateBucket,
        Op::GetTagging,
        Op::ListVersions,
        Op::UploadPart,
        Op::Multipart,
        Op::SqsReceive,
        Op::SqsDelete,
        Op::SqsOther,
        Op::Other,
    ];

    /// Lower-case name used in the admin JSON.
    pub fn name(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Head => "head",
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Copy => "copy",
            Op::CreateBucket => "create_bucket",
            Op::GetTagging => "get_tagging",
            Op::ListVersions => "list_versions",
            Op::UploadPart => "upload_part",
            Op::Multipart => "multipart",
            Op::SqsReceive => "sqs_receive",
            Op::SqsDelete => "sqs_delete",
            Op::SqsOther => "sqs_other",
            Op::Other => "other",
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

/// What an injected fault does to the request it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer with this HTTP status and an S3 error body (503 `SlowDown`, 500 `InternalError`,
    /// 403 `AccessDenied`, 404 `NoSuchKey`/`NoSuchBucket`, 400 `InvalidRequest`, 301
    /// `PermanentRedirect` with `x-amz-bucket-region:` [`OTHER_REGION`](crate::OTHER_REGION));
    /// HEAD responses carry no body.
    Status(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Close the TCP connection: before any response for every op but List; for List after
    /// the headers and half of the body were sent.
    DropConnection,
    /// Never answer; the connection stays open until the client gives up (or
    /// [`STALL_CAP`] passes, then it is closed).
    Stall,
    /// Answer normally, but re-format a ListObjectsV2 answer the way other stores write XML:
    /// line breaks and indentation between elements, `&#34;` for the quotes of ETags,
    /// `EncodingType` before the entries, and on odd pages a comment at the end of the first
    /// `Key` (the SDK's reader keeps only the text before a comment, which here is the whole
    /// key). Other ops are answered unchanged.
    Restyle,
    /// Answer 200 with only the first half of the body and a `Content-Length` that matches
    /// it: a complete HTTP message whose XML document is cut off (as a broken proxy sent).
    CutBody,
    /// 403 `AccessDenied` for a request that sends `x-amz-checksum-mode: ENABLED`, as AWS
    /// answers a HEAD of a KMS-encrypted object with a checksum without `kms:Decrypt`;
    /// requests without the header do not match the fault (nor use it up).
    RefuseChecksumMode,
}

/// The longest a [`Action::Stall`] holds a connection, so a forgotten stall cannot hang a
/// test run.
pub const STALL_CAP: Duration = Duration::from_secs(60);

/// An injected fault: the first fault (in insertion order) that matches a request and has
/// uses left decides what happens to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The op it applies to; `None` for every op.
    pub op: Option<Op>,
    /// Exact object key (HEAD, GET, PUT, DELETE, COPY destination); `None` for any key.
    pub key: Option<String>,
    /// 1-based page number of a listing (1 = no continuation token); `None` for any page.
    pub page: Option<u32>,
    /// What to do.
    pub action: Action,
    /// `None`: forever; `Some(n)`: the first `n` matching requests only.
    pub times: Option<u32>,
}

impl Fault {
    /// A fault for every request of `op` (every op when `None`), forever.
    pub fn new(op: Option<Op>, action: Action) -> Fault {
        Fault {
            op,
            key: None,
            page: None,
            action,
            times: None,
        }
    }

    /// A fault for every HEAD of `key`, forever.
    pub fn head(key: &str, action: Action) -> Fault {
        Fault {
            key: Some(key.to_owned()),
            ..Fault::new(Some(Op::Head), action)
        }
    }

    /// A fault for every request for page `page` (1-based) of any listing, forever.
    pub fn list_page(page: u32, action: Action) -> Fault {
        Fault {
            page: Some(page),
            ..Fault::new(Some(Op::List), action)
        }
    }

    /// The same fault, limited to its first `n` matching requests.
    pub fn times(self, n: u32) -> Fault {
        Fault {
            times: Some(n),
            ..self
        }
    }

    fn matches(&self, req: &RequestInfo) -> bool {
        self.op.is_none_or(|op| op == req.op)
            && self
                .key
                .as_deref()
                .is_none_or(|k| req.key.as_deref() == Some(k))
            && self
                .page
                .is_none_or(|p| req.op == Op::List && req.page == p)
            && (self.action != Action::RefuseChecksumMode || req.checksum_mode)
    }
}

/// When held requests are released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Open once `n` requests of `op` have arrived (counting the held ones).
    Requests {
        /// The op whose arrivals are counted.
        op: Op,
        /// How many arrivals open the gate.
        n: u64,
    },
    /// Closed until the test calls `release`.
    Released,
}

/// What the front end knows about a request when it consults the rules.
#[derive(Clone, Debug)]
pub(crate) struct RequestInfo {
    pub op: Op,
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// 1-based listing page; 1 for anything that is not a continued listing.
    pub page: u32,
    /// The request sends `x-amz-checksum-mode: ENABLED`.
    pub checksum_mode: bool,
}

const NO_LIMIT: u64 = u64::MAX;

/// Counters and rules; lives inside [`crate::State`].
pub(crate) struct Control {
    requests: [AtomicU64; OPS],
    in_flight: [AtomicU64; OPS],
    peak: [AtomicU64; OPS],
    total: AtomicU64,
    /// Bumped after every arrival and every rule change, to wake waiters.
    changes: watch::Sender<u64>,
    faults: Mutex<Vec<(Fault, u32)>>,
    holds: Mutex<HashMap<Op, Gate>>,
    /// Microseconds; index `OPS` applies to every op.
    latency_us: [AtomicU64; OPS + 1],
    slowdown_above: [AtomicU64; OPS],
    random_slowdown: Mutex<[Option<RandomSlowdown>; OPS]>,
    /// Microseconds requests of each op spent in flight since `reset_at_us` (∫ in_flight dt).
    busy_us: [AtomicU64; OPS],
    /// When the counters were last reset, in microseconds since `born`.
    reset_at_us: AtomicU64,
    born: Instant,
}

/// 503 SlowDown for a seeded pseudo-random share of requests, independent of load.
#[derive(Clone, Copy, Debug)]
struct RandomSlowdown {
    /// A request is refused when its hash is below this (`rate × 2⁶⁴`).
    below: u64,
    seed: u64,
    /// Requests decided so far.
    n: u64,
}

/// Keeps a request counted as in flight until dropped (also when hyper drops the request
/// future because the client went away).
pub(crate) struct InFlight<'a> {
    control: &'a Control,
    op: Op,
    arrived_us: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let c = self.control;
        let i = self.op.idx();
        let from = self.arrived_us.max(c.reset_at_us.load(Ordering::SeqCst));
        c.busy_us[i].fetch_add(c.now_us().saturating_sub(from), Ordering::SeqCst);
        c.in_flight[i].fetch_sub(1, Ordering::SeqCst);
    }
}

impl Control {
    pub fn new() -> Control {
        Control {
            requests: Default::default(),
            in_flight: Default::default(),
            peak: Default::default(),
            total: AtomicU64::new(0),
            changes: watch::Sender::new(0),
            faults: Mutex::new(Vec::new()),
            holds: Mutex::new(HashMap::new()),
            latency_us: Default::default(),
            slowdown_above: std::array::from_fn(|_| AtomicU64::new(NO_LIMIT)),
            random_slowdown: Mutex::new([None; OPS]),
            busy_us: Default::default(),
            reset_at_us: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Counts a request that has just arrived.
    pub fn arrive(&self, op: Op) -> InFlight<'_> {
        let i = op.idx();
        self.requests[i].fetch_add(1, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight[i].fetch_add(1, Ordering::SeqCst) + 1;
        self.peak[i].fetch_max(now, Ordering::SeqCst);
        self.changes.send_modify(|n| *n += 1);
        InFlight {
            control: self,
            op,
            arrived_us: self.now_us(),
        }
    }

    pub fn requests(&self, op: Op) -> u64 {
        self.requests[op.idx()].load(Ordering::SeqCst)
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self, op: Op) -> u64 {
        self.in_flight[op.idx()].load(Ordering::SeqCst)
    }

    pub fn peak_in_flight(&self, op: Op) -> u64 {
        self.peak[op.idx()].load(Ordering::SeqCst)
    }

    /// Seconds requests of `op` have spent in flight since the last reset, summed over
    /// requests (those still in flight count once they leave).
    pub fn busy_seconds(&self, op: Op) -> f64 {
        self.busy_us[op.idx()].load(Ordering::SeqCst) as f64 / 1e6
    }

    /// Seconds since the last reset (or since the server's state was made).
    pub fn counted_seconds(&self) -> f64 {
        let since = self.reset_at_us.load(Ordering::SeqCst);
        self.now_us().saturating_sub(since) as f64 / 1e6
    }

    /// Zeroes the request counts and busy times; peaks restart from what is in flight now.
    pub fn reset_counters(&self) {
        self.reset_at_us.store(self.now_us(), Ordering::SeqCst);
        for i in 0..OPS {
            self.requests[i].store(0, Ordering::SeqCst);
            self.busy_us[i].store(0, Ordering::SeqCst);
            let live = self.in_flight[i].load(Ordering::SeqCst);
            self.peak[i].store(live, Ordering::SeqCst);
        }
        self.total.store(0, Ordering::SeqCst);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Resolves once `cond` holds; re-checked after every arrival and rule change.
    pub async fn wait_until(&self, cond: impl Fn() -> bool) {
        let mut rx = self.changes.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|_| cond()).await;
    }

    pub fn add_fault(&self, fault: Fault) {
        lock(&self.faults).push((fault, 0));
    }

    /// Removes every fault, hold, latency and slowdown rule.
    pub fn clear(&self) {
        lock(&self.faults).clear();
        lock(&self.holds).clear();
        for l in &self.latency_us {
            l.store(0, Ordering::SeqCst);
        }
        for s in &self.slowdown_above {
            s.store(NO_LIMIT, Ordering::SeqCst);
        }
        *lock(&self.random_slowdown) = [None; OPS];
        self.changes.send_modify(|n| *n += 1);
    }

    /// The action of the first matching fault with uses left, consuming one use.
    pub fn take_fault(&self, req: &RequestInfo) -> Option<Action> {
        let mut faults = lock(&self.faults);
        let (fault, used) = faults
            .iter_mut()
            .find(|(f, used)| f.matches(req) && f.times.is_none_or(|n| *used < n))?;
        *used += 1;
        Some(fault.action.clone())
    }

    pub fn set_latency(&self, op: Option<Op>, d: Duration) {
        let i = op.map_or(OPS, Op::idx);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.latency_us[i].store(us, Ordering::SeqCst);
    }

    /// The latency for every op plus the latency for `op`.
    pub fn latency(&self, op: Op) -> Duration {
        let all = self.latency_us[OPS].load(Ordering::SeqCst);
        let own = self.latency_us[op.idx()].load(Ordering::SeqCst);
        Duration::from_micros(all.saturating_add(own))
    }

    pub fn set_slowdown_above(&self, op: Op, k: Option<u64>) {
        self.slowdown_above[op.idx()].store(k.unwrap_or(NO_LIMIT), Ordering::SeqCst);
    }

    /// Whether more than the configured number of `op` requests are in flight.
    pub fn over_slowdown_limit(&self, op: Op) -> bool {
        let limit = self.slowdown_above[op.idx()].load(Ordering::SeqCst);
        limit != NO_LIMIT && self.in_flight(op) > limit
    }

    /// Refuses a seeded pseudo-random `rate` of `op` requests (0.0–1.0); `None` turns it off.
    /// Setting it restarts the sequence, so one seed refuses the same arrivals every time.
    pub fn set_random_slowdown(&self, op: Op, rate: Option<f64>, seed: u64) {
        lock(&self.random_slowdown)[op.idx()] = rate.map(|r| RandomSlowdown {
            // `as` saturates: 1.0 and above refuse everything but the rare hash u64::MAX.
            below: (r.clamp(0.0, 1.0) * 2f64.powi(64)) as u64,
            seed,
            n: 0,
        });
    }

    /// Whether the random slowdown refuses this `op` request (each call is one request).
    pub fn random_slowdown(&self, op: Op) -> bool {
        let mut rules = lock(&self.random_slowdown);
        let Some(rule) = rules[op.idx()].as_mut() else {
            return false;
        };
        rule.n += 1;
        splitmix64(
            rule.seed
                .wrapping_add(rule.n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        ) < rule.below
    }

    pub fn hold(&self, op: Op, gate: Gate) {
        lock(&self.holds).insert(op, gate);
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn release(&self, op: Op) {
        lock(&self.holds).remove(&op);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Waits while a hold on `op` has a closed gate.
    pub async fn pass_hold(&self, op: Op) {
        self.wait_until(|| match lock(&self.holds).get(&op) {
            None => true,
            Some(Gate::Requests { op: counted, n }) => self.requests(*counted) >= *n,
            Some(Gate::Released) => false,
        })
        .await;
    }
}

/// A 64-bit mix (SplitMix64's finalizer): consecutive inputs give unrelated outputs.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical
/// section here is a single push, insert or scan).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: Op, key: Option<&str>, page: u32) -> RequestInfo {
        RequestInfo {
            op,
            bucket: Some("b".into()),
            key: key.map(str::to_owned),
            page,
            checksum_mode: false,
        }
    }

    #[test]
    fn faults_match_in_order_and_run_out() {
        let c = Control::new();
        c.add_fault(Fault::head("k", Action::Status(503)).times(2));
        c.add_fault(Fault::new(Some(Op::Head), Action::Status(500)));
        let r = req(Op::Head, Some("k"), 1);
        assert_eq!(c.take_fault(&r), Some(Action::Status(503)));
        assert_eq!(c.take_fault(&r), Some(Action::Status(503)));
        assert_eq!(c.take_fault(&r), Some(Action::Status(500)));
        assert_eq!(c.take_fault(&req(Op::List, None, 1)), None);
    }

    #[test]
    fn page_faults_only_match_listings_of_that_page() {
        let c = Control::new();
        c.add_fault(Fault::list_page(2, Action::DropConnection));
        assert_eq!(c.take_fault(&req(Op::List, None, 1)), None);
        assert_eq!(c.take_fault(&req(Op::Head, Some("x"), 2)), None);
        assert_eq!(
            c.take_fault(&req(Op::List, None, 2)),
            Some(Action::DropConnection)
        );
    }

    #[test]
    fn counters_track_in_flight_and_peak() {
        let c = Control::new();
        let a = c.arrive(Op::Head);
        let b = c.arrive(Op::Head);
        assert_eq!((c.in_flight(Op::Head), c.peak_in_flight(Op::Head)), (2, 2));
        drop(a);
        drop(b);
        let _c = c.arrive(Op::Head);
        assert_eq!((c.requests(Op::Head), c.total()), (3, 3));
        assert_eq!((c.in_flight(Op::Head), c.peak_in_flight(Op::Head)), (1, 2));
        c.reset_counters();
        assert_eq!((c.requests(Op::Head), c.peak_in_flight(Op::Head)), (0, 1));
    }

    #[test]
    fn random_slowdown_refuses_the_same_share_and_arrivals_for_a_seed() {
        let c = Control::new();
        let run = |seed| {
            c.set_random_slowdown(Op::Head, Some(0.15), seed);
            (0..10_000)
                .map(|_| c.random_slowdown(Op::Head))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        let refused = a.iter().filter(|r| **r).count();
        assert!((1350..1650).contains(&refused), "{refused} of 10,000");
        assert_eq!(run(7), a, "same seed, same arrivals refused");
        assert_ne!(run(8), a);
        assert!(!c.random_slowdown(Op::List), "only the op it was set for");
        c.set_random_slowdown(Op::Head, None, 0);
        assert!((0..1000).all(|_| !c.random_slowdown(Op::Head)));
        c.set_random_slowdown(Op::Head, Some(1.0), 1);
        assert!((0..1000).all(|_| c.random_slowdown(Op::Head)));
        c.set_random_slowdown(Op::Head, Some(0.3), 1);
        c.clear();
        assert!(!c.random_slowdown(Op::Head));
    }

    #[tokio::test(start_paused = true)]
    async fn busy_time_integrates_requests_in_flight() {
        let c = Control::new();
        let a = c.arrive(Op::Head);
        tokio::time::advance(Duration::from_millis(10)).await;
        c.reset_counters();
        let b = c.arrive(Op::Head);
        tokio::time::advance(Duration::from_millis(30)).await;
        drop(a);
        tokio::time::advance(Duration::from_millis(10)).await;
        drop(b);
        // From the reset on: `a` 30 ms (its 10 ms before are not counted), `b` 40 ms.
        assert_eq!(c.busy_seconds(Op::Head), 0.070);
        assert_eq!(c.counted_seconds(), 0.040);
        assert_eq!(c.busy_seconds(Op::List), 0.0);
    }

    #[test]
    fn latency_adds_the_global_and_per_op_values() {
        let c = Control::new();
        c.set_latency(None, Duration::from_millis(2));
        c.set_latency(Some(Op::Head), Duration::from_millis(3));
        assert_eq!(c.latency(Op::Head), Duration::from_millis(5));
        assert_eq!(c.latency(Op::List), Duration::from_millis(2));
        c.clear();
        assert_eq!(c.latency(Op::Head), Duration::ZERO);
    }
}
