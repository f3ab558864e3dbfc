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
use crate::topics::Hub;

/// The WIT package this host implements, `wshost:controller`, and its version. A
/// component built against any other version is refused at load (see
/// [`wit_version_mismatch`]).
pub(crate) const WIT_PACKAGE: &str = "wshost:controller";
pub(crate) const WIT_VERSION: &str = "0.2.0";

/// Export names of the optional interfaces.
const HANDSHAKE: &str = "wshost:controller/handshake@0.2.0";
const LIFECYCLE: &str = "wshost:controller/lifecycle@0.2.0";
const TIMER_HANDLER: &str = "wshost:controller/timer-handler@0.2.0";
const STATE: &str = "wshost:controller/state@0.2.0";

/// What `init` receives (lent to the call as the bindings' borrowing `ServerParams`).
#[derive(Debug, Clone, Default)]
pub(crate) struct InitArgs {
    pub(crate) config: Vec<(String, String)>,
    /// `server-params.listen`.
    pub(crate) listen: String,
    /// `server-params.controller`.
    pub(crate) controller: String,
    /// `server-params.routes`.
    pub(crate) routes: Vec<(String, String)>,
}

/// String pairs as the bindings lend them to a call.
pub(crate) fn pairs(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

/// A controller compiled and linked, ready to instantiate.
pub(crate) struct Loaded {
    pub(crate) name: Arc<str>,
    pub(crate) path: PathBuf,
    pub(crate) pre: ControllerPre<HostState>,
    pub(crate) init: InitArgs,
    /// Deadline, memory cap and queue sizes for its instances.
    pub(crate) sandbox: Sandbox,
    /// The process's topics.
    hub: Arc<Hub>,
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
        hub: Arc<Hub>,
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
            hub,
            optional,
        })
    }

    /// Fresh store data for an instance of this controller (its sandbox limits applied).
    pub(crate) fn new_state(&self) -> HostState {
        HostState::new(self.name.clone(), &self.sandbox, self.hub.clone())
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
            let init = &self.init;
            let routes = pairs(&init.routes);
            let params = ServerParams {
                listen: &init.listen,
                version: env!("CARGO_PKG_VERSION"),
                controller: &init.controller,
                routes: &routes,
            };
            start_call(store, self.sandbox.call_deadline);
            let result = lifecycle
                .call_init(&mut *store, &pairs(&init.config), params)
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

/// The first `wshost:controller` package version other than [`WIT_VERSION`] among
/// `names` (a component's import and export names), spelled `wshost:controller@0.1.0`;
/// `None` when every name of the package carries the host's version.
///
/// Names look like `wshost:controller/handshake@0.2.0`. Optional exports are looked up
/// by their exact name, so a component built against another version would otherwise
/// load and silently lose them (a handshake hook that checks authentication, say).
pub(crate) fn wit_version_mismatch<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    names.into_iter().find_map(|name| {
        let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
        let version = rest.split_once('@').map_or("", |(_, v)| v);
        (version != WIT_VERSION).then(|| {
            if version.is_empty() {
                format!("{WIT_PACKAGE} without a version")
            } else {
                format!("{WIT_PACKAGE}@{version}")
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_optional_exports_carry_the_host_version() {
        for name in [HANDSHAKE, LIFECYCLE, TIMER_HANDLER, STATE] {
            assert_eq!(wit_version_mismatch([name]), None, "{name}");
        }
    }

    #[test]
    fn another_version_of_the_package_is_found() {
        let names = [
            "wasi:cli/stdout@0.2.6",
            "wshost:controller/host@0.2.0",
            "on-open",
            "wshost:controller/handshake@0.1.0",
        ];
        assert_eq!(
            wit_version_mismatch(names),
            Some("wshost:controller@0.1.0".to_owned())
        );
        assert_eq!(
            wit_version_mismatch(["wshost:controller/host@0.3.0-rc1"]),
            Some("wshost:controller@0.3.0-rc1".to_owned())
        );
        assert_eq!(
            wit_version_mismatch(["wshost:controller/host"]),
            Some("wshost:controller without a version".to_owned())
        );
        // Other packages, even with a similar name, are not ours to judge.
        assert_eq!(
            wit_version_mismatch(["wshost:controllers/x@9.0.0", "acme:controller/host@0.1.0"]),
            None
        );
    }
}
