//! The upgraded socket, as tungstenite reads and writes it, plus a [`ReadGate`] that
//! tells the connection task whether reading could make progress. The socket is a
//! [`Stream`]: TCP, or TLS over TCP when routes.toml has `[tls]` (see [`crate::tls`]).
//!
//! Why: tungstenite zeroes its whole read buffer (8 KiB here) before every `read` of
//! the socket, including the reads that find nothing. The connection task is woken for
//! many reasons besides incoming data (replies queued by the controller, keepalive,
//! admission), and polling the read half on each of those wake-ups cost one 8 KiB
//! `memset` apiece. Callgrind of the 1-connection ping-pong put 37 % of the server's
//! instructions in that `memset`. The gate lets the task skip the read half until the
//! socket is readable again.
//!
//! Reads still go through tokio's `TcpStream::poll_read`: it treats a short read as
//! "drained" and so saves a `recv` that would only return `EAGAIN`. (A first version
//! read with `try_read`, which lacks that, and paid one extra syscall per message:
//! strace counted 25,278 `recvfrom`, 12,539 of them `EAGAIN`, for 12,739 messages.)
//!
//! Reading ahead: tungstenite's read buffer is allocated with the connection and kept
//! for its whole life, and it reads at most that buffer's size per `read`. A large
//! buffer makes idle connections expensive (8 KiB of a 13.4 KiB idle connection); a
//! small one alone would cost a syscall per kilobyte of a large message. So the buffer
//! is small ([`READ_BUFFER_BYTES`]), and when a read fills it, the socket guesses that
//! a burst is arriving: the next read takes up to [`READ_AHEAD_BYTES`] from the kernel
//! at once into a buffer of the socket's own, which tungstenite's reads then drain, and
//! which is released once drained. A quiet connection holds neither.
//!
//! The gate needs nothing of TCP: it relies only on `poll_read`'s contract (a pending
//! read wakes the waker it was given when it can progress), which a TLS stream keeps
//! too. [`Stream`] is an enum rather than a type parameter so that the handshake and
//! connection code exist once; the TLS variant is boxed, so a plain connection pays one
//! predictable branch per call and no memory (a unit test checks the size).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use std::future::Future;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client's connection: plain TCP, or TLS over TCP.
pub enum Stream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`; boxed, since the TLS state is large and plain connections should not
    /// carry its size.
    Tls(Box<TlsStream<TcpStream>>),
}

/// A TLS connection ends with its `close_notify` alert before the TCP FIN, as TLS
/// requires: without it a client cannot tell the end from a truncation (rustls reports
/// an error). Sent here, when the connection is dropped, rather than by an awaited
/// shutdown at the end of the connection task: awaited, its state would be part of
/// every connection task's size, TLS or not. Best effort, without waiting: the alert is
/// a few dozen bytes, written only if the socket takes them at once (a peer that stopped
/// reading gets the FIN alone). Rustls sends it once, so a stream that was shut down
/// already sends nothing more.
impl Drop for Stream {
    fn drop(&mut self) {
        if let Self::Tls(tls) = self {
            let (tcp, connection) = tls.get_mut();
            connection.send_close_notify();
            let mut socket = NonBlocking(tcp);
            while connection.wants_write() {
                match connection.write_tls(&mut socket) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
}

/// Writes to a tokio socket without waiting (`WouldBlock` when it is full).
struct NonBlocking<'a>(&'a TcpStream);

impl io::Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Calls `$method` on the inner stream of `$stream`, pinned.
macro_rules! on_inner {
    ($stream:expr, $method:ident($($arg:expr),*)) => {
        match $stream.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).$method($($arg),*),
            Stream::Tls(tls) => Pin::new(&mut **tls).$method($($arg),*),
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        on_inner!(self, poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_inner!(self, poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_inner!(self, poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_inner!(self, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_inner!(self, poll_shutdown(cx))
    }
}

/// The read buffer tungstenite is configured with (`WebSocketConfig::read_buffer_size`):
/// what it allocates for every connection and keeps, and the most it reads at a time.
/// It is zeroed before every read too (its default, 128 KiB, cost a third of the CPU
/// time of small-message traffic, measured), so small is cheaper for small messages as
/// well; bursts are read ahead instead (see the module docs).
pub const READ_BUFFER_BYTES: usize = 1024;

/// The most a read ahead takes from the kernel at once (see the module docs).
pub const READ_AHEAD_BYTES: usize = 64 * 1024;

/// A read that fills tungstenite's buffer and is at least this large starts a read
/// ahead. (A smaller one was only limited by what is left of tungstenite's buffer.)
const BURST_READ_BYTES: usize = READ_BUFFER_BYTES / 2;

/// A client's connection whose reads report to a [`ReadGate`].
pub struct Socket {
    stream: Stream,
    signal: Arc<ReadSignal>,
    /// `signal` as a waker, handed to tokio for every read (made once).
    waker: Waker,
    /// Bytes read ahead and not yet handed to tungstenite; empty (no allocation) but
    /// during a burst.
    ahead: bytes::BytesMut,
    /// The last read from the kernel filled what it was given: read ahead next time.
    burst: bool,
}

/// Whether reading the socket's WebSocket stream can make progress.
pub struct ReadGate {
    signal: Arc<ReadSignal>,
}

/// Shared by a socket and its gate.
struct ReadSignal {
    /// The last read found the socket empty.
    drained: AtomicBool,
    /// The socket became readable since that read.
    readable: AtomicBool,
    /// The connection task, woken when the socket becomes readable.
    task: AtomicWaker,
}

impl Wake for ReadSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.readable.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Socket {
    /// Wraps `stream`; the gate starts open, since bytes read with the request head may
    /// already hold frames.
    pub fn new(stream: Stream) -> (Self, ReadGate) {
        let signal = Arc::new(ReadSignal {
            drained: AtomicBool::new(false),
            readable: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(signal.clone());
        let gate = ReadGate {
            signal: signal.clone(),
        };
        (
            Self {
                stream,
                signal,
                waker,
                ahead: bytes::BytesMut::new(),
                burst: false,
            },
            gate,
        )
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }
}

impl ReadGate {
    /// Ready unless the last read found the socket empty and it has not become readable
    /// since; then the task is woken when it does. Frames tungstenite already buffered
    /// are never held back: it reads the socket only when its buffer holds no complete
    /// frame, so an empty read means there was none.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let signal = &*self.signal;
        if !signal.drained.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        signal.task.register(cx.waker());
        // Checked after registering, so a wake-up in between is not lost.
        if signal.readable.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.ahead.is_empty() {
            this.hand_out(buf);
            return Poll::Ready(Ok(()));
        }
        // tokio's own read (which also knows that a short read emptied the socket, and
        // saves the `recv` that would say so), with a waker that records readiness
        // before it wakes the task.
        this.signal.task.register(cx.waker());
        this.signal.readable.store(false, Ordering::Release);
        let mut kernel = Context::from_waker(&this.waker);
        let read = if this.burst {
            // Released when drained; taken again (fresh) at the next burst.
            this.ahead = bytes::BytesMut::with_capacity(READ_AHEAD_BYTES);
            let read = std::pin::pin!(this.stream.read_buf(&mut this.ahead)).poll(&mut kernel);
            this.burst = this.ahead.len() == READ_AHEAD_BYTES;
            if read.is_ready() {
                this.hand_out(buf);
            } else {
                this.ahead = bytes::BytesMut::new();
            }
            read.map_ok(drop)
        } else {
            let wanted = buf.remaining();
            let read = Pin::new(&mut this.stream).poll_read(&mut kernel, buf);
            this.burst = wanted >= BURST_READ_BYTES && read.is_ready() && buf.remaining() == 0;
            read
        };
        this.signal
            .drained
            .store(read.is_pending(), Ordering::Release);
        read
    }
}

impl Socket {
    /// Moves what was read ahead into `buf`, as much as fits; releases the read-ahead
    /// buffer once it is drained.
    fn hand_out(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.ahead.len().min(buf.remaining());
        buf.put_slice(&self.ahead[..n]);
        bytes::Buf::advance(&mut self.ahead, n);
        if self.ahead.is_empty() {
            self.ahead = bytes::BytesMut::new();
        }
        // Reading can make progress until it is drained.
        self.signal.drained.store(false, Ordering::Release);
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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
        let (socket, gate) = Socket::new(Stream::Plain(accepted.unwrap().0));
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
        assert!(
            Pin::new(&mut socket)
                .poll_read(&mut cx, &mut read_buf)
                .is_pending()
        );
        assert!(!is_open(&gate), "closed after an empty read");
        // Data arrives: the gate opens (wait for it), and the read returns it.
        peer.write_all(b"hello").await.unwrap();
        poll_fn(|cx| gate.poll_ready(cx)).await;
        let n = socket.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert!(is_open(&gate), "open after a read that returned data");
    }

    #[test]
    fn a_plain_stream_is_no_larger_than_its_tcp_socket() {
        assert_eq!(
            std::mem::size_of::<Stream>(),
            std::mem::size_of::<TcpStream>()
        );
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
