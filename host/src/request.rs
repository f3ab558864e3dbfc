//! The vocabulary every layer of a request's life shares: the upgrade [`Request`] as
//! received, the [`Rejection`] that answers it with an HTTP error, the [`Attributes`]
//! filters and hooks attach to it, and the [`CloseReason`] a connection ends with.
//!
//! A leaf module: it depends on nothing else in wshost, so `filter`, `handshake`,
//! `server` and `controller` can all use it without importing each other.

use http::{HeaderName, HeaderValue};

/// A parsed upgrade request.
#[derive(Debug, Clone)]
pub struct Request {
    /// e.g. `GET`.
    pub method: String,
    /// Path without the query, normalised (see `handshake::normalize_path`): what
    /// routes and filters match.
    pub path: String,
    /// Query string without `?`.
    pub query: String,
    /// Minor HTTP version (1 for HTTP/1.1).
    pub minor_version: u8,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// How many `name` header lines the request has.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(k, _)| k == name).count()
    }

    /// Every comma-separated item of every `name` header, trimmed, empty items skipped.
    pub fn header_items<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// A `GET /` over HTTP/1.1 with `headers` (names lower-case), for unit tests.
    #[cfg(test)]
    pub(crate) fn get(headers: &[(&str, &str)]) -> Self {
        Self {
            method: "GET".to_owned(),
            path: "/".to_owned(),
            query: String::new(),
            minor_version: 1,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Whether header `name` lists `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_items(name)
            .any(|v| v.eq_ignore_ascii_case(token))
    }
}

/// An HTTP answer that ends the request instead of upgrading it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {body}")]
pub struct Rejection {
    /// HTTP status code.
    pub status: u16,
    /// Extra response headers; typed, so nothing written here can break the response
    /// head (a CR or LF cannot be in a [`HeaderValue`]).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A short plain-text body saying why.
    pub body: String,
}

impl Rejection {
    /// A rejection with no extra headers.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds a header given as text (e.g. by a controller), or says why it cannot be sent.
    pub fn with_text_header(self, name: &str, value: &str) -> Result<Self, InvalidHeader> {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| InvalidHeader::Name(name.into()))?;
        let header_value =
            HeaderValue::from_str(value).map_err(|_| InvalidHeader::Value(header_name.clone()))?;
        Ok(self.with_header(header_name, header_value))
    }

    /// The value of response header `name`, if set and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.to_str().ok())
    }
}

/// A response header that cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHeader {
    /// Not an HTTP token (empty, or with spaces, colons, control characters...).
    #[error("`{}` is not a valid header name", .0.escape_debug())]
    Name(String),
    /// Has control characters (CR, LF, NUL...) that would break the response head.
    #[error("the value of header `{0}` has characters a header may not contain")]
    Value(HeaderName),
}

/// Name/value pairs the host attaches to a connection: `route`, `match.N`, and what
/// filters and the handshake hook add (`user`, `claims.*`, ...). Names are unique; a
/// later value replaces an earlier one. Order is kept (first set, first listed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes(Vec<(String, String)>);

impl Attributes {
    /// The value of attribute `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The pairs in order.
    pub fn as_slice(&self) -> &[(String, String)] {
        &self.0
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Self {
        let mut attributes = Self::default();
        for (name, value) in pairs {
            attributes.set(name, value);
        }
        attributes
    }
}

/// How a connection closes: the code and reason of its close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// Close code (RFC 6455 §7.4).
    pub code: u16,
    /// Close reason (at most 123 bytes on the wire).
    pub reason: String,
}

impl CloseReason {
    /// A close with `code` and `reason`.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_headers_with_line_breaks_are_refused() {
        let ok = Rejection::new(401, "no").with_text_header("WWW-Authenticate", "Bearer");
        assert_eq!(ok.unwrap().header("www-authenticate"), Some("Bearer"));
        let injected =
            Rejection::new(403, "no").with_text_header("x-a", "1\r\nSet-Cookie: session=evil");
        assert!(matches!(injected, Err(InvalidHeader::Value(_))));
        let bad_name = Rejection::new(403, "no").with_text_header("x-a\r\nSet-Cookie", "1");
        assert!(matches!(bad_name, Err(InvalidHeader::Name(_))));
        assert!(Rejection::new(403, "no").with_text_header("", "1").is_err());
    }

    #[test]
    fn attributes_replace_by_name_and_keep_order() {
        let mut a: Attributes = [("route", "r"), ("user", "ann")].into_iter().collect();
        a.set("route", "s");
        a.set("claims.role", "admin");
        assert_eq!(a.get("route"), Some("s"));
        let names: Vec<&str> = a.as_slice().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["route", "user", "claims.role"]);
    }
}
