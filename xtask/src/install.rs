//! `cargo xtask install` / `uninstall`: the release binary, the systemd unit, the
//! default config and policy, the man page and shell completions, in the usual
//! places (under `--destdir` for packaging or a test). Config files an
//! administrator may have edited are never overwritten, and `uninstall` keeps them
//! unless `--purge`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::cmd::{self, say};
use crate::{setup, workspace};

const TAG: &str = "install";

/// Where a file goes (under the destination root), its mode, and whether an
/// existing one (an administrator's edit) is kept.
struct Item {
    dest: &'static str,
    mode: u32,
    keep_existing: bool,
}

const BIN: Item = Item {
    dest: "usr/local/bin/probectl",
    mode: 0o755,
    keep_existing: false,
};
const UNIT: Item = Item {
    dest: "etc/systemd/system/probectl.service",
    mode: 0o644,
    keep_existing: false,
};
const CONFIG: Item = Item {
    dest: "etc/probectl/config.yaml",
    mode: 0o640,
    keep_existing: true,
};
const POLICY: Item = Item {
    dest: "etc/probectl/policies/default.yaml",
    mode: 0o644,
    keep_existing: true,
};
const SELECT: Item = Item {
    dest: "etc/probectl/policies/watch-ai-clis.yaml",
    mode: 0o644,
    keep_existing: true,
};
const MAN: Item = Item {
    dest: "usr/local/share/man/man8/probectl.8",
    mode: 0o644,
    keep_existing: false,
};
const BASH: Item = Item {
    dest: "usr/share/bash-completion/completions/probectl",
    mode: 0o644,
    keep_existing: false,
};

pub fn install(destdir: Option<&Path>) -> Result<i32> {
    let tools = setup::run(false)?;
    let root = workspace::root();
    cmd::run_ok(
        TAG,
        tools
            .cargo()
            .current_dir(root)
            .args(["build", "--release", "-p", "probe-user"]),
    )?;
    let binary = workspace::target_dir()?.join("release/probectl");
    let base = destdir.map_or_else(|| PathBuf::from("/"), Path::to_owned);
    place_all(&base, &binary, root)?;
    if destdir.is_none() {
        if cmd::probe_stdout(std::process::Command::new("getent").args(["group", "probectl"]))
            .is_none()
        {
            cmd::run_ok(
                TAG,
                std::process::Command::new("groupadd").args(["--system", "probectl"]),
            )?;
        }
        if Path::new("/run/systemd/system").exists() {
            cmd::run_ok(
                TAG,
                std::process::Command::new("systemctl").arg("daemon-reload"),
            )?;
            say(TAG, "start it with: systemctl enable --now probectl");
        } else {
            say(
                TAG,
                "systemd is not running here: start the daemon with `probectl daemon --config /etc/probectl/config.yaml`",
            );
        }
    }
    say(
        TAG,
        "done; `cargo xtask uninstall` reverses it (config kept unless --purge)",
    );
    Ok(0)
}

/// Puts every file under `base`: the binary, what it generates (man page,
/// completions), and the unit, config and policies from the repository at `root`.
fn place_all(base: &Path, binary: &Path, root: &Path) -> Result<()> {
    let generated = |arg: &str| -> Result<Vec<u8>> {
        let out = std::process::Command::new(binary)
            .args(arg.split(' '))
            .output()
            .with_context(|| format!("cannot run {} {arg}", binary.display()))?;
        anyhow::ensure!(out.status.success(), "`probectl {arg}` failed");
        Ok(out.stdout)
    };
    put(base, &BIN, &std::fs::read(binary)?)?;
    put(
        base,
        &UNIT,
        &std::fs::read(root.join("dist/probectl.service"))?,
    )?;
    put(
        base,
        &CONFIG,
        &std::fs::read(root.join("dist/config.yaml"))?,
    )?;
    put(
        base,
        &POLICY,
        &std::fs::read(root.join("policies/default.yaml"))?,
    )?;
    put(
        base,
        &SELECT,
        &std::fs::read(root.join("dist/policies/watch-ai-clis.yaml"))?,
    )?;
    put(base, &MAN, &generated("manpage")?)?;
    put(base, &BASH, &generated("completions bash")?)?;
    Ok(())
}

pub fn uninstall(destdir: Option<&Path>, purge: bool) -> Result<i32> {
    let base = destdir.map_or_else(|| PathBuf::from("/"), Path::to_owned);
    if destdir.is_none() && Path::new("/run/systemd/system").exists() {
        let _ = cmd::run(
            TAG,
            std::process::Command::new("systemctl").args(["disable", "--now", "probectl"]),
        );
    }
    for item in [&BIN, &UNIT, &MAN, &BASH] {
        remove(&base.join(item.dest))?;
    }
    if purge {
        for item in [&CONFIG, &POLICY, &SELECT] {
            remove(&base.join(item.dest))?;
        }
        let _ = std::fs::remove_dir(base.join("etc/probectl/policies"));
        let _ = std::fs::remove_dir(base.join("etc/probectl"));
    } else {
        say(
            TAG,
            format_args!(
                "kept {} and the policies (--purge removes them)",
                base.join(CONFIG.dest).display()
            ),
        );
    }
    Ok(0)
}

fn put(base: &Path, item: &Item, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dest = base.join(item.dest);
    if item.keep_existing && dest.exists() {
        say(TAG, format_args!("kept {} (already there)", dest.display()));
        return Ok(());
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Write beside it and rename, so a running daemon's binary is replaced, not
    // truncated under it.
    let tmp = dest.with_extension("probectl-new");
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(item.mode))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("cannot put {}", dest.display()))?;
    say(
        TAG,
        format_args!("installed {} ({:o})", dest.display(), item.mode),
    );
    Ok(())
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            say(TAG, format_args!("removed {}", path.display()));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn install_places_every_file_keeps_edited_config_and_uninstall_reverses_it() {
        let base = std::env::temp_dir().join(format!("xtask-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        // A stand-in for the release binary: prints what probectl would generate.
        let binary = base.join("fake-probectl");
        std::fs::write(&binary, "#!/bin/sh\necho \"generated: $*\"\n").unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dest = base.join("root");
        place_all(&dest, &binary, workspace::root()).unwrap();
        for item in [&BIN, &UNIT, &CONFIG, &POLICY, &SELECT, &MAN, &BASH] {
            let meta = std::fs::metadata(dest.join(item.dest))
                .unwrap_or_else(|e| panic!("{}: {e}", item.dest));
            assert_eq!(
                meta.permissions().mode() & 0o777,
                item.mode,
                "{}",
                item.dest
            );
        }
        let man = std::fs::read_to_string(dest.join(MAN.dest)).unwrap();
        assert_eq!(man, "generated: manpage\n");
        // An administrator's config survives a reinstall.
        std::fs::write(dest.join(CONFIG.dest), "sinks: [{type: stderr}]\n").unwrap();
        place_all(&dest, &binary, workspace::root()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join(CONFIG.dest)).unwrap(),
            "sinks: [{type: stderr}]\n"
        );
        uninstall(Some(&dest), false).unwrap();
        assert!(!dest.join(BIN.dest).exists() && !dest.join(UNIT.dest).exists());
        assert!(dest.join(CONFIG.dest).exists(), "kept without --purge");
        uninstall(Some(&dest), true).unwrap();
        assert!(!dest.join("etc/probectl").exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
