//! What identifies a CLI beyond its exe: the container it runs in, and for
//! interpreted CLIs the package its script belongs to (name and version from the
//! nearest `package.json`). Read once per exec, never per event.
//!
//! The script's directory belongs to whoever wrote it, so a `package.json` there is
//! hostile input: it may be a FIFO (an open or read that never returns), a symlink to
//! /dev/zero (a read that never ends) or huge. Only a regular file reached without
//! following a symlink at the last step, opened non-blocking, and at most
//! `MAX_MANIFEST_BYTES` long is read; and the lookup runs on its own thread
//! (`lookup`), so even a stalled file system cannot stall the event loop.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::escape::escape_bytes;

/// How many directories above a script are searched for its `package.json`
/// (`node_modules/pkg/dist/bin/cli.js` is four levels below it).
const PACKAGE_SEARCH_DEPTH: usize = 6;
/// A `package.json` larger than this is not read.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PackageInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The `package.json` it came from.
    pub manifest: String,
}

/// The container id of a live process, from its cgroup paths.
pub fn container_of(pid: u32) -> Option<String> {
    container_id(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// A 64-hex-digit container id in a `/proc/<pid>/cgroup` listing: Docker
/// (`/docker/<id>`, `docker-<id>.scope`), containerd (`cri-containerd-<id>.scope`),
/// CRI-O (`crio-<id>.scope`), Podman (`libpod-<id>.scope`), Kubernetes pod slices.
pub fn container_id(cgroup: &str) -> Option<String> {
    for line in cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or_default();
        for part in path.split('/').rev() {
            let part = part.strip_suffix(".scope").unwrap_or(part);
            let id = part.rsplit(['-', ':']).next().unwrap_or(part);
            if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(id.to_ascii_lowercase());
            }
        }
    }
    None
}

/// The package an interpreted CLI's script belongs to: the nearest `package.json`
/// above it that has a `name`. `script` may be relative to `cwd`.
pub fn package_of(script: &str, cwd: Option<&str>) -> Option<PackageInfo> {
    let script = Path::new(script);
    let full: PathBuf = match (script.is_absolute(), cwd) {
        (true, _) => script.to_owned(),
        (false, Some(cwd)) => Path::new(cwd).join(script),
        (false, None) => return None,
    };
    let full = std::fs::canonicalize(&full).unwrap_or(full);
    for dir in full.ancestors().skip(1).take(PACKAGE_SEARCH_DEPTH) {
        let manifest = dir.join("package.json");
        let Some(text) = read_regular_file(&manifest, MAX_MANIFEST_BYTES) else {
            continue;
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&text) else {
            continue;
        };
        let Some(name) = json["name"].as_str() else {
            continue;
        };
        return Some(PackageInfo {
            name: escape_bytes(name.as_bytes()),
            version: json["version"].as_str().map(|v| escape_bytes(v.as_bytes())),
            manifest: escape_bytes(manifest.as_os_str().as_encoded_bytes()),
        });
    }
    None
}

/// The contents of `path` if it is a regular file (not a symlink at the last step,
/// not a FIFO, socket or device) of at most `max` bytes. Opened non-blocking, so a
/// FIFO cannot hold the open; checked with fstat on the open file, so what is read is
/// what was checked.
pub fn read_regular_file(path: &Path, max: u64) -> Option<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.file_type().is_file() || meta.len() > max {
        return None;
    }
    let mut text = Vec::new();
    // Bounded even if the file grows while it is read.
    file.take(max + 1).read_to_end(&mut text).ok()?;
    (text.len() as u64 <= max).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_cgroup_listings() {
        let id = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00998877665544332211";
        for listing in [
            format!("0::/system.slice/docker-{id}.scope\n"),
            format!("12:memory:/docker/{id}\n0::/\n"),
            format!("0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-{id}.scope\n"),
            format!("0::/machine.slice/libpod-{id}.scope/container\n"),
            format!("0::/kubepods/besteffort/pod1234/{id}\n"),
        ] {
            assert_eq!(container_id(&listing).as_deref(), Some(id), "{listing}");
        }
        assert_eq!(
            container_id("0::/user.slice/user-1000.slice/session-2.scope\n"),
            None
        );
        assert_eq!(
            container_id("4:memory:/process_api/1113d0a460c63f038aa43f68c32c93b7\n"),
            None
        );
    }

    #[test]
    fn the_nearest_package_json_names_the_cli() {
        let root = std::env::temp_dir().join(format!("probectl-pkg-{}", std::process::id()));
        let bin = root.join("node_modules/some-cli/dist/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("cli.js"), "").unwrap();
        std::fs::write(
            root.join("node_modules/some-cli/package.json"),
            r#"{"name": "some-cli", "version": "2.1.0"}"#,
        )
        .unwrap();
        // A package.json without a name (a workspace root) is skipped.
        std::fs::write(root.join("package.json"), r#"{"private": true}"#).unwrap();
        let p = package_of("node_modules/some-cli/dist/bin/cli.js", root.to_str()).unwrap();
        assert_eq!(p.name, "some-cli");
        assert_eq!(p.version.as_deref(), Some("2.1.0"));
        assert!(p.manifest.ends_with("node_modules/some-cli/package.json"));
        assert_eq!(package_of("cli.js", None), None, "relative without a cwd");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let root = std::env::temp_dir().join(format!("probectl-regular-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let fifo = root.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert_eq!(
            read_regular_file(&fifo, 1024),
            None,
            "a FIFO, without blocking"
        );
        let link = root.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert_eq!(
            read_regular_file(&link, 1024),
            None,
            "a symlink is not followed"
        );
        assert_eq!(
            read_regular_file(Path::new("/dev/zero"), 1024),
            None,
            "a device"
        );
        let big = root.join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        assert_eq!(read_regular_file(&big, 1024), None, "over the cap");
        let ok = root.join("ok");
        std::fs::write(&ok, b"{}").unwrap();
        assert_eq!(read_regular_file(&ok, 1024).as_deref(), Some(&b"{}"[..]));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
