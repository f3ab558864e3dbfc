//! The `rate-limit` filter: at most `max` new connections per client address within a
//! sliding window of `window-secs` seconds; more get 429 with `Retry-After`.
//!
//! The client address is the effective one (the forwarded address behind a trusted
//! proxy). Each address keeps the times of its recent admissions; addresses whose
//! window has passed are pruned as the table grows, so memory stays bounded by the
//! addresses seen within one window.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::handshake::Rejection;

/// Keys of `kind = "rate-limit"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct Raw {
    max: u32,
    #[serde(default = "default_window")]
    window_secs: u64,
}

fn default_window() -> u64 {
    60
}

/// Admission times per client address.
#[derive(Debug)]
pub struct RateLimit {
    max: usize,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl RateLimit {
    pub(super) fn new(raw: Raw) -> Result<Self, String> {
        if raw.max == 0 || raw.window_secs == 0 {
            return Err("`max` and `window-secs` must be at least 1".to_owned());
        }
        Ok(Self {
            max: raw.max as usize,
            window: Duration::from_secs(raw.window_secs),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Admits `client` now, or refuses with 429 and the seconds until it may retry.
    pub(super) fn check(&self, client: IpAddr, now: Instant) -> Result<(), Rejection> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 10_000 {
            let window = self.window;
            seen.retain(|_, times| times.back().is_some_and(|t| now - *t < window));
        }
        let times = seen.entry(client).or_default();
        while times.front().is_some_and(|t| now - *t >= self.window) {
            times.pop_front();
        }
        if times.len() < self.max {
            times.push_back(now);
            return Ok(());
        }
        let oldest = *times.front().expect("full, so not empty");
        let retry = (self.window - (now - oldest)).as_secs_f64().ceil().max(1.0) as u64;
        Err(Rejection::new(429, "too many connections; try again later")
            .with_header("Retry-After", retry.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_max_per_window_per_address() {
        let limit = RateLimit::new(Raw {
            max: 2,
            window_secs: 10,
        })
        .unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(limit.check(a, t0).is_ok());
        assert!(limit.check(a, t0 + Duration::from_secs(1)).is_ok());
        let refused = limit.check(a, t0 + Duration::from_secs(2)).unwrap_err();
        assert_eq!(refused.status, 429);
        assert_eq!(
            refused.headers,
            [("Retry-After".to_owned(), "8".to_owned())]
        );
        assert!(
            limit.check(b, t0 + Duration::from_secs(2)).is_ok(),
            "other addresses are separate"
        );
        assert!(
            limit.check(a, t0 + Duration::from_secs(10)).is_ok(),
            "the window slid"
        );
    }
}
