//! TLS termination: `wss://` (and `https://` for static files) without a proxy in front.
//!
//! With a `[tls]` table in routes.toml ([`config`]), every accepted socket does a TLS
//! handshake (rustls with the ring provider; TLS 1.2 and 1.3; ALPN `http/1.1`) before
//! its request is read. The handshake runs inside the socket's place in the half-open
//! limits (`max-handshakes-per-address`, `max-connections`) and inside its
//! `handshake-timeout-ms`, which covers the TLS handshake and the request head together
//! (see `Server::upgrade`). A socket refused at accept is closed without an answer: no
//! HTTP status can be understood before the TLS handshake, and doing one for a client
//! that is refused would spend what the caps protect.
//!
//! Clients that cannot be served are dropped without noise (logged at debug):
//! - a first byte that does not start a TLS handshake record (plain HTTP to the TLS
//!   port) gets a plain `400` saying to use `wss://`, then the socket is closed;
//! - a client naming (SNI) a host the certificate does not cover gets a TLS alert; a
//!   client that names none (one connecting to an IP address) gets the certificate;
//! - any other failed handshake ends the socket (rustls sends its alert).
//!
//! Certificate hot reload: [`crate::watch`] watches every path that resolving the two
//! files goes through: each file as named, every symlink met on the way (also one in a
//! directory part of the path), and the file finally reached. A change to any of them
//! re-reads both files; a pair that loads and differs from the one served replaces it
//! for new handshakes, while open connections keep the session they have. A pair that
//! does not load (a broken file, a key that does not match, a pair caught half-replaced)
//! is refused with an error in the log and the old one stays, as for controllers. The
//! paths are worked out again after each change, so the ways certbot and Kubernetes
//! replace certificates are all seen: a write to the file, a rename over it, a new
//! symlink renamed over the old one (certbot's `live/`), a swap of the `..data` symlink
//! a directory resolves through (a Kubernetes secret volume).

pub mod config;

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::watch::{self, Target, Watch};
pub use config::{Pair, PairError, TlsConfig, load_pair};

/// The first byte of a TLS record that carries a handshake message (a ClientHello).
const HANDSHAKE_RECORD: u8 = 0x16;

/// The TLS side of the listener: the acceptor and the certificate it serves.
pub struct Tls {
    acceptor: TlsAcceptor,
    /// Dropping it stops the certificate reload.
    _reload: Option<Reloader>,
}

/// Stops the certificate reload task when dropped.
struct Reloader(tokio::task::AbortHandle);

impl Drop for Reloader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a socket did not become a TLS stream.
#[derive(Debug)]
pub enum NotAccepted {
    /// The client closed before sending anything.
    Closed,
    /// The client's first byte does not start a TLS handshake (plain HTTP, most
    /// likely); the socket is handed back to answer it.
    NotTls(TcpStream),
    /// The TLS handshake failed.
    Handshake(io::Error),
}

impl Tls {
    /// Serves `config`'s pair and watches its files for replacement (see the module
    /// docs); a watch that cannot start is logged and leaves reload off.
    pub fn start(config: &TlsConfig) -> Self {
        let resolver = Arc::new(Resolver {
            cert_file: config.cert_file.clone(),
            key_file: config.key_file.clone(),
            current: RwLock::new(config.pair.certified.clone()),
        });
        let mut server = ServerConfig::builder_with_provider(config::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let reload = watch_files(resolver)
            .map_err(|error| {
                tracing::warn!(%error, "cannot watch the TLS files; certificate changes need a restart");
            })
            .ok();
        Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            _reload: reload,
        }
    }

    /// Waits for the client's first byte, then does the TLS handshake.
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, NotAccepted> {
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(0) => return Err(NotAccepted::Closed),
            Err(error) => return Err(NotAccepted::Handshake(error)),
            Ok(_) if first[0] != HANDSHAKE_RECORD => return Err(NotAccepted::NotTls(tcp)),
            Ok(_) => {}
        }
        self.acceptor
            .accept(tcp)
            .await
            .map_err(NotAccepted::Handshake)
    }
}

/// Serves the current pair to every handshake that names a host it covers, or none.
#[derive(Debug)]
struct Resolver {
    cert_file: PathBuf,
    key_file: PathBuf,
    /// Swapped whole on reload; a handshake holds the `Arc` it was given.
    current: RwLock<Arc<CertifiedKey>>,
}

impl Resolver {
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads the files again; `Ok(true)` when the new pair replaced the old one,
    /// `Ok(false)` when the files hold the pair already served.
    fn reload(&self) -> Result<bool, PairError> {
        let pair = load_pair(&self.cert_file, &self.key_file)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        // Same chain: the key matches it, so it is the same key too.
        if current.cert == pair.certified.cert {
            return Ok(false);
        }
        *current = pair.certified;
        Ok(true)
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current();
        if let Some(name) = hello.server_name()
            && !covers(&current, name)
        {
            tracing::debug!(
                server_name = name,
                "TLS client asked for a host name the certificate does not cover"
            );
            return None;
        }
        Some(current)
    }
}

/// Whether the leaf certificate of `certified` is valid for the DNS name `name`.
fn covers(certified: &CertifiedKey, name: &str) -> bool {
    let Ok(name) = ServerName::try_from(name) else {
        return false;
    };
    certified.cert.first().is_some_and(|leaf| {
        webpki::EndEntityCert::try_from(leaf)
            .is_ok_and(|leaf| leaf.verify_is_valid_for_subject_name(&name).is_ok())
    })
}

/// Most symlinks followed while resolving a path (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// One part of a path still to resolve.
enum Part {
    Root,
    Parent,
    Name(OsString),
}

/// Every path whose change can change what `file` holds: `file` itself, each symlink
/// met while resolving it (a directory part of the path too), and the file reached.
fn resolution(file: &Path) -> Vec<PathBuf> {
    fn push_parts(path: &Path, rest: &mut Vec<Part>) {
        for part in path.components().rev() {
            rest.push(match part {
                Component::RootDir | Component::Prefix(_) => Part::Root,
                Component::ParentDir => Part::Parent,
                Component::CurDir => continue,
                Component::Normal(name) => Part::Name(name.to_owned()),
            });
        }
    }
    let mut paths = vec![file.to_owned()];
    let mut rest = Vec::new();
    push_parts(file, &mut rest);
    let mut resolved = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = rest.pop() {
        match part {
            Part::Root => resolved = PathBuf::from("/"),
            Part::Parent => {
                resolved.pop();
            }
            Part::Name(name) => {
                let next = resolved.join(name);
                let target = std::fs::symlink_metadata(&next)
                    .is_ok_and(|m| m.file_type().is_symlink())
                    .then(|| std::fs::read_link(&next).ok())
                    .flatten();
                match target {
                    Some(target) if links < MAX_SYMLINKS => {
                        links += 1;
                        paths.push(next);
                        // A relative target resolves against the link's directory, which
                        // `resolved` still is.
                        push_parts(&target, &mut rest);
                    }
                    _ => resolved = next,
                }
            }
        }
    }
    paths.push(resolved);
    paths.dedup();
    paths
}

/// The watch targets for the pair's files, as they resolve now.
fn targets(resolver: &Resolver) -> Vec<PathBuf> {
    let mut paths = resolution(&resolver.cert_file);
    paths.extend(resolution(&resolver.key_file));
    paths.sort();
    paths.dedup();
    paths
}

/// Reloads the pair whenever a path its files resolve through changes.
fn watch_files(resolver: Arc<Resolver>) -> notify::Result<Reloader> {
    let mut watched = targets(&resolver);
    let (watch, mut changed) = watch::watch(watched.iter().cloned().map(Target::File).collect())?;
    let task = tokio::spawn(async move {
        let mut _watch: Watch = watch;
        while changed.recv().await.is_some() {
            // Whatever else changed meanwhile is covered by this one reload.
            while changed.try_recv().is_ok() {}
            let span = tracing::info_span!(
                "tls_reload",
                cert_file = %resolver.cert_file.display(),
                key_file = %resolver.key_file.display(),
            );
            let reloading = resolver.clone();
            let reloaded = tokio::task::spawn_blocking(move || reloading.reload()).await;
            let _entered = span.enter();
            match reloaded {
                Ok(Ok(true)) => tracing::info!(
                    chain = resolver.current().cert.len(),
                    "TLS certificate reloaded; new connections get the new one"
                ),
                Ok(Ok(false)) => {
                    tracing::debug!("TLS files touched; the certificate is unchanged");
                }
                Ok(Err(error)) => tracing::error!(
                    %error,
                    "TLS certificate refused; the old one is still served"
                ),
                Err(error) => tracing::error!(%error, "TLS certificate reload failed"),
            }
            // A swapped symlink leads elsewhere now: watch where it leads.
            let now = targets(&resolver);
            if now != watched {
                match watch::watch(now.iter().cloned().map(Target::File).collect()) {
                    Ok((watch, receiver)) => {
                        _watch = watch;
                        changed = receiver;
                        watched = now;
                    }
                    Err(error) => tracing::warn!(
                        %error,
                        "cannot watch where the TLS files lead now; the old watch stays"
                    ),
                }
            }
        }
    });
    Ok(Reloader(task.abort_handle()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolution_lists_each_symlink_on_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        // A Kubernetes secret volume: tls.crt -> ..data/tls.crt, ..data -> ..v1.
        std::fs::create_dir(root.join("..v1")).unwrap();
        std::fs::write(root.join("..v1/tls.crt"), "x").unwrap();
        symlink("..v1", root.join("..data")).unwrap();
        symlink("..data/tls.crt", root.join("tls.crt")).unwrap();
        assert_eq!(
            resolution(&root.join("tls.crt")),
            [
                root.join("tls.crt"),
                root.join("..data"),
                root.join("..v1/tls.crt")
            ]
        );
        // A plain file is just itself.
        assert_eq!(
            resolution(&root.join("..v1/tls.crt")),
            [root.join("..v1/tls.crt")]
        );
        // A loop ends.
        symlink("loop", root.join("loop")).unwrap();
        assert!(resolution(&root.join("loop")).len() <= MAX_SYMLINKS + 2);
    }
}
