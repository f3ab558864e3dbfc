//! What connections move, per route: each connection counts its own traffic, and a
//! scrape adds up the open connections and the totals closed ones left behind.
//!
//! A [`Traffic`] is written by its connection's task only, so a count is a plain load
//! and store (no locked instruction, no cache line shared with another connection);
//! readers on other threads see every count whole, if a moment late. Opening and
//! closing a connection take the one lock of the route table, as a scrape does, so a
//! connection's counts move from "open" to its route's totals in one step: a scrape
//! never sees them twice or not at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::controller::OutboundHandle;

/// One connection's counts, written only by its connection task.
#[derive(Debug, Default)]
pub struct Traffic {
    received_messages: AtomicU64,
    received_bytes: AtomicU64,
    sent_messages: AtomicU64,
    sent_bytes: AtomicU64,
    backpressure: AtomicU64,
    overflows: AtomicU64,
}

/// Adds `n` to a count that one task alone writes.
fn bump(count: &AtomicU64, n: u64) {
    count.store(
        count.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

impl Traffic {
    /// A data message of `bytes` payload bytes came from the client.
    pub fn received(&self, bytes: usize) {
        bump(&self.received_messages, 1);
        bump(&self.received_bytes, bytes as u64);
    }

    /// A data message of `bytes` payload bytes was written to the client.
    pub fn sent(&self, bytes: usize) {
        bump(&self.sent_messages, 1);
        bump(&self.sent_bytes, bytes as u64);
    }

    /// The controller's queue or inbound budget was full: the connection stopped reading.
    pub fn backpressure(&self) {
        bump(&self.backpressure, 1);
    }

    /// The outbound queue overflowed under the `close` policy.
    pub fn overflow(&self) {
        bump(&self.overflows, 1);
    }

    fn totals(&self) -> Totals {
        let get = |count: &AtomicU64| count.load(Ordering::Relaxed);
        Totals {
            upgrades: 0,
            received_messages: get(&self.received_messages),
            received_bytes: get(&self.received_bytes),
            sent_messages: get(&self.sent_messages),
            sent_bytes: get(&self.sent_bytes),
            backpressure: get(&self.backpressure),
            overflows: get(&self.overflows),
            dropped: 0,
        }
    }
}

/// The counts of one route (or one connection).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Totals {
    upgrades: u64,
    received_messages: u64,
    received_bytes: u64,
    sent_messages: u64,
    sent_bytes: u64,
    backpressure: u64,
    overflows: u64,
    dropped: u64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, other: Self) {
        self.upgrades += other.upgrades;
        self.received_messages += other.received_messages;
        self.received_bytes += other.received_bytes;
        self.sent_messages += other.sent_messages;
        self.sent_bytes += other.sent_bytes;
        self.backpressure += other.backpressure;
        self.overflows += other.overflows;
        self.dropped += other.dropped;
    }
}

/// A counter series per route: its name (after the `wshost_` prefix, before `_total`),
/// its help, and its value in a route's totals.
pub(super) type RouteCounter = (&'static str, &'static str, fn(&Totals) -> u64);

/// The counter series per route, in the order they are shown.
pub(super) const ROUTE_COUNTERS: [RouteCounter; 8] = [
    ("upgrades", "Upgrade requests answered 101.", |t| t.upgrades),
    (
        "received_messages",
        "Data messages (text and binary) received from clients.",
        |t| t.received_messages,
    ),
    (
        "received_bytes",
        "Payload bytes of the data messages received from clients.",
        |t| t.received_bytes,
    ),
    (
        "sent_messages",
        "Data messages (text and binary) written to clients.",
        |t| t.sent_messages,
    ),
    (
        "sent_bytes",
        "Payload bytes of the data messages written to clients.",
        |t| t.sent_bytes,
    ),
    (
        "inbound_backpressure",
        "Times a connection stopped reading because its controller's queue or inbound byte budget was full.",
        |t| t.backpressure,
    ),
    (
        "outbound_overflows",
        "Outbound queues that overflowed under `slow-client = \"close\"` (the client was closed with 1008).",
        |t| t.overflows,
    ),
    (
        "outbound_dropped",
        "Messages dropped from outbound queues under `slow-client = \"drop-oldest\"`.",
        |t| t.dropped,
    ),
];

/// An open connection, as a scrape sees it.
#[derive(Debug)]
struct Open {
    traffic: Arc<Traffic>,
    /// For the messages its `drop-oldest` policy dropped, which the controller's side
    /// counts.
    outbound: OutboundHandle,
}

impl Open {
    fn totals(&self) -> Totals {
        Totals {
            dropped: self.outbound.dropped(),
            ..self.traffic.totals()
        }
    }
}

/// One route's open connections and what its closed ones left.
#[derive(Debug, Default)]
struct RouteTraffic {
    open: HashMap<u64, Open>,
    closed: Totals,
}

/// Every route's traffic, by route name.
#[derive(Debug, Default)]
pub(super) struct Routes(Mutex<BTreeMap<Arc<str>, RouteTraffic>>);

impl Routes {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Arc<str>, RouteTraffic>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists these routes (with zeros until they have traffic).
    pub(super) fn declare<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let mut routes = self.lock();
        for name in names {
            if !routes.contains_key(name) {
                routes.insert(name.into(), RouteTraffic::default());
            }
        }
    }

    /// Registers connection `id` of `route`, just upgraded.
    pub(super) fn open(
        self: &Arc<Self>,
        route: &str,
        id: u64,
        outbound: &OutboundHandle,
    ) -> ConnMeter {
        let traffic = Arc::new(Traffic::default());
        let mut routes = self.lock();
        // One allocation of the name per route, not per connection.
        let name: Arc<str> = match routes.get_key_value(route) {
            Some((name, _)) => name.clone(),
            None => route.into(),
        };
        let entry = routes.entry(name.clone()).or_default();
        entry.closed.upgrades += 1;
        entry.open.insert(
            id,
            Open {
                traffic: traffic.clone(),
                outbound: outbound.clone(),
            },
        );
        drop(routes);
        ConnMeter {
            traffic,
            routes: self.clone(),
            route: name,
            id,
        }
    }

    /// Each route with its open connections and its totals so far.
    pub(super) fn totals(&self) -> Vec<(Arc<str>, usize, Totals)> {
        let routes = self.lock();
        routes
            .iter()
            .map(|(name, route)| {
                let mut totals = route.closed;
                for open in route.open.values() {
                    totals += open.totals();
                }
                (name.clone(), route.open.len(), totals)
            })
            .collect()
    }
}

/// An upgraded connection's place in its route's counts: the connection task counts
/// into [`ConnMeter::traffic`], and dropping the meter (when the connection has ended)
/// adds the counts to the route's totals and stops counting it as open.
#[derive(Debug)]
pub struct ConnMeter {
    traffic: Arc<Traffic>,
    routes: Arc<Routes>,
    route: Arc<str>,
    id: u64,
}

impl ConnMeter {
    /// Where the connection task counts.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }
}

impl Drop for ConnMeter {
    fn drop(&mut self) {
        let mut routes = self.routes.lock();
        if let Some(route) = routes.get_mut(&self.route)
            && let Some(open) = route.open.remove(&self.id)
        {
            route.closed += open.totals();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{Outbound, outbound_queue};
    use crate::limits::{Limits, SlowClient};
    use tokio_tungstenite::tungstenite::Message;

    fn route<'a>(totals: &'a [(Arc<str>, usize, Totals)], name: &str) -> (usize, &'a Totals) {
        let (_, open, totals) = totals
            .iter()
            .find(|(n, ..)| &**n == name)
            .expect("the route is listed");
        (*open, totals)
    }

    #[test]
    fn a_closed_connection_leaves_its_counts_in_its_route() {
        let routes = Arc::new(Routes::default());
        routes.declare(["echo", "idle"].into_iter());
        let limits = Limits {
            outbound_messages: 1,
            slow_client: SlowClient::DropOldest,
            ..Limits::default()
        };
        let (handle, _queue) = outbound_queue(&limits);
        let a = routes.open("echo", 1, &handle);
        let b = routes.open("echo", 2, &outbound_queue(&Limits::default()).0);
        a.traffic().received(5);
        a.traffic().sent(7);
        a.traffic().sent(3);
        b.traffic().received(1);
        b.traffic().backpressure();
        b.traffic().overflow();
        for text in ["x", "y", "z"] {
            handle.push(Outbound::Message(Message::text(text))).unwrap();
        }
        let expected = Totals {
            upgrades: 2,
            received_messages: 2,
            received_bytes: 6,
            sent_messages: 2,
            sent_bytes: 10,
            backpressure: 1,
            overflows: 1,
            dropped: 2,
        };
        let before = routes.totals();
        assert_eq!(route(&before, "echo"), (2, &expected));
        assert_eq!(route(&before, "idle"), (0, &Totals::default()));
        drop(a);
        drop(b);
        let after = routes.totals();
        assert_eq!(
            route(&after, "echo"),
            (0, &expected),
            "the same totals, closed"
        );
    }
}
