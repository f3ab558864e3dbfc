//! The controller actor: one task per controller that takes events from the controller's
//! queue one at a time, fires its timers, and replaces a broken instance, each under the
//! controller's lock (see [`super::calls`] for what happens under it).
//!
//! The actor is no longer the only task that calls the guest: a connection task calls
//! `on-message` itself when the controller is free ([`ControllerHandle::call_inline`]).
//! Such a call may set a timer due before the actor's sleep ends, or break the instance;
//! it then wakes the actor ([`Shared::wake`]), which looks again.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use tokio::sync::{Mutex, Notify, mpsc};
use tracing::Instrument;

use super::calls::Core;
use super::component::Loaded;
use super::engine::Runtime;
use super::{Budget, ControllerHandle, Event};

/// What the actor shares with the controller's handles.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The instance and its store, held across each call; set once the first instance
    /// started.
    pub(crate) core: OnceLock<Mutex<Core>>,
    /// Tells the actor to look at the core again (a timer moved earlier, or the instance
    /// broke) before its sleep ends.
    pub(crate) wake: Notify,
}

/// Starts the actor of a loaded controller and returns the handle connections use.
pub(crate) fn spawn(runtime: Runtime, loaded: Loaded) -> ControllerHandle {
    let (tx, rx) = mpsc::channel(loaded.sandbox.inbound_messages);
    let budget = Budget::new(
        loaded.sandbox.inbound_messages,
        loaded.sandbox.inbound_bytes,
    );
    let name = loaded.name.clone();
    let handshake_hook = Arc::new(AtomicBool::new(loaded.has_handshake()));
    let span = tracing::info_span!("controller", controller = %name);
    let shared = Arc::new(Shared {
        core: OnceLock::new(),
        wake: Notify::new(),
    });
    let hook = handshake_hook.clone();
    let actor = shared.clone();
    tokio::spawn(async move {
        let core = Core::start(runtime, loaded, hook, span.clone())
            .instrument(span)
            .await;
        let core = actor.core.get_or_init(|| Mutex::new(core));
        run(core, &actor.wake, rx).await;
    });
    ControllerHandle {
        name,
        events: tx,
        budget,
        handshake_hook,
        shared,
    }
}

/// The actor's loop: until the queue closes (every handle is gone).
async fn run(core: &Mutex<Core>, wake: &Notify, mut rx: mpsc::Receiver<Event>) {
    let (span, mut next_timer) = {
        let mut core = core.lock().await;
        (core.span().clone(), core.next_timer())
    };
    loop {
        tokio::select! {
            biased;
            () = crate::deadline::sleep_until(next_timer), if next_timer.is_some() => {
                let mut core = core.lock().await;
                async {
                    core.ensure_instance().await;
                    core.fire_due_timers().await;
                    core.ensure_instance().await;
                }
                .instrument(span.clone())
                .await;
                next_timer = core.next_timer();
            }
            () = wake.notified() => {
                let mut core = core.lock().await;
                core.ensure_instance().instrument(span.clone()).await;
                next_timer = core.next_timer();
            }
            event = rx.recv() => {
                let Some(event) = event else { break };
                let mut core = core.lock().await;
                if matches!(event, Event::Message { .. }) {
                    core.handle(event).await;
                    core.ensure_instance().instrument(span.clone()).await;
                } else {
                    async {
                        core.handle(event).await;
                        core.ensure_instance().await;
                    }
                    .instrument(span.clone())
                    .await;
                }
                next_timer = core.next_timer();
            }
        }
    }
    span.in_scope(|| tracing::debug!("controller queue closed; actor ends"));
}
