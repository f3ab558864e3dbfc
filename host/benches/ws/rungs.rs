//! Figure (j), the cost ladder: minimal echo servers built into this binary, each one
//! rung more than the last, so that the gap between native tokio-tungstenite and wshost
//! can be split into named costs. `--rung NAME` runs one (NAME from [`Rung::name`];
//! `WASM` after it for the rungs that call the guest) and prints `listening PORT`; it
//! exits cleanly on SIGTERM, so that callgrind writes its counts.
//!
//! - `native`: `next()` → `send()` in one loop ([`crate::servers::native_echo_main`]).
//! - `shape`: wshost's connection task without wasm: split halves and a biased
//!   `select!` over the read half and an outbound queue (a `Mutex<VecDeque>` and a waker,
//!   as `host/src/controller/outbound.rs`); the echo is pushed into the queue and written
//!   (and flushed once the queue is empty) by the writer branch.
//! - `+wit`: as `shape`, plus the conversions a guest call takes today: the payload
//!   copied into an owned `String`/`Vec<u8>`, and the reply turned back into a `Message`.
//! - `+guest`: as `+wit`, plus the real call into `echo.wasm`, made inline by the
//!   connection task with the controller's store behind a `tokio::sync::Mutex`; the
//!   guest's `send` pushes into the connection's queue.
//! - `+hop`: as `+guest`, but the event goes over a bounded mpsc to one controller task
//!   that owns the store and calls the export (wshost's actor design): a cross-task wake
//!   per message, and another one back to the connection task.
//! - `wshost`: the real binary (measured as a server of its own, not here).
//!
//! The host the guest rungs give the component is minimal and says so: the engine is
//! configured as wshost's ([`engine`]: epoch interruption with a 10 ms ticker and a
//! yield at each tick, the compiled-code cache, default allocator), the store has no
//! memory limiter and no per-call deadline bookkeeping beyond re-arming the epoch
//! deadline, `send` works, `connections`/`connection-count` answer from the table, and
//! every other import (`close`, `broadcast`, `info`, `attribute`, `log`, the topics)
//! does nothing and answers "none" or an error. Echo calls only `send`.

use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Cache, CacheConfig, Config, Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "controller",
        exports: { default: async },
    });
}

use bindings::wshost::controller::host::Host;
use bindings::wshost::controller::topics::{Host as TopicsHost, TopicError, TopicPresence};
use bindings::wshost::controller::types::{ConnectionInfo, Message as WitMessage};
use bindings::wshost::controller::types::{Host as TypesHost, LogLevel, SendError};
use bindings::{Controller, ControllerPre};

/// One rung of the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rung {
    Native,
    Shape,
    Wit,
    Guest,
    Hop,
    Wshost,
}

impl Rung {
    /// Every rung, bottom up.
    pub(crate) const ALL: [Rung; 6] = [
        Self::Native,
        Self::Shape,
        Self::Wit,
        Self::Guest,
        Self::Hop,
        Self::Wshost,
    ];

    /// Its name in the report and on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Shape => "shape",
            Self::Wit => "+wit",
            Self::Guest => "+guest",
            Self::Hop => "+hop",
            Self::Wshost => "wshost",
        }
    }

    /// What it adds to the rung below.
    pub(crate) fn adds(self) -> &'static str {
        match self {
            Self::Native => "tokio-tungstenite `next()` → `send()` in one loop",
            Self::Shape => "split halves, `select!` over read and an outbound queue, writer branch",
            Self::Wit => "payload → owned `String`/`Vec<u8>` and the reply back into a `Message`",
            Self::Guest => "the call into `echo.wasm`, inline, store behind a `tokio::sync::Mutex`",
            Self::Hop => "the event over an mpsc to one controller task that owns the store",
            Self::Wshost => {
                "the real server: limits, budgets, keepalive, read gate, tracing, config"
            }
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// `--rung NAME [WASM]`: serves the rung's echo on 127.0.0.1 (any path), prints
/// `listening PORT`, and returns on SIGTERM.
pub(crate) fn rung_main(name: &str, wasm: Option<&Path>) -> Result<()> {
    let rung = Rung::from_name(name).with_context(|| format!("no rung `{name}`"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let handler = match rung {
            Rung::Native | Rung::Wshost => bail!("rung `{name}` is not served by --rung"),
            Rung::Shape => Handler::Shape,
            Rung::Wit => Handler::Wit,
            Rung::Guest | Rung::Hop => {
                let wasm = wasm.context("the guest rungs need the path of echo.wasm")?;
                let guest = Guest::load(wasm)
                    .await
                    .map_err(|e| anyhow::anyhow!("loading `{}`: {e:?}", wasm.display()))?;
                if rung == Rung::Guest {
                    Handler::Inline(Arc::new(tokio::sync::Mutex::new(guest)))
                } else {
                    Handler::Hop(guest.spawn_actor())
                }
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?.port());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = term.recv() => return Ok(()),
            };
            let _ = tcp.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
                if let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
                {
                    serve(ws, handler).await;
                }
            });
        }
    })
}

/// What a connection task does with a message it read.
#[derive(Clone)]
enum Handler {
    /// Push it into its own outbound queue.
    Shape,
    /// Convert it as for a guest call and back, then push it.
    Wit,
    /// Call the guest inline under the store's lock.
    Inline(Arc<tokio::sync::Mutex<Guest>>),
    /// Send it to the controller task.
    Hop(mpsc::Sender<Event>),
}

/// What a connection tells the controller task.
enum Event {
    Open(u64, Arc<Queue>),
    Message(u64, Message),
    Closed(u64),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One connection: wshost's connection-task shape, reduced to reading, the handler and
/// the writer.
async fn serve(ws: WebSocketStream<TcpStream>, handler: Handler) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let queue = Arc::new(Queue::default());
    let opened = match &handler {
        Handler::Inline(guest) => guest.lock().await.open(id, queue.clone()).await,
        Handler::Hop(events) => events.send(Event::Open(id, queue.clone())).await.is_ok(),
        Handler::Shape | Handler::Wit => true,
    };
    if !opened {
        return;
    }
    let (mut sink, mut stream) = ws.split();
    let mut writer = Writer::default();
    loop {
        tokio::select! {
            biased;
            incoming = stream.next() => match incoming {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    let handled = match &handler {
                        Handler::Shape => {
                            queue.push(message);
                            true
                        }
                        Handler::Wit => {
                            queue.push(to_ws(std::hint::black_box(to_wit(message))));
                            true
                        }
                        Handler::Inline(guest) => guest.lock().await.message(id, message).await,
                        Handler::Hop(events) => events.send(Event::Message(id, message)).await.is_ok(),
                    };
                    if !handled {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break,
            },
            // Ready only when the socket failed.
            _ = poll_fn(|cx| writer.poll(&mut sink, &queue, cx)) => break,
        }
    }
    match &handler {
        Handler::Inline(guest) => {
            guest.lock().await.close(id).await;
        }
        Handler::Hop(events) => {
            let _ = events.send(Event::Closed(id)).await;
        }
        Handler::Shape | Handler::Wit => {}
    }
}

/// A connection's outbound queue, as wshost's: a locked deque and the connection task's
/// waker (without bounds or policies: nothing here overflows).
#[derive(Default)]
struct Queue {
    state: Mutex<(VecDeque<Message>, Option<Waker>)>,
}

impl Queue {
    fn push(&self, message: Message) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0.push_back(message);
        if let Some(waker) = state.1.take() {
            waker.wake();
        }
    }

    fn poll_next(&self, cx: &Context<'_>) -> Poll<Message> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.0.pop_front() {
            Some(message) => Poll::Ready(message),
            None => {
                if !state.1.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    state.1 = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// The write half's state, as wshost's `Writer`: the frame waiting for the sink to have
/// room, and whether written frames still need a flush.
#[derive(Default)]
struct Writer {
    pending: Option<Message>,
    dirty: bool,
}

impl Writer {
    /// Writes queued frames as the sink allows, flushing once the queue is empty. Ready
    /// only when the socket failed.
    fn poll(
        &mut self,
        sink: &mut SplitSink<WebSocketStream<TcpStream>, Message>,
        queue: &Queue,
        cx: &mut Context<'_>,
    ) -> Poll<WsError> {
        loop {
            if let Some(message) = self.pending.take() {
                match sink.poll_ready_unpin(cx) {
                    Poll::Pending => {
                        self.pending = Some(message);
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(error),
                    Poll::Ready(Ok(())) => {}
                }
                if let Err(error) = sink.start_send_unpin(message) {
                    return Poll::Ready(error);
                }
                self.dirty = true;
                continue;
            }
            if let Poll::Ready(message) = queue.poll_next(cx) {
                self.pending = Some(message);
                continue;
            }
            if self.dirty {
                match sink.poll_flush_unpin(cx) {
                    Poll::Ready(Ok(())) => self.dirty = false,
                    Poll::Ready(Err(error)) => return Poll::Ready(error),
                    Poll::Pending => {}
                }
            }
            return Poll::Pending;
        }
    }
}

/// A message as the guest call takes it today: an owned copy of the payload.
fn to_wit(message: Message) -> WitMessage {
    match message {
        Message::Text(text) => WitMessage::Text(text.as_str().to_owned()),
        Message::Binary(data) => WitMessage::Binary(Vec::from(data)),
        _ => WitMessage::Binary(Vec::new()),
    }
}

/// A guest's message as a frame, without copying its bytes again (as wshost's `to_ws`).
fn to_ws(message: WitMessage) -> Message {
    match message {
        WitMessage::Text(text) => Message::Text(text.into()),
        WitMessage::Binary(data) => Message::Binary(Bytes::from(data)),
    }
}

/// The store data: the WASI context and the open connections' queues.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    conns: BTreeMap<u64, Arc<Queue>>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl TypesHost for State {}

impl Host for State {
    fn send(&mut self, conn: u64, msg: WitMessage) -> Result<(), SendError> {
        let queue = self.conns.get(&conn).ok_or(SendError::NotOpen)?;
        queue.push(to_ws(msg));
        Ok(())
    }

    fn close(&mut self, _conn: u64, _code: u16, _reason: String) {}

    fn broadcast(&mut self, _msg: WitMessage, _exclude: Option<u64>) -> u32 {
        0
    }

    fn connections(&mut self) -> Vec<u64> {
        self.conns.keys().copied().collect()
    }

    fn connection_count(&mut self) -> u32 {
        u32::try_from(self.conns.len()).unwrap_or(u32::MAX)
    }

    fn info(&mut self, _conn: u64) -> Option<ConnectionInfo> {
        None
    }

    fn attribute(&mut self, _conn: u64, _name: String) -> Option<String> {
        None
    }

    fn log(&mut self, _level: LogLevel, _msg: String) {}
}

impl TopicsHost for State {
    fn subscribe(&mut self, _conn: u64, _topic: String) -> Result<(), TopicError> {
        Err(TopicError::NotOpen)
    }

    fn unsubscribe(&mut self, _conn: u64, _topic: String) -> bool {
        false
    }

    fn subscriptions(&mut self, _conn: u64) -> Vec<String> {
        Vec::new()
    }

    fn publish(&mut self, _topic: String, _msg: WitMessage, _exclude: Option<u64>) -> u32 {
        0
    }

    fn presence(&mut self, _topic: String) -> TopicPresence {
        TopicPresence {
            connections: 0,
            users: Vec::new(),
        }
    }
}

/// An engine configured as wshost's (`host/src/controller/engine.rs`): epoch
/// interruption, a 10 ms epoch ticker, the compiled-code cache (`WSHOST_CACHE_DIR`, or
/// off), the default instance allocator.
fn engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    let cache = match std::env::var_os("WSHOST_CACHE_DIR") {
        Some(dir) if dir != "off" && !dir.is_empty() => {
            let mut cache_config = CacheConfig::new();
            cache_config.with_directory(std::path::PathBuf::from(dir));
            Some(Cache::new(cache_config)?)
        }
        _ => None,
    };
    config.cache(cache);
    let engine = Engine::new(&config)?;
    let weak = engine.weak();
    std::thread::spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    Ok(engine)
}

/// One echo instance and its store.
struct Guest {
    store: Store<State>,
    controller: Controller,
}

impl Guest {
    /// Compiles, links (WASI p2 + the minimal host) and instantiates `wasm`.
    async fn load(wasm: &Path) -> wasmtime::Result<Self> {
        let engine = engine()?;
        let component = Component::from_file(&engine, wasm)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::wshost::controller::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        bindings::wshost::controller::topics::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        let pre = ControllerPre::new(linker.instantiate_pre(&component)?)?;
        let state = State {
            wasi: WasiCtxBuilder::new()
                .allow_ip_name_lookup(false)
                .allow_tcp(false)
                .allow_udp(false)
                .build(),
            table: ResourceTable::new(),
            conns: BTreeMap::new(),
        };
        let mut store = Store::new(&engine, state);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        let controller = pre.instantiate_async(&mut store).await?;
        Ok(Self { store, controller })
    }

    /// Lists the connection and calls `on-open`; false if the guest trapped.
    async fn open(&mut self, id: u64, queue: Arc<Queue>) -> bool {
        self.store.data_mut().conns.insert(id, queue);
        self.store.set_epoch_deadline(1);
        let called = self.controller.call_on_open(&mut self.store, id).await;
        survived(called)
    }

    /// Calls `on-message` (with the epoch deadline re-armed, as wshost's `start_call`);
    /// false if the guest trapped.
    async fn message(&mut self, id: u64, message: Message) -> bool {
        let message = to_wit(message);
        self.store.set_epoch_deadline(1);
        let called = self
            .controller
            .call_on_message(&mut self.store, id, &message)
            .await;
        survived(called)
    }

    /// Unlists the connection and calls `on-close`.
    async fn close(&mut self, id: u64) -> bool {
        self.store.data_mut().conns.remove(&id);
        self.store.set_epoch_deadline(1);
        let called = self
            .controller
            .call_on_close(&mut self.store, id, 1000, "")
            .await;
        survived(called)
    }

    /// Moves the instance into a controller task that owns it and takes events one at a
    /// time, as wshost's actor.
    fn spawn_actor(mut self) -> mpsc::Sender<Event> {
        let (events, mut rx) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let ok = match event {
                    Event::Open(id, queue) => self.open(id, queue).await,
                    Event::Message(id, message) => self.message(id, message).await,
                    Event::Closed(id) => self.close(id).await,
                };
                if !ok {
                    return;
                }
            }
        });
        events
    }
}

/// The controller's event queue, as wshost's default.
const EVENT_QUEUE: usize = 1024;

/// Whether an export call returned (a trap is reported on stderr).
fn survived(called: wasmtime::Result<()>) -> bool {
    match called {
        Ok(()) => true,
        Err(error) => {
            eprintln!("echo trapped: {error:#}");
            false
        }
    }
}
