//! A program that fails to load is reported in one line: the syscall's error, the
//! verifier's own reason (the last line of its log before the statistics), and the
//! kernel feature that is missing where the reason names one. aya's error carries the
//! whole verifier log, tens of thousands of lines on an old kernel, which would
//! otherwise be repeated in the warning, the doctor and every report; the tail of it
//! goes to the debug log once.

use aya::programs::ProgramError;

/// How many lines of the verifier log the debug log keeps.
const LOG_TAIL_LINES: usize = 40;

/// One line for a load failure of `program`.
pub fn load_error(program: &str, err: &ProgramError) -> String {
    let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = err
    else {
        return format!("load: {}", chain(err));
    };
    let log = format!("{verifier_log:?}");
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    tracing::debug!(
        "verifier log of {program}, last {LOG_TAIL_LINES} of {} lines:\n{tail}",
        lines.len()
    );
    summarize(&io_error.to_string(), &log)
}

/// `load: <errno>: verifier: <reason> (needs <feature>)`.
pub fn summarize(io_error: &str, log: &str) -> String {
    let mut out = format!("load: {io_error}");
    if let Some(reason) = reason(log) {
        out.push_str(&format!(": verifier: {reason}"));
    }
    if let Some(feature) = missing_feature(log) {
        out.push_str(&format!(" (needs {feature})"));
    }
    out
}

/// The verifier's reason: the last line that is not one of its statistics.
fn reason(log: &str) -> Option<String> {
    const STATS: [&str; 6] = [
        "processed ",
        "verification time",
        "stack depth",
        "max_states_per_insn",
        "func#",
        // 7.x: one line of instruction counts per subprogram.
        "subprog ",
    ];
    let line = log
        .lines()
        .map(str::trim)
        .rev()
        .find(|l| !l.is_empty() && !STATS.iter().any(|s| l.starts_with(s)))?;
    Some(line.chars().take(200).collect())
}

/// The kernel feature a verifier log says is missing, if it says so.
fn missing_feature(log: &str) -> Option<String> {
    // Only a call the verifier refused: a program that calls bpf_loop and fails for
    // another reason (too complex) names the helper in its trace too.
    if log.contains("unknown#181") || log.contains("unknown func bpf_loop") {
        return Some("the bpf_loop helper (181), kernel 5.17+".to_owned());
    }
    if log.contains("number of funcs in func_info doesn't match number of subprogs") {
        return Some(
            "callback subprograms (BPF_PSEUDO_FUNC, kernel 5.13+; bpf_loop 5.17+)".to_owned(),
        );
    }
    if let Some(at) = log
        .find("unknown func ")
        .or_else(|| log.find("invalid func "))
    {
        let name: String = log[at..]
            .split_whitespace()
            .nth(2)
            .unwrap_or("?")
            .to_owned();
        return Some(format!("the helper {name}, which this kernel lacks"));
    }
    if log.contains("BPF program is too large") || log.contains("too complex") {
        return Some("a verifier that accepts a program this complex".to_owned());
    }
    None
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::summarize;

    #[test]
    fn func_info_mismatch_on_5_10() {
        let log = "number of funcs in func_info doesn't match number of subprogs\nverification time 86 usec\nstack depth 0+0\nprocessed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n";
        assert_eq!(
            summarize("Invalid argument (os error 22)", log),
            "load: Invalid argument (os error 22): verifier: number of funcs in func_info doesn't match number of subprogs (needs callback subprograms (BPF_PSEUDO_FUNC, kernel 5.13+; bpf_loop 5.17+))"
        );
    }

    #[test]
    fn unknown_helper_on_5_15() {
        // Tens of thousands of lines of instruction trace come first; one line stays.
        let mut log = "0: (bf) r6 = r1\n".repeat(45_000);
        log.push_str("2051: (85) call unknown#181\ninvalid func unknown#181\nprocessed 30112 insns (limit 1000000)\n");
        let one = summarize("Invalid argument (os error 22)", &log);
        assert!(!one.contains('\n'));
        assert!(one.contains("verifier: invalid func unknown#181"), "{one}");
        assert!(one.contains("bpf_loop helper (181), kernel 5.17+"), "{one}");
    }

    #[test]
    fn too_large_on_7_x_is_not_a_missing_bpf_loop() {
        // 7.x ends with a line of counts per subprogram; the trace names bpf_loop.
        let log = "12: (85) call bpf_loop#181\nBPF program is too large. Processed 1000001 insn\nprocessed 1000001 insns (limit 1000000) max_states_per_insn 4 total_states 9000 peak_states 900 mark_read 0\nsubprog 3 (memset) static insns_self 149923 insns_total 149923 stack 0\n";
        assert_eq!(
            summarize("Argument list too long (os error 7)", log),
            "load: Argument list too long (os error 7): verifier: BPF program is too large. Processed 1000001 insn (needs a verifier that accepts a program this complex)"
        );
    }

    #[test]
    fn no_log_keeps_the_errno() {
        assert_eq!(
            summarize("Operation not permitted (os error 1)", ""),
            "load: Operation not permitted (os error 1)"
        );
    }
}
