//! The pins on bpffs: what is pinned (and which path), the pinned ring buffer for readers,
//! preparing and checking the pin dir, and `unload`.
use super::*;

pub(super) const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Open the pinned ring buffer (for a reader in another process, e.g. `driftguard events`
/// when no agent is consuming).
pub fn open_pinned_events(pin_dir: &Path) -> Result<EventStream> {
    let p = pin_dir.join(store::MAP_EVENTS);
    let h = MapHandle::from_pinned_path(&p).map_err(|e| match e.kind() {
        libbpf_rs::ErrorKind::NotFound => {
            Error::NotPinned { dir: pin_dir.to_path_buf(), detail: format!("{} is missing", p.display()) }
        }
        libbpf_rs::ErrorKind::PermissionDenied => Error::NotPermitted(format!("opening {}: {e}", p.display())),
        _ => Error::Map { map: store::MAP_EVENTS, op: "open pinned", source: e },
    })?;
    EventStream::spawn(h)
}

/// Which enforcement path the pinned links implement, if any. The exec and mapping hooks decide
/// (an agent from before `dg_file_open` pinned only those three).
pub fn pinned_path(pin_dir: &Path) -> Option<EnforcementPath> {
    if LSM_PROGS[..3].iter().all(|n| pin_dir.join(format!("link_{n}")).exists()) {
        Some(EnforcementPath::Lsm)
    } else if TP_PROGS.iter().all(|n| pin_dir.join(format!("link_{n}")).exists()) {
        Some(EnforcementPath::TracepointKill)
    } else {
        None
    }
}

/// What [`unload`] removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UnloadReport {
    /// Pins removed (links first, then maps), then the pin dir itself.
    pub removed: Vec<PathBuf>,
}

/// Detach everything pinned under `pin_dir` and delete the pins. Enforcement
/// stops for every container until an agent loads again.
pub fn unload(pin_dir: &Path) -> Result<UnloadReport> {
    let mut report = UnloadReport::default();
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(Error::io(format!("reading {}", pin_dir.display()), e)),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    // Links first: programs stop before the maps they use disappear.
    paths.sort_by_key(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("link_")));
    for p in paths {
        std::fs::remove_file(&p).map_err(|e| Error::io(format!("removing {}", p.display()), e))?;
        report.removed.push(p);
    }
    std::fs::remove_dir(pin_dir).map_err(|e| Error::io(format!("removing {}", pin_dir.display()), e))?;
    report.removed.push(pin_dir.to_path_buf());
    Ok(report)
}

/// Mode bpffs is mounted with when driftguard mounts it: only root may enter it.
pub const BPFFS_MOUNT_MODE: u32 = 0o700;

pub(super) fn prepare_pin_dir(dir: &Path) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    if !is_bpffs(parent) && parent == Path::new("/sys/fs/bpf") {
        // systemd mounts it on most distributions; containers and minimal hosts may not. Without
        // a mode, bpffs's root is world-writable (sticky) and anyone may create entries in it.
        tracing::info!(mode = format!("{BPFFS_MOUNT_MODE:04o}"), "mounting bpffs on /sys/fs/bpf");
        let (src, target, data) = (c"bpf", c"/sys/fs/bpf", c"mode=0700");
        // SAFETY: mount(2) with valid NUL-terminated strings.
        unsafe { libc::mount(src.as_ptr(), target.as_ptr(), src.as_ptr(), 0, data.as_ptr().cast()) };
    }
    if !is_bpffs(parent) {
        return Err(Error::NoBpffs(parent.to_path_buf()));
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        // 0700: pins (0600) in a directory only root can change. Components created here get the
        // same mode; the check below covers the ones that already existed.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("creating pin directory {}", dir.display()), e))?;
    }
    check_pin_dir(dir)
}

/// Refuses a pin directory that a user other than root could change, or that sits below such a
/// directory: every component from `/` down to `dir` must be a real directory (no symlink) owned
/// by root and not writable by group or others. A root-owned directory with the sticky bit
/// (`drwxrwxrwt`, what bpffs's root is when mounted without a mode) is accepted *above* the pin
/// directory: others may create entries there, but the sticky bit keeps them from removing or
/// renaming the root-owned pin directory. The pin directory itself must not be writable by
/// anyone but root, sticky or not: entries in it are the pins.
pub fn check_pin_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut components: Vec<&Path> = dir.ancestors().collect();
    components.reverse();
    for path in components {
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| Error::io(format!("checking pin directory component {}", path.display()), e))?;
        let mode = meta.mode() & 0o7777;
        let unsafe_dir = |problem| Error::UnsafePinDir {
            pin_dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            problem,
            uid: meta.uid(),
            mode,
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Err(unsafe_dir("is a symbolic link"));
        }
        if !ft.is_dir() {
            return Err(unsafe_dir("is not a directory"));
        }
        if meta.uid() != 0 {
            return Err(unsafe_dir("is not owned by root"));
        }
        let writable_by_others = mode & 0o022 != 0;
        let sticky = mode & 0o1000 != 0;
        if writable_by_others && (path == dir || !sticky) {
            return Err(unsafe_dir("is writable by group or others"));
        }
    }
    Ok(())
}

/// Is `p` on a bpf filesystem (where pins can live)?
pub fn is_bpffs(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else { return false };
    let mut st = MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: statfs with a valid path and output buffer.
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: statfs succeeded and filled the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between architectures
    let magic = st.f_type as i64;
    magic == BPF_FS_MAGIC
}
