//! Free TCP ports on 127.0.0.1, so parallel tests never fight over the
//! standard ones.
//!
//! The test kit tells each process the port to listen on, so a port is
//! chosen here and bound by that process a moment later. Two things could
//! take it in between, and both once failed CI with "Address already in
//! use":
//! - a test running beside this one choosing the same port: every port
//!   chosen is reserved, until this process exits, by an exclusive lock on
//!   `<temp dir>/shipshape-ports-<uid>/<port>`, which every test process
//!   honours;
//! - an outgoing connection anywhere on the machine, whose local port the
//!   kernel takes from the ephemeral range (where binding port 0 would pick
//!   from too): ports are chosen below that range.

use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::geteuid;

/// The locks on every port this process was given: a process keeps its
/// ports (and restarts its children on them) until it exits.
static RESERVED: Mutex<Vec<Flock<File>>> = Mutex::new(Vec::new());

/// How many ports below the ephemeral range are candidates.
const CANDIDATES: u16 = 12_000;

/// No port below this is handed out: the well-known and registered ports
/// other software on the machine expects to find free.
const LOWEST: u16 = 10_000;

/// One port on 127.0.0.1, free and reserved for this process.
///
/// # Panics
/// When no port can be reserved, in which case no test can run anyway.
/// Use [`free_ports`] to get an error.
pub fn free_port() -> u16 {
    match free_ports(1) {
        Ok(ports) => ports[0],
        Err(e) => panic!("cannot reserve a TCP port on 127.0.0.1: {e}"),
    }
}

/// `count` distinct ports on 127.0.0.1, free now and reserved for this
/// process until it exits.
pub fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let dir = reservations_dir();
    fs::create_dir_all(&dir)?;
    let candidates = candidates();
    let span = candidates.len();
    // Start somewhere random, so processes starting together do not all
    // queue for the same first ports.
    let start = RandomState::new().hash_one(std::process::id()) as usize % span;
    let mut reserved = RESERVED.lock().unwrap_or_else(PoisonError::into_inner);
    let mut ports = Vec::with_capacity(count);
    for step in 0..span {
        if ports.len() == count {
            break;
        }
        let port = candidates.start + ((start + step) % span) as u16;
        if let Some(lock) = reserve(&dir, port)? {
            reserved.push(lock);
            ports.push(port);
        }
    }
    if ports.len() < count {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "only {} of {count} ports in {candidates:?} are free and unreserved",
                ports.len()
            ),
        ));
    }
    Ok(ports)
}

/// Whether something already listens on `127.0.0.1:port`, which makes a
/// process told to listen there fail.
pub fn in_use(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err()
}

/// The ports just below the kernel's ephemeral range; every port from
/// [`LOWEST`] up if that range starts too low to leave room below it.
fn candidates() -> Range<u16> {
    let ephemeral_start = ephemeral_start();
    let below = ephemeral_start.saturating_sub(CANDIDATES).max(LOWEST)..ephemeral_start;
    if below.len() < usize::from(CANDIDATES / 4) {
        LOWEST..u16::MAX
    } else {
        below
    }
}

/// Where the lock files are: one directory per user, since another user's
/// lock files could not be opened for writing.
fn reservations_dir() -> PathBuf {
    std::env::temp_dir().join(format!("shipshape-ports-{}", geteuid()))
}

/// The first port of the kernel's ephemeral range, 32768 when it cannot be
/// read.
fn ephemeral_start() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The lock on `port` if no other process (or earlier call) holds it and
/// nothing listens there now.
fn reserve(dir: &Path, port: u16) -> io::Result<Option<Flock<File>>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok((!in_use(port)).then_some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(errno.into()),
    }
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
    fn free_ports_are_distinct_and_never_handed_out_twice() {
        let mut ports = free_ports(12).expect("free ports");
        ports.extend(free_ports(12).expect("more free ports"));
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 24);
    }

    #[test]
    fn ports_come_from_below_the_ephemeral_range() {
        let candidates = candidates();
        if ephemeral_start() >= LOWEST + CANDIDATES / 4 {
            assert_eq!(candidates.end, ephemeral_start());
        }
        for port in free_ports(4).expect("free ports") {
            assert!(candidates.contains(&port), "{port} not in {candidates:?}");
        }
    }

    #[test]
    fn a_port_another_process_reserved_is_not_handed_out() {
        let port = free_port();
        // A second open file description stands for another process:
        // flock locks belong to the description, not the process.
        assert!(
            reserve(&reservations_dir(), port)
                .expect("try the lock")
                .is_none()
        );
    }
}
