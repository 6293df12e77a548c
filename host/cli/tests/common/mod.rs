//! What the end-to-end tests of the `rollcage` binary share: running it as
//! a user would, with the test's own compiled-plugin cache, as `alice`, and
//! nothing from the developer's shell that points it at a server.

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub mod serve;

/// The binary, ready for arguments and standard streams.
pub fn command(cache: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rollcage"));
    command
        .env("XDG_CACHE_HOME", cache)
        .env("USER", "alice")
        .env_remove("ROLLCAGE_SERVER")
        .env_remove("ROLLCAGE_TOKEN");
    command
}

/// `rollcage args`, to the end.
pub fn rollcage(args: &[&str], cache: &Path) -> Output {
    command(cache).args(args).output().unwrap()
}

/// Output as text, for messages and searching.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
