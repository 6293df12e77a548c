//! What the router measures: request counters and latency histograms per
//! service, slot and release, rendered in the Prometheus text exposition
//! format, and the per-second [`Window`]s behind the admin API's stats.
//! One mutex guards it all: a local router's request rate makes contention
//! irrelevant, and one lock keeps counters and windows consistent.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::window::{self, BOUNDS, Counts, Window};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    service: String,
    slot: String,
    release: String,
}

#[derive(Debug, Default)]
struct Series {
    statuses: BTreeMap<u16, u64>,
    latency: [u64; BOUNDS.len() + 1],
    sum_seconds: f64,
    window: Window,
}

/// A slot's supervision numbers, read from the supervisor at scrape time.
#[derive(Debug, Clone)]
pub struct SlotGauge {
    pub service: String,
    pub slot: String,
    pub restarts: u64,
    pub ready: u64,
}

#[derive(Debug)]
pub struct Metrics {
    /// Windows count whole seconds of this monotonic clock.
    epoch: Instant,
    series: Mutex<BTreeMap<SeriesKey, Series>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            epoch: Instant::now(),
            series: Mutex::default(),
        }
    }
}

fn key(service: &str, slot: &str, release: &str) -> SeriesKey {
    SeriesKey {
        service: service.to_owned(),
        slot: slot.to_owned(),
        release: release.to_owned(),
    }
}

impl Metrics {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SeriesKey, Series>> {
        // A panic elsewhere while holding the lock leaves plain counters
        // behind, which are still worth serving.
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one answered request. `slot` and `release` are empty when no
    /// slot could take it.
    pub fn record(&self, service: &str, slot: &str, release: &str, status: u16, took: Duration) {
        let now = self.now();
        let seconds = took.as_secs_f64();
        let mut series = self.lock();
        let s = series.entry(key(service, slot, release)).or_default();
        *s.statuses.entry(status).or_default() += 1;
        s.latency[window::bucket_of(seconds)] += 1;
        s.sum_seconds += seconds;
        s.window.record(now, status >= 500, seconds);
    }

    /// The counts of one slot and release over the last `seconds`.
    pub fn window(&self, service: &str, slot: &str, release: &str, seconds: u64) -> Counts {
        let now = self.now();
        self.lock()
            .get(&key(service, slot, release))
            .map(|s| s.window.sum(now, seconds))
            .unwrap_or_default()
    }

    /// Drop every series of a removed service.
    pub fn forget_service(&self, service: &str) {
        self.lock().retain(|k, _| k.service != service);
    }

    /// Everything, in the Prometheus text format (version 0.0.4).
    pub fn render(&self, gauges: &[SlotGauge]) -> String {
        let series = self.lock();
        let mut out = String::new();
        let labels = |k: &SeriesKey| {
            format!(
                "service=\"{}\",slot=\"{}\",release=\"{}\"",
                escape(&k.service),
                escape(&k.slot),
                escape(&k.release)
            )
        };
        out.push_str("# HELP http_requests_total Requests answered by the local router.\n");
        out.push_str("# TYPE http_requests_total counter\n");
        for (k, s) in series.iter() {
            for (status, n) in &s.statuses {
                let _ = writeln!(
                    out,
                    "http_requests_total{{{},status=\"{status}\"}} {n}",
                    labels(k)
                );
            }
        }
        out.push_str(
            "# HELP http_request_duration_seconds Time from a request's arrival to the upstream's response head.\n",
        );
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        for (k, s) in series.iter() {
            let l = labels(k);
            let mut cumulative = 0;
            for (i, n) in s.latency.iter().enumerate() {
                cumulative += n;
                let le = BOUNDS.get(i).map_or("+Inf".to_owned(), f64::to_string);
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{{l}}} {}",
                s.sum_seconds
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{l}}} {cumulative}"
            );
        }
        drop(series);
        let gauge_labels = |g: &SlotGauge| {
            format!(
                "service=\"{}\",slot=\"{}\"",
                escape(&g.service),
                escape(&g.slot)
            )
        };
        out.push_str(
            "# HELP rollcage_local_instance_restarts_total Restarts of a slot's instances since its release was applied.\n",
        );
        out.push_str("# TYPE rollcage_local_instance_restarts_total counter\n");
        for g in gauges {
            let _ = writeln!(
                out,
                "rollcage_local_instance_restarts_total{{{}}} {}",
                gauge_labels(g),
                g.restarts
            );
        }
        out.push_str("# HELP rollcage_local_instances_ready Instances of a slot that pass their health check.\n");
        out.push_str("# TYPE rollcage_local_instances_ready gauge\n");
        for g in gauges {
            let _ = writeln!(
                out,
                "rollcage_local_instances_ready{{{}}} {}",
                gauge_labels(g),
                g.ready
            );
        }
        out
    }
}

/// The `GET /metrics` endpoint; `render` produces the text at each scrape.
pub fn app(render: impl Fn() -> String + Clone + Send + Sync + 'static) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = render();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    )
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.record("api", "stable", "1.0", 200, Duration::from_millis(3));
        m.record("api", "stable", "1.0", 200, Duration::from_millis(30));
        m.record("api", "stable", "1.0", 502, Duration::from_secs(20));
        let text = m.render(&[SlotGauge {
            service: "api".into(),
            slot: "stable".into(),
            restarts: 2,
            ready: 1,
        }]);
        let l = r#"service="api",slot="stable",release="1.0""#;
        for line in [
            "# TYPE http_requests_total counter".to_owned(),
            format!("http_requests_total{{{l},status=\"200\"}} 2"),
            format!("http_requests_total{{{l},status=\"502\"}} 1"),
            "# TYPE http_request_duration_seconds histogram".to_owned(),
            format!("http_request_duration_seconds_bucket{{{l},le=\"0.005\"}} 1"),
            format!("http_request_duration_seconds_bucket{{{l},le=\"0.05\"}} 2"),
            format!("http_request_duration_seconds_bucket{{{l},le=\"10\"}} 2"),
            format!("http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} 3"),
            format!("http_request_duration_seconds_sum{{{l}}} 20.033"),
            format!("http_request_duration_seconds_count{{{l}}} 3"),
            r#"rollcage_local_instance_restarts_total{service="api",slot="stable"} 2"#.to_owned(),
            "# TYPE rollcage_local_instances_ready gauge".to_owned(),
            r#"rollcage_local_instances_ready{service="api",slot="stable"} 1"#.to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        // Every sample line is `name{labels} value`, after its TYPE line.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.ends_with('}'), "{line}");
            value.parse::<f64>().unwrap();
        }
    }

    #[test]
    fn windows_follow_slot_and_release_and_services_can_be_forgotten() {
        let m = Metrics::default();
        m.record("api", "canary", "2.0", 200, Duration::from_millis(1));
        m.record("api", "canary", "2.0", 503, Duration::from_millis(1));
        m.record("api", "canary", "1.0", 200, Duration::from_millis(1));
        let c = m.window("api", "canary", "2.0", 60);
        assert_eq!((c.requests, c.errors), (2, 1));
        m.forget_service("api");
        assert_eq!(m.window("api", "canary", "2.0", 60), Counts::default());
        assert!(!m.render(&[]).contains("canary"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
