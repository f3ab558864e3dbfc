//! `wshost token ROUTES --sub USER [--claim NAME=VALUE]...`: mints a JWT that a `bearer`
//! filter of a routes.toml accepts, so that guarded routes can be tried in a minute.
//! For development: a real deployment gets its tokens from an identity provider.
//!
//! The filter is found in the file: `--filter NAME` names a `[filters.NAME]` table;
//! otherwise the file must have exactly one JWT `bearer` filter (named, global, or
//! inline in a route). HS256 filters are signed with their own secret (`secret-env` or
//! `secret-file`); RS256 and ES256 filters verify with a public key, so they need
//! `--private-key FILE`. The token carries `sub`, `exp` (now + `--ttl-secs`), the
//! filter's `issuer` and `audience` when it has them, and every `--claim` (a value that
//! parses as JSON is taken as JSON, anything else as a string).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

/// What to mint.
pub(crate) struct Request {
    /// The routes file whose filter must accept the token.
    pub(crate) routes: PathBuf,
    /// `[filters.NAME]` to mint for, when the file has several bearer filters.
    pub(crate) filter: Option<String>,
    /// The `sub` claim (the filter's default `user-claim`).
    pub(crate) sub: String,
    /// Extra claims, `NAME=VALUE`.
    pub(crate) claims: Vec<String>,
    /// Seconds until `exp`.
    pub(crate) ttl_secs: u64,
    /// PEM private key for RS256/ES256 filters.
    pub(crate) private_key: Option<PathBuf>,
}

/// A bearer filter's table and where it is in the file.
struct Found {
    place: String,
    table: toml::Table,
}

/// The signed token.
pub(crate) fn mint(request: &Request) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&request.routes)
        .with_context(|| format!("cannot read `{}`", request.routes.display()))?;
    let file: toml::Table = text
        .parse()
        .with_context(|| format!("`{}` is not valid TOML", request.routes.display()))?;
    let base = request.routes.parent().unwrap_or(Path::new("."));
    let found = pick(bearer_filters(&file), request.filter.as_deref())?;
    let table = &found.table;
    let text_key = |key: &str| table.get(key).and_then(toml::Value::as_str);
    let algorithm = match text_key("algorithm") {
        Some("HS256") => Algorithm::HS256,
        Some("RS256") => Algorithm::RS256,
        Some("ES256") => Algorithm::ES256,
        Some(other) => bail!("{}: algorithm `{other}` is not supported", found.place),
        None => bail!(
            "{} uses static tokens (`tokens-file`): its tokens are in that file",
            found.place
        ),
    };
    let key = match (algorithm, &request.private_key) {
        (_, Some(pem_file)) => {
            let pem = std::fs::read(pem_file)
                .with_context(|| format!("cannot read `{}`", pem_file.display()))?;
            match algorithm {
                Algorithm::HS256 => bail!("{} is HS256: it needs no private key", found.place),
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                _ => EncodingKey::from_ec_pem(&pem),
            }
            .with_context(|| format!("`{}` is not a PEM private key", pem_file.display()))?
        }
        (Algorithm::HS256, None) => {
            EncodingKey::from_secret(secret(table, base, &found.place)?.as_bytes())
        }
        (_, None) => bail!(
            "{} verifies {algorithm:?} tokens with a public key; pass the matching `--private-key FILE`",
            found.place
        ),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let mut claims = Map::new();
    claims.insert("sub".to_owned(), Value::from(request.sub.clone()));
    claims.insert("iat".to_owned(), Value::from(now));
    claims.insert("exp".to_owned(), Value::from(now + request.ttl_secs));
    for (claim, key) in [("iss", "issuer"), ("aud", "audience")] {
        if let Some(value) = text_key(key) {
            claims.insert(claim.to_owned(), Value::from(value));
        }
    }
    for pair in &request.claims {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("`--claim {pair}`: expected NAME=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
        claims.insert(name.to_owned(), value);
    }
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).context("signing the token")
}

/// The HS256 secret of a filter, read as the filter reads it.
fn secret(table: &toml::Table, base: &Path, place: &str) -> anyhow::Result<String> {
    let text_key = |key: &str| table.get(key).and_then(toml::Value::as_str);
    wshost::filter::hs256_secret(
        text_key("secret-env"),
        text_key("secret-file").map(Path::new),
        base,
    )
    .map_err(|why| anyhow::anyhow!("{place}: {why}"))
}

/// Every `kind = "bearer"` table of the file, with where it is.
fn bearer_filters(file: &toml::Table) -> Vec<(Option<String>, Found)> {
    let is_bearer = |t: &toml::Table| t.get("kind").and_then(toml::Value::as_str) == Some("bearer");
    let mut found = Vec::new();
    if let Some(named) = file.get("filters").and_then(toml::Value::as_table) {
        for (name, value) in named {
            if let Some(table) = value.as_table().filter(|t| is_bearer(t)) {
                let place = format!("`[filters.{name}]`");
                found.push((
                    Some(name.clone()),
                    Found {
                        place,
                        table: table.clone(),
                    },
                ));
            }
        }
    }
    let arrays = [("filter", None), ("route", Some("filters"))];
    for (array, inner) in arrays {
        let entries = file.get(array).and_then(toml::Value::as_array);
        for (i, entry) in entries.into_iter().flatten().enumerate() {
            let Some(entry) = entry.as_table() else {
                continue;
            };
            match inner {
                None if is_bearer(entry) => {
                    let place = format!("`{array}[{i}]`");
                    found.push((
                        None,
                        Found {
                            place,
                            table: entry.clone(),
                        },
                    ));
                }
                None => {}
                Some(key) => {
                    let list = entry.get(key).and_then(toml::Value::as_array);
                    for (j, item) in list.into_iter().flatten().enumerate() {
                        if let Some(table) = item.as_table().filter(|t| is_bearer(t)) {
                            let place = format!("`{array}[{i}].{key}[{j}]`");
                            found.push((
                                None,
                                Found {
                                    place,
                                    table: table.clone(),
                                },
                            ));
                        }
                    }
                }
            }
        }
    }
    found
}

/// The filter `wanted` names, or the only JWT filter.
fn pick(filters: Vec<(Option<String>, Found)>, wanted: Option<&str>) -> anyhow::Result<Found> {
    if let Some(wanted) = wanted {
        return filters
            .into_iter()
            .find(|(name, _)| name.as_deref() == Some(wanted))
            .map(|(_, found)| found)
            .with_context(|| format!("no `[filters.{wanted}]` with `kind = \"bearer\"`"));
    }
    let mut jwt: Vec<Found> = filters
        .into_iter()
        .map(|(_, found)| found)
        .filter(|f| f.table.contains_key("algorithm"))
        .collect();
    match jwt.len() {
        0 => bail!("the file has no JWT `bearer` filter (one with `algorithm`)"),
        1 => Ok(jwt.remove(0)),
        _ => {
            let places: Vec<&str> = jwt.iter().map(|f| f.place.as_str()).collect();
            bail!(
                "the file has several JWT bearer filters ({}); name one with `--filter NAME`",
                places.join(", ")
            )
        }
    }
}
