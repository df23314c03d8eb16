//! tracefs: mounted at start when missing (it is not mounted at boot on the target
//! machines), and read for the field offsets of the sched tracepoints, whose layouts
//! change between kernel versions.

use std::path::{Path, PathBuf};

use super::SensorError;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Returns the tracefs root, mounting it at /sys/kernel/tracing when no tracefs is
/// mounted. Returns whether this call mounted it.
pub fn ensure_mounted() -> Result<(PathBuf, bool), SensorError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok((PathBuf::from(root), false));
        }
    }
    nix::mount::mount(
        Some("nodev"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| SensorError::Tracefs {
        detail: format!("mount -t tracefs nodev {TRACEFS} failed: {errno}"),
    })?;
    tracing::info!("mounted tracefs at {TRACEFS}");
    Ok((PathBuf::from(TRACEFS), true))
}

/// Offset of `field` in the `format` file of `category/event`.
pub fn field_offset(
    root: &Path,
    category: &str,
    event: &str,
    field: &str,
) -> Result<u32, SensorError> {
    let path = root
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let text = std::fs::read_to_string(&path).map_err(|err| SensorError::Tracefs {
        detail: format!("cannot read {}: {err}", path.display()),
    })?;
    parse_field_offset(&text, field).ok_or_else(|| SensorError::Tracefs {
        detail: format!("{} has no field {field:?}", path.display()),
    })
}

/// Parses lines such as `\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;`.
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.rsplit([' ', '\t', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = rest
            .split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    const FORK_6_18: &str = "name: sched_process_fork\nID: 366\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
    const FORK_OLD: &str = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";

    #[test]
    fn finds_offsets_in_both_fork_layouts() {
        assert_eq!(parse_field_offset(FORK_6_18, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(FORK_OLD, "child_pid"), Some(44));
        assert_eq!(parse_field_offset(FORK_OLD, "parent_comm"), Some(8));
        assert_eq!(parse_field_offset(FORK_6_18, "nope"), None);
    }
}
