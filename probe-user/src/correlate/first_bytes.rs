//! What the first bytes a process sent on a connection say about where it goes,
//! without DNS: a TLS ClientHello's server name (parsed by rustls, already the TLS
//! library of the syslog sink), or an HTTP request's method, Host and path (parsed by
//! httparse). The bytes come from the watched process: every field is escaped and
//! cut to a bound, and what parses as neither is dropped (counted by the caller).

use crate::escape::escape_bytes;
use crate::records::HttpRequestLine;

/// Characters kept of an HTTP method.
pub const MAX_METHOD: usize = 16;
/// Characters kept of a host name (a DNS name is at most 253).
pub const MAX_HOST: usize = 255;
/// Characters kept of a request path (after escaping); a longer one ends in `...`.
pub const MAX_PATH: usize = 256;
/// Headers httparse looks at in the captured bytes: the Host header comes early in
/// every client's requests; past this many, the request is read without it.
const MAX_HEADERS: usize = 32;

/// What a connection's first bytes were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstBytes {
    /// A TLS handshake; the server name when the ClientHello had one and it was
    /// captured whole.
    Tls {
        server_name: Option<String>,
    },
    Http(HttpRequestLine),
}

/// Reads the first bytes of a connection; `None` when they are neither a TLS
/// handshake nor an HTTP request.
pub fn parse(bytes: &[u8]) -> Option<FirstBytes> {
    // A TLS record: content type 22 (handshake), version 3.x.
    if bytes.len() >= 3 && bytes[0] == 0x16 && bytes[1] == 3 {
        return Some(FirstBytes::Tls {
            server_name: server_name(bytes),
        });
    }
    http(bytes).map(FirstBytes::Http)
}

/// The SNI of a ClientHello, as rustls reads it: only a valid DNS name is given
/// (an IP address or bytes that are no host name give none).
fn server_name(bytes: &[u8]) -> Option<String> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = bytes;
    // The capture is at most a few KiB: one read takes it all.
    acceptor.read_tls(&mut rest).ok()?;
    let accepted = acceptor.accept().ok()??;
    let hello = accepted.client_hello();
    let name = hello.server_name()?;
    Some(bounded(name.as_bytes(), MAX_HOST))
}

/// The request line and Host header of an HTTP/1.x request. The capture may end
/// inside the headers: a partial parse still gives the request line.
fn http(bytes: &[u8]) -> Option<HttpRequestLine> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(_) => {}
        // More headers than we look at: the request line is still good.
        Err(httparse::Error::TooManyHeaders) => {
            let mut none = [];
            let mut line = httparse::Request::new(&mut none);
            let _ = line.parse(bytes);
            return line_of(&line, None);
        }
        Err(_) => return None,
    }
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| bounded(h.value, MAX_HOST));
    line_of(&req, host)
}

fn line_of(req: &httparse::Request<'_, '_>, host: Option<String>) -> Option<HttpRequestLine> {
    // A partial parse that did not reach the path is not a request line yet.
    let (method, path) = (req.method?, req.path?);
    Some(HttpRequestLine {
        method: bounded(method.as_bytes(), MAX_METHOD),
        host,
        path: bounded(redact_path(path).as_bytes(), MAX_PATH),
    })
}

/// A request target without its secrets: query values (`?key=AIza...`, the way
/// Gemini's API and many others take an API key) become `[redacted]`, their names
/// kept; a bare query item is redacted whole; an absolute-form target sent to a proxy
/// loses its `user:password@` as proxy values do.
fn redact_path(path: &str) -> String {
    let path = crate::correlate::redact_userinfo(path, false);
    let Some((before, query)) = path.split_once('?') else {
        return path;
    };
    let items: Vec<String> = query
        .split('&')
        .map(|item| match item.split_once('=') {
            Some((name, _)) => format!("{name}=[redacted]"),
            None if item.is_empty() => String::new(),
            None => "[redacted]".to_owned(),
        })
        .collect();
    format!("{before}?{}", items.join("&"))
}

/// Escaped, then cut to `max` characters (`...` marks a cut).
fn bounded(bytes: &[u8], max: usize) -> String {
    let s = escape_bytes(bytes);
    if s.chars().count() <= max {
        return s;
    }
    let mut cut: String = s.chars().take(max.saturating_sub(3)).collect();
    cut.push_str("...");
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_line_and_host() {
        let got = parse(b"POST /v1/messages HTTP/1.1\r\nUser-Agent: x\r\nHost: relay.example\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!(
            got,
            Some(FirstBytes::Http(HttpRequestLine {
                method: "POST".into(),
                host: Some("relay.example".into()),
                path: "/v1/messages".into(),
            }))
        );
        // Cut inside the headers: the request line still counts.
        let got = parse(b"GET /a HTTP/1.1\r\nHo");
        assert!(matches!(got, Some(FirstBytes::Http(h)) if h.path == "/a" && h.host.is_none()));
    }

    #[test]
    fn hostile_bytes_are_refused_or_escaped_and_bounded() {
        // Control characters in the request line: not HTTP.
        assert_eq!(parse(b"GET /\x1b[31mred HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse(b"\x00\x01\x02 garbage"), None);
        let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(5000));
        let Some(FirstBytes::Http(h)) = parse(long.as_bytes()) else {
            panic!("a long path is still a request");
        };
        assert_eq!(h.path.chars().count(), MAX_PATH);
        assert!(h.path.ends_with("..."));
        // Not UTF-8 in a header value: escaped.
        let raw = b"GET / HTTP/1.1\r\nHost: h\xff\r\n\r\n";
        let Some(FirstBytes::Http(h)) = parse(raw) else {
            panic!("parsed");
        };
        assert_eq!(h.host.as_deref(), Some("h\\xff"));
    }

    #[test]
    fn query_values_and_proxy_credentials_in_a_request_are_redacted() {
        let got = parse(
            b"POST /v1beta/models/gemini:generateContent?key=AIzaS3cr3t&alt=sse HTTP/1.1\r\nHost: localhost:4000\r\n\r\n",
        );
        let Some(FirstBytes::Http(h)) = got else {
            panic!("a request: {got:?}");
        };
        assert_eq!(
            h.path,
            "/v1beta/models/gemini:generateContent?key=[redacted]&alt=[redacted]"
        );
        let got = parse(b"GET http://bob:hunter2@example.test/x?tok3n HTTP/1.1\r\n\r\n");
        let Some(FirstBytes::Http(h)) = got else {
            panic!("a request: {got:?}");
        };
        assert_eq!(h.path, "http://[redacted]@example.test/x?[redacted]");
        let got = parse(b"GET /plain/path HTTP/1.1\r\n\r\n");
        assert!(matches!(got, Some(FirstBytes::Http(h)) if h.path == "/plain/path"));
    }

    #[test]
    fn a_truncated_or_broken_client_hello_is_tls_without_a_name() {
        assert_eq!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Some(FirstBytes::Tls { server_name: None })
        );
    }

    #[test]
    fn a_real_client_hello_names_its_server() {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("api.example.test").unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        assert_eq!(
            parse(&hello),
            Some(FirstBytes::Tls {
                server_name: Some("api.example.test".into())
            })
        );
        // Cut short (a capture that ended early): TLS, no name.
        assert_eq!(
            parse(&hello[..hello.len() / 2]),
            Some(FirstBytes::Tls { server_name: None })
        );
    }
}
