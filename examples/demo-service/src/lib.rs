//! The demo service of `rollcage demo`: a tiny HTTP service that answers with
//! its release and fails or slows down on demand, so that a deployment of a
//! good release can be promoted and one of a bad release rolled back.
//!
//! * `GET /` → 200 `{"release": "1.2.0", "instance": <pid>}`, or, with
//!   probability `ERROR_RATE`, 500 `{"error": "injected failure", "release": "1.2.0"}`;
//!   either after `EXTRA_LATENCY_MS` (`RELEASE_EXTRA_LATENCY_MS` for one
//!   release). With `ERRORS_AFTER_MS`, the failures
//!   begin only that long after the instance started (a release that goes
//!   bad once it is promoted).
//! * `GET /healthz` → 200 `{"status": "ok", "release": "1.2.0"}`, always and at once.
//!
//! It listens on `127.0.0.1:<--port>` and stops gracefully on SIGTERM or
//! Ctrl-C. The `demo-service` binary is [`Settings::from_env_and_args`] and
//! [`serve`]; the host embeds the same two calls as a hidden subcommand.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// How the service behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Port on 127.0.0.1 (`--port N`, or `PORT`).
    pub port: u16,
    /// The release it reports (`VERSION`, else `RELEASE`, else `dev`).
    pub release: String,
    /// Share of `/` requests answered 500, 0.0 to 1.0 (`ERROR_RATE`, default
    /// 0; `RELEASE_ERROR_RATES="1.2.0=0.3"` sets it for one release).
    pub error_rate: f64,
    /// Delay before answering `/`, in milliseconds (`EXTRA_LATENCY_MS`,
    /// default 0; `RELEASE_EXTRA_LATENCY_MS="1.2.0=400"` sets it for one
    /// release).
    pub extra_latency_ms: u64,
    /// Failures begin this many milliseconds after start (`ERRORS_AFTER_MS`,
    /// default 0: at once).
    pub errors_after_ms: u64,
}

impl Settings {
    /// Settings from the process environment and `args` (the arguments
    /// after the program or subcommand name).
    pub fn from_env_and_args<I, S>(args: I) -> Result<Settings, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Settings::from_vars_and_args(|name| std::env::var(name).ok(), args)
    }

    /// Settings from `var` (an environment lookup) and `args`.
    pub fn from_vars_and_args<I, S>(
        var: impl Fn(&str) -> Option<String>,
        args: I,
    ) -> Result<Settings, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        // An empty variable counts as unset.
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let parse_port = |value: &str, what: &str| {
            value
                .trim()
                .parse::<u16>()
                .map_err(|_| format!("{what} must be a port number (0-65535), not `{value}`"))
        };

        let mut port = None;
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let value = if arg == "--port" {
                args.next()
                    .ok_or_else(|| "--port needs a port number".to_string())?
            } else if let Some(value) = arg.strip_prefix("--port=") {
                value.to_string()
            } else {
                return Err(format!(
                    "unknown argument `{arg}`: the only argument is --port N"
                ));
            };
            port = Some(parse_port(&value, "--port")?);
        }
        let port = match port {
            Some(port) => port,
            None => match var("PORT") {
                Some(value) => parse_port(&value, "PORT")?,
                None => return Err("--port N is required (or set PORT)".into()),
            },
        };

        let release = var("VERSION")
            .or_else(|| var("RELEASE"))
            .map(|r| r.trim().to_string())
            .unwrap_or_else(|| "dev".into());

        let error_rate = match var("ERROR_RATE") {
            None => 0.0,
            Some(value) => value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    format!("ERROR_RATE must be a number from 0.0 to 1.0, not `{value}`")
                })?,
        };

        // Per-release failure, so that one configuration can hold a good
        // release and a bad one: `RELEASE_ERROR_RATES="1.2.0=0.3"`.
        let mut error_rate = error_rate;
        if let Some(list) = var("RELEASE_ERROR_RATES") {
            for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let bad = || {
                    format!(
                        "RELEASE_ERROR_RATES must be `RELEASE=RATE` pairs separated by commas (rates 0.0 to 1.0), not `{entry}`"
                    )
                };
                let (r, rate) = entry.split_once('=').ok_or_else(bad)?;
                let rate = rate
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| (0.0..=1.0).contains(x))
                    .ok_or_else(bad)?;
                if r.trim() == release {
                    error_rate = rate;
                }
            }
        }

        let extra_latency_ms = match var("EXTRA_LATENCY_MS") {
            None => 0,
            Some(value) => value.trim().parse::<u64>().map_err(|_| {
                format!("EXTRA_LATENCY_MS must be a whole number of milliseconds, not `{value}`")
            })?,
        };

        // Per-release latency, as the rates above: a slow release beside a
        // fast one, `RELEASE_EXTRA_LATENCY_MS="1.2.0=400"`.
        let mut extra_latency_ms = extra_latency_ms;
        if let Some(list) = var("RELEASE_EXTRA_LATENCY_MS") {
            for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let bad = || {
                    format!(
                        "RELEASE_EXTRA_LATENCY_MS must be `RELEASE=MILLISECONDS` pairs separated by commas, not `{entry}`"
                    )
                };
                let (r, ms) = entry.split_once('=').ok_or_else(bad)?;
                let ms = ms.trim().parse::<u64>().map_err(|_| bad())?;
                if r.trim() == release {
                    extra_latency_ms = ms;
                }
            }
        }

        let errors_after_ms = match var("ERRORS_AFTER_MS") {
            None => 0,
            Some(value) => value.trim().parse::<u64>().map_err(|_| {
                format!("ERRORS_AFTER_MS must be a whole number of milliseconds, not `{value}`")
            })?,
        };

        Ok(Settings {
            port,
            release,
            error_rate,
            extra_latency_ms,
            errors_after_ms,
        })
    }
}

struct App {
    settings: Settings,
    started: std::time::Instant,
    instance: u32,
    requests: AtomicU64,
    random: RandomState,
}

impl App {
    /// Whether this request gets the injected failure.
    fn fails(&self) -> bool {
        let rate = self.settings.error_rate;
        if rate <= 0.0
            || self.started.elapsed() < Duration::from_millis(self.settings.errors_after_ms)
        {
            return false;
        }
        if rate >= 1.0 {
            return true;
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        // A keyed hash of a counter: uniform enough for a demo, no dependency.
        let draw = (self.random.hash_one(n) >> 11) as f64 / (1u64 << 53) as f64;
        draw < rate
    }
}

/// The service's routes.
pub fn router(settings: Settings) -> Router {
    let app = Arc::new(App {
        settings,
        started: std::time::Instant::now(),
        instance: std::process::id(),
        requests: AtomicU64::new(0),
        random: RandomState::new(),
    });
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .with_state(app)
}

async fn root(State(app): State<Arc<App>>) -> (StatusCode, Json<Value>) {
    if app.settings.extra_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(app.settings.extra_latency_ms)).await;
    }
    if app.fails() {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": "injected failure", "release": app.settings.release })),
        )
    } else {
        (
            StatusCode::OK,
            Json(json!({ "release": app.settings.release, "instance": app.instance })),
        )
    }
}

async fn healthz(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({ "status": "ok", "release": app.settings.release }))
}

/// Serve on `127.0.0.1:<port>` until SIGTERM or Ctrl-C, then finish the
/// requests in flight and return.
pub async fn serve(settings: Settings) -> io::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, settings.port)).await?;
    eprintln!(
        "demo-service {} (pid {}) listening on {} (error rate {}, extra latency {} ms)",
        settings.release,
        std::process::id(),
        listener.local_addr()?,
        settings.error_rate,
        settings.extra_latency_ms
    );
    serve_on(listener, settings, shutdown_signal()).await
}

/// Serve on `listener` until `shutdown` completes, then finish the requests
/// in flight and return.
pub async fn serve_on(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(settings))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on SIGTERM (on Unix) or Ctrl-C.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)], args: &[&str]) -> Result<Settings, String> {
        Settings::from_vars_and_args(
            |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            },
            args.iter().copied(),
        )
    }

    #[test]
    fn failures_can_wait_until_the_instance_has_run_a_while() {
        let app = |errors_after_ms| App {
            settings: Settings {
                port: 1,
                release: "1.2.0".into(),
                error_rate: 1.0,
                extra_latency_ms: 0,
                errors_after_ms,
            },
            started: std::time::Instant::now(),
            instance: 1,
            requests: AtomicU64::new(0),
            random: RandomState::new(),
        };
        assert!(app(0).fails());
        assert!(!app(60_000).fails());
        assert_eq!(
            parse(&[("ERRORS_AFTER_MS", "8000")], &["--port", "1"])
                .unwrap()
                .errors_after_ms,
            8000
        );
        assert!(parse(&[("ERRORS_AFTER_MS", "8s")], &["--port", "1"]).is_err());
    }

    #[test]
    fn settings_come_from_args_and_env() {
        assert_eq!(
            parse(&[], &["--port", "8080"]).unwrap(),
            Settings {
                port: 8080,
                release: "dev".into(),
                error_rate: 0.0,
                extra_latency_ms: 0,
                errors_after_ms: 0
            }
        );
        let s = parse(
            &[
                ("VERSION", "1.2.0"),
                ("RELEASE", "9.9.9"),
                ("ERROR_RATE", "0.3"),
                ("EXTRA_LATENCY_MS", "250"),
            ],
            &["--port=9000"],
        )
        .unwrap();
        assert_eq!(
            (s.port, s.release.as_str(), s.error_rate, s.extra_latency_ms),
            (9000, "1.2.0", 0.3, 250)
        );
        assert_eq!(
            parse(&[("RELEASE", "1.1.0"), ("VERSION", "")], &["--port", "1"])
                .unwrap()
                .release,
            "1.1.0"
        );
        assert_eq!(parse(&[("PORT", "7000")], &[]).unwrap().port, 7000);
        // A per-release rate applies to that release only.
        let rates = ("RELEASE_ERROR_RATES", "1.2.0=0.3, 1.3.0=1");
        let bad = parse(&[("VERSION", "1.2.0"), rates], &["--port", "1"]).unwrap();
        assert_eq!(bad.error_rate, 0.3);
        let good = parse(&[("VERSION", "1.1.0"), rates], &["--port", "1"]).unwrap();
        assert_eq!(good.error_rate, 0.0);
        assert!(
            parse(&[("RELEASE_ERROR_RATES", "1.2.0")], &["--port", "1"])
                .unwrap_err()
                .starts_with("RELEASE_ERROR_RATES must be")
        );
        // So does a per-release latency.
        let slow = ("RELEASE_EXTRA_LATENCY_MS", "1.2.0=400");
        let s = parse(&[("VERSION", "1.2.0"), slow], &["--port", "1"]).unwrap();
        assert_eq!(s.extra_latency_ms, 400);
        let s = parse(
            &[("VERSION", "1.1.0"), ("EXTRA_LATENCY_MS", "5"), slow],
            &["--port", "1"],
        )
        .unwrap();
        assert_eq!(s.extra_latency_ms, 5);
        assert_eq!(
            parse(
                &[("RELEASE_EXTRA_LATENCY_MS", "1.2.0=0.4s")],
                &["--port", "1"]
            )
            .unwrap_err(),
            "RELEASE_EXTRA_LATENCY_MS must be `RELEASE=MILLISECONDS` pairs separated by commas, not `1.2.0=0.4s`"
        );
        assert_eq!(
            parse(&[("PORT", "7000")], &["--port", "7001"])
                .unwrap()
                .port,
            7001
        );
    }

    #[test]
    fn settings_errors_name_the_variable() {
        let err = |vars: &[(&str, &str)], args: &[&str]| parse(vars, args).unwrap_err();
        assert_eq!(
            err(&[("ERROR_RATE", "lots")], &["--port", "1"]),
            "ERROR_RATE must be a number from 0.0 to 1.0, not `lots`"
        );
        assert!(err(&[("ERROR_RATE", "1.5")], &["--port", "1"]).starts_with("ERROR_RATE"));
        assert!(err(&[("ERROR_RATE", "NaN")], &["--port", "1"]).starts_with("ERROR_RATE"));
        assert_eq!(
            err(&[("EXTRA_LATENCY_MS", "-3")], &["--port", "1"]),
            "EXTRA_LATENCY_MS must be a whole number of milliseconds, not `-3`"
        );
        assert_eq!(
            err(&[], &["--port", "http"]),
            "--port must be a port number (0-65535), not `http`"
        );
        assert!(err(&[("PORT", "99999")], &[]).starts_with("PORT must be"));
        assert_eq!(err(&[], &["--port"]), "--port needs a port number");
        assert_eq!(err(&[], &[]), "--port N is required (or set PORT)");
        assert_eq!(
            err(&[], &["--verbose"]),
            "unknown argument `--verbose`: the only argument is --port N"
        );
    }
}
