//! Topics: named sets of subscribed connections, shared by every controller of the
//! process and, with a `[cluster]` table, relayed to the other nodes (see
//! [`crate::cluster`]).
//!
//! The hub is the only owner of subscriptions: controllers' instances come and go
//! (traps, reloads) but a connection stays subscribed until it leaves the topic or
//! closes. A publication is fanned out here, under the hub's lock, into each
//! subscriber's outbound queue: one shared copy of the payload, no wasm call per
//! recipient, and every subscriber sees one publisher's messages in the order they were
//! published. Nothing here waits: queues are pushed with their slow-client policy, and
//! the cluster gets the message through a bounded buffer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Message;

use crate::cluster::Link;
use crate::controller::{ConnectionId, Outbound, OutboundHandle};

/// Longest topic name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 255;

/// Most topics one connection is subscribed to at once.
pub const MAX_TOPICS_PER_CONNECTION: usize = 256;

/// Most `user` names one node shares per topic in its presence.
pub const MAX_PRESENCE_USERS: usize = 100;

/// Most other nodes remembered per topic.
const MAX_REMOTE_NODES: usize = 1024;

/// Longest node name accepted from another node.
const MAX_NODE_NAME_BYTES: usize = 128;

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty, or longer than [`MAX_TOPIC_BYTES`].
    #[error("a topic is 1 to {MAX_TOPIC_BYTES} bytes")]
    InvalidTopic,
    /// The connection already has [`MAX_TOPICS_PER_CONNECTION`] topics.
    #[error("a connection has at most {MAX_TOPICS_PER_CONNECTION} topics")]
    TooManyTopics,
}

/// Whether `topic` is a valid topic name.
pub fn is_valid(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_BYTES
}

/// Who is subscribed to a topic: this node's subscribers and what the other nodes last
/// said about theirs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Subscribed connections.
    pub connections: u32,
    /// Their distinct `user` attributes, sorted.
    pub users: Vec<String>,
}

/// One node's presence on a topic, as that node announced it.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    pub(crate) connections: u32,
    pub(crate) users: Vec<String>,
    pub(crate) seen: Instant,
}

/// The topics of this process.
#[derive(Default)]
pub struct Hub {
    state: Mutex<State>,
    /// The link to the other nodes, once the cluster started.
    cluster: OnceLock<Arc<Link>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("clustered", &self.cluster.get().is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    topics: HashMap<Arc<str>, Topic>,
    /// Each connection's topics, so that leaving all of them costs no scan.
    by_conn: HashMap<ConnectionId, Vec<Arc<str>>>,
}

#[derive(Default)]
struct Topic {
    /// In id order, so fan-out order is the connections' opening order.
    subscribers: BTreeMap<ConnectionId, Subscriber>,
    /// This node's distinct `user`s, with how many subscribers carry each.
    users: BTreeMap<Arc<str>, u32>,
    /// Other nodes' presence, by node name.
    remote: HashMap<Arc<str>, Remote>,
}

struct Subscriber {
    outbound: OutboundHandle,
    user: Option<Arc<str>>,
}

impl Hub {
    /// A hub with no cluster: topics span this process only.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connects the hub to the cluster; a hub is connected at most once.
    pub(crate) fn attach(&self, link: Arc<Link>) {
        if self.cluster.set(link).is_err() {
            tracing::warn!("the topic hub already has a cluster link; keeping the first");
        }
    }

    fn link(&self) -> Option<&Arc<Link>> {
        self.cluster.get()
    }

    /// Subscribes connection `conn` (whose messages go to `outbound`, and whose `user`
    /// attribute is `user`) to `topic`. Subscribing again changes nothing.
    pub fn subscribe(
        &self,
        conn: ConnectionId,
        outbound: &OutboundHandle,
        user: Option<&str>,
        topic: &str,
    ) -> Result<(), TopicError> {
        if !is_valid(topic) {
            return Err(TopicError::InvalidTopic);
        }
        let mut state = self.lock();
        let State { topics, by_conn } = &mut *state;
        let mine = by_conn.entry(conn).or_default();
        if mine.iter().any(|t| &**t == topic) {
            return Ok(());
        }
        if mine.len() >= MAX_TOPICS_PER_CONNECTION {
            return Err(TopicError::TooManyTopics);
        }
        let name: Arc<str> = match topics.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => topic.into(),
        };
        mine.push(name.clone());
        let entry = topics.entry(name.clone()).or_default();
        let user: Option<Arc<str>> = user.map(Into::into);
        if let Some(user) = &user {
            *entry.users.entry(user.clone()).or_insert(0) += 1;
        }
        entry.subscribers.insert(
            conn,
            Subscriber {
                outbound: outbound.clone(),
                user,
            },
        );
        drop(state);
        if let Some(link) = self.link() {
            link.touch(name);
        }
        Ok(())
    }

    /// Unsubscribes `conn` from `topic`; whether it was subscribed.
    pub fn unsubscribe(&self, conn: ConnectionId, topic: &str) -> bool {
        let mut state = self.lock();
        let Some(mine) = state.by_conn.get_mut(&conn) else {
            return false;
        };
        let Some(at) = mine.iter().position(|t| &**t == topic) else {
            return false;
        };
        let name = mine.swap_remove(at);
        if mine.is_empty() {
            state.by_conn.remove(&conn);
        }
        remove_subscriber(&mut state.topics, &name, conn);
        drop(state);
        if let Some(link) = self.link() {
            link.touch(name);
        }
        true
    }

    /// Removes `conn` from every topic (it closed, or its controller closed it).
    pub fn leave_all(&self, conn: ConnectionId) {
        let mut state = self.lock();
        let Some(mine) = state.by_conn.remove(&conn) else {
            return;
        };
        for name in &mine {
            remove_subscriber(&mut state.topics, name, conn);
        }
        drop(state);
        if let Some(link) = self.link() {
            for name in mine {
                link.touch(name);
            }
        }
    }

    /// The topics `conn` is subscribed to, sorted.
    pub fn subscriptions(&self, conn: ConnectionId) -> Vec<String> {
        let state = self.lock();
        let mut names: Vec<String> = state
            .by_conn
            .get(&conn)
            .map(|mine| mine.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default();
        names.sort_unstable();
        names
    }

    /// Queues `message` for this node's subscribers of `topic` but `exclude`, and hands
    /// it to the cluster for the other nodes. Returns how many local queues took it.
    pub fn publish(&self, topic: &str, message: &Message, exclude: Option<ConnectionId>) -> u32 {
        if !is_valid(topic) {
            return 0;
        }
        let queued = self.deliver(topic, message, exclude);
        if let Some(link) = self.link() {
            link.publish(topic, message);
        }
        queued
    }

    /// Queues `message` for this node's subscribers of `topic` but `exclude`; how many
    /// queues took it. A subscriber whose connection is gone is dropped on the way.
    pub(crate) fn deliver(
        &self,
        topic: &str,
        message: &Message,
        exclude: Option<ConnectionId>,
    ) -> u32 {
        let mut state = self.lock();
        let Some(entry) = state.topics.get(topic) else {
            return 0;
        };
        let mut queued = 0;
        let mut gone = Vec::new();
        for (id, subscriber) in &entry.subscribers {
            if Some(*id) == exclude {
                continue;
            }
            match subscriber.outbound.push(Outbound::Message(message.clone())) {
                Ok(()) => queued += 1,
                Err(crate::controller::QueueError::Closed) => gone.push(*id),
                Err(crate::controller::QueueError::Full) => {}
            }
        }
        // The connection task ended without its controller telling us (it will, but a
        // stale subscriber must not cost every later publication a push).
        for id in gone {
            remove_subscriber(&mut state.topics, topic, id);
            if let Some(mine) = state.by_conn.get_mut(&id) {
                mine.retain(|t| &**t != topic);
                if mine.is_empty() {
                    state.by_conn.remove(&id);
                }
            }
        }
        queued
    }

    /// Who is subscribed to `topic`: this node's subscribers at once, plus what other
    /// nodes announced within `timeout` (only known while this node has subscribers).
    pub fn presence(&self, topic: &str) -> Presence {
        let timeout = self.link().map(|l| l.presence_timeout());
        let state = self.lock();
        let Some(entry) = state.topics.get(topic) else {
            return Presence::default();
        };
        let mut connections = u32::try_from(entry.subscribers.len()).unwrap_or(u32::MAX);
        let mut users: Vec<String> = entry
            .users
            .keys()
            .take(MAX_PRESENCE_USERS)
            .map(|u| u.to_string())
            .collect();
        if let Some(timeout) = timeout {
            let now = Instant::now();
            for remote in entry.remote.values() {
                if now.duration_since(remote.seen) <= timeout {
                    connections = connections.saturating_add(remote.connections);
                    users.extend(remote.users.iter().cloned());
                }
            }
        }
        users.sort_unstable();
        users.dedup();
        Presence { connections, users }
    }

    /// This node's own presence on `topic`, as announced to the others: the count and
    /// at most [`MAX_PRESENCE_USERS`] names.
    pub(crate) fn local_presence(&self, topic: &str) -> (u32, Vec<String>) {
        let state = self.lock();
        let Some(entry) = state.topics.get(topic) else {
            return (0, Vec::new());
        };
        let count = u32::try_from(entry.subscribers.len()).unwrap_or(u32::MAX);
        let users = entry
            .users
            .keys()
            .take(MAX_PRESENCE_USERS)
            .map(|u| u.to_string())
            .collect();
        (count, users)
    }

    /// Whether this node has subscribers of `topic`.
    pub(crate) fn has_subscribers(&self, topic: &str) -> bool {
        self.lock().topics.contains_key(topic)
    }

    /// The topics this node has subscribers of.
    pub(crate) fn local_topics(&self) -> Vec<Arc<str>> {
        self.lock().topics.keys().cloned().collect()
    }

    /// Records what node `node` announced about `topic` (a count of 0 removes it). Kept
    /// only while this node has subscribers of the topic.
    pub(crate) fn set_remote(&self, topic: &str, node: &str, connections: u32, users: Vec<String>) {
        let mut state = self.lock();
        let Some(entry) = state.topics.get_mut(topic) else {
            return;
        };
        if connections == 0 {
            entry.remote.remove(node);
            return;
        }
        if !entry.remote.contains_key(node)
            && (entry.remote.len() >= MAX_REMOTE_NODES || node.len() > MAX_NODE_NAME_BYTES)
        {
            // What NATS brings is bounded too: a flood of made-up nodes costs nothing.
            return;
        }
        let mut users = users;
        users.truncate(MAX_PRESENCE_USERS);
        entry.remote.insert(
            node.into(),
            Remote {
                connections,
                users,
                seen: Instant::now(),
            },
        );
    }

    /// Forgets other nodes not heard from within `timeout`.
    pub(crate) fn expire(&self, timeout: Duration) {
        let now = Instant::now();
        let mut state = self.lock();
        for entry in state.topics.values_mut() {
            entry
                .remote
                .retain(|_, r| now.duration_since(r.seen) <= timeout);
        }
    }
}

/// Removes `conn` from `topic`; the topic goes when its last subscriber does.
fn remove_subscriber(topics: &mut HashMap<Arc<str>, Topic>, topic: &str, conn: ConnectionId) {
    let Some(entry) = topics.get_mut(topic) else {
        return;
    };
    if let Some(Subscriber {
        user: Some(user), ..
    }) = entry.subscribers.remove(&conn)
        && let Some(n) = entry.users.get_mut(&user)
    {
        *n -= 1;
        if *n == 0 {
            entry.users.remove(&user);
        }
    }
    if entry.subscribers.is_empty() {
        topics.remove(topic);
    }
}

/// A route's `topic` template, e.g. `chat/{1}`: literal text and `{N}` for what the
/// route's Nth `*` captured (`{{` and `}}` are literal braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Capture(usize),
}

impl TopicTemplate {
    /// Parses `source` for a route whose pattern has `stars` captures.
    pub fn new(source: &str, stars: usize) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut number = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(d) => number.push(d),
                            None => return Err("a `{` is not closed".to_owned()),
                        }
                    }
                    let n: usize = number.parse().map_err(|_| {
                        format!("`{{{number}}}` is not a capture: use `{{1}}` for the first `*` of `match` (`{{{{` for a literal brace)")
                    })?;
                    if n == 0 || n > stars {
                        return Err(format!(
                            "`{{{n}}}` names capture {n}, but `match` has {stars} `*`"
                        ));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Capture(n));
                }
                '}' => return Err("a `}` has no `{` (write `}}` for a literal brace)".to_owned()),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if parts.is_empty() {
            return Err("is empty".to_owned());
        }
        let fixed: usize = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Capture(_) => 0,
            })
            .sum();
        if fixed > MAX_TOPIC_BYTES {
            return Err(format!("is longer than {MAX_TOPIC_BYTES} bytes"));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The topic for a connection whose route captured `captures`; `None` when it would
    /// not be a valid topic (empty, or too long).
    pub fn render(&self, captures: &[String]) -> Option<String> {
        let mut topic = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => topic.push_str(t),
                Part::Capture(n) => topic.push_str(captures.get(n - 1)?),
            }
        }
        is_valid(&topic).then_some(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::outbound_queue;
    use crate::limits::Limits;

    fn conn() -> (OutboundHandle, crate::controller::OutboundQueue) {
        outbound_queue(&Limits::default())
    }

    fn received(queue: &mut crate::controller::OutboundQueue) -> Vec<String> {
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut out = Vec::new();
        assert!(!queue.poll_refill(&mut cx), "overflowed");
        while let Some(item) = queue.next_taken() {
            match item {
                Outbound::Message(m) => out.push(m.to_text().unwrap().to_owned()),
                Outbound::Close(_) => out.push("close".to_owned()),
            }
        }
        out
    }

    #[test]
    fn publish_reaches_the_topic_subscribers_but_the_excluded_one() {
        let hub = Hub::new();
        let (a, mut qa) = conn();
        let (b, mut qb) = conn();
        let (c, mut qc) = conn();
        hub.subscribe(1, &a, Some("ann"), "room/1").unwrap();
        hub.subscribe(2, &b, None, "room/1").unwrap();
        hub.subscribe(3, &c, None, "room/2").unwrap();
        assert_eq!(hub.publish("room/1", &Message::text("hi"), Some(2)), 1);
        assert_eq!(received(&mut qa), ["hi"]);
        assert!(received(&mut qb).is_empty());
        assert!(received(&mut qc).is_empty());
        assert_eq!(
            hub.presence("room/1"),
            Presence {
                connections: 2,
                users: vec!["ann".to_owned()]
            }
        );
    }

    #[test]
    fn leaving_drops_subscriptions_users_and_empty_topics() {
        let hub = Hub::new();
        let (a, _qa) = conn();
        hub.subscribe(1, &a, Some("ann"), "x").unwrap();
        hub.subscribe(1, &a, Some("ann"), "x").unwrap();
        hub.subscribe(1, &a, Some("ann"), "y").unwrap();
        assert_eq!(hub.subscriptions(1), ["x", "y"]);
        assert!(hub.unsubscribe(1, "x"));
        assert!(!hub.unsubscribe(1, "x"));
        assert_eq!(hub.presence("x"), Presence::default());
        hub.leave_all(1);
        assert!(hub.subscriptions(1).is_empty());
        assert!(!hub.has_subscribers("y"));
        assert!(hub.local_topics().is_empty());
    }

    #[test]
    fn topics_and_subscriptions_are_bounded() {
        let hub = Hub::new();
        let (a, _qa) = conn();
        assert_eq!(
            hub.subscribe(1, &a, None, ""),
            Err(TopicError::InvalidTopic)
        );
        let long = "x".repeat(MAX_TOPIC_BYTES + 1);
        assert_eq!(
            hub.subscribe(1, &a, None, &long),
            Err(TopicError::InvalidTopic)
        );
        hub.subscribe(1, &a, None, &long[1..]).unwrap();
        for i in 1..MAX_TOPICS_PER_CONNECTION {
            hub.subscribe(1, &a, None, &format!("t{i}")).unwrap();
        }
        assert_eq!(
            hub.subscribe(1, &a, None, "one-more"),
            Err(TopicError::TooManyTopics)
        );
        assert_eq!(hub.publish(&long, &Message::text("x"), None), 0);
    }

    #[test]
    fn a_closed_queue_is_unsubscribed_on_the_next_publication() {
        let hub = Hub::new();
        let (a, qa) = conn();
        hub.subscribe(1, &a, None, "t").unwrap();
        drop(qa);
        assert_eq!(hub.publish("t", &Message::text("x"), None), 0);
        assert!(hub.subscriptions(1).is_empty());
        assert!(!hub.has_subscribers("t"));
    }

    #[test]
    fn remote_presence_adds_up_and_is_dropped_with_a_zero_count() {
        let hub = Hub::new();
        let (a, _qa) = conn();
        hub.subscribe(1, &a, Some("ann"), "t").unwrap();
        // Without a cluster link, remote entries are not counted.
        hub.set_remote("t", "node-b", 3, vec!["bob".to_owned()]);
        assert_eq!(hub.presence("t").connections, 1);
        hub.set_remote("elsewhere", "node-b", 3, Vec::new());
        assert!(!hub.has_subscribers("elsewhere"));
        hub.set_remote("t", "node-b", 0, Vec::new());
        hub.expire(Duration::from_secs(1));
        assert_eq!(hub.local_presence("t"), (1, vec!["ann".to_owned()]));
    }

    #[test]
    fn templates_render_captures_and_refuse_bad_placeholders() {
        let t = TopicTemplate::new("chat/{1}", 1).unwrap();
        assert_eq!(
            t.render(&["lobby".to_owned()]).as_deref(),
            Some("chat/lobby")
        );
        assert_eq!(t.render(&[String::new()]).as_deref(), Some("chat/"));
        let t = TopicTemplate::new("{2}:{1} {{x}}", 2).unwrap();
        assert_eq!(
            t.render(&["a".to_owned(), "b".to_owned()]).as_deref(),
            Some("b:a {x}")
        );
        assert_eq!(
            TopicTemplate::new("{1}", 1)
                .unwrap()
                .render(&[String::new()]),
            None
        );
        let long = "y".repeat(300);
        assert_eq!(TopicTemplate::new("{1}", 1).unwrap().render(&[long]), None);
        for (bad, why) in [
            ("chat/{2}", "capture 2"),
            ("chat/{0}", "capture 0"),
            ("chat/{x}", "not a capture"),
            ("chat/{1", "not closed"),
            ("chat/}", "has no `{`"),
            ("", "empty"),
        ] {
            let error = TopicTemplate::new(bad, 1).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
