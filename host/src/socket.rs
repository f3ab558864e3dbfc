//! The upgraded TCP socket, as tungstenite reads and writes it, plus a [`ReadGate`] that
//! tells the connection task whether reading could make progress.
//!
//! Why: tungstenite zeroes its whole read buffer (8 KiB here) before every `read` of
//! the socket, including the reads that find nothing. The connection task is woken for
//! many reasons besides incoming data (replies queued by the controller, keepalive,
//! admission), and polling the read half on each of those wake-ups cost one 8 KiB
//! `memset` apiece. Callgrind of the 1-connection ping-pong put 37 % of the server's
//! instructions in that `memset`. The gate lets the task skip the read half until the
//! socket is readable again.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connected TCP socket shared with its [`ReadGate`].
pub struct Socket {
    tcp: Arc<TcpStream>,
    /// Set when the last read found the socket empty; cleared when one returns data.
    drained: Arc<AtomicBool>,
}

/// Whether reading the socket's WebSocket stream can make progress.
pub struct ReadGate {
    tcp: Arc<TcpStream>,
    drained: Arc<AtomicBool>,
}

impl Socket {
    /// Wraps `tcp`; the gate starts open, since bytes read with the request head may
    /// already hold frames.
    pub fn new(tcp: TcpStream) -> (Self, ReadGate) {
        let tcp = Arc::new(tcp);
        let drained = Arc::new(AtomicBool::new(false));
        let gate = ReadGate {
            tcp: tcp.clone(),
            drained: drained.clone(),
        };
        (Self { tcp, drained }, gate)
    }
}

impl ReadGate {
    /// Ready unless the last read found the socket empty and nothing arrived since, in
    /// which case the task is woken when the socket becomes readable. Frames tungstenite
    /// already buffered are never held back: it reads the socket only when its buffer
    /// holds no complete frame, so an empty read means there was none.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.drained.load(Ordering::Relaxed) {
            return Poll::Ready(());
        }
        // An error is "ready" too: the read that follows reports it.
        self.tcp.poll_read_ready(cx).map(|_| ())
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.tcp.poll_read_ready(cx)?.is_pending() {
                self.drained.store(true, Ordering::Relaxed);
                return Poll::Pending;
            }
            // tungstenite hands over an initialised buffer, so this does not zero it again.
            match self.tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    self.drained.store(false, Ordering::Relaxed);
                    return Poll::Ready(Ok(()));
                }
                // `try_read` cleared the readiness; the next round registers the waker.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_write(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_write_vectored(bufs) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // TCP has no user-space buffer to flush
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.tcp).shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (Socket, ReadGate, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (peer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (socket, gate) = Socket::new(accepted.unwrap().0);
        (socket, gate, peer.unwrap())
    }

    /// Polls `gate` once without waiting.
    fn is_open(gate: &ReadGate) -> bool {
        let waker = futures_util::task::noop_waker();
        gate.poll_ready(&mut Context::from_waker(&waker)).is_ready()
    }

    #[tokio::test]
    async fn gate_closes_on_an_empty_read_and_opens_when_data_arrives() {
        let (mut socket, gate, mut peer) = pair().await;
        assert!(is_open(&gate), "open before the first read");
        let mut buf = [0u8; 16];
        // An empty socket: the read is pending and the gate closes.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut read_buf = ReadBuf::new(&mut buf);
        assert!(Pin::new(&mut socket).poll_read(&mut cx, &mut read_buf).is_pending());
        assert!(!is_open(&gate), "closed after an empty read");
        // Data arrives: the gate opens (wait for it), and the read returns it.
        peer.write_all(b"hello").await.unwrap();
        poll_fn(|cx| gate.poll_ready(cx)).await;
        let n = socket.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert!(is_open(&gate), "open after a read that returned data");
    }

    #[tokio::test]
    async fn writes_and_shutdown_reach_the_peer() {
        let (mut socket, _gate, mut peer) = pair().await;
        let parts = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")];
        let n = socket.write_vectored(&parts).await.unwrap();
        socket.write_all(&b"abcdef"[n..]).await.unwrap();
        socket.shutdown().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abcdef");
    }
}
