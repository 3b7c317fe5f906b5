//! The parent of the process of an event: what the kernel read at the check (pid, task name,
//! start time), and its executable, read from `/proc` when the event is enriched, only while the
//! pid still names that process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The parent of the process of an event (`real_parent`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Parent {
    /// Process id (tgid), host pid namespace; the event's `ppid`.
    pub pid: u32,
    /// Command name of the parent task, read by the kernel at the check (empty from programs
    /// before this field).
    pub comm: String,
    /// Executable, read from `/proc/<pid>/exe` when the event is enriched; empty when the parent
    /// had exited by then, its pid now names another process, or it is a kernel thread (see
    /// [`Parent::read_exe`]).
    pub exe: String,
    /// Its thread group's start (CLOCK_BOOTTIME ns) as the kernel saw it; 0 from older programs.
    #[serde(skip)]
    pub start_ns: u64,
}

impl Parent {
    /// Fill `exe` from `/proc/<pid>/exe` if the process with that pid is still the parent: its
    /// start time (`/proc/<pid>/stat`, clock ticks) must be the one the kernel reported, so a pid
    /// reused since shows nothing rather than a stranger's executable.
    ///
    /// The answer is kept for up to [`CACHE_TTL`] per (pid, start time), which identifies one
    /// process: a burst of events from the children of one shell reads `/proc` once, not once
    /// per event (two reads cost ~10 µs, BENCHMARKS.md).
    pub fn read_exe(&mut self) {
        if self.pid == 0 || self.start_ns == 0 || !self.exe.is_empty() {
            return;
        }
        let key = (self.pid, self.start_ns);
        if let Some(exe) = cache_get(key) {
            self.exe = exe;
            return;
        }
        self.exe = read_exe_uncached(self.pid, self.start_ns);
        cache_put(key, &self.exe);
    }
}

/// `/proc/<pid>/exe` if `pid` still has the start time `start_ns`, else empty.
pub fn read_exe_uncached(pid: u32, start_ns: u64) -> String {
    match proc_start(pid) {
        Some((ticks, tick_ns)) if ticks == start_ns / tick_ns => {}
        _ => return String::new(),
    }
    std::fs::read_link(format!("/proc/{pid}/exe")).map(|e| e.to_string_lossy().into_owned()).unwrap_or_default()
}

/// How long a parent's executable is reused: a parent may exec another program (same pid and
/// start time), which is seen after this at the latest.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Parents kept at most; the cache is emptied when full or older than [`CACHE_TTL`].
pub const CACHE_MAX: usize = 4096;

struct Cache {
    since: Instant,
    exes: HashMap<(u32, u64), String>,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

fn cache_get(key: (u32, u64)) -> Option<String> {
    let guard = CACHE.lock().ok()?;
    let c = guard.as_ref()?;
    (c.since.elapsed() < CACHE_TTL).then(|| c.exes.get(&key).cloned()).flatten()
}

fn cache_put(key: (u32, u64), exe: &str) {
    let Ok(mut guard) = CACHE.lock() else { return };
    let c = guard.get_or_insert_with(|| Cache { since: Instant::now(), exes: HashMap::new() });
    if c.since.elapsed() >= CACHE_TTL || c.exes.len() >= CACHE_MAX {
        c.exes.clear();
        c.since = Instant::now();
    }
    c.exes.insert(key, exe.to_string());
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

    /// The parent's executable is read only while its pid still names the process the kernel saw.
    #[test]
    fn parent_exe_only_for_the_same_process() {
        let me = std::process::id();
        let (ticks, tick_ns) = proc_start(me).unwrap();
        let start_ns = ticks * tick_ns + 1;
        let mut p = Parent { pid: me, comm: "x".into(), exe: String::new(), start_ns };
        p.read_exe();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(p.exe, exe.to_string_lossy());
        // Same pid, another start time: a reused pid.
        let mut reused = Parent { pid: me, comm: "x".into(), exe: String::new(), start_ns: start_ns + 10_000_000_000 };
        reused.read_exe();
        assert_eq!(reused.exe, "");
        // Records of older programs carry no start time: nothing is read.
        let mut old = Parent { pid: me, comm: "x".into(), exe: String::new(), start_ns: 0 };
        old.read_exe();
        assert_eq!(old.exe, "");
    }

    /// The cache stays bounded, and an entry is found by the (pid, start time) it was put under.
    #[test]
    fn cache_is_bounded_and_keyed_by_process() {
        for i in 0..(CACHE_MAX as u32 + 10) {
            cache_put((u32::MAX - i, 1), "/bin/x");
        }
        let len = CACHE.lock().unwrap().as_ref().map_or(0, |c| c.exes.len());
        assert!(len <= CACHE_MAX, "{len} entries");
        cache_put((7, 42), "/bin/sh");
        assert_eq!(cache_get((7, 42)).as_deref(), Some("/bin/sh"));
        assert_eq!(cache_get((7, 43)), None);
    }
}
