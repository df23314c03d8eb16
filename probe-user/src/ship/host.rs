//! What a record says about the machine it comes from, read once at start.

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostInfo {
    /// The host name.
    pub name: String,
    /// `/etc/machine-id`: stable across reboots, what fleets key hosts by.
    pub id: Option<String>,
    /// `/proc/sys/kernel/random/boot_id`: tells restarts of the sequence apart.
    pub boot_id: Option<String>,
    pub kernel: String,
    pub architecture: String,
    pub os_name: Option<String>,
}

impl HostInfo {
    pub fn read() -> Self {
        let trimmed = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let uname = nix::sys::utsname::uname().ok();
        let os_name = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_owned())
            });
        Self {
            name: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            id: trimmed("/etc/machine-id"),
            boot_id: trimmed("/proc/sys/kernel/random/boot_id"),
            kernel: uname
                .as_ref()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            architecture: uname
                .as_ref()
                .map(|u| u.machine().to_string_lossy().into_owned())
                .unwrap_or_default(),
            os_name,
        }
    }
}
