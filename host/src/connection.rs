//! One upgraded client: turns socket traffic into controller events and drains the
//! connection's outbound queue to the socket, under the route's limits.
//!
//! The task never blocks on one direction. It owns its `WebSocketStream` whole (not
//! split into halves behind a lock) and polls it for both directions from one `poll_fn`
//! ([`Step`]): in a fixed order, the message waiting for admission, else the socket
//! (behind the [`ReadGate`]), then the writer, then keepalive or the close deadline.
//! Whatever is ready first is handled in the loop's body, which alone awaits (calling
//! the controller, sending events, failing a silent peer). Writing is a poll-driven
//! state machine ([`Writer`]) rather than an awaited `send`, so a client that stops
//! reading cannot stall the rest. The order costs less than a random one, and starves
//! nothing: the writer is ready only when the task must act, reading stops while a
//! message waits for admission, and the timers rarely fire.
//!
//! - Inbound: when the controller is free, the task calls its `on-message` itself
//!   ([`ControllerHandle::call_inline`]) and writes the reply right after: no other task
//!   is woken. Otherwise each message needs a slot in the controller's queue and its
//!   bytes from the controller's inbound budget; while either is exhausted the task stops
//!   reading the socket, so TCP backpressure reaches the client instead of memory
//!   growing. (An inline call needs neither: the guest takes the message at once, and
//!   the task reads nothing more until the call returned.)
//! - Outbound: the writer takes everything queued under one lock, writes it back to
//!   back and flushes once (several messages share one flush). A full queue applies the
//!   route's slow-client policy (see [`crate::controller::outbound_queue`]).
//! - Keepalive: after `ping-interval` without hearing from the peer the task pings it;
//!   after `idle-timeout` it gives up: a best-effort close frame (1001 "idle timeout"),
//!   the socket is dropped, and the controller sees `on-close` 1006 "idle timeout".
//! - Limits: a message or frame above the route's limits closes with 1009, invalid UTF-8
//!   with 1007, any other protocol violation with 1002 (tungstenite detects them). The
//!   close frame goes through the controller's queue, behind the replies to the
//!   messages that came before the violation; once it is written the socket is dropped.
//!
//! Exactly one `Closed` event ends every connection that sent `Open`, carrying the code
//! of the closing handshake: the peer's, the controller's, 1005 for a close frame
//! without a code, 1006 for a connection that dropped (or timed out) without one.
//!
//! With metrics on, the task counts its own traffic ([`crate::metrics::Traffic`]: plain
//! stores, no lock) and its meter leaves the counts with its route when the task ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::OwnedPermit;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

use crate::controller::{
    Backlog, ConnectionInfo, ControllerHandle, Event, Outbound, OutboundHandle, OutboundQueue,
};
use crate::limits::Limits;
use crate::metrics::{ConnMeter, Traffic};
use crate::request::CloseReason;
use crate::socket::{ReadGate, Socket};

/// How long to wait for the peer's answer after sending a close frame.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a close frame may take to write when the connection is failed anyway
/// (protocol error, idle timeout): the peer may not be reading at all.
const FAIL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Close code and reason used when the outbound queue overflows.
const OVERFLOW_CLOSE: (u16, &str) = (1008, "outbound queue full");

/// Close frame sent to a peer that stopped answering, and the reason `on-close` gets.
const IDLE_CLOSE: (u16, &str) = (1001, "idle timeout");

/// Serves one upgraded connection until it is closed, then reports `Closed`. The
/// outbound queue is made by the caller, which keeps a handle to close the connection.
/// The task runs outside the connection's `span` (see `Server::handle_client`); what
/// it logs names the span as its parent. `meter`, with metrics on, is where it counts.
///
/// Not an `async fn`: an `async fn` keeps its arguments in its state beside the locals
/// they are moved into, and the stream alone is 384 bytes of every connection's task.
#[allow(clippy::manual_async_fn)]
pub fn run(
    (mut ws, gate): (WebSocketStream<Socket>, ReadGate),
    info: Arc<ConnectionInfo>,
    controller: ControllerHandle,
    (handle, mut queue): (OutboundHandle, OutboundQueue),
    limits: Arc<Limits>,
    meter: Option<ConnMeter>,
    span: tracing::Span,
) -> impl Future<Output = ()> + Send {
    async move {
        // This task polls its writer before it waits, so the replies a controller called
        // on it (inline) queues need not wake it.
        queue.claim();
        let traffic = meter.as_ref().map(ConnMeter::traffic);
        let id = info.id;
        let events = controller.events().clone();
        let open = Event::Open {
            info,
            outbound: handle,
            span: span.clone(),
            deadline: limits.call_deadline,
        };
        if events.send(open).await.is_err() {
            tracing::warn!(parent: &span, "controller is gone; dropping connection");
            return;
        }
        tracing::info!(parent: &span, "open");

        let mut writer = Writer::default();
        // The code and reason to report: set by whichever side closes first.
        let mut closed_with: Option<CloseReason> = None;
        // Set once a close frame was sent or received: the closing handshake must finish by
        // then. Boxed, so that the timer is no part of the task's size before it runs.
        let mut close_deadline: Option<Pin<Box<Sleep>>> = None;
        // A message read from the socket, waiting for room in the controller's queue.
        let mut admission: Option<Admission> = None;
        // This connection's messages on the queue path, not handled yet.
        let backlog = Backlog::default();
        let mut keepalive = Keepalive::new(&limits);
        // The peer broke the protocol: nothing more is read, and the socket is dropped as
        // soon as the close frame is out.
        let mut failing = false;

        loop {
            let step = std::future::poll_fn(|cx| {
                if let Some(waiting) = admission.as_mut() {
                    if let Poll::Ready(admitted) = waiting.as_mut().poll(cx) {
                        return Poll::Ready(Step::Admitted(admitted));
                    }
                } else if !failing
                    && gate.poll_ready(cx).is_ready()
                    && let Poll::Ready(incoming) = ws.poll_next_unpin(cx)
                {
                    return Poll::Ready(Step::Read(incoming));
                }
                if let Poll::Ready(wrote) = writer.poll(&mut ws, &mut queue, traffic, cx) {
                    return Poll::Ready(Step::Wrote(wrote));
                }
                match close_deadline.as_mut() {
                    None => keepalive.poll_due(cx).map(Step::Due),
                    Some(deadline) => deadline.as_mut().poll(cx).map(|()| Step::CloseTimedOut),
                }
            })
            .await;
            match step {
                Step::Admitted(admitted) => {
                    admission = None;
                    match admitted {
                        Some(send) => send(),
                        None => break, // the controller is gone
                    }
                }
                Step::Read(incoming) => {
                    keepalive.heard();
                    match incoming {
                        None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                            break;
                        }
                        Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                            if let Some(traffic) = traffic {
                                traffic.received(payload_len(&message));
                            }
                            // Inline when the controller is free, else queued. The call is
                            // awaited here, in the branch's body, so nothing can drop it
                            // half-way (see `ControllerHandle::call_inline`).
                            if let Err(message) =
                                controller.call_inline(id, message, &backlog).await
                                && let Err(wait) = admit(&controller, id, message, &backlog)
                            {
                                if let Some(traffic) = traffic {
                                    traffic.backpressure();
                                }
                                admission = Some(wait);
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            // tungstenite queued the reply; the writer flushes it. From now
                            // on nothing else is written, and the peer gets CLOSE_TIMEOUT to
                            // finish.
                            writer.stop_and_flush();
                            close_within(&mut close_deadline);
                            if closed_with.is_none() {
                                closed_with = Some(match frame {
                                    Some(f) => {
                                        CloseReason::new(u16::from(f.code), f.reason.as_str())
                                    }
                                    None => CloseReason::new(1005, ""),
                                });
                            }
                        }
                        Some(Ok(_)) => {} // pings are answered by tungstenite; pongs only count as heard
                        Some(Err(error)) => {
                            let (code, reason) = error_close_code(&error);
                            // A drop (1006) is an ordinary way for a client to leave and is
                            // reported by `on-close` alone; everything else is the peer's
                            // fault and reaches `on-error` first.
                            if code == 1006 {
                                tracing::debug!(parent: &span, %error, "connection dropped");
                                closed_with.get_or_insert(CloseReason::new(code, reason));
                                break;
                            }
                            tracing::info!(parent: &span, %error, code, "connection error");
                            closed_with.get_or_insert(CloseReason::new(code, reason));
                            failing = true;
                            close_within(&mut close_deadline);
                            let error = Event::Error {
                                id,
                                error: error.to_string(),
                                close: CloseReason::new(code, reason),
                            };
                            // Boxed, as the idle timeout's `fail` below: a rare path's
                            // state would otherwise be part of every connection's task.
                            if Box::pin(events.send(error)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                Step::Wrote(wrote) => match wrote {
                    Wrote::Close(close) => {
                        writer.close(close.code, &close.reason);
                        closed_with.get_or_insert(close);
                        close_within(&mut close_deadline);
                    }
                    Wrote::Overflow => {
                        if let Some(traffic) = traffic {
                            traffic.overflow();
                        }
                        let (code, reason) = OVERFLOW_CLOSE;
                        tracing::warn!(parent: &span, "outbound queue full; closing the slow client");
                        writer.close(code, reason);
                        closed_with.get_or_insert(CloseReason::new(code, reason));
                        close_within(&mut close_deadline);
                    }
                    Wrote::Flushed => {
                        if failing {
                            // Boxed: a rare path's state would otherwise be part of
                            // every connection's task.
                            Box::pin(linger(ws.get_mut())).await;
                            break;
                        }
                    }
                    Wrote::Failed(error) => {
                        tracing::debug!(parent: &span, %error, "write failed");
                        break;
                    }
                },
                Step::Due(Due::TimedOut) => {
                    tracing::info!(parent: &span, "peer stopped answering; closing it");
                    Box::pin(fail(&mut ws, IDLE_CLOSE.0, IDLE_CLOSE.1)).await;
                    closed_with.get_or_insert(CloseReason::new(1006, IDLE_CLOSE.1));
                    break;
                }
                Step::Due(Due::Ping) => writer.control(Message::Ping(Bytes::new())),
                Step::CloseTimedOut => {
                    tracing::debug!(parent: &span, "peer did not finish the closing handshake in time");
                    break;
                }
            }
        }

        // A message that was waiting for queue room still precedes the close.
        if let Some(send) = wait(&mut admission).await {
            send();
        }
        let dropped = queue.dropped();
        if dropped > 0 {
            tracing::info!(parent: &span, dropped, "slow client: oldest messages were dropped");
        }
        let CloseReason { code, reason } = closed_with.unwrap_or(CloseReason::new(1006, ""));
        tracing::info!(parent: &span, code, reason, "closed");
        let _ = events.send(Event::Closed { id, code, reason }).await;
    }
}

/// What the connection task's poll found ready, in the order it polls (see the module
/// docs).
enum Step {
    /// The message waiting for admission got it: the function that queues it, or
    /// `None` if the controller is gone.
    Admitted(Option<Box<dyn FnOnce() + Send>>),
    /// The socket's next item (read only once the [`ReadGate`] says reading can make
    /// progress: the task is woken for many other reasons, and an empty read is not
    /// free, see [`crate::socket`]).
    Read(Option<Result<Message, WsError>>),
    /// The writer needs a decision.
    Wrote(Wrote),
    /// Keepalive: ping the peer, or give up on it.
    Due(Due),
    /// The closing handshake did not finish within [`CLOSE_TIMEOUT`].
    CloseTimedOut,
}

/// Starts the closing handshake's deadline, unless it runs already.
fn close_within(deadline: &mut Option<Pin<Box<Sleep>>>) {
    if deadline.is_none() {
        *deadline = Some(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
    }
}

/// A message waiting for its slot and budget; resolves to the function that queues it,
/// or `None` if the controller is gone.
type Admission = Pin<Box<dyn Future<Output = Option<Box<dyn FnOnce() + Send>>> + Send>>;

/// Payload bytes of a data message (0 for control frames).
fn payload_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
        _ => 0,
    }
}

/// Queues `message` for the controller at once if its queue and budget have room, else
/// returns the wait for them. Either way it counts in the connection's `backlog` until
/// the controller handled it.
fn admit(
    controller: &ControllerHandle,
    id: u64,
    message: Message,
    backlog: &Backlog,
) -> Result<(), Admission> {
    let backlog = backlog.enter();
    let size = payload_len(&message);
    if let Some(budget) = controller.budget().try_take(size)
        && let Ok(slot) = controller.events().try_reserve()
    {
        slot.send(Event::Message {
            id,
            message,
            budget,
            backlog,
        });
        return Ok(());
    }
    let budget = controller.budget().clone();
    let events = controller.events().clone();
    Err(Box::pin(async move {
        let budget = budget.take(size).await;
        let slot: OwnedPermit<Event> = events.reserve_owned().await.ok()?;
        Some(Box::new(move || {
            slot.send(Event::Message {
                id,
                message,
                budget,
                backlog,
            });
        }) as Box<dyn FnOnce() + Send>)
    }))
}

/// Waits for the admission in `slot`, if any (`None` when there is none or the
/// controller is gone).
async fn wait(slot: &mut Option<Admission>) -> Option<Box<dyn FnOnce() + Send>> {
    match slot.as_mut() {
        Some(admission) => admission.await,
        None => None,
    }
}

/// What the writer needs the connection task to decide.
enum Wrote {
    /// The controller (or the server) asked to close.
    Close(CloseReason),
    /// The outbound queue overflowed under the `close` policy.
    Overflow,
    /// Closing, and everything (the close frame included) is written and flushed.
    Flushed,
    /// The socket failed.
    Failed(WsError),
}

/// The writing side's state: the frame waiting for the socket to have room, and
/// whether written frames still need a flush.
#[derive(Default)]
struct Writer {
    /// A control frame (ping, close) to write before the next queued message.
    control: Option<Message>,
    /// A frame taken from the queue, waiting for the socket to have room.
    pending: Option<Message>,
    /// Frames were written since the last flush.
    dirty: bool,
    /// Closing: the queue is no longer read; only `control` and flushing remain.
    closing: bool,
    /// [`Wrote::Flushed`] was reported.
    flushed: bool,
}

impl Writer {
    /// Writes the next frames (a control frame first, then what the queue holds, taken
    /// in one lock) as the socket allows, flushing once they are all written, and
    /// counts the data messages written into `traffic`. Ready only when the task must
    /// decide something.
    fn poll<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        queue: &mut OutboundQueue,
        traffic: Option<&Traffic>,
        cx: &mut Context<'_>,
    ) -> Poll<Wrote>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // The queue's one lock per poll: an overflow must be seen even while the socket
        // is blocked (that is exactly when it happens). What is taken and cannot be
        // written goes back below.
        if !self.closing && queue.poll_refill(cx) {
            return Poll::Ready(Wrote::Overflow);
        }
        loop {
            if self.pending.is_none() {
                self.pending = self.control.take();
            }
            if self.pending.is_none() && !self.closing {
                match queue.next_taken() {
                    Some(Outbound::Message(message)) => self.pending = Some(message),
                    Some(Outbound::Close(close)) => return Poll::Ready(Wrote::Close(close)),
                    None => {}
                }
            }
            let Some(message) = self.pending.take() else {
                break;
            };
            match ws.poll_ready_unpin(cx) {
                Poll::Pending => {
                    self.pending = Some(message);
                    // Back where the slow-client policy can drop them.
                    queue.give_back();
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Wrote::Failed(error)),
                Poll::Ready(Ok(())) => {}
            }
            if let Some(traffic) = traffic
                && matches!(message, Message::Text(_) | Message::Binary(_))
            {
                traffic.sent(payload_len(&message));
            }
            if let Err(error) = ws.start_send_unpin(message) {
                return Poll::Ready(Wrote::Failed(error));
            }
            self.dirty = true;
        }
        if self.dirty {
            match ws.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => self.dirty = false,
                Poll::Ready(Err(error)) => return Poll::Ready(Wrote::Failed(error)),
                Poll::Pending => {}
            }
        }
        if self.closing && !self.dirty && !self.flushed {
            self.flushed = true;
            return Poll::Ready(Wrote::Flushed);
        }
        Poll::Pending
    }

    /// Writes `message` before anything else still queued.
    fn control(&mut self, message: Message) {
        self.control = Some(message);
    }

    /// Sends a close frame next, dropping the data frame not yet written.
    fn close(&mut self, code: u16, reason: &str) {
        self.closing = true;
        self.pending = None;
        self.control = Some(close_message(code, reason));
    }

    /// The peer closed: write nothing more of ours, but flush tungstenite's reply.
    fn stop_and_flush(&mut self) {
        self.closing = true;
        self.pending = None;
        self.control = None;
        self.dirty = true;
    }
}

/// Tracks when the peer was last heard from, and when to ping it or give up.
///
/// One timer for the connection's life, not one per wake-up of the task: hearing from
/// the peer only records the time, and a timer that fires early is moved to the real
/// deadline then.
struct Keepalive {
    ping_interval: Option<Duration>,
    idle_timeout: Option<Duration>,
    heard: Instant,
    pinged: bool,
    /// Fires at or before the next deadline; `None` without ping and idle limits.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The timer was polled since it was last set, so it holds the task's waker: until
    /// it elapses, polling it again is skipped (the task wakes for every message).
    registered: bool,
}

/// What the keepalive timer asks for.
enum Due {
    Ping,
    TimedOut,
}

impl Keepalive {
    fn new(limits: &Limits) -> Self {
        let mut keepalive = Self {
            ping_interval: limits.ping_interval,
            idle_timeout: limits.idle_timeout,
            heard: Instant::now(),
            pinged: false,
            timer: None,
            registered: false,
        };
        keepalive.timer = keepalive
            .wake()
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
        keepalive
    }

    /// Any frame from the peer proves it is alive.
    fn heard(&mut self) {
        self.heard = Instant::now();
        if std::mem::take(&mut self.pinged) {
            // The next ping may now be due before the idle deadline the timer is set to.
            self.rearm();
        }
    }

    /// When to act next: ping (once per silence) or time out.
    fn wake(&self) -> Option<Instant> {
        let ping = self
            .ping_interval
            .filter(|_| !self.pinged)
            .map(|i| self.heard + i);
        let idle = self.idle_timeout.map(|t| self.heard + t);
        match (ping, idle) {
            (Some(p), Some(i)) => Some(p.min(i)),
            (p, i) => p.or(i),
        }
    }

    fn rearm(&mut self) {
        let wake = self.wake();
        if let (Some(timer), Some(at)) = (self.timer.as_mut(), wake) {
            timer.as_mut().reset(at);
            self.registered = false;
        }
    }

    /// Ready when the peer is to be pinged (once per silence) or has timed out.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<Due> {
        loop {
            let armed = self.timer.as_ref().is_some_and(|t| !t.is_elapsed());
            if self.registered && armed {
                return Poll::Pending;
            }
            let wake = self.wake();
            let (Some(timer), Some(wake)) = (self.timer.as_mut(), wake) else {
                return Poll::Pending;
            };
            if timer.as_mut().poll(cx).is_pending() {
                self.registered = true;
                return Poll::Pending;
            }
            if wake > Instant::now() {
                timer.as_mut().reset(wake);
                self.registered = false;
                continue;
            }
            if self
                .idle_timeout
                .is_some_and(|t| Instant::now() >= self.heard + t)
            {
                return Poll::Ready(Due::TimedOut);
            }
            self.pinged = true;
            self.rearm();
            return Poll::Ready(Due::Ping);
        }
    }
}

/// The most [`linger`] reads and drops.
const LINGER_BYTES: usize = 1 << 20;

/// After failing a connection whose close frame is out: half-closes the socket and
/// reads (and drops) what the peer still sends until it closes its side too, for at
/// most [`FAIL_WRITE_TIMEOUT`] and [`LINGER_BYTES`]. Dropping a socket with unread bytes
/// (the rest of a message over the size limit, say) makes the kernel answer with a
/// reset, which can destroy the close frame before the peer has read it.
async fn linger(socket: &mut Socket) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drain = async {
        if socket.shutdown().await.is_err() {
            return;
        }
        let mut buf = vec![0; 16 * 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(FAIL_WRITE_TIMEOUT, drain).await;
}

/// Fails the connection: a best-effort close frame, given little time, since the peer
/// may not be reading.
async fn fail<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(FAIL_WRITE_TIMEOUT, ws.send(close_message(code, reason))).await;
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

/// The close code and reason that describe a read error.
fn error_close_code(error: &WsError) -> (u16, &'static str) {
    match error {
        WsError::Utf8(_) => (1007, "invalid UTF-8 in text message"),
        WsError::Capacity(_) => (1009, "message too big"),
        WsError::Protocol(
            tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )
        | WsError::Io(_) => (1006, ""),
        _ => (1002, "protocol error"),
    }
}
