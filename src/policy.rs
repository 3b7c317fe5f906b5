//! The policy model: what a container may execute.
//!
//! A [`Policy`] is independent of where it came from (pod annotations, OCI
//! hook, config). [`crate::enforcer`] turns it into kernel map entries via
//! [`Policy::kernel_rules`] and [`Policy::path_entries`].

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::abi;

/// Longest path a list entry may have, in bytes (the kernel compares at most this many).
pub const MAX_PATH_LEN: usize = abi::DG_PATH_MAX - 1;

/// What happens when a rule matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Not under policy: nothing is checked or reported.
    #[default]
    Off,
    /// Rules are evaluated and matches reported; nothing is denied.
    Monitor,
    /// Matches are denied (EPERM with BPF LSM, SIGKILL on the fallback path) and reported.
    Enforce,
}

impl Mode {
    /// Kernel encoding (`DG_MODE_*`).
    pub fn as_raw(self) -> u32 {
        match self {
            Mode::Off => abi::DG_MODE_OFF,
            Mode::Monitor => abi::DG_MODE_MONITOR,
            Mode::Enforce => abi::DG_MODE_ENFORCE,
        }
    }

    /// Decode the kernel encoding.
    pub fn from_raw(raw: u32) -> Option<Mode> {
        match raw {
            abi::DG_MODE_OFF => Some(Mode::Off),
            abi::DG_MODE_MONITOR => Some(Mode::Monitor),
            abi::DG_MODE_ENFORCE => Some(Mode::Enforce),
            _ => None,
        }
    }

    /// Lower-case name as used in annotations, config and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Mode::Off),
            "monitor" => Ok(Mode::Monitor),
            "enforce" => Ok(Mode::Enforce),
            other => Err(PolicyError::BadMode(other.to_string())),
        }
    }
}

/// Which kinds of exec a policy blocks (or reports, in monitor mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Binaries and libraries the image did not ship: files in the overlayfs upper layer
    /// (written in the container, or image files modified/chmod'ed and so copied up).
    pub drift: bool,
    /// Fileless code: memfd_create + fexecve, O_TMPFILE, unlinked files.
    pub fileless: bool,
    /// Code that is not from the container's own image layers: another filesystem (runc's `/dev`
    /// tmpfs, host files the runtime bind-mounts such as `/etc/hosts`, volumes, emptyDir) or
    /// another overlay (one mounted inside the container). Volumes named in
    /// [`Policy::exec_volumes`] are exempt.
    #[serde(alias = "non_overlay")]
    pub non_image: bool,
    /// Only paths on the allow list may be executed.
    pub allowlist_only: bool,
    /// Executable memory the image did not ship (W^X, BPF LSM only).
    pub exec_memory: ExecMemory,
    /// Attaching to another process's memory (ptrace, `process_vm_*`, its `mem`; BPF LSM only).
    pub process_access: ProcessAccess,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            drift: true,
            fileless: true,
            non_image: true,
            allowlist_only: false,
            exec_memory: ExecMemory::On,
            process_access: ProcessAccess::On,
        }
    }
}

/// The memory rule of a policy (`driftguard.dev/exec-memory`; docs/annotations.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecMemory {
    /// No executable memory without an image file's own pages behind it: anonymous memory
    /// (heap, stack, `MAP_ANONYMOUS`) made executable, a mapping writable and executable at
    /// once, a private file mapping whose pages were written made executable. The default.
    #[default]
    On,
    /// The JIT opt-out (`exec-memory: false`): the rule is off, and shmem memory (a memfd, shared
    /// anonymous memory) may also be mapped executable, as .NET's double mapping needs. Exec of
    /// a memfd stays `fileless`.
    Jit,
    /// Neither: a policy pinned by an agent from before the memory rules. A running container
    /// keeps it across an upgrade; the rule applies from its next start.
    Off,
}

impl ExecMemory {
    /// The name in `driftguard status` and the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecMemory::On => "on",
            ExecMemory::Jit => "jit",
            ExecMemory::Off => "off",
        }
    }
}

/// The process-access rule of a policy (`driftguard.dev/process-access`; docs/annotations.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessAccess {
    /// No attaching to another process's memory from the container: ptrace attach and seize,
    /// `PTRACE_TRACEME`, `process_vm_readv`/`writev`, another process's `/proc/<pid>/mem`,
    /// `pidfd_getfd`. The default.
    #[default]
    On,
    /// The debug opt-out (`process-access: false`), for debuggers, tracers and profilers.
    /// Writing one's own memory through `/proc/self/mem` stays refused.
    Debug,
    /// Neither: a policy pinned by an agent from before the rule. A running container keeps it
    /// across an upgrade; the rule applies from its next start.
    Off,
}

impl ProcessAccess {
    /// The name in `driftguard status` and the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessAccess::On => "on",
            ProcessAccess::Debug => "debug",
            ProcessAccess::Off => "off",
        }
    }
}

/// An absolute, normalized path as the container sees it (`/usr/bin/curl`).
///
/// The kernel compares the *resolved* path of the executed file (symlinks followed,
/// relative paths made absolute), so list entries must be resolved paths too.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExecPath(String);

impl ExecPath {
    /// Validate a path list entry.
    pub fn new(s: &str) -> Result<Self, PolicyError> {
        if !s.starts_with('/') {
            return Err(PolicyError::PathNotAbsolute(s.to_string()));
        }
        if s.len() > MAX_PATH_LEN {
            return Err(PolicyError::PathTooLong { path: s.to_string(), max: MAX_PATH_LEN });
        }
        if s.bytes().any(|b| b == 0 || b.is_ascii_control()) {
            return Err(PolicyError::PathNotNormalized(s.to_string(), "control character"));
        }
        if s != "/" && s.ends_with('/') {
            return Err(PolicyError::PathNotNormalized(s.to_string(), "trailing '/'"));
        }
        for comp in s[1..].split('/') {
            match comp {
                "" if s != "/" => return Err(PolicyError::PathNotNormalized(s.to_string(), "empty component '//'")),
                "." | ".." => return Err(PolicyError::PathNotNormalized(s.to_string(), "'.' or '..' component")),
                _ => {}
            }
        }
        Ok(ExecPath(s.to_string()))
    }

    /// The path string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ExecPath {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ExecPath::new(&s)
    }
}

impl From<ExecPath> for String {
    fn from(p: ExecPath) -> String {
        p.0
    }
}

impl fmt::Display for ExecPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The complete exec policy of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Off, monitor or enforce.
    pub mode: Mode,
    /// Which rules apply.
    pub rules: Rules,
    /// Image paths exempt from the drift rule (and, in allow-list-only mode, the paths that
    /// may be executed). Entries name files of the container's root filesystem.
    pub allow: BTreeSet<ExecPath>,
    /// Image paths that may never be executed or mapped executable (takes precedence over `allow`).
    pub deny: BTreeSet<ExecPath>,
    /// Mount points of volumes the pod declared whose files may be executed although they are
    /// not image (exempt from the non-image rule). At most [`MAX_EXEC_VOLUMES`]; never a mount
    /// the runtime makes on its own ([`RUNTIME_MOUNTS`]).
    pub exec_volumes: BTreeSet<ExecPath>,
}

/// Most volumes one container may exempt from the non-image rule.
pub const MAX_EXEC_VOLUMES: usize = abi::DG_MAX_EXEC_MOUNTS;

/// Mounts the runtime (runc, containerd, CRI-O, the kubelet) makes in every container. They are
/// never exec sources and cannot be exempted: an exempt entry equal to one of these, or below
/// one ending in `/`, is refused.
pub const RUNTIME_MOUNTS: &[&str] = &[
    "/",
    "/dev/",
    "/dev",
    "/proc/",
    "/proc",
    "/sys/",
    "/sys",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/run/secrets/",
    "/run/secrets",
    "/var/run/secrets/",
    "/var/run/secrets",
];

/// Whether `path` is (or is under) a runtime-made mount.
pub fn is_runtime_mount(path: &str) -> bool {
    RUNTIME_MOUNTS.iter().any(|m| if m.ends_with('/') && *m != "/" { path.starts_with(m) } else { path == *m })
}

/// A path list entry as stored in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListKind {
    /// Exempt from drift / allow-list-only.
    Allow,
    /// Always denied.
    Deny,
}

impl ListKind {
    /// Kernel encoding (`DG_LIST_*`).
    pub fn as_raw(self) -> u32 {
        match self {
            ListKind::Allow => abi::DG_LIST_ALLOW,
            ListKind::Deny => abi::DG_LIST_DENY,
        }
    }

    /// Decode the kernel encoding.
    pub fn from_raw(raw: u32) -> Option<ListKind> {
        match raw {
            abi::DG_LIST_ALLOW => Some(ListKind::Allow),
            abi::DG_LIST_DENY => Some(ListKind::Deny),
            _ => None,
        }
    }
}

impl Policy {
    /// A policy with default rules in the given mode.
    pub fn with_mode(mode: Mode) -> Self {
        Policy { mode, ..Policy::default() }
    }

    /// Check internal consistency (a path on both lists is ambiguous; exempt volumes are
    /// limited in number and never runtime-made mounts).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Some(p) = self.allow.intersection(&self.deny).next() {
            return Err(PolicyError::PathInBothLists(p.to_string()));
        }
        if self.exec_volumes.len() > MAX_EXEC_VOLUMES {
            return Err(PolicyError::TooManyExecVolumes { count: self.exec_volumes.len(), max: MAX_EXEC_VOLUMES });
        }
        if let Some(p) = self.exec_volumes.iter().find(|p| is_runtime_mount(p.as_str())) {
            return Err(PolicyError::RuntimeMount(p.to_string()));
        }
        Ok(())
    }

    /// Rule bits for the kernel (`DG_RULE_*`).
    pub fn kernel_rules(&self) -> u32 {
        let mut r = 0;
        if self.rules.drift {
            r |= abi::DG_RULE_DRIFT;
        }
        if self.rules.fileless {
            r |= abi::DG_RULE_FILELESS;
        }
        if self.rules.non_image {
            r |= abi::DG_RULE_NON_IMAGE;
        }
        if self.rules.allowlist_only {
            r |= abi::DG_RULE_ALLOWLIST_ONLY;
        }
        if !self.allow.is_empty() || !self.deny.is_empty() {
            r |= abi::DG_RULE_HAS_LISTS;
        }
        match self.rules.exec_memory {
            ExecMemory::On => r |= abi::DG_RULE_EXEC_MEMORY,
            ExecMemory::Jit => r |= abi::DG_RULE_JIT,
            ExecMemory::Off => {}
        }
        match self.rules.process_access {
            ProcessAccess::On => r |= abi::DG_RULE_PROCESS_ACCESS,
            ProcessAccess::Debug => r |= abi::DG_RULE_DEBUG,
            ProcessAccess::Off => {}
        }
        r
    }

    /// Rebuild rules from kernel bits (used when reading pinned state back).
    pub fn rules_from_kernel(bits: u32) -> Rules {
        Rules {
            drift: bits & abi::DG_RULE_DRIFT != 0,
            fileless: bits & abi::DG_RULE_FILELESS != 0,
            non_image: bits & abi::DG_RULE_NON_IMAGE != 0,
            allowlist_only: bits & abi::DG_RULE_ALLOWLIST_ONLY != 0,
            exec_memory: if bits & abi::DG_RULE_EXEC_MEMORY != 0 {
                ExecMemory::On
            } else if bits & abi::DG_RULE_JIT != 0 {
                ExecMemory::Jit
            } else {
                ExecMemory::Off
            },
            process_access: if bits & abi::DG_RULE_PROCESS_ACCESS != 0 {
                ProcessAccess::On
            } else if bits & abi::DG_RULE_DEBUG != 0 {
                ProcessAccess::Debug
            } else {
                ProcessAccess::Off
            },
        }
    }

    /// Path list entries for the kernel.
    pub fn path_entries(&self) -> impl Iterator<Item = (&ExecPath, ListKind)> {
        self.allow.iter().map(|p| (p, ListKind::Allow)).chain(self.deny.iter().map(|p| (p, ListKind::Deny)))
    }
}

/// Invalid policy input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Mode string not one of off, monitor, enforce.
    #[error("invalid mode {0:?}: expected one of off, monitor, enforce")]
    BadMode(String),
    /// A list entry is relative.
    #[error("path {0:?} is not absolute: list entries are paths as seen inside the container, starting with '/'")]
    PathNotAbsolute(String),
    /// A list entry is too long for the kernel to compare.
    #[error("path {path:?} is longer than {max} bytes")]
    PathTooLong {
        /// The path.
        path: String,
        /// Limit.
        max: usize,
    },
    /// A list entry is not in canonical form.
    #[error("path {0:?} is not normalized ({1}); give the resolved path")]
    PathNotNormalized(String, &'static str),
    /// A path is on both lists.
    #[error("path {0:?} is on both the allow and the deny list")]
    PathInBothLists(String),
    /// Too many exempt volumes.
    #[error("{count} exec volumes given; at most {max} per container")]
    TooManyExecVolumes {
        /// How many were given.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// An exempt volume names a mount the runtime makes in every container.
    #[error(
        "{0:?} is a mount the runtime makes in every container (/dev, /proc, /sys, /etc/hosts, /etc/hostname, \
         /etc/resolv.conf, service-account secrets): it can never be an exec source"
    )]
    RuntimeMount(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_roundtrip() {
        for m in [Mode::Off, Mode::Monitor, Mode::Enforce] {
            assert_eq!(Mode::from_raw(m.as_raw()), Some(m));
            assert_eq!(m.as_str().parse::<Mode>().ok(), Some(m));
        }
        assert_eq!(Mode::from_raw(7), None);
        assert!(matches!("Enforce".parse::<Mode>(), Err(PolicyError::BadMode(_))));
    }

    #[test]
    fn exec_path_validation() {
        assert!(ExecPath::new("/usr/bin/curl").is_ok());
        assert!(ExecPath::new("/").is_ok());
        assert!(matches!(ExecPath::new("usr/bin"), Err(PolicyError::PathNotAbsolute(_))));
        assert!(matches!(ExecPath::new("/usr//bin"), Err(PolicyError::PathNotNormalized(..))));
        assert!(matches!(ExecPath::new("/usr/bin/"), Err(PolicyError::PathNotNormalized(..))));
        assert!(matches!(ExecPath::new("/usr/../bin"), Err(PolicyError::PathNotNormalized(..))));
        assert!(matches!(ExecPath::new("/a/./b"), Err(PolicyError::PathNotNormalized(..))));
        assert!(matches!(ExecPath::new("/a\nb"), Err(PolicyError::PathNotNormalized(..))));
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert!(matches!(ExecPath::new(&long), Err(PolicyError::PathTooLong { .. })));
        let max = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert!(ExecPath::new(&max).is_ok());
    }

    #[test]
    fn kernel_rule_bits() {
        let mem = abi::DG_RULE_EXEC_MEMORY | abi::DG_RULE_PROCESS_ACCESS;
        let mut p = Policy::with_mode(Mode::Enforce);
        p.rules.non_image = false;
        assert_eq!(p.kernel_rules(), abi::DG_RULE_DRIFT | abi::DG_RULE_FILELESS | mem);
        assert_eq!(
            Policy::with_mode(Mode::Enforce).kernel_rules(),
            abi::DG_RULE_DRIFT | abi::DG_RULE_FILELESS | abi::DG_RULE_NON_IMAGE | mem
        );
        p.rules = Rules {
            drift: false,
            fileless: false,
            non_image: true,
            allowlist_only: true,
            exec_memory: ExecMemory::Jit,
            process_access: ProcessAccess::Debug,
        };
        assert_eq!(
            p.kernel_rules(),
            abi::DG_RULE_NON_IMAGE | abi::DG_RULE_ALLOWLIST_ONLY | abi::DG_RULE_JIT | abi::DG_RULE_DEBUG
        );
        p.deny.insert(ExecPath::new("/bin/nc").unwrap());
        assert_ne!(p.kernel_rules() & abi::DG_RULE_HAS_LISTS, 0);
        assert_eq!(Policy::rules_from_kernel(p.kernel_rules()), p.rules);
        // Each memory state survives the round trip through the pinned bits; a policy pinned
        // before the memory rules (neither bit) reads back as Off.
        for m in [ExecMemory::On, ExecMemory::Jit, ExecMemory::Off] {
            p.rules.exec_memory = m;
            assert_eq!(Policy::rules_from_kernel(p.kernel_rules()).exec_memory, m);
        }
        assert_eq!(Policy::rules_from_kernel(abi::DG_RULE_DRIFT).exec_memory, ExecMemory::Off);
        for a in [ProcessAccess::On, ProcessAccess::Debug, ProcessAccess::Off] {
            p.rules.process_access = a;
            assert_eq!(Policy::rules_from_kernel(p.kernel_rules()).process_access, a);
        }
        assert_eq!(Policy::rules_from_kernel(abi::DG_RULE_DRIFT).process_access, ProcessAccess::Off);
    }

    #[test]
    fn both_lists_rejected() {
        let mut p = Policy::with_mode(Mode::Enforce);
        let path = ExecPath::new("/bin/sh").unwrap();
        p.allow.insert(path.clone());
        p.deny.insert(path);
        assert!(matches!(p.validate(), Err(PolicyError::PathInBothLists(_))));
    }

    #[test]
    fn exec_volumes_are_limited_and_never_runtime_mounts() {
        let mut p = Policy::with_mode(Mode::Enforce);
        p.exec_volumes.insert(ExecPath::new("/data").unwrap());
        assert!(p.validate().is_ok());
        for bad in [
            "/dev",
            "/dev/shm",
            "/dev/termination-log",
            "/etc/hosts",
            "/etc/hostname",
            "/etc/resolv.conf",
            "/proc",
            "/sys/fs",
            "/var/run/secrets/kubernetes.io/serviceaccount",
            "/run/secrets",
            "/",
        ] {
            let mut q = p.clone();
            q.exec_volumes.insert(ExecPath::new(bad).unwrap());
            assert!(matches!(q.validate(), Err(PolicyError::RuntimeMount(_))), "{bad} must be refused");
        }
        for ok in ["/devices", "/etc/hosts.d", "/data/dev", "/system"] {
            assert!(!is_runtime_mount(ok), "{ok}");
        }
        for i in 0..MAX_EXEC_VOLUMES {
            p.exec_volumes.insert(ExecPath::new(&format!("/v{i}")).unwrap());
        }
        assert!(matches!(p.validate(), Err(PolicyError::TooManyExecVolumes { .. })));
    }

    #[test]
    fn path_entries_cover_both_lists() {
        let mut p = Policy::with_mode(Mode::Monitor);
        p.allow.insert(ExecPath::new("/a").unwrap());
        p.deny.insert(ExecPath::new("/b").unwrap());
        let v: Vec<_> = p.path_entries().map(|(p, k)| (p.as_str().to_string(), k)).collect();
        assert_eq!(v, vec![("/a".into(), ListKind::Allow), ("/b".into(), ListKind::Deny)]);
    }
}
