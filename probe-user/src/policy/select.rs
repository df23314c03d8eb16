//! Selectors only userspace can evaluate: executable path globs and the command line
//! (substrings, regular expressions). Program names and user ids are selected in the
//! kernel (`SELECT_COMMS`, `SELECT_UIDS`), race-free; these are decided when the exec
//! event arrives, so the first moments of a process selected this way may pass before
//! it is watched. Children are followed from then on, in the kernel.

use super::glob;
use super::schema::Selection;

#[derive(Debug, Clone, Default)]
pub struct UserSelectors {
    exe: Vec<String>,
    argv_contains: Vec<String>,
    argv_regex: Vec<regex::Regex>,
    /// Container id prefixes (lower case), or `*`.
    containers: Vec<String>,
}

impl UserSelectors {
    /// From a validated selection (its regexes compile).
    pub fn compile(select: &Selection) -> Self {
        Self {
            exe: select.exe.clone(),
            argv_contains: select.argv_contains.clone(),
            argv_regex: select
                .argv_regex
                .iter()
                .filter_map(|r| super::limits::selector_regex(r).ok())
                .collect(),
            containers: select
                .containers
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exe.is_empty()
            && self.argv_contains.is_empty()
            && self.argv_regex.is_empty()
            && self.containers.is_empty()
    }

    /// The selector that picks a process with this executable, command line and
    /// container, if any (for the report: why it is watched).
    pub fn matching(&self, exe: &str, argv: &[String], container: Option<&str>) -> Option<String> {
        if let Some(id) = container
            && let Some(c) = self
                .containers
                .iter()
                .find(|c| *c == "*" || id.starts_with(c.as_str()))
        {
            return Some(format!("container {c}"));
        }
        if let Some(g) = self.exe.iter().find(|g| glob::matches(g, exe)) {
            return Some(format!("exe {g}"));
        }
        let line = argv.join(" ");
        if let Some(s) = self
            .argv_contains
            .iter()
            .find(|s| line.contains(s.as_str()))
        {
            return Some(format!("argv contains {s}"));
        }
        self.argv_regex
            .iter()
            .find(|r| r.is_match(&line))
            .map(|r| format!("argv matches {}", r.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_globs_command_lines_and_containers() {
        let s = UserSelectors::compile(&Selection {
            exe: vec!["**/bin/claude".into(), "/opt/tools/*".into()],
            argv_contains: vec!["@anthropic-ai/claude-code".into()],
            argv_regex: vec![r"\bcodex(\.js)?\b".into()],
            ..Default::default()
        });
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let m = |exe: &str, args: &[&str]| s.matching(exe, &argv(args), None);
        assert!(m("/home/u/.local/bin/claude", &[]).is_some());
        assert!(m("/opt/tools/x", &[]).is_some());
        assert!(
            m("/opt/tools/sub/x", &[]).is_none(),
            "* stays in one component"
        );
        assert_eq!(
            m(
                "/usr/bin/node",
                &[
                    "node",
                    "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js"
                ]
            )
            .as_deref(),
            Some("argv contains @anthropic-ai/claude-code")
        );
        assert!(m("/usr/bin/node", &["node", "codex.js"]).is_some());
        assert!(m("/usr/bin/node", &["node", "mycodexjs"]).is_none());
        assert!(m("/usr/bin/true", &["true"]).is_none());
        assert!(UserSelectors::default().is_empty());
        let by_container = UserSelectors::compile(&Selection {
            containers: vec!["3F4E5D6C7B8A".into()],
            ..Default::default()
        });
        let id = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00998877665544332211";
        assert!(by_container.matching("/bin/sh", &[], Some(id)).is_some());
        let other = id.replace('3', "4");
        assert!(
            by_container
                .matching("/bin/sh", &[], Some(&other))
                .is_none()
        );
        assert!(
            by_container.matching("/bin/sh", &[], None).is_none(),
            "not in a container"
        );
    }
}
