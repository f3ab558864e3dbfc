//! The cluster: topics that span several wshost nodes, relayed through NATS.
//!
//! Each node keeps one NATS connection (async-nats, which reconnects with backoff and
//! restores subscriptions by itself) and subscribes only to the topics it has local
//! subscribers of, one NATS subscription per topic: `PREFIX.TOKEN.*`, where `TOKEN`
//! encodes the topic name (see [`encode_topic`]). Under it:
//! - `PREFIX.TOKEN.t` and `.b` carry a text or binary publication, its payload as is;
//! - `PREFIX.TOKEN.p` carries a node's presence on the topic (JSON: node, connections,
//!   users), sent within ~100 ms of a local change and every `presence-interval-ms`;
//! - `PREFIX.TOKEN.q` asks the other nodes to announce their presence (sent by a node
//!   that starts following the topic, and after every reconnect).
//!
//! The connection is opened with `no_echo`, so NATS never hands a node its own
//! publications: local subscribers got them from the hub already, exactly once.
//! Publications leave through a bounded buffer drained by one task, in order; when the
//! buffer is full, or NATS is unreachable, they reach local subscribers only and are
//! counted and logged as dropped (at most once, no history).

mod config;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;

pub(crate) use config::RawCluster;
pub use config::{Auth, ClusterConfig, Tls};

use crate::topics::Hub;

/// How long local changes are gathered before they are announced.
const COALESCE: Duration = Duration::from_millis(50);

/// Drops are logged at most this often (with the running totals).
const DROP_LOG_EVERY: Duration = Duration::from_secs(5);

/// How long `required = true` waits for the first connection.
const REQUIRED_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `required = true` and NATS could not be reached.
    #[error("cannot connect to NATS at {servers}: {reason}")]
    Connect {
        /// The configured servers.
        servers: String,
        /// What went wrong.
        reason: String,
    },
    /// A credentials file could not be read.
    #[error("cannot read the NATS credentials file `{}`: {source}", path.display())]
    Credentials {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a publication did not reach the other nodes.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// The publish buffer was full.
    BufferFull,
    /// NATS was unreachable.
    Disconnected,
    /// NATS refused it (e.g. larger than the server's `max_payload`).
    Refused,
}

impl Loss {
    const ALL: [Self; 3] = [Self::BufferFull, Self::Disconnected, Self::Refused];

    /// Its `reason` label in the metrics.
    fn label(self) -> &'static str {
        match self {
            Self::BufferFull => "buffer_full",
            Self::Disconnected => "disconnected",
            Self::Refused => "refused",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::BufferFull => "buffer full",
            Self::Disconnected => "disconnected",
            Self::Refused => "refused by NATS",
        }
    }
}

/// The hub's side of the cluster: where publications and local changes go.
pub(crate) struct Link {
    outbox: mpsc::Sender<(Arc<str>, Message)>,
    /// Topics whose local subscribers changed since the manager last looked.
    dirty: Mutex<HashSet<Arc<str>>>,
    wake: Notify,
    presence_timeout: Duration,
    stats: Stats,
}

struct Stats {
    /// This node's name, for the log.
    node: Arc<str>,
    dropped: AtomicU64,
    /// Drops by [`Loss`], in the order of [`Loss::ALL`].
    by_reason: [AtomicU64; 3],
    /// Topics followed in NATS, as the manager last counted them.
    followed: AtomicUsize,
    last_log: Mutex<Option<Instant>>,
}

impl Link {
    /// Hands a publication to the cluster, or counts it as dropped.
    pub(crate) fn publish(&self, topic: &str, message: &Message) {
        if let Err(mpsc::error::TrySendError::Full(_)) =
            self.outbox.try_send((topic.into(), message.clone()))
        {
            self.stats.dropped(Loss::BufferFull);
        }
    }

    /// Notes that `topic`'s local subscribers changed.
    pub(crate) fn touch(&self, topic: Arc<str>) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        dirty.insert(topic);
        drop(dirty);
        self.wake.notify_one();
    }

    /// How long another node's presence lasts without news.
    pub(crate) fn presence_timeout(&self) -> Duration {
        self.presence_timeout
    }

    fn take_dirty(&self) -> HashSet<Arc<str>> {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Stats {
    fn dropped(&self, why: Loss) {
        self.by_reason[why as usize].fetch_add(1, Ordering::Relaxed);
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= DROP_LOG_EVERY) {
            *last = Some(Instant::now());
            drop(last);
            tracing::warn!(
                node = %self.node,
                dropped,
                reason = why.reason(),
                effect = "they reached this node's subscribers only",
                "cluster messages dropped"
            );
        }
    }
}

/// A running cluster connection.
pub struct Cluster {
    client: async_nats::Client,
    link: Arc<Link>,
    hub: Arc<Hub>,
    prefix: String,
    node: Arc<str>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Connects `hub` to the cluster `config` describes. With `required`, fails unless NATS
/// answers; otherwise returns at once and connects in the background.
pub async fn start(config: &ClusterConfig, hub: Arc<Hub>) -> Result<Cluster, ClusterError> {
    let node: Arc<str> = config.name.clone().unwrap_or_else(default_name).into();
    let (events_tx, events_rx) = mpsc::channel(64);
    let options = options(config, &node, events_tx).await?;
    let servers = config.servers.join(", ");
    let addrs: Vec<async_nats::ServerAddr> = config
        .servers
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let client = if config.required {
        let connect = options.connect(addrs);
        match tokio::time::timeout(REQUIRED_CONNECT_TIMEOUT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(ClusterError::Connect {
                    servers,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(ClusterError::Connect {
                    servers,
                    reason: format!("no answer within {REQUIRED_CONNECT_TIMEOUT:?}"),
                });
            }
        }
    } else {
        options
            .retry_on_initial_connect()
            .connect(addrs)
            .await
            .map_err(|e| ClusterError::Connect {
                servers: servers.clone(),
                reason: e.to_string(),
            })?
    };
    let (outbox, outbox_rx) = mpsc::channel(config.publish_buffer);
    let link = Arc::new(Link {
        outbox,
        dirty: Mutex::new(HashSet::new()),
        wake: Notify::new(),
        presence_timeout: config.presence_timeout,
        stats: Stats {
            node: node.clone(),
            dropped: AtomicU64::new(0),
            by_reason: Default::default(),
            followed: AtomicUsize::new(0),
            last_log: Mutex::new(None),
        },
    });
    hub.attach(link.clone());
    let prefix = config.subject_prefix.clone();
    let publisher = tokio::spawn(publish_loop(
        client.clone(),
        prefix.clone(),
        link.clone(),
        outbox_rx,
    ));
    let manager = Manager {
        client: client.clone(),
        hub: hub.clone(),
        link: link.clone(),
        prefix: prefix.clone(),
        node: node.clone(),
        servers,
        interval: config.presence_interval,
        timeout: config.presence_timeout,
        following: HashMap::new(),
    };
    let manager = tokio::spawn(manager.run(events_rx));
    tracing::info!(node = %node, servers = %config.servers.join(", "), "cluster starting");
    Ok(Cluster {
        client,
        link,
        hub,
        prefix,
        node,
        tasks: vec![publisher, manager],
    })
}

impl Cluster {
    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A view of the connection's state, for the metrics.
    pub fn probe(&self) -> Probe {
        Probe {
            client: self.client.clone(),
            link: self.link.clone(),
        }
    }

    /// Leaves the cluster: announces that this node has no subscribers anywhere (so the
    /// other nodes' presence drops it at once) and flushes what is buffered.
    pub async fn leave(self) {
        // Connections that just closed made the manager announce their topics' new
        // counts; let those go out (they are due within `COALESCE`).
        tokio::time::sleep(COALESCE * 2).await;
        // Topics whose subscribers were cut off at the shutdown deadline.
        for topic in self.hub.local_topics() {
            let subject = subject(&self.prefix, &topic, Kind::Presence);
            let payload = presence_payload(&self.node, 0, &[]);
            let _ = self.client.publish(subject, payload).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.flush()).await;
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Reads the state of a cluster connection (for the metrics), also after it was left.
#[derive(Clone)]
pub struct Probe {
    client: async_nats::Client,
    link: Arc<Link>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("node", &self.link.stats.node)
            .finish_non_exhaustive()
    }
}

/// The state of a cluster connection at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Whether the NATS connection is up.
    pub connected: bool,
    /// Publications that reached local subscribers only, by reason (`buffer_full`,
    /// `disconnected`, `refused`).
    pub dropped: [(&'static str, u64); 3],
    /// Topics followed in NATS.
    pub topics_followed: usize,
}

impl Probe {
    /// The connection's state now.
    pub fn status(&self) -> ClusterStatus {
        let stats = &self.link.stats;
        ClusterStatus {
            connected: self.client.connection_state() == async_nats::connection::State::Connected,
            dropped: Loss::ALL.map(|loss| {
                (
                    loss.label(),
                    stats.by_reason[loss as usize].load(Ordering::Relaxed),
                )
            }),
            topics_followed: stats.followed.load(Ordering::Relaxed),
        }
    }
}

/// The host name and process id, e.g. `web-1-4242`.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wshost".to_owned());
    format!("{host}-{}", std::process::id())
}

async fn options(
    config: &ClusterConfig,
    node: &str,
    events: mpsc::Sender<async_nats::Event>,
) -> Result<async_nats::ConnectOptions, ClusterError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("wshost {node}"))
        .no_echo()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let _ = events.try_send(event);
            }
        });
    options = match &config.auth {
        Auth::None => options,
        Auth::UserPassword(user, password) => {
            options.user_and_password(user.clone(), password.clone())
        }
        Auth::Token(token) => options.token(token.clone()),
        Auth::Nkey(seed) => options.nkey(seed.clone()),
        Auth::CredentialsFile(path) => {
            options
                .credentials_file(path)
                .await
                .map_err(|source| ClusterError::Credentials {
                    path: path.clone(),
                    source,
                })?
        }
    };
    if config.tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &config.tls.client {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

/// What a subject under a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
    Presence,
    Query,
}

impl Kind {
    fn token(self) -> &'static str {
        match self {
            Self::Text => "t",
            Self::Binary => "b",
            Self::Presence => "p",
            Self::Query => "q",
        }
    }

    fn of(subject: &str) -> Option<Self> {
        match subject.rsplit_once('.')?.1 {
            "t" => Some(Self::Text),
            "b" => Some(Self::Binary),
            "p" => Some(Self::Presence),
            "q" => Some(Self::Query),
            _ => None,
        }
    }
}

/// A topic name as one NATS subject token: ASCII letters, digits, `-` and `_` as they
/// are, every other byte as `~XX` (hex), so no `.`, `*`, `>`, space or control character
/// reaches NATS and two topics never share a token. At most 3 × 255 = 765 bytes.
pub fn encode_topic(topic: &str) -> String {
    let mut token = String::with_capacity(topic.len());
    for &b in topic.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            token.push(char::from(b));
        } else {
            token.push('~');
            token.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            token.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    token
}

fn subject(prefix: &str, topic: &str, kind: Kind) -> String {
    format!("{prefix}.{}.{}", encode_topic(topic), kind.token())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PresenceNote {
    node: String,
    connections: u32,
    #[serde(default)]
    users: Vec<String>,
}

fn presence_payload(node: &str, connections: u32, users: &[String]) -> Bytes {
    let note = PresenceNote {
        node: node.to_owned(),
        connections,
        users: users.to_vec(),
    };
    serde_json::to_vec(&note)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// Drains the publish buffer into NATS, in order.
async fn publish_loop(
    client: async_nats::Client,
    prefix: String,
    link: Arc<Link>,
    mut outbox: mpsc::Receiver<(Arc<str>, Message)>,
) {
    while let Some((topic, message)) = outbox.recv().await {
        if client.connection_state() != async_nats::connection::State::Connected {
            link.stats.dropped(Loss::Disconnected);
            continue;
        }
        let (kind, payload) = match message {
            Message::Text(text) => (Kind::Text, Bytes::from(text)),
            Message::Binary(data) => (Kind::Binary, data),
            _ => continue,
        };
        if let Err(error) = client
            .publish(subject(&prefix, &topic, kind), payload)
            .await
        {
            tracing::debug!(%error, "NATS refused a publication");
            link.stats.dropped(Loss::Refused);
        }
    }
}

/// Follows the topics that have local subscribers and announces local presence.
struct Manager {
    client: async_nats::Client,
    hub: Arc<Hub>,
    link: Arc<Link>,
    prefix: String,
    node: Arc<str>,
    servers: String,
    interval: Duration,
    timeout: Duration,
    /// The receiving task of each topic followed in NATS.
    following: HashMap<Arc<str>, JoinHandle<()>>,
}

impl Manager {
    async fn run(mut self, mut events: mpsc::Receiver<async_nats::Event>) {
        let mut heartbeat = tokio::time::interval(self.interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Topics whose presence changed, announced together once `announce_at` comes:
        // a thousand clients joining a room make a few announcements, not a thousand.
        let mut changed: HashSet<Arc<str>> = HashSet::new();
        let mut announce_at = None;
        loop {
            tokio::select! {
                () = self.link.wake.notified() => {
                    // Following a topic cannot wait: publications from other nodes
                    // reach this node's new subscriber only once NATS knows.
                    for topic in self.link.take_dirty() {
                        self.follow(&topic).await;
                        changed.insert(topic);
                    }
                    self.link.stats.followed.store(self.following.len(), Ordering::Relaxed);
                    announce_at.get_or_insert_with(|| tokio::time::Instant::now() + COALESCE);
                }
                () = crate::deadline::sleep_until(announce_at), if announce_at.is_some() => {
                    announce_at = None;
                    for topic in std::mem::take(&mut changed) {
                        self.announce(&topic).await;
                    }
                }
                _ = heartbeat.tick() => {
                    self.hub.expire(self.timeout);
                    for topic in self.hub.local_topics() {
                        self.announce(&topic).await;
                    }
                }
                event = events.recv() => match event {
                    Some(event) => self.on_event(event).await,
                    None => break,
                },
            }
        }
    }

    async fn on_event(&mut self, event: async_nats::Event) {
        match event {
            async_nats::Event::Connected => {
                tracing::info!(node = %self.node, servers = %self.servers, dropped = self.link.stats.dropped.load(Ordering::Relaxed), "cluster connected");
                // Others may have forgotten us, and we them: announce and ask.
                for topic in self.hub.local_topics() {
                    self.announce(&topic).await;
                    self.ask(&topic).await;
                }
            }
            async_nats::Event::Disconnected => {
                tracing::warn!(node = %self.node, effect = "publications reach this node's subscribers only until NATS is back", "cluster disconnected");
            }
            async_nats::Event::SlowConsumer(sid) => {
                tracing::warn!(node = %self.node, sid, "cluster: a topic's NATS subscription fell behind; messages were dropped");
            }
            // Every failed reconnect attempt is a client error: not news at info.
            other @ async_nats::Event::ClientError(_) => {
                tracing::debug!(node = %self.node, event = %other, "cluster event");
            }
            other => tracing::info!(node = %self.node, event = %other, "cluster event"),
        }
    }

    /// Starts or stops following `topic` in NATS, as its local subscribers require.
    async fn follow(&mut self, topic: &Arc<str>) {
        let wanted = self.hub.has_subscribers(topic);
        if !wanted {
            if let Some(task) = self.following.remove(topic) {
                // Dropping the subscriber (with the task) unsubscribes in NATS.
                task.abort();
            }
            return;
        }
        if self.following.contains_key(topic) {
            return;
        }
        let filter = format!("{}.{}.*", self.prefix, encode_topic(topic));
        match self.client.subscribe(filter).await {
            Ok(subscriber) => {
                let task = tokio::spawn(receive(
                    subscriber,
                    topic.clone(),
                    self.hub.clone(),
                    self.link.clone(),
                    self.node.clone(),
                ));
                self.following.insert(topic.clone(), task);
                self.ask(topic).await;
            }
            Err(error) => {
                tracing::warn!(%error, topic = %topic, "cluster: cannot subscribe in NATS; retrying");
                self.link.touch(topic.clone());
            }
        }
    }

    /// Tells the other nodes how many subscribers `topic` has here.
    async fn announce(&self, topic: &str) {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        let (connections, users) = self.hub.local_presence(topic);
        let payload = presence_payload(&self.node, connections, &users);
        let _ = self
            .client
            .publish(subject(&self.prefix, topic, Kind::Presence), payload)
            .await;
    }

    /// Asks the other nodes to announce their presence on `topic`.
    async fn ask(&self, topic: &str) {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        let _ = self
            .client
            .publish(subject(&self.prefix, topic, Kind::Query), Bytes::new())
            .await;
    }
}

/// Delivers what NATS brings for one topic: publications into the local subscribers'
/// queues, presence into the hub.
async fn receive(
    mut subscriber: async_nats::Subscriber,
    topic: Arc<str>,
    hub: Arc<Hub>,
    link: Arc<Link>,
    node: Arc<str>,
) {
    while let Some(message) = subscriber.next().await {
        match Kind::of(&message.subject) {
            Some(Kind::Text) => match Utf8Bytes::try_from(message.payload) {
                Ok(text) => {
                    hub.deliver(&topic, &Message::Text(text), None);
                }
                Err(_) => {
                    tracing::warn!(topic = %topic, "cluster: a text publication from NATS is not UTF-8; dropped");
                }
            },
            Some(Kind::Binary) => {
                hub.deliver(&topic, &Message::Binary(message.payload), None);
            }
            Some(Kind::Presence) => {
                match serde_json::from_slice::<PresenceNote>(&message.payload) {
                    Ok(note) if *note.node != *node => {
                        hub.set_remote(&topic, &note.node, note.connections, note.users);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, topic = %topic, "cluster: unreadable presence note");
                    }
                }
            }
            Some(Kind::Query) => link.touch(topic.clone()),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_become_single_safe_subject_tokens() {
        assert_eq!(encode_topic("chat/lobby"), "chat~2Flobby");
        assert_eq!(encode_topic("a.b"), "a~2Eb");
        assert_eq!(encode_topic("a*>"), "a~2A~3E");
        assert_eq!(encode_topic("a b\t"), "a~20b~09");
        assert_eq!(encode_topic("~"), "~7E");
        assert_eq!(encode_topic("é"), "~C3~A9");
        for topic in ["a.b", "a*", "x >", "é ü", "~41", "A", "tab\tnl\n"] {
            let token = encode_topic(topic);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_~".contains(&b)),
                "{token}"
            );
        }
        // Injective: `~` itself is escaped, so `~41` and `A` differ.
        assert_ne!(encode_topic("~41"), encode_topic("A"));
        assert_eq!(encode_topic(&"é".repeat(127)).len(), 127 * 6);
    }

    #[test]
    fn subjects_end_in_their_kind() {
        let s = subject("wshost", "chat/x", Kind::Text);
        assert_eq!(s, "wshost.chat~2Fx.t");
        assert_eq!(Kind::of(&s), Some(Kind::Text));
        assert_eq!(Kind::of("wshost.x.q"), Some(Kind::Query));
        assert_eq!(Kind::of("wshost.x.z"), None);
    }
}
