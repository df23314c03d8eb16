//! Debian's kernel packages, fetched without touching the machine's apt setup: each
//! suite gets a private apt configuration (its own sources.list, package lists and
//! cache under the kernels cache directory), so `apt-get update` there changes
//! nothing the system's apt sees. The mirror is the one the machine's own apt sources
//! already use, unless `--mirror` names another.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, say};

const TAG: &str = "kernels";

/// The keyring every Debian suite from bullseye on is signed with.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Package lists younger than this are used as they are (`--refresh` forces an update).
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// One suite and the kernel series it ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    pub name: &'static str,
    /// How people name its kernel ("5.10"); the newest backports kernel is "newest".
    pub series: &'static str,
}

/// The suites `cargo xtask kernels` knows, oldest kernel first.
pub const SUITES: [Suite; 4] = [
    Suite {
        name: "bullseye",
        series: "5.10",
    },
    Suite {
        name: "bookworm",
        series: "6.1",
    },
    Suite {
        name: "trixie",
        series: "6.12",
    },
    Suite {
        name: "trixie-backports",
        series: "newest",
    },
];

/// A kernel taken out of its package.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub suite: Suite,
    /// The image package (`linux-image-6.1.0-50-amd64`).
    pub package: String,
    /// Its version (`6.1.164-1`).
    pub version: String,
    pub vmlinuz: PathBuf,
    /// CONFIG_LSM from the package's /boot/config-*: the LSMs active by default.
    pub default_lsm: Vec<String>,
}

impl Kernel {
    /// The release as `uname -r` prints it (`6.1.0-50-amd64`).
    pub fn release(&self) -> &str {
        self.package
            .strip_prefix("linux-image-")
            .unwrap_or(&self.package)
    }
}

/// The private apt setup of one suite.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(cache: &Path, suite: &str, mirror: &str) -> Result<Self> {
        let dir = cache.join("apt").join(suite);
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let list = format!("deb [signed-by={KEYRING}] {mirror} {suite} main\n");
        let path = dir.join("sources.list");
        // Rewritten only when it changes, so a changed mirror invalidates the lists.
        if std::fs::read_to_string(&path).ok().as_deref() != Some(list.as_str()) {
            std::fs::write(&path, list).with_context(|| format!("writing {}", path.display()))?;
            let _ = std::fs::remove_file(dir.join("updated"));
        }
        Ok(Apt { dir })
    }

    /// `program` with the options that point apt at this suite's files only.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        c.arg("-o")
            .arg(format!("Dir::Etc::SourceList={}", d("sources.list")))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", d("lists")))
            .arg("-o")
            .arg(format!("Dir::Cache={}", d("cache")))
            // Only the Packages lists: no Contents, translations or AppStream data.
            .args(["-o", "Acquire::Languages=none"])
            .args([
                "-o",
                "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
            ])
            .args([
                "-o",
                "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
            ])
            .args([
                "-o",
                "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false",
            ]);
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    fn update(&self, refresh: bool) -> Result<()> {
        let stamp = self.dir.join("updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < LISTS_MAX_AGE);
        if fresh && !refresh {
            return Ok(());
        }
        cmd::run_ok(TAG, self.command("apt-get").args(["-q", "update"]))?;
        std::fs::write(&stamp, b"").context("writing the apt update stamp")?;
        Ok(())
    }

    fn output(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut c = self.command(program);
        c.args(args);
        let shown = cmd::display(&c);
        let out = c
            .output()
            .with_context(|| format!("could not start `{shown}`"))?;
        if !out.status.success() {
            bail!(
                "`{shown}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Downloads (once) and unpacks the newest kernel of `suite`.
pub fn fetch(cache: &Path, suite: Suite, mirror: &str, refresh: bool) -> Result<Kernel> {
    let apt = Apt::new(cache, suite.name, mirror)?;
    apt.update(refresh)?;
    let policy = apt.output("apt-cache", &["policy", "linux-image-amd64"])?;
    let meta_version = candidate(&policy).with_context(|| {
        format!(
            "{}: apt-cache policy linux-image-amd64 names no candidate",
            suite.name
        )
    })?;
    let depends = apt.output(
        "apt-cache",
        &["depends", &format!("linux-image-amd64={meta_version}")],
    )?;
    let package = image_dependency(&depends).with_context(|| {
        format!(
            "{}: linux-image-amd64 {meta_version} depends on no linux-image-*-amd64 package",
            suite.name
        )
    })?;
    let policy = apt.output("apt-cache", &["policy", &package])?;
    let version = candidate(&policy)
        .with_context(|| format!("{}: no candidate version of {package}", suite.name))?;

    let unpacked = cache.join("boot").join(&package).join(&version);
    let vmlinuz = unpacked.join("vmlinuz");
    let config = unpacked.join("config");
    if !(vmlinuz.is_file() && config.is_file()) {
        // Since 7.x the image package is a shell whose /boot files come in
        // linux-binary-<release> and linux-base-<release>: take those too (never the
        // modules, which the guest does not need).
        let release = package.trim_start_matches("linux-image-").to_owned();
        let deps = apt.output("apt-cache", &["depends", &format!("{package}={version}")])?;
        let mut packages = vec![package.clone()];
        packages.extend(
            same_release_dependencies(&deps, &release)
                .into_iter()
                .filter(|p| !p.starts_with("linux-modules-")),
        );
        let debs = cache.join("debs");
        std::fs::create_dir_all(&debs)?;
        let mut files = Vec::new();
        for name in &packages {
            let policy = apt.output("apt-cache", &["policy", name])?;
            let v = candidate(&policy)
                .with_context(|| format!("{}: no candidate version of {name}", suite.name))?;
            let deb = match find_deb(&debs, name, &v) {
                Some(deb) => deb,
                None => {
                    say(TAG, format_args!("{}: downloading {name} {v}", suite.name));
                    cmd::run_ok(
                        TAG,
                        apt.command("apt-get")
                            .current_dir(&debs)
                            .args(["download", &format!("{name}={v}")]),
                    )?;
                    find_deb(&debs, name, &v)
                        .with_context(|| format!("apt-get download left no {name} .deb"))?
                }
            };
            files.push(deb);
        }
        unpack_boot(&files, &unpacked, &vmlinuz, &config)?;
    } else {
        say(
            TAG,
            format_args!("{}: {package} {version} (cached)", suite.name),
        );
    }
    let config_text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    Ok(Kernel {
        suite,
        package,
        version,
        vmlinuz,
        default_lsm: config_lsm(&config_text).unwrap_or_default(),
    })
}

/// `<package>_<version>_amd64.deb` in `dir` (apt escapes ':' of an epoch as %3a).
fn find_deb(dir: &Path, package: &str, version: &str) -> Option<PathBuf> {
    let name = format!("{package}_{}_amd64.deb", version.replace(':', "%3a"));
    let path = dir.join(name);
    path.is_file().then_some(path)
}

/// Unpacks only ./boot of the packages (the modules are not needed: everything the
/// guest uses is built in) and keeps their vmlinuz-* and config-*.
fn unpack_boot(debs: &[PathBuf], dir: &Path, vmlinuz: &Path, config: &Path) -> Result<()> {
    let mut tmp_name = dir.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    // Beside `dir`, whose name (a version) has dots: not with_extension.
    let tmp = dir.with_file_name(tmp_name);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    // A package without ./boot makes tar fail; the files are checked below instead.
    // 7.x packages keep them in /usr/lib/modules/<release>/{vmlinuz,config}.
    let script = "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" --wildcards './boot/*' './usr/lib/modules/*/vmlinuz' './usr/lib/modules/*/config' 2>/dev/null; exit 0";
    for deb in debs {
        cmd::run_ok(
            TAG,
            Command::new("sh")
                .args(["-c", script, "sh"])
                .arg(deb)
                .arg(&tmp),
        )?;
    }
    let files_in = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect()
    };
    let modules: Vec<PathBuf> = files_in(tmp.join("usr/lib/modules"))
        .into_iter()
        .flat_map(files_in)
        .collect();
    let boot = files_in(tmp.join("boot"));
    let pick = |what: &str| -> Result<PathBuf> {
        let named = |p: &&PathBuf, f: &dyn Fn(&str) -> bool| {
            p.file_name().is_some_and(|n| f(&n.to_string_lossy()))
        };
        boot.iter()
            .find(|p| named(p, &|n| n.starts_with(&format!("{what}-"))))
            .or_else(|| modules.iter().find(|p| named(p, &|n| n == what)))
            .cloned()
            .with_context(|| format!("no /boot/{what}-* or /usr/lib/modules/*/{what} in {debs:?}"))
    };
    std::fs::create_dir_all(dir)?;
    std::fs::rename(pick("vmlinuz")?, vmlinuz)?;
    std::fs::rename(pick("config")?, config)?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// The dependencies of an image package built for the same `release`
/// (`linux-binary-7.3.4+deb13-amd64`), from `apt-cache depends`.
pub fn same_release_dependencies(depends: &str, release: &str) -> Vec<String> {
    depends
        .lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches('|');
            let name = line.strip_prefix("Depends:")?.split_whitespace().next()?;
            (name.starts_with("linux-") && name.ends_with(&format!("-{release}")))
                .then(|| name.to_owned())
        })
        .collect()
}

/// The `Candidate:` version of `apt-cache policy` output.
pub fn candidate(policy: &str) -> Option<String> {
    policy.lines().find_map(|line| {
        let v = line.trim().strip_prefix("Candidate:")?.trim();
        (!v.is_empty() && v != "(none)").then(|| v.to_owned())
    })
}

/// The kernel image package the metapackage depends on, from `apt-cache depends`
/// (`  Depends: linux-image-6.1.0-50-amd64`); an `-unsigned` alternative is skipped.
pub fn image_dependency(depends: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let line = line.trim().trim_start_matches('|');
        let name = line.strip_prefix("Depends:")?.trim();
        let name = name.split_whitespace().next()?;
        (name.starts_with("linux-image-") && name.ends_with("-amd64")).then(|| name.to_owned())
    })
}

/// The `CONFIG_LSM="a,b,c"` list of a kernel config.
pub fn config_lsm(config: &str) -> Option<Vec<String>> {
    config.lines().find_map(|line| {
        let value = line.strip_prefix("CONFIG_LSM=")?;
        Some(
            value
                .trim()
                .trim_matches('"')
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    })
}

/// The Debian mirror the machine's apt already uses: the first `deb` source that is
/// not a security archive, from /etc/apt/sources.list.d/*.sources (deb822) and
/// /etc/apt/sources.list (one-line format).
pub fn system_mirror() -> Result<String> {
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|e| e == "sources") {
                texts.push((true, std::fs::read_to_string(&p).unwrap_or_default()));
            } else if p.extension().is_some_and(|e| e == "list") {
                texts.push((false, std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    texts.push((
        false,
        std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default(),
    ));
    texts
        .iter()
        .find_map(|(deb822, text)| {
            if *deb822 {
                mirror_deb822(text)
            } else {
                mirror_one_line(text)
            }
        })
        .context("no Debian mirror in the system's apt sources; pass --mirror URL")
}

fn is_main_archive(uri: &str, suites: &[&str]) -> bool {
    !uri.contains("security")
        && suites
            .iter()
            .any(|s| !s.contains('/') && !s.ends_with("-security"))
}

/// First main-archive URI of a deb822 .sources file.
pub fn mirror_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_owned())
            })
        };
        let types = field("Types")?;
        let uri = field("URIs")?.split_whitespace().next()?.to_owned();
        let suites = field("Suites")?;
        let suites: Vec<&str> = suites.split_whitespace().collect();
        let enabled = field("Enabled").is_none_or(|e| e != "no");
        (enabled && types.split_whitespace().any(|t| t == "deb") && is_main_archive(&uri, &suites))
            .then_some(uri)
    })
}

/// First main-archive URI of a one-line sources.list.
pub fn mirror_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim();
        let rest = line.strip_prefix("deb ")?.trim();
        // Options in brackets come first: `deb [signed-by=...] URI suite comps`.
        let rest = match rest.strip_prefix('[') {
            Some(r) => r.split_once(']')?.1.trim(),
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        let suite = words.next()?;
        is_main_archive(uri, &[suite]).then(|| uri.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_from_apt_cache_policy() {
        let out = "linux-image-amd64:\n  Installed: (none)\n  Candidate: 5.10.223-1\n  Version table:\n     5.10.223-1 500\n        500 http://mirror.example/debian bullseye/main amd64 Packages\n";
        assert_eq!(candidate(out).as_deref(), Some("5.10.223-1"));
        assert_eq!(
            candidate("x:\n  Installed: (none)\n  Candidate: (none)\n"),
            None
        );
    }

    #[test]
    fn image_package_from_apt_cache_depends() {
        let out = "linux-image-amd64\n  Depends: linux-image-5.10.0-32-amd64\n";
        assert_eq!(
            image_dependency(out).as_deref(),
            Some("linux-image-5.10.0-32-amd64")
        );
        let alt = "linux-image-amd64\n |Depends: linux-image-7.3.4+deb13-amd64\n  Depends: linux-image-7.3.4+deb13-amd64-unsigned\n";
        assert_eq!(
            image_dependency(alt).as_deref(),
            Some("linux-image-7.3.4+deb13-amd64")
        );
        assert_eq!(
            image_dependency("linux-image-amd64\n  Depends: firmware\n"),
            None
        );
    }

    #[test]
    fn split_image_packages_from_apt_cache_depends() {
        let out = "linux-image-7.3.4+deb13-amd64\n  PreDepends: linux-base\n |Depends: <dracut>\n  Depends: <linux-initramfs-tool>\n  Depends: linux-base-7.3.4+deb13-amd64\n  Depends: linux-binary-7.3.4+deb13-amd64\n  Depends: linux-modules-7.3.4+deb13-amd64\n";
        assert_eq!(
            same_release_dependencies(out, "7.3.4+deb13-amd64"),
            [
                "linux-base-7.3.4+deb13-amd64",
                "linux-binary-7.3.4+deb13-amd64",
                "linux-modules-7.3.4+deb13-amd64"
            ]
        );
        assert!(same_release_dependencies(out, "6.12.117+deb13-amd64").is_empty());
    }

    #[test]
    fn lsm_list_from_kernel_config() {
        let config = "# CONFIG_X is not set\nCONFIG_LSM=\"landlock,lockdown,yama,loadpin,safesetid,integrity,apparmor,selinux,smack,tomoyo,bpf\"\nCONFIG_Y=y\n";
        let lsm = config_lsm(config).unwrap();
        assert_eq!(lsm.first().map(String::as_str), Some("landlock"));
        assert_eq!(lsm.last().map(String::as_str), Some("bpf"));
        assert_eq!(lsm.len(), 11);
        assert_eq!(config_lsm("CONFIG_Y=y\n"), None);
    }

    #[test]
    fn mirror_from_system_sources() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_deb822(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let security_first = "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\nTypes: deb-src deb\nURIs: http://other.example/debian\nSuites: bookworm\n";
        assert_eq!(
            mirror_deb822(security_first).as_deref(),
            Some("http://other.example/debian")
        );
        let one_line = "# comment\ndeb-src http://a.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://b.example/debian bookworm main\n";
        assert_eq!(
            mirror_one_line(one_line).as_deref(),
            Some("http://b.example/debian")
        );
    }
}
