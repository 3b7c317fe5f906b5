//! The demo's image (busybox on an overlay: lower layer, writable layer, work dir, merged root)
//! and the OCI runtime spec runc runs it with.
use super::*;

/// The demo's directories under `$TMPDIR/<id>`: the image (overlay lower layer), the writable
/// layer, the overlay's work dir, and the runc bundle whose `rootfs` is the merged overlay.
pub struct Layout {
    pub base: PathBuf,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub bundle: PathBuf,
    pub merged: PathBuf,
}

impl Layout {
    pub(super) fn under(base: PathBuf) -> Self {
        let bundle = base.join("bundle");
        Layout {
            lower: base.join("lower"),
            upper: base.join("upper"),
            work: base.join("work"),
            merged: bundle.join("rootfs"),
            bundle,
            base,
        }
    }
}

/// A busybox image in `lower`: `/bin/busybox` and the [`APPLETS`] linked to it, the usual empty
/// directories, a world-writable `/tmp`.
pub fn build_image(lower: &Path, busybox: &str) -> Result<()> {
    let bin = lower.join("bin");
    let mkdir = |d: &Path| fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())));
    let chmod = |p: &Path, mode: u32| {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(io(format!("chmod {}", p.display())))
    };
    mkdir(&bin)?;
    fs::copy(busybox, bin.join("busybox")).map_err(io(format!("copying {busybox}")))?;
    chmod(&bin.join("busybox"), 0o755)?;
    for a in APPLETS {
        symlink("busybox", bin.join(a)).map_err(io(format!("linking {}", bin.join(a).display())))?;
    }
    for d in ["tmp", "proc", "dev", "sys", "etc", "root"] {
        mkdir(&lower.join(d))?;
    }
    chmod(&lower.join("tmp"), 0o1777)?;
    let hostname = lower.join("etc/hostname");
    fs::write(&hostname, "driftguard-demo\n").map_err(io(format!("writing {}", hostname.display())))
}

pub(super) fn cstr(p: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|e| Error::Io { context: format!("path {}", p.display()), source: e.into() })
}

/// Mount an overlay of `lower` (read-only) and `upper` (writable) on `merged`.
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Result<()> {
    let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    let (src, fstype) = (c"overlay", c"overlay");
    let target = cstr(merged)?;
    let data = std::ffi::CString::new(opts)
        .map_err(|e| Error::Io { context: "overlay mount options".into(), source: e.into() })?;
    // SAFETY: mount(2) with valid NUL-terminated strings.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
    if rc != 0 {
        return Err(Error::Mount { target: merged.to_path_buf(), source: std::io::Error::last_os_error() });
    }
    Ok(())
}

/// The container's runtime spec: busybox `sleep 3600` as root with Docker's default capabilities,
/// no seccomp, its own pid/mount/ipc/uts/network namespaces. Fields the `oci-spec` builders
/// would fill with their own defaults (rlimits, resources, annotations, inheritable and ambient
/// capabilities) are left out, as runc's minimal spec does.
pub fn runtime_spec(rootfs: &Path, cgroups_path: &str, hostname: &str) -> Result<Spec> {
    spec(rootfs, cgroups_path, hostname).map_err(Error::Spec)
}

pub(super) fn spec(rootfs: &Path, cgroups_path: &str, hostname: &str) -> Result<Spec, oci_spec::OciSpecError> {
    use oci_spec::runtime::Capability::*;
    let caps: Capabilities =
        [Chown, DacOverride, Fowner, Fsetid, Kill, Setgid, Setuid, Setpcap, NetBindService, SysChroot, AuditWrite]
            .into_iter()
            .collect();
    let mut capabilities =
        LinuxCapabilitiesBuilder::default().bounding(caps.clone()).effective(caps.clone()).permitted(caps).build()?;
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(["/bin/sleep", "3600"].map(String::from).to_vec())
        .env(["PATH=/bin", "HOME=/root"].map(String::from).to_vec())
        .cwd("/")
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()?;
    process.set_rlimits(None);
    let mount = |dest: &str, typ: &str, source: &str, options: &[&str]| {
        let m = MountBuilder::default().destination(dest).typ(typ).source(source);
        let m =
            if options.is_empty() { m } else { m.options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>()) };
        m.build()
    };
    let mounts = vec![
        mount("/proc", "proc", "proc", &[])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"])?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])?,
    ];
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
    .collect::<Result<Vec<_>, _>>()?;
    let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut linux = LinuxBuilder::default()
        .cgroups_path(cgroups_path)
        .namespaces(namespaces)
        .masked_paths(strings(&["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"]))
        .readonly_paths(strings(&["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]))
        .build()?;
    linux.set_resources(None);
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(RootBuilder::default().path(rootfs).readonly(false).build()?)
        .hostname(hostname)
        .mounts(mounts)
        .linux(linux)
        .build()?;
    spec.set_annotations(None);
    Ok(spec)
}
