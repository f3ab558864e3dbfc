//! routes.toml reload: the server watches its routes file and, when it changes, swaps in
//! the new configuration without a restart.
//!
//! New requests see the new table (routes, filters, limits); connections keep the route
//! and controller they were admitted with, except that connections whose route no longer
//! exists (by name) are closed with 1001 "route removed". Controllers are matched by file:
//! one that stays keeps its instance (reloaded in place if its `init` arguments changed),
//! a new one is loaded and started, a dropped one ends when its last connection closes.
//! The reload is atomic: every new or changed controller is loaded and checked first,
//! and only then is any running actor told anything. A file that does not parse, or one
//! of whose controllers fails to load, is refused with the error in the log, and the old
//! configuration, controllers and `init` arguments all stay. Under `run --watch`, the
//! sources of controllers a reload adds are watched too. `listen`, `metrics`, `[cluster]`
//! and `[tls]`'s file names cannot change without a restart (logged); the files' contents
//! are reloaded by [`crate::tls`] whenever they change.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::Instant;

use crate::config::{Config, ConfigError};
use crate::controller::{ControllerHandle, LoadError, Outbound, Prepared};
use crate::request::CloseReason;
use crate::server::{Server, Table};
use crate::watch::{self, Target, Watch};

/// Why a routes.toml reload was refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// The file does not parse or validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A new or changed controller does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// What a reload does with one controller of the new file.
enum Step<'a> {
    /// Unchanged: the running instance goes on.
    Keep(&'a ControllerHandle),
    /// Same file, other arguments: this version replaces the running one.
    Swap(Prepared, &'a ControllerHandle),
    /// A new controller: started once everything has loaded.
    Start(Prepared),
}

/// Keeps the routes-file watcher alive.
pub struct RoutesWatcher {
    _watch: Watch,
}

/// Watches `server`'s routes file and applies every change.
pub fn watch_routes(server: Arc<Server>) -> Result<RoutesWatcher, notify::Error> {
    let (watch, mut changed) = watch::watch(vec![Target::File(server.routes_file().to_owned())])?;
    tokio::spawn(async move {
        while changed.recv().await.is_some() {
            server.reload_routes().await;
        }
    });
    Ok(RoutesWatcher { _watch: watch })
}

impl Server {
    /// Re-reads the routes file and applies it (see the module docs).
    pub async fn reload_routes(&self) {
        let span = tracing::info_span!("routes_reload", file = %self.routes_file().display());
        let result =
            tracing::Instrument::instrument(self.reload_routes_inner(), span.clone()).await;
        if let Some(metrics) = &self.metrics {
            metrics.routes_reloaded(result.is_ok());
        }
        if let Err(error) = result {
            span.in_scope(|| tracing::error!(%error, "routes.toml refused; the old routes stay"));
        }
    }

    async fn reload_routes_inner(&self) -> Result<(), Refused> {
        let started = Instant::now();
        let old = self.table();
        let mut config = Config::load(self.routes_file())?;
        if config.listen != old.config.listen {
            tracing::warn!(old = %old.config.listen, new = %config.listen, "`listen` changes need a restart; still listening on the old address");
        }
        // The address actually bound, as controllers' `init` should see it.
        config.listen = old.config.listen;
        if config.metrics != old.config.metrics {
            tracing::warn!("`metrics` changes need a restart; the metrics stay where they are");
            config.metrics = old.config.metrics;
        }
        if config.cluster != old.config.cluster {
            tracing::warn!(
                "`[cluster]` changes need a restart; the cluster keeps its old settings"
            );
            config.cluster = old.config.cluster.clone();
        }
        let same_tls = match (&config.tls, &old.config.tls) {
            (None, None) => true,
            (Some(new), Some(old)) => new.same_files(old),
            _ => false,
        };
        if !same_tls {
            tracing::warn!(
                "`[tls]` changes need a restart; the old TLS settings stay (a change of the certificate files' contents is picked up without one)"
            );
            config.tls = old.config.tls.clone();
        }

        // Every new version is loaded and checked before anything running is told: a
        // failure leaves the old routes and the old controllers (with their `init`
        // arguments) as they were.
        let mut plan = Vec::with_capacity(config.controllers.len());
        for spec in &config.controllers {
            let kept = old
                .config
                .controllers
                .iter()
                .position(|o| o.wasm == spec.wasm)
                .map(|i| (&old.config.controllers[i], &old.controllers[i]));
            let step = match kept {
                Some((old_spec, handle)) if old_spec == spec => Step::Keep(handle),
                // Same file, new name, routes or config: a reload in place, so `init`
                // sees the new arguments and the connections stay.
                Some((_, handle)) => Step::Swap(Prepared::load(&self.runtime, spec).await?, handle),
                None => Step::Start(Prepared::load(&self.runtime, spec).await?),
            };
            plan.push(step);
        }
        let mut controllers = Vec::with_capacity(plan.len());
        for step in plan {
            controllers.push(match step {
                Step::Keep(handle) => handle.clone(),
                Step::Swap(prepared, handle) => {
                    prepared.swap_into(handle).await;
                    handle.clone()
                }
                Step::Start(prepared) => prepared.start(&self.runtime),
            });
        }

        let names: HashSet<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        let removed: Vec<String> = old
            .config
            .routes
            .iter()
            .filter(|r| !names.contains(r.name.as_str()))
            .map(|r| r.name.clone())
            .collect();
        let routes = config.routes.len();
        if let Some(metrics) = &self.metrics {
            metrics.declare_routes(&config.routes);
        }
        self.set_table(Table::new(&self.runtime, config, controllers));
        self.rewatch_sources();
        let mut closed = 0;
        for (route, outbound) in self.registry.open_connections().values() {
            if removed.contains(route) {
                let _ = outbound.push(Outbound::Close(CloseReason::new(1001, "route removed")));
                closed += 1;
            }
        }
        tracing::info!(
            routes,
            removed = ?removed,
            closed_connections = closed,
            took_ms = started.elapsed().as_millis() as u64,
            "routes reloaded"
        );
        Ok(())
    }
}
