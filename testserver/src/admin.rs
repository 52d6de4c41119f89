//! The unsigned admin endpoint on the S3 port, for a benchmark that runs the server in
//! another process: `GET /__admin/stats` (JSON counters and the server's CPU seconds) and
//! `POST /__admin/reset` (zero the counters), `POST /__admin/latency?ms=N` (latency added to
//! every request from now on), `POST /__admin/slowdown?op=head&above=K&rate=P&seed=S` (503
//! SlowDown for `op`, default `head`, above K in flight and/or for a seeded random share P;
//! a parameter left out turns that rule off).
//!
//! Receives every request first; answers those under `/__admin/` and passes on the rest.
//! Invariant: admin requests are never counted, so reading stats does not change them
//! (`__admin` is not a valid bucket name, so no S3 path is shadowed).

use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use crate::control::Op;
use crate::frontend::{RespBody, full};
use crate::state::State;

const PREFIX: &str = "/__admin/";

/// The admin answer, or `None` for a request that is not an admin request.
pub(crate) fn respond<B>(state: &State, req: &Request<B>) -> Option<Response<RespBody>> {
    let what = req.uri().path().strip_prefix(PREFIX)?;
    let resp = match (req.method(), what) {
        (&Method::GET, "stats") => {
            let mut resp = Response::new(full(stats_json(state, cpu_seconds())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        (&Method::POST, "reset") => {
            state.reset_counters();
            status(StatusCode::NO_CONTENT)
        }
        (&Method::POST, "latency") => match latency_ms(req.uri().query()) {
            Some(ms) => {
                state.set_latency(None, std::time::Duration::from_millis(ms));
                status(StatusCode::NO_CONTENT)
            }
            None => status(StatusCode::BAD_REQUEST),
        },
        (&Method::POST, "slowdown") => match slowdown(req.uri().query().unwrap_or_default()) {
            Some(s) => {
                state.slowdown_above_in_flight(s.op, s.above);
                state.slowdown_at_random(s.op, s.rate, s.seed);
                status(StatusCode::NO_CONTENT)
            }
            None => status(StatusCode::BAD_REQUEST),
        },
        _ => status(StatusCode::NOT_FOUND),
    };
    Some(resp)
}

/// `ms=N` from `POST /__admin/latency?ms=N`.
fn latency_ms(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("ms="))?
        .parse()
        .ok()
}

/// The throttling rules of `POST /__admin/slowdown`.
#[derive(Debug, PartialEq)]
struct Slowdown {
    op: Op,
    above: Option<u64>,
    rate: Option<f64>,
    seed: u64,
}

/// `op=head&above=K&rate=P&seed=S`, every part optional; `None` if a part does not parse.
fn slowdown(query: &str) -> Option<Slowdown> {
    let mut s = Slowdown {
        op: Op::Head,
        above: None,
        rate: None,
        seed: 0,
    };
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=')?;
        match k {
            "op" => s.op = *Op::ALL.iter().find(|op| op.name() == v)?,
            "above" => s.above = Some(v.parse().ok()?),
            "rate" => s.rate = Some(v.parse().ok().filter(|r| (0.0..=1.0).contains(r))?),
            "seed" => s.seed = v.parse().ok()?,
            _ => return None,
        }
    }
    Some(s)
}

fn status(code: StatusCode) -> Response<RespBody> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = code;
    resp
}

/// `{"requests":{"list":N,…},"total":N,"in_flight":{…},"peak_in_flight":{…},
/// "busy_seconds":{…},"cpu_seconds":F}` (`busy_seconds`: time in flight summed over requests,
/// so its growth over a wall-clock interval is the mean number in flight; `cpu_seconds` is
/// `null` where `/proc/self/stat` is unreadable).
pub(crate) fn stats_json(state: &State, cpu: Option<f64>) -> String {
    let by_op = |f: &dyn Fn(Op) -> u64| {
        let fields: Vec<String> = Op::ALL
            .iter()
            .map(|op| format!("\"{}\":{}", op.name(), f(*op)))
            .collect();
        format!("{{{}}}", fields.join(","))
    };
    let busy: Vec<String> = Op::ALL
        .iter()
        .map(|op| format!("\"{}\":{:.6}", op.name(), state.busy_seconds(*op)))
        .collect();
    let cpu = cpu.map_or_else(|| "null".to_owned(), |s| format!("{s:.3}"));
    format!(
        "{{\"requests\":{},\"total\":{},\"in_flight\":{},\"peak_in_flight\":{},\"busy_seconds\":{{{}}},\"cpu_seconds\":{cpu}}}",
        by_op(&|op| state.requests(op)),
        state.total_requests(),
        by_op(&|op| state.in_flight(op)),
        by_op(&|op| state.peak_in_flight(op)),
        busy.join(","),
    )
}

/// User plus system CPU time of this process, from `/proc/self/stat` (Linux, 100 ticks/s).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_seconds(&stat)
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) is parenthesised and may hold spaces and ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // After the name come field 3 (state) onwards; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert!(cpu_seconds().is_some());
    }

    #[test]
    fn parses_slowdown_rules() {
        assert_eq!(
            slowdown("above=8"),
            Some(Slowdown {
                op: Op::Head,
                above: Some(8),
                rate: None,
                seed: 0
            })
        );
        assert_eq!(
            slowdown("op=list&rate=0.15&seed=7"),
            Some(Slowdown {
                op: Op::List,
                above: None,
                rate: Some(0.15),
                seed: 7
            })
        );
        assert_eq!(slowdown("").map(|s| (s.above, s.rate)), Some((None, None)));
        for bad in ["rate=1.5", "above=x", "op=nope", "what=1", "above"] {
            assert_eq!(slowdown(bad), None, "{bad}");
        }
    }

    #[test]
    fn stats_json_lists_every_op() {
        let state = State::new();
        drop(state.control.arrive(Op::Head));
        let json = stats_json(&state, Some(1.5));
        assert!(json.starts_with("{\"requests\":{\"list\":0,\"head\":1,"));
        assert!(json.contains("\"total\":1,"));
        assert!(json.ends_with("\"cpu_seconds\":1.500}"));
    }
}
