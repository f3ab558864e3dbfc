//! A connection's outbound queue: what the controller (and the server) asked to write to
//! one client, bounded in messages and bytes.
//!
//! The controller side never waits: [`OutboundHandle::push`] either queues, applies the
//! slow-client policy (drop the oldest messages, or flag the queue as overflowed so the
//! connection closes itself with 1008), or reports that the connection is gone. Close
//! requests are never dropped and never refused for lack of room. The connection side
//! takes everything queued at once, under one lock per poll of its writer
//! ([`OutboundQueue::poll_refill`]), and then writes what it took one item at a time
//! ([`OutboundQueue::next_taken`]) without locking again. What it took still counts against
//! the bounds until it is written, and what it could not write because the socket was
//! full goes back to the front of the queue, where the `drop-oldest` policy can still
//! drop it: taking in batches changes neither the bounds nor which messages a slow
//! client loses. Payloads are `Bytes`-backed tungstenite messages, so a broadcast queues
//! one shared copy in every queue.
//!
//! A push wakes the connection task, except when the connection task pushes itself (a
//! controller called on the connection's own task replies to it, see
//! [`crate::controller::ControllerHandle::call_inline`]): that task polls its writer before
//! it waits again, and waking it would only poll it once more for nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Waker};

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
    /// Items the connection took (see [`OutboundQueue::poll_refill`]) and has not
    /// reported written yet: they count against the message bound with `items`.
    taken: usize,
    /// Payload bytes of the queued messages, and of the taken ones not reported written.
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
    /// The connection task's id, once it claimed the queue: its own pushes wake nobody.
    owner: Option<tokio::task::Id>,
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
    /// Items taken from the queue in one lock, handed out by [`OutboundQueue::next_taken`].
    taken: VecDeque<Outbound>,
    /// Items handed out since the last lock, and their payload bytes: reported written
    /// (and so no longer counted) under the next lock.
    written: usize,
    written_bytes: usize,
}

/// A taken batch keeps its allocation for the next one up to this many items; a larger
/// one (a burst) is released once written, so a quiet connection holds none.
const KEPT_BATCH_CAPACITY: usize = 16;

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
            taken: 0,
            bytes: 0,
            overflowed: false,
            overflow_taken: false,
            gone: false,
            dropped: 0,
            waker: None,
            owner: None,
        }),
    });
    (
        OutboundHandle {
            shared: shared.clone(),
        },
        OutboundQueue {
            shared,
            taken: VecDeque::new(),
            written: 0,
            written_bytes: 0,
        },
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
                let queued = s.items.len() + s.taken;
                queued == 0 || (queued < bounds.messages && s.bytes + size <= bounds.bytes)
            };
            if !fits(&state) {
                match bounds.policy {
                    SlowClient::Close => {
                        state.overflowed = true;
                        wake_unless_own(&mut state);
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
        wake_unless_own(&mut state);
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

/// Wakes the connection task unless it is the one pushing (see the module docs); its
/// waker then stays registered. Asks for the current task only when there is a waker to
/// wake: a fan-out pushes many messages into queues whose task is already woken.
fn wake_unless_own(state: &mut State) {
    if state.waker.is_none() || (state.owner.is_some() && state.owner == tokio::task::try_id()) {
        return;
    }
    wake(state);
}

impl OutboundQueue {
    /// Marks the calling task as the queue's connection task, which polls the writer
    /// before it waits: what it pushes itself does not wake it (see the module docs).
    pub fn claim(&self) {
        self.shared.lock().owner = tokio::task::try_id();
    }

    /// The writer's one lock per poll. Reports an overflow under the `close` policy
    /// (once; the connection must then close the slow client, and `true` is returned
    /// without taking anything). Otherwise registers the task's waker, so that the next
    /// push (or an overflow, while the task waits on its socket rather than on the
    /// queue) wakes it, and, when nothing taken is left, takes every queued item for
    /// [`OutboundQueue::next_taken`]. Items handed out since the last lock are counted as
    /// written.
    pub fn poll_refill(&mut self, cx: &mut Context<'_>) -> bool {
        let mut state = lock_reporting(&self.shared, &mut self.written, &mut self.written_bytes);
        if state.overflowed && !state.overflow_taken {
            state.overflow_taken = true;
            return true;
        }
        register(&mut state, cx);
        if self.taken.is_empty() && !state.items.is_empty() {
            if self.taken.capacity() > KEPT_BATCH_CAPACITY {
                // The batch before was a burst: the queue gets a fresh buffer rather
                // than holding that one's capacity.
                self.taken = VecDeque::new();
            }
            // The queue gets the writer's empty buffer: neither side allocates.
            std::mem::swap(&mut state.items, &mut self.taken);
            state.taken += self.taken.len();
        }
        false
    }

    /// The next taken item, in push order, without locking; `None` once the batch
    /// taken by [`OutboundQueue::poll_refill`] is all handed out.
    pub fn next_taken(&mut self) -> Option<Outbound> {
        let item = self.taken.pop_front()?;
        self.written += 1;
        if let Outbound::Message(message) = &item {
            self.written_bytes += payload_len(message);
        }
        if self.taken.is_empty() && self.taken.capacity() > KEPT_BATCH_CAPACITY {
            self.taken = VecDeque::new();
        }
        Some(item)
    }

    /// Puts the taken items not handed out back at the front of the queue (the socket
    /// is full, and the `drop-oldest` policy must be able to drop them meanwhile).
    pub fn give_back(&mut self) {
        if self.taken.is_empty() {
            return;
        }
        let mut state = lock_reporting(&self.shared, &mut self.written, &mut self.written_bytes);
        state.taken -= self.taken.len();
        if state.items.is_empty() {
            std::mem::swap(&mut state.items, &mut self.taken);
        } else {
            while let Some(item) = self.taken.pop_back() {
                state.items.push_front(item);
            }
        }
    }

    /// Messages the `drop-oldest` policy dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }
}

/// Locks `shared`, and stops counting the `written` items (`written_bytes` of payload)
/// the connection handed out since its last lock.
fn lock_reporting<'a>(
    shared: &'a Shared,
    written: &mut usize,
    written_bytes: &mut usize,
) -> MutexGuard<'a, State> {
    let mut state = shared.lock();
    state.taken -= std::mem::take(written);
    state.bytes -= std::mem::take(written_bytes);
    state
}

impl Drop for OutboundQueue {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.gone = true;
        state.items.clear();
        state.taken = 0;
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

    fn drain(queue: &mut OutboundQueue) -> Vec<String> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        if queue.poll_refill(&mut cx) {
            out.push("overflow".to_owned());
            assert!(!queue.poll_refill(&mut cx), "reported twice");
        }
        while let Some(next) = queue.next_taken() {
            out.push(show(next));
        }
        out
    }

    fn show(item: Outbound) -> String {
        match item {
            Outbound::Message(m) => m.into_text().unwrap().to_string(),
            Outbound::Close(close) => format!("close {}", close.code),
        }
    }

    #[test]
    fn the_close_policy_flags_an_overflow_and_keeps_what_fit() {
        let (handle, mut queue) = outbound_queue(&limits(2, 1 << 20, SlowClient::Close));
        assert_eq!(handle.push(text("a")), Ok(()));
        assert_eq!(handle.push(text("b")), Ok(()));
        assert_eq!(handle.push(text("c")), Err(QueueError::Full));
        assert_eq!(handle.push(text("d")), Err(QueueError::Full));
        assert_eq!(
            handle.push(Outbound::Close(CloseReason::new(1000, ""))),
            Ok(())
        );
        assert_eq!(drain(&mut queue), ["overflow", "a", "b", "close 1000"]);
    }

    #[test]
    fn the_byte_bound_counts_payloads_but_admits_one_big_message() {
        let (handle, mut queue) = outbound_queue(&limits(100, 4, SlowClient::Close));
        assert_eq!(handle.push(text("too big for the bound")), Ok(()));
        assert_eq!(handle.push(text("x")), Err(QueueError::Full));
        assert_eq!(drain(&mut queue), ["overflow", "too big for the bound"]);
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_every_close() {
        let (handle, mut queue) = outbound_queue(&limits(3, 1 << 20, SlowClient::DropOldest));
        handle.push(text("1")).unwrap();
        handle
            .push(Outbound::Close(CloseReason::new(4000, "")))
            .unwrap();
        for m in ["2", "3", "4"] {
            handle.push(text(m)).unwrap();
        }
        assert_eq!(queue.dropped(), 2);
        assert_eq!(drain(&mut queue), ["close 4000", "3", "4"]);
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

    #[test]
    fn taken_items_count_against_the_bounds_until_written() {
        let (handle, mut queue) = outbound_queue(&limits(2, 1 << 20, SlowClient::Close));
        let mut cx = Context::from_waker(Waker::noop());
        handle.push(text("a")).unwrap();
        handle.push(text("b")).unwrap();
        assert!(!queue.poll_refill(&mut cx));
        // Taken, not written: the queue is still full.
        assert_eq!(handle.push(text("c")), Err(QueueError::Full));
        assert_eq!(drain(&mut queue), ["overflow", "a", "b"]);
    }

    #[test]
    fn written_items_free_their_place_at_the_next_lock() {
        let (handle, mut queue) = outbound_queue(&limits(2, 1 << 20, SlowClient::Close));
        let mut cx = Context::from_waker(Waker::noop());
        handle.push(text("a")).unwrap();
        handle.push(text("b")).unwrap();
        assert!(!queue.poll_refill(&mut cx));
        assert_eq!(queue.next_taken().map(show).as_deref(), Some("a"));
        assert_eq!(queue.next_taken().map(show).as_deref(), Some("b"));
        assert!(!queue.poll_refill(&mut cx));
        handle.push(text("c")).unwrap();
        handle.push(text("d")).unwrap();
        assert_eq!(drain(&mut queue), ["c", "d"]);
    }

    #[test]
    fn items_given_back_go_first_and_drop_oldest_can_drop_them() {
        let (handle, mut queue) = outbound_queue(&limits(2, 1 << 20, SlowClient::DropOldest));
        let mut cx = Context::from_waker(Waker::noop());
        handle.push(text("1")).unwrap();
        handle.push(text("2")).unwrap();
        assert!(!queue.poll_refill(&mut cx));
        assert_eq!(queue.next_taken().map(show).as_deref(), Some("1"));
        // The socket is full: "2" goes back before "3", and "4" drops it.
        queue.give_back();
        handle.push(text("3")).unwrap();
        handle.push(text("4")).unwrap();
        assert_eq!(queue.dropped(), 1);
        assert_eq!(drain(&mut queue), ["3", "4"]);
    }

    /// A waker that counts its wakes.
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_connection_tasks_own_pushes_do_not_wake_it_and_others_do() {
        // A spawned task, as a connection's is (the test's body has no task id).
        tokio::spawn(own_pushes_do_not_wake()).await.unwrap();
    }

    async fn own_pushes_do_not_wake() {
        let (handle, mut queue) = outbound_queue(&limits(8, 1 << 20, SlowClient::Close));
        let wakes = Arc::new(Counter(0.into()));
        let count = |w: &Counter| w.0.load(std::sync::atomic::Ordering::SeqCst);
        let waker = Waker::from(wakes.clone());
        // This task is the connection task.
        queue.claim();
        assert!(!queue.poll_refill(&mut Context::from_waker(&waker)));
        handle.push(text("own")).unwrap();
        assert_eq!(count(&wakes), 0, "its own push woke the connection task");
        // Another task's push wakes it, and its waker stayed registered for that.
        let other = handle.clone();
        tokio::spawn(async move { other.push(text("other")).unwrap() })
            .await
            .unwrap();
        assert_eq!(count(&wakes), 1);
        assert_eq!(drain(&mut queue), ["own", "other"]);
        // Before the queue is claimed, every push wakes.
        let (handle, mut queue) = outbound_queue(&limits(8, 1 << 20, SlowClient::Close));
        assert!(!queue.poll_refill(&mut Context::from_waker(&waker)));
        handle.push(text("unclaimed")).unwrap();
        assert_eq!(count(&wakes), 2);
    }
}
