//! The `host` interface as seen by guests: `send`, `close`, `broadcast`,
//! `connections`, `info` and `log` (whose text is escaped: a guest cannot forge a log
//! line); and the `topics` interface, a thin layer over the process's [`Hub`].
//!
//! Every function here runs inside an export call, under the controller's lock (on its
//! actor task, or on a connection task's inline call), so it has the connection table to
//! itself. None of them waits: sends go onto bounded
//! outbound queues with `try_send`, and a full queue triggers the connection's
//! slow-client policy instead of blocking the guest.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

use super::bindings::{
    Host, LogLevel, SendError, TopicsHost, TypesHost, WitConnectionInfo, WitMessage, WitPresence,
    WitTopicError,
};
use super::calls::TOPIC_ATTRIBUTE;
use super::stdio::escape_controls;
use super::store::HostState;
use super::{ConnectionId, Outbound, QueueError};
use crate::request::CloseReason;
use crate::topics::{Hub, TopicError};

/// Longest close reason RFC 6455 allows (125-byte control payload minus the code).
const MAX_CLOSE_REASON: usize = 123;

impl TypesHost for HostState {}

impl Host for HostState {
    fn send(&mut self, conn: ConnectionId, msg: WitMessage) -> Result<(), SendError> {
        let entry = self
            .conns
            .get(&conn)
            .filter(|e| !e.closing)
            .ok_or(SendError::NotOpen)?;
        entry
            .outbound
            .push(Outbound::Message(to_ws(msg)))
            .map_err(|e| match e {
                QueueError::Closed => SendError::NotOpen,
                QueueError::Full => SendError::QueueFull,
            })
    }

    fn close(&mut self, conn: ConnectionId, code: u16, reason: String) {
        let Some(entry) = self.conns.get_mut(&conn).filter(|e| !e.closing) else {
            return;
        };
        let code = if is_sendable_close_code(code) {
            code
        } else {
            tracing::warn!(
                parent: &entry.span,
                controller = %self.name,
                code,
                "controller asked to close with a code a server may not send; using 1000"
            );
            1000
        };
        entry.closing = true;
        self.hub.leave_all(conn);
        let reason = truncate_at_char_boundary(reason, MAX_CLOSE_REASON);
        let _ = entry
            .outbound
            .push(Outbound::Close(CloseReason::new(code, reason)));
    }

    fn broadcast(&mut self, msg: WitMessage, exclude: Option<ConnectionId>) -> u32 {
        // One copy out of guest memory; each queue gets a reference-counted clone.
        let message = to_ws(msg);
        if let Some(topic) = self
            .calling_entry()
            .and_then(|e| e.info.attributes.get(TOPIC_ATTRIBUTE))
        {
            return self.hub.publish(topic, &message, exclude);
        }
        let mut queued = 0;
        for (id, entry) in &self.conns {
            if Some(*id) == exclude || entry.closing {
                continue;
            }
            if entry
                .outbound
                .push(Outbound::Message(message.clone()))
                .is_ok()
            {
                queued += 1;
            }
        }
        queued
    }

    fn connections(&mut self) -> Vec<ConnectionId> {
        self.conns
            .iter()
            .filter(|(_, e)| !e.closing)
            .map(|(id, _)| *id)
            .collect()
    }

    fn connection_count(&mut self) -> u32 {
        let open = self.conns.values().filter(|e| !e.closing).count();
        u32::try_from(open).unwrap_or(u32::MAX)
    }

    fn attribute(&mut self, conn: ConnectionId, name: String) -> Option<String> {
        super::calls::attribute(&self.conns.get(&conn)?.info, &name).map(str::to_owned)
    }

    fn info(&mut self, conn: ConnectionId) -> Option<WitConnectionInfo> {
        let info = &self.conns.get(&conn)?.info;
        Some(WitConnectionInfo {
            id: info.id,
            path: info.path.clone(),
            query: info.query.clone(),
            protocol: info.protocol.clone(),
            remote_addr: info.remote_addr.clone(),
            headers: info.headers.clone(),
            attributes: info.attributes.as_slice().to_vec(),
        })
    }

    fn log(&mut self, level: LogLevel, msg: String) {
        let msg = escape_controls(&msg);
        let controller = &*self.name;
        let emit = || match level {
            LogLevel::Trace => tracing::trace!(controller, "{msg}"),
            LogLevel::Debug => tracing::debug!(controller, "{msg}"),
            LogLevel::Info => tracing::info!(controller, "{msg}"),
            LogLevel::Warn => tracing::warn!(controller, "{msg}"),
            LogLevel::Error => tracing::error!(controller, "{msg}"),
        };
        match self.calling_span() {
            Some(span) => span.in_scope(emit),
            None => emit(),
        }
    }
}

impl TopicsHost for HostState {
    fn subscribe(&mut self, conn: ConnectionId, topic: String) -> Result<(), WitTopicError> {
        let entry = self
            .conns
            .get(&conn)
            .filter(|e| !e.closing)
            .ok_or(WitTopicError::NotOpen)?;
        let user = entry.info.attributes.get("user");
        Hub::subscribe(&self.hub, conn, &entry.outbound, user, &topic).map_err(|e| match e {
            TopicError::InvalidTopic => WitTopicError::InvalidTopic,
            TopicError::TooManyTopics => WitTopicError::TooManyTopics,
        })
    }

    fn unsubscribe(&mut self, conn: ConnectionId, topic: String) -> bool {
        // Only this controller's connections: ids are not capabilities across controllers.
        self.conns.contains_key(&conn) && self.hub.unsubscribe(conn, &topic)
    }

    fn subscriptions(&mut self, conn: ConnectionId) -> Vec<String> {
        if !self.conns.contains_key(&conn) {
            return Vec::new();
        }
        self.hub.subscriptions(conn)
    }

    fn publish(&mut self, topic: String, msg: WitMessage, exclude: Option<ConnectionId>) -> u32 {
        self.hub.publish(&topic, &to_ws(msg), exclude)
    }

    fn presence(&mut self, topic: String) -> WitPresence {
        let presence = self.hub.presence(&topic);
        WitPresence {
            connections: presence.connections,
            users: presence.users,
        }
    }
}

/// Converts a guest message without copying its bytes again.
fn to_ws(msg: WitMessage) -> Message {
    match msg {
        WitMessage::Text(text) => Message::Text(text.into()),
        WitMessage::Binary(data) => Message::Binary(Bytes::from(data)),
    }
}

/// Close codes an endpoint may put on the wire (RFC 6455 §7.4, IANA registry).
fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn truncate_at_char_boundary(mut s: String, max: usize) -> String {
    if s.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wire_codes_are_sendable() {
        for ok in [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(is_sendable_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000] {
            assert!(!is_sendable_close_code(bad), "{bad}");
        }
    }

    #[test]
    fn a_guest_message_becomes_a_frame_payload_without_a_copy() {
        // As wasmtime lifts them (exact capacity), and with spare capacity.
        let text = String::from("hello, world");
        let at = text.as_ptr();
        let Message::Text(text) = to_ws(WitMessage::Text(text)) else {
            panic!("not text");
        };
        assert_eq!(text.as_str().as_ptr(), at, "the text was copied");

        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(b"\x00\x01\x02");
        let at = data.as_ptr();
        let Message::Binary(data) = to_ws(WitMessage::Binary(data)) else {
            panic!("not binary");
        };
        assert_eq!(data.as_ptr(), at, "the bytes were copied");
    }

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        assert_eq!(truncate_at_char_boundary("short".into(), 123), "short");
        let long = "é".repeat(100); // 200 bytes
        let cut = truncate_at_char_boundary(long, 123);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
