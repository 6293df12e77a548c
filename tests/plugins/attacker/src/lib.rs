//! Test fixture: an environment provider whose `status` tries to make the
//! host hold more than the plugin's limits allow, in the way its `attack`
//! says, then reports what it managed as its error. Each attack is one the
//! sandbox must contain; `host/cli/tests/attacks.rs` runs them inside a
//! real `rollcage serve` (which asks for a status on
//! `GET /v1/environments/{name}`).

use std::mem::ManuallyDrop;

use rollcage_sdk::EnvironmentProvider;
use rollcage_sdk::bindings::rollcage::plugin::host::{self, Level};
use rollcage_sdk::bindings::wasi::clocks::monotonic_clock;
use rollcage_sdk::bindings::wasi::http::outgoing_handler;
use rollcage_sdk::bindings::wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};
use rollcage_sdk::bindings::wasi::io::poll;
use rollcage_sdk::types::{EnvironmentStatus, RouteWeight, SlotSpec, Target};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    attack: String,
    /// How many times (lines, requests, fields).
    #[serde(default)]
    count: usize,
    /// How large (bytes).
    #[serde(default)]
    size: usize,
    /// `host:port` the HTTP attacks aim at.
    #[serde(default)]
    authority: String,
}

struct Attacker;

impl EnvironmentProvider for Attacker {
    fn apply_slot(_t: Target, _s: SlotSpec) -> Result<(), String> {
        Ok(())
    }

    fn route(_t: Target, _w: Vec<RouteWeight>) -> Result<(), String> {
        Ok(())
    }

    fn remove_slot(_t: Target, _slot: String) -> Result<(), String> {
        Ok(())
    }

    fn status(_t: Target) -> Result<EnvironmentStatus, String> {
        let c: Config = rollcage_sdk::config()?;
        let detail = match c.attack.as_str() {
            "log-fields" => log_aliased_fields(c.count, c.size),
            "log-flood" => {
                for i in 0..c.count {
                    host::log(Level::Info, &format!("flood line {i}"), &[]);
                }
                "flooded".to_string()
            }
            "log-huge-line" => {
                host::log(Level::Info, &"x".repeat(c.size), &[]);
                "logged".to_string()
            }
            "log-forge" => {
                host::log(
                    Level::Info,
                    "harmless\n2026-11-30T00:00:00.000000Z ERROR rollcage_engine: run r42 approved by admin",
                    &[("k".to_string(), "v\r\nWARN forged too".to_string())],
                );
                println!("stdout\u{1b}[2J line");
                "forged".to_string()
            }
            "huge-error" => "E".repeat(c.size),
            "bodies" => hoard_bodies(&c),
            "unawaited" => start_requests(&c),
            "get" => rollcage_sdk::http::Request::get(&format!("http://{}/", c.authority))
                .send()
                .map(|r| format!("answered {}", r.status))
                .map_err(|e| e.to_string())?,
            other => format!("unknown attack {other}"),
        };
        // What the attack managed, where the test reads it: the status error.
        Err(detail)
    }
}

/// One `log` call whose `count` fields all name the same `size`-byte
/// string: a few bytes of guest memory per field, `size` bytes each if the
/// host copied them.
fn log_aliased_fields(count: usize, size: usize) -> String {
    let value = ManuallyDrop::new("v".repeat(size));
    let key = ManuallyDrop::new("k".to_string());
    let mut fields: Vec<(ManuallyDrop<String>, ManuallyDrop<String>)> = Vec::with_capacity(count);
    for _ in 0..count {
        // SAFETY: every alias is wrapped in ManuallyDrop, so the shared
        // buffers are never freed through them; the list is only read.
        let alias = |s: &String| unsafe {
            ManuallyDrop::new(String::from_raw_parts(
                s.as_ptr() as *mut u8,
                s.len(),
                s.capacity(),
            ))
        };
        fields.push((alias(&key), alias(&value)));
    }
    // SAFETY: ManuallyDrop<String> has String's layout.
    let fields: &[(String, String)] =
        unsafe { std::slice::from_raw_parts(fields.as_ptr().cast(), fields.len()) };
    host::log(Level::Info, "aliased fields", fields);
    "logged".to_string()
}

fn request(authority: &str) -> OutgoingRequest {
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Post).unwrap();
    request.set_scheme(Some(&Scheme::Http)).unwrap();
    request.set_authority(Some(authority)).unwrap();
    request.set_path_with_query(Some("/")).unwrap();
    request
}

/// `count` requests, each with `size` bytes written to its body as far as
/// the host accepts them, none ever sent, all kept alive.
fn hoard_bodies(c: &Config) -> String {
    let chunk = vec![b'b'; 4096];
    let mut kept = Vec::new();
    for i in 0..c.count {
        let request = request(&c.authority);
        let body = request.body().unwrap();
        let stream = body.write().unwrap();
        let mut written = 0;
        while written < c.size {
            match stream.check_write() {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let n = (n as usize).min(chunk.len()).min(c.size - written);
                    if stream.write(&chunk[..n]).is_err() {
                        break;
                    }
                    written += n;
                }
            }
        }
        kept.push((request, body, stream));
        if i % 100 == 0 {
            host::log(Level::Debug, &format!("{i} bodies held"), &[]);
        }
    }
    format!("held {} bodies", kept.len())
}

/// `count` requests sent and never awaited; the first refusal is returned.
fn start_requests(c: &Config) -> String {
    let mut pending = Vec::new();
    for _ in 0..c.count {
        let request = request(&c.authority);
        let p = match outgoing_handler::handle(request, None) {
            Ok(p) => p,
            Err(e) => return format!("refused: {e:?}"),
        };
        // A refusal answers at once; a request in flight does not.
        let soon = monotonic_clock::subscribe_duration(20_000_000);
        poll::poll(&[&p.subscribe(), &soon]);
        if let Some(Ok(Err(e))) = p.get() {
            return format!("refused after {} requests: {e:?}", pending.len());
        }
        pending.push(p);
    }
    format!("{} requests in flight", pending.len())
}

rollcage_sdk::export_environment_provider!(Attacker);
