//! Test fixtures: plugins under `tests/plugins/`, compiled to wasm components
//! by this crate's build script, for tests that need components that the
//! first-party plugins are not (a misbehaving one, a fake provider); and
//! [`stub`], a loopback HTTP server that stands in for remote services;
//! [`prometheus`] and [`alertmanager`], a real Prometheus server and a
//! real Alertmanager for tests; [`unleash`], a real Unleash server.

pub mod alertmanager;
pub mod prometheus;
pub mod stub;
pub mod unleash;

use std::path::PathBuf;

static FIXTURES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));

/// Path of the compiled fixture plugin `name` (`misbehave`, `static-provider`).
pub fn fixture(name: &str) -> PathBuf {
    FIXTURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| PathBuf::from(p))
        .unwrap_or_else(|| panic!("no fixture plugin named {name}"))
}

/// The bytes of fixture plugin `name`.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture plugins are built by build.rs")
}
