//! Figure (i): one publisher's binary messages fanned out through a topic to its
//! subscribers on one or several wshost nodes, all served by the chat controller on a
//! route with `topic = "chat/{1}"` (or none, for the plain `broadcast` beside it).
//!
//! Every payload carries the time it was sent, in nanoseconds since an `Instant` of this
//! process, so each receiver measures publish → deliver latency on the same monotonic
//! clock as the sender. Before measuring, the run waits for the chat's join notices to
//! die down and then for a marker message from the publisher to reach every subscriber:
//! a subscription on another node takes effect a few milliseconds after the upgrade,
//! once that node has subscribed in NATS.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::load::connect;
use crate::servers::cpu_seconds;

/// A payload's first byte: what it is.
const DATA: u8 = 0;
const MARKER: u8 = 1;

/// Bytes per message, as in figure (d).
const PAYLOAD_BYTES: usize = 32;

/// Messages sent back to back per round of the throughput phase, as in figure (d).
const BURST: usize = 20;

/// Longest wait for one round's deliveries, the join notices to stop, or a marker.
const STALL: Duration = Duration::from_secs(30);

/// What one fan-out run measured.
#[derive(Debug, Clone)]
pub(crate) struct FanOut {
    /// Deliveries per second over all subscribers, during the throughput phase.
    pub(crate) deliveries_per_s: f64,
    /// Publish → deliver latency with one message in flight, over every delivery.
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Publish → the first delivery on the publisher's node, p50 over the messages
    /// (when it has subscribers).
    pub(crate) first_local_p50_us: Option<f64>,
    /// Publish → the first delivery on each other node, p50 over messages and nodes.
    pub(crate) first_remote_p50_us: Option<f64>,
    /// Deliveries during the throughput phase.
    pub(crate) deliveries: u64,
    /// Each wshost node during the throughput phase, in the order of `nodes`.
    pub(crate) nodes: Vec<NodeUse>,
    /// The NATS server's CPU time during the throughput phase, in seconds.
    pub(crate) nats_cpu_s: Option<f64>,
    /// This client's CPU time during the throughput phase, in seconds.
    pub(crate) client_cpu_s: f64,
}

/// What one wshost node did and used during the throughput phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeUse {
    /// Whether the publisher is connected to it.
    pub(crate) publisher: bool,
    /// Deliveries to its subscribers.
    pub(crate) deliveries: u64,
    /// Its CPU time, in seconds.
    pub(crate) cpu_s: f64,
}

/// One recorded delivery: the subscriber's node (index), the message's sequence number,
/// the latency in ns.
type Sample = (usize, u64, u64);

/// Where the subscribers' tasks report.
struct Tally {
    /// The clock that payloads' send times count from.
    epoch: Instant,
    /// Data messages delivered, all subscribers together, and per node.
    delivered: AtomicU64,
    per_node: Vec<AtomicU64>,
    /// Text messages (the chat's welcome and join notices) delivered.
    texts: AtomicU64,
    /// The marker being waited for, and how many subscribers got it.
    marker: AtomicU64,
    marked: AtomicU64,
    /// Wake the driver once `delivered` or `marked` reaches these.
    delivered_target: AtomicU64,
    marked_target: AtomicU64,
    wake: Notify,
    /// Whether data messages' latencies are recorded now, and the deliveries recorded.
    recording: AtomicBool,
    samples: Mutex<Vec<Sample>>,
}

impl Tally {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// A binary message reached a subscriber on node `node`.
    fn received(&self, node: usize, payload: &[u8]) {
        if payload.len() < 24 {
            return;
        }
        let word = |at: usize| u64::from_le_bytes(payload[at..at + 8].try_into().expect("8"));
        match payload[0] {
            DATA => {
                if self.recording.load(Ordering::Relaxed) {
                    let latency = self.now_ns().saturating_sub(word(16));
                    self.samples
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((node, word(8), latency));
                }
                self.per_node[node].fetch_add(1, Ordering::Relaxed);
                let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= self.delivered_target.load(Ordering::Relaxed) {
                    self.wake.notify_one();
                }
            }
            MARKER if word(8) == self.marker.load(Ordering::Relaxed) => {
                let n = self.marked.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= self.marked_target.load(Ordering::Relaxed) {
                    self.wake.notify_one();
                }
            }
            _ => {}
        }
    }

    fn payload(&self, kind: u8, number: u64) -> Bytes {
        let mut payload = vec![0u8; PAYLOAD_BYTES];
        payload[0] = kind;
        payload[8..16].copy_from_slice(&number.to_le_bytes());
        payload[16..24].copy_from_slice(&self.now_ns().to_le_bytes());
        Bytes::from(payload)
    }

    /// Waits until `counter` reaches `target` (`target_slot` tells the subscribers when
    /// to wake us); false if it has not within `limit`.
    async fn wait(
        &self,
        counter: &AtomicU64,
        target_slot: &AtomicU64,
        target: u64,
        limit: Duration,
    ) -> bool {
        target_slot.store(target, Ordering::Relaxed);
        let deadline = Instant::now() + limit;
        while counter.load(Ordering::Relaxed) < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Re-checked every 50 ms: a wake-up may land between the load and here.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), self.wake.notified())
                .await;
        }
        true
    }
}

/// Connects the subscribers (`nodes`: each node's address and how many) and one
/// publisher (to `publisher`), settles, then measures: rounds of [`BURST`] messages for
/// `duration`, each round waiting until every subscriber has every message
/// (deliveries/s, and the CPU time of the nodes, whose processes are `pids`, of the NATS
/// server `nats` and of this client), then `paced` messages one at a time, each waiting
/// for all its deliveries (latency).
pub(crate) async fn fan_out(
    publisher: SocketAddr,
    nodes: &[(SocketAddr, usize)],
    duration: Duration,
    paced: usize,
    pids: &[u32],
    nats: Option<u32>,
) -> Result<FanOut> {
    let local: Vec<bool> = nodes.iter().map(|(addr, _)| *addr == publisher).collect();
    let tally = Arc::new(Tally {
        epoch: Instant::now(),
        delivered: AtomicU64::new(0),
        per_node: nodes.iter().map(|_| AtomicU64::new(0)).collect(),
        texts: AtomicU64::new(0),
        marker: AtomicU64::new(0),
        marked: AtomicU64::new(0),
        delivered_target: AtomicU64::new(u64::MAX),
        marked_target: AtomicU64::new(u64::MAX),
        wake: Notify::new(),
        recording: AtomicBool::new(false),
        samples: Mutex::new(Vec::new()),
    });
    let mut tasks = Vec::new();
    // 100 handshakes at a time: each join makes every member so far hear about it, and a
    // handshake waits behind that work; one at a time, 3,000 took ~35 s.
    for (node_index, &(node, per_node)) in nodes.iter().enumerate() {
        for batch in 0..per_node.div_ceil(100) {
            let n = (per_node - batch * 100).min(100);
            let connects = (0..n).map(|_| connect(node, "/chat/bench", Some("chat")));
            for ws in futures_util::future::join_all(connects).await {
                let mut ws = ws?;
                let tally = tally.clone();
                tasks.push(tokio::spawn(async move {
                    while let Some(Ok(message)) = ws.next().await {
                        match message {
                            Message::Binary(data) => tally.received(node_index, &data),
                            Message::Text(_) => {
                                tally.texts.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                }));
            }
        }
    }
    let receivers = nodes.iter().map(|(_, n)| *n as u64).sum::<u64>();
    let publisher = connect(publisher, "/chat/bench", Some("chat")).await?;
    let (mut sink, mut inbox) = publisher.split();
    // The publisher is a member too: it hears the others join, and must read that.
    tasks.push(tokio::spawn(async move {
        while let Some(Ok(_)) = inbox.next().await {}
    }));

    // Settle: every member's join notice reaches every other member, on every node
    // (3,000 members: ~4.5M text deliveries), so wait until they stop...
    let deadline = Instant::now() + STALL;
    loop {
        let before = tally.texts.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tally.texts.load(Ordering::Relaxed) == before {
            break;
        }
        if Instant::now() > deadline {
            bail!("the join notices were still arriving after {STALL:?}");
        }
    }
    // ...then until one marker from the publisher reaches every subscriber.
    let deadline = Instant::now() + STALL;
    for marker in 1.. {
        tally.marked.store(0, Ordering::Relaxed);
        tally.marker.store(marker, Ordering::Relaxed);
        sink.send(Message::Binary(tally.payload(MARKER, marker)))
            .await?;
        let got = tally
            .wait(
                &tally.marked,
                &tally.marked_target,
                receivers,
                Duration::from_millis(500),
            )
            .await;
        if got {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "a marker reached only {} of {receivers} subscribers after {STALL:?} of trying",
                tally.marked.load(Ordering::Relaxed)
            );
        }
    }

    // Throughput.
    let mut sequence = 0u64;
    let mut expected = tally.delivered.load(Ordering::Relaxed);
    let first = expected;
    // The nodes, then NATS if there, then this client.
    let mut processes = pids.to_vec();
    processes.extend(nats);
    processes.push(std::process::id());
    let cpu = || -> Result<Vec<f64>> { processes.iter().map(|&pid| cpu_seconds(pid)).collect() };
    let counts = || -> Vec<u64> {
        let per_node = tally.per_node.iter();
        per_node.map(|n| n.load(Ordering::Relaxed)).collect()
    };
    let before = cpu()?;
    let counted = counts();
    let started = Instant::now();
    while started.elapsed() < duration {
        for _ in 0..BURST {
            sequence += 1;
            sink.send(Message::Binary(tally.payload(DATA, sequence)))
                .await?;
        }
        expected += BURST as u64 * receivers;
        let (delivered, target) = (&tally.delivered, &tally.delivered_target);
        if !tally.wait(delivered, target, expected, STALL).await {
            bail!(
                "fan-out stalled at {} of {expected} deliveries",
                delivered.load(Ordering::Relaxed)
            );
        }
    }
    let elapsed = started.elapsed();
    let mut used: Vec<f64> = cpu()?
        .iter()
        .zip(before)
        .map(|(after, before)| after - before)
        .collect();
    let client_cpu_s = used.pop().unwrap_or_default();
    let nats_cpu_s = nats.and_then(|_| used.pop());
    let node_uses = (0..nodes.len())
        .map(|i| NodeUse {
            publisher: local[i],
            deliveries: counts()[i] - counted[i],
            cpu_s: used.get(i).copied().unwrap_or_default(),
        })
        .collect();
    let deliveries = expected - first;

    // Latency, one message in flight.
    tally.recording.store(true, Ordering::Relaxed);
    for _ in 0..paced {
        sequence += 1;
        sink.send(Message::Binary(tally.payload(DATA, sequence)))
            .await?;
        expected += receivers;
        let (delivered, target) = (&tally.delivered, &tally.delivered_target);
        if !tally.wait(delivered, target, expected, STALL).await {
            bail!(
                "a paced message reached {} of {expected} deliveries",
                delivered.load(Ordering::Relaxed)
            );
        }
    }
    tally.recording.store(false, Ordering::Relaxed);
    let _ = sink.close().await;
    for task in tasks {
        task.abort();
    }

    let samples = std::mem::take(&mut *tally.samples.lock().unwrap_or_else(|p| p.into_inner()));
    let all: Vec<u64> = samples.iter().map(|s| s.2).collect();
    // The first delivery of each message on each node.
    let mut firsts = std::collections::BTreeMap::new();
    for &(node, sequence, latency) in &samples {
        firsts
            .entry((node, sequence))
            .and_modify(|l: &mut u64| *l = (*l).min(latency))
            .or_insert(latency);
    }
    let (on_local, on_remote): (Vec<_>, Vec<_>) =
        firsts.iter().partition(|((node, _), _)| local[*node]);
    let on_local: Vec<u64> = on_local.into_iter().map(|(_, l)| *l).collect();
    let on_remote: Vec<u64> = on_remote.into_iter().map(|(_, l)| *l).collect();
    let p50 = |ns: Vec<u64>| (!ns.is_empty()).then(|| percentile(ns, 0.50));
    Ok(FanOut {
        deliveries_per_s: deliveries as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(all.clone(), 0.50),
        p99_us: percentile(all, 0.99),
        first_local_p50_us: p50(on_local),
        first_remote_p50_us: p50(on_remote),
        deliveries,
        nodes: node_uses,
        nats_cpu_s,
        client_cpu_s,
    })
}

/// The `p` quantile of `ns` (nanoseconds), in µs.
fn percentile(mut ns: Vec<u64>, p: f64) -> f64 {
    ns.sort_unstable();
    let i = ((ns.len() as f64 - 1.0) * p).round() as usize;
    ns.get(i).copied().unwrap_or(0) as f64 / 1000.0
}
