//! The `rate-limit` filter: at most `max` new connections per client within a sliding
//! window of `window-secs` seconds; more get 429 with `Retry-After`.
//!
//! The client is the effective address (the forwarded one behind a trusted proxy),
//! keyed as [`ClientKey`] says: an IPv4 address (`::ffff:a.b.c.d` is the same client as
//! `a.b.c.d`), or an IPv6 address's first `ipv6-prefix` bits (default 64: one end site
//! is given a whole /64, and one host can use any address in it).
//!
//! The table is bounded: it holds at most `max-clients` (default 100,000) clients, and
//! when a new one arrives past that, the client seen longest ago is forgotten (it gets
//! a fresh window, which only ever favours it). Expired clients leave the table in the
//! order they were seen, through a queue of admissions, so no request scans the table.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderValue;
use http::header::RETRY_AFTER;
use serde::Deserialize;

use crate::request::Rejection;

/// Keys of `kind = "rate-limit"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct Raw {
    max: u32,
    #[serde(default = "default_window")]
    window_secs: u64,
    #[serde(default = "default_ipv6_prefix")]
    ipv6_prefix: u8,
    #[serde(default = "default_max_clients")]
    max_clients: usize,
}

fn default_window() -> u64 {
    60
}

fn default_ipv6_prefix() -> u8 {
    64
}

fn default_max_clients() -> usize {
    100_000
}

/// Who a rate limit counts: an IPv4 address, or an IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// One IPv4 address (IPv4-mapped IPv6 addresses included).
    V4(u32),
    /// The first bits of an IPv6 address, the rest zeroed.
    V6(u128),
}

impl ClientKey {
    /// The key of `ip`, IPv6 addresses cut to their first `ipv6_prefix` bits.
    pub fn of(ip: IpAddr, ipv6_prefix: u8) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.into()),
                None => {
                    let bits = u128::from(v6);
                    let prefix = u32::from(ipv6_prefix.min(128));
                    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                    Self::V6(bits & mask)
                }
            },
        }
    }
}

/// Admission times per client.
#[derive(Debug)]
pub struct RateLimit {
    max: usize,
    window: Duration,
    ipv6_prefix: u8,
    max_clients: usize,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    /// Each client's admissions within the window, oldest first (at most `max`).
    clients: HashMap<ClientKey, VecDeque<Instant>>,
    /// Every admission in order, to find expired clients without a scan. An entry whose
    /// client was admitted again later is stale and skipped.
    order: VecDeque<(Instant, ClientKey)>,
}

impl Table {
    /// Forgets the client of the oldest admission if it was not admitted since.
    fn pop_oldest(&mut self) {
        let Some((at, key)) = self.order.pop_front() else {
            return;
        };
        if self
            .clients
            .get(&key)
            .is_some_and(|times| times.back().is_none_or(|last| *last <= at))
        {
            self.clients.remove(&key);
        }
    }
}

impl RateLimit {
    pub(super) fn new(raw: Raw) -> Result<Self, String> {
        if raw.max == 0 || raw.window_secs == 0 {
            return Err("`max` and `window-secs` must be at least 1".to_owned());
        }
        if raw.ipv6_prefix == 0 || raw.ipv6_prefix > 128 {
            return Err("`ipv6-prefix` must be 1..=128".to_owned());
        }
        if raw.max_clients == 0 {
            return Err("`max-clients` must be at least 1".to_owned());
        }
        Ok(Self {
            max: raw.max as usize,
            window: Duration::from_secs(raw.window_secs),
            ipv6_prefix: raw.ipv6_prefix,
            max_clients: raw.max_clients,
            table: Mutex::new(Table::default()),
        })
    }

    /// Admits `client` now, or refuses with 429 and the seconds until it may retry.
    pub(super) fn check(&self, client: IpAddr, now: Instant) -> Result<(), Rejection> {
        let key = ClientKey::of(client, self.ipv6_prefix);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        while table
            .order
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.window)
        {
            table.pop_oldest();
        }
        if !table.clients.contains_key(&key) {
            while table.clients.len() >= self.max_clients && !table.order.is_empty() {
                table.pop_oldest();
            }
        }
        let window = self.window;
        let times = table.clients.entry(key).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if times.len() < self.max {
            times.push_back(now);
            table.order.push_back((now, key));
            return Ok(());
        }
        let oldest = *times.front().expect("full, so not empty");
        let wait = window.saturating_sub(now.saturating_duration_since(oldest));
        let retry = wait.as_secs_f64().ceil().max(1.0) as u64;
        Err(Rejection::new(429, "too many connections; try again later")
            .with_header(RETRY_AFTER, HeaderValue::from(retry)))
    }

    /// Clients in the table (for tests).
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clients
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: u32, window_secs: u64, max_clients: usize) -> RateLimit {
        RateLimit::new(Raw {
            max,
            window_secs,
            ipv6_prefix: 64,
            max_clients,
        })
        .unwrap()
    }

    #[test]
    fn admits_max_per_window_per_address() {
        let limit = limit(2, 10, 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(limit.check(a, t0).is_ok());
        assert!(limit.check(a, t0 + Duration::from_secs(1)).is_ok());
        let refused = limit.check(a, t0 + Duration::from_secs(2)).unwrap_err();
        assert_eq!(refused.status, 429);
        assert_eq!(refused.header("retry-after"), Some("8"));
        assert!(
            limit.check(b, t0 + Duration::from_secs(2)).is_ok(),
            "other addresses are separate"
        );
        assert!(
            limit.check(a, t0 + Duration::from_secs(10)).is_ok(),
            "the window slid"
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_prefix_and_mapped_ipv4_is_ipv4() {
        let limit = limit(1, 10, 100);
        let t0 = Instant::now();
        assert!(limit.check("2001:db8:1:2::1".parse().unwrap(), t0).is_ok());
        assert!(
            limit
                .check("2001:db8:1:2:ffff::9".parse().unwrap(), t0)
                .is_err(),
            "same /64"
        );
        assert!(limit.check("2001:db8:1:3::1".parse().unwrap(), t0).is_ok());
        assert!(limit.check("192.0.2.1".parse().unwrap(), t0).is_ok());
        assert!(
            limit
                .check("::ffff:192.0.2.1".parse().unwrap(), t0)
                .is_err()
        );
        assert_eq!(
            ClientKey::of("2001:db8::1".parse().unwrap(), 128),
            ClientKey::V6(u128::from(
                "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap()
            ))
        );
    }

    #[test]
    fn the_table_is_bounded_and_expires_in_order() {
        let limit = limit(1, 10, 1000);
        let t0 = Instant::now();
        for i in 0..5000u32 {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            assert!(limit.check(ip, t0).is_ok());
        }
        assert_eq!(
            limit.clients(),
            1000,
            "oldest clients forgotten past the cap"
        );
        let later = t0 + Duration::from_secs(11);
        assert!(limit.check("192.0.2.9".parse().unwrap(), later).is_ok());
        assert_eq!(limit.clients(), 1, "expired clients left without a scan");
    }

    #[test]
    fn a_client_admitted_again_is_not_expired_by_its_older_admission() {
        let limit = limit(2, 10, 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(limit.check(a, t0).is_ok());
        assert!(limit.check(a, t0 + Duration::from_secs(5)).is_ok());
        // At 10 s the first admission expires, the second has not: still one in window.
        assert!(limit.check(a, t0 + Duration::from_secs(10)).is_ok());
        assert!(limit.check(a, t0 + Duration::from_secs(11)).is_err());
    }
}
