//! `/metrics` in the Prometheus text format: the API's own requests
//! (`http_requests_total{method,route,status}` and the
//! `http_request_duration_seconds` histogram, by route template so that run
//! ids do not explode the series), runs, and every plugin's calls and
//! circuit breaker.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use rollcage_engine::breaker::BreakerState;

use crate::PluginEntry;

/// Upper bounds (seconds) of the request latency histogram. 2 s is a
/// bound so that the "90th percentile over 2 s" alert reads an exact
/// bucket.
const HTTP_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Latency {
    count: u64,
    sum: f64,
    buckets: [u64; HTTP_BUCKETS.len()],
}

/// Counters of the API's requests and of runs.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Latency>>,
    finished: Mutex<BTreeMap<(String, String), u64>>,
}

impl Metrics {
    /// Count a request answered with `status` after `took`.
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap()
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        let mut latency = self.latency.lock().unwrap();
        let l = latency
            .entry((method.to_string(), route.to_string()))
            .or_default();
        let secs = took.as_secs_f64();
        l.count += 1;
        l.sum += secs;
        for (i, le) in HTTP_BUCKETS.iter().enumerate() {
            if secs <= *le {
                l.buckets[i] += 1;
            }
        }
    }

    /// Count a run that ended.
    pub fn run_finished(&self, pipeline: &str, status: &str) {
        *self
            .finished
            .lock()
            .unwrap()
            .entry((pipeline.to_string(), status.to_string()))
            .or_default() += 1;
    }

    /// Everything, in the text format.
    pub fn render(&self, active_runs: usize, plugins: &[PluginEntry]) -> String {
        let mut out = String::new();
        let w = &mut out;
        header(
            w,
            "http_requests_total",
            "counter",
            "API requests answered, by route template and status.",
        );
        for ((method, route, status), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(
                w,
                "http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                esc(method),
                esc(route)
            );
        }
        header(
            w,
            "http_request_duration_seconds",
            "histogram",
            "API request latency, by route template.",
        );
        for ((method, route), l) in self.latency.lock().unwrap().iter() {
            let labels = format!("method=\"{}\",route=\"{}\"", esc(method), esc(route));
            histogram(
                w,
                "http_request_duration_seconds",
                &labels,
                &HTTP_BUCKETS,
                &l.buckets,
                l.count,
                l.sum,
            );
        }
        header(
            w,
            "rollcage_runs_active",
            "gauge",
            "Runs this host is driving.",
        );
        let _ = writeln!(w, "rollcage_runs_active {active_runs}");
        header(
            w,
            "rollcage_runs_finished_total",
            "counter",
            "Runs this host drove to their end, by pipeline and result.",
        );
        for ((pipeline, status), n) in self.finished.lock().unwrap().iter() {
            let _ = writeln!(
                w,
                "rollcage_runs_finished_total{{pipeline=\"{}\",status=\"{}\"}} {n}",
                esc(pipeline),
                esc(status)
            );
        }
        let stats: Vec<_> = plugins
            .iter()
            .map(|p| (esc(&p.id), p.breaker.stats().snapshot()))
            .collect();
        header(
            w,
            "rollcage_plugin_calls_total",
            "counter",
            "Plugin calls made, by plugin and call.",
        );
        for (id, calls) in &stats {
            for (call, c) in calls {
                let _ = writeln!(
                    w,
                    "rollcage_plugin_calls_total{{plugin=\"{id}\",call=\"{call}\"}} {}",
                    c.calls
                );
            }
        }
        header(
            w,
            "rollcage_plugin_call_errors_total",
            "counter",
            "Plugin calls that returned an error.",
        );
        for (id, calls) in &stats {
            for (call, c) in calls {
                let _ = writeln!(
                    w,
                    "rollcage_plugin_call_errors_total{{plugin=\"{id}\",call=\"{call}\"}} {}",
                    c.errors
                );
            }
        }
        header(
            w,
            "rollcage_plugin_calls_rejected_total",
            "counter",
            "Plugin calls refused by an open circuit breaker.",
        );
        for (id, calls) in &stats {
            for (call, c) in calls {
                let _ = writeln!(
                    w,
                    "rollcage_plugin_calls_rejected_total{{plugin=\"{id}\",call=\"{call}\"}} {}",
                    c.rejected
                );
            }
        }
        header(
            w,
            "rollcage_plugin_call_duration_seconds",
            "histogram",
            "Plugin call latency, by plugin and call.",
        );
        for (id, calls) in &stats {
            for (call, c) in calls {
                let labels = format!("plugin=\"{id}\",call=\"{call}\"");
                histogram(
                    w,
                    "rollcage_plugin_call_duration_seconds",
                    &labels,
                    &rollcage_engine::stats::BUCKETS,
                    &c.buckets,
                    c.calls,
                    c.seconds_total,
                );
            }
        }
        header(
            w,
            "rollcage_plugin_breaker_open",
            "gauge",
            "1 while a plugin's circuit breaker is open.",
        );
        for p in plugins {
            let open = matches!(p.breaker.state(), BreakerState::Open { .. });
            let _ = writeln!(
                w,
                "rollcage_plugin_breaker_open{{plugin=\"{}\"}} {}",
                esc(&p.id),
                u8::from(open)
            );
        }
        out
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(
    w: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    buckets: &[u64],
    count: u64,
    sum: f64,
) {
    for (le, n) in bounds.iter().zip(buckets) {
        let _ = writeln!(w, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(w, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(w, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(w, "{name}_count{{{labels}}} {count}");
}

/// A label value escaped as the text format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_with_a_cumulative_histogram() {
        let m = Metrics::default();
        m.request("GET", "/v1/runs/{id}", 200, Duration::from_millis(3));
        m.request("GET", "/v1/runs/{id}", 404, Duration::from_millis(30));
        m.request("POST", "/v1/runs", 202, Duration::from_secs(3));
        m.run_finished("api", "rolled_back");
        let text = m.render(2, &[]);
        assert!(
            text.contains(
                "http_requests_total{method=\"GET\",route=\"/v1/runs/{id}\",status=\"404\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/runs/{id}\",le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/runs/{id}\",le=\"0.05\"} 2\n"), "{text}");
        assert!(text.contains("http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/runs\",le=\"2\"} 0\n"), "{text}");
        assert!(
            text.contains(
                "http_request_duration_seconds_count{method=\"POST\",route=\"/v1/runs\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("rollcage_runs_active 2\n"));
        assert!(
            text.contains(
                "rollcage_runs_finished_total{pipeline=\"api\",status=\"rolled_back\"} 1\n"
            )
        );
        assert_eq!(esc("a\"b\\c"), "a\\\"b\\\\c");
    }
}
