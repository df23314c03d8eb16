//! The readable stream as a process tree: each process's lines are indented by its
//! depth below the first process the stream showed, with a guide per level, so a
//! child's probes sit under its parent's exec.
//!
//! ```text
//!   +0.010s  [800] exec    /usr/bin/sh  argv: sh -c ...
//!   +0.012s  │ [801] exec    /usr/bin/node  argv: node cli.js
//!   +0.020s  │ [801] probe   timezone   getenv    TZ -> unset  (node)
//! ```

use std::collections::HashMap;

use crate::records::{Body, Record};

/// Deepest indentation; deeper processes line up with it.
const MAX_DEPTH: usize = 8;
/// Width of the time column every event line starts with (`{:>9}` and two spaces).
const TIME_COLUMN: usize = 11;

#[derive(Debug, Default)]
pub struct TreeIndent {
    /// Depth of each process seen to exec and not yet to exit.
    depth: HashMap<u32, usize>,
}

impl TreeIndent {
    pub fn indent(&mut self, record: &Record, text: String) -> String {
        if let Body::Watching(w) = &record.body {
            // Seeded from /proc, not seen to exec: they are the tops.
            for &root in &w.roots {
                self.depth.insert(root, 0);
            }
        }
        let Some(pid) = record.pid() else {
            return text;
        };
        let depth = match &record.body {
            Body::Exec(e) => self.place(pid, e.ppid, &e.ancestors),
            Body::Exit(_) => self.depth.remove(&pid).unwrap_or(0),
            _ => self.depth.get(&pid).copied().unwrap_or(0),
        };
        if depth == 0 {
            return text;
        }
        indent_lines(&text, depth)
    }
}

impl TreeIndent {
    /// Depth of a process at its exec: one below the nearest ancestor already drawn,
    /// counting the ones between that never exec'd (a shell's subshell forks its
    /// pipeline's commands without an exec of its own, so it has no line). Those get
    /// their depth too, for the lines they make themselves (their probes, their exit).
    fn place(&mut self, pid: u32, ppid: u32, ancestors: &[u32]) -> usize {
        let chain: Vec<u32> = std::iter::once(ppid)
            .chain(ancestors.iter().copied())
            .collect();
        let Some((found, top)) = chain
            .iter()
            .enumerate()
            .find_map(|(i, p)| self.depth.get(p).map(|&d| (i, d)))
        else {
            // No ancestor drawn: the top of a tree.
            self.depth.insert(pid, 0);
            return 0;
        };
        for (i, &between) in chain[..found].iter().enumerate() {
            // None of these is drawn yet: `found` is the first that is.
            self.depth.insert(between, (top + found - i).min(MAX_DEPTH));
        }
        let d = (top + found + 1).min(MAX_DEPTH);
        self.depth.insert(pid, d);
        d
    }
}

/// Shifts every line right by `depth` guides after the time column.
fn indent_lines(text: &str, depth: usize) -> String {
    let guide = "│ ".repeat(depth);
    let mut out = String::with_capacity(text.len() + guide.len() * 2);
    for line in text.split_inclusive('\n') {
        match line.char_indices().nth(TIME_COLUMN) {
            Some((at, _)) => {
                out.push_str(&line[..at]);
                out.push_str(&guide);
                out.push_str(&line[at..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ExecRecord, ExitRecord, Header};

    fn about(pid: u32, body: Body) -> Record {
        Record {
            header: Header {
                pid: Some(pid),
                ..Header::now()
            },
            body,
        }
    }

    fn exec(pid: u32, ppid: u32) -> Record {
        exec_under(pid, ppid, vec![])
    }

    fn exec_under(pid: u32, ppid: u32, ancestors: Vec<u32>) -> Record {
        about(
            pid,
            Body::Exec(ExecRecord {
                ppid,
                uid: 0,
                exe: "/bin/x".into(),
                exe_truncated: false,
                argv: vec![],
                argv_incomplete: false,
                argv_truncated: vec![],
                argv_lost: false,
                selected_by: None,
                ancestors,
            }),
        )
    }

    #[test]
    fn children_are_indented_under_their_parent_and_forgotten_at_exit() {
        let mut t = TreeIndent::default();
        let line = "  +0.010s  [1] exec\n";
        assert_eq!(
            t.indent(&exec(100, 1), line.into()),
            line,
            "the first is the top"
        );
        let child = t.indent(&exec(101, 100), "  +0.011s  [101] exec\n     more\n".into());
        assert_eq!(child, "  +0.011s  │ [101] exec\n     more\n");
        let grandchild = t.indent(&exec(102, 101), "  +0.012s  [102] exec\n".into());
        assert_eq!(grandchild, "  +0.012s  │ │ [102] exec\n");
        let exit = about(102, Body::Exit(ExitRecord { exit_code: Some(0) }));
        assert!(
            t.indent(&exit, "  +0.013s  [102] exit\n".into())
                .contains("│ │ [102]")
        );
        assert!(!t.depth.contains_key(&102));
    }

    /// `sh -c '(cat | tr | cut)'`: the subshell (101) forks the pipeline's commands
    /// without an exec of its own; they are drawn two levels under sh, and the
    /// subshell's own lines one level under it.
    #[test]
    fn children_of_a_subshell_that_never_execs_are_drawn_at_their_real_depth() {
        let mut t = TreeIndent::default();
        t.indent(&exec(100, 1), "  +0.010s  [100] exec\n".into());
        for pid in [102, 103] {
            let line = format!("  +0.011s  [{pid}] exec\n");
            assert_eq!(
                t.indent(&exec_under(pid, 101, vec![100, 1]), line),
                format!("  +0.011s  │ │ [{pid}] exec\n")
            );
        }
        let exit = about(101, Body::Exit(ExitRecord { exit_code: Some(0) }));
        assert_eq!(
            t.indent(&exit, "  +0.013s  [101] exit\n".into()),
            "  +0.013s  │ [101] exit\n"
        );
        // No ancestor drawn at all: a top.
        assert_eq!(
            t.indent(
                &exec_under(300, 299, vec![298]),
                "  +0.014s  [300] exec\n".into()
            ),
            "  +0.014s  [300] exec\n"
        );
    }
}
