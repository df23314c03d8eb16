//! RFC 5424 syslog over UDP (one datagram per record) or TCP (octet-counting
//! framing, RFC 6587 3.4.1: `LEN SP MSG`). The structured record (ECS by default) is
//! the MSG part; MSGID is the record type, PROCID the watched process.
//!
//! Over TCP, a record that cannot be sent goes to the sink's on-disk spool, and so
//! does every later one until the spool is empty again, so order is kept; the
//! worker retries the spool with backoff (50 ms doubling to 5 s) and a restarted
//! daemon resumes it. UDP has no delivery to wait for: a failed send is an error.

use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::spool::Spool;
use super::tls::{Conn, TlsOptions, TlsSetup};
use super::{Delivery, Writer};
use crate::output::Format;
use crate::records::Body;
use crate::ship::Envelope;

/// A `type: syslog` sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port`.
    pub address: String,
    #[serde(default)]
    pub transport: Transport,
    #[serde(default = "Format::machine_default")]
    pub format: Format,
    /// Syslog facility number (16 = local0).
    #[serde(default = "default_facility")]
    pub facility: u8,
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// TLS: the CA certificate(s) (PEM) that signed the server's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// TLS: a client certificate (PEM chain) and its key, for servers that ask.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// TLS: the name the server's certificate must carry (the address's host unless
    /// set).
    #[serde(default)]
    pub server_name: Option<String>,
    /// TCP and TLS: most bytes kept on disk while the server is unreachable (past it,
    /// records are dropped and counted in a `loss` record).
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Longest message sent (the syslog header included). The documented rsyslog
    /// set-up accepts 64 KiB (`maxMessageSize`); a server that is sent more cuts the
    /// record into pieces that are not JSON, so a longer record is not sent but
    /// counted (`too_large`, in `status` and loss records). UDP datagrams cannot
    /// exceed 65,507 bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

fn default_spool_max_bytes() -> u64 {
    64 * 1024 * 1024
}

/// Below rsyslog's documented 64 KiB and UDP's 65,507-byte payload.
fn default_max_message_bytes() -> usize {
    64_000
}

fn default_facility() -> u8 {
    16
}

fn default_app_name() -> String {
    "probectl".to_owned()
}

impl SyslogConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.facility > 23 {
            return Err(format!(
                "syslog facility {} is not 0-23 (16 is local0)",
                self.facility
            ));
        }
        if self.format == Format::Human {
            return Err("a syslog sink writes json, ecs or ocsf, not human".into());
        }
        if self.max_message_bytes < 480 {
            return Err(format!(
                "syslog max_message_bytes {} is below 480, the least RFC 5424 servers accept",
                self.max_message_bytes
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    /// TCP with TLS (RFC 5425), checked against `ca_file`.
    Tls,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Longest a retry waits.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Spooled messages sent per idle turn, so new records are not held up for long.
const DRAIN_BATCH: u32 = 1000;

pub struct Syslog {
    config: SyslogConfig,
    hostname: String,
    udp: Option<UdpSocket>,
    tcp: Option<Conn>,
    tls: Option<TlsSetup>,
    /// TCP only.
    spool: Option<Spool>,
    backoff: Duration,
    next_try: Instant,
}

impl Syslog {
    /// `spool_dir`: where a TCP sink keeps what it could not send yet.
    pub fn new(
        config: SyslogConfig,
        hostname: String,
        spool_dir: &std::path::Path,
    ) -> std::io::Result<Self> {
        // Resolve now, so a typo fails at start, not on the first record.
        config.address.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::other(format!("{} resolves to no address", config.address))
        })?;
        let spool = match config.transport {
            Transport::Tcp | Transport::Tls => {
                Some(Spool::open(spool_dir, config.spool_max_bytes)?)
            }
            Transport::Udp => None,
        };
        let tls = match config.transport {
            Transport::Tls => Some(TlsSetup::new(&TlsOptions {
                ca_file: config.ca_file.as_deref(),
                cert_file: config.cert_file.as_deref(),
                key_file: config.key_file.as_deref(),
                server_name: config.server_name.as_deref(),
                address: &config.address,
            })?),
            _ => None,
        };
        Ok(Self {
            config,
            hostname: if hostname.is_empty() {
                "-".into()
            } else {
                hostname
            },
            udp: None,
            tcp: None,
            tls,
            spool,
            backoff: FIRST_BACKOFF,
            next_try: Instant::now(),
        })
    }

    fn failed(&mut self) {
        self.udp = None;
        self.tcp = None;
        self.next_try = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The RFC 5424 message for one record.
    pub fn message(&self, envelope: &Envelope, text: &str) -> String {
        let severity = match &envelope.record.body {
            Body::RuleMatch(m) => match m.matched.severity {
                crate::policy::rules::Severity::Critical => 2,
                crate::policy::rules::Severity::High => 3,
                crate::policy::rules::Severity::Medium => 4,
                crate::policy::rules::Severity::Low => 5,
                crate::policy::rules::Severity::Info => 6,
            },
            Body::PolicyReload(r) if !r.ok => 4,
            Body::Loss(_) => 4, // warning
            _ => 6,             // informational
        };
        let pri = u32::from(self.config.facility) * 8 + severity;
        let time = envelope.record.header.time.rfc3339();
        let procid = envelope
            .record
            .pid()
            .map_or_else(|| "-".to_owned(), |p| p.to_string());
        let msgid = envelope.record.body.kind().name();
        format!(
            "<{pri}>1 {} {} {} {procid} {msgid} - {text}",
            time, self.hostname, self.config.app_name
        )
    }

    fn send_once(&mut self, message: &str) -> std::io::Result<()> {
        match self.config.transport {
            Transport::Udp => {
                if self.udp.is_none() {
                    let sock = UdpSocket::bind(("0.0.0.0", 0))?;
                    sock.connect(&self.config.address)?;
                    self.udp = Some(sock);
                }
                let sock = self
                    .udp
                    .as_ref()
                    .ok_or_else(|| std::io::Error::other("no socket"))?;
                sock.send(message.as_bytes()).map(|_| ())
            }
            Transport::Tcp | Transport::Tls => {
                // A server that went away closed its end: rsyslog never sends, so a
                // readable EOF means the connection is dead. Reconnect before writing
                // into it, or the record would vanish in a dead socket's buffer.
                if self.tcp.as_ref().is_some_and(|c| peer_closed(c.socket())) {
                    self.tcp = None;
                }
                if self.tcp.is_none() {
                    let stream = TcpStream::connect(&self.config.address)?;
                    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
                    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                    self.tcp = Some(match &self.tls {
                        Some(tls) => tls.connect(stream)?,
                        None => Conn::Plain(stream),
                    });
                }
                let conn = self
                    .tcp
                    .as_mut()
                    .ok_or_else(|| std::io::Error::other("no stream"))?;
                let frame = format!("{} {message}", message.len());
                let sent = conn.send(frame.as_bytes());
                if sent.is_err() {
                    self.tcp = None;
                }
                sent
            }
        }
    }
}

impl Writer for Syslog {
    fn write_record(
        &mut self,
        envelope: &Envelope,
        text: &str,
        _: &std::sync::atomic::AtomicBool,
    ) -> std::io::Result<Delivery> {
        let message = self.message(envelope, text);
        if message.len() > self.config.max_message_bytes {
            return Ok(Delivery::TooLarge);
        }
        let Some(spool) = &self.spool else {
            return self.send_once(&message).map(|()| Delivery::Sent);
        };
        // Behind a backlog, or while the server is away, in order: to the spool.
        if spool.is_empty() && Instant::now() >= self.next_try {
            if self.send_once(&message).is_ok() {
                self.backoff = FIRST_BACKOFF;
                return Ok(Delivery::Sent);
            }
            self.failed();
        }
        let spool = self
            .spool
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no spool"))?;
        Ok(if spool.push(message.as_bytes())? {
            Delivery::Spooled
        } else {
            Delivery::Dropped
        })
    }

    fn idle(&mut self, _: &std::sync::atomic::AtomicBool) -> u64 {
        let mut delivered = 0;
        while delivered < u64::from(DRAIN_BATCH) && Instant::now() >= self.next_try {
            let Some(spool) = self.spool.as_mut() else {
                break;
            };
            let Ok(Some(message)) = spool.peek() else {
                break;
            };
            let text = String::from_utf8_lossy(&message).into_owned();
            if self.send_once(&text).is_err() {
                self.failed();
                break;
            }
            self.backoff = FIRST_BACKOFF;
            if let Some(spool) = self.spool.as_mut()
                && spool.pop(message.len()).is_err()
            {
                break;
            }
            delivered += 1;
        }
        delivered
    }

    fn backlog(&self) -> (u64, u64) {
        self.spool
            .as_ref()
            .map_or((0, 0), |s| (s.backlog, s.dropped))
    }
}

/// One non-blocking peek (`MSG_PEEK | MSG_DONTWAIT`): a single syscall per record,
/// without switching the socket's blocking mode back and forth.
fn peer_closed(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd as _;
    let mut byte = 0u8;
    // SAFETY: a one-byte buffer we own, on a socket this stream keeps open.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    // -1 with EAGAIN: open and quiet. 0: the server closed. Data or another error:
    // not a connection to keep writing into.
    !(n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{LossCount, LossRecord, Record};

    #[test]
    fn a_message_longer_than_max_message_bytes_is_not_sent_but_counted() {
        let config: SyslogConfig =
            serde_yaml::from_str("{address: \"127.0.0.1:9\", max_message_bytes: 600}").unwrap();
        assert_eq!(config.transport, Transport::Udp);
        let mut sink =
            Syslog::new(config, "host".into(), std::path::Path::new("/nonexistent")).unwrap();
        let envelope = Envelope {
            id: "01a210a7-992d-7000-a6ce-f48646ab2628".into(),
            seq: 1,
            record: Record::now(Body::Loss(LossRecord {
                losses: vec![LossCount {
                    source: "x".into(),
                    count: 1,
                    total: 1,
                }],
            })),
            process: None,
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        let long = format!("{{\"x\":\"{}\"}}", "a".repeat(600));
        assert!(matches!(
            sink.write_record(&envelope, &long, &stop),
            Ok(Delivery::TooLarge)
        ));
    }
}
