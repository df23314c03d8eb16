//! The long-running side of probectl: its configuration, the control socket's
//! protocol and access rules, and systemd's notify protocol. The event loop itself
//! is in the binary (`cli/daemon.rs`), next to `run` and `watch`, whose session it
//! shares.

pub mod access;
pub mod clients;
pub mod config;
pub mod notify;
pub mod protocol;
pub mod server;
pub mod trust;

/// Where the daemon listens unless configured otherwise (systemd's
/// `RuntimeDirectory=probectl` creates the directory).
pub const DEFAULT_SOCKET: &str = "/run/probectl/probectl.sock";
/// The config file the unit passes.
pub const DEFAULT_CONFIG: &str = "/etc/probectl/config.yaml";

/// The socket clients use: `PROBECTL_SOCKET` when set (tests, a second daemon),
/// else `DEFAULT_SOCKET`.
pub fn socket_path() -> std::path::PathBuf {
    std::env::var_os("PROBECTL_SOCKET")
        .map(Into::into)
        .unwrap_or_else(|| DEFAULT_SOCKET.into())
}
