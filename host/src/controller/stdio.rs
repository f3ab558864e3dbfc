//! Guest stdout and stderr, turned into log lines tagged with the controller's name
//! and, during a connection's event, the connection's id; and [`escape_controls`], which
//! every line a guest writes to the log (these and its `log` calls) goes through.
//!
//! WASI output streams write bytes in arbitrary chunks; this writer buffers them until a
//! newline (or 4 KiB without one) and emits one tracing event per line, so a guest's
//! `println!` or `print()` reads like any other log line.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line buffered before it is logged anyway.
const MAX_LINE: usize = 4096;

/// `text` with every character that could forge or disguise a log line written as an
/// escape: CR, LF and tab as `\r`, `\n`, `\t`, the other C0 controls, DEL and the C1
/// controls as `\x1b` and so on, and the Unicode line and paragraph separators and
/// bidirectional overrides as `\u{2028}` and so on. A guest's text is untrusted: a raw
/// newline would let it start a line of its own that looks like the host's, and ESC
/// would let it drive the terminal of whoever reads the log.
pub(crate) fn escape_controls(text: &str) -> Cow<'_, str> {
    let needs_escape = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.contains(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Which guest stream a [`GuestOutput`] captures.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// A WASI stdout/stderr that writes to the host's log.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    controller: Arc<str>,
    stream: Stream,
    /// The connection whose event is being handled (0: none).
    calling: Arc<AtomicU64>,
}

impl GuestOutput {
    pub(crate) fn new(controller: Arc<str>, stream: Stream, calling: Arc<AtomicU64>) -> Self {
        Self {
            controller,
            stream,
            calling,
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            out: self.clone(),
            buf: Vec::new(),
        })
    }
}

struct LineWriter {
    out: GuestOutput,
    buf: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            return;
        }
        let line = escape_controls(line);
        let controller = &*self.out.controller;
        let conn_id = Some(self.out.calling.load(Ordering::Relaxed)).filter(|&id| id != 0);
        match self.out.stream {
            Stream::Stdout => tracing::info!(controller, conn_id, stream = "stdout", "{line}"),
            Stream::Stderr => tracing::warn!(controller, conn_id, stream = "stderr", "{line}"),
        }
    }

    fn flush_lines(&mut self) {
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let rest = self.buf.split_off(end + 1);
            let line = std::mem::replace(&mut self.buf, rest);
            self.emit(&line[..end]);
        }
        if self.buf.len() >= MAX_LINE {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.buf.extend_from_slice(data);
        self.flush_lines();
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.emit(&self.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn plain_text_is_borrowed_as_is() {
        let text = "héllo \\n \"quoted\" 日本";
        assert!(matches!(escape_controls(text), std::borrow::Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn controls_and_separators_are_escaped() {
        assert_eq!(
            escape_controls("a\r\nINFO forged line\x1b[31m"),
            "a\\r\\nINFO forged line\\x1b[31m"
        );
        assert_eq!(
            escape_controls("\0\t\x07\x7f\u{85}\u{9b}"),
            "\\x00\\t\\x07\\x7f\\x85\\x9b"
        );
        assert_eq!(
            escape_controls("x\u{2028}y\u{202e}z"),
            "x\\u{2028}y\\u{202e}z"
        );
    }
}
