//! Loopback addresses and ports: the runtime never listens anywhere else,
//! because its admin API starts processes and its router is for this
//! machine only.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};

use tokio::net::TcpListener;

use crate::LocalError;

/// `127.0.0.1:0`: any free loopback port.
pub const ANY: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// The address to listen on: the one asked for (which must be loopback), or
/// a free loopback port.
pub fn loopback(addr: Option<SocketAddr>) -> Result<SocketAddr, LocalError> {
    let addr = addr.unwrap_or(ANY);
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(LocalError::NotLoopback { addr })
    }
}

/// Listen on `addr` from inside the tokio runtime.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let std = StdListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// A loopback port nothing listens on now, for an instance to bind. The
/// listener is dropped before the instance starts, so another process could
/// take the port in between; the instance then fails to bind, exits, and is
/// restarted on a fresh port.
pub fn free_port() -> io::Result<u16> {
    Ok(StdListener::bind(ANY)?.local_addr()?.port())
}

/// Whether `port` can be bound on loopback right now.
pub fn is_free(port: u16) -> bool {
    StdListener::bind(SocketAddr::new(ANY.ip(), port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_accepted() {
        assert_eq!(loopback(None).unwrap(), ANY);
        assert!(loopback(Some("[::1]:80".parse().unwrap())).is_ok());
        assert!(matches!(
            loopback(Some("0.0.0.0:8080".parse().unwrap())),
            Err(LocalError::NotLoopback { .. })
        ));
    }

    #[test]
    fn a_free_port_is_free_until_taken() {
        let port = free_port().unwrap();
        assert!(is_free(port));
        let _held = StdListener::bind(SocketAddr::new(ANY.ip(), port)).unwrap();
        assert!(!is_free(port));
    }
}
