//! What tests/kernel.rs and tests/adversarial.rs share: the requirements, the loaded
//! enforcement (one per test process), a minimal container (overlay rootfs + cgroup v2 + chroot),
//! assertions on exec outcomes and events, and the re-run of a whole suite inside the VM kernels.
//!
//! Included with `#[path = "support/bpf_suite.rs"] mod suite;` next to `mod vm;`.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use driftguard::enforcer::{
    Action, EnforcementPath, Enforcer, EnforcerOptions, Event, Hook, MappingChecks, PolicyStore, Rule,
};
use driftguard::policy::{Mode, Policy};
use driftguard::provenance::{self, Provenance};
use libtest_mimic::Failed;

use crate::vm;
pub use crate::vm::Gate;

pub type R = Result<(), Failed>;

pub use driftguard::demo::BUSYBOX_CANDIDATES;
pub const DYN_BIN_CANDIDATES: [&str; 2] = ["/usr/bin/true", "/bin/true"];
pub const LDSO: &str = "/lib64/ld-linux-x86-64.so.2";

// ---------------------------------------------------------------------------
// Environment

/// Why the suite cannot run on this machine, if it cannot.
pub fn host_requirements() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (BPF, mounts, cgroups)".into());
    }
    if !driftguard::enforcer::has_vmlinux_btf() {
        return Some("kernel has no BTF".into());
    }
    if busybox().is_none() {
        return Some("busybox-static not installed".into());
    }
    if cgroup2_root().is_none() {
        return Some("no cgroup v2 hierarchy mounted".into());
    }
    None
}

/// Which path the suite must see: `DG_EXPECT_PATH=lsm` in the VM; on the host whatever the
/// loader picks (reported by the `enforcement_path_is_the_expected_one` trials).
pub fn harness_expectation() -> Option<EnforcementPath> {
    match std::env::var("DG_EXPECT_PATH").as_deref() {
        Ok("lsm") => Some(EnforcementPath::Lsm),
        Ok("tracepoint_kill") => Some(EnforcementPath::TracepointKill),
        _ => None,
    }
}

pub fn busybox() -> Option<&'static str> {
    BUSYBOX_CANDIDATES.into_iter().find(|p| Path::new(p).exists())
}

pub fn bb() -> Result<&'static str, Failed> {
    busybox().ok_or_else(|| Failed::from("busybox missing"))
}

pub fn dyn_bin() -> Option<&'static str> {
    DYN_BIN_CANDIDATES.into_iter().find(|p| Path::new(p).exists())
}

pub fn cgroup2_root() -> Option<PathBuf> {
    let mi = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

pub fn cgroup_id(p: &Path) -> Result<u64, Failed> {
    Ok(fs::metadata(p).map_err(|e| format!("stat {}: {e}", p.display()))?.ino())
}

pub fn es(e: impl std::fmt::Display) -> Failed {
    Failed::from(e.to_string())
}

// ---------------------------------------------------------------------------
// Trials: gate and VM re-run

/// True inside the VM re-run.
pub fn in_vm() -> bool {
    std::env::var_os("DG_IN_VM").is_some()
}

/// Re-run this test binary inside kernel `k` with BPF LSM expected, every trial required.
/// `files` go into the guest (busybox and the dynamic binary are added here); `must_run`
/// trials have to appear in the guest's output; nothing may be ignored there.
pub fn run_suite_in_vm(
    k: &vm::Kernel,
    mut files: Vec<(PathBuf, PathBuf)>,
    env: &[(&str, &str)],
    must_run: &[&str],
    timeout: Duration,
) -> R {
    let exe = std::env::current_exe().map_err(es)?;
    for p in BUSYBOX_CANDIDATES.iter().chain(DYN_BIN_CANDIDATES.iter()) {
        if Path::new(p).exists() {
            files.push((PathBuf::from(p), PathBuf::from(p)));
        }
    }
    let mut guest_env: Vec<(String, String)> = vec![
        ("DG_IN_VM".into(), "1".into()),
        ("DG_EXPECT_PATH".into(), "lsm".into()),
        ("DRIFTGUARD_REQUIRE_ALL".into(), "1".into()),
        ("RUST_BACKTRACE".into(), "1".into()),
    ];
    guest_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut args: Vec<String> = vec!["--test-threads=1".into(), "--color=never".into()];
    // Development aid: `DG_VM_FILTER=exec_memory` runs only the matching trials in the guest
    // (the check that every trial of the suite ran is then skipped). Never set by tests/run.sh.
    let filter = std::env::var("DG_VM_FILTER").ok().filter(|f| !f.is_empty());
    args.extend(filter.clone());
    let req = vm::VmRequest { exe, args, env: guest_env, files, timeout, memory_mb: 1536 };
    let t = Instant::now();
    let res = vm::run_in_vm(k, &req).map_err(|e| format!("VM {} ({}): {e}", k.name, k.version))?;
    println!("--- kernel {} ({}) in {:.1}s ---\n{}", k.name, k.version, t.elapsed().as_secs_f64(), res.output);
    let failed: Vec<&str> = res
        .output
        .lines()
        .filter_map(|l| {
            l.strip_prefix("test ").filter(|r| r.ends_with("... FAILED")).and_then(|r| r.split_whitespace().next())
        })
        .collect();
    if res.exit_code != 0 {
        return Err(format!(
            "suite failed inside the {} VM (exit {}): failed trials {failed:?}; output above",
            k.name, res.exit_code
        )
        .into());
    }
    if filter.is_some() {
        return Ok(());
    }
    res.check_trials(must_run).map_err(Failed::from)?;
    res.check_limits(&k.name).map_err(Failed::from)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The enforcement, loaded once per test process

pub struct Harness {
    pub store: PolicyStore,
    pub path: EnforcementPath,
    pub fallback_reason: Option<String>,
    pub mappings: MappingChecks,
    pub events: Arc<Mutex<Vec<Event>>>,
}

impl Harness {
    /// A harness over `enf`'s maps, with a thread collecting its events.
    pub fn of(enf: &Enforcer) -> Result<Harness, String> {
        let store = enf.store().try_clone().map_err(|e| e.to_string())?;
        let mut stream = enf.events().map_err(|e| e.to_string())?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            while let Some(ev) = stream.next_timeout(Duration::from_secs(3600)) {
                if let Ok(mut v) = sink.lock() {
                    v.push(ev);
                }
            }
        });
        Ok(Harness {
            store,
            path: enf.path(),
            fallback_reason: enf.fallback_reason().map(str::to_string),
            mappings: enf.mapping_checks(),
            events,
        })
    }
}

pub fn harness() -> Result<&'static Harness, Failed> {
    static H: OnceLock<Result<Harness, String>> = OnceLock::new();
    let h = H.get_or_init(|| {
        let enf = Enforcer::load(&EnforcerOptions { pin_dir: None, force_fallback: false, fallback_mappings: true })
            .map_err(|e| format!("{e}"))?;
        let h = Harness::of(&enf)?;
        // The programs stay attached for the whole test process.
        std::mem::forget(enf);
        Ok(h)
    });
    h.as_ref().map_err(|e| Failed::from(format!("loading the enforcer failed: {e}")))
}

pub fn lsm(h: &Harness) -> bool {
    h.path == EnforcementPath::Lsm
}

/// Whether mappings are checked: by BPF LSM, or by the fallback's opt-in syscall tracepoints
/// (the suite's harness opts in).
pub fn sees_mappings(h: &Harness) -> bool {
    h.mappings != MappingChecks::Off
}

/// The fallback's mapping checks without `bpf_find_vma` (before 5.17): every mprotect to
/// PROT_EXEC under the memory rule is killed as anonymous memory, `mapping_unknown` (fail closed).
pub fn mprotect_blind(h: &Harness) -> bool {
    matches!(h.mappings, MappingChecks::Tracepoints { find_vma: false, .. })
}

/// The hook that sees a mapping on this path: the LSM hook, or the fallback's syscall tracepoint.
pub fn mapping_hook(h: &Harness, lsm_hook: Hook) -> Hook {
    match (h.path, lsm_hook) {
        (EnforcementPath::TracepointKill, Hook::MmapFile) => Hook::SysMmap,
        (EnforcementPath::TracepointKill, Hook::FileMprotect) => Hook::SysMprotect,
        (_, hook) => hook,
    }
}

// ---------------------------------------------------------------------------
// A minimal container: overlay rootfs + cgroup + chroot.

pub static SEQ: AtomicU32 = AtomicU32::new(0);

/// The image (overlay lower layer): busybox as `/bin/busybox`, `tool`, `tool2`, `tool3`,
/// `denied`, `unlisted`, `true`; `/bin/noexec` (mode 644); `/bin/sh` -> busybox;
/// `/bin/link` -> denied; `/bin/image-script.sh`; `/bin/evil-interp.sh` (`#!/tmp/sh`);
/// `/usr/bin/dyn` (a dynamic binary) with its ld.so and libc. Suites add more through
/// [`Container::with_image`].
pub struct Container {
    pub dir: tempfile::TempDir,
    pub merged: PathBuf,
    pub cgroup: PathBuf,
    pub cgid: u64,
    pub level: u32,
    pub children: Vec<PathBuf>,
    pub extra_mounts: Vec<PathBuf>,
    /// Another store the policy was installed in (removed on drop too).
    pub store: Option<PolicyStore>,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Exited(i32, String),
    Signaled(i32),
    ExecFailed(i32),
}

pub fn copy_exec(from: impl AsRef<Path>, to: &Path) -> R {
    copy_with_mode(from.as_ref(), to, 0o755)
}

/// Copies `from` to `to` (created, or rewritten in place) and sets `mode`, through a child
/// process: see [`write_exec`] for why.
pub fn copy_with_mode(from: &Path, to: &Path, mode: u32) -> R {
    let bytes = fs::read(from).map_err(|e| format!("read {}: {e}", from.display()))?;
    write_exec(to, &bytes, mode)
}

pub fn write_script(p: &Path, body: &str) -> R {
    write_exec(p, body.as_bytes(), 0o755)
}

/// Writes `bytes` to `to` (created, or rewritten in place: same inode) and sets `mode`, through a
/// child process, never through a descriptor of this process. Trials run in parallel threads and
/// some fork long-lived children ([`fork_in_cgroup`]) that keep a copy of every descriptor open
/// at the fork, a write descriptor to another trial's file included, until they exit; exec of a
/// file that anyone has open for writing fails with ETXTBSY ("Text file busy", seen in CI).
pub fn write_exec(to: &Path, bytes: &[u8], mode: u32) -> R {
    use std::io::Write;
    let mut child = Command::new("/bin/sh")
        .args(["-c", "cat > \"$0\" && chmod \"$1\" \"$0\""])
        .arg(to)
        .arg(format!("{mode:o}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("writing {}: sh: {e}", to.display()))?;
    let written = child.stdin.take().ok_or("child stdin")?.write_all(bytes);
    let out = child.wait_with_output().map_err(|e| format!("writing {}: {e}", to.display()))?;
    if !out.status.success() || written.is_err() {
        return Err(format!(
            "writing {}: {:?} {written:?} {}",
            to.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

impl Container {
    pub fn new(tag: &str) -> Result<Self, Failed> {
        Self::with_image(tag, |_| Ok(()))
    }

    /// Like [`Container::new`]; `extra` adds files to the image (its argument is the lower dir).
    pub fn with_image(tag: &str, extra: impl FnOnce(&Path) -> R) -> Result<Self, Failed> {
        let bb = bb()?;
        let dir = tempfile::Builder::new().prefix(&format!("dg-{tag}-")).tempdir().map_err(es)?;
        let (lower, upper, work, merged) =
            (dir.path().join("lower"), dir.path().join("upper"), dir.path().join("work"), dir.path().join("merged"));
        for d in [&lower, &upper, &work, &merged] {
            fs::create_dir_all(d).map_err(es)?;
        }
        for d in ["bin", "tmp", "mnt", "vol", "lib64", "lib/x86_64-linux-gnu", "usr/bin", "usr/lib"] {
            fs::create_dir_all(lower.join(d)).map_err(es)?;
        }
        fs::set_permissions(lower.join("tmp"), fs::Permissions::from_mode(0o1777)).map_err(es)?;
        copy_exec(bb, &lower.join("bin/busybox"))?;
        for name in ["tool", "tool2", "tool3", "denied", "unlisted", "true"] {
            copy_exec(bb, &lower.join("bin").join(name))?;
        }
        copy_with_mode(Path::new(bb), &lower.join("bin/noexec"), 0o644)?;
        symlink("busybox", lower.join("bin/sh")).map_err(es)?;
        symlink("denied", lower.join("bin/link")).map_err(es)?;
        write_script(&lower.join("bin/image-script.sh"), "#!/bin/sh\necho image-script-ran\n")?;
        write_script(&lower.join("bin/evil-interp.sh"), "#!/tmp/sh\necho evil-interp-ran\n")?;
        // A dynamic binary and its loader, for the ld.so cases.
        if let Some(d) = dyn_bin() {
            copy_exec(d, &lower.join("usr/bin/dyn"))?;
            let ldso = fs::canonicalize(LDSO).map_err(|e| format!("{LDSO}: {e}"))?;
            copy_exec(&ldso, &lower.join("lib64/ld-linux-x86-64.so.2"))?;
            for lib in ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"] {
                if Path::new(lib).exists() {
                    copy_exec(lib, &lower.join("lib/x86_64-linux-gnu/libc.so.6"))?;
                    break;
                }
            }
        }
        extra(&lower)?;
        let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
        mount("overlay", &merged, "overlay", &opts)?;

        let root = cgroup2_root().ok_or("no cgroup2")?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let cgroup = root.join(format!("dg-test-{}-{n}-{tag}", std::process::id()));
        fs::create_dir(&cgroup).map_err(|e| format!("mkdir {}: {e}", cgroup.display()))?;
        let cgid = cgroup_id(&cgroup)?;
        let level = cgroup.strip_prefix(&root).map(|p| p.components().count() as u32).unwrap_or(1);
        Ok(Container { dir, merged, cgroup, cgid, level, children: Vec::new(), extra_mounts: Vec::new(), store: None })
    }

    /// Write a file through the overlay (lands in the upper layer).
    pub fn drop_file(&self, inside: &str, from: &str) -> R {
        copy_exec(from, &self.host_path(inside))
    }

    pub fn host_path(&self, inside: &str) -> PathBuf {
        self.merged.join(inside.trim_start_matches('/'))
    }

    pub fn host_str(&self, inside: &str) -> String {
        self.host_path(inside).display().to_string()
    }

    /// Whether `inside` exists in the upper (written) layer.
    pub fn in_upper(&self, inside: &str) -> bool {
        self.dir.path().join("upper").join(inside.trim_start_matches('/')).exists()
    }

    pub fn child_cgroup(&mut self, name: &str) -> Result<PathBuf, Failed> {
        let p = self.cgroup.join(name);
        fs::create_dir(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
        self.children.push(p.clone());
        Ok(p)
    }

    pub fn install(&self, h: &Harness, policy: &Policy) -> R {
        h.store.set(self.cgid, self.level, policy, &self.provenance(policy)?).map_err(es)
    }

    /// The container's provenance as the agent would find it: its root is the overlay at
    /// `merged`; `policy.exec_volumes` are mount points below it.
    pub fn provenance(&self, policy: &Policy) -> Result<Provenance, Failed> {
        let mi = fs::read_to_string("/proc/self/mountinfo").map_err(es)?;
        provenance::resolve(&mi, Path::new("/proc/self/mountinfo"), &self.merged, policy).map_err(es)
    }

    /// Run `argv` inside the container (joins `cgroup`, chroots into merged when `chroot`,
    /// chdir `cwd`, environment `PATH=/bin:/usr/bin` plus `env`), retrying ETXTBSY: a file
    /// just written can still be open for writing in a child another test thread forked at
    /// that moment (until that child execs).
    pub fn run_full(
        &self,
        cgroup: &Path,
        cwd: &str,
        argv0: &str,
        argv: &[&str],
        chroot: bool,
        env: &[(&str, &str)],
    ) -> Result<Outcome, Failed> {
        for _ in 0..50 {
            match self.run_once(cgroup, cwd, argv0, argv, chroot, env)? {
                Outcome::ExecFailed(libc::ETXTBSY) => std::thread::sleep(Duration::from_millis(20)),
                other => return Ok(other),
            }
        }
        Err("exec kept failing with ETXTBSY".into())
    }

    fn run_once(
        &self,
        cgroup: &Path,
        cwd: &str,
        argv0: &str,
        argv: &[&str],
        chroot: bool,
        env: &[(&str, &str)],
    ) -> Result<Outcome, Failed> {
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(cgroup.join("cgroup.procs"))
            .map_err(|e| format!("open cgroup.procs: {e}"))?;
        use std::os::fd::IntoRawFd;
        let procs_fd = procs.into_raw_fd();
        let root = CString::new(self.merged.as_os_str().as_bytes()).map_err(es)?;
        let cwd = CString::new(cwd).map_err(es)?;
        let mut cmd = Command::new(argv[0]);
        cmd.arg0(argv0).args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env_clear().env("PATH", "/bin:/usr/bin");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: only async-signal-safe syscalls on memory prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(procs_fd, b"0\n".as_ptr().cast(), 2) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if chroot && libc::chroot(root.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::chdir(cwd.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let res = cmd.output();
        // SAFETY: closing the fd we own.
        unsafe { libc::close(procs_fd) };
        match res {
            Ok(out) => {
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                if let Some(sig) = out.status.signal() {
                    Ok(Outcome::Signaled(sig))
                } else {
                    Ok(Outcome::Exited(out.status.code().unwrap_or(-1), text))
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(errno) => Ok(Outcome::ExecFailed(errno)),
                None => Err(format!("spawn failed: {e}").into()),
            },
        }
    }

    /// Start `argv` chrooted in the container and in its cgroup, in the background.
    pub fn spawn(&self, argv: &[&str]) -> Result<std::process::Child, Failed> {
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(self.cgroup.join("cgroup.procs"))
            .map_err(|e| format!("open cgroup.procs: {e}"))?;
        use std::os::fd::AsRawFd;
        let procs_fd = procs.as_raw_fd();
        let root = CString::new(self.merged.as_os_str().as_bytes()).map_err(es)?;
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd.env_clear().env("PATH", "/bin:/usr/bin");
        // SAFETY: only async-signal-safe syscalls on memory prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(procs_fd, b"0\n".as_ptr().cast(), 2) < 0 || libc::chroot(root.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("spawning {argv:?} in the container: {e}"))?;
        drop(procs);
        Ok(child)
    }

    /// [`Container::run_full`] without extra environment.
    pub fn run_in(
        &self,
        cgroup: &Path,
        cwd: &str,
        argv0: &str,
        argv: &[&str],
        chroot: bool,
    ) -> Result<Outcome, Failed> {
        self.run_full(cgroup, cwd, argv0, argv, chroot, &[])
    }

    /// Run `argv` chrooted in the container, cwd `/`.
    pub fn run(&self, argv0: &str, argv: &[&str]) -> Result<Outcome, Failed> {
        self.run_full(&self.cgroup, "/", argv0, argv, true, &[])
    }

    /// A busybox shell inside the container running `script`.
    pub fn sh(&self, script: &str) -> Result<Outcome, Failed> {
        self.run("sh", &["/bin/busybox", "-c", script])
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Ok(h) = harness() {
            let _ = h.store.remove(self.cgid);
        }
        if let Some(s) = &self.store {
            let _ = s.remove(self.cgid);
        }
        for m in self.extra_mounts.iter().rev() {
            umount(m);
        }
        umount(&self.merged);
        for c in self.children.iter().rev() {
            let _ = fs::remove_dir(c);
        }
        let _ = fs::remove_dir(&self.cgroup);
    }
}

pub fn mount(src: &str, target: &Path, fstype: &str, data: &str) -> R {
    mount_flags(src, target, fstype, data, 0)
}

pub fn mount_flags(src: &str, target: &Path, fstype: &str, data: &str, flags: libc::c_ulong) -> R {
    let c = |s: &[u8]| CString::new(s).map_err(es);
    let (src, tgt, fst, dat) =
        (c(src.as_bytes())?, c(target.as_os_str().as_bytes())?, c(fstype.as_bytes())?, c(data.as_bytes())?);
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fst.as_ptr(), flags, dat.as_ptr().cast()) };
    if rc != 0 {
        return Err(format!("mount {fstype} on {}: {}", target.display(), std::io::Error::last_os_error()).into());
    }
    Ok(())
}

pub fn umount(target: &Path) {
    if let Ok(t) = CString::new(target.as_os_str().as_bytes()) {
        // SAFETY: valid path string.
        unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    }
}

// ---------------------------------------------------------------------------
// Assertions

pub fn enforce() -> Policy {
    Policy::with_mode(Mode::Enforce)
}

pub fn assert_runs(out: &Outcome, what: &str) -> R {
    match out {
        Outcome::Exited(0, _) => Ok(()),
        other => Err(format!("{what}: expected to run and exit 0, got {other:?}").into()),
    }
}

/// The exec itself was stopped: EPERM (LSM) or SIGKILL (fallback).
pub fn assert_denied(h: &Harness, out: &Outcome, what: &str) -> R {
    match (h.path, out) {
        (EnforcementPath::Lsm, Outcome::ExecFailed(libc::EPERM)) => Ok(()),
        (EnforcementPath::TracepointKill, Outcome::Signaled(libc::SIGKILL)) => Ok(()),
        (p, other) => Err(format!(
            "{what}: expected {} on the {} path, got {other:?}",
            if p == EnforcementPath::Lsm { "EPERM" } else { "SIGKILL" },
            p.as_str()
        )
        .into()),
    }
}

/// A shell that exec'd a denied file: LSM -> the shell reports EPERM (exit 126);
/// fallback -> the shell's child is SIGKILLed (137).
pub fn assert_shell_denied(h: &Harness, out: &Outcome, what: &str) -> R {
    match (h.path, out) {
        // busybox sh reports EPERM as "Operation not permitted", others say "Permission denied".
        (EnforcementPath::Lsm, Outcome::Exited(126, t))
            if t.to_lowercase().contains("operation not permitted")
                || t.to_lowercase().contains("permission denied") =>
        {
            Ok(())
        }
        (EnforcementPath::Lsm, Outcome::ExecFailed(libc::EPERM)) => Ok(()),
        (EnforcementPath::TracepointKill, Outcome::Exited(137, _))
        | (EnforcementPath::TracepointKill, Outcome::Signaled(9)) => Ok(()),
        (p, other) => {
            Err(format!("{what}: expected the exec to be stopped on the {} path, got {other:?}", p.as_str()).into())
        }
    }
}

pub fn denied_action(h: &Harness) -> Action {
    match h.path {
        EnforcementPath::Lsm => Action::Deny,
        EnforcementPath::TracepointKill => Action::Kill,
    }
}

pub fn wait_event(h: &Harness, pred: impl Fn(&Event) -> bool, what: &str) -> Result<Event, Failed> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(v) = h.events.lock() {
            if let Some(e) = v.iter().find(|e| pred(e)) {
                return Ok(e.clone());
            }
        }
        if Instant::now() > deadline {
            let seen: Vec<String> = h
                .events
                .lock()
                .map(|v| {
                    v.iter()
                        .rev()
                        .take(40)
                        .map(|e| {
                            format!(
                                "{}:{}:{:?}:{:?}:{:?}{}{}",
                                e.policy_cgroup_id,
                                e.path,
                                e.rule,
                                e.action,
                                e.hook,
                                if e.path_truncated { ":truncated" } else { "" },
                                if e.path_unresolved { ":unresolved" } else { "" }
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            return Err(format!("no event for {what} within 30s; last seen: {seen:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn events_for(h: &Harness, cgid: u64) -> Vec<Event> {
    h.events.lock().map(|v| v.iter().filter(|e| e.policy_cgroup_id == cgid).cloned().collect()).unwrap_or_default()
}

/// An event for `path` under the container's policy, from a hook of the loaded path.
pub fn expect_event(h: &Harness, c: &Container, path: &str, rule: Rule, action: Action) -> Result<Event, Failed> {
    let e = wait_event(
        h,
        |e| e.policy_cgroup_id == c.cgid && e.path == path && e.rule == rule && e.action == action,
        &format!("{path} {rule:?} {action:?}"),
    )?;
    let expected_hook: &[Hook] = match (h.path, h.mappings) {
        (EnforcementPath::Lsm, _) => &[Hook::BprmCheck, Hook::MmapFile, Hook::FileMprotect],
        (EnforcementPath::TracepointKill, MappingChecks::Tracepoints { .. }) => {
            &[Hook::ExecTracepoint, Hook::SysMmap, Hook::SysMprotect, Hook::SysShmat]
        }
        (EnforcementPath::TracepointKill, _) => &[Hook::ExecTracepoint],
    };
    if !expected_hook.contains(&e.hook) {
        return Err(format!("event from unexpected hook {:?}", e.hook).into());
    }
    Ok(e)
}

pub fn expect_event_suffix(
    h: &Harness,
    c: &Container,
    suffix: &str,
    rule: Rule,
    action: Action,
) -> Result<Event, Failed> {
    wait_event(
        h,
        |e| e.policy_cgroup_id == c.cgid && e.path.ends_with(suffix) && e.rule == rule && e.action == action,
        &format!("*{suffix} {rule:?} {action:?}"),
    )
}

/// Barrier for "no event" checks: once it returns, every event of an exec that finished before
/// the call is in `h.events`. It runs a dropped binary in a fresh monitor-mode container and
/// waits for that alert: the ring buffer hands records to the one reader in the order they
/// were reserved, and the sentinel's record is reserved after every earlier exec's.
pub fn event_barrier(h: &Harness) -> R {
    let s = Container::new("sentinel")?;
    s.install(h, &Policy::with_mode(Mode::Monitor))?;
    s.drop_file("/tmp/dg-sentinel", bb()?)?;
    assert_runs(&s.run("true", &["/tmp/dg-sentinel"])?, "sentinel exec (monitor mode)")?;
    wait_event(h, |e| e.policy_cgroup_id == s.cgid && e.path == "/tmp/dg-sentinel", "the sentinel exec")?;
    Ok(())
}

pub fn no_event_for_path(h: &Harness, c: &Container, path: &str) -> R {
    event_barrier(h)?;
    if let Some(e) = events_for(h, c.cgid).into_iter().find(|e| e.path == path) {
        return Err(format!("unexpected event for {path}: {e:?}").into());
    }
    Ok(())
}
