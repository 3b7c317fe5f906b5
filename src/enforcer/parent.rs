//! The parent of the process of an event, as the kernel read it at the check: pid, task name,
//! start time and executable. Nothing here reads `/proc` for an event: the parent may be gone
//! by the time the agent looks, and its `/proc/<pid>/exe` needs ptrace access the shipped
//! capabilities do not grant.

use serde::Serialize;

/// The parent of the process of an event (`real_parent`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Parent {
    /// Process id (tgid), host pid namespace; the event's `ppid`.
    pub pid: u32,
    /// Command name of the parent task, read by the kernel at the check (empty from programs
    /// before this field).
    pub comm: String,
    /// Executable (`mm->exe_file`), walked by the kernel at the check: a path from the checked
    /// process's root, crossing mounts like `d_path()`. Empty for a kernel thread, a parent
    /// caught exiting (its memory released), a path that could not be resolved, and in records
    /// of programs before this field.
    pub exe: String,
    /// `exe` holds the first 255 bytes of a longer path only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exe_truncated: bool,
    /// Its thread group's start (CLOCK_BOOTTIME ns) as the kernel saw it; 0 from older programs.
    #[serde(skip)]
    pub start_ns: u64,
}

/// The start of process `pid` as `/proc/<pid>/stat` gives it: (clock ticks after boot, ns per
/// tick). The kernel's `start_boottime` in ns, divided by the second, is the first.
pub fn proc_start(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|t| *t > 0)?;
    Some((start_ticks(&stat)?, 1_000_000_000 / tck))
}

/// Field 22 of `/proc/<pid>/stat` (`starttime`, clock ticks after boot). The command name (field
/// 2) may hold spaces and parentheses: count from its last `)`.
fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_start_ticks_survive_odd_names() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 10 18446744073709551615";
        assert_eq!(start_ticks(stat), Some(12345));
        assert_eq!(start_ticks("42 (x"), None);
        assert_eq!(start_ticks("42 (x) S 1"), None);
    }
}
