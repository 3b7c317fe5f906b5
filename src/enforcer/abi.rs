//! Byte-exact mirror of `bpf/driftguard.h`. Encoding and decoding are explicit
//! (little-endian fields at fixed offsets), so nothing here needs `unsafe`.

#![allow(missing_docs)]

pub const DG_PATH_MAX: usize = 256;
pub const DG_MAX_LEVELS: u32 = 32;
pub const DG_MAX_EXEC_MOUNTS: usize = 8;

pub const DG_MODE_OFF: u32 = 0;
pub const DG_MODE_MONITOR: u32 = 1;
pub const DG_MODE_ENFORCE: u32 = 2;

pub const DG_RULE_DRIFT: u32 = 1 << 0;
pub const DG_RULE_FILELESS: u32 = 1 << 1;
pub const DG_RULE_NON_IMAGE: u32 = 1 << 2;
pub const DG_RULE_ALLOWLIST_ONLY: u32 = 1 << 3;
pub const DG_RULE_HAS_LISTS: u32 = 1 << 4;
pub const DG_RULE_HAS_MOUNTS: u32 = 1 << 5;

pub const DG_LIST_NONE: u32 = 0;
pub const DG_LIST_ALLOW: u32 = 1;
pub const DG_LIST_DENY: u32 = 2;

pub const DG_FILE_IMAGE: u32 = 0;
pub const DG_FILE_UPPER: u32 = 1;
pub const DG_FILE_FILELESS: u32 = 2;
pub const DG_FILE_OTHER_FS: u32 = 3;
pub const DG_FILE_OTHER_OVERLAY: u32 = 4;
pub const DG_FILE_EXEC_VOLUME: u32 = 5;

pub const DG_MATCH_NONE: u32 = 0;
pub const DG_MATCH_DENY_LIST: u32 = 1;
pub const DG_MATCH_DRIFT: u32 = 2;
pub const DG_MATCH_FILELESS: u32 = 3;
pub const DG_MATCH_NON_IMAGE: u32 = 4;
pub const DG_MATCH_NOT_ALLOWED: u32 = 5;

pub const DG_ACT_ALLOW: u32 = 0;
pub const DG_ACT_ALERT: u32 = 1;
pub const DG_ACT_DENY: u32 = 2;
pub const DG_ACT_KILL: u32 = 3;

pub const DG_HOOK_BPRM_CHECK: u32 = 1;
pub const DG_HOOK_MMAP_FILE: u32 = 2;
pub const DG_HOOK_FILE_MPROTECT: u32 = 3;
pub const DG_HOOK_EXEC_TRACEPOINT: u32 = 4;

pub const DG_ACCESS_EXEC: u32 = 0;
pub const DG_ACCESS_MMAP_EXEC: u32 = 1;

pub const DG_EVF_PATH_TRUNCATED: u32 = 1 << 0;
pub const DG_EVF_PATH_UNRESOLVED: u32 = 1 << 1;
pub const DG_EVF_PATH_IMAGE: u32 = 1 << 2;

pub const DG_STAT_EVENTS: usize = 0;
pub const DG_STAT_RINGBUF_DROPS: usize = 1;
pub const DG_STAT_DENIES: usize = 2;
pub const DG_STAT_KILLS: usize = 3;
pub const DG_STAT_ALERTS: usize = 4;
pub const DG_STAT_PATH_ERRORS: usize = 5;
pub const DG_STAT_CHECKS: usize = 6;
pub const DG_STAT_MAX: usize = 8;

/// `struct dg_policy` (64 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawPolicy {
    pub mode: u32,
    pub rules: u32,
    pub level: u32,
    pub reserved: u32,
    pub rootfs_dev: u64,
    pub exec_mnt_count: u32,
    pub exec_mnt_ids: [u32; DG_MAX_EXEC_MOUNTS],
}

impl RawPolicy {
    pub const SIZE: usize = 64;

    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.mode.to_le_bytes());
        b[4..8].copy_from_slice(&self.rules.to_le_bytes());
        b[8..12].copy_from_slice(&self.level.to_le_bytes());
        b[12..16].copy_from_slice(&self.reserved.to_le_bytes());
        b[16..24].copy_from_slice(&self.rootfs_dev.to_le_bytes());
        b[24..28].copy_from_slice(&self.exec_mnt_count.to_le_bytes());
        for (i, id) in self.exec_mnt_ids.iter().enumerate() {
            b[28 + i * 4..32 + i * 4].copy_from_slice(&id.to_le_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != Self::SIZE {
            return None;
        }
        let mut exec_mnt_ids = [0u32; DG_MAX_EXEC_MOUNTS];
        for (i, id) in exec_mnt_ids.iter_mut().enumerate() {
            *id = u32_at(b, 28 + i * 4);
        }
        Some(RawPolicy {
            mode: u32_at(b, 0),
            rules: u32_at(b, 4),
            level: u32_at(b, 8),
            reserved: u32_at(b, 12),
            rootfs_dev: u64_at(b, 16),
            exec_mnt_count: u32_at(b, 24),
            exec_mnt_ids,
        })
    }
}

/// `struct dg_path_key` (8 + 256 bytes): cgroup id and NUL-padded path.
pub fn path_key(cgroup_id: u64, path: &str) -> Option<Vec<u8>> {
    if path.len() >= DG_PATH_MAX {
        return None;
    }
    let mut k = vec![0u8; 8 + DG_PATH_MAX];
    k[0..8].copy_from_slice(&cgroup_id.to_le_bytes());
    k[8..8 + path.len()].copy_from_slice(path.as_bytes());
    Some(k)
}

/// Split a `struct dg_path_key` into (cgroup id, path).
pub fn parse_path_key(k: &[u8]) -> Option<(u64, String)> {
    if k.len() != 8 + DG_PATH_MAX {
        return None;
    }
    let id = u64_at(k, 0);
    Some((id, cstr(&k[8..])))
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
}

/// `struct dg_decide_args` = input (24 bytes) + verdict (8 bytes).
pub fn decide_args(input: RawInput) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, v) in [input.mode, input.rules, input.file_kind, input.list, input.access, input.enforce_action]
        .into_iter()
        .enumerate()
    {
        b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// The verdict part of `struct dg_decide_args`: (match, action).
pub fn decide_verdict(b: &[u8]) -> Option<(u32, u32)> {
    if b.len() < 32 {
        return None;
    }
    Some((u32_at(b, 24), u32_at(b, 28)))
}

/// `struct dg_event`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub policy_cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub matched: u32,
    pub action: u32,
    pub hook: u32,
    pub file_kind: u32,
    pub mode: u32,
    pub flags: u32,
    pub comm: String,
    pub path: String,
}

impl RawEvent {
    pub const SIZE: usize = 24 + 40 + 16 + DG_PATH_MAX;

    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < Self::SIZE {
            return None;
        }
        Some(RawEvent {
            ts_ns: u64_at(b, 0),
            cgroup_id: u64_at(b, 8),
            policy_cgroup_id: u64_at(b, 16),
            pid: u32_at(b, 24),
            tgid: u32_at(b, 28),
            ppid: u32_at(b, 32),
            uid: u32_at(b, 36),
            matched: u32_at(b, 40),
            action: u32_at(b, 44),
            hook: u32_at(b, 48),
            file_kind: u32_at(b, 52),
            mode: u32_at(b, 56),
            flags: u32_at(b, 60),
            comm: cstr(&b[64..80]),
            path: cstr(&b[80..80 + DG_PATH_MAX]),
        })
    }

    /// Encode (used by tests and benchmarks to feed the decoder).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.ts_ns.to_le_bytes());
        b[8..16].copy_from_slice(&self.cgroup_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.policy_cgroup_id.to_le_bytes());
        let u32s = [
            self.pid,
            self.tgid,
            self.ppid,
            self.uid,
            self.matched,
            self.action,
            self.hook,
            self.file_kind,
            self.mode,
            self.flags,
        ];
        for (i, v) in u32s.into_iter().enumerate() {
            b[24 + i * 4..28 + i * 4].copy_from_slice(&v.to_le_bytes());
        }
        let c = self.comm.as_bytes();
        let n = c.len().min(15);
        b[64..64 + n].copy_from_slice(&c[..n]);
        let p = self.path.as_bytes();
        let n = p.len().min(DG_PATH_MAX - 1);
        b[80..80 + n].copy_from_slice(&p[..n]);
        b
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_bytes_roundtrip() {
        let p = RawPolicy {
            mode: 2,
            rules: 0x13,
            level: 5,
            reserved: 0,
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
        };
        let b = e.to_bytes();
        assert_eq!(b.len(), 336);
        assert_eq!(RawEvent::parse(&b), Some(e));
        assert_eq!(RawEvent::parse(&b[..300]), None);
    }

    #[test]
    fn decide_args_layout() {
        let b = decide_args(RawInput { mode: 2, rules: 1, file_kind: 1, list: 0, access: 0, enforce_action: 2 });
        assert_eq!(&b[0..4], &[2, 0, 0, 0]);
        assert_eq!(&b[20..24], &[2, 0, 0, 0]);
        assert_eq!(decide_verdict(&b), Some((0, 0)));
    }
}
