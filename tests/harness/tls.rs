//! TLS for the `wss://` tests: a certificate authority made in the test (rcgen), server
//! certificates it signs, and a real client (tokio-rustls with the ring provider, then
//! tokio-tungstenite's handshake) that trusts only the authority it is given.

use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion, version};

use super::{Client, HANG_GUARD, Server};

/// A WebSocket client over TLS.
pub(crate) type TlsClient = Client<TlsStream<TcpStream>>;

/// The host name every test server certificate is for (besides 127.0.0.1).
pub(crate) const SERVER_NAME: &str = "localhost";

/// A certificate authority that exists only in the test.
pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

/// A server certificate and its key, as PEM, and the certificate as DER (what a client
/// sees).
pub(crate) struct ServerCert {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) der: CertificateDer<'static>,
}

impl TestCa {
    /// A new self-signed authority named `name`.
    pub(crate) fn new(name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            der: cert.der().clone(),
        })
    }

    /// A certificate for `localhost` and 127.0.0.1 with serial number `serial` (and
    /// `serial` in its common name), signed by this authority, with a fresh key.
    pub(crate) fn issue(&self, serial: u64) -> Result<ServerCert> {
        let mut params =
            CertificateParams::new(vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])?;
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("wshost test server {serial}"));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        })
    }

    /// A client configuration that trusts this authority only (TLS 1.2 and 1.3, ALPN
    /// `http/1.1`).
    pub(crate) fn client(&self) -> Result<Arc<ClientConfig>> {
        self.client_with(&[&version::TLS13, &version::TLS12])
    }

    /// [`Self::client`] speaking only the TLS `versions` given.
    pub(crate) fn client_with(
        &self,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Result<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone())?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The TLS handshake over `tcp`, naming `server_name`.
pub(crate) async fn tls_connect(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_owned())?;
    let handshake = TlsConnector::from(config).connect(name, tcp);
    Ok(timeout(HANG_GUARD, handshake)
        .await
        .context("TLS handshake (hang guard)")??)
}

/// The certificate the server presented on `stream`.
pub(crate) fn peer_certificate(stream: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.clone().into_owned())
}

impl Server {
    /// Opens a `wss://` connection to `path` on a fresh TCP connection, naming
    /// `localhost`, with the client configuration `config`.
    pub(crate) async fn connect_wss(
        &self,
        path: &str,
        config: Arc<ClientConfig>,
    ) -> Result<TlsClient> {
        let tcp = TcpStream::connect(self.addr()).await?;
        self.connect_wss_over(tcp, path, config, SERVER_NAME, &[])
            .await
    }

    /// Opens a `wss://` connection to `path` over `tcp`, naming `server_name`, offering
    /// `protocols`.
    pub(crate) async fn connect_wss_over(
        &self,
        tcp: TcpStream,
        path: &str,
        config: Arc<ClientConfig>,
        server_name: &str,
        protocols: &[&str],
    ) -> Result<TlsClient> {
        let tls = tls_connect(tcp, config, server_name).await?;
        let url = format!("wss://{server_name}:{}{path}", self.addr().port());
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
        if !protocols.is_empty() {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", protocols.join(", ").parse()?);
        }
        let (ws, _) = timeout(HANG_GUARD, tokio_tungstenite::client_async(request, tls))
            .await
            .context("WebSocket handshake (hang guard)")?
            .with_context(|| format!("WebSocket handshake on {path}"))?;
        Ok(Client::new(ws))
    }
}
