//! A Kubernetes API stand-in for tests.
//!
//! [`pki`] makes a CA at test time and server certificates it signs;
//! [`tls`] serves HTTP/1.1 over TLS.

pub mod pki;
pub mod tls;
