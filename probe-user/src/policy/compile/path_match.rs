//! Which categories a path falls under (exact paths, prefixes, globs, the
//! `/proc/<pid>/environ` entry), and whether the kernel's path entries carry them.

use super::{Classifier, is_proc_environ, is_proc_mem};

impl Classifier {
    /// Whether a path glob gives `path` a category its exact and prefix entries do
    /// not: the kernel's path entries hold no glob, so it did not count that one
    /// toward block rules.
    pub fn glob_adds_category(&self, path: &str) -> bool {
        self.globs
            .iter()
            .filter(|(g, _)| crate::policy::glob::matches(g, path))
            .any(|(_, c)| {
                !self.exact_paths.iter().any(|(p, e)| e == c && p == path)
                    && !self
                        .prefixes
                        .iter()
                        .any(|(p, e)| e == c && path.starts_with(p.as_str()))
            })
    }

    /// Categories (indices) whose paths or prefixes cover `path`.
    pub fn path_categories(&self, path: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .exact_paths
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, c)| *c)
            .chain(
                self.prefixes
                    .iter()
                    .filter(|(p, _)| path.starts_with(p.as_str()))
                    .map(|(_, c)| *c),
            )
            .chain(
                self.globs
                    .iter()
                    .filter(|(g, _)| crate::policy::glob::matches(g, path))
                    .map(|(_, c)| *c),
            )
            .collect();
        if is_proc_environ(path) || is_proc_mem(path) {
            out.extend(&self.proc_environ);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}
