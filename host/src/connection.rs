//! One upgraded client: turns socket traffic into controller events and drains the
//! connection's outbound queue to the socket.
//!
//! The task never calls wasm. Reading and writing are independent branches of one
//! `select!`: while the controller's event queue is full, the task stops reading the
//! socket (TCP backpressure reaches the client) but keeps writing what the controller
//! queued. The controller never waits for this task; if the outbound queue overflows,
//! the slow-client policy closes the connection with 1008.
//!
//! Exactly one `Closed` event ends every connection that sent `Open`, carrying the code
//! of the closing handshake: the peer's, the controller's, 1005 for a close frame
//! without a code, 1006 for a connection that dropped without one.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::controller::{
    ConnectionInfo, ControllerHandle, Event, Outbound, OutboundHandle, OutboundQueue,
};

/// How long to wait for the peer's answer after sending a close frame.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Close code and reason sent to every client when the server shuts down.
const SHUTDOWN_CLOSE: (u16, &str) = (1001, "server shutting down");

/// Close code and reason used when the outbound queue overflows.
const OVERFLOW_CLOSE: (u16, &str) = (1008, "outbound queue full");

/// Serves one upgraded connection until it is closed, then reports `Closed`. The
/// outbound queue is made by the caller, which keeps a handle to close the connection.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    info: Arc<ConnectionInfo>,
    controller: ControllerHandle,
    (handle, mut queue): (OutboundHandle, OutboundQueue),
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = info.id;
    let events = controller.events().clone();
    let open = Event::Open {
        info,
        outbound: handle,
        span: tracing::Span::current(),
    };
    if events.send(open).await.is_err() {
        tracing::warn!("controller is gone; dropping connection");
        return;
    }
    tracing::info!("open");

    let (mut sink, mut stream) = ws.split();
    // The code and reason to report: set by whichever side closes first.
    let mut closed_with: Option<(u16, String)> = None;
    // Set once a close frame was sent or received: nothing more is written, and the
    // closing handshake must finish by then.
    let mut close_deadline: Option<Instant> = None;
    // An event read from the socket that is waiting for room in the controller's queue.
    let mut pending: Option<Event> = None;

    loop {
        tokio::select! {
            permit = events.reserve(), if pending.is_some() => {
                let Ok(permit) = permit else { break };
                permit.send(pending.take().expect("guarded by is_some"));
            }
            incoming = stream.next(), if pending.is_none() => match incoming {
                None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => break,
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    pending = Some(Event::Message { id, message });
                }
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite queues the reply and sends it on the next poll; from
                    // now on nothing else may be written, and the peer gets
                    // CLOSE_TIMEOUT to finish.
                    close_deadline.get_or_insert(Instant::now() + CLOSE_TIMEOUT);
                    if closed_with.is_none() {
                        closed_with = Some(match frame {
                            Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
                            None => (1005, String::new()),
                        });
                    }
                }
                Some(Ok(_)) => {} // ping/pong are answered by tungstenite
                Some(Err(error)) => {
                    let (code, reason) = error_close_code(&error);
                    // A drop (1006) is an ordinary way for a client to leave and is
                    // reported by `on-close` alone; everything else is the peer's fault
                    // and reaches `on-error` first.
                    if code == 1006 {
                        tracing::debug!(%error, "connection dropped");
                    } else {
                        tracing::info!(%error, code, "connection error");
                        let _ = events.send(Event::Error { id, error: error.to_string() }).await;
                    }
                    if code != 1006 && closed_with.is_none() {
                        let _ = tokio::time::timeout(
                            CLOSE_TIMEOUT,
                            sink.send(close_message(code, reason)),
                        )
                        .await;
                    }
                    closed_with.get_or_insert((code, reason.to_owned()));
                    break;
                }
            },
            out = queue.rx.recv(), if close_deadline.is_none() => match out {
                Some(Outbound::Message(message)) => {
                    if let Err(error) = sink.send(message).await {
                        tracing::debug!(%error, "write failed");
                        break;
                    }
                }
                Some(Outbound::Close(code, reason)) => {
                    let _ = sink.send(close_message(code, &reason)).await;
                    closed_with.get_or_insert((code, reason));
                    close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
                }
                // The controller dropped its handle: it is shutting down.
                None => {
                    let _ = sink.send(close_message(1001, "controller stopped")).await;
                    closed_with.get_or_insert((1001, "controller stopped".to_owned()));
                    close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
                }
            },
            () = stopping(&mut shutdown), if close_deadline.is_none() => {
                // What the controller queued before the shutdown signal (e.g. from
                // `on-shutdown`) goes out before the close frame.
                let mut code_reason = None;
                while let Ok(item) = queue.rx.try_recv() {
                    match item {
                        Outbound::Message(message) => {
                            if sink.send(message).await.is_err() {
                                break;
                            }
                        }
                        Outbound::Close(code, reason) => {
                            code_reason = Some((code, reason));
                            break;
                        }
                    }
                }
                let (code, reason) = code_reason
                    .unwrap_or_else(|| (SHUTDOWN_CLOSE.0, SHUTDOWN_CLOSE.1.to_owned()));
                let _ = sink.send(close_message(code, &reason)).await;
                closed_with.get_or_insert((code, reason));
                close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
            }
            () = queue.overflow.notified(), if close_deadline.is_none() => {
                let (code, reason) = OVERFLOW_CLOSE;
                tracing::warn!("outbound queue full; closing the slow client");
                let _ = sink.send(close_message(code, reason)).await;
                closed_with.get_or_insert((code, reason.to_owned()));
                close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
            }
            () = crate::deadline::sleep_until(close_deadline), if close_deadline.is_some() => {
                tracing::debug!("peer did not answer our close frame in time");
                break;
            }
        }
    }

    // A message that was waiting for queue room still precedes the close.
    if let Some(event) = pending {
        let _ = events.send(event).await;
    }
    let (code, reason) = closed_with.unwrap_or((1006, String::new()));
    tracing::info!(code, reason, "closed");
    let _ = events.send(Event::Closed { id, code, reason }).await;
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

/// Completes once the server starts shutting down (never, if the sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}
