//! `/etc/probectl/config.yaml`: where the policies are, where records go, and how
//! much the daemon may keep in memory. Every field has a default, so an empty file
//! (or none) gives a working daemon with the built-in policy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::output::Format;
use crate::ship::sinks::SinkConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}\n  hint: see docs/deploy.md for every field")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directories whose `*.yaml` policies are merged; none, or no file in them:
    /// the built-in policy.
    pub policy_dirs: Vec<PathBuf>,
    /// Where records go; several at once.
    pub sinks: Vec<SinkConfig>,
    pub memory: MemoryConfig,
    /// The control socket.
    pub socket: PathBuf,
    /// Members of this group may use the control socket for their own processes.
    pub group: String,
    /// Where the per-host sequence number is kept across restarts (the unit's
    /// `StateDirectory`), and the syslog spools; if it cannot be written, the sequence
    /// still never repeats (a start continues past the wall clock; counted).
    pub state_dir: PathBuf,
    /// Identical records of one tree: the first `keep` per `window` go to the sinks,
    /// the rest are counted in a `repeated` record (`keep: 0` turns it off).
    pub repeats: RepeatsConfig,
    /// How often systemd's watchdog is pinged when `WatchdogSec` is set is derived
    /// from `WATCHDOG_USEC`; this is only the status refresh period.
    #[serde(with = "duration_text")]
    pub status_every: Duration,
    /// Block rules (`action: block`) refuse the calls they match; false (the
    /// default): they write `would_block` records only.
    pub enforce: bool,
    /// The DNS servers whose answers name addresses for block rules' host names
    /// (`ADDR` or `ADDR:PORT`); absent: the `nameserver`s of /etc/resolv.conf, re-read
    /// at each policy reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_resolvers: Option<Vec<crate::policy::dns_trust::Resolver>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepeatsConfig {
    pub keep: u32,
    #[serde(with = "duration_text")]
    pub window: Duration,
}

impl Default for RepeatsConfig {
    fn default() -> Self {
        Self {
            keep: 5,
            window: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Distinct probes kept over all process trees.
    pub max_probes: usize,
    /// How long a tree's timeline is kept after its last process exited.
    #[serde(with = "duration_text")]
    pub tree_grace: Duration,
    /// Records queued per subscriber before a slow one is disconnected.
    pub subscriber_queue: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_probes: crate::correlate::MAX_DISTINCT_PROBES,
            tree_grace: Duration::from_secs(300),
            subscriber_queue: 4096,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy_dirs: Vec::new(),
            sinks: vec![SinkConfig::Stderr {
                format: Format::Human,
            }],
            memory: MemoryConfig::default(),
            socket: super::DEFAULT_SOCKET.into(),
            group: "probectl".to_owned(),
            state_dir: "/var/lib/probectl".into(),
            status_every: Duration::from_secs(5),
            enforce: false,
            trusted_resolvers: None,
            repeats: RepeatsConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path`; a missing file at the default location is the defaults (a
    /// missing file named explicitly is an error).
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Config = serde_yaml::from_str(text).map_err(|err| {
            let (line, column, message) = crate::policy::yaml_error_parts(&err);
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if config.memory.max_probes == 0 || config.memory.subscriber_queue == 0 {
            return Err(invalid(
                "memory.max_probes and memory.subscriber_queue must be at least 1".into(),
            ));
        }
        for sink in &config.sinks {
            sink.check().map_err(invalid)?;
        }
        if config.sinks.is_empty() {
            return Err(invalid(
                "sinks is empty: records would go nowhere (add `- type: stderr`)".into(),
            ));
        }
        if !config.socket.is_absolute() {
            return Err(invalid(format!(
                "socket {} must be an absolute path",
                config.socket.display()
            )));
        }
        Ok(config)
    }
}

/// Durations written as in policies: `30s`, `5m`, `500ms`.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::policy::rules::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_config_is_the_defaults() {
        let c = Config::parse("", "c.yaml").unwrap();
        assert_eq!(c.socket, Path::new(super::super::DEFAULT_SOCKET));
        assert!(c.policy_dirs.is_empty());
    }

    #[test]
    fn no_file_at_the_default_path_is_the_defaults_but_a_named_one_must_exist() {
        let missing = Path::new("/nonexistent/probectl/config.yaml");
        let c = Config::load(missing, false).unwrap();
        assert!(c.policy_dirs.is_empty(), "the built-in policy");
        let err = Config::load(missing, true).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/probectl/config.yaml"), "{err}");
    }

    #[test]
    fn a_full_config_parses() {
        let c = Config::parse(
            "policy_dirs: [/etc/probectl/policies]\nsinks:\n  - type: stderr\n    format: json\n  - {type: jsonl, path: /var/log/probectl/events.jsonl}\n  - {type: jsonl, path: /var/log/probectl/ecs.jsonl, format: ecs}\n  - {type: stdout, format: ocsf}\nmemory: {max_probes: 5000, tree_grace: 2m}\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(c.sinks.len(), 4);
        assert_eq!(c.memory.tree_grace, Duration::from_secs(120));
        assert_eq!(c.memory.max_probes, 5000);
    }

    #[test]
    fn enforcement_is_off_unless_the_config_turns_it_on() {
        assert!(!Config::default().enforce);
        assert!(
            !Config::parse("policy_dirs: []\n", "c.yaml")
                .unwrap()
                .enforce
        );
        assert!(Config::parse("enforce: true\n", "c.yaml").unwrap().enforce);
    }

    #[test]
    fn trusted_resolvers_default_to_resolv_conf_and_are_checked() {
        assert!(Config::default().trusted_resolvers.is_none());
        let c = Config::parse(
            "trusted_resolvers: [10.0.0.2, \"127.0.0.1:5353\"]\n",
            "c.yaml",
        )
        .unwrap();
        let list: Vec<String> = c
            .trusted_resolvers
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(list, ["10.0.0.2:53", "127.0.0.1:5353"]);
        assert!(Config::parse("trusted_resolvers: [resolver.example]\n", "c.yaml").is_err());
    }

    #[test]
    fn one_format_list_serves_every_sink_and_each_sink_checks_its_own() {
        let c = Config::parse(
            "sinks:\n  - {type: stderr}\n  - {type: stderr, format: ecs}\n  - {type: jsonl, path: /x}\n  - {type: jsonl, path: /y, format: native}\n",
            "c.yaml",
        )
        .unwrap();
        let formats: Vec<Format> = c
            .sinks
            .iter()
            .map(|s| match s {
                SinkConfig::Stderr { format } | SinkConfig::Jsonl { format, .. } => *format,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            formats,
            [Format::Human, Format::Ecs, Format::Ecs, Format::Json],
            "defaults: human on stderr, ECS elsewhere; `native` is `json`"
        );
        for (text, why) in [
            (
                "sinks: [{type: jsonl, path: /x, format: human}]",
                "not human",
            ),
            (
                "sinks: [{type: syslog, address: \"127.0.0.1:514\", format: human}]",
                "not human",
            ),
            (
                "sinks: [{type: syslog, address: \"127.0.0.1:514\", facility: 30}]",
                "not 0-23",
            ),
            (
                "sinks: [{type: syslog, address: \"127.0.0.1:514\", max_message_bytes: 100}]",
                "below 480",
            ),
            (
                "sinks: [{type: file, path: /x, rotate: {keep: 2}}]",
                "max_bytes",
            ),
        ] {
            let err = Config::parse(text, "c.yaml").unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn mistakes_name_the_file_and_position() {
        let err = Config::parse("memory: {tree_grce: 2m}\n", "/etc/probectl/config.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/probectl/config.yaml:1:"), "{err}");
        assert!(err.contains("tree_grce"), "{err}");
        let err = Config::parse("memory: {tree_grace: soon}\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("soon"), "{err}");
        let err = Config::parse("sinks: []\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinks is empty"), "{err}");
    }
}
