//! Hot reload: watch every controller's `.wasm` and swap a changed file in without
//! touching a single connection; and the development loop of `run --watch`, which
//! rebuilds a controller when its sources change.
//!
//! A changed file is compiled, linked and trial-instantiated off the actor, as a start
//! would. Only a version that passes all of that is handed to the actor, behind the
//! events already queued: those go to the old instance, in order, and the next event goes
//! to the new one, which inherits the connection table. A file that fails any step is
//! refused with the wasm error in the log, and the old version keeps serving.

use tokio::time::Instant;
use tracing::Instrument;

use super::build_step;
use super::engine::{LoadError, Runtime};
use super::{ControllerHandle, Prepared};
use crate::config::ControllerSpec;
use crate::watch::{self, Target, Watch};

/// Keeps the file watcher alive; dropping it stops hot reload.
pub struct ReloadWatcher {
    _watch: Watch,
}

/// Starts watching the `.wasm` of every controller in `specs` (parallel to `handles`).
pub fn watch(
    runtime: Runtime,
    specs: Vec<ControllerSpec>,
    handles: Vec<ControllerHandle>,
) -> Result<ReloadWatcher, notify::Error> {
    let targets = specs.iter().map(|s| Target::File(s.wasm.clone())).collect();
    let (watch, mut changed) = watch::watch(targets)?;
    tokio::spawn(async move {
        while let Some(i) = changed.recv().await {
            let span = tracing::info_span!("reload", controller = %specs[i].name);
            let spec = ControllerSpec {
                // Build commands belong to `--watch` (sources changed); here the file
                // itself did.
                build: None,
                ..specs[i].clone()
            };
            if let Err(error) = reload_in_place(&runtime, &spec, &handles[i])
                .instrument(span.clone())
                .await
            {
                span.in_scope(|| {
                    tracing::error!(%error, "reload refused; the old version keeps serving");
                });
                if let Some(metrics) = &runtime.metrics {
                    metrics.reloaded(&spec.name, false);
                }
            }
        }
    });
    Ok(ReloadWatcher { _watch: watch })
}

/// Keeps the source watcher of `run --watch` alive.
pub struct SourceWatcher {
    _watch: Watch,
}

/// The development loop: when a source path of a controller (its `watch` list) changes,
/// re-run its build command; the rebuilt `.wasm` is then picked up by [`watch`]. A failed
/// build is logged and the running version stays.
pub fn watch_sources(specs: Vec<ControllerSpec>) -> Result<SourceWatcher, notify::Error> {
    // Target index → controller index.
    let mut owners = Vec::new();
    let mut targets = Vec::new();
    for (i, spec) in specs.iter().enumerate().filter(|(_, s)| s.build.is_some()) {
        if spec.watch.is_empty() {
            tracing::warn!(controller = %spec.name, "--watch: no `watch` paths, so its sources are not watched");
        }
        for path in &spec.watch {
            targets.push(Target::Tree(path.clone()));
            owners.push(i);
        }
    }
    let (watch, mut changed) = watch::watch(targets)?;
    tokio::spawn(async move {
        while let Some(target) = changed.recv().await {
            let spec = &specs[owners[target]];
            let build = spec
                .build
                .as_ref()
                .expect("only controllers with a build are watched");
            let started = Instant::now();
            match build_step::run(&spec.name, build).await {
                Ok(()) => tracing::info!(
                    controller = %spec.name,
                    took_ms = started.elapsed().as_millis() as u64,
                    "rebuilt after a source change"
                ),
                Err(error) => tracing::error!(%error, "rebuild failed; the running version stays"),
            }
        }
    });
    Ok(SourceWatcher { _watch: watch })
}

/// Loads `spec` (building it first if it has a build command) and queues it as a new
/// version of the controller behind `handle`, for a changed file. An error leaves the
/// running version alone.
pub async fn reload_in_place(
    runtime: &Runtime,
    spec: &ControllerSpec,
    handle: &ControllerHandle,
) -> Result<(), LoadError> {
    Prepared::load(runtime, spec).await?.swap_into(handle).await;
    Ok(())
}
