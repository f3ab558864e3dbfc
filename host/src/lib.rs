//! wshost: a WebSocket server whose application logic lives in controllers compiled to
//! WebAssembly components.
//!
//! The modules follow the data path: [`config`] reads routes.toml; [`server`] accepts
//! TCP connections; [`handshake`] parses and checks the HTTP upgrade and uses
//! [`routing`] (with [`pattern`] globs) to pick a route, then [`filter`] runs the
//! request filters; [`connection`] runs one
//! upgraded client; [`controller`] loads components and runs one actor per controller
//! that calls its exports (and hot-reloads them); [`reconfigure`] applies a changed
//! routes.toml. Beside [`handshake`], [`static_files`] answers plain requests that are
//! not upgrades from the `static-dir`. [`topics`] holds the subscriptions of every
//! connection to named topics, and [`cluster`] relays them to other nodes through NATS.
//! With `[tls]`, [`tls`] terminates TLS on each accepted socket before the handshake.
//! [`metrics`] counts what all of these do and serves it, with health checks, on a port
//! of its own.

pub mod cluster;
pub mod config;
pub mod connection;
pub mod controller;
mod deadline;
pub mod filter;
pub mod handshake;
pub mod limits;
pub mod metrics;
pub mod pattern;
pub mod reconfigure;
pub mod request;
pub mod routing;
pub mod server;
pub mod socket;
pub mod static_files;
pub mod tls;
pub mod topics;
pub mod watch;

pub use config::Config;

/// The tracing target of the steps of loading a controller that take long enough to
/// show (`building controller`, `compiling` with `bytes`, `compiled`): the binary draws a
/// spinner from them on a terminal; elsewhere they are plain log lines.
pub const PROGRESS: &str = "wshost::progress";
pub use server::Server;
