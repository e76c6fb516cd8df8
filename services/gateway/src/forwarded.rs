//! The client's address behind proxies we trust. Behind an Ingress every
//! connection comes from the proxy, so keyed by the connection's address
//! every anonymous client would share the proxy's rate limit and connection
//! cap. The proxy says whom it forwards in `X-Forwarded-For`; that header is
//! believed only from the proxies named in `TRUSTED_PROXIES`, or any client
//! could name itself anyone and get a fresh share with each request.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The address a request is counted by: the client's, as [`TrustedProxies`]
/// found it. Set on every request the gateway serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// One address block, e.g. `10.0.0.0/8` or `fd00::/8`; a bare address is a
/// block of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    network: IpAddr,
    prefix: u8,
}

impl Block {
    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && masked(ip, self.prefix) == self.network
    }
}

/// `ip` with every bit past the first `prefix` cleared.
fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((v4.to_bits() & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((v6.to_bits() & mask).into())
        }
    }
}

impl FromStr for Block {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network = address
            .parse::<IpAddr>()
            .map_err(|_| format!("`{text}` is not an address or a block such as 10.0.0.0/8"))?
            .to_canonical();
        let longest = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => longest,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= longest)
                .ok_or_else(|| format!("`{text}`: the prefix must be 0 to {longest}"))?,
        };
        // Kept masked, so the block is shown as it is matched.
        Ok(Self {
            network: masked(network, prefix),
            prefix,
        })
    }
}

/// The proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`: a
/// comma-separated list of addresses and blocks; empty by default, the
/// gateway then being the edge itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Block>);

impl TrustedProxies {
    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(ip))
    }

    /// The client a request from `peer` comes from. From a trusted proxy,
    /// `X-Forwarded-For` is read from its end, the hop the proxy appended:
    /// the first address that is not itself a trusted proxy is the client,
    /// and whatever stands left of it was written by the client and is
    /// ignored. A malformed entry ends the walk at the hop after it, the
    /// nearest one known; so does a header naming only trusted proxies.
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Some(address) = hop_address(hop.trim()) else {
                break;
            };
            client = address.to_canonical();
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// One hop of `X-Forwarded-For`: an address, or (as some load balancers
/// write it) an address and port, `203.0.113.9:4711` or `[2001:db8::1]:4711`.
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
}

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|block| !block.is_empty())
            .map(Block::from_str)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let blocks: Vec<String> = self
            .0
            .iter()
            .map(|b| format!("{}/{}", b.network, b.prefix))
            .collect();
        f.write_str(&blocks.join(","))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                X_FORWARDED_FOR,
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn blocks_and_addresses_are_read_and_bad_ones_refused() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.0.2.7 ,fd00::/8".parse().expect("valid");
        assert!(trusted.contains(ip("10.200.3.4")));
        assert!(trusted.contains(ip("::ffff:10.1.1.1")), "IPv4-mapped");
        assert!(trusted.contains(ip("192.0.2.7")));
        assert!(!trusted.contains(ip("192.0.2.8")));
        assert!(trusted.contains(ip("fd12::1")));
        assert!(!trusted.contains(ip("2001:db8::1")));
        assert_eq!(trusted.to_string(), "10.0.0.0/8,192.0.2.7/32,fd00::/8");
        let unmasked: TrustedProxies = "10.1.2.3/8".parse().expect("valid");
        assert_eq!(unmasked.to_string(), "10.0.0.0/8");
        assert_eq!("".parse::<TrustedProxies>(), Ok(TrustedProxies::default()));
        for bad in ["10.0.0.0/33", "fd00::/129", "proxy.local", "10.0.0.0/x"] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
        let everything: TrustedProxies = "0.0.0.0/0".parse().expect("valid");
        assert!(everything.contains(ip("203.0.113.9")));
    }

    #[test]
    fn only_a_trusted_proxy_is_believed_and_only_for_the_hop_it_added() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().expect("valid");
        let proxy = ip("10.0.0.5");
        // A client talking to us directly names itself whatever it likes.
        assert_eq!(
            trusted.client_of(ip("203.0.113.9"), &forwarded(&["198.51.100.1"])),
            ip("203.0.113.9")
        );
        // Through the proxy: the hop it appended, not the client's own.
        assert_eq!(
            trusted.client_of(proxy, &forwarded(&["198.51.100.1, 203.0.113.9"])),
            ip("203.0.113.9")
        );
        // Through two of our proxies, over two header lines.
        assert_eq!(
            trusted.client_of(proxy, &forwarded(&["203.0.113.9", "10.0.0.9"])),
            ip("203.0.113.9")
        );
        // Hops with ports, as some load balancers write them.
        assert_eq!(
            trusted.client_of(proxy, &forwarded(&["203.0.113.9:4711"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            trusted.client_of(proxy, &forwarded(&["[2001:db8::1]:4711"])),
            ip("2001:db8::1")
        );
        // No header, a malformed hop, or only proxies: the nearest known.
        assert_eq!(trusted.client_of(proxy, &HeaderMap::new()), proxy);
        assert_eq!(
            trusted.client_of(proxy, &forwarded(&["203.0.113.9, bogus"])),
            proxy
        );
        assert_eq!(
            trusted.client_of(proxy, &forwarded(&["10.0.0.7"])),
            ip("10.0.0.7")
        );
        // Nobody is trusted by default.
        assert_eq!(
            TrustedProxies::default().client_of(proxy, &forwarded(&["203.0.113.9"])),
            proxy
        );
    }
}
