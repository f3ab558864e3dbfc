//! The registry of upgraded connections: which are open (by id, with their route and
//! outbound queue, so that they can be closed when their route goes away or the server
//! shuts down), how many each route has (for its `max-connections`), and when the last
//! one has closed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

use super::listener::{at_capacity, release};
use crate::config::Route;
use crate::controller::{Outbound, OutboundHandle};
use crate::request::{CloseReason, Rejection};

/// The open connections.
pub(crate) struct Registry {
    /// Open connections by id: their route and outbound queue.
    open: Mutex<HashMap<u64, (String, OutboundHandle)>>,
    /// Connections per route name (admitted, not yet closed), for a route's cap.
    per_route: Mutex<HashMap<String, usize>>,
    /// Upgraded connections still running.
    active: AtomicUsize,
    /// Notified whenever `active` drops to zero.
    idle: Notify,
    /// `true` once every open connection was sent its shutdown close (a connection
    /// registered after that is sent it at once).
    closing: watch::Sender<bool>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            open: Mutex::default(),
            per_route: Mutex::default(),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            closing: watch::Sender::new(false),
        }
    }
}

/// What every client is sent when the server shuts down.
fn shutdown_close() -> Outbound {
    Outbound::Close(CloseReason::new(1001, "server shutting down"))
}

impl Registry {
    /// Takes a place in `route`'s connection count, or refuses past its cap.
    pub(crate) fn take_route_slot(&self, route: &Route) -> Result<RouteSlot<'_>, Rejection> {
        let mut counts = self.route_counts();
        let n = counts.entry(route.name.clone()).or_insert(0);
        if route.max_connections.is_some_and(|max| *n >= max) {
            return Err(at_capacity(&format!("route `{}`", route.name)));
        }
        *n += 1;
        Ok(RouteSlot {
            registry: self,
            route: route.name.clone(),
        })
    }

    fn route_counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.per_route.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists an upgraded connection until the returned guard is dropped. Once shutdown
    /// has closed the others, it is told to close at once.
    pub(crate) fn register(
        &self,
        id: u64,
        route: &str,
        outbound: &OutboundHandle,
    ) -> Registration<'_> {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.open_connections()
            .insert(id, (route.to_owned(), outbound.clone()));
        if *self.closing.borrow() {
            // Registered while `close_all` went through the open connections.
            let _ = outbound.push(shutdown_close());
        }
        Registration { registry: self, id }
    }

    /// The open connections by id, with their route and outbound queue.
    pub(crate) fn open_connections(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, (String, OutboundHandle)>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many connections are open.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Tells every open connection (and every one registered from now on) to close
    /// with 1001, behind what its controller queued so far.
    pub(crate) fn close_all(&self) {
        self.closing.send_replace(true);
        for (_, outbound) in self.open_connections().values() {
            let _ = outbound.push(shutdown_close());
        }
    }

    /// Completes when the connections were told to close and none is left.
    pub(crate) async fn drained(&self) {
        let mut closing = self.closing.subscribe();
        let _ = closing.wait_for(|closing| *closing).await;
        loop {
            let idle = self.idle.notified();
            if self.active() == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Holds one place in a route's connection count.
pub(crate) struct RouteSlot<'a> {
    registry: &'a Registry,
    route: String,
}

impl Drop for RouteSlot<'_> {
    fn drop(&mut self) {
        release(&mut self.registry.route_counts(), &self.route);
    }
}

/// A connection's place in the registry, for as long as it is open.
pub(crate) struct Registration<'a> {
    registry: &'a Registry,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.open_connections().remove(&self.id);
        if self.registry.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.registry.idle.notify_waiters();
        }
    }
}
