//! Raw HTTP/1.1: hand-written requests (valid upgrades with one thing broken) and the
//! responses read off the wire.

use anyhow::{Context, Result, bail};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;

/// An HTTP/1.1 request written by hand, starting as a valid WebSocket upgrade request so
/// that each test can break exactly one thing about it.
#[derive(Debug, Clone)]
pub(crate) struct HttpRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl HttpRequest {
    /// A valid upgrade request for `target` (a path with an optional query).
    pub(crate) fn upgrade(target: &str) -> Self {
        Self {
            method: "GET".to_owned(),
            target: target.to_owned(),
            headers: vec![
                ("Host".to_owned(), "localhost".to_owned()),
                ("Upgrade".to_owned(), "websocket".to_owned()),
                ("Connection".to_owned(), "Upgrade".to_owned()),
                ("Sec-WebSocket-Key".to_owned(), generate_key()),
                ("Sec-WebSocket-Version".to_owned(), "13".to_owned()),
            ],
        }
    }

    /// A plain request for `target` (no upgrade headers, only `Host`), as a browser sends
    /// for a page or a file.
    pub(crate) fn plain(method: &str, target: &str) -> Self {
        Self {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: vec![("Host".to_owned(), "localhost".to_owned())],
        }
    }

    /// Replaces the method.
    pub(crate) fn method(mut self, method: &str) -> Self {
        method.clone_into(&mut self.method);
        self
    }

    /// Sets header `name` to `value`, replacing any header of that name.
    pub(crate) fn header(self, name: &str, value: &str) -> Self {
        let mut this = self.without(name);
        this.headers.push((name.to_owned(), value.to_owned()));
        this
    }

    /// Adds another `name` header, keeping those already there.
    pub(crate) fn also(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Removes every header named `name`.
    pub(crate) fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Display for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} HTTP/1.1\r\n", self.method, self.target)?;
        for (name, value) in &self.headers {
            write!(f, "{name}: {value}\r\n")?;
        }
        write!(f, "\r\n")
    }
}

/// An HTTP response read off the wire.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    /// The status code.
    pub(crate) status: u16,
    /// The headers in order, names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    /// The body (empty for a `101`, whose connection goes on as WebSocket).
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    /// Parses the head at the start of `bytes`; returns it and its length.
    pub(super) fn parse_head(bytes: &[u8]) -> Result<(Self, usize)> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let status = parsed.parse(bytes).with_context(|| {
            format!("not an HTTP response: {:?}", String::from_utf8_lossy(bytes))
        })?;
        let httparse::Status::Complete(head_len) = status else {
            bail!(
                "the connection ended inside the response head: {:?}",
                String::from_utf8_lossy(bytes)
            );
        };
        let response = Self {
            status: parsed.code.context("no status code")?,
            headers: parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: Vec::new(),
        };
        Ok((response, head_len))
    }

    /// The first header named `name` (lower-case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub(crate) fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
