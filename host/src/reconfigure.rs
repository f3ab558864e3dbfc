//! routes.toml reload: the server watches its routes file and, when it changes, swaps in
//! the new configuration without a restart.
//!
//! New requests see the new table (routes, filters, limits); connections keep the route
//! and controller they were admitted with, except that connections whose route no longer
//! exists (by name) are closed with 1001 "route removed". Controllers are matched by file:
//! one that stays keeps its instance (reloaded in place if its `init` arguments changed),
//! a new one is loaded and started, a dropped one ends when its last connection closes.
//! A file that does not parse, or whose new controllers fail to load, is refused with the
//! error in the log, and the old configuration stays. `listen` cannot change without a
//! restart (logged).

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::Instant;

use crate::config::Config;
use crate::controller::{self, Outbound};
use crate::server::{Server, Table};
use crate::watch::{self, Target, Watch};

/// Close code and reason for connections whose route was removed.
const ROUTE_REMOVED: (u16, &str) = (1001, "route removed");

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
        let _ = tracing::Instrument::instrument(self.reload_routes_inner(), span).await;
    }

    async fn reload_routes_inner(&self) -> Result<(), ()> {
        let started = Instant::now();
        let old = self.table();
        let mut config = Config::load(self.routes_file()).map_err(|error| {
            tracing::error!(%error, "routes.toml refused; the old routes stay");
        })?;
        if config.listen != old.config.listen {
            tracing::warn!(old = %old.config.listen, new = %config.listen, "`listen` changes need a restart; still listening on the old address");
        }
        // The address actually bound, as controllers' `init` should see it.
        config.listen = old.config.listen;

        let mut controllers = Vec::with_capacity(config.controllers.len());
        for spec in &config.controllers {
            let kept = old
                .config
                .controllers
                .iter()
                .position(|o| o.wasm == spec.wasm)
                .map(|i| (&old.config.controllers[i], &old.controllers[i]));
            let handle = match kept {
                Some((old_spec, handle)) if old_spec == spec => handle.clone(),
                Some((_, handle)) => {
                    // Same file, new name, routes or config: a reload in place, so `init`
                    // sees the new arguments and the connections stay.
                    controller::reload_in_place(&self.runtime, spec, handle)
                        .await
                        .map_err(|error| tracing::error!(%error, "routes.toml refused; the old routes stay"))?;
                    handle.clone()
                }
                None => {
                    let mut started = controller::start_all(
                        &self.runtime,
                        std::slice::from_ref(spec),
                    )
                    .await
                    .map_err(
                        |error| tracing::error!(%error, "routes.toml refused; the old routes stay"),
                    )?;
                    started.remove(0)
                }
            };
            controllers.push(handle);
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
        self.set_table(Table::new(&self.runtime, config, controllers));
        let mut closed = 0;
        for (route, outbound) in self.open_connections().values() {
            if removed.contains(route) {
                let (code, reason) = ROUTE_REMOVED;
                let _ = outbound.push(Outbound::Close(code, reason.to_owned()));
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
