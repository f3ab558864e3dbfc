//! A loaded controller component and its live instances: which optional capabilities the
//! component exports (handshake, lifecycle, timers, state), and instantiation, which runs
//! `init` when the component has it.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::{
    Controller, ControllerPre, HandshakeGuest, HandshakeIndices, LifecycleGuest, LifecycleIndices,
    ServerParams, StateGuest, StateIndices, TimerGuest, TimerIndices,
};
use super::store::{HostState, end_call, start_call};
use crate::limits::Sandbox;

/// Export names of the optional interfaces.
const HANDSHAKE: &str = "wshost:controller/handshake@0.1.0";
const LIFECYCLE: &str = "wshost:controller/lifecycle@0.1.0";
const TIMER_HANDLER: &str = "wshost:controller/timer-handler@0.1.0";
const STATE: &str = "wshost:controller/state@0.1.0";

/// What `init` receives.
#[derive(Debug, Clone, Default)]
pub(crate) struct InitArgs {
    pub(crate) config: Vec<(String, String)>,
    pub(crate) params: ServerParams,
}

impl Default for ServerParams {
    fn default() -> Self {
        Self {
            listen: String::new(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            controller: String::new(),
            routes: Vec::new(),
        }
    }
}

/// A controller compiled and linked, ready to instantiate.
pub(crate) struct Loaded {
    pub(crate) name: Arc<str>,
    pub(crate) path: PathBuf,
    pub(crate) pre: ControllerPre<HostState>,
    pub(crate) init: InitArgs,
    /// Deadline, memory cap and queue sizes for its instances.
    pub(crate) sandbox: Sandbox,
    optional: Optional,
}

/// The optional exports a component has.
struct Optional {
    handshake: Option<HandshakeIndices>,
    lifecycle: Option<LifecycleIndices>,
    timer: Option<TimerIndices>,
    state: Option<StateIndices>,
}

/// One live instance: the world's exports and the optional ones it has.
pub(crate) struct Instance {
    pub(crate) controller: Controller,
    pub(crate) handshake: Option<HandshakeGuest>,
    pub(crate) lifecycle: Option<LifecycleGuest>,
    pub(crate) timer: Option<TimerGuest>,
    pub(crate) state: Option<StateGuest>,
}

impl Loaded {
    /// Finds the optional exports of a linked component. An optional export that is
    /// present with the wrong shape is an error, like any world mismatch.
    pub(crate) fn new(
        name: Arc<str>,
        path: PathBuf,
        pre: ControllerPre<HostState>,
        init: InitArgs,
        sandbox: Sandbox,
    ) -> wasmtime::Result<Self> {
        let ip = pre.instance_pre();
        let optional = Optional {
            handshake: optional(ip, HANDSHAKE, HandshakeIndices::new)?,
            lifecycle: optional(ip, LIFECYCLE, LifecycleIndices::new)?,
            timer: optional(ip, TIMER_HANDLER, TimerIndices::new)?,
            state: optional(ip, STATE, StateIndices::new)?,
        };
        Ok(Self {
            name,
            path,
            pre,
            init,
            sandbox,
            optional,
        })
    }

    /// Fresh store data for an instance of this controller (its memory cap applied).
    pub(crate) fn new_state(&self) -> HostState {
        HostState::new(self.name.clone(), self.sandbox.memory_bytes)
    }

    pub(crate) fn has_handshake(&self) -> bool {
        self.optional.handshake.is_some()
    }

    pub(crate) fn has_state(&self) -> bool {
        self.optional.state.is_some()
    }

    /// Instantiates into `store`, resolves the optional exports, and runs `init`.
    pub(crate) async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Instance> {
        let instance = self
            .pre
            .instance_pre()
            .instantiate_async(&mut *store)
            .await?;
        let o = &self.optional;
        let instance = Instance {
            controller: Controller::new(&mut *store, &instance)?,
            handshake: o
                .handshake
                .as_ref()
                .map(|i| i.load(&mut *store, &instance))
                .transpose()?,
            lifecycle: o
                .lifecycle
                .as_ref()
                .map(|i| i.load(&mut *store, &instance))
                .transpose()?,
            timer: o
                .timer
                .as_ref()
                .map(|i| i.load(&mut *store, &instance))
                .transpose()?,
            state: o
                .state
                .as_ref()
                .map(|i| i.load(&mut *store, &instance))
                .transpose()?,
        };
        if let Some(lifecycle) = &instance.lifecycle {
            start_call(store, self.sandbox.call_deadline);
            let result = lifecycle
                .call_init(&mut *store, &self.init.config, &self.init.params)
                .await;
            end_call(store);
            if let Err(why) = result? {
                wasmtime::bail!("init refused to start: {why}");
            }
        }
        Ok(instance)
    }
}

fn optional<T>(
    pre: &InstancePre<HostState>,
    export: &str,
    indices: impl FnOnce(&InstancePre<HostState>) -> wasmtime::Result<T>,
) -> wasmtime::Result<Option<T>> {
    if pre.component().get_export_index(None, export).is_some() {
        indices(pre).map(Some)
    } else {
        Ok(None)
    }
}
