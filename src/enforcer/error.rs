//! Typed errors of the enforcement core.

use std::path::PathBuf;

use crate::policy::PolicyError;

/// Errors of loading, attaching and driving the BPF enforcement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel exposes no BTF; CO-RE programs cannot be relocated.
    #[error("kernel has no BTF ({0} is missing): driftguard needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf(PathBuf),

    /// The process may not use BPF.
    #[error(
        "BPF not permitted ({0}): run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN \
         (and check kernel.unprivileged_bpf_disabled / lockdown)"
    )]
    NotPermitted(String),

    /// The verifier (or the kernel) rejected one program.
    #[error("BPF program '{program}' was rejected by the kernel: {reason}\n--- last verifier/libbpf lines ---\n{log}")]
    ProgramRejected {
        /// Program (function) name in bpf/driftguard.bpf.c.
        program: String,
        /// Short reason (errno text).
        reason: String,
        /// Last lines of the verifier log as printed by libbpf.
        log: String,
    },

    /// The object failed to load for a reason not tied to one program.
    #[error("BPF object failed to load: {reason}\n--- last libbpf lines ---\n{log}")]
    Load {
        /// Short reason.
        reason: String,
        /// Last libbpf lines.
        log: String,
    },

    /// Attaching a loaded program failed.
    #[error("attaching BPF program '{program}' failed: {source}")]
    Attach {
        /// Program name.
        program: String,
        /// Cause.
        source: libbpf_rs::Error,
    },

    /// bpffs is not mounted where pins should go.
    #[error("{0} is not on a bpf filesystem: mount it with `mount -t bpf -o mode=0700 bpf /sys/fs/bpf`")]
    NoBpffs(PathBuf),

    /// The pin directory, or a directory above it, could be changed by someone other than root:
    /// that user could unpin (and so detach) the enforcement.
    #[error(
        "refusing to pin under {pin_dir}: {path} {problem} (owner uid {uid}, mode {mode:04o}); a user who can \
         write there can remove or replace the pinned programs and maps. Remove it (if it is the pin \
         directory: `rm -rf {path}`, after checking what is in it) or make it root-owned and not writable \
         by group or others, then start the agent again"
    )]
    UnsafePinDir {
        /// The pin directory configured.
        pin_dir: PathBuf,
        /// The offending component (the pin directory or one above it).
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },

    /// Pinned maps from another driftguard version do not match this one.
    #[error(
        "pinned BPF state under {dir} is incompatible with this driftguard version ({detail}); \
         run `driftguard unload` to remove it (this stops enforcement until the agent starts again)"
    )]
    IncompatiblePin {
        /// Pin directory.
        dir: PathBuf,
        /// What did not match.
        detail: String,
    },

    /// Nothing (or not everything) is pinned: no agent has loaded enforcement.
    #[error("no driftguard enforcement is pinned under {dir} ({detail}): start the agent (`driftguard run`) first")]
    NotPinned {
        /// Pin directory.
        dir: PathBuf,
        /// What is missing.
        detail: String,
    },

    /// A map is at max_entries.
    #[error("BPF map '{map}' is full ({max} entries): cannot add policy for cgroup {cgroup_id}")]
    MapFull {
        /// Map name.
        map: &'static str,
        /// Capacity.
        max: u32,
        /// Cgroup whose policy was refused.
        cgroup_id: u64,
    },

    /// The cgroup given does not exist (never did, or vanished).
    #[error("unknown cgroup {0}: the directory does not exist (container gone?)")]
    UnknownCgroup(PathBuf),

    /// The policy itself is invalid.
    #[error("invalid policy: {0}")]
    Policy(#[from] PolicyError),

    /// A map operation failed.
    #[error("BPF map '{map}' {op} failed: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// Operation.
        op: &'static str,
        /// Cause.
        source: libbpf_rs::Error,
    },

    /// A map value had an unexpected shape.
    #[error("BPF map '{map}' holds a malformed entry: {detail}")]
    Corrupt {
        /// Map name.
        map: &'static str,
        /// What was wrong.
        detail: String,
    },

    /// Filesystem or syscall error with context.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
