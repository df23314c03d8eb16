//! Behaviour profiles: what each CLI of a run probed and contacted, written as YAML by
//! `probectl run --profile FILE`, and compared by `probectl diff A B`. Comparing the
//! profiles of two versions of a CLI is how a new, undocumented probe in an upgrade
//! gets noticed.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::process::exe_hash::ExeHash;
use crate::records::{CliSummary, ConnectionRecord, RunReport};

pub const PROFILE_KIND: &str = "Profile";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Profile {
    pub api_version: String,
    pub kind: String,
    pub metadata: ProfileMetadata,
    pub clis: Vec<CliProfile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileMetadata {
    pub policy: String,
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliProfile {
    /// What the CLI is matched on between profiles: its package's name, else its
    /// script's file name, else its executable's file name. Not the version, nor
    /// the path (a native CLI's install path often holds its version), so that two
    /// versions of one CLI are compared. Profiles written before it: derived.
    #[serde(default)]
    pub name: String,
    pub exe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Which build of the CLI ran: package name and version, or the sha256 of a
    /// native executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    pub categories: BTreeSet<String>,
    /// `category: env NAME` or `category: file PATH` (bursts under a prefix as `prefix**`).
    pub probes: BTreeSet<String>,
    /// `host:port` by name when known, else `address:port`; `unix:PATH`.
    pub destinations: BTreeSet<String>,
    #[serde(default)]
    pub rules: BTreeSet<String>,
}

/// Which build of a CLI a profile describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fingerprint {
    /// An interpreter's script from a package (its nearest `package.json`).
    Package {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// A native executable, by content: the file the process ran (`/proc/PID/exe`
    /// while it lived), or, with a note saying so, the file at its path after it
    /// exited.
    Sha256 {
        digest: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Neither could be had, and why (a script without a package, a file over the
    /// size cap, a process gone with its file).
    Unknown { why: String },
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fingerprint::Package { name, version } => {
                write!(f, "package {name}@{}", version.as_deref().unwrap_or("?"))
            }
            Fingerprint::Sha256 { digest, .. } => write!(f, "sha256 {digest}"),
            Fingerprint::Unknown { why } => write!(f, "unknown ({why})"),
        }
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl CliProfile {
    /// The name it is matched on (`name`, derived for older profiles).
    fn key(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        derive_name(self.package.as_deref(), self.script.as_deref(), &self.exe)
    }

    fn label(&self) -> String {
        let mut l = self.exe.clone();
        if let Some(s) = &self.script {
            l.push(' ');
            l.push_str(s);
        }
        if let Some(p) = &self.package {
            l.push_str(&format!(
                " ({p}{})",
                self.version
                    .as_deref()
                    .map(|v| format!("@{v}"))
                    .unwrap_or_default()
            ));
        }
        l
    }
}

fn derive_name(package: Option<&str>, script: Option<&str>, exe: &str) -> String {
    package
        .map(str::to_owned)
        .or_else(|| script.map(|s| file_name(s).to_owned()))
        .unwrap_or_else(|| file_name(exe).to_owned())
}

fn fingerprint_of(c: &CliSummary) -> Fingerprint {
    if let Some(p) = &c.package {
        return Fingerprint::Package {
            name: p.name.clone(),
            version: p.version.clone(),
        };
    }
    if c.script.is_some() {
        return Fingerprint::Unknown {
            why: "a script outside any package".into(),
        };
    }
    match &c.exe_hash {
        Some(ExeHash {
            sha256: Some(digest),
            note,
        }) => Fingerprint::Sha256 {
            digest: digest.clone(),
            note: note.clone(),
        },
        Some(ExeHash { note, .. }) => Fingerprint::Unknown {
            why: note.clone().unwrap_or_else(|| "not hashed".into()),
        },
        None => Fingerprint::Unknown {
            why: "not hashed".into(),
        },
    }
}

fn destination_text(c: &ConnectionRecord) -> String {
    c.destination.named(c.domain.as_deref())
}

/// The profile of a finished run.
pub fn from_report(report: &RunReport, command: Vec<String>) -> Profile {
    let clis = report
        .clis
        .iter()
        .map(|c: &CliSummary| {
            let conns: Vec<&ConnectionRecord> = report
                .connections
                .iter()
                .filter(|conn| conn.header.pid.is_some_and(|p| c.pids.contains(&p)))
                .map(|conn| &conn.body)
                .collect();
            // The run's probe rows (bursts already folded) of this CLI's processes.
            let mut probes = BTreeSet::new();
            for cat in &report.probes {
                for row in cat
                    .probes
                    .iter()
                    .filter(|r| r.pids.iter().any(|p| c.pids.contains(p)))
                {
                    let kind = row.target_type.name();
                    probes.insert(format!("{}: {kind} {}", cat.category, row.target));
                }
            }
            CliProfile {
                name: derive_name(
                    c.package.as_ref().map(|p| p.name.as_str()),
                    c.script.as_deref(),
                    &c.exe,
                ),
                fingerprint: Some(fingerprint_of(c)),
                exe: c.exe.clone(),
                script: c.script.clone(),
                package: c.package.as_ref().map(|p| p.name.clone()),
                version: c.package.as_ref().and_then(|p| p.version.clone()),
                categories: c.categories.iter().cloned().collect(),
                probes,
                destinations: conns.iter().map(|c| destination_text(c)).collect(),
                rules: c.rules.iter().cloned().collect(),
            }
        })
        .collect();
    Profile {
        api_version: crate::policy::API_VERSION.to_owned(),
        kind: PROFILE_KIND.to_owned(),
        metadata: ProfileMetadata {
            policy: report.policy.clone(),
            command,
        },
        clis,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: not a probectl profile: {message}\n  hint: profiles are written by `probectl run --profile FILE`"
    )]
    Parse { path: String, message: String },
}

pub fn load(path: &std::path::Path) -> Result<Profile, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let profile: Profile = serde_yaml::from_str(&text).map_err(|e| ProfileError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    if profile.kind != PROFILE_KIND {
        return Err(ProfileError::Parse {
            path: path.display().to_string(),
            message: format!("kind is {:?}, not {PROFILE_KIND:?}", profile.kind),
        });
    }
    Ok(profile)
}

/// What changed from one profile to another.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProfileDiff {
    /// Readable lines, per CLI; empty when nothing changed at all.
    pub text: String,
    /// A CLI probed, contacted or matched something new, stopped doing so, appeared
    /// or was no longer seen. A new version or fingerprint alone is not a change of
    /// behaviour: it is listed, and `probectl diff` still exits 0.
    pub behaviour_changed: bool,
}

/// What changed from `old` to `new`, per CLI matched by name.
pub fn diff(old: &Profile, new: &Profile) -> ProfileDiff {
    let mut out = ProfileDiff::default();
    let s = &mut out.text;
    for cli in &new.clis {
        match old.clis.iter().find(|o| o.key() == cli.key()) {
            None => {
                out.behaviour_changed = true;
                let _ = writeln!(s, "+ new CLI {}", cli.label());
                if let Some(f) = &cli.fingerprint {
                    let _ = writeln!(s, "    fingerprint {f}");
                }
                for p in &cli.probes {
                    let _ = writeln!(s, "    + probe {p}");
                }
                for d in &cli.destinations {
                    let _ = writeln!(s, "    + contacts {d}");
                }
            }
            Some(o) => {
                let mut lines = String::new();
                if o.version != cli.version {
                    let _ = writeln!(
                        lines,
                        "    version {} -> {}",
                        o.version.as_deref().unwrap_or("?"),
                        cli.version.as_deref().unwrap_or("?")
                    );
                }
                // A package's fingerprint is its version, already shown.
                let package_only = matches!(
                    (&o.fingerprint, &cli.fingerprint),
                    (
                        Some(Fingerprint::Package { .. }),
                        Some(Fingerprint::Package { .. })
                    )
                );
                if o.fingerprint != cli.fingerprint && !package_only {
                    let show = |f: &Option<Fingerprint>| {
                        f.as_ref().map_or("none".to_owned(), ToString::to_string)
                    };
                    let _ = writeln!(
                        lines,
                        "    fingerprint {} -> {}",
                        show(&o.fingerprint),
                        show(&cli.fingerprint)
                    );
                }
                if o.exe != cli.exe {
                    let _ = writeln!(lines, "    exe {} -> {}", o.exe, cli.exe);
                }
                for (what, before, after) in [
                    ("category", &o.categories, &cli.categories),
                    ("probe", &o.probes, &cli.probes),
                    ("contacts", &o.destinations, &cli.destinations),
                    ("rule", &o.rules, &cli.rules),
                ] {
                    for added in after.difference(before) {
                        out.behaviour_changed = true;
                        let _ = writeln!(lines, "    + {what} {added}");
                    }
                    for removed in before.difference(after) {
                        out.behaviour_changed = true;
                        let _ = writeln!(lines, "    - {what} {removed}");
                    }
                }
                if !lines.is_empty() {
                    let _ = writeln!(s, "~ {}", cli.label());
                    s.push_str(&lines);
                }
            }
        }
    }
    for cli in &old.clis {
        if !new.clis.iter().any(|n| n.key() == cli.key()) {
            out.behaviour_changed = true;
            let _ = writeln!(s, "- CLI no longer seen: {}", cli.label());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(version: &str, probes: &[&str], dests: &[&str]) -> CliProfile {
        CliProfile {
            name: "some-cli".into(),
            exe: "/usr/bin/node".into(),
            script: Some("/opt/x/node_modules/some-cli/cli.js".into()),
            package: Some("some-cli".into()),
            version: Some(version.into()),
            fingerprint: Some(Fingerprint::Package {
                name: "some-cli".into(),
                version: Some(version.into()),
            }),
            categories: probes
                .iter()
                .map(|p| p.split(':').next().unwrap().to_owned())
                .collect(),
            probes: probes.iter().map(|p| p.to_string()).collect(),
            destinations: dests.iter().map(|d| d.to_string()).collect(),
            rules: BTreeSet::new(),
        }
    }

    /// A native CLI installed under a versioned path, fingerprinted by content.
    fn native(version_dir: &str, digest: &str, probes: &[&str]) -> CliProfile {
        let mut c = cli("", probes, &[]);
        c.name = "claude".into();
        c.exe = format!("/home/u/.local/share/claude/versions/{version_dir}/claude");
        c.script = None;
        c.package = None;
        c.version = None;
        c.fingerprint = Some(Fingerprint::Sha256 {
            digest: digest.into(),
            note: None,
        });
        c
    }

    fn profile(clis: Vec<CliProfile>) -> Profile {
        Profile {
            api_version: crate::policy::API_VERSION.into(),
            kind: PROFILE_KIND.into(),
            metadata: ProfileMetadata {
                policy: "default".into(),
                command: vec!["some-cli".into()],
            },
            clis,
        }
    }

    #[test]
    fn an_upgrade_that_adds_a_probe_is_shown() {
        let old = profile(vec![cli(
            "1.0.0",
            &["proxy: env HTTPS_PROXY"],
            &["api.example.com:443"],
        )]);
        let new = profile(vec![cli(
            "1.1.0",
            &["proxy: env HTTPS_PROXY", "timezone: file /etc/localtime"],
            &["api.example.com:443"],
        )]);
        let d = diff(&old, &new);
        assert!(d.behaviour_changed);
        let d = d.text;
        assert!(
            d.starts_with("~ /usr/bin/node /opt/x/node_modules/some-cli/cli.js (some-cli@1.1.0)\n"),
            "{d}"
        );
        assert!(d.contains("    version 1.0.0 -> 1.1.0\n"), "{d}");
        assert!(
            !d.contains("fingerprint"),
            "a package's is its version: {d}"
        );
        assert!(d.contains("    + category timezone\n"), "{d}");
        assert!(
            d.contains("    + probe timezone: file /etc/localtime\n"),
            "{d}"
        );
        assert!(
            !d.contains("HTTPS_PROXY"),
            "unchanged probes are not listed: {d}"
        );
        assert_eq!(
            diff(&new, &new),
            ProfileDiff::default(),
            "no change, no output"
        );
    }

    #[test]
    fn a_new_version_that_behaves_the_same_is_listed_but_is_no_change_of_behaviour() {
        let probes = ["proxy: env HTTPS_PROXY"];
        let old = profile(vec![cli("1.0.0", &probes, &["api.example.com:443"])]);
        let new = profile(vec![cli("1.1.0", &probes, &["api.example.com:443"])]);
        let d = diff(&old, &new);
        assert!(!d.behaviour_changed, "{}", d.text);
        assert!(
            d.text.contains("    version 1.0.0 -> 1.1.0\n"),
            "{}",
            d.text
        );
    }

    #[test]
    fn native_builds_are_matched_by_name_across_install_paths_and_keyed_by_their_sha256() {
        let old = profile(vec![native("2.1.90", "aa11", &["timezone: env TZ"])]);
        let same = profile(vec![native("2.1.91", "bb22", &["timezone: env TZ"])]);
        let d = diff(&old, &same);
        assert!(!d.behaviour_changed, "{}", d.text);
        assert!(
            d.text
                .starts_with("~ /home/u/.local/share/claude/versions/2.1.91/claude\n")
        );
        assert!(
            d.text
                .contains("    fingerprint sha256 aa11 -> sha256 bb22\n"),
            "{}",
            d.text
        );
        assert!(d.text.contains("    exe /home/u/"), "{}", d.text);
        assert!(!d.text.contains("new CLI"), "{}", d.text);

        let more = profile(vec![native(
            "2.1.91",
            "bb22",
            &["timezone: env TZ", "api-relay: env ANTHROPIC_BASE_URL"],
        )]);
        let d = diff(&old, &more);
        assert!(d.behaviour_changed);
        assert!(
            d.text
                .contains("    + probe api-relay: env ANTHROPIC_BASE_URL\n"),
            "{}",
            d.text
        );
    }

    #[test]
    fn new_and_vanished_clis_and_a_round_trip_through_yaml() {
        let a = profile(vec![cli("1", &[], &["x:1"])]);
        let mut other = cli("1", &["proxy: env HTTPS_PROXY"], &[]);
        other.name = "curl".into();
        other.exe = "/usr/bin/curl".into();
        other.script = None;
        other.package = None;
        other.fingerprint = Some(Fingerprint::Unknown {
            why: "not hashed: the process exited first".into(),
        });
        let b = profile(vec![other]);
        let d = diff(&a, &b);
        assert!(d.behaviour_changed);
        let d = d.text;
        assert!(d.contains("+ new CLI /usr/bin/curl"), "{d}");
        assert!(d.contains("    + probe proxy: env HTTPS_PROXY"), "{d}");
        assert!(d.contains("- CLI no longer seen: /usr/bin/node"), "{d}");
        for p in [&a, &b, &profile(vec![native("1", "cc33", &[])])] {
            let text = serde_yaml::to_string(p).unwrap();
            let back: Profile = serde_yaml::from_str(&text).unwrap();
            assert_eq!(&back, p, "{text}");
        }
    }

    /// A profile written before CLIs had a name and a fingerprint still loads, and
    /// its CLIs are matched by the name derived from their package, script or exe.
    #[test]
    fn an_older_profile_without_name_or_fingerprint_is_matched_by_its_derived_name() {
        let older = "apiVersion: probectl.dev/v1alpha1\nkind: Profile\nmetadata:\n  policy: default\n  command: [some-cli]\nclis:\n- exe: /usr/bin/node\n  script: /opt/x/node_modules/some-cli/cli.js\n  package: some-cli\n  version: 1.0.0\n  categories: [proxy]\n  probes: ['proxy: env HTTPS_PROXY']\n  destinations: []\n";
        let old: Profile = serde_yaml::from_str(older).unwrap();
        let mut moved = cli("1.0.0", &["proxy: env HTTPS_PROXY"], &[]);
        moved.exe = "/usr/local/bin/node".into();
        let d = diff(&old, &profile(vec![moved]));
        assert!(!d.behaviour_changed, "{}", d.text);
        assert!(!d.text.contains("new CLI"), "{}", d.text);
    }
}
