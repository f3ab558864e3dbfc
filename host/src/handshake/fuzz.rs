//! Property tests standing in for a fuzzer (cargo-fuzz needs nightly): arbitrary bytes and
//! mutated upgrade requests through [`read_request`], and arbitrary requests and route
//! tables through [`accept`]. Each property runs proptest's default 256 cases; for a
//! longer run: `PROPTEST_CASES=100000 cargo test -p wshost --lib fuzz`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use tokio::io::ReadBuf;

use super::*;
use crate::pattern::PathPattern;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const DEFAULT_MAX_HEAD: usize = crate::config::DEFAULT_MAX_HEADER_BYTES;

/// Hands out its bytes in chunks of the given sizes, then in 4 KiB reads, so the
/// incremental parse sees a head split at arbitrary points, as TCP may split it.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let size = this.sizes.pop().unwrap_or(4096).min(buf.remaining());
        let end = this.data.len().min(this.pos + size);
        buf.put_slice(&this.data[this.pos..end]);
        this.pos = end;
        Poll::Ready(Ok(()))
    }
}

type ReadResult = Result<Option<(Request, Vec<u8>)>, Rejection>;

fn read(stream: &mut (impl AsyncRead + Unpin), max_head: usize) -> ReadResult {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
        .block_on(read_request(stream, max_head))
}

/// The request of a head that must be read whole.
fn parse_head(head: &str) -> Result<Request, TestCaseError> {
    match read(&mut head.as_bytes(), DEFAULT_MAX_HEAD) {
        Ok(Some((request, _))) => Ok(request),
        other => Err(TestCaseError::fail(format!("{head:?} gave {other:?}"))),
    }
}

/// What `read_request` promises for `data` read whole and read in `sizes` chunks.
fn check_read(data: &[u8], max_head: usize, sizes: Vec<usize>) -> Result<(), TestCaseError> {
    let whole = read(&mut &data[..], max_head);
    let mut stream = Chunked {
        data: data.to_vec(),
        pos: 0,
        sizes,
    };
    let split = read(&mut stream, max_head);
    for result in [&whole, &split] {
        if let Err(rejection) = result {
            prop_assert!(
                matches!(rejection.status, 400 | 431),
                "status {}",
                rejection.status
            );
        }
    }
    let Ok(Some((request, rest))) = &whole else {
        return Ok(());
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(httparse::Status::Complete(len)) = httparse::Request::new(&mut headers).parse(data)
    else {
        return Err(TestCaseError::fail(
            "accepted a head httparse calls incomplete",
        ));
    };
    prop_assert!(len <= max_head);
    prop_assert!(
        data[len..].starts_with(rest),
        "rest is what followed the head"
    );
    check_request(request)?;
    // Where the reads split the head must not change what it means.
    let Ok(Some((same, early))) = &split else {
        return Err(TestCaseError::fail(format!(
            "read whole: {request:?}; read in chunks: {split:?}"
        )));
    };
    prop_assert_eq!(format!("{same:?}"), format!("{request:?}"));
    prop_assert!(data[len..].starts_with(early));
    check_accept(request, &routes_for_heads())
}

fn check_request(request: &Request) -> Result<(), TestCaseError> {
    prop_assert!(!request.method.is_empty());
    prop_assert!(request.path.starts_with('/'), "{:?}", request.path);
    prop_assert!(!request.path.contains('?'), "{:?}", request.path);
    prop_assert!(request.minor_version <= 1);
    for (name, _) in &request.headers {
        prop_assert_eq!(name, &name.to_ascii_lowercase());
    }
    Ok(())
}

/// A request for `target`, whose path part is `path` and query `query`, is read with
/// the normalised path and the query as sent, or refused with 400 if the path is
/// ambiguous.
fn check_target(target: &str, path: &str, query: &str) -> Result<(), TestCaseError> {
    let head = format!("GET {target} HTTP/1.1\r\n\r\n");
    match normalize_path(path) {
        Ok(want) => {
            let request = parse_head(&head)?;
            prop_assert_eq!(request.path, want);
            prop_assert_eq!(request.query, query);
        }
        Err(_) => {
            let status = read(&mut head.as_bytes(), DEFAULT_MAX_HEAD)
                .err()
                .map(|r| r.status);
            prop_assert_eq!(status, Some(400));
        }
    }
    Ok(())
}

/// What `accept` promises for any request and any route table.
fn check_accept(request: &Request, routes: &[Route]) -> Result<(), TestCaseError> {
    let offered: Vec<&str> = request.header_items("sec-websocket-protocol").collect();
    let path_matches = |r: &Route| r.pattern.as_ref().is_none_or(|p| p.is_match(&request.path));
    let well_formed = request.header("host").is_some_and(|h| !h.trim().is_empty())
        && SINGLE_HEADERS.iter().all(|n| request.header_count(n) <= 1);
    let accepted = match accept(request, routes) {
        Err(rejection) => {
            prop_assert!(
                matches!(rejection.status, 400 | 404 | 405 | 426),
                "status {}",
                rejection.status
            );
            prop_assert_eq!(
                rejection.status == 404,
                well_formed && !routes.iter().any(path_matches)
            );
            return Ok(());
        }
        Ok(accepted) => accepted,
    };
    prop_assert!(well_formed);
    prop_assert_eq!(request.method.as_str(), "GET");
    let key = request
        .header("sec-websocket-key")
        .unwrap_or_default()
        .trim();
    prop_assert!(is_valid_key(key));
    prop_assert_eq!(accepted.accept_key.len(), 28);
    prop_assert!(accepted.accept_key.ends_with('='));
    prop_assert!(
        accepted.accept_key[..27]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    );
    let selected = &accepted.selected;
    prop_assert!(selected.route < routes.len());
    let route = &routes[selected.route];
    let captures = route
        .pattern
        .as_ref()
        .map_or(Some(Vec::new()), |p| p.captures(&request.path));
    prop_assert_eq!(captures.as_ref(), Some(&selected.captures));
    match &selected.protocol {
        None => prop_assert!(route.protocols.is_empty()),
        Some(p) => {
            prop_assert!(offered.contains(&p.as_str()), "{p} was not offered");
            prop_assert!(route.protocols.contains(p), "{p} is not the route's");
        }
    }
    let serves = |r: &Route| {
        path_matches(r)
            && (r.protocols.is_empty()
                || offered.iter().any(|o| r.protocols.iter().any(|p| p == o)))
    };
    prop_assert!(
        !routes[..selected.route].iter().any(serves),
        "an earlier route serves it"
    );
    Ok(())
}

fn route(pattern: Option<&str>, protocols: Vec<String>) -> Route {
    Route {
        name: pattern.unwrap_or("*").to_owned(),
        pattern: pattern.map(|p| PathPattern::new(p).expect("a valid pattern")),
        protocols,
        controller: 0,
        filters: Vec::new(),
        limits: std::sync::Arc::default(),
        max_connections: None,
        topic: None,
    }
}

fn routes_for_heads() -> Vec<Route> {
    vec![
        route(Some("/chat/*"), vec!["chat".to_owned()]),
        route(Some("/*"), Vec::new()),
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("GET".to_owned()),
        1 => select(&["POST", "get", "HEAD", "CONNECT", "G ET", ""][..]).prop_map(str::to_owned),
        1 => "[A-Z]{1,10}",
        1 => "\\PC{0,8}",
    ]
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "/chat/[a-z0-9]{0,8}",
        2 => "/[a-z%?#/:.=&]{0,24}",
        1 => "/\\PC{0,16}",
        1 => "(https?|wss?)://[a-z0-9.:@]{0,12}[/?#]?[a-z/?=:#]{0,12}",
        1 => "\\PC{0,24}",
        1 => "[\\x00-\\x7f]{0,24}",
    ]
}

fn header() -> impl Strategy<Value = (String, String)> {
    let name = prop_oneof![
        4 => select(&[
            "Host", "Upgrade", "Connection", "Sec-WebSocket-Version", "Sec-WebSocket-Key",
            "Sec-WebSocket-Protocol", "upgrade", "CONNECTION", "sec-websocket-key",
        ][..]).prop_map(str::to_owned),
        2 => "[A-Za-z0-9-]{1,16}",
        1 => "[!-~]{0,16}",
        1 => "\\PC{0,8}",
    ];
    let value = prop_oneof![
        4 => select(&[
            "websocket", "WebSocket", "Upgrade", "keep-alive, Upgrade", "13", " 13 ", "8",
            KEY, "AAAAAAAAAAAAAAAAAAAAAB==", "chat", "other, chat", " , ,", "",
        ][..]).prop_map(str::to_owned),
        2 => "[ -~]{0,40}",
        1 => "\\PC{0,20}",
        1 => (0..20_000usize).prop_map(|n| "a".repeat(n)),
    ];
    (name, value)
}

fn line_end() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        40 => Just("\r\n"),
        1 => select(&["\n", "\r", "\r\r\n", "", " \r\n", "\r\n "][..]),
    ]
}

const UPGRADE: [(&str, &str); 6] = [
    ("Host", "example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Protocol", "chat"),
];

/// The headers of a valid upgrade, each left out one time in ten, then a few `extra`.
fn upgrade_headers(
    extra: impl Strategy<Value = (String, String)>,
) -> impl Strategy<Value = Vec<(String, String)>> {
    (
        vec(prop::bool::weighted(0.9), UPGRADE.len()),
        vec(extra, 0..4),
    )
        .prop_map(|(kept, extra)| {
            let kept = UPGRADE.iter().zip(kept).filter(|(_, k)| *k);
            kept.map(|(&(n, v), _)| (n.to_owned(), v.to_owned()))
                .chain(extra)
                .collect()
        })
}

/// A valid upgrade request for `/chat/...`, then changed: its method, target and
/// version replaced, headers left out, added and shuffled, odd line ends, a few bytes
/// overwritten, inserted or removed, and bytes sent after the head.
fn mutated_upgrade() -> impl Strategy<Value = Vec<u8>> {
    let version = prop_oneof![
        8 => Just("HTTP/1.1".to_owned()),
        1 => select(&["HTTP/1.0", "HTTP/2.0", "http/1.1", "HTTP/1.1 ", ""][..]).prop_map(str::to_owned),
        1 => "[ -~]{0,10}",
    ];
    let edits = vec((any::<Index>(), any::<u8>(), 0..3u8), 0..4);
    (
        (method(), target(), version),
        upgrade_headers(header()).prop_shuffle(),
        vec(line_end(), UPGRADE.len() + 5),
        prop_oneof![3 => Just(Vec::new()), 1 => edits],
        vec(any::<u8>(), 0..16),
    )
        .prop_map(|((method, target, version), headers, ends, edits, after)| {
            let mut head = format!("{method} {target} {version}{}", ends[0]);
            for ((name, value), end) in headers.iter().zip(&ends[1..]) {
                head.push_str(&format!("{name}: {value}{end}"));
            }
            head.push_str(ends[ends.len() - 1]);
            let mut bytes = head.into_bytes();
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 if i < bytes.len() => drop(bytes.remove(i)),
                    _ => bytes.insert(i, byte),
                }
            }
            bytes.extend(after);
            bytes
        })
}

/// A request as `to_request` would build it, mostly a valid upgrade.
fn request() -> impl Strategy<Value = Request> {
    let header = prop_oneof![
        3 => (
            select(&["upgrade", "connection", "sec-websocket-version", "sec-websocket-key"][..]),
            select(&["websocket", "upgrade", "Upgrade, x", "13", KEY, "bad", ""][..]),
        ).prop_map(|(n, v)| (n.to_owned(), v.to_owned())),
        2 => ("[a-d, ]{0,8}").prop_map(|v| ("sec-websocket-protocol".to_owned(), v)),
        1 => header(),
    ];
    (
        method(),
        "/[ab/]{0,4}",
        "[a-z=&]{0,6}",
        prop_oneof![9 => Just(1), 1 => Just(0)],
        upgrade_headers(header),
    )
        .prop_map(|(method, path, query, minor_version, headers)| Request {
            method,
            path,
            query,
            minor_version,
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect(),
        })
}

fn routes() -> impl Strategy<Value = Vec<Route>> {
    let one = (
        prop::option::of("/[ab*?/]{0,3}"),
        vec(select(&["a", "b", "c"][..]).prop_map(str::to_owned), 0..3),
    )
        .prop_map(|(pattern, protocols)| route(pattern.as_deref(), protocols));
    vec(one, 0..5)
}

proptest! {
    #[test]
    fn read_request_survives_arbitrary_bytes(
        data in vec(any::<u8>(), 0..2048),
        max_head in 0..4096usize,
        sizes in vec(1..64usize, 0..8),
    ) {
        check_read(&data, max_head, sizes)?;
    }

    #[test]
    fn read_request_survives_mutated_upgrades(
        data in mutated_upgrade(),
        max_head in prop_oneof![Just(DEFAULT_MAX_HEAD), 0..2 * DEFAULT_MAX_HEAD],
        sizes in vec(1..64usize, 0..8),
    ) {
        check_read(&data, max_head, sizes)?;
    }

    #[test]
    fn origin_form_targets_split_at_the_first_question_mark(
        path in "/([a-z0-9%#:/.@]|://){0,12}",
        query in prop::option::of("([a-z0-9%#:/.?=&@]|://){0,12}"),
    ) {
        let target = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        check_target(&target, &path, &query.unwrap_or_default())?;
    }

    #[test]
    fn absolute_form_targets_lose_only_scheme_and_authority(
        scheme in "https?|wss?",
        authority in "[a-z0-9.:@]{1,12}",
        path in "(/[a-z0-9%:/.@]{0,12})?",
        query in prop::option::of("[a-z0-9%:/.?=&@]{0,16}"),
    ) {
        let target = format!(
            "{scheme}://{authority}{path}{}",
            query.as_ref().map_or(String::new(), |q| format!("?{q}"))
        );
        let path = if path.is_empty() { "/" } else { path.as_str() };
        check_target(&target, path, &query.unwrap_or_default())?;
    }

    #[test]
    fn normalised_paths_are_canonical(path in "/([a-zA-Z0-9%./~_-]|%2[eE]|%2[fF]|%7[eE]|%41|\\.\\.|//){0,16}") {
        if let Ok(once) = normalize_path(&path) {
            prop_assert!(once.starts_with('/'));
            prop_assert!(!once.contains("//"), "{once}");
            for segment in once.split('/') {
                prop_assert!(segment != "." && segment != "..", "{once}");
            }
            prop_assert_eq!(normalize_path(&once).ok(), Some(once.clone()), "idempotent");
        }
    }

    #[test]
    fn accept_upholds_its_promises(request in request(), routes in routes()) {
        check_accept(&request, &routes)?;
    }
}
