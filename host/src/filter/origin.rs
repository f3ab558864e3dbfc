//! The `origin` filter: only browsers on listed sites may connect.
//!
//! An allowlist entry is a host (`example.com`), optionally with a scheme
//! (`https://example.com`) and/or a port (`example.com:8443`); `*.example.com` matches
//! every subdomain (but not `example.com` itself: list both if both are wanted). A part
//! the entry leaves out matches anything. Comparison is case-insensitive. A request
//! without `Origin` is refused unless `allow-missing = true` (for non-browser clients,
//! which send no Origin); `Origin: null` (sandboxed frames, files) is never listed.

use serde::Deserialize;

use crate::request::Rejection;

/// Keys of `kind = "origin"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct Raw {
    allow: Vec<String>,
    #[serde(default)]
    allow_missing: bool,
}

/// A compiled origin allowlist.
#[derive(Debug)]
pub struct OriginFilter {
    allow: Vec<Pattern>,
    allow_missing: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct Pattern {
    scheme: Option<String>,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.suffix`: stores `.suffix`.
    Subdomains(String),
}

/// A parsed `Origin` header value.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl OriginFilter {
    pub(super) fn new(raw: Raw) -> Result<Self, String> {
        let allow = raw
            .allow
            .iter()
            .map(|entry| {
                parse_pattern(entry).ok_or_else(|| {
                    format!("`allow`: `{entry}` is not a host, `*.host`, or `scheme://host[:port]`")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            allow,
            allow_missing: raw.allow_missing,
        })
    }

    /// Refuses with 403 a missing (unless allowed) or unlisted origin.
    pub(super) fn check(&self, origin: Option<&str>) -> Result<(), Rejection> {
        let Some(origin) = origin else {
            return if self.allow_missing {
                Ok(())
            } else {
                Err(Rejection::new(403, "Origin not provided"))
            };
        };
        let allowed =
            parse_origin(origin).is_some_and(|o| self.allow.iter().any(|p| p.matches(&o)));
        if allowed {
            Ok(())
        } else {
            Err(Rejection::new(403, "Origin not allowed"))
        }
    }
}

impl Pattern {
    fn matches(&self, origin: &Origin) -> bool {
        self.scheme.as_ref().is_none_or(|s| *s == origin.scheme)
            && self.port.is_none_or(|p| p == origin.port)
            && match &self.host {
                HostPattern::Exact(host) => *host == origin.host,
                HostPattern::Subdomains(suffix) => {
                    origin.host.len() > suffix.len() && origin.host.ends_with(suffix.as_str())
                }
            }
    }
}

fn parse_pattern(entry: &str) -> Option<Pattern> {
    let entry = entry.trim().to_ascii_lowercase();
    let (scheme, rest) = match entry.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_owned()), rest),
        None => (None, entry.as_str()),
    };
    let (host, port) = split_port(rest)?;
    let host = match host.strip_prefix("*.") {
        Some(suffix) if is_host(suffix) => HostPattern::Subdomains(format!(".{suffix}")),
        None if is_host(host) => HostPattern::Exact(host.to_owned()),
        _ => return None,
    };
    Some(Pattern { scheme, host, port })
}

fn parse_origin(value: &str) -> Option<Origin> {
    let value = value.trim().to_ascii_lowercase();
    let (scheme, rest) = value.split_once("://")?;
    let (host, port) = split_port(rest)?;
    if !is_host(host) {
        return None;
    }
    let port = match port {
        Some(p) => p,
        None => match scheme {
            "http" | "ws" => 80,
            "https" | "wss" => 443,
            _ => 0,
        },
    };
    Some(Origin {
        scheme: scheme.to_owned(),
        host: host.to_owned(),
        port,
    })
}

/// Splits `host[:port]` (IPv6 hosts in brackets).
fn split_port(s: &str) -> Option<(&str, Option<u16>)> {
    let s = s.strip_suffix('/').unwrap_or(s);
    let colon = if s.starts_with('[') {
        s.find(']').map(|i| i + 1).filter(|&i| i < s.len())
    } else {
        s.rfind(':')
    };
    match colon {
        Some(i) if s.as_bytes()[i] == b':' => Some((&s[..i], Some(s[i + 1..].parse().ok()?))),
        _ => Some((s, None)),
    }
}

fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allow: &[&str], allow_missing: bool) -> OriginFilter {
        OriginFilter::new(Raw {
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            allow_missing,
        })
        .unwrap()
    }

    fn body(f: &OriginFilter, origin: Option<&str>) -> Option<String> {
        f.check(origin).err().map(|r| {
            assert_eq!(r.status, 403);
            r.body
        })
    }

    #[test]
    fn bare_hosts_match_any_scheme_and_port_case_insensitively() {
        let f = filter(&["Example.com"], false);
        assert_eq!(body(&f, Some("https://example.com")), None);
        assert_eq!(body(&f, Some("http://EXAMPLE.com:8080")), None);
        assert_eq!(
            body(&f, Some("https://evil.com")).as_deref(),
            Some("Origin not allowed")
        );
        assert_eq!(
            body(&f, Some("https://example.com.evil.com")).as_deref(),
            Some("Origin not allowed")
        );
        assert_eq!(
            body(&f, Some("null")).as_deref(),
            Some("Origin not allowed")
        );
    }

    #[test]
    fn scheme_and_port_narrow_an_entry() {
        let f = filter(&["https://app.example.com", "http://localhost:3000"], false);
        assert_eq!(body(&f, Some("https://app.example.com")), None);
        assert_eq!(body(&f, Some("https://app.example.com:443")), None);
        assert!(body(&f, Some("http://app.example.com")).is_some());
        assert_eq!(body(&f, Some("http://localhost:3000")), None);
        assert!(body(&f, Some("http://localhost:3001")).is_some());
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let f = filter(&["*.example.com"], false);
        assert_eq!(body(&f, Some("https://a.example.com")), None);
        assert_eq!(body(&f, Some("https://a.b.example.com")), None);
        assert!(body(&f, Some("https://example.com")).is_some());
        assert!(body(&f, Some("https://badexample.com")).is_some());
    }

    #[test]
    fn missing_origin_is_refused_unless_allowed() {
        assert_eq!(
            body(&filter(&["x.com"], false), None).as_deref(),
            Some("Origin not provided")
        );
        assert_eq!(body(&filter(&["x.com"], true), None), None);
    }

    #[test]
    fn bad_entries_are_config_errors() {
        for bad in ["", "https://", "exa mple.com", "x.com:notaport"] {
            let raw = Raw {
                allow: vec![bad.to_owned()],
                allow_missing: false,
            };
            assert!(OriginFilter::new(raw).is_err(), "{bad:?}");
        }
    }
}
