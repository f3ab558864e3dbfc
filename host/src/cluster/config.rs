//! routes.toml's `[cluster]` table.
//!
//! ```toml
//! [cluster]
//! servers = ["nats://127.0.0.1:4222"]  # required: one or more NATS URLs
//! name = "node-a"                      # default: host name and process id
//! subject-prefix = "wshost"            # default "wshost"
//! required = false                     # true: refuse to start without NATS
//! presence-interval-ms = 2000          # re-announce local presence this often
//! presence-timeout-ms = 6000           # forget a node not heard from this long
//! publish-buffer = 8192                # messages waiting for NATS; past it, dropped
//! user = "u"                           # credentials: user + password, or token, or
//! password = "p"                       # credentials-file, or nkey (at most one kind)
//! tls-required = false                 # TLS to NATS (also on for tls:// URLs)
//! tls-ca-file = "ca.pem"               # trust this CA besides the system's
//! tls-cert-file = "client.pem"         # client certificate (with tls-key-file)
//! tls-key-file = "client.key"
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Default `presence-interval-ms`.
const DEFAULT_PRESENCE_INTERVAL_MS: u64 = 2_000;
/// Default `presence-timeout-ms`.
const DEFAULT_PRESENCE_TIMEOUT_MS: u64 = 6_000;
/// Default `publish-buffer`.
const DEFAULT_PUBLISH_BUFFER: usize = 8_192;
/// Default `subject-prefix`.
const DEFAULT_SUBJECT_PREFIX: &str = "wshost";

/// Longest node name, in bytes.
const MAX_NAME_BYTES: usize = 128;

/// A validated `[cluster]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS server URLs.
    pub servers: Vec<String>,
    /// This node's name; `None` is the host name and process id.
    pub name: Option<String>,
    /// First tokens of every subject this node uses, e.g. `wshost`.
    pub subject_prefix: String,
    /// Refuse to start when NATS cannot be reached.
    pub required: bool,
    /// How often local presence is re-announced.
    pub presence_interval: Duration,
    /// How long another node's presence lasts without news.
    pub presence_timeout: Duration,
    /// Publications waiting for NATS, at most.
    pub publish_buffer: usize,
    /// How to authenticate.
    pub auth: Auth,
    /// TLS towards NATS.
    pub tls: Tls,
}

/// NATS credentials.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// None.
    #[default]
    None,
    /// `user` and `password`.
    UserPassword(String, String),
    /// `token`.
    Token(String),
    /// `credentials-file`: a `.creds` file (JWT and nkey seed).
    CredentialsFile(PathBuf),
    /// `nkey`: an nkey seed.
    Nkey(String),
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    /// Insist on TLS.
    pub required: bool,
    /// Extra root certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The `[cluster]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawCluster {
    servers: Option<Spanned<Vec<String>>>,
    name: Option<Spanned<String>>,
    subject_prefix: Option<Spanned<String>>,
    #[serde(default)]
    required: bool,
    presence_interval_ms: Option<Spanned<u64>>,
    presence_timeout_ms: Option<Spanned<u64>>,
    publish_buffer: Option<Spanned<u64>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    credentials_file: Option<Spanned<String>>,
    nkey: Option<Spanned<String>>,
    #[serde(default)]
    tls_required: bool,
    tls_ca_file: Option<Spanned<String>>,
    tls_cert_file: Option<Spanned<String>>,
    tls_key_file: Option<Spanned<String>>,
}

impl RawCluster {
    /// Every key of the table.
    pub(crate) const KEYS: &[&str] = &[
        "servers",
        "name",
        "subject-prefix",
        "required",
        "presence-interval-ms",
        "presence-timeout-ms",
        "publish-buffer",
        "user",
        "password",
        "token",
        "credentials-file",
        "nkey",
        "tls-required",
        "tls-ca-file",
        "tls-cert-file",
        "tls-key-file",
    ];

    /// Validates the table (spanning `table`), with paths relative to `base`. An error
    /// is the span to point at and the message, naming the key.
    pub(crate) fn validate(
        &self,
        table: Range<usize>,
        base: &Path,
    ) -> Result<ClusterConfig, (Range<usize>, String)> {
        let servers = self.servers.as_ref().ok_or_else(|| {
            (
                table.clone(),
                "`cluster.servers` is missing: list the NATS server URLs, e.g. `[\"nats://127.0.0.1:4222\"]`"
                    .to_owned(),
            )
        })?;
        if servers.get_ref().is_empty() {
            return Err((
                servers.span(),
                "`cluster.servers` is empty: list at least one NATS server URL".to_owned(),
            ));
        }
        for url in servers.get_ref() {
            url.parse::<async_nats::ServerAddr>().map_err(|e| {
                (
                    servers.span(),
                    format!("`cluster.servers`: `{url}` is not a NATS server URL: {e}"),
                )
            })?;
        }
        let name = match &self.name {
            None => None,
            Some(n) => {
                let value = n.get_ref();
                if value.is_empty()
                    || value.len() > MAX_NAME_BYTES
                    || value.chars().any(char::is_control)
                {
                    return Err((
                        n.span(),
                        format!(
                            "`cluster.name` must be 1 to {MAX_NAME_BYTES} bytes without control characters"
                        ),
                    ));
                }
                Some(value.clone())
            }
        };
        let subject_prefix = match &self.subject_prefix {
            None => DEFAULT_SUBJECT_PREFIX.to_owned(),
            Some(p) => {
                let value = p.get_ref();
                let ok = !value.is_empty()
                    && value.split('.').all(|token| {
                        !token.is_empty()
                            && token
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    });
                if !ok {
                    return Err((
                        p.span(),
                        format!(
                            "`cluster.subject-prefix`: `{value}` must be NATS subject tokens of letters, digits, `-` and `_`, separated by `.`"
                        ),
                    ));
                }
                value.clone()
            }
        };
        let interval = self
            .presence_interval_ms
            .as_ref()
            .map_or(DEFAULT_PRESENCE_INTERVAL_MS, |v| *v.get_ref());
        let timeout = self
            .presence_timeout_ms
            .as_ref()
            .map_or(DEFAULT_PRESENCE_TIMEOUT_MS, |v| *v.get_ref());
        if interval == 0 {
            let span = self
                .presence_interval_ms
                .as_ref()
                .map_or(table.clone(), Spanned::span);
            return Err((
                span,
                "`cluster.presence-interval-ms` must be at least 1".to_owned(),
            ));
        }
        if timeout <= interval {
            let span = self
                .presence_timeout_ms
                .as_ref()
                .map_or(table.clone(), Spanned::span);
            return Err((
                span,
                format!(
                    "`cluster.presence-timeout-ms` ({timeout}) must be more than `presence-interval-ms` ({interval}), or every node would drop out between two announcements"
                ),
            ));
        }
        let publish_buffer = match &self.publish_buffer {
            None => DEFAULT_PUBLISH_BUFFER,
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > 1 << 24 => {
                return Err((
                    v.span(),
                    "`cluster.publish-buffer` must be 1 to 16777216 messages".to_owned(),
                ));
            }
            Some(v) => usize::try_from(*v.get_ref()).unwrap_or(DEFAULT_PUBLISH_BUFFER),
        };
        let auth = self.auth(&table, base)?;
        let path = |v: &Spanned<String>, key: &str| -> Result<PathBuf, (Range<usize>, String)> {
            if v.get_ref().is_empty() {
                return Err((v.span(), format!("`cluster.{key}` is empty")));
            }
            Ok(base.join(v.get_ref()))
        };
        let client = match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                Some((path(cert, "tls-cert-file")?, path(key, "tls-key-file")?))
            }
            (Some(one), None) | (None, Some(one)) => {
                return Err((
                    one.span(),
                    "`cluster.tls-cert-file` and `cluster.tls-key-file` go together".to_owned(),
                ));
            }
        };
        let tls = Tls {
            required: self.tls_required,
            ca_file: self
                .tls_ca_file
                .as_ref()
                .map(|v| path(v, "tls-ca-file"))
                .transpose()?,
            client,
        };
        Ok(ClusterConfig {
            servers: servers.get_ref().clone(),
            name,
            subject_prefix,
            required: self.required,
            presence_interval: Duration::from_millis(interval),
            presence_timeout: Duration::from_millis(timeout),
            publish_buffer,
            auth,
            tls,
        })
    }

    fn auth(&self, table: &Range<usize>, base: &Path) -> Result<Auth, (Range<usize>, String)> {
        let kinds = [
            self.user.is_some() || self.password.is_some(),
            self.token.is_some(),
            self.credentials_file.is_some(),
            self.nkey.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err((
                table.clone(),
                "`cluster`: give one kind of credentials: `user` + `password`, `token`, `credentials-file` or `nkey`".to_owned(),
            ));
        }
        Ok(match (&self.user, &self.password) {
            (Some(user), Some(password)) => {
                Auth::UserPassword(user.get_ref().clone(), password.get_ref().clone())
            }
            (Some(one), None) | (None, Some(one)) => {
                return Err((
                    one.span(),
                    "`cluster.user` and `cluster.password` go together".to_owned(),
                ));
            }
            (None, None) => {
                if let Some(token) = &self.token {
                    Auth::Token(token.get_ref().clone())
                } else if let Some(file) = &self.credentials_file {
                    Auth::CredentialsFile(base.join(file.get_ref()))
                } else if let Some(seed) = &self.nkey {
                    Auth::Nkey(seed.get_ref().clone())
                } else {
                    Auth::None
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, String> {
        let raw: RawCluster = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.validate(0..0, Path::new("/base")).map_err(|(_, m)| m)
    }

    #[test]
    fn defaults_fill_an_almost_empty_table() {
        let config = parse(r#"servers = ["nats://127.0.0.1:4222"]"#).unwrap();
        assert_eq!(config.subject_prefix, "wshost");
        assert_eq!(config.name, None);
        assert!(!config.required);
        assert_eq!(config.presence_interval, Duration::from_secs(2));
        assert_eq!(config.presence_timeout, Duration::from_secs(6));
        assert_eq!(config.publish_buffer, 8192);
        assert_eq!(config.auth, Auth::None);
        assert_eq!(config.tls, Tls::default());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("name = \"x\"", "cluster.servers"),
            ("servers = []", "cluster.servers"),
            ("servers = [\"nats://[::1\"]", "cluster.servers"),
            (
                "servers = [\"n:4222\"]\nsubject-prefix = \"a.*\"",
                "subject-prefix",
            ),
            (
                "servers = [\"n:4222\"]\nsubject-prefix = \"a..b\"",
                "subject-prefix",
            ),
            ("servers = [\"n:4222\"]\nname = \"\"", "cluster.name"),
            (
                "servers = [\"n:4222\"]\npresence-interval-ms = 0",
                "presence-interval-ms",
            ),
            (
                "servers = [\"n:4222\"]\npresence-timeout-ms = 2000",
                "presence-timeout-ms",
            ),
            (
                "servers = [\"n:4222\"]\npublish-buffer = 0",
                "publish-buffer",
            ),
            ("servers = [\"n:4222\"]\nuser = \"u\"", "cluster.password"),
            (
                "servers = [\"n:4222\"]\ntoken = \"t\"\nnkey = \"k\"",
                "one kind",
            ),
            (
                "servers = [\"n:4222\"]\ntls-cert-file = \"c\"",
                "tls-key-file",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn credentials_and_tls_files_are_relative_to_the_routes_file() {
        let config = parse(
            "servers = [\"tls://n:4222\"]\ncredentials-file = \"n.creds\"\ntls-required = true\ntls-ca-file = \"ca.pem\"\ntls-cert-file = \"c.pem\"\ntls-key-file = \"c.key\"",
        )
        .unwrap();
        assert_eq!(config.auth, Auth::CredentialsFile("/base/n.creds".into()));
        assert!(config.tls.required);
        assert_eq!(config.tls.ca_file, Some("/base/ca.pem".into()));
        assert_eq!(
            config.tls.client,
            Some(("/base/c.pem".into(), "/base/c.key".into()))
        );
    }

    #[test]
    fn keys_are_the_accepted_ones() {
        let mut keys = RawCluster::KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(crate::config::accepted_keys::<RawCluster>(), keys);
    }
}
