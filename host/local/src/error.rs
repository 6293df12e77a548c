//! The errors of the local runtime: [`LocalError`] for starting it, and
//! [`ServiceError`] for the operations the admin API exposes (each variant
//! maps to one HTTP status there).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the local runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The runtime serves loopback only: its admin API runs processes.
    #[error("the local runtime listens on loopback only, and {addr} is not a loopback address")]
    NotLoopback { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a state file this runtime can read (remove it to start afresh): {source}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
    /// Another process runs the local runtime on this folder.
    #[error("the local runtime in {} is in use by another rollcage process (pid {pid})", dir.display())]
    InUse { dir: PathBuf, pid: String },
}

/// Why an operation on services, slots, weights or jobs was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service `{0}` does not exist")]
    UnknownService(String),
    #[error("service `{service}` has no slot `{slot}`")]
    UnknownSlot { service: String, slot: String },
    #[error("{0}")]
    NotFound(String),
    /// Bad input; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The request is valid but would break what is running.
    #[error("{0}")]
    Conflict(String),
    /// Something on this machine failed; the admin API logs it and answers
    /// without the detail.
    #[error(transparent)]
    Io(#[from] io::Error),
}
