//! The `bearer` filter: find a token, verify it, and put who it belongs to into the
//! connection's attributes (`user`, `claims.*`).
//!
//! Where the token is looked for, in the configured order (default all three):
//! `header` (`Authorization: Bearer …`), `query` (a query parameter, default
//! `access_token`), `protocol` (a `Sec-WebSocket-Protocol` entry starting with a prefix,
//! default `bearer.`: browsers cannot set headers on `new WebSocket()`, but they can offer
//! sub-protocols). A protocol entry carrying a token is never a route's protocol, so it is
//! never echoed back.
//!
//! Two modes. **JWT** (`algorithm` set): HS256 with a secret from an environment variable
//! (`secret-env`) or a file (`secret-file`), or RS256/ES256 with a PEM public key
//! (`public-key-file`). Only the configured algorithm is accepted, so `alg: none` and
//! algorithm confusion (an HS256 token signed with the RSA public key) are refused;
//! `exp` is required and `exp`/`nbf` are checked with `leeway-secs` (default 5);
//! `issuer`/`audience`, when set, are required: a token without them, or with a value
//! of the wrong type (`aud: 123`, `aud: null`), fails like one with the wrong value
//! (`wrong issuer` / `wrong audience`); `aud` may be a string or an array of strings. The `user-claim` (default `sub`) becomes
//! `user`, and every claim listed in `claims` becomes `claims.NAME` (strings as they are,
//! other JSON values as JSON). **Static** (`tokens-file` set, for development): a file of
//! `TOKEN USER` lines (`#` comments); the token's user becomes `user`.
//!
//! No token: anonymous (no `user`) unless `required = true` (401). A token that fails:
//! 401 with `WWW-Authenticate: Bearer error="invalid_token"`. Once a token was found,
//! every place this filter looks for one (the `Authorization` header, the query
//! parameter, the protocol entries) is removed from what the controller sees: a token is
//! a credential for the host, and a controller that logs its requests must not leak it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use http::HeaderValue;
use http::header::WWW_AUTHENTICATE;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Check;
use crate::request::{Rejection, Request};

/// Keys of `kind = "bearer"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct Raw {
    #[serde(default)]
    from: Option<Vec<Source>>,
    #[serde(default)]
    query_param: Option<String>,
    #[serde(default)]
    protocol_prefix: Option<String>,
    #[serde(default)]
    required: bool,
    // JWT mode
    algorithm: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    public_key_file: Option<PathBuf>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: Option<u64>,
    user_claim: Option<String>,
    #[serde(default)]
    claims: Vec<String>,
    // static mode
    tokens_file: Option<PathBuf>,
}

/// Where a token may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Source {
    /// `Authorization: Bearer TOKEN`.
    Header,
    /// `?access_token=TOKEN` (parameter name configurable).
    Query,
    /// `Sec-WebSocket-Protocol: …, bearer.TOKEN` (prefix configurable).
    Protocol,
}

/// A configured bearer filter.
pub struct BearerFilter {
    from: Vec<Source>,
    query_param: String,
    protocol_prefix: String,
    required: bool,
    verifier: Verifier,
}

enum Verifier {
    Jwt {
        key: Box<DecodingKey>,
        validation: Box<Validation>,
        issuer: Option<String>,
        audience: Option<String>,
        user_claim: String,
        claims: Vec<String>,
    },
    Static(HashMap<String, String>),
}

impl std::fmt::Debug for BearerFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.verifier {
            Verifier::Jwt { .. } => "jwt",
            Verifier::Static(_) => "static",
        };
        f.debug_struct("BearerFilter")
            .field("from", &self.from)
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

impl BearerFilter {
    /// Validates the keys and loads secrets, keys and token files (paths relative to
    /// `base`).
    pub(super) fn new(raw: Raw, base: &Path) -> Result<Self, String> {
        let verifier = match (&raw.algorithm, &raw.tokens_file) {
            (Some(_), Some(_)) => {
                return Err(
                    "set either `algorithm` (JWT) or `tokens-file` (static tokens), not both"
                        .to_owned(),
                );
            }
            (None, None) => {
                return Err("set `algorithm` (JWT) or `tokens-file` (static tokens)".to_owned());
            }
            (None, Some(file)) => Verifier::Static(read_tokens(&base.join(file))?),
            (Some(alg), None) => jwt_verifier(&raw, alg, base)?,
        };
        Ok(Self {
            from: raw
                .from
                .unwrap_or_else(|| vec![Source::Header, Source::Query, Source::Protocol]),
            query_param: raw.query_param.unwrap_or_else(|| "access_token".to_owned()),
            protocol_prefix: raw.protocol_prefix.unwrap_or_else(|| "bearer.".to_owned()),
            required: raw.required,
            verifier,
        })
    }

    /// Finds and checks the token; adds `user` and `claims.*` on success, and records
    /// where tokens are to be removed from.
    pub(super) fn check(&self, cx: &mut Check<'_>) -> Result<(), Rejection> {
        let Some(token) = self.find_token(cx.request) else {
            return if self.required {
                Err(Rejection::new(401, "a bearer token is required")
                    .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")))
            } else {
                Ok(())
            };
        };
        for source in &self.from {
            match source {
                Source::Header => cx.consumed.authorization = true,
                Source::Query => cx.consumed.query_params.push(self.query_param.clone()),
                Source::Protocol => cx
                    .consumed
                    .protocol_prefixes
                    .push(self.protocol_prefix.clone()),
            }
        }
        let verified = match &self.verifier {
            Verifier::Static(tokens) => tokens
                .get(&token)
                .map(|user| {
                    cx.attributes.set("user", user.clone());
                })
                .ok_or_else(|| "unknown token".to_owned()),
            Verifier::Jwt {
                key,
                validation,
                issuer,
                audience,
                user_claim,
                claims,
            } => verify_jwt(
                &token,
                key,
                validation,
                issuer.as_deref(),
                audience.as_deref(),
            )
            .map(|payload| {
                if let Some(user) = payload.get(user_claim) {
                    cx.attributes.set("user", claim_text(user));
                }
                for name in claims {
                    if let Some(value) = payload.get(name) {
                        cx.attributes
                            .set(format!("claims.{name}"), claim_text(value));
                    }
                }
                cx.claims = payload;
            }),
        };
        verified.map_err(|why| {
            Rejection::new(401, format!("invalid token: {why}")).with_header(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            )
        })
    }

    fn find_token(&self, request: &Request) -> Option<String> {
        self.from.iter().find_map(|source| match source {
            Source::Header => request
                .header("authorization")
                .and_then(|v| {
                    let (scheme, token) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                })
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            Source::Query => query_param(&request.query, &self.query_param),
            Source::Protocol => request
                .header_items("sec-websocket-protocol")
                .find_map(|p| p.strip_prefix(self.protocol_prefix.as_str()))
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        })
    }
}

/// An HS256 filter's secret, from `secret-env` (an environment variable) or
/// `secret-file` (relative to `base`, trailing line breaks removed): exactly one of them,
/// and not empty. The error names the key.
pub fn hs256_secret(
    secret_env: Option<&str>,
    secret_file: Option<&Path>,
    base: &Path,
) -> Result<String, String> {
    let secret = match (secret_env, secret_file) {
        (Some(var), None) => std::env::var(var)
            .map_err(|_| format!("`secret-env`: environment variable `{var}` is not set"))?,
        (None, Some(file)) => {
            let path = base.join(file);
            std::fs::read_to_string(&path)
                .map_err(|e| format!("`secret-file`: cannot read `{}`: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned()
        }
        _ => return Err("HS256 needs exactly one of `secret-env` or `secret-file`".to_owned()),
    };
    if secret.is_empty() {
        return Err("the HS256 secret is empty".to_owned());
    }
    Ok(secret)
}

fn jwt_verifier(raw: &Raw, alg: &str, base: &Path) -> Result<Verifier, String> {
    let algorithm = match alg {
        "HS256" => Algorithm::HS256,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => {
            return Err(format!(
                "`algorithm`: `{other}` is not supported; use `HS256`, `RS256` or `ES256`"
            ));
        }
    };
    let key = match algorithm {
        Algorithm::HS256 => {
            let secret = hs256_secret(raw.secret_env.as_deref(), raw.secret_file.as_deref(), base)?;
            DecodingKey::from_secret(secret.as_bytes())
        }
        _ => {
            let file = raw
                .public_key_file
                .as_ref()
                .ok_or_else(|| format!("{alg} needs `public-key-file` (a PEM public key)"))?;
            let path = base.join(file);
            let pem = std::fs::read(&path)
                .map_err(|e| format!("`public-key-file`: cannot read `{}`: {e}", path.display()))?;
            let key = if algorithm == Algorithm::RS256 {
                DecodingKey::from_rsa_pem(&pem)
            } else {
                DecodingKey::from_ec_pem(&pem)
            };
            key.map_err(|e| {
                format!(
                    "`public-key-file`: `{}` is not a {alg} PEM key: {e}",
                    path.display()
                )
            })?
        }
    };
    let mut validation = Validation::new(algorithm);
    validation.leeway = raw.leeway_secs.unwrap_or(5);
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    // `iss` and `aud` are checked by `verify_jwt`, which requires them when configured:
    // the library checks them only when the token has them.
    validation.validate_aud = false;
    Ok(Verifier::Jwt {
        key: Box::new(key),
        validation: Box::new(validation),
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
        user_claim: raw.user_claim.clone().unwrap_or_else(|| "sub".to_owned()),
        claims: raw.claims.clone(),
    })
}

/// The claims of a token whose signature, algorithm, `exp`/`nbf`, and (when configured)
/// `iss` and `aud` are right.
fn verify_jwt(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<Map<String, Value>, String> {
    let payload = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map_err(|e| describe(&e))?
        .claims;
    if let Some(issuer) = issuer
        && payload.get("iss").and_then(Value::as_str) != Some(issuer)
    {
        return Err("wrong issuer".to_owned());
    }
    if let Some(audience) = audience {
        let listed = match payload.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(list)) => {
                list.iter().all(Value::is_string)
                    && list.iter().any(|a| a.as_str() == Some(audience))
            }
            _ => false,
        };
        if !listed {
            return Err("wrong audience".to_owned());
        }
    }
    Ok(payload)
}

fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "expired".to_owned(),
        ErrorKind::ImmatureSignature => "not valid yet".to_owned(),
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm => "algorithm not accepted".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience".to_owned(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim `{c}`"),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "malformed token".to_owned(),
        _ => "rejected".to_owned(),
    }
}

fn claim_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn read_tokens(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("`tokens-file`: cannot read `{}`: {e}", path.display()))?;
    let mut tokens = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(token), Some(user), None) => {
                tokens.insert(token.to_owned(), user.to_owned());
            }
            _ => {
                return Err(format!(
                    "`tokens-file`: {}:{}: expected `TOKEN USER`",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    Ok(tokens)
}

/// The decoded value of query parameter `name`.
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1]).zip(hex(bytes[i + 2])),
            _ => None,
        };
        match decoded {
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_and_decoded() {
        assert_eq!(
            query_param("a=1&access_token=x%2Ey", "access_token").as_deref(),
            Some("x.y")
        );
        assert_eq!(query_param("access_token=", "access_token"), None);
        assert_eq!(query_param("", "access_token"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("a+b%20c%C3%A9"), "a b cé");
    }
}
