//! Tokens for the authentication tests: JWTs signed with the test-only keys in
//! tests/fixtures, and the claims they usually carry.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// The HS256 secret the tests configure.
pub(crate) const SECRET: &str = "test-secret-for-the-integration-tests";

/// A path in tests/fixtures.
pub(crate) fn fixture(name: &str) -> PathBuf {
    super::workspace_root()
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// Claims for user `sub` valid for an hour, plus `extra`.
pub(crate) fn claims(sub: &str, extra: Value) -> Value {
    let mut claims = json!({ "sub": sub, "exp": now() + 3600 });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    claims
}

/// A JWT with `claims`, signed with `alg` and the matching test key (`SECRET` for HS256).
pub(crate) fn jwt(alg: Algorithm, claims: &Value) -> String {
    let key =
        match alg {
            Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&read(&fixture("rsa-private.pem")))
                .expect("the RSA test key"),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&read(&fixture("ec-private.pem")))
                .expect("the EC test key"),
            other => panic!("no test key for {other:?}"),
        };
    encode(&Header::new(alg), claims, &key).expect("signing")
}

/// An HS256 JWT signed with an arbitrary secret (e.g. an RSA public key's PEM bytes).
pub(crate) fn hs256_with(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("signing")
}

/// An unsigned token with header `{"alg":"none"}`.
pub(crate) fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url(claims.to_string().as_bytes())
    )
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn read(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
