//! Picks the route that serves a request: the first route whose pattern matches the path
//! and whose sub-protocol requirement the client meets.
//!
//! A route that lists no protocols accepts any client and negotiates none. A route that
//! lists protocols accepts a client offering at least one of them and chooses the first
//! one *in the client's order* that the route lists (the client states its preference,
//! as in RFC 6455 §4.2.2). If routes match the path but none accepts the offered
//! protocols, the request is refused with the protocols that would have worked.

use crate::config::Route;

/// The route chosen for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Index into the config's routes.
    pub route: usize,
    /// The negotiated sub-protocol.
    pub protocol: Option<String>,
    /// What each `*` of the route's pattern captured.
    pub captures: Vec<String>,
}

/// Why no route serves a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// No pattern matches the path.
    Path,
    /// Patterns match, but every matching route requires protocols the client did not
    /// offer; lists those protocols.
    Protocol(Vec<String>),
}

/// Selects the route for `path` with the client's offered sub-protocols.
pub fn select(routes: &[Route], path: &str, offered: &[&str]) -> Result<Selected, NoRoute> {
    let mut wanted: Vec<String> = Vec::new();
    let mut path_matched = false;
    for (index, route) in routes.iter().enumerate() {
        let captures = match &route.pattern {
            None => Vec::new(),
            Some(pattern) => match pattern.captures(path) {
                Some(c) => c,
                None => continue,
            },
        };
        path_matched = true;
        if route.protocols.is_empty() {
            return Ok(Selected {
                route: index,
                protocol: None,
                captures,
            });
        }
        if let Some(chosen) = offered
            .iter()
            .find(|o| route.protocols.iter().any(|p| p == *o))
        {
            return Ok(Selected {
                route: index,
                protocol: Some((*chosen).to_owned()),
                captures,
            });
        }
        for p in &route.protocols {
            if !wanted.contains(p) {
                wanted.push(p.clone());
            }
        }
    }
    Err(if path_matched {
        NoRoute::Protocol(wanted)
    } else {
        NoRoute::Path
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::PathPattern;

    fn route(pattern: Option<&str>, protocols: &[&str], controller: usize) -> Route {
        Route {
            name: pattern.unwrap_or("*").to_owned(),
            pattern: pattern.map(|p| PathPattern::new(p).unwrap()),
            protocols: protocols.iter().map(|p| (*p).to_owned()).collect(),
            controller,
            filters: Vec::new(),
            limits: std::sync::Arc::default(),
            max_connections: None,
            topic: None,
        }
    }

    #[test]
    fn first_matching_route_wins() {
        let routes = [
            route(Some("/a/special"), &[], 0),
            route(Some("/a/*"), &[], 1),
            route(None, &[], 2),
        ];
        assert_eq!(select(&routes, "/a/special", &[]).unwrap().route, 0);
        let s = select(&routes, "/a/x", &[]).unwrap();
        assert_eq!((s.route, s.captures), (1, vec!["x".to_owned()]));
        assert_eq!(select(&routes, "/elsewhere", &[]).unwrap().route, 2);
    }

    #[test]
    fn no_pattern_match_is_a_path_miss() {
        let routes = [route(Some("/a/*"), &[], 0)];
        assert_eq!(select(&routes, "/b", &[]), Err(NoRoute::Path));
    }

    #[test]
    fn protocol_is_the_clients_first_choice_among_the_routes() {
        let routes = [route(Some("/chat"), &["v1", "v2"], 0)];
        let s = select(&routes, "/chat", &["x", "v2", "v1"]).unwrap();
        assert_eq!(s.protocol.as_deref(), Some("v2"));
    }

    #[test]
    fn protocols_can_split_one_path_between_routes() {
        let routes = [
            route(Some("/chat"), &["v2"], 0),
            route(Some("/chat"), &["v1"], 1),
        ];
        assert_eq!(select(&routes, "/chat", &["v1"]).unwrap().route, 1);
        assert_eq!(select(&routes, "/chat", &["v2", "v1"]).unwrap().route, 0);
        assert_eq!(
            select(&routes, "/chat", &["v3"]),
            Err(NoRoute::Protocol(vec!["v2".to_owned(), "v1".to_owned()]))
        );
        assert_eq!(
            select(&routes, "/chat", &[]),
            Err(NoRoute::Protocol(vec!["v2".to_owned(), "v1".to_owned()]))
        );
    }

    #[test]
    fn route_without_protocols_negotiates_none() {
        let routes = [route(None, &[], 0)];
        assert_eq!(select(&routes, "/x", &["chat"]).unwrap().protocol, None);
    }
}
