//! Host and path routing of one shared HTTP port: pure matching over a rule list.
//!
//! Owns: turning the `HostPathRoute`s of the services on one port into an ordered rule
//! list, and choosing the rule for a request's host and path (most specific wins: a rule
//! with a host beats one without, then the longer path prefix).
//!
//! Does not know: requests, services' endpoints or sockets. A rule points at a service by
//! its index in the list the caller built it from.

use crate::model::HostPathRoute;

/// One routing rule, normalised for matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRule {
    /// Lowercase, without a trailing dot. `*.example.com` is kept as written and matches
    /// subdomains.
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    /// Index of the service in the caller's list.
    pub target: usize,
}

/// Builds the ordered rules for the services on one port. `routes_of(i)` gives the routes
/// of service `i`; an empty list makes it the catch-all.
pub fn build_rules<'a>(
    n_services: usize,
    routes_of: impl Fn(usize) -> &'a [HostPathRoute],
) -> Vec<HttpRule> {
    let mut rules = Vec::new();
    for target in 0..n_services {
        let routes = routes_of(target);
        if routes.is_empty() {
            rules.push(HttpRule {
                host: None,
                path_prefix: None,
                target,
            });
        }
        for route in routes {
            rules.push(HttpRule {
                host: route
                    .host
                    .as_deref()
                    .map(|host| host.trim_end_matches('.').to_ascii_lowercase()),
                path_prefix: route.path_prefix.clone(),
                target,
            });
        }
    }
    // Most specific first: exact hosts, then wildcard hosts, then no host; within each,
    // longer prefixes first. The sort is stable so equal rules keep their input order.
    rules.sort_by_key(|rule| {
        let host_rank = match &rule.host {
            Some(host) if host.starts_with("*.") => 1,
            Some(_) => 0,
            None => 2,
        };
        let prefix_len = rule.path_prefix.as_ref().map_or(0, String::len);
        (host_rank, std::cmp::Reverse(prefix_len))
    });
    rules
}

/// The target of the first rule that matches, or `None` (the caller answers 404).
/// `host` is the request's Host header or `:authority`, possibly with a port.
pub fn select(rules: &[HttpRule], host: Option<&str>, path: &str) -> Option<usize> {
    let host = host.map(strip_port);
    rules
        .iter()
        .find(|rule| host_matches(rule.host.as_deref(), host) && path_matches(rule, path))
        .map(|rule| rule.target)
}

fn strip_port(host: &str) -> &str {
    let host = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080` keeps `::1`.
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
    };
    host.trim_end_matches('.')
}

fn host_matches(rule_host: Option<&str>, request_host: Option<&str>) -> bool {
    let Some(rule_host) = rule_host else {
        return true;
    };
    let Some(request_host) = request_host else {
        return false;
    };
    if let Some(suffix) = rule_host.strip_prefix("*.") {
        // `*.example.com` matches `a.example.com`, not `example.com` itself.
        let Some(split) = request_host.len().checked_sub(suffix.len() + 1) else {
            return false;
        };
        return request_host.as_bytes()[split] == b'.'
            && request_host[split + 1..].eq_ignore_ascii_case(suffix);
    }
    rule_host.eq_ignore_ascii_case(request_host)
}

fn path_matches(rule: &HttpRule, path: &str) -> bool {
    let Some(prefix) = rule.path_prefix.as_deref() else {
        return true;
    };
    if !path.starts_with(prefix) {
        return false;
    }
    // Segment boundary: `/api` covers `/api` and `/api/...`, never `/apix`.
    prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: Option<&str>) -> HostPathRoute {
        HostPathRoute {
            host: host.map(str::to_string),
            path_prefix: path.map(str::to_string),
        }
    }

    #[test]
    fn most_specific_rule_wins() {
        let services = [
            vec![],                                             // 0: catch-all
            vec![route(None, Some("/api"))],                    // 1
            vec![route(Some("shop.example"), None)],            // 2
            vec![route(Some("shop.example"), Some("/api/v2"))], // 3
            vec![route(Some("*.example"), None)],               // 4
        ];
        let rules = build_rules(services.len(), |i| &services[i]);
        let cases = [
            (Some("other"), "/", Some(0)),
            (None, "/api/x", Some(1)),
            (Some("other"), "/apix", Some(0)),
            (Some("SHOP.example:8080"), "/api/x", Some(2)),
            (Some("shop.example"), "/api/v2/items", Some(3)),
            (Some("a.b.example"), "/", Some(4)),
            (Some("example"), "/api", Some(1)),
        ];
        for (host, path, want) in cases {
            assert_eq!(select(&rules, host, path), want, "{host:?} {path}");
        }
    }

    #[test]
    fn no_catch_all_means_no_match() {
        let services = [vec![route(Some("a.example"), None)]];
        let rules = build_rules(1, |i| &services[i]);
        assert_eq!(select(&rules, Some("b.example"), "/"), None);
        assert_eq!(select(&rules, None, "/"), None);
        assert_eq!(select(&rules, Some("[::1]:80"), "/"), None);
        assert_eq!(select(&rules, Some("a.example."), "/"), Some(0));
    }
}
