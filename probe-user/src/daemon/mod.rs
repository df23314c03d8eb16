//! The long-running side of probectl: its configuration, its event loop (`serve`)
//! and state, the control socket (server, protocol, access rules), its listeners, and
//! systemd's notify protocol.

pub mod access;
pub mod clients;
pub mod config;
mod listeners;
pub mod notify;
pub mod protocol;
pub mod serve;
pub mod server;
mod state;
mod status;
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
