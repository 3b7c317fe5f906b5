//! Verdict events from the ring buffer, typed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use libbpf_rs::{MapHandle, RingBufferBuilder};
use serde::Serialize;
use tokio::sync::mpsc;

use super::abi::{self, RawEvent};
use super::error::{Error, Result};
use super::parent::Parent;
use super::store::MAP_EVENTS;
use crate::policy::Mode;

/// Which rule produced a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Path on the deny list.
    DenyList,
    /// File in the overlayfs upper layer (not shipped in the image).
    Drift,
    /// memfd / unlinked file.
    Fileless,
    /// Not from the container's own image layers (another filesystem or overlay).
    NonImage,
    /// Allow-list-only policy and the path is not listed.
    NotAllowed,
    /// Executable memory the image did not ship (W^X): anonymous memory made executable,
    /// a mapping writable and executable at once, or a private file mapping whose pages were
    /// written made executable. The event's `file` says which, `prot` what was asked.
    ExecMemory,
    /// A write into process memory: the caller's own memory opened for writing through
    /// `/proc/<pid>/mem` (the DDexec primitive). The event's `file` is `own_memory`.
    MemoryWrite,
    /// Attaching to another process's memory from a task under policy: ptrace attach or seize,
    /// `process_vm_readv`/`writev`, another process's `/proc/<pid>/mem`, `pidfd_getfd`, and
    /// `PTRACE_TRACEME` (the kernel's attach mode cannot tell reads from writes). Off with the
    /// debug opt-out. The event's `file` is `other_process`.
    ProcessAccess,
    /// A code this version does not know.
    Unknown,
}

impl Rule {
    fn from_raw(v: u32) -> Rule {
        match v {
            abi::DG_MATCH_DENY_LIST => Rule::DenyList,
            abi::DG_MATCH_DRIFT => Rule::Drift,
            abi::DG_MATCH_FILELESS => Rule::Fileless,
            abi::DG_MATCH_NON_IMAGE => Rule::NonImage,
            abi::DG_MATCH_NOT_ALLOWED => Rule::NotAllowed,
            abi::DG_MATCH_EXEC_MEMORY => Rule::ExecMemory,
            abi::DG_MATCH_MEMORY_WRITE => Rule::MemoryWrite,
            abi::DG_MATCH_PROCESS_ACCESS => Rule::ProcessAccess,
            _ => Rule::Unknown,
        }
    }

    /// Every rule an event can name (not [`Rule::Unknown`]).
    pub const ALL: [Rule; 8] = [
        Rule::DenyList,
        Rule::Drift,
        Rule::Fileless,
        Rule::NonImage,
        Rule::NotAllowed,
        Rule::ExecMemory,
        Rule::MemoryWrite,
        Rule::ProcessAccess,
    ];

    /// Name as used in events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::DenyList => "deny_list",
            Rule::Drift => "drift",
            Rule::Fileless => "fileless",
            Rule::NonImage => "non_image",
            Rule::NotAllowed => "not_allowed",
            Rule::ExecMemory => "exec_memory",
            Rule::MemoryWrite => "memory_write",
            Rule::ProcessAccess => "process_access",
            Rule::Unknown => "unknown",
        }
    }
}

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Allowed (not normally reported).
    Allow,
    /// A rule matched in monitor mode: allowed and reported.
    Alert,
    /// Denied with EPERM (BPF LSM).
    Deny,
    /// Killed with SIGKILL right after exec (fallback path).
    Kill,
}

impl Action {
    fn from_raw(v: u32) -> Action {
        match v {
            abi::DG_ACT_ALERT => Action::Alert,
            abi::DG_ACT_DENY => Action::Deny,
            abi::DG_ACT_KILL => Action::Kill,
            _ => Action::Allow,
        }
    }

    /// Name as used in events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Alert => "alert",
            Action::Deny => "deny",
            Action::Kill => "kill",
        }
    }
}

/// Which program saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// `lsm/bprm_check_security` (exec).
    BprmCheck,
    /// `lsm/mmap_file` (PROT_EXEC mapping).
    MmapFile,
    /// `lsm/file_mprotect` (mprotect to PROT_EXEC).
    FileMprotect,
    /// `tp_btf/sched_process_exec` (fallback).
    ExecTracepoint,
    /// `syscalls/sys_{enter,exit}_mmap` (fallback mapping checks, opt-in).
    SysMmap,
    /// `syscalls/sys_{enter,exit}_mprotect` and `pkey_mprotect` (fallback mapping checks).
    SysMprotect,
    /// `syscalls/sys_enter_shmat` (fallback mapping checks).
    SysShmat,
    /// `lsm/file_open` (a process's `mem` file opened for writing).
    FileOpen,
    /// `lsm/ptrace_access_check` (attach mode: ptrace, `process_vm_*`, another's `mem`).
    #[serde(rename = "ptrace_access_check")]
    PtraceAccess,
    /// `lsm/ptrace_traceme`.
    PtraceTraceme,
    /// `lsm/file_receive` (a `mem` file opened for writing, received over a unix socket or
    /// with `pidfd_getfd`).
    FileReceive,
    /// `syscalls/sys_enter_ptrace` (fallback: attach, seize, traceme).
    SysPtrace,
    /// `syscalls/sys_enter_process_vm_{readv,writev}` (fallback).
    SysProcessVm,
    /// `syscalls/sys_enter_pidfd_getfd` (fallback).
    SysPidfdGetfd,
    /// `syscalls/sys_exit_{open,openat,openat2}` (fallback: a `mem` file opened for writing).
    SysOpen,
    /// Unknown code.
    Unknown,
}

impl Hook {
    fn from_raw(v: u32) -> Hook {
        match v {
            abi::DG_HOOK_BPRM_CHECK => Hook::BprmCheck,
            abi::DG_HOOK_MMAP_FILE => Hook::MmapFile,
            abi::DG_HOOK_FILE_MPROTECT => Hook::FileMprotect,
            abi::DG_HOOK_EXEC_TRACEPOINT => Hook::ExecTracepoint,
            abi::DG_HOOK_SYS_MMAP => Hook::SysMmap,
            abi::DG_HOOK_SYS_MPROTECT => Hook::SysMprotect,
            abi::DG_HOOK_SYS_SHMAT => Hook::SysShmat,
            abi::DG_HOOK_FILE_OPEN => Hook::FileOpen,
            abi::DG_HOOK_PTRACE_ACCESS => Hook::PtraceAccess,
            abi::DG_HOOK_PTRACE_TRACEME => Hook::PtraceTraceme,
            abi::DG_HOOK_FILE_RECEIVE => Hook::FileReceive,
            abi::DG_HOOK_SYS_PTRACE => Hook::SysPtrace,
            abi::DG_HOOK_SYS_PROCESS_VM => Hook::SysProcessVm,
            abi::DG_HOOK_SYS_PIDFD_GETFD => Hook::SysPidfdGetfd,
            abi::DG_HOOK_SYS_OPEN => Hook::SysOpen,
            _ => Hook::Unknown,
        }
    }
}

/// Where the file came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Shipped in the image (a lower layer of the container's root overlay).
    Image,
    /// Written or modified in the container (the upper layer of its root overlay).
    Upper,
    /// memfd, O_TMPFILE or unlinked.
    Fileless,
    /// On another filesystem: tmpfs (runc's `/dev`), a host file the runtime bind-mounted,
    /// a volume.
    OtherFs,
    /// On an overlay that is not the container's root (e.g. mounted inside the container).
    OtherOverlay,
    /// On a volume the policy exempts from the non-image rule.
    ExecVolume,
    /// On the container's root overlay, but whether it is in the upper layer could not be told
    /// (the layout read of overlay's upper dentry was implausible, or its start-time proof
    /// failed): judged like `upper`, i.e. drift.
    UpperUnknown,
    /// Memory rule: no file behind the memory (anonymous, heap, stack).
    Anonymous,
    /// Memory rule: a mapping asked to be writable and executable at once.
    Writable,
    /// Memory rule: a private file mapping whose pages were written (copy-on-write), made
    /// executable.
    Modified,
    /// Memory-write rule: the caller's own memory (`/proc/self/mem`, `/proc/<own pid>/mem`,
    /// `task/<tid>/mem`).
    OwnMemory,
    /// Process-access rule: another process (ptrace attach mode, `PTRACE_TRACEME`).
    OtherProcess,
    /// Process-access rule: a process of this container, attached to from another container
    /// (the target's policy decided).
    FromOtherContainer,
}

impl FileKind {
    fn from_raw(v: u32) -> FileKind {
        match v {
            abi::DG_FILE_IMAGE => FileKind::Image,
            abi::DG_FILE_UPPER => FileKind::Upper,
            abi::DG_FILE_FILELESS => FileKind::Fileless,
            abi::DG_FILE_OTHER_OVERLAY => FileKind::OtherOverlay,
            abi::DG_FILE_EXEC_VOLUME => FileKind::ExecVolume,
            abi::DG_FILE_UPPER_UNKNOWN => FileKind::UpperUnknown,
            abi::DG_FILE_ANONYMOUS => FileKind::Anonymous,
            abi::DG_FILE_WRITABLE => FileKind::Writable,
            abi::DG_FILE_MODIFIED => FileKind::Modified,
            abi::DG_FILE_OWN_MEMORY => FileKind::OwnMemory,
            abi::DG_FILE_OTHER_PROCESS => FileKind::OtherProcess,
            abi::DG_FILE_FROM_OTHER_CONTAINER => FileKind::FromOtherContainer,
            _ => FileKind::OtherFs,
        }
    }

    /// The name in events and logs (`image`, `upper`, `upper_unknown`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Image => "image",
            FileKind::Upper => "upper",
            FileKind::Fileless => "fileless",
            FileKind::OtherFs => "other_fs",
            FileKind::OtherOverlay => "other_overlay",
            FileKind::ExecVolume => "exec_volume",
            FileKind::UpperUnknown => "upper_unknown",
            FileKind::Anonymous => "anonymous",
            FileKind::Writable => "writable",
            FileKind::Modified => "modified",
            FileKind::OwnMemory => "own_memory",
            FileKind::OtherProcess => "other_process",
            FileKind::FromOtherContainer => "from_other_container",
        }
    }
}

/// One verdict, as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Boot-time clock (CLOCK_BOOTTIME) in ns when the verdict was made.
    pub boot_ns: u64,
    /// Cgroup v2 id of the process.
    pub cgroup_id: u64,
    /// Cgroup whose policy applied (the process's own or an ancestor).
    pub policy_cgroup_id: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Real uid (in the initial user namespace).
    pub uid: u32,
    /// Task command name at the time of the check.
    pub comm: String,
    /// Resolved path: for files of the container's root filesystem its path in the image
    /// (`path_image`), otherwise as the process sees it.
    pub path: String,
    /// Rule that matched.
    pub rule: Rule,
    /// Action taken.
    pub action: Action,
    /// Program that saw it.
    pub hook: Hook,
    /// Kind of file.
    pub file: FileKind,
    /// Mode of the policy that applied.
    pub mode: Mode,
    /// The path was longer than the kernel buffer (omitted from JSON when false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    /// The path could not be resolved completely (never matches a list entry; omitted from JSON
    /// when false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_unresolved: bool,
    /// `path` is the file's path in the container's root filesystem, independent of the
    /// process's root, mounts and namespaces.
    pub path_image: bool,
    /// Fallback mapping checks: the mapping could not be looked up (a busy lock, a mapping a
    /// sibling thread removed, a kernel without `bpf_find_vma`), so it was judged as anonymous
    /// memory: fail closed (omitted from JSON when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mapping_unknown: bool,
    /// Memory rule: the protection asked for, `rwx` notation (omitted otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prot: Option<String>,
    /// Memory rule in monitor mode: how many checks of this container, rule and mapping kind
    /// this event stands for, itself included (at most one event per 10 s per key; omitted
    /// otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Process-memory rules: the process reached (omitted otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The parent process at the time of the check (docs/events.md, "parent and args").
    pub parent: Parent,
    /// The command line (docs/events.md, "parent and args"): on `bprm_check` the argv of the exec
    /// being checked, on every other hook the process's own; omitted when it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// `args` holds the first 256 bytes or 32 arguments only: the last one may be cut (omitted
    /// from JSON when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_truncated: bool,
}

/// NUL-separated arguments to strings (each lossy UTF-8). A cut last argument has no NUL.
fn split_args(b: &[u8]) -> Vec<String> {
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    b.split(|&c| c == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// The process a process-memory verdict is about: the one whose `mem` file was opened, the
/// `ptrace` or `process_vm_*` target, for `PTRACE_TRACEME` the parent offered the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Process id (tgid), in the node's pid namespace like the event's `pid`.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Command name.
    pub comm: String,
    /// Its cgroup v2 id.
    pub cgroup_id: u64,
    /// The cgroup whose policy applies to it; 0 when none does (the node, a container without
    /// policy).
    pub policy_cgroup_id: u64,
}

/// `rwx` notation of `PROT_*` bits.
fn prot_str(prot: u32) -> String {
    let bit = |b: u32, c: char| if prot & b != 0 { c } else { '-' };
    [bit(1, 'r'), bit(2, 'w'), bit(4, 'x')].iter().collect()
}

impl Event {
    /// Decode a ring-buffer record.
    pub fn decode(data: &[u8]) -> Option<Event> {
        let r = RawEvent::parse(data)?;
        // The program clears TRUNCATED with UNAVAILABLE; a record that says both is not trusted.
        let args_read = r.flags & abi::DG_EVF_ARGS_UNAVAILABLE == 0;
        let exe_read = r.flags & abi::DG_EVF_PARENT_EXE_UNAVAILABLE == 0;
        Some(Event {
            boot_ns: r.ts_ns,
            cgroup_id: r.cgroup_id,
            policy_cgroup_id: r.policy_cgroup_id,
            pid: r.tgid,
            tid: r.pid,
            ppid: r.ppid,
            uid: r.uid,
            comm: r.comm,
            path: r.path,
            rule: Rule::from_raw(r.matched),
            action: Action::from_raw(r.action),
            hook: Hook::from_raw(r.hook),
            file: FileKind::from_raw(r.file_kind),
            mode: Mode::from_raw(r.mode).unwrap_or(Mode::Off),
            path_truncated: r.flags & abi::DG_EVF_PATH_TRUNCATED != 0,
            path_unresolved: r.flags & abi::DG_EVF_PATH_UNRESOLVED != 0,
            path_image: r.flags & abi::DG_EVF_PATH_IMAGE != 0,
            mapping_unknown: r.flags & abi::DG_EVF_MAPPING_UNKNOWN != 0,
            prot: (r.prot != 0).then(|| prot_str(r.prot)),
            count: (r.count != 0).then_some(r.count),
            target: (r.target_tgid != 0).then(|| Target {
                pid: r.target_tgid,
                tid: r.target_pid,
                comm: r.target_comm.clone(),
                cgroup_id: r.target_cgroup_id,
                policy_cgroup_id: r.target_policy_cgroup_id,
            }),
            parent: Parent {
                pid: r.ppid,
                comm: r.parent_comm,
                exe_truncated: exe_read && !r.parent_exe.is_empty() && r.flags & abi::DG_EVF_PARENT_EXE_TRUNCATED != 0,
                exe: if exe_read { r.parent_exe } else { String::new() },
            },
            args: (args_read && !r.args.is_empty()).then(|| split_args(&r.args)),
            args_truncated: args_read && r.flags & abi::DG_EVF_ARGS_TRUNCATED != 0,
        })
    }
}

/// Capacity of the channel between the ring-buffer reader and the consumer.
pub const EVENT_CHANNEL_CAPACITY: usize = 65536;

/// Liveness of a ring-buffer reader thread: the time of its last poll (or event), and whether
/// it stopped. Cheap to clone; read by the agent's health checks.
#[derive(Clone, Debug)]
pub struct ReaderHeartbeat {
    inner: Arc<Beat>,
}

#[derive(Debug)]
struct Beat {
    origin: std::time::Instant,
    /// Milliseconds since `origin` of the last beat.
    last_ms: AtomicU64,
    stopped: AtomicBool,
}

impl ReaderHeartbeat {
    /// A heartbeat that has just beaten (the reader starts with it).
    pub fn beating() -> Self {
        ReaderHeartbeat {
            inner: Arc::new(Beat {
                origin: std::time::Instant::now(),
                last_ms: AtomicU64::new(0),
                stopped: AtomicBool::new(false),
            }),
        }
    }

    fn beat(&self) {
        let ms = self.inner.origin.elapsed().as_millis();
        self.inner.last_ms.store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Marks the reader as stopped (its thread exited).
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.inner.last_ms.load(Ordering::Relaxed));
        self.inner.origin.elapsed().saturating_sub(last)
    }

    /// Whether the reader thread exited.
    pub fn stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Relaxed)
    }
}

/// A stream of events read from the ring buffer by a background thread.
///
/// When the consumer falls behind, the channel fills, the reader blocks, the
/// ring buffer fills and the kernel counts drops (`Stats::ringbuf_drops`):
/// nothing is lost silently. Only one reader per ring buffer may run.
pub struct EventStream {
    rx: mpsc::Receiver<Event>,
    stop: Arc<AtomicBool>,
    malformed: Arc<AtomicU64>,
    heartbeat: ReaderHeartbeat,
    thread: Option<JoinHandle<()>>,
}

impl EventStream {
    pub(crate) fn spawn(ringbuf: MapHandle) -> Result<Self> {
        let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let malformed = Arc::new(AtomicU64::new(0));
        let (stop2, malformed2) = (stop.clone(), malformed.clone());
        let heartbeat = ReaderHeartbeat::beating();
        let hb = heartbeat.clone();
        // Build once here so a broken map is reported to the caller, not the thread.
        drop(build_ringbuf(&ringbuf, None, malformed.clone(), None)?);
        let thread = std::thread::Builder::new()
            .name("dg-ringbuf".into())
            .spawn(move || {
                // Marks the heartbeat stopped however the thread ends.
                struct Stopped(ReaderHeartbeat);
                impl Drop for Stopped {
                    fn drop(&mut self) {
                        self.0.stop();
                    }
                }
                let _stopped = Stopped(hb.clone());
                let rb = match build_ringbuf(&ringbuf, Some(tx.clone()), malformed2, Some(hb.clone())) {
                    Ok(rb) => rb,
                    Err(e) => {
                        tracing::error!(error = %e, "ring buffer reader could not start");
                        return;
                    }
                };
                while !stop2.load(Ordering::Relaxed) && !tx.is_closed() {
                    hb.beat();
                    if let Err(e) = rb.poll(Duration::from_millis(100)) {
                        if e.kind() != libbpf_rs::ErrorKind::Interrupted {
                            tracing::error!(error = %e, "ring buffer poll failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
            .map_err(|e| Error::io("spawning ring buffer reader", e))?;
        Ok(EventStream { rx, stop, malformed, heartbeat, thread: Some(thread) })
    }

    /// The reader thread's heartbeat.
    pub fn heartbeat(&self) -> ReaderHeartbeat {
        self.heartbeat.clone()
    }

    /// Next event; `None` when the reader stopped.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// An event if one is ready.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// Wait up to `timeout` for an event (blocking; for tools and tests outside a runtime).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(e) = self.rx.try_recv() {
                return Some(e);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Records that could not be decoded (version skew); should stay 0.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn build_ringbuf(
    map: &MapHandle,
    tx: Option<mpsc::Sender<Event>>,
    malformed: Arc<AtomicU64>,
    heartbeat: Option<ReaderHeartbeat>,
) -> Result<libbpf_rs::RingBuffer<'static>> {
    let mut b = RingBufferBuilder::new();
    b.add(map, move |data: &[u8]| {
        // A sustained stream of events keeps one poll busy: every event is progress.
        if let Some(hb) = &heartbeat {
            hb.beat();
        }
        match Event::decode(data) {
            Some(ev) => {
                if let Some(tx) = &tx {
                    // Blocks when the consumer is behind: back-pressure into the kernel's drop counter.
                    if tx.blocking_send(ev).is_err() {
                        return -1; // receiver gone: stop consuming
                    }
                }
            }
            None => {
                malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
        0
    })
    .map_err(|source| Error::Map { map: MAP_EVENTS, op: "ring buffer add", source })?;
    b.build().map_err(|source| Error::Map { map: MAP_EVENTS, op: "ring buffer build", source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_maps_every_field() {
        let raw = RawEvent {
            ts_ns: 10,
            cgroup_id: 20,
            policy_cgroup_id: 30,
            pid: 41,
            tgid: 40,
            ppid: 1,
            uid: 1000,
            matched: abi::DG_MATCH_FILELESS,
            action: abi::DG_ACT_KILL,
            hook: abi::DG_HOOK_EXEC_TRACEPOINT,
            file_kind: abi::DG_FILE_FILELESS,
            mode: abi::DG_MODE_ENFORCE,
            flags: abi::DG_EVF_PATH_TRUNCATED,
            comm: "payload".into(),
            path: "/memfd:x (deleted)".into(),
            prot: 0,
            count: 0,
            ..Default::default()
        };
        let e = Event::decode(&raw.to_bytes()).unwrap();
        assert_eq!(e.pid, 40);
        assert_eq!(e.tid, 41);
        assert_eq!(e.rule, Rule::Fileless);
        assert_eq!(e.action, Action::Kill);
        assert_eq!(e.hook, Hook::ExecTracepoint);
        assert_eq!(e.file, FileKind::Fileless);
        assert_eq!(e.mode, Mode::Enforce);
        assert!(e.path_truncated && !e.path_unresolved);
        assert_eq!(e.path, "/memfd:x (deleted)");
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["rule"], "fileless");
        assert_eq!(j["action"], "kill");
        assert_eq!(j["hook"], "exec_tracepoint");
        assert!(j.get("prot").is_none() && j.get("count").is_none() && j.get("target").is_none(), "{j}");
    }

    #[test]
    fn decode_parent_and_args() {
        let raw = RawEvent {
            tgid: 40,
            ppid: 39,
            comm: "sh".into(),
            parent_comm: "bash".into(),
            parent_start_ns: 5,
            args: b"/tmp/x\0-c\0two words\0".to_vec(),
            parent_exe: "/usr/bin/bash".into(),
            ..Default::default()
        };
        let e = Event::decode(&raw.to_bytes()).unwrap();
        let bash = Parent { pid: 39, comm: "bash".into(), exe: "/usr/bin/bash".into(), exe_truncated: false };
        assert_eq!(e.parent, bash);
        assert_eq!(e.args.as_deref(), Some(&["/tmp/x".to_string(), "-c".into(), "two words".into()][..]));
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["parent"], serde_json::json!({"pid": 39, "comm": "bash", "exe": "/usr/bin/bash"}));
        // The parent's executable: cut (flagged), or not resolved (empty, no claim of a cut).
        let long = RawEvent { flags: abi::DG_EVF_PARENT_EXE_TRUNCATED, ..raw.clone() };
        assert_eq!(
            serde_json::to_value(Event::decode(&long.to_bytes()).unwrap()).unwrap()["parent"]["exe_truncated"],
            true
        );
        let gone =
            RawEvent { flags: abi::DG_EVF_PARENT_EXE_UNAVAILABLE | abi::DG_EVF_PARENT_EXE_TRUNCATED, ..raw.clone() };
        assert_eq!(
            serde_json::to_value(Event::decode(&gone.to_bytes()).unwrap()).unwrap()["parent"],
            serde_json::json!({"pid": 39, "comm": "bash", "exe": ""})
        );
        assert_eq!(j["args"], serde_json::json!(["/tmp/x", "-c", "two words"]));
        assert!(j.get("args_truncated").is_none(), "{j}");
        // Cut: the last argument has no NUL, and the flag says so.
        let cut = RawEvent { args: b"/tmp/x\0aaaa".to_vec(), flags: abi::DG_EVF_ARGS_TRUNCATED, ..raw.clone() };
        let j = serde_json::to_value(Event::decode(&cut.to_bytes()).unwrap()).unwrap();
        assert_eq!(
            (&j["args"], &j["args_truncated"]),
            (&serde_json::json!(["/tmp/x", "aaaa"]), &serde_json::json!(true))
        );
        // Not readable: no args, no truncation claim, even if bytes were left in the record.
        let none = RawEvent { flags: abi::DG_EVF_ARGS_UNAVAILABLE | abi::DG_EVF_ARGS_TRUNCATED, ..raw.clone() };
        let j = serde_json::to_value(Event::decode(&none.to_bytes()).unwrap()).unwrap();
        assert!(j.get("args").is_none() && j.get("args_truncated").is_none(), "{j}");
        // Bytes that are not UTF-8 (any exec may pass them) are replaced, never an error.
        let odd = RawEvent { args: b"/tmp/x\0\xff\xfeok\0".to_vec(), ..raw.clone() };
        assert_eq!(Event::decode(&odd.to_bytes()).unwrap().args.unwrap()[1], "\u{fffd}\u{fffd}ok");
        let empty = RawEvent { args: Vec::new(), ..raw };
        assert_eq!(Event::decode(&empty.to_bytes()).unwrap().args, None);
    }

    #[test]
    fn decode_process_target() {
        let raw = RawEvent {
            ts_ns: 1,
            cgroup_id: 5,
            policy_cgroup_id: 6,
            pid: 71,
            tgid: 70,
            matched: abi::DG_MATCH_PROCESS_ACCESS,
            action: abi::DG_ACT_DENY,
            hook: abi::DG_HOOK_PTRACE_ACCESS,
            file_kind: abi::DG_FILE_FROM_OTHER_CONTAINER,
            mode: abi::DG_MODE_ENFORCE,
            comm: "gdb".into(),
            target_cgroup_id: 7,
            target_policy_cgroup_id: 6,
            target_pid: 81,
            target_tgid: 80,
            target_comm: "nginx".into(),
            ..Default::default()
        };
        let j = serde_json::to_value(Event::decode(&raw.to_bytes()).unwrap()).unwrap();
        assert_eq!(j["file"], "from_other_container");
        assert_eq!(
            j["target"],
            serde_json::json!({"pid": 80, "tid": 81, "comm": "nginx", "cgroup_id": 7, "policy_cgroup_id": 6})
        );
    }

    #[test]
    fn decode_memory_fields() {
        let raw = RawEvent {
            ts_ns: 1,
            cgroup_id: 2,
            policy_cgroup_id: 2,
            pid: 7,
            tgid: 7,
            ppid: 1,
            uid: 0,
            matched: abi::DG_MATCH_EXEC_MEMORY,
            action: abi::DG_ACT_ALERT,
            hook: abi::DG_HOOK_FILE_MPROTECT,
            file_kind: abi::DG_FILE_ANONYMOUS,
            mode: abi::DG_MODE_MONITOR,
            flags: 0,
            comm: "java".into(),
            path: String::new(),
            prot: 5,
            count: 120,
            ..Default::default()
        };
        let j = serde_json::to_value(Event::decode(&raw.to_bytes()).unwrap()).unwrap();
        assert_eq!(j["rule"], "exec_memory");
        assert_eq!(j["file"], "anonymous");
        assert_eq!(j["hook"], "file_mprotect");
        assert_eq!(j["prot"], "r-x");
        assert_eq!(j["count"], 120);
        for (kind, name) in [(abi::DG_FILE_WRITABLE, "writable"), (abi::DG_FILE_MODIFIED, "modified")] {
            let r = RawEvent { file_kind: kind, prot: 7, ..raw.clone() };
            let j = serde_json::to_value(Event::decode(&r.to_bytes()).unwrap()).unwrap();
            assert_eq!((j["file"].as_str(), j["prot"].as_str()), (Some(name), Some("rwx")));
        }
    }

    /// Every name the events carry for a hook, rule and file kind is documented in its row of
    /// docs/events.md.
    #[test]
    fn docs_events_md_names_every_hook_rule_and_kind() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md")).unwrap();
        let row = |field: &str| doc.lines().find(|l| l.starts_with(&format!("| `{field}` |"))).unwrap().to_string();
        let name = |v: serde_json::Value| format!("`{}`", v.as_str().unwrap());
        let (hook, rule, file) = (row("hook"), row("rule"), row("file"));
        for raw in 0..32 {
            let h = Hook::from_raw(raw);
            if h != Hook::Unknown {
                assert!(hook.contains(&name(serde_json::to_value(h).unwrap())), "hook {h:?}");
            }
            let r = Rule::from_raw(raw);
            assert!(rule.contains(&name(serde_json::to_value(r).unwrap())), "rule {r:?}");
            let f = FileKind::from_raw(raw);
            assert!(file.contains(&name(serde_json::to_value(f).unwrap())), "file kind {f:?}");
        }
    }

    #[test]
    fn short_record_is_rejected() {
        assert!(Event::decode(&[0u8; 10]).is_none());
    }
}
