//! Free TCP ports on 127.0.0.1, so parallel tests never fight over the
//! standard ones.
//!
//! A port is found by binding port 0 and releasing it; the process that is
//! then told to listen on it binds it again a moment later. Another program
//! could take it in between, which is rare enough for tests and shows up as
//! a clear "address in use" in that process's log.

use std::io;
use std::net::{Ipv4Addr, TcpListener};

/// One port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
/// When the operating system cannot bind any port on 127.0.0.1 at all, in
/// which case no test can run anyway. Use [`free_ports`] to get an error.
pub fn free_port() -> u16 {
    match free_ports(1) {
        Ok(ports) => ports[0],
        Err(e) => panic!("cannot bind any TCP port on 127.0.0.1: {e}"),
    }
}

/// `count` distinct ports on 127.0.0.1. All of them are held at once before
/// any is released, so none is returned twice.
pub fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port()))
        .collect()
}

/// Whether something already listens on `127.0.0.1:port`, which makes a
/// process told to listen there fail.
pub fn in_use(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        assert!(!in_use(port));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("bind the free port");
        assert!(in_use(port), "a bound port is reported as in use");
        drop(listener);
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(12).expect("free ports");
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 12);
    }
}
