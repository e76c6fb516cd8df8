//! Who a client is, for the limits that give each client a share: the rate
//! limiter ([`crate::rate_limit`]), the cap on one client's requests in
//! flight ([`crate::load_shed`]) and the cap on one address's connections
//! ([`crate::serve`]).
//!
//! A client is the authenticated customer (the token's subject, see
//! [`crate::auth`]), so a customer's share follows them across addresses and
//! customers behind one address (an office, a carrier's NAT) do not share
//! one. Anonymous requests count by the address the connection comes from;
//! IPv6 addresses count per /64, the block one subscriber usually holds, so
//! rotating addresses within it does not buy a fresh share. Only a hash of
//! the subject is kept.
//!
//! The address is the connection's, or, behind a proxy named in
//! `TRUSTED_PROXIES`, the client's that the proxy forwarded
//! ([`crate::forwarded`]): otherwise every client behind an Ingress would
//! share the proxy's one share.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{ConnectInfo, Request};
use shipshape_auth::Identity;

use crate::forwarded::ClientAddress;

/// Whom a share belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// A hash of the authenticated customer's id: ids may be long, the hash
    /// is not, and it names no one in a dump.
    Customer(u64),
    /// An IPv4 address or an IPv6 /64.
    Address(IpAddr),
    /// The connection's address is not known (a router called without a
    /// socket).
    Unknown,
}

/// Tells clients apart.
#[derive(Debug, Default)]
pub struct ClientKeys {
    /// Hashes customer ids with a key chosen at start, so which ids share a
    /// hash cannot be worked out from outside.
    hasher: RandomState,
}

impl ClientKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Who sent `request`: the customer its token names, else its address
    /// (the client's behind a trusted proxy, else the connection's).
    pub fn of(&self, request: &Request) -> ClientKey {
        let extensions = request.extensions();
        if let Some(identity) = extensions.get::<Identity>() {
            return ClientKey::Customer(self.hasher.hash_one(identity.subject()));
        }
        let address = match extensions.get::<ClientAddress>() {
            Some(ClientAddress(client)) => Some(*client),
            None => extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip()),
        };
        address.map_or(ClientKey::Unknown, |ip| ClientKey::Address(address_key(ip)))
    }
}

/// The part of an address that identifies a client: all of an IPv4 address
/// (also when written as IPv4-mapped IPv6), the /64 prefix of an IPv6 one.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// How many of something (requests in flight, open connections) each
/// client holds, at most `max` each. Only clients holding one have an
/// entry, so the table is never larger than what is held overall.
#[derive(Clone, Debug)]
pub struct PerClient<K> {
    max: usize,
    counts: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Copy + Eq + Hash> PerClient<K> {
    pub fn new(max: NonZeroUsize) -> Self {
        Self {
            max: max.get(),
            counts: Arc::default(),
        }
    }

    /// One more for `key`, unless it holds `max` already.
    pub fn admit(&self, key: K) -> Option<Held<K>> {
        // Every update is one assignment: a poisoned lock still guards
        // sound counts.
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Held {
            key,
            counts: self.counts.clone(),
        })
    }

    /// Whether no client holds anything.
    pub fn is_empty(&self) -> bool {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// One thing a client holds; dropping it gives it back.
#[derive(Debug)]
pub struct Held<K: Copy + Eq + Hash> {
    key: K,
    counts: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Copy + Eq + Hash> Drop for Held<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(customer: Option<&str>, peer: Option<SocketAddr>) -> Request {
        let mut request = Request::new(Body::empty());
        if let Some(customer) = customer {
            let identity = Identity::new(customer, &[]).expect("identity");
            request.extensions_mut().insert(identity);
        }
        if let Some(peer) = peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        request
    }

    #[test]
    fn clients_are_known_by_customer_then_address() {
        let keys = ClientKeys::new();
        let peer: SocketAddr = "192.0.2.1:4000".parse().expect("address");
        let key = |customer, peer| keys.of(&request(customer, peer));
        let address = ClientKey::Address(IpAddr::from([192, 0, 2, 1]));

        assert_eq!(key(None, None), ClientKey::Unknown);
        assert_eq!(key(None, Some(peer)), address);
        // The port is not part of the identity: each connection has its own.
        let other_port: SocketAddr = "192.0.2.1:4001".parse().expect("address");
        assert_eq!(key(None, Some(other_port)), address);

        // Customers behind one address have shares of their own, and a
        // customer keeps theirs from any address.
        let alice = key(Some("alice"), Some(peer));
        assert!(matches!(alice, ClientKey::Customer(_)), "{alice:?}");
        assert_eq!(alice, key(Some("alice"), None));
        assert_ne!(alice, key(Some("bob"), Some(peer)));
        assert!(!format!("{alice:?}").contains("alice"));
    }

    #[test]
    fn ipv6_clients_are_known_by_their_64_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(address_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn each_client_holds_at_most_its_share_and_gives_it_back() {
        let per_client = PerClient::new(NonZeroUsize::new(2).expect("non-zero"));
        let held = [per_client.admit('a'), per_client.admit('a')];
        assert!(held.iter().all(Option::is_some));
        assert!(per_client.admit('a').is_none(), "a is at its cap");
        let b = per_client.admit('b');
        assert!(b.is_some(), "b is not");

        drop(held);
        assert!(per_client.admit('a').is_some(), "a's share came back");
        drop(b);
        assert!(per_client.is_empty(), "no entry outlives what it counts");
    }
}
