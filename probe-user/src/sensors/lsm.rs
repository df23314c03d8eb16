//! Whether the bpf LSM is active. Attaching a BPF-LSM program succeeds on any kernel
//! built with CONFIG_BPF_LSM, but its hooks only run when `bpf` is among the active
//! LSMs, which the kernel lists in /sys/kernel/security/lsm (securityfs, mounted
//! here for the read when it is not).

use std::path::Path;

const SECURITYFS: &str = "/sys/kernel/security";
const LSM_FILE: &str = "/sys/kernel/security/lsm";

/// The active LSMs, comma-separated as the kernel lists them.
pub fn active_lsms() -> Result<String, String> {
    if let Ok(list) = std::fs::read_to_string(LSM_FILE) {
        return Ok(list);
    }
    // Not mounted (or no securityfs at all): mount it for this read only.
    nix::mount::mount(
        Some("securityfs"),
        SECURITYFS,
        Some("securityfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| format!("{LSM_FILE} is missing and mounting securityfs failed: {errno}"))?;
    let list = std::fs::read_to_string(LSM_FILE).map_err(|e| format!("read {LSM_FILE}: {e}"));
    if let Err(errno) = nix::mount::umount(Path::new(SECURITYFS)) {
        tracing::debug!("unmounting the securityfs probectl mounted: {errno}");
    }
    list
}

/// `Ok` when `bpf` is an active LSM; otherwise why not and how to enable it.
pub fn bpf_active(list: &str) -> Result<String, String> {
    let list = list.trim().trim_end_matches('\0');
    let lsms: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lsms.contains(&"bpf") {
        return Ok(format!("bpf is an active LSM ({LSM_FILE}: {list})"));
    }
    // capability is always first and not chosen by lsm=.
    let mut wanted: Vec<&str> = lsms.into_iter().filter(|l| *l != "capability").collect();
    wanted.push("bpf");
    Err(format!(
        "the bpf LSM is not active ({LSM_FILE}: {list}): BPF-LSM programs would attach but never run; enable it with `lsm={}` on the kernel command line (needs CONFIG_BPF_LSM)",
        wanted.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::bpf_active;

    #[test]
    fn bpf_listed_is_active() {
        assert!(bpf_active("lockdown,capability,landlock,yama,apparmor,bpf").is_ok());
    }

    #[test]
    fn bpf_missing_names_the_boot_option() {
        let err = bpf_active("lockdown,capability,landlock,yama,apparmor\n").unwrap_err();
        assert!(err.contains("not active"), "{err}");
        assert!(
            err.contains("`lsm=lockdown,landlock,yama,apparmor,bpf`"),
            "{err}"
        );
        // A list that merely contains "bpf" as part of a name is not bpf.
        assert!(bpf_active("capability,bpfx").is_err());
    }
}
