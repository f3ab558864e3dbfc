//! The listener's side of the server: accepting sockets, the caps a socket meets before
//! its request is read, and whether the server still admits anyone.
//!
//! Every accepted socket holds a [`SocketSlot`] in `[limits] max-connections` from
//! accept to close, so a flood of half-open requests is capped too; each socket still
//! in its handshake also holds a [`HandshakeSlot`] in its address's
//! `max-handshakes-per-address`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderValue;
use http::header::RETRY_AFTER;
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::filter::ClientKey;
use crate::request::Rejection;

/// The counts and the state that decide whether a new socket is let in.
#[derive(Default)]
pub(crate) struct Gate {
    /// Accepted sockets not yet closed (handshaking or upgraded), for `max-connections`.
    sockets: AtomicUsize,
    /// Sockets in their handshake per client address, for
    /// `max-handshakes-per-address`.
    handshaking: Mutex<HashMap<ClientKey, usize>>,
    /// `true` once shutdown started: new requests get 503.
    draining: AtomicBool,
}

impl Gate {
    /// Counts a newly accepted socket. Its slot is taken even when the socket is over
    /// the cap, so that the count stays right while the refusal is answered;
    /// [`SocketSlot::over`] tells.
    pub(crate) fn take_socket_slot(&self, config: &Config) -> SocketSlot<'_> {
        let sockets = self.sockets.fetch_add(1, Ordering::AcqRel) + 1;
        SocketSlot {
            gate: self,
            over: sockets > config.max_connections,
        }
    }

    /// Takes a place in the count of `peer`'s sockets in their handshake, or refuses
    /// past `max-handshakes-per-address`. A trusted proxy speaks for many clients, so it
    /// is not counted (`None`).
    pub(crate) fn take_handshake_slot(
        &self,
        peer: SocketAddr,
        config: &Config,
    ) -> Result<Option<HandshakeSlot<'_>>, Rejection> {
        if config.trusted_proxies.iter().any(|c| c.contains(peer.ip())) {
            return Ok(None);
        }
        let key = ClientKey::of(peer.ip(), 64);
        let mut counts = self.handshake_counts();
        let n = counts.entry(key).or_insert(0);
        if *n >= config.max_handshakes_per_address {
            return Err(
                Rejection::new(503, "too many unfinished handshakes from your address")
                    .with_header(RETRY_AFTER, HeaderValue::from_static("1")),
            );
        }
        *n += 1;
        Ok(Some(HandshakeSlot { gate: self, key }))
    }

    fn handshake_counts(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, usize>> {
        self.handshaking.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, requests are answered 503.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown started.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Holds one place in the server-wide connection count.
pub(crate) struct SocketSlot<'a> {
    gate: &'a Gate,
    /// The place is past `max-connections`: the socket is to be refused.
    over: bool,
}

impl SocketSlot<'_> {
    /// Whether this socket is past `max-connections`.
    pub(crate) fn over(&self) -> bool {
        self.over
    }
}

impl Drop for SocketSlot<'_> {
    fn drop(&mut self) {
        self.gate.sockets.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds one place in an address's count of sockets in their handshake.
pub(crate) struct HandshakeSlot<'a> {
    gate: &'a Gate,
    key: ClientKey,
}

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        release(&mut self.gate.handshake_counts(), &self.key);
    }
}

/// Gives back one place counted under `key`, forgetting keys that reach zero.
pub(crate) fn release<K: Eq + std::hash::Hash>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// The refusal for a request past a connection cap.
pub(crate) fn at_capacity(what: &str) -> Rejection {
    Rejection::new(503, format!("{what} is at its connection limit"))
        .with_header(RETRY_AFTER, HeaderValue::from_static("1"))
}

/// Accepts the next connection; transient errors (e.g. out of file descriptors) are
/// logged and retried with backoff instead of ending the server.
pub(crate) async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
