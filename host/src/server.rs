//! The server: accepts TCP connections and runs each client's handshake and
//! connection in its own task. What lets a socket in (the caps met at accept, draining)
//! is the [`listener`]'s [`Gate`]; the upgraded connections are listed in the
//! [`registry`], which also closes them all at shutdown and tells when the last is gone.
//!
//! [`Server::start`] loads every controller before anything listens, so a broken
//! controller fails the start instead of the first request. [`Server::serve`] takes an
//! already-bound listener (tests bind port 0) and a shutdown future (embedders pass any
//! future; the binary passes SIGINT/SIGTERM).
//!
//! Graceful shutdown, once that future completes: keep accepting, but answer every new
//! request `503` (and `/readyz` on the metrics port too); call every controller's
//! `on-shutdown` (they may still send); then ask every open connection to close with
//! 1001 "server shutting down"; return when all of them are closed, or when
//! `shutdown-timeout-ms` has passed (counted from the signal), logging how many were
//! cut off.
//!
//! A request that is not an upgrade, for a path no route matches, goes to
//! [`static_files`] when routes.toml has a `static-dir`.
//!
//! Connection caps: every accepted socket counts against `[limits] max-connections` from
//! accept to close (handshakes included, so a flood of half-open requests is capped
//! too), and each routed request against its route's `max-connections`; a request past
//! either cap gets `503` with a short body and `Retry-After`.
//!
//! With `[tls]`, each socket's TLS handshake comes first, inside the same place in the
//! caps and the same `handshake-timeout-ms` as its request head (see [`crate::tls`]).

mod listener;
mod registry;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::Instrument;

use crate::config::Config;
use crate::controller::{
    self, ConnectionInfo, ControllerHandle, LoadError, OutboundHandle, OutboundQueue, Runtime,
    outbound_queue,
};
use crate::filter::{Check, Consumed, proxy};
use crate::handshake::Accepted;
use crate::limits::Limits;
use crate::metrics::{ConnMeter, Metrics};
use crate::request::{Attributes, Rejection, Request};
use crate::socket::{ReadGate, Socket, Stream};
use crate::tls::{NotAccepted, Tls};
use crate::{connection, handshake, static_files};
use listener::{Gate, SocketSlot, accept, at_capacity};
use registry::{Registration, Registry, RouteSlot};

/// A configured server with its controllers running.
pub struct Server {
    /// The routes file, for reloading it.
    routes_file: PathBuf,
    /// The live configuration; replaced as a whole when routes.toml is reloaded, and read
    /// once per request, so a request sees one consistent table.
    table: RwLock<Arc<Table>>,
    pub(crate) runtime: Runtime,
    next_id: AtomicU64,
    /// What lets a socket in: the caps checked at accept, and whether the server still
    /// admits anyone.
    gate: Gate,
    /// The upgraded connections.
    pub(crate) registry: Registry,
    /// `run --watch`: the watcher of the current controllers' sources, replaced when a
    /// routes.toml reload changes the controllers.
    sources: Mutex<Option<controller::SourceWatcher>>,
    /// The connection to the other nodes (`[cluster]`), until shutdown leaves it.
    cluster: Mutex<Option<crate::cluster::Cluster>>,
    /// `[tls]`: every socket's TLS handshake and the certificate it serves; `None`
    /// serves plain `ws://`. Set at start: a routes.toml reload does not change it.
    tls: Option<Tls>,
    /// The metrics, with routes.toml's `metrics`; `None` counts nothing.
    pub(crate) metrics: Option<Arc<Metrics>>,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A controller could not be built, compiled or started.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `[cluster]` has `required = true` and NATS could not be reached (or its
    /// credentials could not be read).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The `metrics` address could not be bound.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// One version of the configuration and the controllers it uses.
pub(crate) struct Table {
    pub(crate) config: Config,
    /// Parallel to `config.controllers`.
    pub(crate) controllers: Vec<ControllerHandle>,
    /// Hot reload of changed controller files; `None` if the watcher could not start.
    pub(crate) _reload: Option<controller::ReloadWatcher>,
}

impl Table {
    /// A table for `config`, watching its controllers' files for hot reload.
    pub(crate) fn new(
        runtime: &Runtime,
        config: Config,
        controllers: Vec<ControllerHandle>,
    ) -> Self {
        let reload = controller::watch(
            runtime.clone(),
            config.controllers.clone(),
            controllers.clone(),
        )
        .map_err(|error| tracing::warn!(%error, "cannot watch controller files; hot reload is off"))
        .ok();
        Self {
            config,
            controllers,
            _reload: reload,
        }
    }
}

/// What a successful upgrade hands to the connection's life.
struct Upgraded<'a> {
    ws: (WebSocketStream<Socket>, ReadGate),
    info: ConnectionInfo,
    controller: ControllerHandle,
    queues: (OutboundHandle, OutboundQueue),
    limits: Arc<Limits>,
    /// The connection's place in the metrics, if kept.
    meter: Option<ConnMeter>,
    /// Released when the connection ends.
    slots: (SocketSlot<'a>, RouteSlot<'a>, Registration<'a>),
}

impl Server {
    /// Builds and loads every controller of `config`, starts their actors, and starts
    /// watching their files for hot reload.
    pub async fn start(config: Config) -> Result<Arc<Self>, StartError> {
        // First, so that `/healthz` answers while the controllers compile.
        let metrics = match config.metrics {
            Some(addr) => Some(Metrics::listen(addr).await?),
            None => None,
        };
        let mut runtime = Runtime::new(config.listen.to_string())?;
        runtime.metrics = metrics.clone();
        let cluster = match &config.cluster {
            Some(cluster) => Some(crate::cluster::start(cluster, runtime.hub.clone()).await?),
            None => None,
        };
        if let Some(metrics) = &metrics {
            metrics.declare_routes(&config.routes);
            if let Some(cluster) = &cluster {
                metrics.watch_cluster(cluster.probe());
            }
        }
        let controllers = controller::start_all(&runtime, &config.controllers).await?;
        let tls = config.tls.as_ref().map(Tls::start);
        let table = Table::new(&runtime, config, controllers);
        Ok(Arc::new(Self {
            routes_file: table.config.path.clone(),
            table: RwLock::new(Arc::new(table)),
            runtime,
            next_id: AtomicU64::new(1),
            gate: Gate::default(),
            registry: Registry::default(),
            sources: Mutex::new(None),
            cluster: Mutex::new(cluster),
            tls,
            metrics,
        }))
    }

    /// Whether clients connect with TLS (`wss://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The configuration the server runs now.
    pub fn config(&self) -> Config {
        self.table().config.clone()
    }

    /// The current table.
    pub(crate) fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the table (a routes.toml reload).
    pub(crate) fn set_table(&self, table: Table) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    /// The development loop of `run --watch`: rebuild a controller when one of its
    /// `watch` sources changes, for the current controllers and those later reloads add.
    pub fn watch_sources(&self) -> Result<(), notify::Error> {
        let watcher = controller::watch_sources(self.table().config.controllers.clone())?;
        *self.sources.lock().unwrap_or_else(|p| p.into_inner()) = Some(watcher);
        Ok(())
    }

    /// After a routes.toml reload: watch the sources of the new set of controllers, if
    /// sources are watched at all.
    pub(crate) fn rewatch_sources(&self) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.is_none() {
            return;
        }
        match controller::watch_sources(self.table().config.controllers.clone()) {
            Ok(watcher) => *sources = Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "--watch: cannot watch the new controllers' sources; the old watch stays");
            }
        }
    }

    /// The routes file the server was started from.
    pub fn routes_file(&self) -> &std::path::Path {
        &self.routes_file
    }

    /// Accepts connections on `listener` until `shutdown` completes, then drains them
    /// (see the module docs) and returns.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut deadline = None;
        if let Some(metrics) = &self.metrics {
            metrics.ready();
        }
        loop {
            tokio::select! {
                () = &mut shutdown, if deadline.is_none() => {
                    // Refusing first, then the log line: whoever reads the line finds
                    // new requests (and `/readyz`) refused already.
                    self.gate.start_draining();
                    if let Some(metrics) = &self.metrics {
                        metrics.draining();
                    }
                    let open = self.registry.active();
                    let timeout = self.table().config.shutdown_timeout;
                    tracing::info!(open, ?timeout, "shutting down: refusing new connections, calling on-shutdown, then closing connections");
                    let end = tokio::time::Instant::now() + timeout;
                    deadline = Some(end);
                    tokio::spawn(self.clone().close_all(end));
                }
                () = self.registry.drained(), if deadline.is_some() => {
                    tracing::info!("shutdown complete: every connection closed");
                    self.leave_cluster().await;
                    return;
                }
                () = crate::deadline::sleep_until(deadline), if deadline.is_some() => {
                    let cut = self.registry.active();
                    tracing::warn!(cut_off = cut, "shutdown deadline reached; cutting off the connections still open");
                    self.leave_cluster().await;
                    return;
                }
                accepted = accept(&listener) => {
                    let (stream, peer) = accepted;
                    // Here, not in the connection's task: see `upgrade` on borrowing it there.
                    let _ = stream.set_nodelay(true);
                    let server = self.clone();
                    let id = server.next_id.fetch_add(1, Ordering::Relaxed);
                    let span = tracing::info_span!(
                        "conn",
                        conn_id = id,
                        %peer,
                        path = tracing::field::Empty,
                        route = tracing::field::Empty,
                        controller = tracing::field::Empty,
                    );
                    tokio::spawn(server.handle_client(stream, peer, id, span));
                }
            }
        }
    }

    /// Tells the other nodes, if any, that this one has gone.
    async fn leave_cluster(&self) {
        let cluster = self
            .cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(cluster) = cluster {
            cluster.leave().await;
        }
    }

    /// Shutdown's second half: `on-shutdown` on every controller (at most until `end`),
    /// then the signal that makes every connection close with 1001.
    async fn close_all(self: Arc<Self>, end: tokio::time::Instant) {
        let table = self.table();
        let calls = futures_util::future::join_all(table.controllers.iter().map(|c| c.shutdown()));
        if tokio::time::timeout_at(end, calls).await.is_err() {
            tracing::warn!("on-shutdown did not finish before the shutdown deadline");
        }
        // Behind what the controllers queued so far (e.g. from `on-shutdown`).
        self.registry.close_all();
    }

    /// Handshake, then the connection's life.
    ///
    /// The connection's span is entered during the handshake only. Afterwards the
    /// connection logs with the span as explicit parent: entering and leaving it on every
    /// wake-up of a busy connection cost about a tenth of wshost's instructions per
    /// echoed message (callgrind).
    async fn handle_client(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        id: u64,
        span: tracing::Span,
    ) {
        // Boxed: the handshake's state is as large as the connection's, and inline it
        // would be part of the task (beside the connection's) for the connection's life.
        let upgrade = Box::pin(self.upgrade(tcp, peer, id));
        let Some(upgraded) = upgrade.instrument(span.clone()).await else {
            return;
        };
        // In a block, so that what the connection takes is no part of this task's state
        // beside the connection's own.
        let (connection, slots) = {
            let Upgraded {
                ws,
                info,
                controller,
                queues,
                limits,
                meter,
                slots,
            } = upgraded;
            let info = Arc::new(info);
            let connection = connection::run(ws, info, controller, queues, limits, meter, span);
            (connection, slots)
        };
        connection.await;
        drop(slots);
    }

    /// Reads the request, admits it and switches protocols: what the connection's life
    /// needs, or `None` once the client was refused or left.
    ///
    /// `tcp` is never borrowed here, only moved (into the [`Stream`], or into a local of
    /// the path that refuses it): a borrowed local keeps its place in the task's state
    /// after it was moved, and the task would then carry the socket twice.
    async fn upgrade(&self, tcp: TcpStream, peer: SocketAddr, id: u64) -> Option<Upgraded<'_>> {
        let limits = &self.table().config;
        let socket_slot = self.gate.take_socket_slot(limits);
        // Both caps are checked before the request is read: a socket that says nothing
        // must not hold a place that a client who speaks is then refused.
        let handshake_slot = if socket_slot.over() {
            Err(at_capacity("the server"))
        } else {
            self.gate.take_handshake_slot(peer, limits)
        };
        let handshake_slot = match handshake_slot {
            Ok(slot) => slot,
            Err(rejection) => {
                tracing::info!(status = rejection.status, reason = %rejection.body, "refused at accept");
                self.refused(None, &rejection);
                drop(socket_slot); // as below
                // A TLS client could not read the answer before a TLS handshake, which a
                // refused client must not cost: it is closed unanswered.
                if self.tls.is_none() {
                    let mut tcp = tcp;
                    // Boxed, like every path a connection takes only before its upgrade:
                    // inline, its state would be part of the task for the connection's
                    // whole life.
                    Box::pin(handshake::reject_unread(&mut tcp, &rejection)).await;
                }
                return None;
            }
        };
        // One budget for the TLS handshake, if any, and the request head. (In a block, so
        // that the deadline is no part of the task's state after it.)
        let (mut stream, head) = {
            let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
            let mut stream = match &self.tls {
                None => Stream::Plain(tcp),
                Some(tls) => {
                    // Boxed: the TLS handshake's state is large, and as an inline part of
                    // this task it would be part of the task's size for the connection's
                    // life.
                    let handshake = Box::pin(tls_handshake(tls, tcp, deadline));
                    Stream::Tls(Box::new(handshake.await?))
                }
            };
            // Boxed: the request reader holds a read buffer, and as an inline part of this
            // task it would stay allocated (part of the task's size) for the connection's
            // life.
            let head = tokio::time::timeout_at(
                deadline,
                Box::pin(handshake::read_request(
                    &mut stream,
                    limits.max_header_bytes,
                )),
            )
            .await;
            (stream, head)
        };
        let (request, rest) = match head {
            Err(_) => {
                tracing::info!("dropped: no complete request within the handshake timeout");
                return None;
            }
            Ok(Ok(None)) => return None,
            Ok(Err(rejection)) => {
                tracing::info!(status = rejection.status, reason = %rejection.body, "rejected");
                self.refused(None, &rejection);
                drop(socket_slot); // as below
                handshake::reject(&mut stream, &rejection).await;
                return None;
            }
            Ok(Ok(Some(head))) => head,
        };
        tracing::Span::current().record("path", request.path.as_str());
        let table = self.table();
        if let Some(dir) = &table.config.static_dir
            && !self.gate.draining()
            && static_files::wants(&request, &table.config.routes)
        {
            // The request is complete, so it no longer counts as a handshake; the socket
            // keeps its place in `max-connections` until the answer is sent.
            drop(handshake_slot);
            let write_timeout = table.config.handshake_timeout;
            Box::pin(static_files::serve(
                &mut stream,
                &request,
                dir,
                write_timeout,
            ))
            .await;
            return None;
        }
        let admitted = Box::pin(self.admit(&table, &request, peer, id)).await;
        let (accepted, info, controller, route_slot) = match admitted {
            Ok(admitted) => admitted,
            Err(rejection) => {
                tracing::info!(status = rejection.status, reason = %rejection.body, "rejected");
                let route = crate::metrics::requested_route(&table.config.routes, &request);
                self.refused(route, &rejection);
                // The place is free before the answer goes out: a client that was
                // told 503 may retry at once and must not find it still taken.
                drop(socket_slot);
                handshake::reject(&mut stream, &rejection).await;
                return None;
            }
        };
        if let Err(error) = handshake::switch(&mut stream, &accepted).await {
            tracing::debug!(%error, "client left during the upgrade");
            return None;
        }
        drop(handshake_slot);
        let route = &table.config.routes[accepted.selected.route];
        let limits = route.limits.clone();
        let (outbound, queue) = outbound_queue(&limits);
        let meter = self
            .metrics
            .as_ref()
            .map(|m| m.connection(&route.name, id, &outbound));
        let registration = self.registry.register(id, &route.name, &outbound);
        let controller = controller.clone();
        drop(table);
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(crate::socket::READ_BUFFER_BYTES)
            .max_message_size(Some(limits.max_message_bytes))
            .max_frame_size(Some(limits.max_frame_bytes));
        let (socket, gate) = Socket::new(stream);
        let ws =
            WebSocketStream::from_partially_read(socket, rest, Role::Server, Some(ws_config)).await;
        Some(Upgraded {
            ws: (ws, gate),
            info,
            controller,
            queues: (outbound, queue),
            limits,
            meter,
            slots: (socket_slot, route_slot, registration),
        })
    }

    /// Counts a refused request, under the route it asked for, if any.
    fn refused(&self, route: Option<&str>, rejection: &Rejection) {
        if let Some(metrics) = &self.metrics {
            metrics.refused(route, rejection.status);
        }
    }

    /// Everything between a parsed request and the `101`: protocol checks and routing,
    /// the global filters, the route's filters, and the controller's own handshake
    /// hook, in that order. Returns what the connection needs, or the HTTP refusal.
    async fn admit<'t>(
        &self,
        table: &'t Table,
        request: &Request,
        peer: SocketAddr,
        id: u64,
    ) -> Result<
        (
            Accepted,
            ConnectionInfo,
            &'t ControllerHandle,
            RouteSlot<'_>,
        ),
        Rejection,
    > {
        if self.gate.draining() {
            return Err(Rejection::new(503, "server shutting down"));
        }
        let config = &table.config;
        let accepted = handshake::accept(request, &config.routes)?;
        let route = &config.routes[accepted.selected.route];
        let controller = &table.controllers[route.controller];
        let span = tracing::Span::current();
        span.record("route", route.name.as_str());
        span.record("controller", controller.name());
        let slot = self.registry.take_route_slot(route)?;

        let client = proxy::client(
            peer,
            request,
            &config.trusted_proxies,
            config.forwarded_header,
        );
        let mut attributes = Attributes::default();
        attributes.set("route", route.name.as_str());
        for (i, capture) in accepted.selected.captures.iter().enumerate() {
            attributes.set(format!("match.{}", i + 1), capture.as_str());
        }
        if let Some(template) = &route.topic {
            match template.render(&accepted.selected.captures) {
                Some(topic) => attributes.set("topic", topic),
                None => {
                    return Err(Rejection::new(
                        404,
                        "this path makes no valid topic (1 to 255 bytes)",
                    ));
                }
            }
        }
        let mut check = Check {
            request,
            client: &client,
            attributes: &mut attributes,
            claims: serde_json::Map::new(),
            consumed: Consumed::default(),
            now: std::time::Instant::now(),
        };
        let global = config
            .filters
            .iter()
            .filter(|g| g.pattern.as_ref().is_none_or(|p| p.is_match(&request.path)))
            .map(|g| &g.filter);
        for filter in global.chain(&route.filters) {
            filter.check(&mut check)?;
        }
        let (headers, query) = check.consumed.strip(request);

        let mut info = ConnectionInfo {
            id,
            path: request.path.clone(),
            query,
            protocol: accepted.selected.protocol.clone(),
            remote_addr: client.display,
            headers,
            attributes,
        };
        if controller.has_handshake_hook() {
            info.attributes = controller.handshake(&info).await?;
        }
        Ok((accepted, info, controller, slot))
    }
}

/// The TLS handshake of a socket that holds its handshake slot, by `deadline`; `None`
/// once the client was dropped (logged at debug: a scanner or a client speaking plain
/// HTTP is no event) or, speaking plain HTTP, told to use `wss://`.
async fn tls_handshake(
    tls: &Tls,
    tcp: TcpStream,
    deadline: tokio::time::Instant,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accepted = tokio::time::timeout_at(deadline, tls.accept(tcp)).await;
    match accepted {
        Ok(Ok(stream)) => Some(stream),
        Err(_) => {
            tracing::info!("dropped: no TLS handshake within the handshake timeout");
            None
        }
        Ok(Err(NotAccepted::Closed)) => None,
        Ok(Err(NotAccepted::Handshake(error))) => {
            tracing::debug!(%error, "dropped: TLS handshake failed");
            None
        }
        Ok(Err(NotAccepted::NotTls(mut tcp))) => {
            tracing::debug!("dropped: not TLS (plain HTTP to the TLS port?)");
            let rejection = Rejection::new(
                400,
                "this port speaks TLS: connect with wss:// (or https://)",
            );
            // Within the handshake timeout too: the client may not be reading.
            let answer = handshake::reject_unread(&mut tcp, &rejection);
            let _ = tokio::time::timeout_at(deadline, answer).await;
            None
        }
    }
}
