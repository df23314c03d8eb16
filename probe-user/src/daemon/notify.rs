//! systemd's notify protocol (sd_notify(3)), without libsystemd: one datagram per
//! message to the socket in `NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! socket). `READY=1` once every sensor is attached, `STATUS=` lines for
//! `systemctl status`, `WATCHDOG=1` pings at half of `WATCHDOG_USEC`, `RELOADING=1`
//! and `STOPPING=1` around a reload and the drain at exit.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `WATCHDOG_USEC`, when systemd watches this process.
    pub watchdog_every: Option<Duration>,
    /// Messages that could not be sent (systemd gone, socket full): counted, not
    /// fatal.
    pub errors: u64,
}

/// A socket that never blocks the event loop on a listener that does not read (a
/// full datagram queue): a message that cannot go now is counted instead.
fn sender(addr: SocketAddr) -> Option<(UnixDatagram, SocketAddr)> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.set_nonblocking(true).ok()?;
    Some((sock, addr))
}

impl Notifier {
    /// From the environment systemd sets; without `NOTIFY_SOCKET`, every message is
    /// a no-op.
    pub fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let bytes = path.as_encoded_bytes();
            let addr = match bytes.strip_prefix(b"@") {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt as _;
                    SocketAddr::from_abstract_name(name).ok()?
                }
                None => SocketAddr::from_pathname(&path).ok()?,
            };
            sender(addr)
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        Self {
            target,
            watchdog_every,
            errors: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `message` (newline-separated `KEY=value` assignments).
    pub fn notify(&mut self, message: &str) {
        if let Some((sock, addr)) = &self.target
            && sock.send_to_addr(message.as_bytes(), addr).is_err()
        {
            self.errors += 1;
        }
    }

    pub fn ready(&mut self, status: &str) {
        self.notify(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    pub fn status(&mut self, status: &str) {
        self.notify(&format!("STATUS={status}"));
    }

    pub fn watchdog(&mut self) {
        self.notify("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_datagram_listener() {
        let dir = std::env::temp_dir().join(format!("probectl-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let mut n = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
            watchdog_every: None,
            errors: 0,
        };
        n.ready("3 sensors attached");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(
            got.starts_with("READY=1\nSTATUS=3 sensors attached\nMAINPID="),
            "{got}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
