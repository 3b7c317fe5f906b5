//! Start-time proof of the layout read of overlay's upper dentry (docs/bpf.md, "Overlay upper
//! layer").
//!
//! Where no BTF describes `struct ovl_inode` the programs read the pointer right after
//! `struct inode`. Before the agent's programs enforce with that read, this module proves it on
//! the running kernel through the same programs: it loads a throw-away, unpinned copy of them
//! (its own maps, same enforcement path, same layout settings), mounts a small overlay of its
//! own (a tmpfs with lower, upper and work directories, mounted under the temp directory and
//! unmounted again), puts one file only in the lower layer and writes another through the
//! overlay (upper layer), and execs both from a throw-away child cgroup whose monitor-mode,
//! allow-list-only policy reports every exec with its classification. The lower-only file must
//! come out `image` and the written one `upper`. Exec is the one path through `classify_inode()`
//! that every kernel from 5.10 has, for BPF LSM and for the tracepoint fallback alike
//! (`BPF_PROG_TYPE_SYSCALL`, 5.14+, is not needed).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    open_and_load, programs, store_from_skel, EnforcementPath, Enforcer, FileKind, LayoutProof, MappingChecks,
    OverlayUpper,
};
use crate::cgroup::{self, CgroupRoot};
use crate::mountinfo::kernel_dev_of_st_dev;
use crate::policy::{ExecMemory, Mode, Policy, ProcessAccess, Rules};
use crate::provenance::Provenance;

/// How long the proof waits for the kernel's verdict events (a TCG VM is slow).
const EVENT_DEADLINE: Duration = Duration::from_secs(20);
const IMAGE_FILE: &str = "driftguard-proof-image";
const WRITTEN_FILE: &str = "driftguard-proof-written";

/// Prove that the programs of enforcement path `path`, reading the upper dentry as `ovl`
/// says, classify a lower-only file as image and a written file as upper on this kernel.
/// `Err`: why not, in one line (a wrong layout, or the proof could not run: both mean the
/// layout read cannot be trusted).
pub fn prove_overlay_layout(path: EnforcementPath, ovl: OverlayUpper) -> Result<(), String> {
    let scratch = Scratch::create()?;
    let result = prove_in(&scratch, path, ovl);
    let cleanup = scratch.remove();
    result?;
    cleanup
}

fn prove_in(scratch: &Scratch, path: EnforcementPath, ovl: OverlayUpper) -> Result<(), String> {
    // The same programs, unpinned: their own (empty) maps, so nothing of the node's policy
    // state is touched, and dropping them detaches them. bpf_d_path is not used (5.10 refuses
    // it in LSM hooks; the event path does not matter here).
    let mappings = if path == EnforcementPath::Lsm { MappingChecks::Lsm } else { MappingChecks::Off };
    let skel = open_and_load(None, &programs(path, mappings), false, ovl)
        .map_err(|e| format!("loading the proof programs: {}", super::first_line(&e.to_string())))?;
    let store = store_from_skel(&skel).map_err(|e| e.to_string())?;
    let mut enf = Enforcer {
        skel,
        links: Vec::new(),
        path,
        fallback_reason: None,
        pin_dir: None,
        store,
        lsm_d_path: false,
        ovl_upper: ovl,
        ovl_proof: LayoutProof::NotNeeded,
        mappings,
    };
    enf.attach().map_err(|e| format!("attaching the proof programs: {e}"))?;
    let mut events = enf.events().map_err(|e| format!("reading the proof programs' events: {e}"))?;

    let mut policy = Policy::with_mode(Mode::Monitor);
    // allow-list-only with an empty list: every exec is reported, with its file kind.
    policy.rules = Rules {
        drift: true,
        fileless: false,
        non_image: false,
        allowlist_only: true,
        exec_memory: ExecMemory::Off,
        process_access: ProcessAccess::Off,
    };
    let prov = Provenance { rootfs_dev: scratch.overlay_dev, rootfs_type: "overlay".into(), exec_mounts: Vec::new() };
    enf.store
        .set(scratch.cgroup_id, scratch.cgroup_level, &policy, &prov)
        .map_err(|e| format!("installing the proof policy: {e}"))?;

    let image_pid = scratch.exec_in_cgroup(&scratch.merged.join(IMAGE_FILE))?;
    let written_pid = scratch.exec_in_cgroup(&scratch.merged.join(WRITTEN_FILE))?;

    let mut image = None;
    let mut written = None;
    let deadline = Instant::now() + EVENT_DEADLINE;
    while image.is_none() || written.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Some(ev) = events.next_timeout(left) else { continue };
        if ev.pid == image_pid && image.is_none() {
            image = Some(ev.file);
        } else if ev.pid == written_pid && written.is_none() {
            written = Some(ev.file);
        }
    }
    let _ = enf.store.remove(scratch.cgroup_id);
    judge(image, written)
}

/// The verdict of the proof from the kinds the kernel reported for the two execs.
fn judge(image: Option<FileKind>, written: Option<FileKind>) -> Result<(), String> {
    let name = |k: Option<FileKind>| match k {
        Some(k) => k.as_str().to_string(),
        None => "no event".to_string(),
    };
    if image == Some(FileKind::Image) && written == Some(FileKind::Upper) {
        return Ok(());
    }
    Err(format!(
        "a lower-only file of a test overlay was classified {} (expected image) and a written one {} \
         (expected upper)",
        name(image),
        name(written)
    ))
}

/// The proof's overlay and cgroup; [`Scratch::remove`] undoes all of it.
struct Scratch {
    base: PathBuf,
    tmpfs_mounted: bool,
    merged: PathBuf,
    overlay_mounted: bool,
    overlay_dev: u64,
    cgroup: Option<PathBuf>,
    cgroup_id: u64,
    cgroup_level: u32,
}

impl Scratch {
    fn create() -> Result<Scratch, String> {
        // The temp directory, else the agent's state directory (an image without a writable
        // /tmp has its state directory on the host).
        let name = format!("driftguard-ovlproof-{}", unique_tag());
        let mut tried = Vec::new();
        let mut base = None;
        for dir in [std::env::temp_dir(), crate::node_state::state_dir()] {
            let b = dir.join(&name);
            match std::fs::create_dir(&b) {
                Ok(()) => {
                    base = Some(b);
                    break;
                }
                Err(e) => tried.push(format!("{}: {e}", b.display())),
            }
        }
        let base = base.ok_or_else(|| format!("no directory for the test overlay ({})", tried.join("; ")))?;
        let mut s = Scratch {
            merged: base.join("merged"),
            base,
            tmpfs_mounted: false,
            overlay_mounted: false,
            overlay_dev: 0,
            cgroup: None,
            cgroup_id: 0,
            cgroup_level: 0,
        };
        if let Err(e) = s.populate() {
            let _ = s.remove();
            return Err(e);
        }
        Ok(s)
    }

    fn populate(&mut self) -> Result<(), String> {
        // A tmpfs of our own: it has the xattrs overlay's upper layer needs, whatever the
        // temp directory is on (an initramfs, say), and unmounting it removes everything.
        mount("tmpfs", &self.base, "tmpfs", "mode=0700,size=64m")?;
        self.tmpfs_mounted = true;
        let (lower, upper, work) = (self.base.join("lower"), self.base.join("upper"), self.base.join("work"));
        for d in [&lower, &upper, &work, &self.merged] {
            std::fs::create_dir(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let program = proof_program()?;
        copy_executable(&program, &lower.join(IMAGE_FILE))?;
        let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
        mount("overlay", &self.merged, "overlay", &opts)?;
        self.overlay_mounted = true;
        copy_executable(&program, &self.merged.join(WRITTEN_FILE))?;
        if !upper.join(WRITTEN_FILE).exists() || upper.join(IMAGE_FILE).exists() {
            return Err("the test overlay's layers do not hold what was written".into());
        }
        let md = std::fs::metadata(&self.merged).map_err(|e| format!("stat {}: {e}", self.merged.display()))?;
        self.overlay_dev = kernel_dev_of_st_dev(std::os::unix::fs::MetadataExt::dev(&md));

        let root = CgroupRoot::detect().map_err(|e| format!("finding the cgroup v2 hierarchy: {e}"))?;
        let cg = root.path.join(format!("driftguard-ovlproof-{}", unique_tag()));
        let _ = std::fs::remove_dir(&cg);
        std::fs::create_dir(&cg).map_err(|e| format!("creating cgroup {}: {e}", cg.display()))?;
        self.cgroup = Some(cg.clone());
        self.cgroup_id = cgroup::cgroup_id(&cg).map_err(|e| e.to_string())?;
        self.cgroup_level = root.level(&cg).map_err(|e| e.to_string())?.max(1);
        Ok(())
    }

    /// Runs `file` in the proof cgroup (the child moves itself there before exec); returns its
    /// pid once it has exited. Its exit status does not matter: the exec is what is judged.
    fn exec_in_cgroup(&self, file: &Path) -> Result<u32, String> {
        let cg = self.cgroup.as_ref().ok_or("no proof cgroup")?;
        let procs = CString::new(cg.join("cgroup.procs").as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        for attempt in 0.. {
            let procs = procs.clone();
            let mut cmd = Command::new(file);
            cmd.arg("--version").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let err = std::io::Error::last_os_error();
                    libc::close(fd);
                    if n != 1 {
                        return Err(err);
                    }
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    let pid = child.id();
                    child.wait().map_err(|e| format!("waiting for {}: {e}", file.display()))?;
                    return Ok(pid);
                }
                // Another thread forked while our copy's descriptor was open (tests run in
                // parallel): that child closes it at its exec.
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 50 => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("running {} in the proof cgroup: {e}", file.display())),
            }
        }
        unreachable!("the loop returns")
    }

    fn remove(self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Some(cg) = &self.cgroup {
            // The children were reaped; the kernel may still be tearing the cgroup's last task
            // down for a moment (EBUSY).
            let mut ok = false;
            for _ in 0..100 {
                match std::fs::remove_dir(cg) {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => {
                        problems.push(format!("removing cgroup {}: {e}", cg.display()));
                        ok = true;
                        break;
                    }
                }
            }
            if !ok {
                problems.push(format!("removing cgroup {}: still busy", cg.display()));
            }
        }
        if self.overlay_mounted {
            if let Err(e) = umount(&self.merged) {
                problems.push(e);
            }
        }
        if self.tmpfs_mounted {
            if let Err(e) = umount(&self.base) {
                problems.push(e);
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            problems.push(format!("removing {}: {e}", self.base.display()));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("cleaning up the layout proof: {}", problems.join("; ")))
        }
    }
}

/// `<pid>-<n>`: proofs of one process may run at the same time (parallel tests, `check`).
fn unique_tag() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// A program that runs on this machine from any directory: `true` (coreutils, or busybox in a
/// minimal system), else our own executable.
fn proof_program() -> Result<PathBuf, String> {
    if let Some(p) = crate::host::find_in_path("true") {
        return Ok(p);
    }
    std::fs::read_link("/proc/self/exe").map_err(|e| format!("finding a program to run: {e}"))
}

/// Copies `from` to a new file `to` (mode 755) through a forked child, never through a
/// descriptor of this process: a write descriptor of ours that another thread's child inherits
/// at its fork (tests run trials in parallel threads) would make the exec of `to` fail with
/// ETXTBSY for as long as that child lives.
fn copy_executable(from: &Path, to: &Path) -> Result<(), String> {
    let bytes = std::fs::read(from).map_err(|e| format!("reading {}: {e}", from.display()))?;
    let target = cstr(to)?;
    // SAFETY: the child only makes async-signal-safe calls (open, write, close, _exit) on memory
    // prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            let fd =
                libc::open(target.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC, 0o755);
            if fd < 0 {
                libc::_exit(1);
            }
            let mut off = 0;
            while off < bytes.len() {
                let n = libc::write(fd, bytes[off..].as_ptr().cast(), bytes.len() - off);
                if n <= 0 {
                    libc::_exit(2);
                }
                off += n as usize;
            }
            if libc::fchmod(fd, 0o755) != 0 || libc::close(fd) != 0 {
                libc::_exit(3);
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child we forked.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    if rc != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("writing {} failed (child status {status:#x})", to.display()));
    }
    Ok(())
}

fn cstr(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{} contains a NUL byte", p.display()))
}

fn mount(source: &str, target: &Path, fstype: &str, data: &str) -> Result<(), String> {
    let (src, tgt, fs, dat) = (
        CString::new(source).map_err(|e| e.to_string())?,
        cstr(target)?,
        CString::new(fstype).map_err(|e| e.to_string())?,
        CString::new(data).map_err(|e| e.to_string())?,
    );
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, dat.as_ptr().cast()) };
    if rc != 0 {
        return Err(format!("mounting {fstype} on {} ({data}): {}", target.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

fn umount(target: &Path) -> Result<(), String> {
    let t = cstr(target)?;
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        return Err(format!("unmounting {}: {}", target.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_passes_only_for_image_then_upper() {
        assert!(judge(Some(FileKind::Image), Some(FileKind::Upper)).is_ok());
        let e = judge(Some(FileKind::Image), Some(FileKind::Image)).unwrap_err();
        assert!(e.contains("written one image (expected upper)"), "{e}");
        let e = judge(Some(FileKind::UpperUnknown), None).unwrap_err();
        assert!(e.contains("classified upper_unknown") && e.contains("no event"), "{e}");
    }
}
