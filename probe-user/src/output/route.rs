//! How the names a connection was given beyond DNS read: what its first bytes named
//! (TLS server name, HTTP request line) and the names a DNS server was asked.

use crate::records::{ContactedDestination, Destination, HttpRequestLine};

/// What a connection's first bytes named: "TLS to api.example.com" or "POST
/// /v1/messages host relay.example to 127.0.0.1:8080".
pub fn named_route(
    tls_server_name: Option<&str>,
    http: Option<&HttpRequestLine>,
    dest: &Destination,
) -> String {
    match (tls_server_name, http) {
        (_, Some(h)) => format!(
            "{} {}{} to {dest}",
            h.method,
            h.path,
            h.host
                .as_deref()
                .map(|host| format!(" host {host}"))
                .unwrap_or_default()
        ),
        (Some(name), None) => format!("TLS to {name}"),
        (None, None) => format!("TLS to {dest} (no server name)"),
    }
}

/// One destination of a CLI's summary, with every name it is known by: its DNS
/// name, the names asked of it (a DNS server), what the first bytes named.
pub fn contacted(d: &ContactedDestination) -> String {
    let mut names: Vec<String> = d.domain.iter().cloned().collect();
    if !d.dns_names.is_empty() {
        names.push(format!("DNS queries for {}", d.dns_names.join(", ")));
    }
    if d.tls_server_name.is_some() || d.http.is_some() {
        let route = named_route(
            d.tls_server_name.as_deref(),
            d.http.as_ref(),
            &d.destination,
        );
        // The destination is already written in front.
        names.push(
            route
                .trim_end_matches(&format!(" to {}", d.destination))
                .to_owned(),
        );
    }
    if d.blocked {
        names.push("BLOCKED".to_owned());
    }
    if names.is_empty() {
        d.destination.to_string()
    } else {
        format!("{} ({})", d.destination, names.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Family;

    #[test]
    fn routes_read_as_sentences() {
        let dest = Destination {
            family: Family::Ipv4,
            address: "127.0.0.1".into(),
            port: 8080,
        };
        let http = HttpRequestLine {
            method: "POST".into(),
            host: Some("relay.example".into()),
            path: "/v1/messages".into(),
        };
        assert_eq!(
            named_route(None, Some(&http), &dest),
            "POST /v1/messages host relay.example to 127.0.0.1:8080"
        );
        assert_eq!(
            named_route(Some("api.example.com"), None, &dest),
            "TLS to api.example.com"
        );
        let d = ContactedDestination {
            destination: dest.clone(),
            domain: Some("localhost".into()),
            dns_names: Vec::new(),
            tls_server_name: None,
            http: Some(http),
            blocked: false,
        };
        assert_eq!(
            contacted(&d),
            "127.0.0.1:8080 (localhost; POST /v1/messages host relay.example)"
        );
        let server = ContactedDestination {
            destination: Destination { port: 53, ..dest },
            domain: None,
            dns_names: vec!["api.github.com".into(), "chatgpt.com".into()],
            tls_server_name: None,
            http: None,
            blocked: false,
        };
        assert_eq!(
            contacted(&server),
            "127.0.0.1:53 (DNS queries for api.github.com, chatgpt.com)"
        );
    }
}
