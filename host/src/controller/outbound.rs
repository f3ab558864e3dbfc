//! A connection's outbound queue: what the controller (and the server) asked to write to
//! one client, bounded in messages and bytes.
//!
//! The controller side never waits: [`OutboundHandle::push`] either queues, applies the
//! slow-client policy (drop the oldest messages, or flag the queue as overflowed so the
//! connection closes itself with 1008), or reports that the connection is gone. Close
//! requests are never dropped and never refused for lack of room. The connection side
//! polls [`OutboundQueue::poll_next`] from its own task; payloads are `Bytes`-backed
//! tungstenite messages, so a broadcast queues one shared copy in every queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio_tungstenite::tungstenite::Message;

use crate::limits::{Limits, SlowClient};
use crate::request::CloseReason;

/// What a controller asks a connection task to do.
#[derive(Debug)]
pub enum Outbound {
    /// Write a data message.
    Message(Message),
    /// Start the closing handshake.
    Close(CloseReason),
}

/// Why an outbound item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The connection task is gone.
    Closed,
    /// The queue is full; the connection was told to apply its overflow policy.
    Full,
}

/// The bounds and policy of one queue.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    messages: usize,
    bytes: usize,
    policy: SlowClient,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Outbound>,
    /// Payload bytes of the queued messages.
    bytes: usize,
    /// Set by a push that did not fit under the `close` policy.
    overflowed: bool,
    /// Set once [`OutboundQueue::poll_overflow`] reported the overflow.
    overflow_taken: bool,
    /// The connection task dropped its end.
    gone: bool,
    /// Messages dropped by the `drop-oldest` policy.
    dropped: u64,
    /// The connection task, waiting for an item.
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Shared {
    bounds: Bounds,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The controller's end of a connection's outbound queue (cheap to clone).
#[derive(Debug, Clone)]
pub struct OutboundHandle {
    shared: Arc<Shared>,
}

/// The connection's end of its outbound queue.
#[derive(Debug)]
pub struct OutboundQueue {
    shared: Arc<Shared>,
}

/// Makes a connection's outbound queue with the bounds and policy of `limits`.
pub fn outbound_queue(limits: &Limits) -> (OutboundHandle, OutboundQueue) {
    let shared = Arc::new(Shared {
        bounds: Bounds {
            messages: limits.outbound_messages,
            bytes: limits.outbound_bytes,
            policy: limits.slow_client,
        },
        state: Mutex::new(State {
            items: VecDeque::new(),
            bytes: 0,
            overflowed: false,
            overflow_taken: false,
            gone: false,
            dropped: 0,
            waker: None,
        }),
    });
    (
        OutboundHandle {
            shared: shared.clone(),
        },
        OutboundQueue { shared },
    )
}

/// Payload bytes of a message (what the byte bound counts).
fn payload_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
        Message::Close(_) | Message::Frame(_) => 0,
    }
}

impl OutboundHandle {
    /// Queues `item` without waiting (see the module docs for a full queue).
    pub fn push(&self, item: Outbound) -> Result<(), QueueError> {
        let bounds = self.shared.bounds;
        let mut state = self.shared.lock();
        if state.gone {
            return Err(QueueError::Closed);
        }
        if let Outbound::Message(message) = &item {
            if state.overflowed {
                return Err(QueueError::Full);
            }
            let size = payload_len(message);
            let fits = |s: &State| {
                s.items.is_empty()
                    || (s.items.len() < bounds.messages && s.bytes + size <= bounds.bytes)
            };
            if !fits(&state) {
                match bounds.policy {
                    SlowClient::Close => {
                        state.overflowed = true;
                        wake(&mut state);
                        return Err(QueueError::Full);
                    }
                    SlowClient::DropOldest => {
                        while !fits(&state) {
                            let Some(at) = state
                                .items
                                .iter()
                                .position(|i| matches!(i, Outbound::Message(_)))
                            else {
                                break;
                            };
                            if let Some(Outbound::Message(old)) = state.items.remove(at) {
                                state.bytes -= payload_len(&old);
                                state.dropped += 1;
                            }
                        }
                    }
                }
            }
            state.bytes += size;
        }
        state.items.push_back(item);
        wake(&mut state);
        Ok(())
    }

    /// Messages the `drop-oldest` policy dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }
}

fn register(state: &mut State, cx: &Context<'_>) {
    if !state
        .waker
        .as_ref()
        .is_some_and(|w| w.will_wake(cx.waker()))
    {
        state.waker = Some(cx.waker().clone());
    }
}

fn wake(state: &mut State) {
    if let Some(waker) = state.waker.take() {
        waker.wake();
    }
}

impl OutboundQueue {
    /// The next item, in push order, or `Pending` (with the task's waker kept) while
    /// there is none. Overflows are reported by [`OutboundQueue::poll_overflow`].
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Outbound> {
        let mut state = self.shared.lock();
        match state.items.pop_front() {
            Some(item) => {
                if let Outbound::Message(message) = &item {
                    state.bytes -= payload_len(message);
                }
                Poll::Ready(item)
            }
            None => {
                register(&mut state, cx);
                Poll::Pending
            }
        }
    }

    /// Whether the queue overflowed under the `close` policy (reported once): the
    /// connection must close the slow client. Registers the task's waker either way, so
    /// that an overflow wakes a connection that is waiting on its socket rather than on
    /// the queue.
    pub fn poll_overflow(&self, cx: &mut Context<'_>) -> bool {
        let mut state = self.shared.lock();
        if state.overflowed && !state.overflow_taken {
            state.overflow_taken = true;
            return true;
        }
        register(&mut state, cx);
        false
    }

    /// Messages the `drop-oldest` policy dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }
}

impl Drop for OutboundQueue {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.gone = true;
        state.items.clear();
        state.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn limits(messages: usize, bytes: usize, policy: SlowClient) -> Limits {
        Limits {
            outbound_messages: messages,
            outbound_bytes: bytes,
            slow_client: policy,
            ..Limits::default()
        }
    }

    fn text(s: &str) -> Outbound {
        Outbound::Message(Message::text(s))
    }

    fn drain(queue: &OutboundQueue) -> Vec<String> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        if queue.poll_overflow(&mut cx) {
            out.push("overflow".to_owned());
        }
        while let Poll::Ready(next) = queue.poll_next(&mut cx) {
            out.push(match next {
                Outbound::Message(m) => m.into_text().unwrap().to_string(),
                Outbound::Close(close) => format!("close {}", close.code),
            });
        }
        out
    }

    #[test]
    fn the_close_policy_flags_an_overflow_and_keeps_what_fit() {
        let (handle, queue) = outbound_queue(&limits(2, 1 << 20, SlowClient::Close));
        assert_eq!(handle.push(text("a")), Ok(()));
        assert_eq!(handle.push(text("b")), Ok(()));
        assert_eq!(handle.push(text("c")), Err(QueueError::Full));
        assert_eq!(handle.push(text("d")), Err(QueueError::Full));
        assert_eq!(
            handle.push(Outbound::Close(CloseReason::new(1000, ""))),
            Ok(())
        );
        assert_eq!(drain(&queue), ["overflow", "a", "b", "close 1000"]);
    }

    #[test]
    fn the_byte_bound_counts_payloads_but_admits_one_big_message() {
        let (handle, queue) = outbound_queue(&limits(100, 4, SlowClient::Close));
        assert_eq!(handle.push(text("too big for the bound")), Ok(()));
        assert_eq!(handle.push(text("x")), Err(QueueError::Full));
        assert_eq!(drain(&queue), ["overflow", "too big for the bound"]);
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_every_close() {
        let (handle, queue) = outbound_queue(&limits(3, 1 << 20, SlowClient::DropOldest));
        handle.push(text("1")).unwrap();
        handle
            .push(Outbound::Close(CloseReason::new(4000, "")))
            .unwrap();
        for m in ["2", "3", "4"] {
            handle.push(text(m)).unwrap();
        }
        assert_eq!(queue.dropped(), 2);
        assert_eq!(drain(&queue), ["close 4000", "3", "4"]);
    }

    #[test]
    fn a_dropped_receiver_refuses_everything() {
        let (handle, queue) = outbound_queue(&Limits::default());
        drop(queue);
        assert_eq!(handle.push(text("late")), Err(QueueError::Closed));
        assert_eq!(
            handle.push(Outbound::Close(CloseReason::new(1000, ""))),
            Err(QueueError::Closed)
        );
    }
}
