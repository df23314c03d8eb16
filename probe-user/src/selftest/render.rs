//! The self-test's readable table.

use std::fmt::Write as _;

use super::SelftestReport;

/// One line per operation (family, operation, seen, how, tier in use), then the
/// programs that did not attach and the verdict.
pub fn render(report: &SelftestReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "probectl selftest on {} (programs loaded and attached in {} ms)\n",
        report.kernel, report.load_ms
    );
    let width = report
        .rows
        .iter()
        .map(|r| r.operation.len())
        .max()
        .unwrap_or(0)
        .max("operation".len());
    let _ = writeln!(
        s,
        "  {:<8} {:<width$}  {:<4}  {:<16} tier in use",
        "family", "operation", "seen", "seen as"
    );
    for r in &report.rows {
        let _ = writeln!(
            s,
            "  {:<8} {:<width$}  {:<4}  {:<16} {}",
            r.family.as_str(),
            r.operation,
            if r.seen { "yes" } else { "NO" },
            r.seen_as.as_deref().unwrap_or("-"),
            r.tier
        );
    }
    if !report.unattached.is_empty() {
        let _ = writeln!(s, "\nPrograms not attached:");
        for p in &report.unattached {
            let _ = writeln!(
                s,
                "  {} ({}): {}",
                p.program,
                p.attach_point,
                p.error.as_deref().unwrap_or("?")
            );
        }
    }
    if let Some(errors) = &report.child_errors {
        let _ = writeln!(s, "\nThe self-test's child reported: {errors}");
    }
    let seen = report.rows.iter().filter(|r| r.seen).count();
    let _ = writeln!(
        s,
        "\nselftest {}: {seen} of {} operations seen",
        if report.passed { "ok" } else { "FAILED" },
        report.rows.len()
    );
    s
}
