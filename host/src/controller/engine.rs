//! The shared wasmtime engine and the path from a `.wasm` file to a ready-to-instantiate
//! controller: build → read → check it is a component → compile (through wasmtime's
//! on-disk cache) → check it was built against this host's `wshost:controller` version →
//! link against WASI and our host interface → check the exports → one trial
//! instantiation.
//!
//! Each step has its own [`LoadError`] variant so `wshost check` and a failed start say
//! exactly which file failed and why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine, Store};

use super::bindings::{self, ControllerPre};
use super::build_step::{self, BuildError};
use super::component::{InitArgs, Loaded, WIT_PACKAGE, WIT_VERSION, wit_version_mismatch};
use super::store::HostState;
use crate::config::ControllerSpec;
use crate::topics::Hub;

/// How often the engine's epoch advances. A guest call yields to the async runtime at
/// each tick (so a spinning controller never holds a worker thread) and its deadline is
/// checked then.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a controller could not be loaded. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The controller's build command failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The file could not be read.
    #[error("controller `{name}`: cannot read `{}`: {source}", path.display())]
    Read {
        /// Controller name.
        name: String,
        /// The `.wasm` path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component (a core module, or not wasm at all).
    #[error("controller `{name}`: `{}` is not a WebAssembly component: {detail}", path.display())]
    NotComponent {
        /// Controller name.
        name: String,
        /// The `.wasm` path.
        path: PathBuf,
        /// What it is instead, and what to do.
        detail: String,
    },
    /// The component failed validation or compilation.
    #[error("controller `{name}`: `{}` is not a valid component: {detail}", path.display())]
    Compile {
        /// Controller name.
        name: String,
        /// The `.wasm` path.
        path: PathBuf,
        /// The wasm error.
        detail: String,
    },
    /// The component was built against another version of the `wshost:controller`
    /// package than this host implements.
    #[error(
        "controller `{name}`: `{}` was built against {found}; this wshost speaks {expected}",
        path.display()
    )]
    WitVersion {
        /// Controller name.
        name: String,
        /// The `.wasm` path.
        path: PathBuf,
        /// The package version the component names, e.g. `wshost:controller@0.1.0`.
        found: String,
        /// The one this host implements, e.g. `wshost:controller@0.2.0`.
        expected: String,
    },
    /// The component imports something wshost does not provide, or does not export the
    /// `controller` world.
    #[error("controller `{name}`: `{}` does not fit the `wshost:controller/controller` world: {detail}", path.display())]
    World {
        /// Controller name.
        name: String,
        /// The `.wasm` path.
        path: PathBuf,
        /// The linker's complaint.
        detail: String,
    },
    /// Instantiation (or the guest's start function) failed.
    #[error("controller `{name}`: `{}` failed to instantiate: {detail}", path.display())]
    Instantiate {
        /// Controller name.
        name: String,
        /// The `.wasm` path.
        path: PathBuf,
        /// The trap or error.
        detail: String,
    },
    /// The engine itself could not be configured.
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
}

/// The wasm engine and linker shared by every controller.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<HostState>>,
    /// The server's listen address, told to controllers' `init`.
    listen: String,
    /// wasmtime's on-disk cache of compiled code (shared with the engine's config).
    cache: Option<Cache>,
    /// The topics every controller's connections subscribe to.
    pub(crate) hub: Arc<Hub>,
    /// Where controllers count their calls, traps and reloads; `None` counts nothing.
    pub(crate) metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// The compiled-code cache's settings from `WSHOST_CACHE_DIR`; `None` when it is "off".
fn cache_config() -> Option<CacheConfig> {
    let mut cache_config = CacheConfig::new();
    match std::env::var_os("WSHOST_CACHE_DIR") {
        Some(dir) if dir == "off" => return None,
        Some(dir) if !dir.is_empty() => {
            let dir = std::path::PathBuf::from(dir);
            let dir = std::path::absolute(&dir).unwrap_or(dir);
            cache_config.with_directory(dir);
        }
        _ => {}
    }
    Some(cache_config)
}

/// What loading one controller cost, as `wshost check` reports it.
#[derive(Debug, Clone, Copy)]
pub struct LoadCost {
    /// Size of the `.wasm` file.
    pub wasm_bytes: u64,
    /// Compiling (or fetching from the compiled-code cache) and linking.
    pub compile: std::time::Duration,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
    /// Making one instance (what a trap or a reload costs again), `init` included.
    pub instantiate: std::time::Duration,
}

impl Runtime {
    /// Configures the engine (epoch interruption, compilation cache) and the linker
    /// (sandboxed WASI p2 + the `host` interface), and starts the epoch ticker thread.
    pub fn new(listen: String) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // A shared on-disk cache of compiled code: a second start (or `check` then
        // `run`) skips Cranelift. Failing to set it up only costs compile time.
        // `WSHOST_CACHE_DIR` moves it (relative paths are taken from the current
        // directory); `WSHOST_CACHE_DIR=off` turns it off.
        let cache = match cache_config() {
            None => None,
            Some(cache_config) => match Cache::new(cache_config) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "compiled-code cache disabled");
                    None
                }
            },
        };
        config.cache(cache.clone());
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        bindings::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        bindings::add_timers_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        bindings::add_topics_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;

        // The ticker holds only a weak reference, so it ends with the last engine clone.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wshost-epoch".to_owned())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| LoadError::Engine(e.to_string()))?;

        Ok(Self {
            engine,
            linker: Arc::new(linker),
            listen,
            cache,
            hub: Arc::new(Hub::new()),
            metrics: None,
        })
    }

    /// Builds (if the spec has a build command), compiles and links one controller, and
    /// instantiates it once to prove it starts.
    pub(crate) async fn load(&self, spec: &ControllerSpec) -> Result<Loaded, LoadError> {
        self.load_measured(spec).await.map(|(loaded, _)| loaded)
    }

    /// [`Runtime::load`], also saying what the load cost.
    async fn load_measured(&self, spec: &ControllerSpec) -> Result<(Loaded, LoadCost), LoadError> {
        let name: Arc<str> = spec.name.as_str().into();
        if let Some(build) = &spec.build {
            build_step::run(&spec.name, build).await?;
        }
        let bytes = tokio::fs::read(&spec.wasm)
            .await
            .map_err(|source| LoadError::Read {
                name: spec.name.clone(),
                path: spec.wasm.clone(),
                source,
            })?;
        let this = self.clone();
        let path = spec.wasm.clone();
        let controller = spec.name.clone();
        // Compilation is CPU-bound (seconds for large guests): keep it off the runtime.
        let hits = self.cache.as_ref().map_or(0, Cache::cache_hits);
        let wasm_bytes = bytes.len() as u64;
        tracing::info!(
            target: crate::PROGRESS,
            controller = %spec.name,
            bytes = wasm_bytes,
            "compiling"
        );
        let started = std::time::Instant::now();
        let pre = tokio::task::spawn_blocking(move || this.compile(&controller, &path, &bytes))
            .await
            .map_err(|e| LoadError::Engine(format!("compile task failed: {e}")))??;
        let compile = started.elapsed();
        let from_cache = self.cache.as_ref().is_some_and(|c| c.cache_hits() > hits);
        tracing::info!(
            target: crate::PROGRESS,
            controller = %spec.name,
            compile_ms = compile.as_millis() as u64,
            from_cache,
            "compiled"
        );
        let init = InitArgs {
            config: spec.config.clone(),
            listen: self.listen.clone(),
            controller: spec.name.clone(),
            routes: spec.routes.clone(),
        };
        let loaded = Loaded::new(
            name,
            spec.wasm.clone(),
            pre,
            init,
            spec.sandbox.clone(),
            self.hub.clone(),
        )
        .map_err(|e| LoadError::World {
            name: spec.name.clone(),
            path: spec.wasm.clone(),
            detail: format!("{e:#}"),
        })?;
        let started = std::time::Instant::now();
        self.trial_instantiate(&loaded).await?;
        let cost = LoadCost {
            wasm_bytes,
            compile,
            from_cache,
            instantiate: started.elapsed(),
        };
        Ok((loaded, cost))
    }

    /// Everything [`Runtime::load`] does, for `wshost check`: build, compile, link,
    /// check the world, instantiate once; says what each step cost.
    pub async fn check(&self, spec: &ControllerSpec) -> Result<LoadCost, LoadError> {
        self.load_measured(spec).await.map(|(_, cost)| cost)
    }

    fn compile(
        &self,
        name: &str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<ControllerPre<HostState>, LoadError> {
        let err = |detail: String| (name.to_owned(), path.to_owned(), detail);
        if let Some(detail) = not_a_component(bytes) {
            let (name, path, detail) = err(detail);
            return Err(LoadError::NotComponent { name, path, detail });
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            let (name, path, detail) = err(format!("{e:#}"));
            LoadError::Compile { name, path, detail }
        })?;
        // Before linking: a component of another version would fail to link with a less
        // helpful error, or (exporting only unversioned functions and versioned optional
        // interfaces) link and lose those interfaces.
        let ty = component.component_type();
        let names = ty
            .imports(&self.engine)
            .map(|(name, _)| name)
            .chain(ty.exports(&self.engine).map(|(name, _)| name));
        if let Some(found) = wit_version_mismatch(names) {
            return Err(LoadError::WitVersion {
                name: name.to_owned(),
                path: path.to_owned(),
                found,
                expected: format!("{WIT_PACKAGE}@{WIT_VERSION}"),
            });
        }
        let world_error = |e: wasmtime::Error| {
            let (name, path, detail) = err(format!("{e:#}"));
            LoadError::World { name, path, detail }
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(world_error)?;
        ControllerPre::new(pre).map_err(world_error)
    }

    async fn trial_instantiate(&self, loaded: &Loaded) -> Result<(), LoadError> {
        let mut store = self.new_store(loaded.new_state());
        loaded
            .instantiate(&mut store)
            .await
            .map(drop)
            .map_err(|e| LoadError::Instantiate {
                name: loaded.name.to_string(),
                path: loaded.path.clone(),
                detail: format!("{e:#}"),
            })
    }

    /// A store for one instance, with the deadline machinery armed.
    pub(crate) fn new_store(&self, state: HostState) -> Store<HostState> {
        let mut store = Store::new(&self.engine, state);
        // Memories, tables and instances are limited per store, that is per instance.
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| ctx.data().on_epoch_tick());
        store
    }
}

/// Explains why `bytes` is not a component, or `None` if its header says it is one.
fn not_a_component(bytes: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Some("it is not WebAssembly at all (no `\\0asm` header)".to_owned());
    }
    match bytes[4..8] {
        // version 0x0d, layer 1: a component.
        [0x0d, 0x00, 0x01, 0x00] => None,
        [0x01, 0x00, 0x00, 0x00] => Some(
            "it is a core wasm module; build the controller for `wasm32-wasip2` \
             (or wrap the module with `wasm-tools component new`)"
                .to_owned(),
        ),
        _ => Some(format!(
            "unknown wasm version/layer bytes {:02x?}",
            &bytes[4..8]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::not_a_component;

    #[test]
    fn header_tells_components_from_modules_and_junk() {
        assert!(not_a_component(b"\0asm\x0d\0\x01\0rest").is_none());
        assert!(
            not_a_component(b"\0asm\x01\0\0\0")
                .unwrap()
                .contains("core wasm module")
        );
        assert!(
            not_a_component(b"hello world")
                .unwrap()
                .contains("not WebAssembly")
        );
        assert!(not_a_component(b"").unwrap().contains("not WebAssembly"));
    }
}
