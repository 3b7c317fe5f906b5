//! `/proc/<pid>/mountinfo`: the one parser, for the container's provenance and for finding the
//! cgroup v2 hierarchy. A system module at the bottom of the crate: std only.

use std::path::{Path, PathBuf};

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount id (unique while the mount exists).
    pub mount_id: u32,
    /// `s_dev` of the mounted superblock, kernel encoding.
    pub dev: u64,
    /// Mount point, relative to the reading process's root, unescaped.
    pub mount_point: PathBuf,
    /// Root of the mount within its filesystem (`/` unless it is a bind of a subdirectory).
    pub root: String,
    /// Filesystem type.
    pub fstype: String,
}

/// Kernel `dev_t` encoding (`MKDEV`: 12-bit major above a 20-bit minor) of a major:minor pair.
pub fn kernel_dev(major: u32, minor: u32) -> u64 {
    (u64::from(major) << 20) | u64::from(minor & 0xfffff)
}

/// Kernel encoding of a userspace `st_dev` (glibc's encoding).
pub fn kernel_dev_of_st_dev(st_dev: u64) -> u64 {
    kernel_dev(libc::major(st_dev), libc::minor(st_dev))
}

/// Undo the octal escapes (`\040` for space, ...) of a mountinfo field.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (u32::from(oct[0] - b'0') << 6) | (u32::from(oct[1] - b'0') << 3) | u32::from(oct[2] - b'0');
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text (the one parser: provenance and the cgroup2 mounts both read it here).
/// Malformed lines are skipped (the kernel writes this file; a line we
/// cannot read is one we never match, which errs on the side of "not a mount").
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut f = pre.split_whitespace();
            let mount_id = f.next()?.parse().ok()?;
            let _parent = f.next()?;
            let (maj, min) = f.next()?.split_once(':')?;
            let root = unescape_mountinfo(f.next()?);
            let mount_point = PathBuf::from(unescape_mountinfo(f.next()?));
            let fstype = post.split_whitespace().next()?.to_string();
            Some(MountEntry {
                mount_id,
                dev: kernel_dev(maj.parse().ok()?, min.parse().ok()?),
                mount_point,
                root,
                fstype,
            })
        })
        .collect()
}

/// The topmost mount at exactly `mount_point` (mounts stacked on one point are listed in the
/// order they were made: the last one is visible).
pub fn top_mount_at<'a>(entries: &'a [MountEntry], mount_point: &Path) -> Option<&'a MountEntry> {
    entries.iter().rev().find(|e| e.mount_point == mount_point)
}
