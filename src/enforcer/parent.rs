//! The parent of the process of an event, as the kernel read it at the check: pid, task name
//! and executable. Nothing here reads `/proc` for an event: the parent may be gone
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
}
