//! `~/` paths against a process's own home: the `HOME` and `XDG_CONFIG_HOME` it was
//! given at exec, besides the passwd homes the policy is compiled for. A CLI run with
//! `HOME=/tmp/ci cmd`, in a container or under CI reads `/tmp/ci/.curlrc`; that is
//! `~/.curlrc` for that process.
//!
//! How the kernel hands such reads to userspace without knowing the home: every exact
//! policy path's last component is in `BASENAMES` from the moment the policy is
//! loaded, so an open of any file named `.curlrc` by a watched process that nothing
//! else matched comes to userspace as a basename candidate, from the process's first
//! instruction. The home itself comes from the exec-time environment scan (the
//! built-in names below, captured with their value), whose events are written at
//! execve entry, before the new program runs: they are always ahead of its file
//! events in the ring buffer, so there is no window in which a read happens before the
//! home is known. Prefixes and globs under `~/` (`~/.ssh/`) have no basename: the
//! exec scan also keeps the length of the home values in the process's kernel watch
//! entry, and the file programs look up what follows that many bytes of an absolute
//! path in `OWN_HOME_PATHS` (`kernel_keys`), from the first instruction too
//! (probe-ebpf `own_home`). Relative paths under a process's own home are matched only
//! by their basename (exact entries), as for the passwd homes' prefixes.

use std::sync::Arc;

use probe_common::{
    ENV_VALUE_PREFIX_LEN, EnvNameKey, OWN_HOME_UNDER_CONFIG, OWN_HOME_UNDER_HOME, PATH_LEN,
};

use super::keys::env_key;

/// The environment names the exec scan always reports with their value, whatever the
/// policy: they say where the process's `~/` is.
pub const HOME_ENV_NAMES: [&str; 2] = ["HOME", "XDG_CONFIG_HOME"];

/// Kernel keys of [`HOME_ENV_NAMES`].
pub fn home_env_keys() -> [EnvNameKey; 2] {
    HOME_ENV_NAMES.map(env_key)
}

/// A process's own homes, from its environment at exec (validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecHomes {
    pub home: Option<Arc<str>>,
    pub xdg_config_home: Option<Arc<str>>,
}

impl ExecHomes {
    pub fn is_empty(&self) -> bool {
        self.home.is_none() && self.xdg_config_home.is_none()
    }
}

/// Why a home value from the environment is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HomeRefused {
    #[error("not an absolute path")]
    NotAbsolute,
    #[error("has a `.` or `..` component")]
    DotComponent,
    #[error("is `/`")]
    Root,
    #[error("longer than the {0} bytes captured at exec")]
    Truncated(usize),
}

/// A home value as the process got it, checked: absolute, without `.`/`..`
/// components (which would let a process point its `~/` anywhere by spelling), not
/// `/` itself, and captured whole. Trailing slashes and doubled slashes are dropped.
/// Nothing is read from the filesystem: the value is matched as a string against the
/// paths the process itself named, so no symlink is followed on its behalf.
pub fn check_home(value: &str, truncated: bool) -> Result<String, HomeRefused> {
    if truncated {
        return Err(HomeRefused::Truncated(ENV_VALUE_PREFIX_LEN - 1));
    }
    if !value.starts_with('/') {
        return Err(HomeRefused::NotAbsolute);
    }
    let parts: Vec<&str> = value.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(HomeRefused::DotComponent);
    }
    if parts.is_empty() {
        return Err(HomeRefused::Root);
    }
    Ok(format!("/{}", parts.join("/")))
}

/// How a `~/` policy entry matches what follows the home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Glob,
}

/// The policy's `~/` entries as written, relative to the home (with a leading `/`:
/// `~/.curlrc` is `/.curlrc`), each with its category.
#[derive(Debug, Clone, Default)]
pub struct HomeTemplates {
    entries: Vec<(String, Kind, usize)>,
}

impl HomeTemplates {
    /// Notes a `paths` entry; other paths are ignored.
    pub(super) fn add_path(&mut self, written: &str, category: usize) {
        if let Some(rest) = written.strip_prefix('~') {
            let kind = if super::glob::is_glob(rest) {
                Kind::Glob
            } else {
                Kind::Exact
            };
            self.entries.push((rest.to_owned(), kind, category));
        }
    }

    /// Notes a `path_prefixes` entry; other prefixes are ignored.
    pub(super) fn add_prefix(&mut self, written: &str, category: usize) {
        if let Some(rest) = written.strip_prefix('~') {
            self.entries.push((rest.to_owned(), Kind::Prefix, category));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `OWN_HOME_PATHS` keys, as (prefix length in bits, key, exact): each `~/` path
    /// (the key ends with the path's NUL, so only the whole path matches), each `~/`
    /// prefix, and each `~/` glob's literal directory, relative to `HOME` (first byte
    /// `OWN_HOME_UNDER_HOME`), and for those under `~/.config` also relative to
    /// `XDG_CONFIG_HOME` (`OWN_HOME_UNDER_CONFIG`). Keys that would not fit are left
    /// out (like the passwd-home expansions of `PATHS`). Distinct, in a stable order.
    pub fn kernel_keys(&self) -> Vec<(u32, [u8; PATH_LEN], bool)> {
        let mut keys = std::collections::BTreeSet::new();
        for (template, kind, _) in &self.entries {
            let (relative, exact) = match kind {
                Kind::Exact => (template.as_str(), true),
                Kind::Prefix => (template.as_str(), false),
                Kind::Glob => (super::glob::literal_prefix(template), false),
            };
            let mut put = |marker: u8, rest: &str| {
                // An exact key also holds the NUL (zero already).
                let len = 1 + rest.len() + usize::from(exact);
                if len <= PATH_LEN && !(exact && rest.contains('\0')) {
                    let mut key = [0u8; PATH_LEN];
                    key[0] = marker;
                    key[1..=rest.len()].copy_from_slice(rest.as_bytes());
                    keys.insert(((len * 8) as u32, key, exact));
                }
            };
            put(OWN_HOME_UNDER_HOME, relative);
            if let Some(rest) = relative.strip_prefix("/.config")
                && (rest.is_empty() || rest.starts_with('/'))
            {
                put(OWN_HOME_UNDER_CONFIG, rest);
            }
        }
        keys.into_iter().collect()
    }

    /// The categories a hit on a `kernel_keys` key is sure of, whatever the rest of
    /// the path: the exact entries it is (for an exact key) and the prefixes it lies
    /// under. Globs need the whole path: userspace decides them.
    pub fn key_categories(&self, marker: u8, rest: &str, exact: bool) -> Vec<usize> {
        let relative = if marker == OWN_HOME_UNDER_CONFIG {
            format!("/.config{rest}")
        } else {
            rest.to_owned()
        };
        let mut out: Vec<usize> = self
            .entries
            .iter()
            .filter(|(template, kind, _)| match kind {
                Kind::Exact => exact && *template == relative,
                Kind::Prefix => relative.starts_with(template.as_str()),
                Kind::Glob => false,
            })
            .map(|(_, _, category)| *category)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Categories whose `~/` entries name `path` under the process's own homes.
    /// `$XDG_CONFIG_HOME/x` is `~/.config/x`; when XDG_CONFIG_HOME is set it replaces
    /// `~/.config`, so `$HOME/.config/x` is then not `~/.config/x`.
    pub fn categories(&self, path: &str, homes: &ExecHomes) -> Vec<usize> {
        let mut out = Vec::new();
        if self.entries.is_empty() {
            return out;
        }
        let mut relative: Vec<String> = Vec::with_capacity(2);
        if let Some(rest) = homes
            .xdg_config_home
            .as_deref()
            .and_then(|x| under(path, x))
        {
            relative.push(format!("/.config{rest}"));
        }
        if let Some(rest) = homes.home.as_deref().and_then(|h| under(path, h))
            && !(homes.xdg_config_home.is_some()
                && (rest == "/.config" || rest.starts_with("/.config/")))
        {
            relative.push(rest.to_owned());
        }
        for rel in &relative {
            for (template, kind, category) in &self.entries {
                let hit = match kind {
                    Kind::Exact => template == rel,
                    Kind::Prefix => rel.starts_with(template.as_str()),
                    Kind::Glob => super::glob::matches(template, rel),
                };
                if hit {
                    out.push(*category);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// What follows `base` in `path` (starting with `/`), if `path` is under `base`.
fn under<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(base)?;
    (rest.starts_with('/') && rest.len() > 1).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn homes(home: Option<&str>, xdg: Option<&str>) -> ExecHomes {
        ExecHomes {
            home: home.map(Arc::from),
            xdg_config_home: xdg.map(Arc::from),
        }
    }

    #[test]
    fn refuses_relative_dotted_root_and_cut_homes() {
        assert_eq!(check_home("/tmp/ci//", false), Ok("/tmp/ci".to_owned()));
        assert_eq!(check_home("tmp/ci", false), Err(HomeRefused::NotAbsolute));
        assert_eq!(check_home("", false), Err(HomeRefused::NotAbsolute));
        assert_eq!(
            check_home("/tmp/../etc", false),
            Err(HomeRefused::DotComponent)
        );
        assert_eq!(
            check_home("/tmp/./x", false),
            Err(HomeRefused::DotComponent)
        );
        assert_eq!(check_home("//", false), Err(HomeRefused::Root));
        assert!(matches!(
            check_home("/tmp/long", true),
            Err(HomeRefused::Truncated(_))
        ));
    }

    #[test]
    fn matches_exact_prefix_and_glob_entries_under_the_process_home() {
        let mut t = HomeTemplates::default();
        t.add_path("~/.curlrc", 0);
        t.add_path("/etc/environment", 9);
        t.add_prefix("~/.ssh/", 1);
        t.add_path("~/.config/**/credentials", 2);
        t.add_path("~/.config/git/config", 3);
        let h = homes(Some("/tmp/ci"), None);
        assert_eq!(t.categories("/tmp/ci/.curlrc", &h), vec![0]);
        assert_eq!(t.categories("/tmp/ci/.ssh/id_rsa", &h), vec![1]);
        assert_eq!(t.categories("/tmp/ci/.config/a/b/credentials", &h), vec![2]);
        assert_eq!(t.categories("/tmp/ci/.config/git/config", &h), vec![3]);
        assert!(t.categories("/tmp/cix/.curlrc", &h).is_empty());
        assert!(t.categories("/tmp/ci/x/.curlrc", &h).is_empty());
        assert!(t.categories("/etc/environment", &h).is_empty());
        assert!(
            t.categories("/tmp/ci/.curlrc", &ExecHomes::default())
                .is_empty()
        );
    }

    #[test]
    fn kernel_keys_hold_paths_prefixes_and_glob_directories_under_home_and_config() {
        let mut t = HomeTemplates::default();
        t.add_path("~/.curlrc", 0);
        t.add_prefix("~/.ssh/", 1);
        t.add_prefix("~/.config/gcloud/", 2);
        t.add_path("~/.config/*/credentials", 3);
        t.add_prefix("~/.ssh/", 4);
        let keys: Vec<(u32, Vec<u8>, bool)> = t
            .kernel_keys()
            .into_iter()
            .map(|(bits, key, exact)| (bits, key[..bits as usize / 8].to_vec(), exact))
            .collect();
        let want = |marker: u8, rest: &str| {
            let mut k = vec![marker];
            k.extend_from_slice(rest.as_bytes());
            ((k.len() * 8) as u32, k, false)
        };
        let mut expected = vec![
            (
                (10 * 8),
                [&[OWN_HOME_UNDER_HOME][..], b"/.curlrc\0"].concat(),
                true,
            ),
            want(OWN_HOME_UNDER_HOME, "/.ssh/"),
            want(OWN_HOME_UNDER_HOME, "/.config/gcloud/"),
            want(OWN_HOME_UNDER_CONFIG, "/gcloud/"),
            want(OWN_HOME_UNDER_HOME, "/.config/"),
            want(OWN_HOME_UNDER_CONFIG, "/"),
        ];
        expected.sort();
        let mut got = keys;
        got.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_key_is_sure_of_its_exact_entries_and_the_prefixes_above_it_never_of_globs() {
        let mut t = HomeTemplates::default();
        t.add_path("~/.ssh/config", 0);
        t.add_prefix("~/.ssh/", 1);
        t.add_path("~/.config/*/credentials", 2);
        t.add_prefix("~/.config/gcloud/", 3);
        assert_eq!(
            t.key_categories(OWN_HOME_UNDER_HOME, "/.ssh/config", true),
            vec![0, 1]
        );
        assert_eq!(
            t.key_categories(OWN_HOME_UNDER_HOME, "/.ssh/", false),
            vec![1]
        );
        // The glob's directory: nothing is sure before the glob is matched.
        assert!(
            t.key_categories(OWN_HOME_UNDER_HOME, "/.config/", false)
                .is_empty()
        );
        // Under XDG_CONFIG_HOME, the key is relative to `~/.config`.
        assert_eq!(
            t.key_categories(OWN_HOME_UNDER_CONFIG, "/gcloud/", false),
            vec![3]
        );
    }

    #[test]
    fn xdg_config_home_replaces_dot_config() {
        let mut t = HomeTemplates::default();
        t.add_path("~/.config/git/config", 3);
        t.add_path("~/.curlrc", 0);
        let h = homes(Some("/tmp/ci"), Some("/tmp/xdg"));
        assert_eq!(t.categories("/tmp/xdg/git/config", &h), vec![3]);
        assert!(t.categories("/tmp/ci/.config/git/config", &h).is_empty());
        assert_eq!(t.categories("/tmp/ci/.curlrc", &h), vec![0]);
        // XDG_CONFIG_HOME alone still names `~/.config`.
        let only_xdg = homes(None, Some("/tmp/xdg"));
        assert_eq!(t.categories("/tmp/xdg/git/config", &only_xdg), vec![3]);
    }
}
