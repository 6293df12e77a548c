//! The server loop over real sockets: a client that trickles its headers
//! is cut off, one address cannot hold more than its share of connections,
//! and an address that keeps failing to authenticate is slowed down.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcage_api::{Api, ApiOptions, Auth, Role, TokenEntry, hash_token};
use rollcage_engine::run::Engine;
use rollcage_store::{SqliteStore, Store};

/// An API with one admin token (`rc_ok`) and nothing to deploy, served on a
/// free loopback port until the test ends.
async fn serve(options: ApiOptions) -> u16 {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let engine = Arc::new(Engine::new(store, vec![], vec![], "h".into()));
    let token = TokenEntry::new("ok", &hash_token("rc_ok"), Role::Admin, vec![]).unwrap();
    let api = Api::new(engine, Auth::new(vec![token]), vec![], options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { api.serve(listener, std::future::pending()).await });
    port
}

/// Send `request` on a new connection; everything the server answers
/// until it closes (or `wait` passes).
fn exchange(port: u16, request: &str, wait: Duration) -> String {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str, token: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    let port = serve(ApiOptions {
        header_read_timeout: Duration::from_millis(300),
        ..ApiOptions::default()
    })
    .await;
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        // Headers begun, never finished.
        exchange(
            port,
            "GET /healthz HTTP/1.1\r\nHost: x\r\n",
            Duration::from_secs(5),
        )
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "held for {took:?}: {answer:?}"
    );
    assert!(!answer.contains("200 OK"), "{answer}");
    // A client that sends its request in time is served.
    let answer = tokio::task::spawn_blocking(move || {
        exchange(port, &get("/healthz", "rc_ok"), Duration::from_secs(5))
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_connections() {
    let port = serve(ApiOptions {
        connections_per_address: 2,
        ..ApiOptions::default()
    })
    .await;
    let answer = tokio::task::spawn_blocking(move || {
        let held: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        // Let the server take both before the third.
        std::thread::sleep(Duration::from_millis(200));
        let third = exchange(port, &get("/healthz", "rc_ok"), Duration::from_secs(5));
        drop(held);
        std::thread::sleep(Duration::from_millis(200));
        let later = exchange(port, &get("/healthz", "rc_ok"), Duration::from_secs(5));
        (third, later)
    })
    .await
    .unwrap();
    assert!(answer.0.starts_with("HTTP/1.1 429"), "{}", answer.0);
    assert!(
        answer.0.contains("\"too_many_connections\""),
        "{}",
        answer.0
    );
    assert!(answer.1.starts_with("HTTP/1.1 200"), "{}", answer.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_is_limited_per_address() {
    let port = serve(ApiOptions {
        auth_failures_per_minute: 3,
        ..ApiOptions::default()
    })
    .await;
    let answers = tokio::task::spawn_blocking(move || {
        let mut answers: Vec<String> = (0..4)
            .map(|i| {
                exchange(
                    port,
                    &get("/v1/runs", &format!("rc_guess{i}")),
                    Duration::from_secs(5),
                )
            })
            .collect();
        // Even the right token waits now: guessing costs time.
        answers.push(exchange(
            port,
            &get("/v1/runs", "rc_ok"),
            Duration::from_secs(5),
        ));
        answers
    })
    .await
    .unwrap();
    for a in &answers[..3] {
        assert!(a.starts_with("HTTP/1.1 401"), "{a}");
    }
    for a in &answers[3..] {
        assert!(a.starts_with("HTTP/1.1 429"), "{a}");
        assert!(a.to_lowercase().contains("retry-after: "), "{a}");
        assert!(a.contains("\"too_many_failures\""), "{a}");
    }
}
