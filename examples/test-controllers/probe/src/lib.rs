//! A test-only controller that shows the host's view through text commands, so the
//! integration tests can check what a guest sees. Not an example to copy.
//!
//! On open it sends `open {id}`. Commands (text): `panic`; `info`; `info-json` (the
//! connection info as a JSON object; `attributes` as an object); `connections`;
//! `close {code} {reason}`; `count` (messages this instance handled); `log {msg}` (host
//! log + stdout + stderr, replies `logged`); `broadcast {msg}` (on a route with a `topic`,
//! the host publishes it to the connection's topic); `busy {ms}` (tells the other
//! connections `busy`, keeps the instance busy for `ms` milliseconds of spinning, then
//! replies `busy done`). Anything else is echoed. On close it
//! broadcasts `closed {id} {code} {reason}` to the connections left (on a route with a
//! `topic`: to the topic's other subscribers).
//!
//! Topic commands, where TOPIC is the rest of the line (spaces included) unless a MSG
//! follows it:
//! - `sub TOPIC`: replies `subscribed TOPIC`, or `error {topic-error}` in kebab case
//!   (`error invalid-topic`, `error not-open`, `error too-many-topics`);
//! - `unsub TOPIC`: replies `unsubscribed true` or `unsubscribed false`;
//! - `subs`: replies the connection's topics joined by `,` (empty when none);
//! - `pub TOPIC MSG`: publishes text MSG to TOPIC (no space in TOPIC here), excluding
//!   nobody, then replies `published {n}` (n: this node's connections it was queued
//!   for, the sender included when it is a subscriber, in which case MSG reaches it
//!   before the reply);
//! - `pubx TOPIC MSG`: the same, excluding the sender;
//! - `presence TOPIC`: replies `presence {connections} {users joined by ,}`.
//!
//! Built with feature `hook`, it also exports the handshake hook, which shows what the
//! hook is given: it adds the attributes `hook.query` (the request's query) and
//! `hook.headers` (its headers as a JSON array of pairs). A query holding
//! `refuse-header=VALUE` (percent-decoded) makes it refuse the request with 403 and a
//! header `x-probe: VALUE`, whatever VALUE holds.

use std::sync::atomic::{AtomicU64, Ordering};

use wshost_guest::{
    Connection, Controller, LogLevel, Message, TopicError, broadcast_text, connections, log,
    presence, publish_text,
};

/// Messages this instance has handled; starts over in a fresh instance.
static COUNT: AtomicU64 = AtomicU64::new(0);

struct Probe;

fn info_text(conn: Connection) -> String {
    let Some(info) = conn.info() else {
        return "no info".to_owned();
    };
    let mut lines = vec![
        format!("id={}", info.id),
        format!("path={}", info.path),
        format!("query={}", info.query),
        format!("protocol={}", info.protocol.as_deref().unwrap_or("-")),
        format!("remote={}", info.remote_addr),
    ];
    lines.extend(info.attributes.iter().map(|(k, v)| format!("attr.{k}={v}")));
    lines.extend(info.headers.iter().map(|(k, v)| format!("header.{k}={v}")));
    lines.join("\n")
}

fn info_json(conn: Connection) -> String {
    let Some(info) = conn.info() else {
        return "null".to_owned();
    };
    let attributes: serde_json::Map<String, serde_json::Value> = info
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    serde_json::json!({
        "id": info.id,
        "path": info.path,
        "query": info.query,
        "protocol": info.protocol,
        "remote_addr": info.remote_addr,
        "headers": info.headers,
        "attributes": attributes,
    })
    .to_string()
}

/// The kebab-case WIT name of a topic error, as the probe replies it.
fn topic_error(error: TopicError) -> &'static str {
    match error {
        TopicError::InvalidTopic => "invalid-topic",
        TopicError::NotOpen => "not-open",
        TopicError::TooManyTopics => "too-many-topics",
    }
}

/// Runs a topic command; `false` if `command` is not one.
fn topic_command(conn: Connection, command: &str, rest: &str) -> bool {
    let reply = match command {
        "sub" => match conn.subscribe(rest) {
            Ok(()) => format!("subscribed {rest}"),
            Err(e) => format!("error {}", topic_error(e)),
        },
        "unsub" => format!("unsubscribed {}", conn.unsubscribe(rest)),
        "subs" => conn.subscriptions().join(","),
        "pub" | "pubx" => {
            let (topic, msg) = rest.split_once(' ').unwrap_or((rest, ""));
            let exclude = (command == "pubx").then_some(conn);
            format!("published {}", publish_text(topic, msg, exclude))
        }
        "presence" => {
            let presence = presence(rest);
            format!(
                "presence {} {}",
                presence.connections,
                presence.users.join(",")
            )
        }
        _ => return false,
    };
    let _ = conn.send_text(&reply);
    true
}

impl Controller for Probe {
    fn on_open(conn: Connection) {
        let _ = conn.send_text(&format!("open {}", conn.id()));
    }

    fn on_message(conn: Connection, msg: Message) {
        let count = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        let text = match &msg {
            Message::Text(text) => text.as_str(),
            Message::Binary(_) => "",
        };
        let (command, rest) = text.split_once(' ').unwrap_or((text, ""));
        match command {
            "panic" => panic!("probe asked to panic"),
            "info" => {
                let _ = conn.send_text(&info_text(conn));
            }
            "info-json" => {
                let _ = conn.send_text(&info_json(conn));
            }
            "connections" => {
                let ids: Vec<String> = connections().iter().map(|c| c.id().to_string()).collect();
                let _ = conn.send_text(&ids.join(","));
            }
            "close" => {
                let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                conn.close(code.parse().unwrap_or(1000), reason);
            }
            "count" => {
                let _ = conn.send_text(&count.to_string());
            }
            "log" => {
                log(LogLevel::Info, rest);
                println!("stdout {rest}");
                eprintln!("stderr {rest}");
                let _ = conn.send_text("logged");
            }
            "broadcast" => {
                broadcast_text(rest, None);
            }
            "busy" => {
                broadcast_text("busy", Some(conn));
                let busy = std::time::Duration::from_millis(rest.parse().unwrap_or(0));
                let started = std::time::Instant::now();
                while started.elapsed() < busy {
                    std::hint::spin_loop();
                }
                let _ = conn.send_text("busy done");
            }
            _ => {
                if !topic_command(conn, command, rest) {
                    let _ = conn.send(&msg);
                }
            }
        }
    }

    fn on_close(conn: Connection, code: u16, reason: String) {
        broadcast_text(&format!("closed {} {code} {reason}", conn.id()), None);
    }

    fn on_error(conn: Connection, error: String) {
        log(
            LogLevel::Warn,
            &format!("connection {}: {error}", conn.id()),
        );
    }
}

#[cfg(feature = "hook")]
impl wshost_guest::Handshake for Probe {
    fn on_handshake(
        request: wshost_guest::HandshakeRequest,
    ) -> Result<Vec<(String, String)>, wshost_guest::HandshakeResponse> {
        let refuse = request
            .query
            .split('&')
            .find_map(|pair| pair.strip_prefix("refuse-header="));
        if let Some(value) = refuse {
            let mut response = wshost_guest::HandshakeResponse::new(403, "refused by the probe");
            response
                .headers
                .push(("x-probe".to_owned(), percent_decode(value)));
            return Err(response);
        }
        Ok(vec![
            ("hook.query".to_owned(), request.query.clone()),
            (
                "hook.headers".to_owned(),
                serde_json::to_string(&request.headers).unwrap_or_default(),
            ),
        ])
    }
}

#[cfg(feature = "hook")]
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(not(feature = "hook"))]
wshost_guest::export!(Probe);
#[cfg(feature = "hook")]
wshost_guest::export!(Probe, handshake);
