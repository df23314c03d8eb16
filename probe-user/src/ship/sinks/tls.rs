//! TLS for the syslog sink (RFC 5425 over the same octet-counted framing), with
//! rustls: the server is checked against `ca_file`, and `cert_file` + `key_file`
//! present a client certificate when the server asks for one.

use std::io::Write as _;
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use std::path::Path;

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

/// What a TLS connection needs from the sink's settings.
pub struct TlsOptions<'a> {
    /// The CA certificate(s) (PEM) that signed the server's certificate.
    pub ca_file: Option<&'a Path>,
    /// A client certificate (PEM chain) and its key, for servers that ask.
    pub cert_file: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
    /// The name the server's certificate must carry (the address's host unless set).
    pub server_name: Option<&'a str>,
    /// `host:port`.
    pub address: &'a str,
}

/// The client configuration and the name the server's certificate must carry.
pub struct TlsSetup {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsSetup {
    pub fn new(c: &TlsOptions<'_>) -> std::io::Result<Self> {
        let ca = c.ca_file.ok_or_else(|| {
            invalid(
                "syslog over TLS needs ca_file (the CA that signed the server's certificate)"
                    .into(),
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .map_err(|e| invalid(format!("{}: {e}", ca.display())))?
        {
            let cert = cert.map_err(|e| invalid(format!("{}: {e}", ca.display())))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("{}: {e}", ca.display())))?;
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(e.to_string()))?
                .with_root_certificates(roots);
        let config = match (c.cert_file, c.key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| invalid(format!("{}: {e}", cert.display())))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| invalid(format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid(format!("client certificate: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(invalid("cert_file and key_file go together".into())),
        };
        let host = c.server_name.map(str::to_owned).unwrap_or_else(|| {
            c.address
                .rsplit_once(':')
                .map_or(c.address, |(h, _)| h)
                .trim_matches(|ch| ch == '[' || ch == ']')
                .to_owned()
        });
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| invalid(format!("server name {host:?}: {e}")))?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }

    pub fn connect(&self, tcp: TcpStream) -> std::io::Result<Conn> {
        let conn = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(std::io::Error::other)?;
        Ok(Conn::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }
}

/// A stream connection to the syslog server.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    pub fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }

    /// Writes a whole frame (TLS: completes the handshake first).
    pub fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(frame),
            Conn::Tls(s) => {
                s.write_all(frame)?;
                s.flush()
            }
        }
    }
}
