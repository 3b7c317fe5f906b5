//! Byte-exact mirror of `bpf/driftguard.h`. Encoding and decoding are explicit
//! (little-endian fields at fixed offsets), so nothing here needs `unsafe`.
//!
//! The constants and the offset tables below are checked against the C header at build time:
//! `build.rs` includes this file, writes one `_Static_assert` per constant, struct size, field
//! offset and field size into `$OUT_DIR/abi_check.c`, and compiles that with clang for the BPF
//! target together with `bpf/driftguard.h`. A change on either side without the other fails
//! `cargo build`. This file must therefore only use `std` (it is also compiled into build.rs).

#![allow(missing_docs)]

/// Defines each constant once and lists it in [`C_CONSTANTS`] under its C name.
macro_rules! c_constants {
    ($($name:ident : $ty:ty = $val:expr;)*) => {
        $(pub const $name: $ty = $val;)*
        /// Every `#define` of `bpf/driftguard.h` this file mirrors, by C name, with its value.
        pub const C_CONSTANTS: &[(&str, u64)] = &[$((stringify!($name), $name as u64)),*];
    };
}

c_constants! {
    DG_PATH_MAX: usize = 256;
    DG_ARGS_MAX: usize = 256;
    DG_ARGV_MAX: u32 = 32;
    DG_MAX_LEVELS: u32 = 32;
    DG_MAX_EXEC_MOUNTS: usize = 8;

    DG_MODE_OFF: u32 = 0;
    DG_MODE_MONITOR: u32 = 1;
    DG_MODE_ENFORCE: u32 = 2;

    DG_RULE_DRIFT: u32 = 1 << 0;
    DG_RULE_FILELESS: u32 = 1 << 1;
    DG_RULE_NON_IMAGE: u32 = 1 << 2;
    DG_RULE_ALLOWLIST_ONLY: u32 = 1 << 3;
    DG_RULE_HAS_LISTS: u32 = 1 << 4;
    DG_RULE_HAS_MOUNTS: u32 = 1 << 5;
    DG_RULE_EXEC_MEMORY: u32 = 1 << 6;
    DG_RULE_JIT: u32 = 1 << 7;
    DG_RULE_PROCESS_ACCESS: u32 = 1 << 8;
    DG_RULE_DEBUG: u32 = 1 << 9;

    DG_LIST_NONE: u32 = 0;
    DG_LIST_ALLOW: u32 = 1;
    DG_LIST_DENY: u32 = 2;

    DG_FILE_IMAGE: u32 = 0;
    DG_FILE_UPPER: u32 = 1;
    DG_FILE_FILELESS: u32 = 2;
    DG_FILE_OTHER_FS: u32 = 3;
    DG_FILE_OTHER_OVERLAY: u32 = 4;
    DG_FILE_EXEC_VOLUME: u32 = 5;
    DG_FILE_UPPER_UNKNOWN: u32 = 6;
    DG_FILE_ANONYMOUS: u32 = 7;
    DG_FILE_WRITABLE: u32 = 8;
    DG_FILE_MODIFIED: u32 = 9;
    DG_FILE_OWN_MEMORY: u32 = 10;
    DG_FILE_OTHER_PROCESS: u32 = 11;
    DG_FILE_FROM_OTHER_CONTAINER: u32 = 12;

    DG_MATCH_NONE: u32 = 0;
    DG_MATCH_DENY_LIST: u32 = 1;
    DG_MATCH_DRIFT: u32 = 2;
    DG_MATCH_FILELESS: u32 = 3;
    DG_MATCH_NON_IMAGE: u32 = 4;
    DG_MATCH_NOT_ALLOWED: u32 = 5;
    DG_MATCH_EXEC_MEMORY: u32 = 6;
    DG_MATCH_MEMORY_WRITE: u32 = 7;
    DG_MATCH_PROCESS_ACCESS: u32 = 8;

    DG_ACT_ALLOW: u32 = 0;
    DG_ACT_ALERT: u32 = 1;
    DG_ACT_DENY: u32 = 2;
    DG_ACT_KILL: u32 = 3;

    DG_HOOK_BPRM_CHECK: u32 = 1;
    DG_HOOK_MMAP_FILE: u32 = 2;
    DG_HOOK_FILE_MPROTECT: u32 = 3;
    DG_HOOK_EXEC_TRACEPOINT: u32 = 4;
    DG_HOOK_SYS_MMAP: u32 = 5;
    DG_HOOK_SYS_MPROTECT: u32 = 6;
    DG_HOOK_SYS_SHMAT: u32 = 7;
    DG_HOOK_FILE_OPEN: u32 = 8;
    DG_HOOK_PTRACE_ACCESS: u32 = 9;
    DG_HOOK_PTRACE_TRACEME: u32 = 10;
    DG_HOOK_FILE_RECEIVE: u32 = 11;
    DG_HOOK_SYS_PTRACE: u32 = 12;
    DG_HOOK_SYS_PROCESS_VM: u32 = 13;
    DG_HOOK_SYS_PIDFD_GETFD: u32 = 14;
    DG_HOOK_SYS_OPEN: u32 = 15;

    DG_ACCESS_EXEC: u32 = 0;
    DG_ACCESS_MMAP_EXEC: u32 = 1;
    DG_ACCESS_MEM_EXEC: u32 = 2;
    DG_ACCESS_MEM_WRITE: u32 = 3;

    DG_EVF_PATH_TRUNCATED: u32 = 1 << 0;
    DG_EVF_PATH_UNRESOLVED: u32 = 1 << 1;
    DG_EVF_PATH_IMAGE: u32 = 1 << 2;
    DG_EVF_MAPPING_UNKNOWN: u32 = 1 << 3;
    DG_EVF_ARGS_TRUNCATED: u32 = 1 << 4;
    DG_EVF_ARGS_UNAVAILABLE: u32 = 1 << 5;
    DG_EVF_PARENT_EXE_TRUNCATED: u32 = 1 << 6;
    DG_EVF_PARENT_EXE_UNAVAILABLE: u32 = 1 << 7;

    DG_STAT_EVENTS: usize = 0;
    DG_STAT_RINGBUF_DROPS: usize = 1;
    DG_STAT_DENIES: usize = 2;
    DG_STAT_KILLS: usize = 3;
    DG_STAT_ALERTS: usize = 4;
    DG_STAT_PATH_ERRORS: usize = 5;
    DG_STAT_CHECKS: usize = 6;
    DG_STAT_OVL_UNKNOWN: usize = 7;
    DG_STAT_MAX: usize = 8;
}

/// Layout of one C struct as the encoders below assume it: `sizeof`, and for every member its
/// C name, `offsetof` and `sizeof`. Checked against the header by build.rs.
pub struct CStruct {
    pub name: &'static str,
    pub size: usize,
    pub fields: &'static [(&'static str, usize, usize)],
}

/// Byte offsets of `struct dg_policy`.
pub mod policy_off {
    pub const MODE: usize = 0;
    pub const RULES: usize = 4;
    pub const LEVEL: usize = 8;
    pub const OWNER: usize = 12;
    pub const ROOTFS_DEV: usize = 16;
    pub const EXEC_MNT_COUNT: usize = 24;
    pub const EXEC_MNT_IDS: usize = 28;
    pub const PAD: usize = 60;
}

/// Byte offsets of `struct dg_path_key`.
pub mod path_key_off {
    pub const CGROUP_ID: usize = 0;
    pub const PATH: usize = 8;
}

/// Byte offsets of `struct dg_input` (fields in order, all `__u32`).
pub mod input_off {
    pub const MODE: usize = 0;
    pub const RULES: usize = 4;
    pub const FILE_KIND: usize = 8;
    pub const LIST: usize = 12;
    pub const ACCESS: usize = 16;
    pub const ENFORCE_ACTION: usize = 20;
    pub const SHMEM: usize = 24;
}

/// Byte offsets of `struct dg_decide_args` and of `struct dg_verdict` inside it.
pub mod decide_off {
    pub const IN: usize = 0;
    pub const OUT: usize = 28;
    pub const VERDICT_MATCH: usize = 0;
    pub const VERDICT_ACTION: usize = 4;
}

/// Byte offsets of `struct dg_event`.
pub mod event_off {
    pub const TS_NS: usize = 0;
    pub const CGROUP_ID: usize = 8;
    pub const POLICY_CGROUP_ID: usize = 16;
    pub const PID: usize = 24;
    pub const TGID: usize = 28;
    pub const PPID: usize = 32;
    pub const UID: usize = 36;
    pub const MATCH: usize = 40;
    pub const ACTION: usize = 44;
    pub const HOOK: usize = 48;
    pub const FILE_KIND: usize = 52;
    pub const MODE: usize = 56;
    pub const FLAGS: usize = 60;
    pub const COMM: usize = 64;
    pub const PATH: usize = 80;
    pub const PROT: usize = 336;
    pub const COUNT: usize = 340;
    pub const TARGET_CGROUP_ID: usize = 344;
    pub const TARGET_POLICY_CGROUP_ID: usize = 352;
    pub const TARGET_PID: usize = 360;
    pub const TARGET_TGID: usize = 364;
    pub const TARGET_COMM: usize = 368;
    pub const PARENT_COMM: usize = 384;
    pub const PARENT_START_NS: usize = 400;
    pub const ARGS_LEN: usize = 408;
    pub const ARGS_PAD: usize = 412;
    pub const ARGS: usize = 416;
    pub const PARENT_EXE: usize = 672;
    pub const COMM_LEN: usize = 16;
}

/// Every struct of `bpf/driftguard.h` that crosses the kernel boundary, as this file encodes it.
pub const C_STRUCTS: &[CStruct] = &[
    CStruct {
        name: "dg_policy",
        size: RawPolicy::SIZE,
        fields: &[
            ("mode", policy_off::MODE, 4),
            ("rules", policy_off::RULES, 4),
            ("level", policy_off::LEVEL, 4),
            ("owner", policy_off::OWNER, 4),
            ("rootfs_dev", policy_off::ROOTFS_DEV, 8),
            ("exec_mnt_count", policy_off::EXEC_MNT_COUNT, 4),
            ("exec_mnt_ids", policy_off::EXEC_MNT_IDS, 4 * DG_MAX_EXEC_MOUNTS),
            ("pad", policy_off::PAD, 4),
        ],
    },
    CStruct {
        name: "dg_path_key",
        size: PATH_KEY_SIZE,
        fields: &[("cgroup_id", path_key_off::CGROUP_ID, 8), ("path", path_key_off::PATH, DG_PATH_MAX)],
    },
    CStruct {
        name: "dg_input",
        size: INPUT_SIZE,
        fields: &[
            ("mode", input_off::MODE, 4),
            ("rules", input_off::RULES, 4),
            ("file_kind", input_off::FILE_KIND, 4),
            ("list", input_off::LIST, 4),
            ("access", input_off::ACCESS, 4),
            ("enforce_action", input_off::ENFORCE_ACTION, 4),
            ("shmem", input_off::SHMEM, 4),
        ],
    },
    CStruct {
        name: "dg_verdict",
        size: 8,
        fields: &[("match", decide_off::VERDICT_MATCH, 4), ("action", decide_off::VERDICT_ACTION, 4)],
    },
    CStruct {
        name: "dg_decide_args",
        size: DECIDE_ARGS_SIZE,
        fields: &[("in", decide_off::IN, INPUT_SIZE), ("out", decide_off::OUT, 8)],
    },
    CStruct {
        name: "dg_event",
        size: RawEvent::SIZE,
        fields: &[
            ("ts_ns", event_off::TS_NS, 8),
            ("cgroup_id", event_off::CGROUP_ID, 8),
            ("policy_cgroup_id", event_off::POLICY_CGROUP_ID, 8),
            ("pid", event_off::PID, 4),
            ("tgid", event_off::TGID, 4),
            ("ppid", event_off::PPID, 4),
            ("uid", event_off::UID, 4),
            ("match", event_off::MATCH, 4),
            ("action", event_off::ACTION, 4),
            ("hook", event_off::HOOK, 4),
            ("file_kind", event_off::FILE_KIND, 4),
            ("mode", event_off::MODE, 4),
            ("flags", event_off::FLAGS, 4),
            ("comm", event_off::COMM, event_off::COMM_LEN),
            ("path", event_off::PATH, DG_PATH_MAX),
            ("prot", event_off::PROT, 4),
            ("count", event_off::COUNT, 4),
            ("target_cgroup_id", event_off::TARGET_CGROUP_ID, 8),
            ("target_policy_cgroup_id", event_off::TARGET_POLICY_CGROUP_ID, 8),
            ("target_pid", event_off::TARGET_PID, 4),
            ("target_tgid", event_off::TARGET_TGID, 4),
            ("target_comm", event_off::TARGET_COMM, event_off::COMM_LEN),
            ("parent_comm", event_off::PARENT_COMM, event_off::COMM_LEN),
            ("parent_start_ns", event_off::PARENT_START_NS, 8),
            ("args_len", event_off::ARGS_LEN, 4),
            ("args_pad", event_off::ARGS_PAD, 4),
            ("args", event_off::ARGS, DG_ARGS_MAX),
            ("parent_exe", event_off::PARENT_EXE, DG_PATH_MAX),
        ],
    },
];

/// `sizeof(struct dg_path_key)`.
pub const PATH_KEY_SIZE: usize = 8 + DG_PATH_MAX;
/// `sizeof(struct dg_input)`.
pub const INPUT_SIZE: usize = 28;
/// `sizeof(struct dg_decide_args)`.
pub const DECIDE_ARGS_SIZE: usize = INPUT_SIZE + 8;

/// `struct dg_policy` (64 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawPolicy {
    pub mode: u32,
    pub rules: u32,
    pub level: u32,
    /// Userspace bookkeeping (C `owner`): who installed the policy; unused by BPF.
    pub owner: u32,
    pub rootfs_dev: u64,
    pub exec_mnt_count: u32,
    pub exec_mnt_ids: [u32; DG_MAX_EXEC_MOUNTS],
}

impl RawPolicy {
    pub const SIZE: usize = 64;

    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        use policy_off as o;
        let mut b = [0u8; Self::SIZE];
        put_u32(&mut b, o::MODE, self.mode);
        put_u32(&mut b, o::RULES, self.rules);
        put_u32(&mut b, o::LEVEL, self.level);
        put_u32(&mut b, o::OWNER, self.owner);
        b[o::ROOTFS_DEV..o::ROOTFS_DEV + 8].copy_from_slice(&self.rootfs_dev.to_le_bytes());
        put_u32(&mut b, o::EXEC_MNT_COUNT, self.exec_mnt_count);
        for (i, id) in self.exec_mnt_ids.iter().enumerate() {
            put_u32(&mut b, o::EXEC_MNT_IDS + i * 4, *id);
        }
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        use policy_off as o;
        if b.len() != Self::SIZE {
            return None;
        }
        let mut exec_mnt_ids = [0u32; DG_MAX_EXEC_MOUNTS];
        for (i, id) in exec_mnt_ids.iter_mut().enumerate() {
            *id = u32_at(b, o::EXEC_MNT_IDS + i * 4);
        }
        Some(RawPolicy {
            mode: u32_at(b, o::MODE),
            rules: u32_at(b, o::RULES),
            level: u32_at(b, o::LEVEL),
            owner: u32_at(b, o::OWNER),
            rootfs_dev: u64_at(b, o::ROOTFS_DEV),
            exec_mnt_count: u32_at(b, o::EXEC_MNT_COUNT),
            exec_mnt_ids,
        })
    }
}

/// `struct dg_path_key` (8 + 256 bytes): cgroup id and NUL-padded path.
pub fn path_key(cgroup_id: u64, path: &str) -> Option<Vec<u8>> {
    use path_key_off as o;
    if path.len() >= DG_PATH_MAX {
        return None;
    }
    let mut k = vec![0u8; PATH_KEY_SIZE];
    k[o::CGROUP_ID..o::CGROUP_ID + 8].copy_from_slice(&cgroup_id.to_le_bytes());
    k[o::PATH..o::PATH + path.len()].copy_from_slice(path.as_bytes());
    Some(k)
}

/// Split a `struct dg_path_key` into (cgroup id, path).
pub fn parse_path_key(k: &[u8]) -> Option<(u64, String)> {
    use path_key_off as o;
    if k.len() != PATH_KEY_SIZE {
        return None;
    }
    Some((u64_at(k, o::CGROUP_ID), cstr(&k[o::PATH..o::PATH + DG_PATH_MAX])))
}

/// `struct dg_input`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawInput {
    pub mode: u32,
    pub rules: u32,
    pub file_kind: u32,
    pub list: u32,
    pub access: u32,
    pub enforce_action: u32,
    pub shmem: u32,
}

/// `struct dg_decide_args` = input + verdict (zeroed, filled in by the program).
pub fn decide_args(input: RawInput) -> [u8; DECIDE_ARGS_SIZE] {
    use input_off as o;
    let mut b = [0u8; DECIDE_ARGS_SIZE];
    let at = decide_off::IN;
    put_u32(&mut b, at + o::MODE, input.mode);
    put_u32(&mut b, at + o::RULES, input.rules);
    put_u32(&mut b, at + o::FILE_KIND, input.file_kind);
    put_u32(&mut b, at + o::LIST, input.list);
    put_u32(&mut b, at + o::ACCESS, input.access);
    put_u32(&mut b, at + o::ENFORCE_ACTION, input.enforce_action);
    put_u32(&mut b, at + o::SHMEM, input.shmem);
    b
}

/// The verdict part of `struct dg_decide_args`: (match, action).
pub fn decide_verdict(b: &[u8]) -> Option<(u32, u32)> {
    use decide_off as o;
    if b.len() < DECIDE_ARGS_SIZE {
        return None;
    }
    Some((u32_at(b, o::OUT + o::VERDICT_MATCH), u32_at(b, o::OUT + o::VERDICT_ACTION)))
}

/// `struct dg_event`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub policy_cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// C `match`.
    pub matched: u32,
    pub action: u32,
    pub hook: u32,
    pub file_kind: u32,
    pub mode: u32,
    pub flags: u32,
    pub comm: String,
    pub path: String,
    /// Memory checks: the protection asked for (0 otherwise).
    pub prot: u32,
    /// Memory checks in monitor mode: how many checks the event stands for (0 otherwise).
    pub count: u32,
    /// Process memory: the process reached (0 / empty otherwise).
    pub target_cgroup_id: u64,
    pub target_policy_cgroup_id: u64,
    /// Thread id (C `target_pid`).
    pub target_pid: u32,
    pub target_tgid: u32,
    pub target_comm: String,
    /// The parent's command name (empty in records of older programs).
    pub parent_comm: String,
    /// The parent's thread group start time (CLOCK_BOOTTIME ns), 0 in records of older programs.
    pub parent_start_ns: u64,
    /// The command line: NUL-separated arguments (`args_len` bytes of C `args`).
    pub args: Vec<u8>,
    /// The parent's executable, walked by the kernel at the check (empty in records of older
    /// programs, and when `DG_EVF_PARENT_EXE_UNAVAILABLE`).
    pub parent_exe: String,
}

impl RawEvent {
    pub const SIZE: usize = event_off::PARENT_EXE + DG_PATH_MAX;

    /// Size of the records of programs before `parent_exe`.
    pub const SIZE_V5: usize = event_off::ARGS + DG_ARGS_MAX;

    /// Size of the records of programs before `parent_comm` and `args`.
    pub const SIZE_V4: usize = event_off::TARGET_COMM + event_off::COMM_LEN;

    /// Size of the records of programs before the process-memory target (no `target_*`).
    /// Records of older sizes are still decoded, so events a pinned older program wrote
    /// before an upgrade replaced it are kept.
    pub const SIZE_V3: usize = event_off::COUNT + 4;

    /// Size of the records of programs before the memory rules (no `prot`, `count`).
    pub const SIZE_V2: usize = event_off::PATH + DG_PATH_MAX;

    pub fn parse(b: &[u8]) -> Option<Self> {
        use event_off as o;
        if b.len() < Self::SIZE_V2 {
            return None;
        }
        let mem = b.len() >= Self::SIZE_V3;
        let target = b.len() >= Self::SIZE_V4;
        let parent = b.len() >= Self::SIZE_V5;
        let parent_exe = b.len() >= Self::SIZE;
        let args_len = if parent { (u32_at(b, o::ARGS_LEN) as usize).min(DG_ARGS_MAX) } else { 0 };
        Some(RawEvent {
            ts_ns: u64_at(b, o::TS_NS),
            cgroup_id: u64_at(b, o::CGROUP_ID),
            policy_cgroup_id: u64_at(b, o::POLICY_CGROUP_ID),
            pid: u32_at(b, o::PID),
            tgid: u32_at(b, o::TGID),
            ppid: u32_at(b, o::PPID),
            uid: u32_at(b, o::UID),
            matched: u32_at(b, o::MATCH),
            action: u32_at(b, o::ACTION),
            hook: u32_at(b, o::HOOK),
            file_kind: u32_at(b, o::FILE_KIND),
            mode: u32_at(b, o::MODE),
            flags: u32_at(b, o::FLAGS),
            comm: cstr(&b[o::COMM..o::COMM + o::COMM_LEN]),
            path: cstr(&b[o::PATH..o::PATH + DG_PATH_MAX]),
            prot: if mem { u32_at(b, o::PROT) } else { 0 },
            count: if mem { u32_at(b, o::COUNT) } else { 0 },
            target_cgroup_id: if target { u64_at(b, o::TARGET_CGROUP_ID) } else { 0 },
            target_policy_cgroup_id: if target { u64_at(b, o::TARGET_POLICY_CGROUP_ID) } else { 0 },
            target_pid: if target { u32_at(b, o::TARGET_PID) } else { 0 },
            target_tgid: if target { u32_at(b, o::TARGET_TGID) } else { 0 },
            target_comm: if target { cstr(&b[o::TARGET_COMM..o::TARGET_COMM + o::COMM_LEN]) } else { String::new() },
            parent_comm: if parent { cstr(&b[o::PARENT_COMM..o::PARENT_COMM + o::COMM_LEN]) } else { String::new() },
            parent_start_ns: if parent { u64_at(b, o::PARENT_START_NS) } else { 0 },
            args: if parent { b[o::ARGS..o::ARGS + args_len].to_vec() } else { Vec::new() },
            parent_exe: if parent_exe { cstr(&b[o::PARENT_EXE..o::PARENT_EXE + DG_PATH_MAX]) } else { String::new() },
        })
    }

    /// Encode (used by tests and benchmarks to feed the decoder).
    pub fn to_bytes(&self) -> Vec<u8> {
        use event_off as o;
        let mut b = vec![0u8; Self::SIZE];
        b[o::TS_NS..o::TS_NS + 8].copy_from_slice(&self.ts_ns.to_le_bytes());
        b[o::CGROUP_ID..o::CGROUP_ID + 8].copy_from_slice(&self.cgroup_id.to_le_bytes());
        b[o::POLICY_CGROUP_ID..o::POLICY_CGROUP_ID + 8].copy_from_slice(&self.policy_cgroup_id.to_le_bytes());
        b[o::TARGET_CGROUP_ID..o::TARGET_CGROUP_ID + 8].copy_from_slice(&self.target_cgroup_id.to_le_bytes());
        b[o::TARGET_POLICY_CGROUP_ID..o::TARGET_POLICY_CGROUP_ID + 8]
            .copy_from_slice(&self.target_policy_cgroup_id.to_le_bytes());
        for (off, v) in [
            (o::PID, self.pid),
            (o::TGID, self.tgid),
            (o::PPID, self.ppid),
            (o::UID, self.uid),
            (o::MATCH, self.matched),
            (o::ACTION, self.action),
            (o::HOOK, self.hook),
            (o::FILE_KIND, self.file_kind),
            (o::MODE, self.mode),
            (o::FLAGS, self.flags),
            (o::PROT, self.prot),
            (o::COUNT, self.count),
            (o::TARGET_PID, self.target_pid),
            (o::TARGET_TGID, self.target_tgid),
        ] {
            put_u32(&mut b, off, v);
        }
        let c = self.comm.as_bytes();
        let n = c.len().min(o::COMM_LEN - 1);
        b[o::COMM..o::COMM + n].copy_from_slice(&c[..n]);
        let c = self.target_comm.as_bytes();
        let n = c.len().min(o::COMM_LEN - 1);
        b[o::TARGET_COMM..o::TARGET_COMM + n].copy_from_slice(&c[..n]);
        let c = self.parent_comm.as_bytes();
        let n = c.len().min(o::COMM_LEN - 1);
        b[o::PARENT_COMM..o::PARENT_COMM + n].copy_from_slice(&c[..n]);
        let p = self.path.as_bytes();
        let n = p.len().min(DG_PATH_MAX - 1);
        b[o::PATH..o::PATH + n].copy_from_slice(&p[..n]);
        b[o::PARENT_START_NS..o::PARENT_START_NS + 8].copy_from_slice(&self.parent_start_ns.to_le_bytes());
        let n = self.args.len().min(DG_ARGS_MAX);
        put_u32(&mut b, o::ARGS_LEN, n as u32);
        b[o::ARGS..o::ARGS + n].copy_from_slice(&self.args[..n]);
        let p = self.parent_exe.as_bytes();
        let n = p.len().min(DG_PATH_MAX - 1);
        b[o::PARENT_EXE..o::PARENT_EXE + n].copy_from_slice(&p[..n]);
        b
    }
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// NUL-terminated (or full-length) bytes to a String, lossy for non-UTF-8.
pub fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The C source build.rs compiles against `bpf/driftguard.h` (after `vmlinux.h`): one
/// `_Static_assert` per constant in [`C_CONSTANTS`] and per size, offset and member size in
/// [`C_STRUCTS`].
pub fn c_static_asserts() -> String {
    let mut s = String::from("/* Generated by build.rs from src/enforcer/abi.rs: do not edit. */\n");
    for (name, value) in C_CONSTANTS {
        s += &format!(
            "_Static_assert((unsigned long long)({name}) == {value}ULL, \
             \"{name} differs between bpf/driftguard.h and src/enforcer/abi.rs ({value})\");\n"
        );
    }
    for st in C_STRUCTS {
        let name = st.name;
        let size = st.size;
        s += &format!(
            "_Static_assert(sizeof(struct {name}) == {size}, \
             \"sizeof(struct {name}) differs between bpf/driftguard.h and src/enforcer/abi.rs ({size})\");\n"
        );
        let mut covered = 0;
        for (field, off, len) in st.fields {
            s += &format!(
                "_Static_assert(__builtin_offsetof(struct {name}, {field}) == {off}, \
                 \"offsetof({name}.{field}) differs between bpf/driftguard.h and src/enforcer/abi.rs ({off})\");\n\
                 _Static_assert(sizeof(((struct {name} *)0)->{field}) == {len}, \
                 \"sizeof({name}.{field}) differs between bpf/driftguard.h and src/enforcer/abi.rs ({len})\");\n"
            );
            covered += len;
        }
        // Members must tile the struct: a member added in C (even into padding) makes the sum
        // of the listed members' sizes fall short of sizeof.
        s += &format!(
            "_Static_assert(sizeof(struct {name}) == {covered}, \
             \"struct {name} has members src/enforcer/abi.rs does not list (they cover {covered} bytes)\");\n"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_bytes_roundtrip() {
        let p = RawPolicy {
            mode: 2,
            rules: 0x13,
            level: 5,
            owner: 0,
            rootfs_dev: 0x0102,
            exec_mnt_count: 2,
            exec_mnt_ids: [7, 9, 0, 0, 0, 0, 0, 0],
        };
        let b = p.to_bytes();
        assert_eq!(&b[0..4], &[2, 0, 0, 0]);
        assert_eq!(&b[4..8], &[0x13, 0, 0, 0]);
        assert_eq!(&b[16..18], &[2, 1]);
        assert_eq!(&b[24..32], &[2, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(RawPolicy::from_bytes(&b), Some(p));
        assert_eq!(RawPolicy::from_bytes(&b[..63]), None);
    }

    #[test]
    fn path_key_layout() {
        let k = path_key(0x0102030405060708, "/bin/sh").unwrap();
        assert_eq!(k.len(), 264);
        assert_eq!(&k[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&k[8..15], b"/bin/sh");
        assert!(k[15..].iter().all(|&b| b == 0));
        assert_eq!(parse_path_key(&k), Some((0x0102030405060708, "/bin/sh".to_string())));
        assert!(path_key(1, &"a".repeat(256)).is_none());
        assert!(path_key(1, &"a".repeat(255)).is_some());
    }

    #[test]
    fn event_roundtrip() {
        let e = RawEvent {
            ts_ns: 1,
            cgroup_id: 2,
            policy_cgroup_id: 3,
            pid: 4,
            tgid: 5,
            ppid: 6,
            uid: 7,
            matched: DG_MATCH_DRIFT,
            action: DG_ACT_DENY,
            hook: DG_HOOK_BPRM_CHECK,
            file_kind: DG_FILE_UPPER,
            mode: DG_MODE_ENFORCE,
            flags: 0,
            comm: "sh".into(),
            path: "/tmp/x".into(),
            prot: 7,
            count: 3,
            target_cgroup_id: 8,
            target_policy_cgroup_id: 9,
            target_pid: 10,
            target_tgid: 11,
            target_comm: "victim".into(),
            parent_comm: "bash".into(),
            parent_start_ns: 12,
            args: b"/tmp/x\0-v\0".to_vec(),
            parent_exe: "/bin/bash".into(),
        };
        let b = e.to_bytes();
        assert_eq!(b.len(), 928);
        assert_eq!(&b[672..681], b"/bin/bash");
        assert_eq!(&b[408..412], &[10, 0, 0, 0]);
        assert_eq!(RawEvent::parse(&b), Some(e.clone()));
        assert_eq!(RawEvent::parse(&b[..300]), None);
        // A length beyond the buffer (never written by the program) is cut to it.
        let mut long = b.clone();
        long[408..412].copy_from_slice(&4096u32.to_le_bytes());
        assert_eq!(RawEvent::parse(&long).map(|r| r.args.len()), Some(DG_ARGS_MAX));
        // Records of older programs (pinned before an upgrade) still decode: before the
        // parent's executable, before the parent and args, before the process-memory target,
        // and before the memory rules.
        let v5 = RawEvent::parse(&b[..672]).expect("a 672-byte record decodes");
        assert_eq!((v5.parent_comm.as_str(), v5.args.len(), v5.parent_exe.as_str()), ("bash", 10, ""));
        let v4 = RawEvent::parse(&b[..384]).expect("a 384-byte record decodes");
        assert_eq!((v4.target_comm.as_str(), v4.parent_comm.as_str(), v4.args.len()), ("victim", "", 0));
        let v3 = RawEvent::parse(&b[..344]).expect("a 344-byte record decodes");
        assert_eq!((v3.prot, v3.count, v3.target_pid, v3.target_comm.as_str()), (7, 3, 0, ""));
        let old = RawEvent::parse(&b[..336]).expect("a 336-byte record decodes");
        assert_eq!((old.path.as_str(), old.prot, old.count), ("/tmp/x", 0, 0));
    }

    /// Compiles the static assertions build.rs uses against `header` (the text of a
    /// driftguard.h); Err carries clang's diagnostics.
    fn clang_check(header: &str) -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let bpf = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf");
        std::fs::write(dir.path().join("driftguard.h"), header).map_err(|e| e.to_string())?;
        let check = dir.path().join("check.c");
        let src = format!("#include \"vmlinux.h\"\n#include \"driftguard.h\"\n{}", c_static_asserts());
        std::fs::write(&check, src).map_err(|e| e.to_string())?;
        // The temp dir comes first so its driftguard.h wins; vmlinux.h comes from bpf/.
        let out = std::process::Command::new("clang")
            .args(["-target", "bpf", "-fsyntax-only", "-I"])
            .arg(dir.path())
            .args(["-I", bpf])
            .arg(&check)
            .output()
            .map_err(|e| format!("running clang: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The build-time ABI check fails on each kind of change to the C header: a field moved, a
    /// field resized, a field added into padding, a field renamed, a constant changed.
    #[test]
    fn abi_check_rejects_changed_header() {
        let header = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/driftguard.h")).unwrap();
        clang_check(&header).expect("the real header passes the check");
        let cases = [
            // Swap two event fields: same size, different offsets.
            (
                "\t__u32 pid;              /* thread id */\n\t__u32 tgid;             /* process id */",
                "\t__u32 tgid;\n\t__u32 pid;",
                "offsetof(dg_event.pid)",
            ),
            ("\tchar comm[16];", "\tchar comm[20];", "sizeof(dg_event.comm)"),
            // A field added where the padding was.
            ("\t__u32 pad;\n};", "\t__u16 new_field;\n\t__u16 pad;\n};", "offsetof(dg_policy.pad)"),
            ("\t__u32 owner;", "\t__u32 installer;", "no member named 'owner'"),
            ("#define DG_MATCH_NOT_ALLOWED 5", "#define DG_MATCH_NOT_ALLOWED 6", "DG_MATCH_NOT_ALLOWED differs"),
            ("#define DG_PATH_MAX 256", "#define DG_PATH_MAX 512", "DG_PATH_MAX differs"),
        ];
        for (from, to, expect) in cases {
            assert!(header.contains(from), "test case out of date: header lacks {from:?}");
            let err = clang_check(&header.replacen(from, to, 1)).expect_err(expect);
            assert!(err.contains(expect), "changing {from:?} to {to:?}: expected {expect:?} in\n{err}");
        }
    }

    #[test]
    fn decide_args_layout() {
        let b =
            decide_args(RawInput { mode: 2, rules: 1, file_kind: 1, list: 0, access: 0, enforce_action: 2, shmem: 1 });
        assert_eq!(&b[0..4], &[2, 0, 0, 0]);
        assert_eq!(&b[20..24], &[2, 0, 0, 0]);
        assert_eq!(&b[24..28], &[1, 0, 0, 0]);
        assert_eq!(decide_verdict(&b), Some((0, 0)));
    }
}
