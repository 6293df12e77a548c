//! The service over real sockets: the library on free ports, and the binary
//! stopped by SIGTERM.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rollcage_demo_service::{Settings, serve, serve_on};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

fn settings(error_rate: f64) -> Settings {
    Settings {
        port: 0,
        release: "1.2.0".into(),
        error_rate,
        extra_latency_ms: 0,
        errors_after_ms: 0,
    }
}

/// `GET path` with a bare HTTP/1.1 client: the status and the JSON body.
async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap())
}

/// Serve `settings` on a free port until the returned sender is dropped.
async fn start(settings: Settings) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, settings, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn serve_binds_the_port_and_answers_with_its_release() {
    let port = free_port();
    tokio::spawn(serve(Settings {
        port,
        ..settings(0.0)
    }));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(addr).await;
    let (status, body) = get(addr, "/").await;
    assert_eq!(status, 200);
    assert_eq!(body["release"], "1.2.0");
    assert_eq!(body["instance"], std::process::id());
    let (status, body) = get(addr, "/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn error_rate_one_always_fails_but_stays_healthy() {
    let (addr, _stop) = start(settings(1.0)).await;
    for _ in 0..5 {
        let (status, body) = get(addr, "/").await;
        assert_eq!(status, 500);
        assert_eq!(body["error"], "injected failure");
        assert_eq!(body["release"], "1.2.0");
    }
    assert_eq!(get(addr, "/healthz").await.0, 200);
}

#[tokio::test]
async fn error_rate_zero_never_fails() {
    let (addr, _stop) = start(settings(0.0)).await;
    for _ in 0..20 {
        assert_eq!(get(addr, "/").await.0, 200);
    }
}

#[tokio::test]
async fn a_partial_error_rate_fails_some_requests() {
    let (addr, _stop) = start(settings(0.5)).await;
    let mut failed = 0;
    for _ in 0..200 {
        if get(addr, "/").await.0 == 500 {
            failed += 1;
        }
    }
    assert!((40..=160).contains(&failed), "{failed} of 200 failed");
}

#[tokio::test]
async fn extra_latency_delays_the_answer_but_not_the_health_check() {
    let (addr, _stop) = start(Settings {
        extra_latency_ms: 300,
        ..settings(0.0)
    })
    .await;
    let started = Instant::now();
    assert_eq!(get(addr, "/").await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[cfg(unix)]
#[tokio::test]
async fn the_binary_stops_gracefully_on_sigterm() {
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_demo-service"))
        .args(["--port", &port.to_string()])
        .env("VERSION", "2.0.0")
        .env_remove("ERROR_RATE")
        .env_remove("EXTRA_LATENCY_MS")
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(addr).await;
    let (status, body) = get(addr, "/").await;
    assert_eq!((status, body["release"].as_str()), (200, Some("2.0.0")));
    assert_eq!(body["instance"], child.id());
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("demo-service did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn the_binary_refuses_bad_settings_with_exit_code_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_demo-service"))
        .args(["--port", "1"])
        .env("ERROR_RATE", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR_RATE must be"), "{stderr}");
}
