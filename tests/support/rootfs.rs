//! Container root filesystems for the runtime trials: a busybox image, the overlay that gives it
//! a writable layer (the demo's own mount, `driftguard::demo::mount_overlay`), a binary dropped
//! into that layer, and a scratch directory that unmounts and removes it all. The one copy of
//! these for tests/support/runc_nri.rs (agent and adversarial trials) and
//! oci-hooks/tests/runtimes.rs (runc and podman with the OCI hook).
//!
//! Include with `#[path = "support/rootfs.rs"] mod rootfs;` (from oci-hooks:
//! `#[path = "../../tests/support/rootfs.rs"]`).
#![allow(dead_code)]

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The statically linked busybox the images are made of (Debian's busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";
/// Applets linked in an image's /bin.
pub const APPLETS: [&str; 8] = ["sh", "true", "sleep", "cat", "cp", "ls", "echo", "id"];

/// Why the images cannot be built here, if they cannot.
pub fn busybox_missing() -> Option<String> {
    (!Path::new(BUSYBOX).exists()).then(|| format!("busybox-static not installed ({BUSYBOX})"))
}

/// A busybox image in `dir`: /bin/busybox and [`APPLETS`], the usual directories plus
/// `extra_dirs` (mount points of volumes), and root in /etc/passwd and /etc/group.
pub fn build_image(dir: &Path, extra_dirs: &[&str]) -> Result<(), String> {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"].iter().chain(extra_dirs) {
        let p = dir.join(d);
        fs::create_dir_all(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
    }
    install_busybox(&dir.join("bin/busybox"))?;
    for a in APPLETS {
        symlink("busybox", dir.join("bin").join(a)).map_err(|e| format!("linking applet {a}: {e}"))?;
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").map_err(|e| e.to_string())?;
    fs::write(dir.join("etc/group"), "root:x:0:\n").map_err(|e| e.to_string())?;
    Ok(())
}

/// [`build_image`] in `<dir>/lower` as the lower layer of an overlay (upper and work dirs in
/// `dir`) mounted at `merged`.
pub fn overlay_rootfs(dir: &Path, merged: &Path, extra_dirs: &[&str]) -> Result<(), String> {
    let (lower, upper, work) = (dir.join("lower"), dir.join("upper"), dir.join("work"));
    build_image(&lower, extra_dirs)?;
    for d in [&upper, &work, &merged.to_path_buf()] {
        fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    driftguard::demo::mount_overlay(&lower, &upper, &work, merged).map_err(|e| e.to_string())
}

/// Write a busybox into the container's writable layer at `inside` (through the merged dir
/// `rootfs`, as a process in the container would): an upper-layer file, i.e. drift.
pub fn drop_binary(rootfs: &Path, inside: &str) -> Result<(), String> {
    let p = rootfs.join(inside.trim_start_matches('/'));
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    install_busybox(&p).map_err(|e| format!("dropping {inside}: {e}"))
}

fn install_busybox(to: &Path) -> Result<(), String> {
    fs::copy(BUSYBOX, to).map_err(|e| format!("copying {BUSYBOX} to {}: {e}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}

/// Lazy unmount (`umount -l`): whatever still holds the mount does not keep the test from
/// removing its directories.
pub fn umount(p: &Path) {
    if let Ok(c) = CString::new(p.as_os_str().as_bytes()) {
        // SAFETY: umount2 with a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name no other trial of any test process uses: `<prefix>-<pid>-<n>-<name>`.
pub fn unique(prefix: &str, name: &str) -> String {
    format!("{prefix}-{}-{}-{name}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))
}

/// A directory under `$DRIFTGUARD_TEST_TMPDIR` (else the temp dir), removed on drop after
/// unmounting `<dir>/merged`.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(prefix: &str, name: &str) -> Result<Scratch, String> {
        let base = std::env::var_os("DRIFTGUARD_TEST_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let p = base.join(unique(prefix, name));
        fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(Scratch(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let merged = self.0.join("merged");
        if merged.exists() {
            umount(&merged);
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}
