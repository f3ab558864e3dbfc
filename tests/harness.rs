//! The one harness every integration test uses: it builds the guest controllers once per
//! test process, writes routes.toml files into fresh temporary directories, runs the real
//! `wshost` binary on port 0 and speaks to it through real sockets (WebSocket clients and
//! raw HTTP, over TLS with a certificate authority made in the test); the cluster tests
//! add a real NATS server, the proxy tests real nginx and Apache httpd in front of it,
//! and the metrics tests a real HTTP client and a Prometheus text-format parser.
//!
//! Every network wait is bounded by [`HANG_GUARD`] so that a broken server fails a test
//! instead of hanging the whole run. The bound is a hang guard, never a performance
//! assertion: nothing here measures how fast the server is.

mod auth;
mod client;
mod guests;
mod hostile;
mod http;
mod metrics;
mod nats;
mod peers;
mod probe;
mod proxy;
mod raw;
mod routes;
mod server;
mod tls;

use std::path::Path;
use std::time::Duration;

pub(crate) use auth::{SECRET, claims, fixture, hs256_with, jwt, now, unsigned};
pub(crate) use client::Client;
pub(crate) use guests::{Lang, chat, guests};
pub(crate) use http::{HttpRequest, HttpResponse};
pub(crate) use metrics::Scrape;
pub(crate) use nats::Nats;
pub(crate) use peers::{chromium, kosoku, python};
pub(crate) use probe::{Closed, info_value, parse_closed, parse_info};
pub(crate) use proxy::{CLIENT_IP, Proxy, ProxyKind, deploy_file, substitute};
pub(crate) use raw::{RawPeer, opcode};
pub(crate) use routes::{Route, RoutesDir, controller_toml, routes_toml};
pub(crate) use server::{Server, check, run_to_exit, wshost};
pub(crate) use tls::{ServerCert, TestCa, TlsClient, peer_certificate, tls_connect};

/// Upper bound on any single wait for the server (a read, a handshake, a log line). A hang
/// guard: a healthy server answers in milliseconds.
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(20);

/// Upper bound on the server's start-up (it compiles every controller before it listens) and
/// on a whole `wshost check` run. Also a hang guard.
pub(crate) const STARTUP_GUARD: Duration = Duration::from_secs(180);

/// The workspace's cargo target directory (`CARGO_TARGET_DIR` or `<root>/target`).
pub(crate) fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The workspace root (the directory holding the root Cargo.toml).
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent directory")
}
