//! The environment a process handed to execve, as the kernel's scan reported it,
//! kept until the exec completes.

use std::collections::BTreeMap;

use probe_common::ExecEnvEvent;

/// One process's policy names present at its pending exec: the first entry of each
/// name within the last attempt.
///
/// First, because that is the one the program sees: glibc's and musl's getenv, Python's
/// `os.environ`, Go's `os.Getenv` and Node's `process.env` all take the first of two
/// `HOME=` entries, so a process that hands itself `HOME=/tmp/h` then `HOME=/` still
/// has its `~/` in /tmp/h (the kernel's scan keeps the same one, `exec_env.rs`).
/// Last attempt, because an execvp PATH search or a failed execve tries several
/// images: an index not above the last one starts another attempt, which may carry
/// another environment.
#[derive(Debug, Default)]
pub(super) struct Exposure {
    last_index: Option<u16>,
    names: BTreeMap<Vec<u8>, ExecEnvEvent>,
}

impl Exposure {
    /// Notes one reported entry. Bounded: one entry per policy name.
    pub(super) fn add(&mut self, e: &ExecEnvEvent) {
        if self.last_index.is_some_and(|last| e.index <= last) {
            self.names.clear();
        }
        self.last_index = Some(e.index);
        self.names.entry(e.name_bytes().to_vec()).or_insert(*e);
    }

    pub(super) fn into_names(self) -> BTreeMap<Vec<u8>, ExecEnvEvent> {
        self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::{EVENT_ENV_AT_EXEC, EventHeader};

    fn entry(index: u16, name: &str, value: &str) -> ExecEnvEvent {
        let mut e = ExecEnvEvent {
            header: EventHeader {
                kind: EVENT_ENV_AT_EXEC,
                cpu: 0,
                tgid: 1,
                tid: 1,
                ktime_ns: 0,
            },
            entry_id: 0,
            name_len: name.len() as u32,
            value_len: value.len() as u32,
            flags: probe_common::EXEC_ENV_VALUE_CAPTURED,
            index,
            name: [0; probe_common::ENV_NAME_LEN],
            value: [0; probe_common::ENV_VALUE_PREFIX_LEN],
        };
        e.name[..name.len()].copy_from_slice(name.as_bytes());
        e.value[..value.len()].copy_from_slice(value.as_bytes());
        e
    }

    fn value_of(x: &Exposure, name: &str) -> Option<String> {
        x.names
            .get(name.as_bytes())
            .map(|e| String::from_utf8_lossy(e.value_bytes()).into_owned())
    }

    #[test]
    fn the_first_entry_of_a_name_is_the_one_the_program_sees() {
        let mut x = Exposure::default();
        x.add(&entry(3, "HOME", "/tmp/h"));
        x.add(&entry(7, "HOME", "/"));
        assert_eq!(value_of(&x, "HOME").as_deref(), Some("/tmp/h"));
    }

    #[test]
    fn another_attempt_replaces_the_whole_environment() {
        let mut x = Exposure::default();
        // A failed execve with HOME=/ and TZ, then one with another HOME and no TZ.
        x.add(&entry(0, "HOME", "/"));
        x.add(&entry(4, "TZ", "UTC"));
        x.add(&entry(2, "HOME", "/tmp/h"));
        assert_eq!(value_of(&x, "HOME").as_deref(), Some("/tmp/h"));
        assert_eq!(
            value_of(&x, "TZ"),
            None,
            "TZ was in the failed attempt only"
        );
        // The same envp tried again (a PATH search): same index, new attempt.
        x.add(&entry(2, "HOME", "/tmp/h"));
        assert_eq!(value_of(&x, "HOME").as_deref(), Some("/tmp/h"));
    }
}
