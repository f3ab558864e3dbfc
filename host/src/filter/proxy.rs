//! The client's address behind reverse proxies.
//!
//! Forwarding headers can be written by anyone, so they are believed only when the TCP
//! peer is in `trusted-proxies`, and only the one header the operator's proxies write
//! (`forwarded-header`: `x-forwarded-for`, the default, or `forwarded`, RFC 7239): real
//! proxies append to that header and pass every other one through untouched, so a
//! client's own `Forwarded` next to the proxy's `X-Forwarded-For` is the client's word,
//! not the proxy's. The chosen header's addresses are walked from the right (the hop
//! nearest to wshost) outwards, skipping addresses that are themselves trusted proxies;
//! the first untrusted one is the client. Otherwise, and whenever the header is unusable
//! (an obfuscated or malformed hop), the client is the TCP peer.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::request::Request;

/// The header trusted proxies write the client's address into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, Apache mod_proxy, HAProxy).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// A CIDR block, e.g. `10.0.0.0/8` or `::1/128`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix must be 0..={max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(net.into(), ip.into(), self.prefix, 128),
            _ => false,
        }
    }
}

fn mask(net: u128, ip: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (net >> shift) == (ip >> shift)
}

/// The effective client: its IP and how to show it (`ip:port` when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's IP (for rate limiting).
    pub ip: IpAddr,
    /// The address as shown to controllers.
    pub display: String,
}

/// Works out the client of `request`, which arrived from TCP peer `peer`.
pub fn client(
    peer: SocketAddr,
    request: &Request,
    trusted: &[Cidr],
    header: ForwardedHeader,
) -> Client {
    let direct = Client {
        ip: peer.ip(),
        display: peer.to_string(),
    };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer.ip()) {
        return direct;
    }
    let chain: Vec<&str> = match header {
        ForwardedHeader::Forwarded => request
            .header_items("forwarded")
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| v.trim().trim_matches('"'))
                })
            })
            .collect(),
        ForwardedHeader::XForwardedFor => request.header_items("x-forwarded-for").collect(),
    };
    for hop in chain.iter().rev() {
        let Some((ip, display)) = parse_hop(hop) else {
            // An obfuscated or malformed hop: nothing beyond it can be believed.
            return direct;
        };
        if !is_trusted(ip) {
            return Client { ip, display };
        }
    }
    direct
}

/// Parses `1.2.3.4`, `1.2.3.4:5`, `[::1]`, `[::1]:5` or `::1`.
fn parse_hop(hop: &str) -> Option<(IpAddr, String)> {
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some((sa.ip(), sa.to_string()));
    }
    let bare = hop.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = bare.parse().ok()?;
    Some((ip, ip.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn cidr_blocks() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        assert!(
            "::1"
                .parse::<Cidr>()
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let peer: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let r = Request::get(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(
            client(
                peer,
                &r,
                &cidrs(&["10.0.0.0/8"]),
                ForwardedHeader::default()
            )
            .display,
            "203.0.113.9:4000"
        );
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_right() {
        let peer: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let trusted = cidrs(&["10.0.0.0/8"]);
        let r = Request::get(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.5")]);
        let c = client(peer, &r, &trusted, ForwardedHeader::XForwardedFor);
        assert_eq!(
            (c.ip, c.display.as_str()),
            ("198.51.100.7".parse().unwrap(), "198.51.100.7")
        );
        let r = Request::get(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"",
        )]);
        assert_eq!(
            client(peer, &r, &trusted, ForwardedHeader::Forwarded).display,
            "[2001:db8::1]:4711"
        );
        let r = Request::get(&[("x-forwarded-for", "unknown")]);
        assert_eq!(
            client(peer, &r, &trusted, ForwardedHeader::XForwardedFor).display,
            "10.0.0.2:4000"
        );
    }

    #[test]
    fn only_the_configured_header_is_believed() {
        let peer: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let trusted = cidrs(&["10.0.0.0/8"]);
        // What nginx passes on: the client's own `Forwarded`, and its own XFF entry.
        let r = Request::get(&[
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(
            client(peer, &r, &trusted, ForwardedHeader::XForwardedFor).display,
            "198.51.100.7"
        );
        let r = Request::get(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=198.51.100.7"),
        ]);
        assert_eq!(
            client(peer, &r, &trusted, ForwardedHeader::Forwarded).display,
            "198.51.100.7"
        );
        // A client's own XFF entries are to the left of the proxy's: never reached.
        let r = Request::get(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7")]);
        assert_eq!(
            client(peer, &r, &trusted, ForwardedHeader::XForwardedFor).display,
            "198.51.100.7"
        );
    }
}
