//! Small facts about the host system a lower layer may need (the enforcer's proof of the
//! overlay layout, `demo`, `check`): std only, no other module of the crate.

use std::path::PathBuf;

/// `name` on `$PATH`, or in the sbin directories (not on a normal user's PATH).
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// When process `pid` started: field 22 of `/proc/<pid>/stat` (`starttime`, clock ticks after
/// boot), if it exists.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    start_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `starttime` of a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses: count from its last `)`.
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
        assert!(process_start_ticks(std::process::id()).is_some());
    }
}
