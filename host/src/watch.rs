//! Debounced file watching, shared by controller hot reload, `run --watch` and the
//! routes.toml reload.
//!
//! A file is watched through its directory (editors and build tools replace files by
//! rename, which a watch on the file itself would lose); a tree recursively. Only content
//! changes count (creation, data, rename), so reading a file to load it does not trigger
//! anything. Each target reports once its changes have been quiet for [`DEBOUNCE`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Quiet time after the last change to a target before it is reported: long enough for
/// a compiler's or an editor's multi-step write to finish (their writes come back to
/// back), short enough that a hot reload shows within a tenth of a second. Was 250 ms;
/// the benchmark's reload latency went from 253 ms to the figure in docs/internals/performance.md.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Something to watch.
#[derive(Debug, Clone)]
pub enum Target {
    /// One file.
    File(PathBuf),
    /// A file or a directory and everything below it.
    Tree(PathBuf),
}

/// Keeps a watch alive; dropping it stops the reports.
pub struct Watch {
    _watcher: RecommendedWatcher,
}

/// Starts watching `targets`; the receiver gets a target's index each time it changed
/// and then stayed quiet for [`DEBOUNCE`].
pub fn watch(targets: Vec<Target>) -> notify::Result<(Watch, mpsc::UnboundedReceiver<usize>)> {
    let (raw_tx, mut raw) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Some(event) = event.ok().filter(|e| is_content_change(e.kind)) {
            for path in event.paths {
                let _ = raw_tx.send(path);
            }
        }
    })?;
    // What each target matches: a file exactly, a tree by prefix.
    let mut matchers = Vec::with_capacity(targets.len());
    for target in &targets {
        match target {
            Target::File(file) => {
                let file = canonical(file);
                let dir = file.parent().unwrap_or(Path::new("/")).to_owned();
                watcher.watch(&dir, RecursiveMode::NonRecursive)?;
                matchers.push((file, false));
            }
            Target::Tree(root) => {
                watcher.watch(root, RecursiveMode::Recursive)?;
                matchers.push((root.canonicalize().unwrap_or_else(|_| root.clone()), true));
            }
        }
    }

    let (ready_tx, ready) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut due: HashMap<usize, Instant> = HashMap::new();
        loop {
            let next = due.values().min().copied();
            tokio::select! {
                path = raw.recv() => {
                    let Some(path) = path else { return };
                    let path = canonical(&path);
                    for (i, (target, tree)) in matchers.iter().enumerate() {
                        if (*tree && path.starts_with(target)) || path == *target {
                            due.insert(i, Instant::now() + DEBOUNCE);
                        }
                    }
                }
                () = crate::deadline::sleep_until(next), if next.is_some() => {
                    let now = Instant::now();
                    due.retain(|i, t| {
                        let waiting = *t > now;
                        if !waiting {
                            let _ = ready_tx.send(*i);
                        }
                        waiting
                    });
                }
            }
        }
    });
    Ok((Watch { _watcher: watcher }, ready))
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
