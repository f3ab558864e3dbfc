//! A raw WebSocket peer: the opening handshake done by hand, then frames written and read
//! byte by byte, for what a well-behaved client library will not do (invalid UTF-8,
//! never reading, never answering pings).

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{HANG_GUARD, HttpRequest, Server};

/// Frame opcodes (RFC 6455 §5.2).
pub(crate) mod opcode {
    /// A text frame.
    pub(crate) const TEXT: u8 = 0x1;
    /// A close frame.
    pub(crate) const CLOSE: u8 = 0x8;
    /// A ping frame.
    pub(crate) const PING: u8 = 0x9;
}

/// An upgraded connection spoken to frame by frame.
pub(crate) struct RawPeer {
    tcp: TcpStream,
}

/// One frame as read off the wire.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame.
    pub(crate) fn close_code(&self) -> Option<u16> {
        (self.opcode == opcode::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The close reason of a close frame.
    pub(crate) fn close_reason(&self) -> String {
        String::from_utf8_lossy(self.payload.get(2..).unwrap_or_default()).into_owned()
    }
}

impl Server {
    /// Upgrades a fresh TCP connection on `path` and returns it without any WebSocket
    /// machinery on top: nothing is read or answered unless the test does it.
    pub(crate) async fn raw_peer(&self, path: &str) -> Result<RawPeer> {
        self.raw_peer_for(&HttpRequest::upgrade(path)).await
    }

    /// A raw peer upgraded by `request` (e.g. one offering a sub-protocol).
    pub(crate) async fn raw_peer_for(&self, request: &HttpRequest) -> Result<RawPeer> {
        let (tcp, _) = self.upgrade_raw(request).await?;
        Ok(RawPeer { tcp })
    }
}

impl RawPeer {
    /// Writes one masked, final frame.
    pub(crate) async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.send_bytes(&frame).await
    }

    /// Writes `bytes` as they are (for frames a client must not send).
    pub(crate) async fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        timeout(HANG_GUARD, self.tcp.write_all(bytes))
            .await
            .context("write (hang guard)")??;
        Ok(())
    }

    /// Reads the next frame (the server's frames are unmasked); `None` at the end of
    /// the stream.
    pub(crate) async fn read_frame(&mut self) -> Result<Option<Frame>> {
        timeout(HANG_GUARD, self.read_frame_inner())
            .await
            .context("no frame and no end of stream (hang guard)")?
    }

    async fn read_frame_inner(&mut self) -> Result<Option<Frame>> {
        let mut head = [0u8; 2];
        match self.tcp.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = match head[1] & 0x7f {
            126 => u64::from(self.tcp.read_u16().await?),
            127 => self.tcp.read_u64().await?,
            n => u64::from(n),
        };
        let mut payload = vec![0; usize::try_from(len)?];
        self.tcp.read_exact(&mut payload).await?;
        Ok(Some(Frame {
            opcode: head[0] & 0x0f,
            payload,
        }))
    }

    /// Reads frames until a close frame (skipping data and pings) and returns it.
    pub(crate) async fn read_close(&mut self) -> Result<Frame> {
        loop {
            let frame = self
                .read_frame()
                .await?
                .context("the stream ended without a close frame")?;
            if frame.opcode == opcode::CLOSE {
                return Ok(frame);
            }
        }
    }
}
