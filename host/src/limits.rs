//! Limits: message and frame sizes, keepalive, connection counts, queue sizes, and the
//! controller sandbox (CPU deadline per call, memory cap and timer cap per instance).
//!
//! Set them for every route in a top-level `[limits]` table and override them for one
//! route in `[route.limits]` (same keys; a route inherits every key it does not set).
//! `max-connections` is the exception: at the top level it caps the whole server, in a
//! route it caps that route, and it is not inherited.
//!
//! ```toml
//! [limits]
//! max-connections = 20000          # open + handshaking connections; beyond → 503
//! max-handshakes-per-address = 64  # top level only: sockets one address (IPv6: /64)
//!                                  # may have before its request is read; beyond →
//!                                  # closed at accept (trusted proxies exempt)
//! max-message-bytes = 16777216     # a bigger message → close 1009
//! max-frame-bytes = 16777216       # a bigger frame → close 1009
//! ping-interval-ms = 30000         # ping a peer silent this long; 0 = never
//! idle-timeout-ms = 60000          # close a peer silent this long; 0 = never
//! outbound-queue-messages = 1024   # per connection, queued for a slow client
//! outbound-queue-bytes = 4194304   # per connection
//! slow-client = "close"            # or "drop-oldest"
//! call-deadline-ms = 200           # longest one export call may run
//! memory-bytes = 67108864          # a controller instance's memories + tables cap
//! max-timers = 10000               # pending timers of a controller instance
//! inbound-queue-messages = 1024    # events queued for one controller
//! inbound-queue-bytes = 16777216   # message bytes queued for one controller
//! ```
//!
//! A controller used by several routes runs as one instance, so its memory cap, its
//! timer cap, its inbound queue and the deadline of calls that belong to no connection
//! (`init`, timers, `on-shutdown`) are the largest among those routes; a call for a
//! connection's event gets the deadline of that connection's route.
//!
//! `memory-bytes` covers all of an instance's linear memories and tables together: each
//! table element is charged 16 bytes (wasmtime stores one in 8 to 16 bytes of host
//! memory), so with the default 64 MiB a guest's tables hold at most 4M elements. Growing
//! past the cap traps. Fixed caps, not configurable, bound what an instance may create
//! besides: 500 core instances, 500 tables and 16 memories.
//!
//! `max-timers` caps the timers an instance has pending at once; past it `set-timer`
//! returns an error to the guest. Finding and taking the due timers costs O(log n) per
//! event, however many are pending.

use std::time::Duration;

use serde::Deserialize;

/// What to do with a connection whose outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowClient {
    /// Close it with 1008 "outbound queue full" (the default): a client that cannot keep
    /// up misses nothing silently.
    Close,
    /// Drop the oldest queued messages to make room (close frames are never dropped):
    /// for feeds where only the latest data matters.
    DropOldest,
}

/// The limits that apply to one route's connections (and, merged, to a controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest complete message accepted from a client (1009 beyond).
    pub max_message_bytes: usize,
    /// Largest single frame accepted from a client (1009 beyond).
    pub max_frame_bytes: usize,
    /// Send a ping after this long without hearing from the peer; `None` never pings.
    pub ping_interval: Option<Duration>,
    /// Close a peer not heard from (no frame at all, pongs included) for this long;
    /// `None` waits forever.
    pub idle_timeout: Option<Duration>,
    /// Messages a connection's outbound queue holds.
    pub outbound_messages: usize,
    /// Payload bytes a connection's outbound queue holds (one message of any size is
    /// always accepted into an empty queue).
    pub outbound_bytes: usize,
    /// What a full outbound queue does.
    pub slow_client: SlowClient,
    /// Longest one export call may run before it is interrupted.
    pub call_deadline: Duration,
    /// Most bytes one controller instance's linear memories and tables (16 bytes an
    /// element) may grow to, together.
    pub memory_bytes: usize,
    /// Most timers one controller instance may have pending at once.
    pub max_timers: usize,
    /// Events a controller's queue holds before its clients' sockets stop being read.
    pub inbound_messages: usize,
    /// Message bytes a controller's queue holds before its clients' sockets stop being
    /// read (one message of any size is always admitted into an empty queue).
    pub inbound_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 << 20,
            max_frame_bytes: 16 << 20,
            ping_interval: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(60)),
            outbound_messages: 1024,
            outbound_bytes: 4 << 20,
            slow_client: SlowClient::Close,
            call_deadline: Duration::from_millis(200),
            memory_bytes: 64 << 20,
            max_timers: 10_000,
            inbound_messages: 1024,
            inbound_bytes: 16 << 20,
        }
    }
}

/// The server-wide connection cap when routes.toml sets none.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

/// Sockets one client address may hold in the handshake phase when routes.toml sets no
/// `max-handshakes-per-address`. A handshake lasts one round trip and a browser opens a
/// few connections at a time, but many users behind one NAT reconnecting together (after
/// a restart) arrive in a burst; a silent socket lasts the whole `handshake-timeout-ms`.
/// 64 of them cannot fill the default `max-connections`; a load generator on one address
/// needs more.
pub const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS: usize = 64;

/// A `[limits]` or `[route.limits]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawLimits {
    pub(crate) max_connections: Option<u64>,
    pub(crate) max_handshakes_per_address: Option<u64>,
    max_message_bytes: Option<u64>,
    max_frame_bytes: Option<u64>,
    ping_interval_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    outbound_queue_messages: Option<u64>,
    outbound_queue_bytes: Option<u64>,
    slow_client: Option<SlowClient>,
    call_deadline_ms: Option<u64>,
    memory_bytes: Option<u64>,
    max_timers: Option<u64>,
    inbound_queue_messages: Option<u64>,
    inbound_queue_bytes: Option<u64>,
}

impl RawLimits {
    /// Its keys, as serde reads them (a unit test in `config` keeps them equal).
    pub(crate) const KEYS: &[&str] = &[
        "max-connections",
        "max-handshakes-per-address",
        "max-message-bytes",
        "max-frame-bytes",
        "ping-interval-ms",
        "idle-timeout-ms",
        "outbound-queue-messages",
        "outbound-queue-bytes",
        "slow-client",
        "call-deadline-ms",
        "memory-bytes",
        "max-timers",
        "inbound-queue-messages",
        "inbound-queue-bytes",
    ];
}

impl RawLimits {
    /// `base` with every key this table sets replaced. Errors name the key.
    pub(crate) fn apply(&self, base: &Limits) -> Result<Limits, String> {
        let mut limits = base.clone();
        let positive = |key: &str, value: Option<u64>, into: &mut usize| match value {
            None => Ok(()),
            Some(0) => Err(format!("`{key}` must be at least 1")),
            Some(v) => {
                *into = usize::try_from(v).map_err(|_| format!("`{key}` is too large"))?;
                Ok(())
            }
        };
        positive(
            "max-message-bytes",
            self.max_message_bytes,
            &mut limits.max_message_bytes,
        )?;
        positive(
            "max-frame-bytes",
            self.max_frame_bytes,
            &mut limits.max_frame_bytes,
        )?;
        positive(
            "outbound-queue-messages",
            self.outbound_queue_messages,
            &mut limits.outbound_messages,
        )?;
        positive(
            "outbound-queue-bytes",
            self.outbound_queue_bytes,
            &mut limits.outbound_bytes,
        )?;
        positive("memory-bytes", self.memory_bytes, &mut limits.memory_bytes)?;
        positive("max-timers", self.max_timers, &mut limits.max_timers)?;
        positive(
            "inbound-queue-messages",
            self.inbound_queue_messages,
            &mut limits.inbound_messages,
        )?;
        positive(
            "inbound-queue-bytes",
            self.inbound_queue_bytes,
            &mut limits.inbound_bytes,
        )?;
        // The permits of the inbound byte budget are counted in u32.
        limits.inbound_bytes = limits.inbound_bytes.min(u32::MAX as usize);
        let millis = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        if let Some(ms) = self.ping_interval_ms {
            limits.ping_interval = millis(ms);
        }
        if let Some(ms) = self.idle_timeout_ms {
            limits.idle_timeout = millis(ms);
        }
        if let Some(slow) = self.slow_client {
            limits.slow_client = slow;
        }
        match self.call_deadline_ms {
            None => {}
            Some(0) => return Err("`call-deadline-ms` must be at least 1".to_owned()),
            Some(ms) => limits.call_deadline = Duration::from_millis(ms),
        }
        if limits.max_frame_bytes > limits.max_message_bytes {
            // A frame is part of a message: a larger frame limit would never apply.
            limits.max_frame_bytes = limits.max_message_bytes;
        }
        Ok(limits)
    }

    /// `max-handshakes-per-address` as a count; 0 is refused.
    pub(crate) fn max_handshakes_per_address(&self) -> Result<Option<usize>, String> {
        match self.max_handshakes_per_address {
            None => Ok(None),
            Some(0) => Err("`max-handshakes-per-address` must be at least 1".to_owned()),
            Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        }
    }

    /// `max-connections` as a count; 0 is refused.
    pub(crate) fn max_connections(&self) -> Result<Option<usize>, String> {
        match self.max_connections {
            None => Ok(None),
            Some(0) => Err("`max-connections` must be at least 1".to_owned()),
            Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        }
    }
}

/// The sandbox and queue settings of one controller instance: the largest of its
/// routes' limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Deadline of calls that belong to no connection (init, timers, shutdown, reload).
    pub call_deadline: Duration,
    /// Memory cap of the instance: its memories and tables together.
    pub memory_bytes: usize,
    /// Most timers the instance may have pending.
    pub max_timers: usize,
    /// Capacity of the controller's event queue.
    pub inbound_messages: usize,
    /// Byte budget of the controller's event queue.
    pub inbound_bytes: usize,
}

impl Sandbox {
    /// The sandbox of a controller used by a single route with `limits`.
    pub fn of(limits: &Limits) -> Self {
        Self {
            call_deadline: limits.call_deadline,
            memory_bytes: limits.memory_bytes,
            max_timers: limits.max_timers,
            inbound_messages: limits.inbound_messages,
            inbound_bytes: limits.inbound_bytes,
        }
    }

    /// Widens this sandbox to cover one more route's `limits`.
    pub fn widen(&mut self, limits: &Limits) {
        self.call_deadline = self.call_deadline.max(limits.call_deadline);
        self.memory_bytes = self.memory_bytes.max(limits.memory_bytes);
        self.max_timers = self.max_timers.max(limits.max_timers);
        self.inbound_messages = self.inbound_messages.max(limits.inbound_messages);
        self.inbound_bytes = self.inbound_bytes.max(limits.inbound_bytes);
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::of(&Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawLimits {
        toml::from_str(text).expect("valid limits table")
    }

    #[test]
    fn a_table_overrides_only_the_keys_it_sets() {
        let base = Limits::default();
        let limits =
            raw("max-message-bytes = 1000\nping-interval-ms = 0\nslow-client = \"drop-oldest\"")
                .apply(&base)
                .unwrap();
        assert_eq!(limits.max_message_bytes, 1000);
        assert_eq!(
            limits.max_frame_bytes, 1000,
            "frame limit capped by message"
        );
        assert_eq!(limits.ping_interval, None);
        assert_eq!(limits.idle_timeout, base.idle_timeout);
        assert_eq!(limits.slow_client, SlowClient::DropOldest);
        assert_eq!(limits.call_deadline, base.call_deadline);
    }

    #[test]
    fn zero_is_refused_where_it_means_nothing() {
        for key in [
            "max-message-bytes",
            "outbound-queue-messages",
            "memory-bytes",
            "max-timers",
            "call-deadline-ms",
        ] {
            let error = raw(&format!("{key} = 0"))
                .apply(&Limits::default())
                .unwrap_err();
            assert!(error.contains(key), "{error}");
        }
        assert!(raw("max-connections = 0").max_connections().is_err());
        assert_eq!(raw("max-connections = 3").max_connections(), Ok(Some(3)));
    }

    #[test]
    fn a_shared_controller_gets_the_widest_sandbox() {
        let narrow = raw("call-deadline-ms = 50\nmemory-bytes = 1000\nmax-timers = 20000")
            .apply(&Limits::default())
            .unwrap();
        let wide = raw("call-deadline-ms = 900")
            .apply(&Limits::default())
            .unwrap();
        let mut sandbox = Sandbox::of(&narrow);
        sandbox.widen(&wide);
        assert_eq!(sandbox.call_deadline, Duration::from_millis(900));
        assert_eq!(sandbox.memory_bytes, Limits::default().memory_bytes);
        assert_eq!(sandbox.max_timers, 20_000);
    }
}
