//! Hot reload: watch every controller's `.wasm` and swap a changed file in without
//! touching a single connection.
//!
//! The watcher observes the files' directories (editors and build tools replace files by
//! rename, which a watch on the file itself would lose), debounces bursts of events per
//! file, then compiles, links and trial-instantiates the new version off the actor, as a
//! start would. Only a version that passes all of that is handed to the actor, behind the
//! events already queued: those go to the old instance, in order, and the next event goes
//! to the new one, which inherits the connection table. A file that fails any step is
//! refused with the wasm error in the log, and the old version keeps serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::build_step;
use super::engine::{LoadError, Runtime};
use super::{ControllerHandle, Event, Reload};
use crate::config::ControllerSpec;

/// Quiet time after the last change to a file before it is reloaded: long enough for a
/// compiler's or an editor's multi-step write to finish.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Keeps the file watcher alive; dropping it stops hot reload.
pub struct ReloadWatcher {
    _watcher: RecommendedWatcher,
}

/// Starts watching the `.wasm` of every controller in `specs` (parallel to `handles`).
pub fn watch(
    runtime: Runtime,
    specs: Vec<ControllerSpec>,
    handles: Vec<ControllerHandle>,
) -> Result<ReloadWatcher, notify::Error> {
    let (tx, mut changed) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only content changes: reading the file to load it must not trigger a reload.
        if let Some(event) = event.ok().filter(|e| is_content_change(e.kind)) {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })?;
    let watched: Vec<PathBuf> = specs.iter().map(|s| canonical(&s.wasm)).collect();
    let mut dirs: Vec<&Path> = watched.iter().filter_map(|p| p.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }

    tokio::spawn(async move {
        let mut due: HashMap<usize, Instant> = HashMap::new();
        loop {
            let next = due.values().min().copied();
            tokio::select! {
                path = changed.recv() => {
                    let Some(path) = path else { return };
                    let path = canonical(&path);
                    for (i, _) in watched.iter().enumerate().filter(|(_, w)| **w == path) {
                        due.insert(i, Instant::now() + DEBOUNCE);
                    }
                }
                () = sleep_until(next), if next.is_some() => {
                    let now = Instant::now();
                    let ready: Vec<usize> =
                        due.iter().filter(|(_, t)| **t <= now).map(|(i, _)| *i).collect();
                    for i in ready {
                        due.remove(&i);
                        reload(&runtime, &specs[i], &handles[i]).await;
                    }
                }
            }
        }
    });
    Ok(ReloadWatcher { _watcher: watcher })
}

/// Keeps the source watcher of `run --watch` alive.
pub struct SourceWatcher {
    _watcher: RecommendedWatcher,
}

/// The development loop: when a source path of a controller (its `watch` list) changes,
/// re-run its build command; the rebuilt `.wasm` is then picked up by [`watch`]. A failed
/// build is logged and the running version stays.
pub fn watch_sources(specs: Vec<ControllerSpec>) -> Result<SourceWatcher, notify::Error> {
    let (tx, mut changed) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Some(event) = event.ok().filter(|e| is_content_change(e.kind)) {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })?;
    let mut watched: Vec<(usize, PathBuf)> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if spec.build.is_none() {
            continue;
        }
        if spec.watch.is_empty() {
            tracing::warn!(controller = %spec.name, "--watch: no `watch` paths, so its sources are not watched");
        }
        for path in &spec.watch {
            watcher.watch(path, RecursiveMode::Recursive)?;
            watched.push((i, path.canonicalize().unwrap_or_else(|_| path.clone())));
        }
    }
    tokio::spawn(async move {
        let mut due: HashMap<usize, Instant> = HashMap::new();
        loop {
            let next = due.values().min().copied();
            tokio::select! {
                path = changed.recv() => {
                    let Some(path) = path else { return };
                    for (i, root) in &watched {
                        if path.starts_with(root) {
                            due.insert(*i, Instant::now() + DEBOUNCE);
                        }
                    }
                }
                () = sleep_until(next), if next.is_some() => {
                    let now = Instant::now();
                    let ready: Vec<usize> =
                        due.iter().filter(|(_, t)| **t <= now).map(|(i, _)| *i).collect();
                    for i in ready {
                        due.remove(&i);
                        let spec = &specs[i];
                        let build = spec.build.as_ref().expect("only controllers with a build are watched");
                        let started = Instant::now();
                        match build_step::run(&spec.name, build).await {
                            Ok(()) => tracing::info!(controller = %spec.name, took_ms = started.elapsed().as_millis() as u64, "rebuilt after a source change"),
                            Err(error) => tracing::error!(%error, "rebuild failed; the running version stays"),
                        }
                    }
                }
            }
        }
    });
    Ok(SourceWatcher { _watcher: watcher })
}

/// Loads `spec` (building it first if it has a build command) and queues it as a new
/// version of the controller behind `handle`: used when routes.toml changes a
/// controller's name, routes or config. An error leaves the running version alone.
pub async fn reload_in_place(
    runtime: &Runtime,
    spec: &ControllerSpec,
    handle: &ControllerHandle,
) -> Result<(), LoadError> {
    let started = Instant::now();
    let loaded = runtime.load(spec).await?;
    let event = Event::Reload(Box::new(Reload { loaded, started }));
    if handle.events().send(event).await.is_err() {
        tracing::warn!(controller = %spec.name, "controller stopped; reload dropped");
    }
    Ok(())
}

/// Loads the new version of one controller and queues the swap.
async fn reload(runtime: &Runtime, spec: &ControllerSpec, handle: &ControllerHandle) {
    let span = tracing::info_span!("reload", controller = %spec.name);
    reload_in_span(runtime, spec, handle).instrument(span).await;
}

async fn reload_in_span(runtime: &Runtime, spec: &ControllerSpec, handle: &ControllerHandle) {
    let started = Instant::now();
    // Build commands belong to `--watch` (sources changed); here the file itself did.
    let spec = ControllerSpec {
        build: None,
        ..spec.clone()
    };
    match runtime.load(&spec).await {
        Ok(loaded) => {
            let event = Event::Reload(Box::new(Reload { loaded, started }));
            if handle.events().send(event).await.is_err() {
                tracing::warn!("controller stopped; reload dropped");
            }
        }
        Err(error) => {
            tracing::error!(%error, "reload refused; the old version keeps serving");
        }
    }
}

fn is_content_change(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
    )
}

/// The path with its directory resolved (symlinks, `..`), so watcher events and
/// configured paths compare equal; the file itself may not exist at that moment.
fn canonical(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or_else(|_| path.to_owned(), |dir| dir.join(name)),
        _ => path.to_owned(),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
