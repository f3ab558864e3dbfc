//! A hot reload's last step, on the actor between two events: a fresh instance of the
//! new version inherits the connection table and, when both versions support
//! `snapshot`/`restore`, the old instance's state; any failure keeps the old instance.

use std::sync::atomic::Ordering;
use std::time::Duration;

use wasmtime::Store;

use super::super::component::Instance;
use super::super::store::{HostState, end_call, start_call};
use super::{Core, Reload, meter};

impl Core {
    /// Swaps in a new version: a fresh instance of it (initialised by `init` during
    /// instantiation) inherits the connection table and, when both versions support
    /// it, the old instance's state. Any failure keeps the old instance.
    pub(super) async fn swap(&mut self, reload: Reload) {
        let Reload { loaded, started } = reload;
        let carry_state =
            self.instance.state.is_some() && loaded.has_state() && !self.needs_fresh_instance();
        let snapshot: Option<Vec<u8>> = if carry_state {
            start_call(&mut self.store, self.loaded.sandbox.call_deadline);
            let guest = self.instance.state.as_ref().expect("checked");
            let snapshot = guest.call_snapshot(&mut self.store).await;
            end_call(&mut self.store);
            match snapshot {
                Ok(bytes) => Some(bytes),
                Err(error) => {
                    self.count_trap("snapshot");
                    self.broken = true;
                    // The old instance is broken now; the new one starts fresh.
                    tracing::error!(error = %format!("{error:#}"), "snapshot trapped; the new version starts without the old state");
                    None
                }
            }
        } else {
            None
        };

        let mut state = loaded.new_state();
        state.conns = std::mem::take(&mut self.store.data_mut().conns);
        let mut store = self.runtime.new_store(state);
        let outcome = match loaded.instantiate(&mut store).await {
            Ok(instance) => match &snapshot {
                Some(bytes) => restore(&mut store, &instance, bytes, loaded.sandbox.call_deadline)
                    .await
                    .map(|()| instance),
                None => Ok(instance),
            },
            Err(error) => Err(format!("{error:#}")),
        };
        match outcome {
            Ok(instance) => {
                let open = store.data().conns.len();
                self.handshake_hook
                    .store(loaded.has_handshake(), Ordering::Release);
                self.store = store;
                self.instance = instance;
                self.broken = false;
                if loaded.name != self.loaded.name {
                    self.meter = meter(&self.runtime, &loaded.name);
                }
                self.loaded = loaded;
                self.reloaded(true);
                self.observe_instance();
                tracing::info!(
                    open_connections = open,
                    state_bytes = snapshot.as_ref().map_or(0, Vec::len),
                    took_ms = started.elapsed().as_millis() as u64,
                    "reloaded"
                );
            }
            Err(error) => {
                self.store.data_mut().conns = std::mem::take(&mut store.data_mut().conns);
                self.reloaded(false);
                tracing::error!(
                    %error,
                    "reload refused: the new version failed to start; the old version keeps serving"
                );
            }
        }
    }
}

/// Gives a new instance the old one's state.
async fn restore(
    store: &mut Store<HostState>,
    instance: &Instance,
    bytes: &[u8],
    deadline: Duration,
) -> Result<(), String> {
    let Some(guest) = &instance.state else {
        return Ok(());
    };
    start_call(store, deadline);
    let result = guest.call_restore(&mut *store, bytes).await;
    end_call(store);
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(format!("restore refused the state: {why}")),
        Err(trap) => Err(format!("restore trapped: {trap:#}")),
    }
}
