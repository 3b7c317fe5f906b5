//! cgroup v2 directories and IDs.
//!
//! driftguard keys per-container policy by cgroup v2 id, which is the inode number of
//! the cgroup's directory in the cgroup2 filesystem (what `bpf_get_current_cgroup_id()`
//! returns). This module finds the cgroup2 mount ([`CgroupRoot::detect`]), turns the
//! `linux.cgroupsPath` of an OCI spec into a directory
//! ([`CgroupRoot::resolve_cgroups_path`]), and maps directories to ids and back.
//!
//! Paths from the kernel (`/proc/<pid>/cgroup`) and from runtimes are relative to the
//! root of the cgroup2 hierarchy *as seen from the agent's cgroup namespace*; run the
//! agent in the host cgroup namespace so that they match the mount.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Where the kernel lists this process's mounts.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Deepest level [`CgroupRoot::find_by_id`] descends to.
pub const FIND_MAX_DEPTH: usize = 32;

/// Parent slice of a systemd-driver cgroups path with an empty slice part (as in runc).
pub const DEFAULT_SLICE: &str = "system.slice";

/// cgroup lookup failures.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup2 filesystem is mounted.
    #[error("no cgroup2 filesystem found in {mountinfo}: driftguard needs cgroup v2 (pure or hybrid with /sys/fs/cgroup/unified); set [cgroup] root in the config to override")]
    NoCgroup2Mount {
        /// The mountinfo file searched.
        mountinfo: PathBuf,
    },
    /// A cgroup directory does not exist (the cgroup was removed, e.g. the container exited).
    #[error("cgroup {path} does not exist (removed?)")]
    NotFound {
        /// The directory.
        path: PathBuf,
    },
    /// A path that should be a cgroup directory is something else.
    #[error("cgroup {path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Any other I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory accessed.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A cgroupfs-driver cgroups path that cannot be used.
    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidCgroupsPath {
        /// The path as given.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A systemd-driver cgroups path (`slice:prefix:name`) that cannot be used.
    #[error("invalid systemd cgroups path {path:?}: {reason}")]
    InvalidSystemdPath {
        /// The path as given.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A systemd slice name that cannot be expanded.
    #[error("invalid systemd slice name {slice:?}: {reason}")]
    InvalidSlice {
        /// The slice name.
        slice: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A path that is not below the cgroup root.
    #[error("{path} is not under the cgroup root {root}")]
    NotUnderRoot {
        /// The path.
        path: PathBuf,
        /// The root.
        root: PathBuf,
    },
    /// The process does not exist (any more).
    #[error("process {pid} does not exist (exited?)")]
    ProcessNotFound {
        /// The pid.
        pid: u32,
    },
    /// `/proc/<pid>/cgroup` has no usable cgroup v2 (`0::`) line.
    #[error("process {pid}: {reason}")]
    NoUnifiedCgroup {
        /// The pid.
        pid: u32,
        /// What is wrong with its cgroup file.
        reason: String,
    },
}

fn io_err(path: &Path, source: io::Error) -> CgroupError {
    if source.kind() == io::ErrorKind::NotFound {
        CgroupError::NotFound { path: path.to_path_buf() }
    } else {
        CgroupError::Io { path: path.to_path_buf(), source }
    }
}

/// The cgroup v2 id of the cgroup directory `path`: its inode number.
///
/// Returns [`CgroupError::NotFound`] when the directory does not exist (the cgroup was
/// removed) and [`CgroupError::NotADirectory`] for other file types.
pub fn cgroup_id(path: &Path) -> Result<u64, CgroupError> {
    let md = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if !md.is_dir() {
        return Err(CgroupError::NotADirectory { path: path.to_path_buf() });
    }
    Ok(md.ino())
}

/// The processes (thread-group ids) that are members of the cgroup directory `path` itself, not
/// of its children, as its `cgroup.procs` lists them. Entries that are not numbers are skipped.
pub fn procs(path: &Path) -> Result<Vec<u32>, CgroupError> {
    let file = path.join("cgroup.procs");
    let text = std::fs::read_to_string(&file).map_err(|e| io_err(&file, e))?;
    Ok(text.split_whitespace().filter_map(|s| s.parse().ok()).collect())
}

/// A cgroup2 mount from mountinfo: (mount point, root of the mount within the fs).
fn cgroup2_mounts(mountinfo: &str) -> Vec<(PathBuf, String)> {
    crate::mountinfo::parse_mountinfo(mountinfo)
        .into_iter()
        .filter(|m| m.fstype == "cgroup2")
        .map(|m| (m.mount_point, m.root))
        .collect()
}

/// The root of the cgroup v2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupRoot {
    /// Mount point of the cgroup2 filesystem (e.g. `/sys/fs/cgroup`).
    pub path: PathBuf,
}

impl CgroupRoot {
    /// Use `path` as the cgroup2 root (config override, tests).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        CgroupRoot { path: path.into() }
    }

    /// Find the cgroup2 mount in `/proc/self/mountinfo`.
    pub fn detect() -> Result<Self, CgroupError> {
        let p = Path::new(MOUNTINFO);
        let s = std::fs::read_to_string(p).map_err(|source| CgroupError::Io { path: p.to_path_buf(), source })?;
        Self::from_mountinfo(&s).ok_or_else(|| CgroupError::NoCgroup2Mount { mountinfo: p.to_path_buf() })
    }

    /// Pick the cgroup2 mount from mountinfo contents: `/sys/fs/cgroup` (pure v2) over
    /// `/sys/fs/cgroup/unified` (hybrid) over any other cgroup2 mount; mounts of the
    /// whole hierarchy (root `/`) over bind mounts of a subtree; the last mount on a
    /// mount point (it hides earlier ones). `None` when there is no cgroup2 mount.
    pub fn from_mountinfo(mountinfo: &str) -> Option<Self> {
        let mounts = cgroup2_mounts(mountinfo);
        let rank = |(mp, root): &(PathBuf, String)| {
            let place = if mp == Path::new("/sys/fs/cgroup") {
                0
            } else if mp == Path::new("/sys/fs/cgroup/unified") {
                1
            } else {
                2
            };
            (root != "/", place)
        };
        // min_by_key keeps the first minimum; iterate in reverse so later mounts win ties.
        mounts.iter().rev().min_by_key(|m| rank(m)).map(|(mp, _)| CgroupRoot::at(mp))
    }

    /// The directory for an OCI `linux.cgroupsPath` as containerd/CRI-O/NRI give it.
    ///
    /// - cgroupfs driver: an absolute path (`/kubepods/besteffort/pod<uid>/<id>`), taken
    ///   relative to the root; `..` components are rejected.
    /// - systemd driver: `slice:prefix:name` (any value with a ':'), expanded as runc does:
    ///   `kubepods-besteffort-pod1234.slice:cri-containerd:abcd` →
    ///   `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-abcd.scope`.
    ///   An empty slice means [`DEFAULT_SLICE`]; a name ending in `.slice` is used as is
    ///   (the prefix ignored), otherwise the unit is `<prefix>-<name>.scope`.
    pub fn resolve_cgroups_path(&self, cgroups_path: &str) -> Result<PathBuf, CgroupError> {
        if cgroups_path.contains(':') {
            Ok(self.path.join(systemd_relative_path(cgroups_path)?))
        } else {
            Ok(self.path.join(cgroupfs_relative_path(cgroups_path)?))
        }
    }

    /// Depth of `path` below the root: the root is 0, `<root>/a/b` is 2. This is the
    /// level `bpf_get_current_ancestor_cgroup_id()` takes. Purely lexical.
    pub fn level(&self, path: &Path) -> Result<u32, CgroupError> {
        let not_under = || CgroupError::NotUnderRoot { path: path.to_path_buf(), root: self.path.clone() };
        let rel = path.strip_prefix(&self.path).map_err(|_| not_under())?;
        let mut n: u32 = 0;
        for c in rel.components() {
            match c {
                Component::Normal(_) => n = n.saturating_add(1),
                Component::CurDir => {}
                _ => return Err(not_under()),
            }
        }
        Ok(n)
    }

    /// The cgroup directory of process `pid`, from `/proc/<pid>/cgroup`.
    pub fn cgroup_of_pid(&self, pid: u32) -> Result<PathBuf, CgroupError> {
        self.cgroup_of_pid_in(Path::new("/proc"), pid)
    }

    /// [`Self::cgroup_of_pid`] with another procfs mount (tests, containers).
    pub fn cgroup_of_pid_in(&self, proc_root: &Path, pid: u32) -> Result<PathBuf, CgroupError> {
        let file = proc_root.join(pid.to_string()).join("cgroup");
        let contents = match std::fs::read_to_string(&file) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(CgroupError::ProcessNotFound { pid })
            }
            Err(source) => return Err(CgroupError::Io { path: file, source }),
        };
        self.cgroup_from_proc(pid, &contents)
    }

    /// The cgroup directory named by the contents of `/proc/<pid>/cgroup` (the `0::/path`
    /// line). A cgroup marked `(deleted)` is [`CgroupError::NotFound`].
    pub fn cgroup_from_proc(&self, pid: u32, contents: &str) -> Result<PathBuf, CgroupError> {
        let Some(rel) = contents.lines().find_map(|l| l.strip_prefix("0::")) else {
            return Err(CgroupError::NoUnifiedCgroup {
                pid,
                reason: "no cgroup v2 (\"0::\") entry in /proc/<pid>/cgroup: is cgroup v2 mounted?".into(),
            });
        };
        if let Some(gone) = rel.strip_suffix(" (deleted)") {
            return Err(CgroupError::NotFound { path: self.path.join(gone.trim_start_matches('/')) });
        }
        let bad =
            |reason: &str| CgroupError::NoUnifiedCgroup { pid, reason: format!("cgroup v2 path {rel:?} {reason}") };
        if !rel.starts_with('/') {
            return Err(bad("is not absolute"));
        }
        let mut out = self.path.clone();
        for c in Path::new(rel).components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(n) => out.push(n),
                _ => {
                    return Err(bad("leaves the agent's cgroup namespace; run the agent in the host cgroup namespace"))
                }
            }
        }
        Ok(out)
    }

    /// Find the cgroup directory with id `id` by walking the hierarchy (at most
    /// [`FIND_MAX_DEPTH`] levels deep; unreadable or vanishing directories are skipped).
    pub fn find_by_id(&self, id: u64) -> Option<PathBuf> {
        let mut found = None;
        self.walk(|dir, ino| {
            if ino == id {
                found = Some(dir.to_path_buf());
                false
            } else {
                true
            }
        });
        found
    }

    /// Ids of every cgroup in the hierarchy (bounded depth).
    pub fn all_ids(&self) -> std::collections::HashSet<u64> {
        let mut ids = std::collections::HashSet::new();
        self.walk(|_, ino| {
            ids.insert(ino);
            true
        });
        ids
    }

    /// Depth-first walk of the cgroup directories (at most [`FIND_MAX_DEPTH`] below the root);
    /// `visit(dir, id)` returns false to stop.
    fn walk(&self, mut visit: impl FnMut(&Path, u64) -> bool) {
        let mut stack = vec![(self.path.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(md) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            if !md.is_dir() {
                continue;
            }
            if !visit(&dir, md.ino()) {
                return;
            }
            if depth >= FIND_MAX_DEPTH {
                continue;
            }
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in rd.flatten() {
                // cgroupfs holds only directories (cgroups) and regular files (knobs).
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
    }
}

/// Relative directory of a cgroupfs-driver path.
fn cgroupfs_relative_path(p: &str) -> Result<PathBuf, CgroupError> {
    let bad = |reason: &str| CgroupError::InvalidCgroupsPath { path: p.to_string(), reason: reason.to_string() };
    if p.is_empty() {
        return Err(bad("is empty"));
    }
    if !p.starts_with('/') {
        return Err(bad("is relative (its location is runtime-defined); expected an absolute path like /kubepods/pod<uid>/<id> or slice:prefix:name"));
    }
    if p.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => return Err(bad("contains a '..' component")),
        }
    }
    Ok(out)
}

/// Relative directory of a systemd-driver `slice:prefix:name` path.
fn systemd_relative_path(p: &str) -> Result<PathBuf, CgroupError> {
    let bad = |reason: String| CgroupError::InvalidSystemdPath { path: p.to_string(), reason };
    let parts: Vec<&str> = p.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(bad(format!("expected 3 ':'-separated parts slice:prefix:name, got {}", parts.len())));
    };
    for (what, v) in [("prefix", prefix), ("name", name)] {
        if v.contains('/') {
            return Err(bad(format!("{what} {v:?} contains '/'")));
        }
        if v.contains('\0') {
            return Err(bad(format!("{what} {v:?} contains a NUL byte")));
        }
    }
    if name.is_empty() {
        return Err(bad("name is empty".into()));
    }
    let unit = if name.ends_with(".slice") { name.to_string() } else { format!("{prefix}-{name}.scope") };
    let parent = if slice.is_empty() { DEFAULT_SLICE } else { slice };
    let mut out = expand_slice(parent)?;
    out.push(unit);
    Ok(out)
}

/// Expand a systemd slice name to its path below the cgroup root, as runc's
/// `ExpandSlice`: `a-b-c.slice` → `a.slice/a-b.slice/a-b-c.slice`; `-.slice` (the root
/// slice) → the empty path.
pub fn expand_slice(slice: &str) -> Result<PathBuf, CgroupError> {
    let bad = |reason| CgroupError::InvalidSlice { slice: slice.to_string(), reason };
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(bad("must end with \".slice\""));
    };
    if slice.contains('/') {
        return Err(bad("must not contain '/'"));
    }
    if slice.contains('\0') {
        return Err(bad("must not contain a NUL byte"));
    }
    if stem == "-" {
        return Ok(PathBuf::new());
    }
    if stem.is_empty() {
        return Err(bad("is empty before \".slice\""));
    }
    if stem.starts_with('-') || stem.ends_with('-') {
        return Err(bad("must not start or end with '-'"));
    }
    if stem.contains("--") {
        return Err(bad("must not contain \"--\""));
    }
    let mut out = PathBuf::new();
    let mut prefix = String::new();
    for comp in stem.split('-') {
        out.push(format!("{prefix}{comp}.slice"));
        prefix.push_str(comp);
        prefix.push('-');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn mountinfo_pure_hybrid_and_escapes() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(CgroupRoot::from_mountinfo(hybrid), Some(CgroupRoot::at("/sys/fs/cgroup/unified")));
        let pure = "\
25 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
90 25 0:26 /kubepods /mnt/sub rw shared:4 - cgroup2 cgroup2 rw
";
        assert_eq!(CgroupRoot::from_mountinfo(pure), Some(CgroupRoot::at("/sys/fs/cgroup")));
        let other = "\
garbage line
7 1 0:5 / /run/my\\040cgroup rw master:1 shared:2 - cgroup2 none rw
8 1 0:5 /sub /run/bind rw - cgroup2 none rw
9 1 0:6 / /x rw - tmpfs cgroup2 rw
";
        assert_eq!(CgroupRoot::from_mountinfo(other), Some(CgroupRoot::at("/run/my cgroup")));
        assert_eq!(CgroupRoot::from_mountinfo("9 1 0:6 / /x rw - tmpfs cgroup2 rw\n"), None);
        assert_eq!(CgroupRoot::from_mountinfo(""), None);
        // later mount on the same point wins ties
        let two = "1 0 0:1 / /a rw - cgroup2 c rw\n2 0 0:2 / /b rw - cgroup2 c rw\n";
        assert_eq!(CgroupRoot::from_mountinfo(two), Some(CgroupRoot::at("/b")));
    }

    #[test]
    fn unescape() {
        use crate::mountinfo::unescape_mountinfo;
        assert_eq!(unescape_mountinfo("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape_mountinfo("trailing\\04"), "trailing\\04");
        assert_eq!(unescape_mountinfo("\\999"), "\\999");
    }

    #[test]
    fn detect_on_this_machine() {
        let mi = fs::read_to_string(MOUNTINFO).unwrap_or_default();
        let has_v2 = mi.lines().any(|l| l.split(" - ").nth(1).is_some_and(|r| r.starts_with("cgroup2 ")));
        match CgroupRoot::detect() {
            Ok(root) => {
                assert!(has_v2);
                assert_eq!(Some(root.clone()), CgroupRoot::from_mountinfo(&mi));
                // the root cgroup has an id and we are somewhere below it
                assert!(cgroup_id(&root.path).is_ok());
                let mine = root.cgroup_of_pid(std::process::id()).unwrap();
                assert!(root.level(&mine).is_ok());
                if let Ok(id) = cgroup_id(&mine) {
                    if root.level(&mine).unwrap() < 4 {
                        assert_eq!(root.find_by_id(id), Some(mine));
                    }
                }
            }
            Err(e) => {
                assert!(!has_v2, "cgroup2 mounted but detect failed: {e}");
                assert!(e.to_string().starts_with("no cgroup2 filesystem found in /proc/self/mountinfo"));
            }
        }
    }

    #[test]
    fn cgroupfs_paths() {
        let r = CgroupRoot::at("/sys/fs/cgroup");
        assert_eq!(
            r.resolve_cgroups_path("/kubepods/besteffort/pod1234/abcd").unwrap(),
            PathBuf::from("/sys/fs/cgroup/kubepods/besteffort/pod1234/abcd")
        );
        assert_eq!(r.resolve_cgroups_path("//a/./b/").unwrap(), PathBuf::from("/sys/fs/cgroup/a/b"));
        assert_eq!(r.resolve_cgroups_path("/").unwrap(), PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(
            r.resolve_cgroups_path("/kubepods/../../etc").unwrap_err().to_string(),
            "invalid cgroups path \"/kubepods/../../etc\": contains a '..' component"
        );
        assert_eq!(r.resolve_cgroups_path("").unwrap_err().to_string(), "invalid cgroups path \"\": is empty");
        assert!(r.resolve_cgroups_path("kubepods/x").unwrap_err().to_string().contains("is relative"));
        assert_eq!(
            r.resolve_cgroups_path("/a\0b").unwrap_err().to_string(),
            "invalid cgroups path \"/a\\0b\": contains a NUL byte"
        );
    }

    #[test]
    fn systemd_paths() {
        let r = CgroupRoot::at("/sys/fs/cgroup");
        assert_eq!(
            r.resolve_cgroups_path("kubepods-besteffort-pod1234.slice:cri-containerd:abcd").unwrap(),
            PathBuf::from("/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-abcd.scope")
        );
        assert_eq!(
            r.resolve_cgroups_path(":crio:abcd").unwrap(),
            PathBuf::from("/sys/fs/cgroup/system.slice/crio-abcd.scope")
        );
        assert_eq!(r.resolve_cgroups_path("-.slice:p:n").unwrap(), PathBuf::from("/sys/fs/cgroup/p-n.scope"));
        assert_eq!(
            r.resolve_cgroups_path("user.slice:ignored:sub-x.slice").unwrap(),
            PathBuf::from("/sys/fs/cgroup/user.slice/sub-x.slice")
        );
        let e = |p: &str| r.resolve_cgroups_path(p).unwrap_err().to_string();
        assert_eq!(
            e("a.slice:b"),
            "invalid systemd cgroups path \"a.slice:b\": expected 3 ':'-separated parts slice:prefix:name, got 2"
        );
        assert_eq!(e("a.slice:p:../x"), "invalid systemd cgroups path \"a.slice:p:../x\": name \"../x\" contains '/'");
        assert_eq!(e("a.slice:p/q:x"), "invalid systemd cgroups path \"a.slice:p/q:x\": prefix \"p/q\" contains '/'");
        assert_eq!(e("a.slice:p:"), "invalid systemd cgroups path \"a.slice:p:\": name is empty");
        assert_eq!(
            e("a.slice:p:x\0"),
            "invalid systemd cgroups path \"a.slice:p:x\\0\": name \"x\\0\" contains a NUL byte"
        );
        assert_eq!(e("a--b.slice:p:x"), "invalid systemd slice name \"a--b.slice\": must not contain \"--\"");
    }

    #[test]
    fn slice_expansion() {
        assert_eq!(expand_slice("-.slice").unwrap(), PathBuf::new());
        assert_eq!(expand_slice("system.slice").unwrap(), PathBuf::from("system.slice"));
        assert_eq!(expand_slice("a-b-c.slice").unwrap(), PathBuf::from("a.slice/a-b.slice/a-b-c.slice"));
        let e = |s: &str| expand_slice(s).unwrap_err().to_string();
        assert_eq!(e("system"), "invalid systemd slice name \"system\": must end with \".slice\"");
        assert_eq!(e("a/b.slice"), "invalid systemd slice name \"a/b.slice\": must not contain '/'");
        assert_eq!(e(".slice"), "invalid systemd slice name \".slice\": is empty before \".slice\"");
        assert_eq!(e("-a.slice"), "invalid systemd slice name \"-a.slice\": must not start or end with '-'");
        assert_eq!(e("a-.slice"), "invalid systemd slice name \"a-.slice\": must not start or end with '-'");
        assert_eq!(e("a--b.slice"), "invalid systemd slice name \"a--b.slice\": must not contain \"--\"");
        assert_eq!(e("a\0.slice"), "invalid systemd slice name \"a\\0.slice\": must not contain a NUL byte");
    }

    #[test]
    fn ids_levels_and_find() {
        let t = tmp();
        let root = CgroupRoot::at(t.path());
        let leaf = t.path().join("kubepods.slice/kubepods-pod1.slice/cri-containerd-x.scope");
        fs::create_dir_all(&leaf).unwrap();
        fs::write(t.path().join("cgroup.procs"), "").unwrap();
        let id = cgroup_id(&leaf).unwrap();
        assert_eq!(id, fs::metadata(&leaf).unwrap().ino());
        assert_eq!(root.find_by_id(id), Some(leaf.clone()));
        assert_eq!(root.find_by_id(cgroup_id(t.path()).unwrap()), Some(t.path().to_path_buf()));
        let file_ino = fs::metadata(t.path().join("cgroup.procs")).unwrap().ino();
        assert_eq!(root.find_by_id(file_ino), None, "files are not cgroups");
        assert_eq!(root.level(&leaf).unwrap(), 3);
        assert_eq!(root.level(t.path()).unwrap(), 0);
        assert_eq!(root.level(&t.path().join("./a")).unwrap(), 1);

        // depth bound
        let mut deep = t.path().to_path_buf();
        for _ in 0..=FIND_MAX_DEPTH {
            deep.push("d");
        }
        fs::create_dir_all(&deep).unwrap();
        assert_eq!(root.find_by_id(cgroup_id(&deep).unwrap()), None);
        assert_eq!(
            root.find_by_id(cgroup_id(deep.parent().unwrap()).unwrap()),
            Some(deep.parent().unwrap().to_path_buf())
        );

        // errors
        let gone = t.path().join("gone");
        let e = cgroup_id(&gone).unwrap_err();
        assert!(matches!(e, CgroupError::NotFound { .. }));
        assert_eq!(e.to_string(), format!("cgroup {} does not exist (removed?)", gone.display()));
        let e = cgroup_id(&t.path().join("cgroup.procs")).unwrap_err();
        assert_eq!(e.to_string(), format!("cgroup {}/cgroup.procs is not a directory", t.path().display()));
        let e = cgroup_id(&t.path().join("cgroup.procs/x")).unwrap_err();
        assert!(matches!(e, CgroupError::Io { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!("{}/cgroup.procs/x: ", t.path().display())));
        let e = root.level(Path::new("/elsewhere")).unwrap_err();
        assert_eq!(e.to_string(), format!("/elsewhere is not under the cgroup root {}", t.path().display()));
        assert!(matches!(root.level(&t.path().join("a/../..")), Err(CgroupError::NotUnderRoot { .. })));
        assert_eq!(CgroupRoot::at("/tmp/nonexistent-root").find_by_id(1), None);
    }

    #[test]
    fn proc_cgroup() {
        let r = CgroupRoot::at("/sys/fs/cgroup");
        let hybrid = "12:pids:/kubepods/x\n1:name=systemd:/y\n0::/kubepods.slice/a.scope\n";
        assert_eq!(r.cgroup_from_proc(1, hybrid).unwrap(), PathBuf::from("/sys/fs/cgroup/kubepods.slice/a.scope"));
        assert_eq!(r.cgroup_from_proc(1, "0::/\n").unwrap(), PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(
            r.cgroup_from_proc(7, "1:cpu:/a\n").unwrap_err().to_string(),
            "process 7: no cgroup v2 (\"0::\") entry in /proc/<pid>/cgroup: is cgroup v2 mounted?"
        );
        assert_eq!(
            r.cgroup_from_proc(7, "0::/../../x\n").unwrap_err().to_string(),
            "process 7: cgroup v2 path \"/../../x\" leaves the agent's cgroup namespace; run the agent in the host cgroup namespace"
        );
        assert_eq!(
            r.cgroup_from_proc(7, "0::x\n").unwrap_err().to_string(),
            "process 7: cgroup v2 path \"x\" is not absolute"
        );
        assert!(matches!(
            r.cgroup_from_proc(7, "0::/a/b (deleted)\n"),
            Err(CgroupError::NotFound { path }) if path == Path::new("/sys/fs/cgroup/a/b")
        ));

        // injectable proc root
        let t = tmp();
        fs::create_dir_all(t.path().join("42")).unwrap();
        fs::write(t.path().join("42/cgroup"), "0::/pod/c\n").unwrap();
        assert_eq!(r.cgroup_of_pid_in(t.path(), 42).unwrap(), PathBuf::from("/sys/fs/cgroup/pod/c"));
        let e = r.cgroup_of_pid_in(t.path(), 43).unwrap_err();
        assert_eq!(e.to_string(), "process 43 does not exist (exited?)");
        fs::create_dir_all(t.path().join("44/cgroup")).unwrap();
        assert!(matches!(r.cgroup_of_pid_in(t.path(), 44), Err(CgroupError::Io { .. })));
    }

    #[test]
    fn no_mount_message() {
        let e = CgroupError::NoCgroup2Mount { mountinfo: PathBuf::from(MOUNTINFO) };
        assert!(e.to_string().contains("driftguard needs cgroup v2"));
    }
}
