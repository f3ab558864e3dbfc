//! The load client: the same tokio-tungstenite code measures every server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::servers::thread_cpu_seconds;

type Ws = WebSocketStream<TcpStream>;

/// The client's read buffer for small messages. tungstenite zeroes its whole read
/// buffer before every `read`, so with the default (128 KiB) each small message costs
/// the client a 128 KiB memset: the client, not the server, would set the pace.
const SMALL_READ_BUFFER: usize = 8 * 1024;

/// Opens a WebSocket connection for small messages, offering `protocol` if given.
pub(crate) async fn connect(addr: SocketAddr, path: &str, protocol: Option<&str>) -> Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(SMALL_READ_BUFFER);
    connect_with(addr, path, protocol, config).await
}

/// Opens a WebSocket connection with `config`, offering `protocol` if given.
async fn connect_with(
    addr: SocketAddr,
    path: &str,
    protocol: Option<&str>,
    config: WebSocketConfig,
) -> Result<Ws> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    if let Some(p) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p)?);
    }
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (ws, _) = client_async_with_config(request, tcp, Some(config)).await?;
    Ok(ws)
}

/// Waits for the next data message (skipping control frames).
async fn next_data(ws: &mut Ws) -> Result<Message> {
    loop {
        match ws.next().await.context("connection ended")?? {
            m @ (Message::Text(_) | Message::Binary(_)) => return Ok(m),
            Message::Close(frame) => bail!("closed by the server: {frame:?}"),
            _ => {}
        }
    }
}

/// Messages per second and latency percentiles of a ping-pong run, and the server's CPU
/// time per echoed message when it was measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PingPong {
    pub(crate) msgs_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Server CPU (user + system) per echoed message in µs, over the timed window.
    pub cpu_us_per_msg: Option<f64>,
}

/// `conns` connections each sending a `size`-byte text message and waiting for its
/// echo, over and over, for `duration` (after a short warm-up). With `server`, the CPU
/// time of that process is read at the start and the end of the timed window.
pub(crate) async fn ping_pong(
    addr: SocketAddr,
    path: &str,
    conns: usize,
    size: usize,
    duration: Duration,
    server: Option<u32>,
) -> Result<PingPong> {
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        clients.push(connect(addr, path, None).await?);
    }
    let payload: String = "x".repeat(size);
    let warmup = Duration::from_millis(300);
    let start = Instant::now() + warmup;
    let end = start + duration;
    // The server's CPU seconds over [start, end).
    let cpu = server.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let before = thread_cpu_seconds(pid)?;
            tokio::time::sleep_until(end.into()).await;
            anyhow::Ok(thread_cpu_seconds(pid)? - before)
        })
    });
    let mut tasks = Vec::new();
    for mut ws in clients {
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                ws.send(Message::text(payload.as_str())).await?;
                next_data(&mut ws).await?;
                if sent >= start {
                    latencies.push(sent.elapsed().as_nanos() as u64);
                }
            }
            let _ = ws.close(None).await;
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let cpu_s = match cpu {
        Some(task) => Some(task.await??),
        None => None,
    };
    all.sort_unstable();
    let pct = |p: f64| {
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    Ok(PingPong {
        msgs_per_s: all.len() as f64 / duration.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        cpu_us_per_msg: cpu_s.map(|s| s / all.len().max(1) as f64 * 1e6),
    })
}

/// `conns` connections each doing exactly `rounds` round trips of a 32-byte text
/// message, then closing: a fixed amount of work, for counting instructions.
pub(crate) async fn ping_pong_rounds(
    addr: SocketAddr,
    path: &str,
    conns: usize,
    rounds: usize,
) -> Result<()> {
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        clients.push(connect(addr, path, None).await?);
    }
    let mut tasks = Vec::new();
    for mut ws in clients {
        tasks.push(tokio::spawn(async move {
            let payload = "x".repeat(32);
            for _ in 0..rounds {
                ws.send(Message::text(payload.as_str())).await?;
                next_data(&mut ws).await?;
            }
            ws.close(None).await?;
            while let Some(Ok(_)) = ws.next().await {}
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// MB/s of `size`-byte binary messages echoed back on one connection, with up to
/// `window` messages in flight.
pub(crate) async fn stream(
    addr: SocketAddr,
    path: &str,
    size: usize,
    window: usize,
    duration: Duration,
) -> Result<f64> {
    // Large messages: tungstenite's default read buffer (128 KiB per read).
    let ws = connect_with(addr, path, None, WebSocketConfig::default()).await?;
    let (mut sink, mut stream) = ws.split();
    let credit = Arc::new(Semaphore::new(window));
    let payload = tokio_tungstenite::tungstenite::Bytes::from(vec![0x5a; size]);
    let started = Instant::now();
    let end = started + duration;
    let sender_credit = credit.clone();
    let sender = tokio::spawn(async move {
        while Instant::now() < end {
            sender_credit.acquire().await?.forget();
            sink.send(Message::Binary(payload.clone())).await?;
        }
        anyhow::Ok(sink)
    });
    let mut bytes = 0u64;
    while Instant::now() < end {
        match tokio::time::timeout_at(end.into(), stream.next()).await {
            Err(_) => break,
            Ok(None) => bail!("connection ended"),
            Ok(Some(message)) => {
                if let Message::Binary(data) = message? {
                    bytes += data.len() as u64;
                    credit.add_permits(1);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    // The sender may be blocked on a full socket now that nobody reads: just stop it.
    sender.abort();
    Ok(bytes as f64 / elapsed.as_secs_f64() / 1e6)
}

/// Deliveries per second when one client's binary messages are fanned out by the chat
/// controller to `receivers` other connections: `rounds` rounds of `burst` messages,
/// each round waiting until every receiver has every message. The receivers only
/// count; the one that completes a round wakes the sender (a wake per delivery would
/// make the client, on its one core, the bottleneck sooner).
pub(crate) async fn broadcast(
    addr: SocketAddr,
    receivers: usize,
    burst: usize,
    rounds: usize,
) -> Result<f64> {
    let delivered = Arc::new(AtomicU64::new(0));
    // The count that ends the current round.
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let notify = Arc::new(tokio::sync::Notify::new());
    let mut readers = Vec::new();
    for _ in 0..receivers {
        let mut ws = connect(addr, "/chat/bench", Some("chat")).await?;
        let (delivered, target, notify) = (delivered.clone(), target.clone(), notify.clone());
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                if message.is_binary() {
                    let count = delivered.fetch_add(1, Ordering::AcqRel) + 1;
                    if count == target.load(Ordering::Acquire) {
                        notify.notify_one();
                    }
                }
            }
        }));
    }
    let mut sender = connect(addr, "/chat/bench", Some("chat")).await?;
    // Let the join notices settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let payload = tokio_tungstenite::tungstenite::Bytes::from(vec![1u8; 32]);
    let started = Instant::now();
    let mut expected = 0u64;
    for _ in 0..rounds {
        expected += (burst * receivers) as u64;
        target.store(expected, Ordering::Release);
        for _ in 0..burst {
            sender.send(Message::Binary(payload.clone())).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        // `notify_one` leaves a permit when nobody waits yet, so no wake is lost; the
        // timeout only guards against a stall.
        while delivered.load(Ordering::Acquire) < expected {
            let _ = tokio::time::timeout(Duration::from_millis(50), notify.notified()).await;
            if Instant::now() > deadline {
                bail!(
                    "broadcast stalled at {} of {expected}",
                    delivered.load(Ordering::Relaxed)
                );
            }
        }
    }
    let elapsed = started.elapsed();
    for reader in readers {
        reader.abort();
    }
    Ok(expected as f64 / elapsed.as_secs_f64())
}

/// Server memory per idle connection: RSS growth over `n` open connections, in KiB.
pub(crate) async fn idle_memory(
    addr: SocketAddr,
    path: &str,
    n: usize,
    rss_kib: impl Fn() -> Result<u64>,
) -> Result<f64> {
    let before = rss_kib()?;
    let mut open = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(100) {
        let batch = (n - chunk * 100).min(100);
        let connects = (0..batch).map(|_| connect(addr, path, None));
        for ws in futures_util::future::join_all(connects).await {
            open.push(ws?);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib()?;
    drop(open);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// Completed opening + closing handshakes per second, `concurrency` at a time.
pub(crate) async fn handshakes(
    addr: SocketAddr,
    path: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<f64> {
    let end = Instant::now() + duration;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let done = done.clone();
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let mut ws = connect(addr, &path, None).await?;
                ws.close(None).await?;
                while let Some(Ok(_)) = ws.next().await {}
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64())
}

/// Relayed chat lines: one member sends a text message and waits until another member
/// receives its relay (`{name}: text`), one at a time, for `duration`. Returns
/// (relays per second, p50 latency in µs).
pub(crate) async fn relay(addr: SocketAddr, duration: Duration) -> Result<(f64, f64)> {
    let mut sender = connect(addr, "/chat/bench", Some("chat")).await?;
    next_data(&mut sender).await?; // welcome
    let mut receiver = connect(addr, "/chat/bench", Some("chat")).await?;
    next_data(&mut receiver).await?; // welcome
    next_data(&mut sender).await?; // `... joined`
    let payload = "x".repeat(32);
    let mut latencies = Vec::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let sent = Instant::now();
        sender.send(Message::text(payload.as_str())).await?;
        match next_data(&mut receiver).await? {
            Message::Text(text) if text.ends_with(payload.as_str()) => {}
            other => bail!("unexpected relay {other:?}"),
        }
        latencies.push(sent.elapsed().as_nanos() as u64);
    }
    let _ = sender.close(None).await;
    let _ = receiver.close(None).await;
    latencies.sort_unstable();
    let p50 = latencies[latencies.len() / 2] as f64 / 1000.0;
    Ok((latencies.len() as f64 / duration.as_secs_f64(), p50))
}
