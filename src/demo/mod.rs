//! `driftguard demo`'s parts: a throwaway busybox image on an overlay, a runc container from an
//! `oci-spec` runtime spec, the enforcement (an agent's pinned one or the demo's own), and a guard
//! ([`Sandbox`]) that undoes all of it, also on errors and on Ctrl-C ([`catch_signals`]).
//!
//! The binary's `src/cli/demo.rs` tells the story (the steps and their output); the tests import
//! the facts they check from here ([`DROPPED`], [`BUSYBOX_CANDIDATES`]).
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::cgroup::CgroupError;
use crate::config::Config;
use crate::enforcer::{self, EnforcementPath, Enforcer, EnforcerOptions, Event, EventStream, PolicyStore};
use crate::provenance::ProvenanceError;

mod image;
pub use image::*;

/// Where busybox is looked for; it must be the statically linked one (Debian's busybox-static).
pub const BUSYBOX_CANDIDATES: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];
/// Applets linked in the image's /bin.
pub const APPLETS: [&str; 8] = ["sh", "ls", "cp", "cat", "echo", "sleep", "true", "rm"];
/// Where the demo drops its binary inside the container. A copy of the image's own
/// busybox: the same bytes, but written at runtime. (busybox runs as `busybox*` names only.)
pub const DROPPED: &str = "/tmp/busybox";
/// The demo's container id is this and the demo's pid; its temp dir and cgroup are named after it.
pub const ID_PREFIX: &str = "driftguard-demo-";
/// How long one `runc exec` may take.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the verdict event of the dropped binary.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

const BUSYBOX_STATIC_HINT: &str = "install busybox-static (Debian/Ubuntu: `apt-get install busybox-static`)";

/// Why the demo cannot go on. Each says what failed and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the demo needs root: it mounts an overlay, runs a runc container and loads BPF programs; \
         run `sudo driftguard demo`"
    )]
    NotRoot,
    #[error("runc not found on PATH: install it (Debian/Ubuntu: `apt-get install runc`; Fedora: `dnf install runc`)")]
    RuncNotFound,
    #[error("busybox not found: install the statically linked one (Debian/Ubuntu: `apt-get install busybox-static`)")]
    BusyboxNotFound,
    #[error("{0} is dynamically linked and cannot run alone in a container: {BUSYBOX_STATIC_HINT}")]
    BusyboxDynamic(&'static str),
    #[error("{0} is not a 64-bit ELF executable")]
    BusyboxNotElf(&'static str),
    #[error("{} already exists (left over from an earlier demo?): remove it and try again", .0.display())]
    LeftOver(PathBuf),
    #[error(
        "mounting the overlay on {} failed: {source} (is overlayfs available? `modprobe overlay`; \
         the temp dir must not itself be on overlayfs: set TMPDIR)",
        target.display()
    )]
    Mount { target: PathBuf, source: std::io::Error },
    #[error("{context}")]
    Io { context: String, source: std::io::Error },
    #[error("building the OCI runtime spec")]
    Spec(#[source] oci_spec::OciSpecError),
    #[error("{context}")]
    Json { context: String, source: serde_json::Error },
    #[error("{context}")]
    Enforcer { context: String, source: enforcer::Error },
    #[error("{context}")]
    Cgroup { context: String, source: CgroupError },
    #[error("finding the container's root filesystem")]
    Provenance(#[source] ProvenanceError),
    /// runc did not do what was asked; the text has runc's own words.
    #[error("{0}")]
    Runc(String),
    #[error("{context}")]
    Exec { context: String, source: Box<Error> },
    #[error("timed out after {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("interrupted; cleaned up")]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

fn enf(context: impl Into<String>) -> impl FnOnce(enforcer::Error) -> Error {
    let context = context.into();
    move |source| Error::Enforcer { context, source }
}

fn cg(context: impl Into<String>) -> impl FnOnce(CgroupError) -> Error {
    let context = context.into();
    move |source| Error::Cgroup { context, source }
}

// ---------------------------------------------------------------------------
// What the demo needs

/// The demo mounts, runs runc and loads BPF: root only.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::NotRoot);
    }
    Ok(())
}

/// The runc binary.
pub fn find_runc() -> Result<PathBuf> {
    crate::host::find_in_path("runc").ok_or(Error::RuncNotFound)
}

/// The statically linked busybox of [`BUSYBOX_CANDIDATES`] (a dynamic one cannot run alone in the
/// image).
pub fn static_busybox() -> Result<&'static str> {
    let p = BUSYBOX_CANDIDATES.into_iter().find(|p| Path::new(p).exists()).ok_or(Error::BusyboxNotFound)?;
    let mut head = Vec::new();
    fs::File::open(p).and_then(|f| f.take(64 * 1024).read_to_end(&mut head)).map_err(io(format!("reading {p}")))?;
    match elf_has_interp(&head) {
        Some(false) => Ok(p),
        Some(true) => Err(Error::BusyboxDynamic(p)),
        None => Err(Error::BusyboxNotElf(p)),
    }
}

/// Does a 64-bit little-endian ELF have a PT_INTERP segment (= dynamically linked)?
pub fn elf_has_interp(b: &[u8]) -> Option<bool> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let phoff = usize::try_from(u64::from_le_bytes(b.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        const PT_INTERP: u32 = 3;
        if u32_at(phoff + i * phentsize)? == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

// ---------------------------------------------------------------------------
// Ctrl-C

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C / SIGTERM / SIGHUP end the demo through the normal error path ([`check_interrupted`],
/// and a `runc exec` in flight is killed), so that [`Sandbox`] cleans up. (Handlers are reset to
/// the default in the runc children.)
pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

/// [`Error::Interrupted`] once one of the signals of [`catch_signals`] arrived.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Enforcement: the pinned one if an agent loaded it, else the demo's own.

pub struct Enforcement {
    /// Our own programs (dropped at exit: they detach), when nothing is pinned.
    pub own: Option<Enforcer>,
    pub store: PolicyStore,
    /// `None` when another process ([`Enforcement::ring_reader`]) reads the pinned ring buffer.
    pub events: Option<EventStream>,
    pub path: EnforcementPath,
    /// Pid of the process (a running agent, `driftguard events`) that reads the pinned event ring
    /// buffer: only one reader per ring buffer, so the demo leaves the events to it.
    pub ring_reader: Option<u32>,
}

impl Enforcement {
    /// The enforcement pinned under `bpf.pin_dir`, or programs loaded for the demo's lifetime
    /// (not pinned) when nothing is.
    pub fn open(cfg: &Config) -> Result<Self> {
        let dir = &cfg.bpf.pin_dir;
        if let Some(path) = enforcer::pinned_path(dir) {
            let store = PolicyStore::open_pinned(dir)
                .map_err(enf(format!("opening the policy maps pinned under {}", dir.display())))?;
            let ring_reader = ring_buffer_reader(dir);
            let events = match ring_reader {
                Some(_) => None,
                None => Some(
                    enforcer::open_pinned_events(dir)
                        .map_err(enf(format!("opening the event ring buffer pinned under {}", dir.display())))?,
                ),
            };
            return Ok(Enforcement { own: None, store, events, path, ring_reader });
        }
        let e = crate::check::quiet(|| {
            Enforcer::load(&EnforcerOptions {
                pin_dir: None,
                force_fallback: cfg.bpf.force_fallback,
                fallback_mappings: cfg.bpf.fallback_mappings,
            })
        })
        .map_err(enf("loading the BPF programs (run `driftguard check` to see why)"))?;
        let store = e.store().try_clone().map_err(enf("opening the policy map"))?;
        let events = Some(e.events().map_err(enf("opening the event ring buffer"))?);
        let path = e.path();
        Ok(Enforcement { own: Some(e), store, events, path, ring_reader: None })
    }
}

/// Pid of another process holding the pinned event ring buffer open: a running agent
/// (or `driftguard events`) that consumes the events. Found through the `map_id` of
/// bpf-map fds in `/proc/<pid>/fdinfo`.
fn ring_buffer_reader(pin_dir: &Path) -> Option<u32> {
    use libbpf_rs::MapCore;
    let map = libbpf_rs::MapHandle::from_pinned_path(pin_dir.join("dg_events")).ok()?;
    let map_id = map.info().ok()?.info.id;
    let needle = format!("map_id:\t{map_id}\n");
    let me = std::process::id();
    fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|ent| {
        let pid: u32 = ent.file_name().to_str()?.parse().ok()?;
        if pid == me {
            return None;
        }
        let fds = fs::read_dir(ent.path().join("fdinfo")).ok()?;
        fds.filter_map(Result::ok)
            .any(|fd| fs::read_to_string(fd.path()).is_ok_and(|t| t.contains(&needle)))
            .then_some(pid)
    })
}

/// Wait up to [`EVENT_TIMEOUT`] for the verdict on [`DROPPED`] in the cgroup `cg_id`; another
/// event of that cgroup if that one does not come.
pub fn wait_event(stream: &mut EventStream, cg_id: u64) -> Option<Event> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut other = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(e) = stream.next_timeout(left) else { break };
        if e.policy_cgroup_id != cg_id && e.cgroup_id != cg_id {
            continue;
        }
        if e.path.ends_with(DROPPED) {
            return Some(e);
        }
        other.get_or_insert(e);
    }
    other
}

// ---------------------------------------------------------------------------
// The container and everything that must be undone

/// The demo's container `id` run by `runc`, and all the demo set up for it. Undoes it in reverse
/// order on [`Sandbox::finish`] or when dropped.
pub struct Sandbox {
    runc: PathBuf,
    id: String,
    policy: Option<(PolicyStore, u64)>,
    container: bool,
    cgroup: Option<PathBuf>,
    mount: Option<PathBuf>,
    dir: Option<PathBuf>,
}

impl Sandbox {
    /// The guard of container `id` (see [`ID_PREFIX`]), nothing set up yet.
    pub fn new(runc: PathBuf, id: String) -> Self {
        Sandbox { runc, id, policy: None, container: false, cgroup: None, mount: None, dir: None }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The image in `$TMPDIR/<id>/lower`, the overlay mounted on the bundle's rootfs, and the
    /// bundle's `config.json` ([`runtime_spec`], cgroup `/<id>`, hostname `<id>`).
    pub fn prepare(&mut self, busybox: &str) -> Result<Layout> {
        let base = std::env::temp_dir().join(&self.id);
        if base.exists() {
            return Err(Error::LeftOver(base));
        }
        self.dir = Some(base.clone());
        let l = Layout::under(base);
        for d in [&l.lower, &l.upper, &l.work, &l.bundle, &l.merged] {
            fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
        }
        build_image(&l.lower, busybox)?;
        mount_overlay(&l.lower, &l.upper, &l.work, &l.merged)?;
        self.mount = Some(l.merged.clone());
        let spec = runtime_spec(&l.merged, &format!("/{}", self.id), &self.id)?;
        let json = serde_json::to_vec_pretty(&spec)
            .map_err(|source| Error::Json { context: "serializing the OCI runtime spec".into(), source })?;
        fs::write(l.bundle.join("config.json"), json).map_err(io("writing config.json"))?;
        Ok(l)
    }

    /// `runc run -d` the bundle; its output goes to `<base>/runc-run.log`.
    pub fn run(&mut self, layout: &Layout) -> Result<()> {
        let log = layout.base.join("runc-run.log");
        let log_file = fs::File::create(&log).map_err(io("creating the runc log"))?;
        let log_err = log_file.try_clone().map_err(io("creating the runc log"))?;
        // Detached with terminal=false: runc hands its stdio to the container, so give it a
        // file, not a pipe (a pipe would stay open as long as the container runs).
        let status = Command::new(&self.runc)
            .args(["run", "-d", "--bundle"])
            .arg(&layout.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .status()
            .map_err(io("running runc"))?;
        self.container = true;
        if !status.success() {
            let out = fs::read_to_string(&log).unwrap_or_default();
            return Err(Error::Runc(format!("`runc run` failed ({status}): {}", out.trim())));
        }
        Ok(())
    }

    /// The container's init process, from `runc state`.
    pub fn init_pid(&self) -> Result<u32> {
        let id = &self.id;
        let out = Command::new(&self.runc)
            .args(["state", id])
            .stdin(Stdio::null())
            .output()
            .map_err(io("running `runc state`"))?;
        if !out.status.success() {
            return Err(Error::Runc(format!(
                "`runc state {id}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|source| Error::Json { context: "parsing `runc state` output".into(), source })?;
        let status = v.get("status").and_then(|s| s.as_str()).unwrap_or("?");
        if status != "running" {
            return Err(Error::Runc(format!("container {id} is {status}, not running")));
        }
        v.get("pid")
            .and_then(|p| p.as_u64())
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::Runc(format!("`runc state {id}` has no pid")))
    }

    /// The container's cgroup (removed on cleanup if runc left it), its level and id.
    pub fn cgroup(&mut self, root: &crate::cgroup::CgroupRoot, pid: u32) -> Result<(PathBuf, u32, u64)> {
        let path = root.cgroup_of_pid(pid).map_err(cg(format!("finding the cgroup of pid {pid}")))?;
        let level = root.level(&path).map_err(cg(format!("finding the level of {}", path.display())))?;
        let id = crate::cgroup::cgroup_id(&path).map_err(cg(format!("finding the id of {}", path.display())))?;
        self.cgroup = Some(path.clone());
        Ok((path, level, id))
    }

    /// Put the container (init `pid`, cgroup `cg_id` at `level`) under `policy` in `store`, as the
    /// agent does; removed on cleanup.
    pub fn install_policy(
        &mut self,
        store: &PolicyStore,
        pid: u32,
        cg_id: u64,
        level: u32,
        policy: &crate::policy::Policy,
    ) -> Result<()> {
        let prov = crate::provenance::of_pid(pid, Path::new("/"), policy).map_err(Error::Provenance)?;
        store.set_owned(cg_id, level, policy, &prov, enforcer::Owner::Other).map_err(enf("installing the policy"))?;
        self.policy = Some((store.try_clone().map_err(enf("opening the policy map"))?, cg_id));
        Ok(())
    }

    /// Take the container out of policy again.
    pub fn remove_policy(&mut self) -> Result<()> {
        if let Some((store, cgid)) = self.policy.take() {
            store.remove(cgid).map_err(enf("removing the policy"))?;
        }
        Ok(())
    }

    /// `runc exec <id> <args>`, killed after [`EXEC_TIMEOUT`] or on Ctrl-C.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.runc);
        cmd.arg("exec").arg(&self.id).args(args);
        output_with_timeout(&mut cmd, EXEC_TIMEOUT).map_err(|e| Error::Exec {
            context: format!("runc exec {} {}", self.id, args.join(" ")),
            source: Box::new(e),
        })
    }

    /// Tear everything down; returns what could not be undone.
    pub fn finish(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some((store, id)) = self.policy.take() {
            if let Err(e) = store.remove(id) {
                problems.push(format!("removing the policy of cgroup {id}: {e}"));
            }
        }
        if std::mem::take(&mut self.container) {
            let quiet = |args: &[&str]| {
                Command::new(&self.runc)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
            };
            let _ = quiet(&["kill", &self.id, "KILL"]);
            // `delete -f` kills and waits; retry briefly while the init process exits.
            let mut deleted = false;
            for _ in 0..50 {
                let gone = !quiet(&["state", &self.id]).is_ok_and(|s| s.success());
                if gone || quiet(&["delete", "-f", &self.id]).is_ok_and(|s| s.success()) {
                    deleted = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !deleted {
                problems.push(format!("`runc delete -f {}` failed: remove the container by hand", self.id));
            }
        }
        if let Some(cg) = self.cgroup.take() {
            // runc removes it on delete; this is for a runc that did not.
            if cg.exists() && fs::remove_dir(&cg).is_err() && cg.exists() {
                problems.push(format!("cgroup {} is still there: rmdir it once its processes exited", cg.display()));
            }
        }
        if let Some(m) = self.mount.take() {
            if let Ok(t) = cstr(&m) {
                // SAFETY: umount2 with a valid path.
                let mut rc = unsafe { libc::umount2(t.as_ptr(), 0) };
                if rc != 0 {
                    // SAFETY: as above; lazy unmount if something still holds it.
                    rc = unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
                }
                if rc != 0 {
                    problems.push(format!("unmounting {}: {}", m.display(), std::io::Error::last_os_error()));
                    // Do not remove the directory tree under a live mount.
                    self.dir = None;
                }
            }
        }
        if let Some(d) = self.dir.take() {
            if let Err(e) = fs::remove_dir_all(&d) {
                if d.exists() {
                    problems.push(format!("removing {}: {e}", d.display()));
                }
            }
        }
        problems
    }
}

impl Drop for Sandbox {
    /// On an error path: the demo is an interactive command, so what could not be undone is told
    /// to the person at the terminal, who has to remove it by hand.
    fn drop(&mut self) {
        for p in self.finish() {
            eprintln!("driftguard demo: cleanup: {p}");
        }
    }
}

/// Run a command, killing it after `timeout` or on Ctrl-C. Output is small here (fits the pipe
/// buffers).
fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(io("starting"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().map_err(io("waiting"))?.is_some() {
            return child.wait_with_output().map_err(io("reading the output"));
        }
        if Instant::now() >= deadline || INTERRUPTED.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            check_interrupted()?;
            return Err(Error::Timeout(timeout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Reading the outcome

/// What became of an exec of the dropped binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The exec failed with EPERM (BPF LSM).
    Denied,
    /// The process was SIGKILLed right after exec (tracepoint fallback).
    Killed,
    /// It ran.
    No,
}

impl Stopped {
    /// Judge `runc exec`'s output.
    pub fn of(o: &Output) -> Stopped {
        let stderr = String::from_utf8_lossy(&o.stderr).to_lowercase();
        if !o.status.success() && (stderr.contains("permission denied") || stderr.contains("operation not permitted")) {
            Stopped::Denied
        } else if o.status.code() == Some(137) || o.status.signal() == Some(libc::SIGKILL) {
            Stopped::Killed
        } else {
            Stopped::No
        }
    }
}

/// An exit status in words: `exit status 2`, `killed by signal 9`.
pub fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_interp_detection() {
        assert_eq!(elf_has_interp(b"not an elf"), None);
        // /proc/self/exe (the test binary) is dynamically linked on glibc systems.
        let me = fs::read("/proc/self/exe").unwrap();
        assert_eq!(elf_has_interp(&me[..me.len().min(64 * 1024)]), Some(true));
        // A minimal static-looking header: no program headers.
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        assert_eq!(elf_has_interp(&h), Some(false));
    }

    #[test]
    fn stopped_reads_eperm_and_sigkill() {
        let out = |raw: i32, stderr: &str| Output {
            status: ExitStatus::from_raw(raw),
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
        };
        assert_eq!(Stopped::of(&out(126 << 8, "exec failed: Permission denied")), Stopped::Denied);
        assert_eq!(Stopped::of(&out(137 << 8, "")), Stopped::Killed);
        assert_eq!(Stopped::of(&out(libc::SIGKILL, "")), Stopped::Killed);
        assert_eq!(Stopped::of(&out(0, "")), Stopped::No);
        assert_eq!(describe(ExitStatus::from_raw(2 << 8)), "exit status 2");
        assert_eq!(describe(ExitStatus::from_raw(libc::SIGKILL)), "killed by signal 9");
    }

    #[test]
    fn spec_has_what_runc_needs() {
        let spec = runtime_spec(Path::new("/tmp/x/rootfs"), "/driftguard-demo-1", "h").unwrap();
        let mut s = serde_json::to_value(&spec).unwrap();
        // Capability sets serialize in hash order.
        for set in ["bounding", "effective", "permitted"] {
            let mut l: Vec<String> = serde_json::from_value(s["process"]["capabilities"][set].take()).unwrap();
            l.sort();
            s["process"]["capabilities"][set] = serde_json::json!(l);
        }
        let mut caps = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
            "CAP_FSETID",
            "CAP_KILL",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_AUDIT_WRITE",
        ];
        caps.sort();
        // The whole spec, so nothing the builders default to slips in.
        let want = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["/bin/sleep", "3600"],
                "env": ["PATH=/bin", "HOME=/root"],
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "noNewPrivileges": true
            },
            "root": {"path": "/tmp/x/rootfs", "readonly": false},
            "hostname": "h",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}
            ],
            "linux": {
                "cgroupsPath": "/driftguard-demo-1",
                "namespaces": [
                    {"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}
                ],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        assert_eq!(s, want, "{}", serde_json::to_string_pretty(&s).unwrap());
    }
}
