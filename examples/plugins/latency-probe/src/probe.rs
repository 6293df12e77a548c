//! The measurement: GET each endpoint `requests` times, one request after
//! the other, and judge the 95th percentile of the answers' latency against
//! the budget.
//!
//! The percentile is the nearest-rank one: of `n` answers sorted by
//! latency, the `ceil(0.95 n)`-th. Latency is counted for every answer,
//! whatever its status; a request with no answer (refused, timed out) or a
//! status other than 2xx is a failed request, counted apart against
//! `max_failures`. The probe stops as soon as the verdict cannot change:
//! more failures than tolerated, or so many answers over the budget that
//! the percentile is over it whatever the rest would be. So a slow slot
//! costs a few slow requests, not `requests` of them, and the call stays
//! within the plugin's time limit.
//!
//! The requests go through `send`, so the logic runs natively in tests with
//! a fake service.

use std::time::Duration;

use rollcage_sdk::Error;
use rollcage_sdk::types::{Measurement, Verdict};

use crate::config::Config;

/// What one request gave: its status and how long the answer took.
pub type Answer = Result<(u16, Duration), Error>;

/// The answers' latencies (milliseconds) and the failed requests.
#[derive(Debug, Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    failures: u32,
    /// The first failure, to name in the detail.
    first_failure: Option<String>,
    planned: usize,
    sent: usize,
}

/// The nearest-rank 95th percentile of `values` (unsorted); `None` when
/// there are none.
pub fn p95(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (0.95 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.max(1) - 1])
}

/// How many of `n` values may be over a bound with the 95th percentile
/// still within it: `n - ceil(0.95 n)`.
fn slack(n: usize) -> usize {
    n - (0.95 * n as f64).ceil() as usize
}

/// Measure `endpoints` (`host:port`) as `config` says, sending each
/// request through `send(url)`. `Err` only for a denied request: a grant to
/// fix, not a measurement of the slot.
pub fn measure(
    endpoints: &[String],
    config: &Config,
    mut send: impl FnMut(&str) -> Answer,
) -> Result<Measurement, String> {
    if endpoints.is_empty() {
        return Ok(Measurement {
            verdict: Verdict::Inconclusive,
            value: None,
            detail: "no ready endpoint to measure".into(),
        });
    }
    let mut tally = Tally {
        planned: endpoints.len() * config.requests as usize,
        ..Tally::default()
    };
    let allowed_slow = slack(tally.planned);
    let mut slow = 0;
    'probe: for _ in 0..config.requests {
        // Round-robin over the endpoints, as the router spreads traffic.
        for endpoint in endpoints {
            let url = format!("http://{endpoint}{}", config.path);
            tally.sent += 1;
            match send(&url) {
                Err(e @ Error::Denied(_)) => return Err(e.to_string()),
                Err(e) => {
                    tally.failures += 1;
                    tally.first_failure.get_or_insert_with(|| e.to_string());
                }
                Ok((status, took)) => {
                    let ms = took.as_secs_f64() * 1000.0;
                    tally.latencies_ms.push(ms);
                    if ms > config.max_p95_ms {
                        slow += 1;
                    }
                    if !(200..300).contains(&status) {
                        tally.failures += 1;
                        tally
                            .first_failure
                            .get_or_insert_with(|| format!("GET {url} answered {status}"));
                    }
                }
            }
            if tally.failures > config.max_failures || slow > allowed_slow {
                break 'probe;
            }
        }
    }
    Ok(judge(&tally, endpoints.len(), config))
}

fn judge(tally: &Tally, endpoints: usize, config: &Config) -> Measurement {
    let budget = config.max_p95_ms;
    let p95 = p95(&tally.latencies_ms);
    let of = if tally.sent < tally.planned {
        format!(
            "{} of {} GETs of {} on {endpoints} endpoint(s), stopped early",
            tally.sent, tally.planned, config.path
        )
    } else {
        format!(
            "{} GETs of {} on {endpoints} endpoint(s)",
            tally.sent, config.path
        )
    };
    let failed = match &tally.first_failure {
        Some(first) => format!("{} failed (first: {first})", tally.failures),
        None => "none failed".into(),
    };
    let Some(p95) = p95 else {
        return Measurement {
            verdict: Verdict::Fail,
            value: None,
            detail: format!("no answer to {of}: {failed}"),
        };
    };
    let verdict = if tally.failures > config.max_failures || p95 > budget {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    Measurement {
        verdict,
        // Seconds, as the contract's measurements of latency are.
        value: Some(p95 / 1000.0),
        detail: format!(
            "p95 {p95:.0} ms (budget {budget} ms) over {of}; {failed}, {} tolerated",
            config.max_failures
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcage_sdk::types::CheckTarget;

    fn config(json: &str) -> Config {
        Config::parse(json).unwrap()
    }

    /// A slot of two endpoints as the host passes it.
    fn target() -> CheckTarget {
        CheckTarget {
            environment: "staging".into(),
            slot: "1.2.0".into(),
            release: "1.2.0".into(),
            endpoints: vec!["127.0.0.1:9001".into(), "127.0.0.1:9002".into()],
            exposure: None,
        }
    }

    fn ok(ms: u64) -> Answer {
        Ok((200, Duration::from_millis(ms)))
    }

    #[test]
    fn the_percentile_is_the_nearest_rank() {
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(p95(&twenty), Some(19.0));
        assert_eq!(p95(&[5.0]), Some(5.0));
        assert_eq!(p95(&[3.0, 1.0, 2.0]), Some(3.0));
        assert_eq!(p95(&[]), None);
        assert_eq!(slack(20), 1);
        assert_eq!(slack(19), 0);
        assert_eq!(slack(40), 2);
    }

    #[test]
    fn a_fast_slot_passes_with_its_p95_in_seconds() {
        let t = target();
        let mut urls = Vec::new();
        let m = measure(
            &t.endpoints,
            &config(r#"{"max_p95_ms": 100, "requests": 10, "path": "/api"}"#),
            |url| {
                urls.push(url.to_string());
                ok(if urls.len() == 20 { 400 } else { 20 })
            },
        )
        .unwrap();
        // One slow answer of twenty is the 5% the percentile leaves out.
        assert_eq!(m.verdict, Verdict::Pass, "{}", m.detail);
        assert_eq!(m.value, Some(0.02));
        assert_eq!(urls.len(), 20);
        assert_eq!(urls[0], "http://127.0.0.1:9001/api");
        assert_eq!(urls[1], "http://127.0.0.1:9002/api");
        assert_eq!(
            m.detail,
            "p95 20 ms (budget 100 ms) over 20 GETs of /api on 2 endpoint(s); none failed, 0 tolerated"
        );
    }

    #[test]
    fn a_slow_slot_fails_after_only_a_few_requests() {
        let t = target();
        let mut sent = 0;
        let m = measure(&t.endpoints, &config(r#"{"max_p95_ms": 100}"#), |_| {
            sent += 1;
            ok(300)
        })
        .unwrap();
        assert_eq!(m.verdict, Verdict::Fail, "{}", m.detail);
        assert_eq!(m.value, Some(0.3));
        // Of 40, two may be slow: the third decides.
        assert_eq!(sent, 3);
        assert!(
            m.detail
                .contains("3 of 40 GETs of / on 2 endpoint(s), stopped early"),
            "{}",
            m.detail
        );
    }

    #[test]
    fn errors_fail_the_check_beyond_the_tolerance() {
        let t = target();
        let answers = |n: usize| -> Answer {
            if n.is_multiple_of(5) {
                Ok((503, Duration::from_millis(5)))
            } else {
                ok(10)
            }
        };
        let mut n = 0;
        let strict = measure(
            &t.endpoints,
            &config(r#"{"max_p95_ms": 100, "requests": 10}"#),
            |_| {
                n += 1;
                answers(n)
            },
        )
        .unwrap();
        assert_eq!(strict.verdict, Verdict::Fail);
        assert!(
            strict
                .detail
                .contains("1 failed (first: GET http://127.0.0.1:9001/ answered 503)"),
            "{}",
            strict.detail
        );
        let mut n = 0;
        let lenient = measure(
            &t.endpoints,
            &config(r#"{"max_p95_ms": 100, "requests": 10, "max_failures": 4}"#),
            |_| {
                n += 1;
                answers(n)
            },
        )
        .unwrap();
        assert_eq!(lenient.verdict, Verdict::Pass, "{}", lenient.detail);
        assert!(lenient.detail.contains("4 failed"), "{}", lenient.detail);
    }

    #[test]
    fn a_slot_that_does_not_answer_is_unhealthy_not_an_error() {
        let t = target();
        let m = measure(&t.endpoints, &config(r#"{"max_p95_ms": 100}"#), |url| {
            Err(Error::Http(format!(
                "request to `{url}` failed: connection refused"
            )))
        })
        .unwrap();
        assert_eq!((m.verdict, m.value), (Verdict::Fail, None));
        assert!(
            m.detail.starts_with("no answer to 1 of 40 GETs"),
            "{}",
            m.detail
        );
    }

    #[test]
    fn a_denied_request_is_an_error_naming_the_grant() {
        let t = target();
        let e = measure(&t.endpoints, &config(r#"{"max_p95_ms": 100}"#), |_| {
            Err(Error::Denied(
                "request to `127.0.0.1:9001` denied: the host is not in this plugin's allow_hosts"
                    .into(),
            ))
        })
        .unwrap_err();
        assert!(e.contains("allow_hosts"), "{e}");
    }

    #[test]
    fn no_endpoint_is_inconclusive() {
        let m = measure(&[], &config(r#"{"max_p95_ms": 100}"#), |_| unreachable!()).unwrap();
        assert_eq!(m.verdict, Verdict::Inconclusive);
    }
}
