//! A WebSocket client with time-bounded receives and close helpers.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

use super::HANG_GUARD;

/// A WebSocket client connection to the server under test, over TCP (`ws://`) or, as
/// `Client<TlsStream<TcpStream>>`, over TLS (`wss://`).
pub(crate) struct Client<S = TcpStream> {
    ws: WebSocketStream<S>,
}

impl Client {
    /// The client's own address, as the server sees it as the peer address.
    pub(crate) fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.ws.get_ref().local_addr()?)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Wraps a connection whose opening handshake is done.
    pub(super) fn new(ws: WebSocketStream<S>) -> Self {
        Self { ws }
    }

    /// The connection under the WebSocket (e.g. to ask a TLS stream what it negotiated).
    pub(crate) fn stream(&self) -> &S {
        self.ws.get_ref()
    }

    /// Sends a text message.
    pub(crate) async fn send_text(&mut self, text: &str) -> Result<()> {
        self.send(Message::text(text)).await
    }

    /// Sends a binary message.
    pub(crate) async fn send_binary(&mut self, bytes: &[u8]) -> Result<()> {
        self.send(Message::binary(bytes.to_vec())).await
    }

    async fn send(&mut self, msg: Message) -> Result<()> {
        timeout(HANG_GUARD, self.ws.send(msg))
            .await
            .context("send (hang guard)")?
            .context("send")
    }

    /// The next message that is not a ping or pong.
    async fn recv(&mut self) -> Result<Message> {
        loop {
            let next = timeout(HANG_GUARD, self.ws.next())
                .await
                .context("nothing received (hang guard)")?;
            match next {
                None => bail!("the connection ended"),
                Some(Err(e)) => return Err(e).context("receive"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(msg)) => return Ok(msg),
            }
        }
    }

    /// Receives the next message and expects it to be text.
    pub(crate) async fn recv_text(&mut self) -> Result<String> {
        match self.recv().await? {
            Message::Text(text) => Ok(text.as_str().to_owned()),
            other => bail!("expected a text message, got {}", describe(&other)),
        }
    }

    /// Receives the next message and expects it to be binary.
    pub(crate) async fn recv_binary(&mut self) -> Result<Vec<u8>> {
        match self.recv().await? {
            Message::Binary(bytes) => Ok(bytes.to_vec()),
            other => bail!("expected a binary message, got {}", describe(&other)),
        }
    }

    /// Sends `text` and returns the text reply.
    pub(crate) async fn request(&mut self, text: &str) -> Result<String> {
        self.send_text(text).await?;
        self.recv_text().await
    }

    /// Expects the next message to be the server's close frame and returns its code (1005
    /// when it has none) and reason; then completes the closing handshake.
    pub(crate) async fn recv_close(&mut self) -> Result<(u16, String)> {
        let frame = match self.recv().await? {
            Message::Close(frame) => frame,
            other => bail!("expected a close frame, got {}", describe(&other)),
        };
        self.finish().await?;
        Ok(frame.map_or((1005, String::new()), |f| {
            (f.code.into(), f.reason.as_str().to_owned())
        }))
    }

    /// Starts the closing handshake with `code` and `reason` and waits for its end.
    pub(crate) async fn close(mut self, code: u16, reason: &str) -> Result<()> {
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        self.close_with(Some(frame)).await
    }

    /// Starts the closing handshake with a close frame that carries no code.
    pub(crate) async fn close_without_code(mut self) -> Result<()> {
        self.close_with(None).await
    }

    async fn close_with(&mut self, frame: Option<CloseFrame>) -> Result<()> {
        timeout(HANG_GUARD, self.ws.close(frame))
            .await
            .context("close (hang guard)")??;
        self.finish().await
    }

    /// Reads until the server ends the connection (answering its close frame on the way).
    async fn finish(&mut self) -> Result<()> {
        loop {
            let next = timeout(HANG_GUARD, self.ws.next())
                .await
                .context("the server did not end the connection (hang guard)")?;
            match next {
                None | Some(Err(tungstenite::Error::ConnectionClosed)) => return Ok(()),
                Some(Err(e)) => return Err(e).context("closing"),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Reads for `period`, answering the server's pings (the reads send the pongs), and
    /// expects nothing else: no message, no end of the connection. Returns how many pings
    /// came. The period is how long the connection stays idle, not a bound on the server.
    pub(crate) async fn idle(&mut self, period: Duration) -> Result<usize> {
        let deadline = tokio::time::Instant::now() + period;
        let mut pings = 0;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(pings),
                Ok(None) => bail!("the connection ended while idle, after {pings} pings"),
                Ok(Some(Err(e))) => {
                    return Err(e).context(format!("while idle, after {pings} pings"));
                }
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(Some(Ok(other))) => {
                    bail!("expected nothing but pings, got {}", describe(&other))
                }
            }
        }
    }

    /// Expects the connection to end without a close frame (cut, e.g. by a proxy's idle
    /// timeout), skipping pings; fails on a message or a close frame.
    pub(crate) async fn expect_cut(&mut self) -> Result<()> {
        loop {
            let next = timeout(HANG_GUARD, self.ws.next())
                .await
                .context("the connection was not cut (hang guard)")?;
            match next {
                None
                | Some(Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                )) => return Ok(()),
                Some(Err(tungstenite::Error::Io(e)))
                    if e.kind() == std::io::ErrorKind::ConnectionReset =>
                {
                    return Ok(());
                }
                Some(Err(e)) => return Err(e).context("expected the connection to be cut"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => bail!(
                    "expected the connection to be cut, got {}",
                    describe(&other)
                ),
            }
        }
    }

    /// Drops the TCP connection without a closing handshake.
    pub(crate) fn drop_tcp(self) {
        drop(self.ws.into_inner());
    }
}

/// A short description of a message for failure messages (not the 1 MiB payload).
fn describe(msg: &Message) -> String {
    match msg {
        Message::Text(text) if text.len() <= 200 => format!("text {:?}", text.as_str()),
        Message::Text(text) => format!("text of {} bytes", text.len()),
        Message::Binary(bytes) => format!("binary of {} bytes", bytes.len()),
        Message::Close(frame) => format!("close {frame:?}"),
        other => format!("{other:?}"),
    }
}
