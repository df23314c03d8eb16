//! Behaviour profiles: what each CLI of a run probed and contacted, written as YAML by
//! `probectl run --profile FILE`, and compared by `probectl diff A B`. Comparing the
//! profiles of two versions of a CLI is how a new, undocumented probe in an upgrade
//! gets noticed.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

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
    /// What the CLI is matched on between profiles: exe, script file name and package
    /// name, not the version (so two versions of one CLI are compared).
    pub exe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub categories: BTreeSet<String>,
    /// `category: env NAME` or `category: file PATH` (bursts under a prefix as `prefix**`).
    pub probes: BTreeSet<String>,
    /// `host:port` by name when known, else `address:port`; `unix:PATH`.
    pub destinations: BTreeSet<String>,
    #[serde(default)]
    pub rules: BTreeSet<String>,
}

impl CliProfile {
    fn key(&self) -> (String, Option<String>, Option<String>) {
        let script_name = self
            .script
            .as_deref()
            .map(|s| s.rsplit('/').next().unwrap_or(s).to_owned());
        (self.exe.clone(), script_name, self.package.clone())
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

/// What changed from `old` to `new`, per CLI, as readable lines; empty when nothing did.
pub fn diff(old: &Profile, new: &Profile) -> String {
    let mut s = String::new();
    for cli in &new.clis {
        match old.clis.iter().find(|o| o.key() == cli.key()) {
            None => {
                let _ = writeln!(s, "+ new CLI {}", cli.label());
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
                for (what, before, after) in [
                    ("category", &o.categories, &cli.categories),
                    ("probe", &o.probes, &cli.probes),
                    ("contacts", &o.destinations, &cli.destinations),
                    ("rule", &o.rules, &cli.rules),
                ] {
                    for added in after.difference(before) {
                        let _ = writeln!(lines, "    + {what} {added}");
                    }
                    for removed in before.difference(after) {
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
            let _ = writeln!(s, "- CLI no longer seen: {}", cli.label());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(version: &str, probes: &[&str], dests: &[&str]) -> CliProfile {
        CliProfile {
            exe: "/usr/bin/node".into(),
            script: Some("/opt/x/node_modules/some-cli/cli.js".into()),
            package: Some("some-cli".into()),
            version: Some(version.into()),
            categories: probes
                .iter()
                .map(|p| p.split(':').next().unwrap().to_owned())
                .collect(),
            probes: probes.iter().map(|p| p.to_string()).collect(),
            destinations: dests.iter().map(|d| d.to_string()).collect(),
            rules: BTreeSet::new(),
        }
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
        assert!(
            d.starts_with("~ /usr/bin/node /opt/x/node_modules/some-cli/cli.js (some-cli@1.1.0)\n"),
            "{d}"
        );
        assert!(d.contains("    version 1.0.0 -> 1.1.0\n"), "{d}");
        assert!(d.contains("    + category timezone\n"), "{d}");
        assert!(
            d.contains("    + probe timezone: file /etc/localtime\n"),
            "{d}"
        );
        assert!(
            !d.contains("HTTPS_PROXY"),
            "unchanged probes are not listed: {d}"
        );
        assert_eq!(diff(&new, &new), "", "no change, no output");
    }

    #[test]
    fn new_and_vanished_clis_and_a_round_trip_through_yaml() {
        let a = profile(vec![cli("1", &[], &["x:1"])]);
        let mut other = cli("1", &["proxy: env HTTPS_PROXY"], &[]);
        other.exe = "/usr/bin/curl".into();
        other.script = None;
        other.package = None;
        let b = profile(vec![other]);
        let d = diff(&a, &b);
        assert!(d.contains("+ new CLI /usr/bin/curl"), "{d}");
        assert!(d.contains("    + probe proxy: env HTTPS_PROXY"), "{d}");
        assert!(d.contains("- CLI no longer seen: /usr/bin/node"), "{d}");
        let text = serde_yaml::to_string(&b).unwrap();
        let back: Profile = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, b);
    }
}
