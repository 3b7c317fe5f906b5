//! Captures libbpf's messages (including verifier logs) so load errors can
//! show the operator the lines that explain them; forwards them to `tracing`.

use std::collections::VecDeque;
use std::sync::{Mutex, Once};

use libbpf_rs::PrintLevel;

const KEEP: usize = 4000;

static LINES: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
static INSTALL: Once = Once::new();

fn callback(level: PrintLevel, msg: String) {
    for line in msg.lines() {
        match level {
            PrintLevel::Warn => tracing::debug!(target: "libbpf", "{line}"),
            _ => tracing::trace!(target: "libbpf", "{line}"),
        }
    }
    if let Ok(mut l) = LINES.lock() {
        // libbpf suggests `ulimit -l` on any EPERM; the loader already lifts RLIMIT_MEMLOCK, and
        // kernels >= 5.11 do not charge BPF memory to it: the hint would point operators the
        // wrong way in the error messages built from these lines.
        for line in msg.lines().filter(|l| !l.contains("ulimit -l")) {
            if l.len() >= KEEP {
                l.pop_front();
            }
            l.push_back(line.to_string());
        }
    }
}

/// Route libbpf output here (idempotent).
pub(crate) fn install() {
    INSTALL.call_once(|| {
        libbpf_rs::set_print(Some((PrintLevel::Debug, callback)));
    });
}

/// Forget earlier lines (before a new load attempt).
pub(crate) fn clear() {
    if let Ok(mut l) = LINES.lock() {
        l.clear();
    }
}

/// The last `n` non-debug-noise lines, with the verifier's tail preferred.
pub(crate) fn tail(n: usize) -> String {
    let Ok(l) = LINES.lock() else { return String::new() };
    let start = l.len().saturating_sub(n);
    l.iter().skip(start).cloned().collect::<Vec<_>>().join("\n")
}

/// Name of the program libbpf reports as failed, from lines like
/// `libbpf: prog 'dg_bprm_check': BPF program load failed: Permission denied`.
pub(crate) fn failed_program(log: &str) -> Option<String> {
    for line in log.lines().rev() {
        if let Some(rest) = line.split("prog '").nth(1) {
            if line.contains("failed") {
                return rest.split('\'').next().map(str::to_string);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_failed_program() {
        let log = "libbpf: loading object\nlibbpf: prog 'dg_mmap_file': BPF program load failed: Invalid argument\nlibbpf: prog 'dg_mmap_file': -- BEGIN PROG LOAD LOG --\nR0 invalid";
        assert_eq!(failed_program(log).as_deref(), Some("dg_mmap_file"));
        assert_eq!(failed_program("nothing here"), None);
    }
}
