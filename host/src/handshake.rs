//! The HTTP side of a connection: read the upgrade request, check it, pick the route,
//! and answer either `101 Switching Protocols` or a real HTTP error with a short body.
//!
//! wshost parses the request itself (with `httparse`) instead of letting tungstenite do
//! it, because tungstenite answers a malformed upgrade by closing the socket, and
//! because filters (later) must be able to await before the upgrade. After the 101,
//! tungstenite takes the socket over, together with any bytes the client already sent
//! past the request.
//!
//! The path is normalised first ([`normalize_path`]; ambiguous paths → 400), so routes
//! and filters see one spelling of it. Checks, in order, each with its status: no
//! `Host`, or a second `Host`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version` or
//! `Authorization` header → 400; unknown path → 404; method not GET → 405;
//! no `Upgrade: websocket` → 426; `Sec-WebSocket-Version` not 13 → 426; missing
//! `Connection: upgrade` or a bad `Sec-WebSocket-Key` → 400; no route accepts the
//! offered sub-protocols → 400. A request head over `max-header-bytes` gets 431, a
//! malformed one 400, as does a target that is neither a path (`/chat?x`) nor an
//! absolute URL (`http://host/chat?x`).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use http::HeaderValue;
use http::header::{ALLOW, SEC_WEBSOCKET_VERSION};

use crate::config::Route;
use crate::request::{Rejection, Request};
use crate::routing::{self, NoRoute, Selected};

/// Most header lines accepted.
const MAX_HEADERS: usize = 128;

/// Headers a request may carry once only: two of them mean two parties disagree about
/// the request (a smuggling attempt or a broken proxy), and which one a component
/// believes would be a guess.
const SINGLE_HEADERS: [&str; 4] = [
    "host",
    "sec-websocket-key",
    "sec-websocket-version",
    "authorization",
];

fn upgrade_required(body: &str) -> Rejection {
    Rejection::new(426, body).with_header(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"))
}

/// A request that passed every check.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The route chosen.
    pub selected: Selected,
    /// `Sec-WebSocket-Accept` for the 101.
    pub accept_key: String,
}

/// Reads a request head of at most `max_head` bytes. Returns the request and the bytes
/// read past it, `Ok(None)` when the peer closed before sending a complete head, or a
/// rejection for a head that is malformed (400) or too large (431).
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_head: usize,
) -> Result<Option<(Request, Vec<u8>)>, Rejection> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| Rejection::new(400, format!("cannot read request: {e}")))?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) if len > max_head => {
                return Err(too_large(max_head));
            }
            Ok(httparse::Status::Complete(len)) => {
                let request = to_request(&parsed)?;
                return Ok(Some((request, buf.split_off(len))));
            }
            Ok(httparse::Status::Partial) if buf.len() > max_head => {
                return Err(too_large(max_head));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(too_large(max_head)),
            Err(e) => return Err(Rejection::new(400, format!("malformed HTTP request: {e}"))),
        }
    }
}

fn too_large(max_head: usize) -> Rejection {
    Rejection::new(
        431,
        format!("request header fields too large (limit {max_head} bytes)"),
    )
}

fn to_request(parsed: &httparse::Request<'_, '_>) -> Result<Request, Rejection> {
    let target = parsed.path.unwrap_or("/");
    let (path, query) = split_target(target).ok_or_else(|| {
        // The query may hold a token (`access_token=`): it is neither logged nor echoed.
        let shown = match target.split_once('?') {
            Some((before, _)) => format!("{before}?<query redacted>"),
            None => target.to_owned(),
        };
        Rejection::new(400, format!("malformed request target `{shown}`"))
    })?;
    let path = normalize_path(path)?;
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| Rejection::new(400, format!("header `{}` is not valid UTF-8", h.name)))?;
        headers.push((h.name.to_ascii_lowercase(), value.to_owned()));
    }
    Ok(Request {
        method: parsed.method.unwrap_or_default().to_owned(),
        path,
        query: query.to_owned(),
        minor_version: parsed.version.unwrap_or(0),
        headers,
    })
}

/// The path and query of a request target: origin-form (`/path?query`), or absolute-form
/// (`http://host/path?query`), which some proxies send. Other forms (`*`, `host:port`)
/// name no path, so they are `None`.
fn split_target(target: &str) -> Option<(&str, &str)> {
    let origin_form = if target.starts_with('/') {
        target
    } else {
        let (scheme, rest) = target.split_once("://")?;
        let is_scheme = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        };
        if !is_scheme(scheme) {
            return None;
        }
        // The authority ends where the path or the query begins.
        &rest[rest.find(['/', '?']).unwrap_or(rest.len())..]
    };
    let (path, query) = origin_form.split_once('?').unwrap_or((origin_form, ""));
    Some((if path.is_empty() { "/" } else { path }, query))
}

/// Normalises a request path as RFC 3986 §6.2.2 describes, so that one resource has one
/// spelling for routes and filters: percent-encoded unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) are decoded, other percent-encodings upper-cased, dot
/// segments removed (`/a/./b/../c` → `/a/c`; `..` never climbs above `/`), and empty
/// segments collapsed (`//a` → `/a`, which RFC 3986 leaves alone but every file-system
/// backed server treats as one). Paths whose meaning depends on who reads them are
/// refused with 400: an encoded `/` or `\` (`%2F`, `%5C`: one part of a stack splits
/// segments there and another does not), an encoded control character, a raw `\`, and
/// a `%` not followed by two hex digits.
pub(crate) fn normalize_path(raw: &str) -> Result<String, Rejection> {
    let refuse = |why: &str| Rejection::new(400, format!("ambiguous request path: {why}"));
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                    return Err(refuse("`%` not followed by two hex digits"));
                };
                let byte = (hi * 16 + lo) as u8;
                match byte {
                    b'/' | b'\\' => return Err(refuse("an encoded `/` or `\\`")),
                    0..=0x1f | 0x7f => return Err(refuse("an encoded control character")),
                    b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                        decoded.push(b);
                    }
                    b => decoded.extend_from_slice(format!("%{b:02X}").as_bytes()),
                }
                i += 3;
            }
            b'\\' => return Err(refuse("`\\` in the path")),
            b => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII sequences were replaced by ASCII, so the bytes are still UTF-8.
    let decoded = String::from_utf8(decoded).map_err(|_| refuse("not UTF-8"))?;
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            name => segments.push(name),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// Checks `request` as a WebSocket upgrade and routes it.
pub fn accept(request: &Request, routes: &[Route]) -> Result<Accepted, Rejection> {
    if request.header("host").is_none_or(|h| h.trim().is_empty()) {
        return Err(Rejection::new(400, "missing `Host` header"));
    }
    if let Some(twice) = SINGLE_HEADERS
        .iter()
        .find(|name| request.header_count(name) > 1)
    {
        return Err(Rejection::new(
            400,
            format!("more than one `{twice}` header"),
        ));
    }
    let offered: Vec<&str> = request.header_items("sec-websocket-protocol").collect();
    let selected = routing::select(routes, &request.path, &offered);
    if selected == Err(NoRoute::Path) {
        return Err(Rejection::new(
            404,
            format!("no route for `{}`", request.path),
        ));
    }
    if request.method != "GET" {
        return Err(Rejection::new(
            405,
            format!(
                "method `{}` not allowed; a WebSocket upgrade is a GET",
                request.method
            ),
        )
        .with_header(ALLOW, HeaderValue::from_static("GET")));
    }
    if !request.has_token("upgrade", "websocket") {
        return Err(upgrade_required(
            "this is a WebSocket endpoint: send `Upgrade: websocket`",
        ));
    }
    if request.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(upgrade_required(
            "unsupported WebSocket version; this server speaks version 13",
        ));
    }
    if request.minor_version < 1 {
        return Err(Rejection::new(400, "a WebSocket upgrade needs HTTP/1.1"));
    }
    if !request.has_token("connection", "upgrade") {
        return Err(Rejection::new(400, "missing `Connection: upgrade`"));
    }
    let key = request.header("sec-websocket-key").map(str::trim);
    let Some(key) = key.filter(|k| is_valid_key(k)) else {
        return Err(Rejection::new(
            400,
            "missing or invalid `Sec-WebSocket-Key` (must be 16 bytes in base64)",
        ));
    };
    let selected = selected.map_err(|no_route| match no_route {
        NoRoute::Protocol(wanted) => Rejection::new(
            400,
            format!(
                "no supported sub-protocol offered; this path accepts: {}",
                wanted.join(", ")
            ),
        ),
        NoRoute::Path => unreachable!("handled above"),
    })?;
    Ok(Accepted {
        selected,
        accept_key: derive_accept_key(key.as_bytes()),
    })
}

/// A key is the base64 encoding of 16 bytes: 22 characters and `==`, the last
/// character carrying only 2 bits of data.
fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        && matches!(b[21], b'A' | b'Q' | b'g' | b'w')
}

/// Writes an error response and shuts the write side down.
pub async fn reject<S: AsyncWrite + Unpin>(stream: &mut S, rejection: &Rejection) {
    let body = format!("{}\n", rejection.body);
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        rejection.status,
        reason_phrase(rejection.status),
        body.len()
    );
    let mut head = head.into_bytes();
    for (name, value) in &rejection.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(body.as_bytes());
    // The peer may already be gone; there is nobody left to tell.
    let _ = stream.write_all(&head).await;
    let _ = stream.shutdown().await;
}

/// Writes an error response to a client whose request was not read, then reads and
/// discards what it sends for a moment: closing a socket with unread data resets the
/// connection, and the client could lose the answer.
pub async fn reject_unread(stream: &mut TcpStream, rejection: &Rejection) {
    reject(stream, rejection).await;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// Writes the `101 Switching Protocols` response.
pub async fn switch<S: AsyncWrite + Unpin>(
    stream: &mut S,
    accepted: &Accepted,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accepted.accept_key
    );
    if let Some(protocol) = &accepted.selected.protocol {
        head.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::PathPattern;

    fn request(raw: &str) -> Request {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(raw.as_bytes()).unwrap().is_complete());
        to_request(&parsed).unwrap()
    }

    fn routes() -> Vec<Route> {
        vec![Route {
            name: "chat".to_owned(),
            pattern: Some(PathPattern::new("/chat/*").unwrap()),
            protocols: vec!["chat".to_owned()],
            controller: 0,
            filters: Vec::new(),
            limits: std::sync::Arc::default(),
            max_connections: None,
            topic: None,
        }]
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
        )
    }

    #[test]
    fn rfc_example_key_gets_the_rfc_accept_value() {
        let r = request(&upgrade(
            "/chat/a?x=1",
            "Sec-WebSocket-Protocol: other, chat\r\n",
        ));
        assert_eq!((r.path.as_str(), r.query.as_str()), ("/chat/a", "x=1"));
        let a = accept(&r, &routes()).unwrap();
        assert_eq!(a.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(a.selected.protocol.as_deref(), Some("chat"));
    }

    #[test]
    fn each_check_has_its_status() {
        let status = |raw: String| accept(&request(&raw), &routes()).unwrap_err().status;
        assert_eq!(status(upgrade("/nope", "")), 404);
        assert_eq!(
            status(upgrade("/chat/a", "").replacen("GET", "POST", 1)),
            405
        );
        assert_eq!(
            status(upgrade("/chat/a", "").replace("Upgrade: websocket\r\n", "")),
            426
        );
        assert_eq!(
            status(upgrade("/chat/a", "").replace("Version: 13", "Version: 8")),
            426
        );
        assert_eq!(status(upgrade("/chat/a", "").replace(KEY, "short")), 400);
        assert_eq!(
            status(upgrade("/chat/a", "").replace("keep-alive, Upgrade", "close")),
            400
        );
        assert_eq!(
            status(upgrade("/chat/a", "Sec-WebSocket-Protocol: x\r\n")),
            400
        );
        assert_eq!(
            status(upgrade("/chat/a", "").replace("HTTP/1.1", "HTTP/1.0")),
            400
        );
    }

    #[test]
    fn absolute_form_targets_are_reduced_to_the_path() {
        let r = request(&upgrade("http://example.com/chat/x?q", ""));
        assert_eq!((r.path.as_str(), r.query.as_str()), ("/chat/x", "q"));
    }

    #[test]
    fn a_url_in_the_query_does_not_move_the_path() {
        // Found by `fuzz::origin_form_targets_split_at_the_first_question_mark`: the
        // target was taken for absolute-form because it contained `://`.
        // (Its empty segment is then collapsed by normalisation.)
        assert_eq!(request(&upgrade("/://", "")).path, "/:/");
        let r = request(&upgrade("/chat/a?next=http://example.com/admin", ""));
        assert_eq!(
            (r.path.as_str(), r.query.as_str()),
            ("/chat/a", "next=http://example.com/admin")
        );
    }

    #[test]
    fn absolute_form_without_a_path_keeps_its_query() {
        // Found by `fuzz::absolute_form_targets_lose_only_scheme_and_authority`.
        let r = request(&upgrade("http://0?%", ""));
        assert_eq!((r.path.as_str(), r.query.as_str()), ("/", "%"));
        let r = request(&upgrade("http://host?next=/admin", ""));
        assert_eq!((r.path.as_str(), r.query.as_str()), ("/", "next=/admin"));
    }

    #[tokio::test]
    async fn targets_that_name_no_path_get_400() {
        // Found by `fuzz::read_request_survives_mutated_upgrades`: `GET ?` was read as
        // the empty path, which a catch-all route then served.
        for target in ["?", "*", "example.com:443", "chat", "x?y://z/", "://x/"] {
            let raw = upgrade(target, "");
            let mut input = raw.as_bytes();
            let status = read_request(&mut input, 16 * 1024)
                .await
                .unwrap_err()
                .status;
            assert_eq!(status, 400, "{target}");
        }
    }

    #[test]
    fn paths_are_normalised_before_routing() {
        for (raw, want) in [
            ("/admin/x", "/admin/x"),
            ("//admin/x", "/admin/x"),
            ("/./admin/x", "/admin/x"),
            ("/chat/../admin/x", "/admin/x"),
            ("/../../admin/x", "/admin/x"),
            ("/%61dmin/x", "/admin/x"),
            ("/admin%2fx/../y", ""),
            ("/a/%2e%2E/admin/x", "/admin/x"),
            ("/a/b/..", "/a/"),
            ("/a%20b/%c3%a9", "/a%20b/%C3%A9"),
            ("/", "/"),
            ("/..", "/"),
            ("/é/x", "/é/x"),
        ] {
            match normalize_path(raw) {
                Ok(path) => assert_eq!(path, want, "{raw}"),
                Err(r) => assert!(want.is_empty() && r.status == 400, "{raw}: {r}"),
            }
        }
        for ambiguous in [
            "/admin%2Fx",
            "/admin%5cx",
            "/a\\b",
            "/a%00",
            "/a%",
            "/a%4",
            "/a%zz",
        ] {
            assert_eq!(
                normalize_path(ambiguous).unwrap_err().status,
                400,
                "{ambiguous}"
            );
        }
    }

    #[test]
    fn host_is_required_and_key_headers_are_single() {
        let status = |raw: String| accept(&request(&raw), &routes()).unwrap_err().status;
        assert_eq!(
            status(upgrade("/chat/a", "").replace("Host: x\r\n", "")),
            400
        );
        for twice in [
            "Host: y\r\n",
            &format!("Sec-WebSocket-Key: {KEY}\r\n"),
            "Sec-WebSocket-Version: 13\r\n",
            "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n",
        ] {
            assert_eq!(status(upgrade("/chat/a", twice)), 400, "{twice}");
        }
        // Other headers may repeat (their values are lists).
        let r = request(&upgrade(
            "/chat/a",
            "Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: chat\r\n",
        ));
        assert!(accept(&r, &routes()).is_ok());
    }

    #[test]
    fn keys_must_be_16_bytes_of_base64() {
        assert!(is_valid_key(KEY));
        assert!(is_valid_key("AAAAAAAAAAAAAAAAAAAAAA=="));
        assert!(
            !is_valid_key("AAAAAAAAAAAAAAAAAAAAAB=="),
            "non-zero padding bits"
        );
        assert!(!is_valid_key("AAAAAAAAAAAAAAAAAAAAAAA="), "17 bytes");
        assert!(!is_valid_key("AAAAAAAAAAAAAAAAAAAA*A=="));
    }

    #[tokio::test]
    async fn reads_a_head_and_keeps_the_bytes_after_it() {
        let raw = format!("{}\u{81}\u{0}", upgrade("/chat/a", ""));
        let mut input = raw.as_bytes();
        let (r, rest) = read_request(&mut input, 16 * 1024).await.unwrap().unwrap();
        assert_eq!(r.header("sec-websocket-key"), Some(KEY));
        assert_eq!(rest, "\u{81}\u{0}".as_bytes());
    }

    #[tokio::test]
    async fn oversized_heads_get_431() {
        let raw = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(1000));
        let mut input = raw.as_bytes();
        assert_eq!(
            read_request(&mut input, 1000).await.unwrap_err().status,
            431
        );
        let mut input = raw.as_bytes();
        assert!(read_request(&mut input, 2000).await.is_ok());
    }
}

#[cfg(test)]
mod fuzz;
