//! Test fixture: a health check that misbehaves as its `mode` says, so that
//! the tests can show each misbehaviour is contained with a clear error.

use rollcage_sdk::HealthCheck;
use rollcage_sdk::types::{CheckTarget, Measurement, Verdict};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    mode: String,
    #[serde(default)]
    arg: String,
}

struct Misbehave;

impl HealthCheck for Misbehave {
    fn check(_target: CheckTarget) -> Result<Measurement, String> {
        let config: Config = rollcage_sdk::config()?;
        let detail = match config.mode.as_str() {
            "ok" => "fine".to_string(),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("the fixture panics on purpose"),
            "file" => std::fs::read_to_string(&config.arg).map_err(|e| e.to_string())?,
            "env" => std::env::var(&config.arg).map_err(|e| format!("{}: {e}", config.arg))?,
            "http" => rollcage_sdk::http::Request::get(&config.arg)
                .send()
                .map(|r| r.status.to_string())?,
            "http-body" => rollcage_sdk::http::Request::get(&config.arg)
                .send()
                .map(|r| r.text())?,
            "resolve" => {
                use std::net::ToSocketAddrs;
                config
                    .arg
                    .to_socket_addrs()
                    .map(|a| format!("{} addresses", a.count()))
                    .map_err(|e| e.to_string())?
            }
            "exit" => std::process::exit(3),
            "secret" => rollcage_sdk::secret(&config.arg)?,
            "socket" => std::net::TcpStream::connect(config.arg.as_str())
                .map(|_| "connected".to_string())
                .map_err(|e| e.to_string())?,
            "log" => {
                println!("to stdout");
                eprintln!("to stderr");
                rollcage_sdk::log::warn("through the host log");
                "logged".to_string()
            }
            other => return Err(format!("unknown mode {other}")),
        };
        Ok(Measurement {
            verdict: Verdict::Pass,
            value: None,
            detail,
        })
    }
}

rollcage_sdk::export_health_check!(Misbehave);
