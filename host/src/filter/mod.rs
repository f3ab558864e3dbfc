//! Request filters: checks that run on an upgrade request after it is routed and before
//! the `101`, each of which may refuse it with an HTTP answer or add attributes the
//! controller will see.
//!
//! Order: the global `[[filter]]` entries in file order (each only for paths its `match`
//! accepts), then the route's own `filters` in order; the first refusal ends the request.
//! A route's filters run only for requests that route serves. Kinds: `deny`, `origin`,
//! `bearer`, `authorize`, `header`, `query`, `rate-limit`; each kind's keys are
//! documented on its type and in docs/reference/routes-toml.md.

mod bearer;
mod origin;
pub mod proxy;
mod query;
mod rate_limit;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use http::HeaderValue;
use http::header::WWW_AUTHENTICATE;
use serde::Deserialize;
use serde_json::Value;

pub use bearer::{BearerFilter, hs256_secret};
pub use origin::OriginFilter;
pub use query::QueryFilter;
pub use rate_limit::{ClientKey, RateLimit};

use crate::request::{Attributes, Rejection, Request};
use proxy::Client;

/// One configured filter.
#[derive(Debug)]
pub enum Filter {
    /// Refuse with a fixed answer.
    Deny {
        /// HTTP status (default 403).
        status: u16,
        /// Body (default "Forbidden").
        body: String,
    },
    /// Allow only listed origins.
    Origin(OriginFilter),
    /// Authenticate a bearer token.
    Bearer(Box<BearerFilter>),
    /// Require a user, and optionally claim values.
    Authorize(Authorize),
    /// Require a header value and/or copy a header into an attribute.
    Header(HeaderFilter),
    /// Copy a query parameter into an attribute.
    Query(QueryFilter),
    /// Limit new connections per client address.
    RateLimit(RateLimit),
}

/// `kind = "authorize"`: requires a `user` attribute (401 without), and for each entry
/// of `claims`, that the verified token's claim NAME equals one of the listed values
/// (403 otherwise). Values compare with their JSON types: `role = ["admin"]` is met by
/// the string claim `"admin"` or an array claim holding `"admin"`, never by the string
/// `'["admin"]'`; `level = [3]` needs the number 3. Only claims a `bearer` filter
/// verified count: an attribute named `claims.role` set any other way (a `header`
/// filter's `attribute`) is not a claim.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorize {
    #[serde(default)]
    claims: BTreeMap<String, Vec<Value>>,
}

/// `kind = "header"`: `name` (required) is the header; `equals` or `one-of` restrict its
/// value, `required` (default: true when a value is restricted) refuses requests
/// without it, with `status` (default 403); `attribute` copies its value into that
/// attribute when present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HeaderFilter {
    name: String,
    equals: Option<String>,
    one_of: Option<Vec<String>>,
    required: Option<bool>,
    attribute: Option<String>,
    status: Option<u16>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum RawFilter {
    Deny(RawDeny),
    Origin(origin::Raw),
    Bearer(Box<bearer::Raw>),
    Authorize(Authorize),
    Header(HeaderFilter),
    Query(QueryFilter),
    RateLimit(rate_limit::Raw),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeny {
    status: Option<u16>,
    body: Option<String>,
}

/// The keys of each filter kind besides `kind`, as `(kind = "...", keys)`: what serde
/// accepts (a unit test keeps them equal), listed by [`crate::config::keys`].
pub(crate) const KEYS: &[(&str, &[&str])] = &[
    ("kind = \"deny\"", &["status", "body"]),
    ("kind = \"origin\"", &["allow", "allow-missing"]),
    (
        "kind = \"bearer\"",
        &[
            "from",
            "query-param",
            "protocol-prefix",
            "required",
            "algorithm",
            "secret-env",
            "secret-file",
            "public-key-file",
            "issuer",
            "audience",
            "leeway-secs",
            "user-claim",
            "claims",
            "tokens-file",
        ],
    ),
    ("kind = \"authorize\"", &["claims"]),
    (
        "kind = \"header\"",
        &[
            "name",
            "equals",
            "one-of",
            "required",
            "attribute",
            "status",
        ],
    ),
    ("kind = \"query\"", &["name", "attribute", "max-bytes"]),
    (
        "kind = \"rate-limit\"",
        &["max", "window-secs", "ipv6-prefix", "max-clients"],
    ),
];

/// What a filter sees and may change.
pub struct Check<'a> {
    /// The request.
    pub request: &'a Request,
    /// The effective client.
    pub client: &'a Client,
    /// Attributes so far; filters add to them.
    pub attributes: &'a mut Attributes,
    /// The claims of the token a `bearer` filter verified, with their JSON types.
    pub claims: serde_json::Map<String, Value>,
    /// Where credentials were found, to remove before the controller sees the request.
    pub consumed: Consumed,
    /// The time of the check (for rate limits).
    pub now: Instant,
}

/// The places a `bearer` filter took a token from. A token is for the host, not the
/// controller: [`Consumed::strip`] removes them from the headers and query the
/// controller (its `connection-info` and its handshake hook) sees.
#[derive(Debug, Default)]
pub struct Consumed {
    /// The `Authorization` header.
    authorization: bool,
    /// Query parameters by name.
    query_params: Vec<String>,
    /// `Sec-WebSocket-Protocol` entries by prefix.
    protocol_prefixes: Vec<String>,
}

impl Consumed {
    /// `request`'s headers and query without the consumed credentials.
    pub fn strip(&self, request: &Request) -> (Vec<(String, String)>, String) {
        let mut headers = Vec::with_capacity(request.headers.len());
        for (name, value) in &request.headers {
            match name.as_str() {
                "authorization" if self.authorization => {}
                "sec-websocket-protocol" if !self.protocol_prefixes.is_empty() => {
                    let kept: Vec<&str> = value
                        .split(',')
                        .map(str::trim)
                        .filter(|p| {
                            !p.is_empty()
                                && !self
                                    .protocol_prefixes
                                    .iter()
                                    .any(|x| p.starts_with(x.as_str()))
                        })
                        .collect();
                    if !kept.is_empty() {
                        headers.push((name.clone(), kept.join(", ")));
                    }
                }
                _ => headers.push((name.clone(), value.clone())),
            }
        }
        let query = if self.query_params.is_empty() {
            request.query.clone()
        } else {
            request
                .query
                .split('&')
                .filter(|pair| {
                    let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
                    !self.query_params.iter().any(|name| name == key)
                })
                .collect::<Vec<_>>()
                .join("&")
        };
        (headers, query)
    }
}

impl Filter {
    /// Builds a filter from its routes.toml table (`kind` plus the kind's keys); file
    /// paths inside are relative to `base`. The error names the key at fault.
    pub fn from_toml(value: toml::Value, base: &Path) -> Result<Self, String> {
        let raw: RawFilter = value
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_owned())?;
        Ok(match raw {
            RawFilter::Deny(d) => {
                let status = d.status.unwrap_or(403);
                if !(400..=599).contains(&status) {
                    return Err(format!(
                        "`status`: {status} is not an HTTP error status (400-599)"
                    ));
                }
                Self::Deny {
                    status,
                    body: d.body.unwrap_or_else(|| "Forbidden".to_owned()),
                }
            }
            RawFilter::Origin(o) => Self::Origin(OriginFilter::new(o)?),
            RawFilter::Bearer(b) => Self::Bearer(Box::new(BearerFilter::new(*b, base)?)),
            RawFilter::Authorize(a) => Self::Authorize(a),
            RawFilter::Header(h) => {
                if h.status.is_some_and(|s| !(400..=599).contains(&s)) {
                    return Err("`status` must be an HTTP error status (400-599)".to_owned());
                }
                Self::Header(HeaderFilter {
                    name: h.name.to_ascii_lowercase(),
                    ..h
                })
            }
            RawFilter::Query(q) => Self::Query(q.validate()?),
            RawFilter::RateLimit(r) => Self::RateLimit(RateLimit::new(r)?),
        })
    }

    /// The filter's `kind` in routes.toml.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Deny { .. } => "deny",
            Self::Origin(_) => "origin",
            Self::Bearer(_) => "bearer",
            Self::Authorize(_) => "authorize",
            Self::Header(_) => "header",
            Self::Query(_) => "query",
            Self::RateLimit(_) => "rate-limit",
        }
    }

    /// Runs the filter.
    pub fn check(&self, cx: &mut Check<'_>) -> Result<(), Rejection> {
        match self {
            Self::Deny { status, body } => Err(Rejection::new(*status, body.clone())),
            Self::Origin(f) => f.check(cx.request.header("origin")),
            Self::Bearer(f) => f.check(cx),
            Self::Authorize(f) => f.check(cx.attributes, &cx.claims),
            Self::Header(f) => f.check(cx.request, cx.attributes),
            Self::Query(f) => f.check(cx.request, cx.attributes),
            Self::RateLimit(f) => f.check(cx.client.ip, cx.now),
        }
    }
}

impl Authorize {
    fn check(
        &self,
        attributes: &Attributes,
        claims: &serde_json::Map<String, Value>,
    ) -> Result<(), Rejection> {
        if attributes.get("user").is_none() {
            return Err(Rejection::new(401, "authentication required")
                .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        for (claim, allowed) in &self.claims {
            let ok = match claims.get(claim) {
                Some(Value::Array(items)) => items.iter().any(|item| allowed.contains(item)),
                Some(value) => allowed.contains(value),
                None => false,
            };
            if !ok {
                return Err(Rejection::new(403, "not authorized"));
            }
        }
        Ok(())
    }
}

impl HeaderFilter {
    fn check(&self, request: &Request, attributes: &mut Attributes) -> Result<(), Rejection> {
        let value = request.header(&self.name);
        let restricted = self.equals.is_some() || self.one_of.is_some();
        let refuse = || {
            Err(Rejection::new(
                self.status.unwrap_or(403),
                format!("header `{}` missing or not allowed", self.name),
            ))
        };
        match value {
            None if self.required.unwrap_or(restricted) => return refuse(),
            None => return Ok(()),
            Some(v) => {
                let listed = self.equals.as_deref().is_none_or(|e| e == v)
                    && self
                        .one_of
                        .as_ref()
                        .is_none_or(|list| list.iter().any(|e| e == v));
                if !listed {
                    return refuse();
                }
                if let Some(name) = &self.attribute {
                    attributes.set(name.clone(), v);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(toml_text: &str) -> Result<Filter, String> {
        let value: toml::Value = toml::from_str(toml_text).unwrap();
        Filter::from_toml(value, Path::new("/nonexistent"))
    }

    #[test]
    fn key_lists_match_what_serde_accepts() {
        use crate::config::accepted_keys;
        let accepted = [
            accepted_keys::<RawDeny>(),
            accepted_keys::<origin::Raw>(),
            accepted_keys::<bearer::Raw>(),
            accepted_keys::<Authorize>(),
            accepted_keys::<HeaderFilter>(),
            accepted_keys::<QueryFilter>(),
            accepted_keys::<rate_limit::Raw>(),
        ];
        assert_eq!(KEYS.len(), accepted.len());
        for ((kind, keys), accepted) in KEYS.iter().zip(accepted) {
            let mut keys = keys.to_vec();
            keys.sort_unstable();
            assert_eq!(keys, accepted, "{kind}");
        }
        // The kinds themselves: serde names them in its unknown-variant error.
        let error = filter("kind = \"surely-not-a-kind\"").unwrap_err();
        let kinds: Vec<String> = KEYS
            .iter()
            .map(|(kind, _)| kind.trim_start_matches("kind = ").replace('"', "`"))
            .collect();
        assert!(
            error.ends_with(&format!("expected one of {}", kinds.join(", "))),
            "{error}"
        );
    }

    fn run(f: &Filter, headers: &[(&str, &str)], attrs: &mut Attributes) -> Result<(), Rejection> {
        run_with_claims(f, headers, attrs, serde_json::Map::new())
    }

    fn run_with_claims(
        f: &Filter,
        headers: &[(&str, &str)],
        attrs: &mut Attributes,
        claims: serde_json::Map<String, Value>,
    ) -> Result<(), Rejection> {
        let request = Request::get(headers);
        let client = Client {
            ip: "127.0.0.1".parse().unwrap(),
            display: "127.0.0.1:1".to_owned(),
        };
        f.check(&mut Check {
            request: &request,
            client: &client,
            attributes: attrs,
            claims,
            consumed: Consumed::default(),
            now: Instant::now(),
        })
    }

    #[test]
    fn unknown_kinds_and_keys_are_named() {
        assert!(
            filter("kind = 'nope'")
                .unwrap_err()
                .contains("unknown variant `nope`")
        );
        assert!(
            filter("kind = 'origin'\nalow = []")
                .unwrap_err()
                .contains("unknown field `alow`")
        );
        assert!(
            filter("kind = 'deny'\nstatus = 200")
                .unwrap_err()
                .contains("`status`")
        );
        assert!(
            filter("kind = 'bearer'")
                .unwrap_err()
                .contains("`algorithm`")
        );
        assert!(
            filter("kind = 'bearer'\nalgorithm = 'none'")
                .unwrap_err()
                .contains("not supported")
        );
    }

    #[test]
    fn deny_answers_its_status_and_body() {
        let f = filter("kind = 'deny'\nstatus = 451\nbody = 'gone'").unwrap();
        let r = run(&f, &[], &mut Attributes::default()).unwrap_err();
        assert_eq!((r.status, r.body.as_str()), (451, "gone"));
    }

    #[test]
    fn authorize_needs_a_user_and_listed_claims_of_the_right_type() {
        let f = filter("kind = 'authorize'\nclaims = { role = ['admin'], level = [3] }").unwrap();
        assert_eq!(
            run(&f, &[], &mut Attributes::default()).unwrap_err().status,
            401
        );
        let mut attrs: Attributes = [("user", "ann")].into_iter().collect();
        assert_eq!(run(&f, &[], &mut attrs).unwrap_err().status, 403);
        let claims = |v: Value| v.as_object().unwrap().clone();
        let ok = |c| run_with_claims(&f, &[], &mut attrs.clone(), claims(c)).is_ok();
        assert!(ok(serde_json::json!({ "role": "admin", "level": 3 })));
        assert!(ok(
            serde_json::json!({ "role": ["user", "admin"], "level": [1, 3] })
        ));
        assert!(
            !ok(serde_json::json!({ "role": "[\"admin\"]", "level": 3 })),
            "a string is not a list"
        );
        assert!(
            !ok(serde_json::json!({ "role": "admin", "level": "3" })),
            "a string is not a number"
        );
        assert!(!ok(serde_json::json!({ "role": "admin" })), "missing claim");
        // An attribute named like a claim (a header filter can set one) is not a claim.
        attrs.set("claims.role", "admin");
        attrs.set("claims.level", "3");
        assert_eq!(run(&f, &[], &mut attrs).unwrap_err().status, 403);
    }

    #[test]
    fn consumed_credentials_are_stripped() {
        let request = Request {
            method: "GET".to_owned(),
            path: "/".to_owned(),
            query: "a=1&access_token=secret&b=2".to_owned(),
            minor_version: 1,
            headers: vec![
                ("authorization".to_owned(), "Bearer secret".to_owned()),
                (
                    "sec-websocket-protocol".to_owned(),
                    "chat, bearer.secret".to_owned(),
                ),
                ("x-other".to_owned(), "kept".to_owned()),
            ],
        };
        let consumed = Consumed {
            authorization: true,
            query_params: vec!["access_token".to_owned()],
            protocol_prefixes: vec!["bearer.".to_owned()],
        };
        let (headers, query) = consumed.strip(&request);
        assert_eq!(query, "a=1&b=2");
        assert_eq!(
            headers,
            [
                ("sec-websocket-protocol".to_owned(), "chat".to_owned()),
                ("x-other".to_owned(), "kept".to_owned())
            ]
        );
        assert_eq!(Consumed::default().strip(&request).0, request.headers);
    }

    #[test]
    fn query_copies_a_bounded_value_and_never_replaces() {
        let f = filter("kind = 'query'\nname = 'name'\nattribute = 'user'\nmax-bytes = 8").unwrap();
        let run_query = |query: &str, attrs: &mut Attributes| {
            let request = Request {
                method: "GET".to_owned(),
                path: "/".to_owned(),
                query: query.to_owned(),
                minor_version: 1,
                headers: Vec::new(),
            };
            f.check(&mut Check {
                request: &request,
                client: &Client {
                    ip: "127.0.0.1".parse().unwrap(),
                    display: "127.0.0.1:1".to_owned(),
                },
                attributes: attrs,
                claims: serde_json::Map::new(),
                consumed: Consumed::default(),
                now: Instant::now(),
            })
        };
        let mut attrs = Attributes::default();
        run_query("x=1&name=Ada%20L", &mut attrs).unwrap();
        assert_eq!(attrs.get("user"), Some("Ada L"));
        let mut verified = Attributes::default();
        verified.set("user", "alice");
        run_query("name=mallory", &mut verified).unwrap();
        assert_eq!(verified.get("user"), Some("alice"));
        let mut none = Attributes::default();
        run_query("other=1", &mut none).unwrap();
        assert_eq!(none.get("user"), None);
        for bad in ["name=123456789", "name=a%0Ab"] {
            assert_eq!(
                run_query(bad, &mut Attributes::default())
                    .unwrap_err()
                    .status,
                400
            );
        }
        assert!(
            filter("kind = 'query'\nname = 'n'").is_err(),
            "attribute is required"
        );
    }

    #[test]
    fn header_requires_and_copies() {
        let f = filter("kind = 'header'\nname = 'X-Key'\none-of = ['a', 'b']\nattribute = 'key'")
            .unwrap();
        assert_eq!(
            run(&f, &[], &mut Attributes::default()).unwrap_err().status,
            403
        );
        assert_eq!(
            run(&f, &[("x-key", "c")], &mut Attributes::default())
                .unwrap_err()
                .status,
            403
        );
        let mut attrs = Attributes::default();
        assert!(run(&f, &[("x-key", "b")], &mut attrs).is_ok());
        assert_eq!(attrs.get("key"), Some("b"));
        let copy_only = filter("kind = 'header'\nname = 'x-tenant'\nattribute = 'tenant'").unwrap();
        assert!(run(&copy_only, &[], &mut Attributes::default()).is_ok());
    }
}
