//! `driftguard demo`: a newcomer's first minute, with runc and no cluster.
//!
//! Builds a throwaway busybox image (overlay lower layer), runs it with runc,
//! puts the container under an `enforce` policy, then shows that an image
//! binary runs while a binary copied into the container at runtime is stopped
//! (EPERM with BPF LSM, SIGKILL on the tracepoint fallback), with the kernel's
//! verdict event. Everything is undone on the way out ([`Cleanup`]), also on
//! errors.
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use driftguard::cgroup::{self, CgroupRoot};
use driftguard::config::Config;
use driftguard::enforcer::{self, EnforcementPath, Enforcer, EnforcerOptions, Event, EventStream, Owner, PolicyStore};
use driftguard::policy::{Mode, Policy};
use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

const BUSYBOX_CANDIDATES: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];
/// Applets linked in the image's /bin.
const APPLETS: [&str; 8] = ["sh", "ls", "cp", "cat", "echo", "sleep", "true", "rm"];
/// Where the demo drops its binary inside the container. A copy of the image's own
/// busybox: the same bytes, but written at runtime. (busybox runs as `busybox*` names only.)
pub const DROPPED: &str = "/tmp/busybox";
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the demo needs root: it mounts an overlay, runs a runc container and loads BPF programs; \
             run `sudo driftguard demo`"
        );
    }
    let runc = driftguard::check::find_in_path("runc").ok_or_else(|| {
        anyhow!(
            "runc not found on PATH: install it (Debian/Ubuntu: `apt-get install runc`; Fedora: `dnf install runc`)"
        )
    })?;
    let busybox = static_busybox()?;
    catch_signals();
    let cg_root = match &cfg.cgroup.root {
        Some(r) => CgroupRoot::at(r),
        None => CgroupRoot::detect().context("finding the cgroup v2 hierarchy")?,
    };

    let pid = std::process::id();
    let id = format!("driftguard-demo-{pid}");
    println!("driftguard demo: a throwaway busybox container run by runc, a binary dropped into it at");
    println!("runtime, and what driftguard does about it. Nothing outside the demo is touched.");

    // 1. Enforcement.
    step(1, "load enforcement")?;
    let enf = Enforcement::open(cfg)?;
    match &enf.own {
        Some(e) => {
            println!("   loaded the BPF programs for the demo's lifetime (not pinned): path {}", e.path().as_str());
            if let Some(why) = e.fallback_reason() {
                println!("   BPF LSM unusable here, using the exec tracepoint fallback: {}", first_line(why));
            }
        }
        None => println!(
            "   using the enforcement an agent pinned under {}: path {}",
            cfg.bpf.pin_dir.display(),
            enf.path.as_str()
        ),
    }
    match enf.path {
        EnforcementPath::Lsm => println!("   (BPF LSM: a denied exec fails with EPERM, \"permission denied\")"),
        EnforcementPath::TracepointKill => {
            println!("   (fallback: a denied binary is SIGKILLed before its first instruction, exit status 137)")
        }
    }
    if enf.events.is_none() {
        println!("   a driftguard agent is running and consumes the event stream: events appear in its output");
    }

    // 2. Image and container.
    let mut guard = Cleanup::new(runc.clone(), id.clone());
    let base = std::env::temp_dir().join(&id);
    if base.exists() {
        bail!("{} already exists (left over from an earlier demo?): remove it and try again", base.display());
    }
    guard.dir = Some(base.clone());
    let lower = base.join("lower");
    let upper = base.join("upper");
    let work = base.join("work");
    let bundle = base.join("bundle");
    let merged = bundle.join("rootfs");
    for d in [&lower, &upper, &work, &bundle, &merged] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    build_image(&lower, busybox)?;
    mount_overlay(&lower, &upper, &work, &merged)?;
    guard.mount = Some(merged.clone());
    let cgroups_path = format!("/{id}");
    let spec = oci_spec(&merged, &cgroups_path, &id).context("building the OCI runtime spec")?;
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec)?).context("writing config.json")?;

    step(2, "start a busybox container with runc")?;
    println!("   image (overlay lower layer): {}  (/bin/busybox + applet links, /tmp)", lower.display());
    println!("   writable layer (upper):      {}", upper.display());
    println!("   $ runc run -d --bundle {} {id}", bundle.display());
    let log = base.join("runc-run.log");
    let log_file = fs::File::create(&log).context("creating the runc log")?;
    // Detached with terminal=false: runc hands its stdio to the container, so give it a
    // file, not a pipe (a pipe would stay open as long as the container runs).
    let status = Command::new(&runc)
        .args(["run", "-d", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("running runc")?;
    guard.container = true;
    if !status.success() {
        bail!("`runc run` failed ({status}): {}", fs::read_to_string(&log).unwrap_or_default().trim());
    }
    let init_pid = container_pid(&runc, &id)?;
    let cg = cg_root.cgroup_of_pid(init_pid).with_context(|| format!("finding the cgroup of pid {init_pid}"))?;
    let level = cg_root.level(&cg)?;
    let cg_id = cgroup::cgroup_id(&cg)?;
    guard.cgroup = Some(cg.clone());
    println!("   container {id}: init pid {init_pid}, cgroup {} (id {cg_id}, level {level})", cg.display());

    // 3. Policy.
    step(3, "put the container under policy")?;
    println!("   as the agent does for a pod annotated");
    println!("       driftguard.dev/mode: enforce");
    let policy = Policy::with_mode(Mode::Enforce);
    let prov = driftguard::provenance::of_pid(init_pid, Path::new("/"), &policy)
        .context("finding the container's root filesystem")?;
    enf.store.set_owned(cg_id, level, &policy, &prov, Owner::Other).context("installing the policy")?;
    guard.policy = Some((enf.store.try_clone()?, cg_id));
    println!(
        "   installed: mode enforce, rules drift={} fileless={} (policy map key: cgroup id {cg_id})",
        policy.rules.drift, policy.rules.fileless
    );
    let mut events = enf.events;
    if let Some(ev) = events.as_mut() {
        while ev.try_next().is_some() {} // events from before the demo
    }

    // 4. Image binary.
    step(4, "run a binary the image shipped")?;
    let ls = guard.exec(&["/bin/ls", "/"])?;
    println!("   $ runc exec {id} /bin/ls /");
    print_output(&ls);
    let image_ok = ls.status.success();
    println!("   -> {}", if image_ok { "runs (exit 0): image binaries are untouched" } else { "FAILED (unexpected)" });

    // 5. Drop a binary.
    step(5, "copy a binary into the container at runtime")?;
    println!("   $ runc exec {id} cp /bin/busybox {DROPPED}");
    let cp = guard.exec(&["/bin/cp", "/bin/busybox", DROPPED])?;
    print_output(&cp);
    if !cp.status.success() {
        bail!("copying the binary inside the container failed ({})", describe(cp.status));
    }
    let in_upper = upper.join(DROPPED.trim_start_matches('/'));
    println!(
        "   -> {} now exists in the writable layer: {} ({})",
        DROPPED,
        in_upper.display(),
        if in_upper.exists() { "not shipped in the image" } else { "NOT FOUND there (unexpected)" }
    );

    // 6. Run it.
    step(6, "run the dropped binary")?;
    println!("   $ runc exec {id} {DROPPED} echo hi");
    let dropped = guard.exec(&[DROPPED, "echo", "hi"])?;
    print_output(&dropped);
    let stderr = String::from_utf8_lossy(&dropped.stderr).to_lowercase();
    let eperm = !dropped.status.success()
        && (stderr.contains("permission denied") || stderr.contains("operation not permitted"));
    let killed = dropped.status.code() == Some(137) || dropped.status.signal() == Some(libc::SIGKILL);
    let stopped = eperm || killed;
    let printed_hi = String::from_utf8_lossy(&dropped.stdout).contains("hi");
    if eperm {
        println!("   -> denied: exec failed with EPERM ({})", describe(dropped.status));
    } else if killed {
        println!("   -> stopped: the process was SIGKILLed right after exec ({})", describe(dropped.status));
    } else {
        println!(
            "   -> NOT stopped ({}{})",
            describe(dropped.status),
            if printed_hi { ", it printed \"hi\"" } else { "" }
        );
    }
    println!("   enforcement path: {}", enf.path.as_str());
    let mut event: Option<Event> = None;
    match events.as_mut() {
        Some(stream) => {
            event = wait_event(stream, cg_id);
            match &event {
                Some(e) => {
                    println!("   verdict event from the kernel:");
                    println!("   {}", serde_json::to_string(e)?);
                }
                None => println!("   no verdict event arrived within {}s", EVENT_TIMEOUT.as_secs()),
            }
        }
        None => println!("   (the verdict event went to the running agent: see its output or `driftguard events`)"),
    }

    // 7. Without policy.
    step(7, "remove the policy (driftguard.dev/mode: off) and try again")?;
    if let Some((store, cgid)) = guard.policy.take() {
        store.remove(cgid).context("removing the policy")?;
    }
    println!("   $ runc exec {id} {DROPPED} echo hi");
    let again = guard.exec(&[DROPPED, "echo", "hi"])?;
    print_output(&again);
    println!(
        "   -> {}",
        if again.status.success() { "runs: only containers under policy are affected" } else { "fails (unexpected)" }
    );

    // Cleanup (also done by Drop on every error path above).
    step(8, "clean up")?;
    let problems = guard.finish();
    for p in &problems {
        println!("   warning: {p}");
    }
    println!("   container deleted, overlay unmounted, {} removed", base.display());

    println!();
    let event_ok = events_expected_ok(&event, events.is_some());
    if image_ok && stopped {
        println!("RESULT: the image binary ran, the dropped binary was stopped.");
        if !event_ok {
            println!("        (but the expected verdict event was not seen)");
        }
        println!();
        println!("Next: check this node (`driftguard check`), run the agent (`driftguard run`, or the");
        println!("DaemonSet), and opt pods in with the annotation `driftguard.dev/mode: enforce`");
        println!("(or `monitor` to only report). See docs/annotations.md.");
        Ok(ExitCode::SUCCESS)
    } else {
        let mut why = Vec::new();
        if !image_ok {
            why.push(format!("the image binary did not run ({})", describe(ls.status)));
        }
        if !stopped {
            why.push(format!("the dropped binary was not stopped ({})", describe(dropped.status)));
        }
        eprintln!("driftguard demo: FAILED: {}", why.join("; "));
        eprintln!("run `driftguard check` to see what this node lacks");
        Ok(ExitCode::from(2))
    }
}

fn events_expected_ok(event: &Option<Event>, have_stream: bool) -> bool {
    !have_stream || event.as_ref().is_some_and(|e| e.path.ends_with(DROPPED))
}

fn step(n: u32, what: &str) -> anyhow::Result<()> {
    check_interrupted()?;
    println!("\n[{n}] {what}");
    Ok(())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C / SIGTERM / SIGHUP end the demo through the normal error path, so that
/// [`Cleanup`] runs. (Handlers are reset to the default in the runc children.)
fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; cleaned up");
    }
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

fn print_output(o: &std::process::Output) {
    for (stream, tag) in [(&o.stdout, ""), (&o.stderr, "stderr: ")] {
        let s = String::from_utf8_lossy(stream);
        for l in s.lines().filter(|l| !l.trim().is_empty()) {
            println!("     {tag}{l}");
        }
    }
}

/// Wait for the verdict on the dropped binary in the container's cgroup.
fn wait_event(stream: &mut EventStream, cg_id: u64) -> Option<Event> {
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
// Enforcement: the pinned one if an agent loaded it, else our own for the demo.

struct Enforcement {
    /// Our own programs (dropped at exit: they detach), when nothing is pinned.
    own: Option<Enforcer>,
    store: PolicyStore,
    events: Option<EventStream>,
    path: EnforcementPath,
}

impl Enforcement {
    fn open(cfg: &Config) -> anyhow::Result<Self> {
        let dir = &cfg.bpf.pin_dir;
        if let Some(path) = enforcer::pinned_path(dir) {
            let store = PolicyStore::open_pinned(dir)
                .with_context(|| format!("opening the policy maps pinned under {}", dir.display()))?;
            // Only one reader per ring buffer: leave it to a running agent.
            let events = match ring_buffer_reader(dir) {
                Some(pid) => {
                    println!("   process {pid} (a driftguard agent?) reads the pinned event ring buffer");
                    None
                }
                None => Some(
                    enforcer::open_pinned_events(dir)
                        .with_context(|| format!("opening the event ring buffer pinned under {}", dir.display()))?,
                ),
            };
            return Ok(Enforcement { own: None, store, events, path });
        }
        let e = driftguard::check::quiet(|| {
            Enforcer::load(&EnforcerOptions { pin_dir: None, force_fallback: cfg.bpf.force_fallback })
        })
        .context("loading the BPF programs (run `driftguard check` to see why)")?;
        let store = e.store().try_clone()?;
        let events = Some(e.events()?);
        let path = e.path();
        Ok(Enforcement { own: Some(e), store, events, path })
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

// ---------------------------------------------------------------------------
// Image, overlay, OCI spec

fn static_busybox() -> anyhow::Result<&'static str> {
    let Some(p) = BUSYBOX_CANDIDATES.into_iter().find(|p| Path::new(p).exists()) else {
        bail!("busybox not found: install the statically linked one (Debian/Ubuntu: `apt-get install busybox-static`)");
    };
    let mut head = Vec::new();
    fs::File::open(p)?.take(64 * 1024).read_to_end(&mut head)?;
    match elf_has_interp(&head) {
        Some(false) => Ok(p),
        Some(true) => bail!(
            "{p} is dynamically linked and cannot run alone in a container: install busybox-static \
             (Debian/Ubuntu: `apt-get install busybox-static`)"
        ),
        None => bail!("{p} is not a 64-bit ELF executable"),
    }
}

/// Does a 64-bit little-endian ELF have a PT_INTERP segment (= dynamically linked)?
fn elf_has_interp(b: &[u8]) -> Option<bool> {
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

fn build_image(lower: &Path, busybox: &str) -> anyhow::Result<()> {
    let bin = lower.join("bin");
    fs::create_dir_all(&bin)?;
    fs::copy(busybox, bin.join("busybox")).with_context(|| format!("copying {busybox}"))?;
    fs::set_permissions(bin.join("busybox"), fs::Permissions::from_mode(0o755))?;
    for a in APPLETS {
        symlink("busybox", bin.join(a))?;
    }
    for d in ["tmp", "proc", "dev", "sys", "etc", "root"] {
        fs::create_dir_all(lower.join(d))?;
    }
    fs::set_permissions(lower.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::write(lower.join("etc/hostname"), "driftguard-demo\n")?;
    Ok(())
}

fn cstr(p: &Path) -> anyhow::Result<std::ffi::CString> {
    Ok(std::ffi::CString::new(p.as_os_str().as_bytes())?)
}

fn mount_overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> anyhow::Result<()> {
    let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    let (src, fstype) = (c"overlay", c"overlay");
    let target = cstr(merged)?;
    let data = std::ffi::CString::new(opts)?;
    // SAFETY: mount(2) with valid NUL-terminated strings.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "mounting the overlay on {} failed: {e} (is overlayfs available? `modprobe overlay`; \
             the temp dir must not itself be on overlayfs: set TMPDIR)",
            merged.display()
        );
    }
    Ok(())
}

/// The container's runtime spec: busybox `sleep 3600` as root with Docker's default capabilities,
/// no seccomp, its own pid/mount/ipc/uts/network namespaces. Fields the `oci-spec` builders
/// would fill with their own defaults (rlimits, resources, annotations, inheritable and ambient
/// capabilities) are left out, as runc's minimal spec does.
fn oci_spec(rootfs: &Path, cgroups_path: &str, hostname: &str) -> anyhow::Result<Spec> {
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

fn container_pid(runc: &Path, id: &str) -> anyhow::Result<u32> {
    let out = Command::new(runc).args(["state", id]).stdin(Stdio::null()).output().context("running `runc state`")?;
    if !out.status.success() {
        bail!("`runc state {id}` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parsing `runc state` output")?;
    let status = v.get("status").and_then(|s| s.as_str()).unwrap_or("?");
    if status != "running" {
        bail!("container {id} is {status}, not running");
    }
    v.get("pid")
        .and_then(|p| p.as_u64())
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| anyhow!("`runc state {id}` has no pid"))
}

/// Run a command, killing it after `timeout`. Output is small here (fits the pipe buffers).
fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> anyhow::Result<std::process::Output> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if Instant::now() >= deadline || INTERRUPTED.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            check_interrupted()?;
            bail!("timed out after {}s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Cleanup guard

/// Undoes whatever the demo set up, in reverse order, when dropped.
struct Cleanup {
    runc: PathBuf,
    id: String,
    policy: Option<(PolicyStore, u64)>,
    container: bool,
    cgroup: Option<PathBuf>,
    mount: Option<PathBuf>,
    dir: Option<PathBuf>,
}

impl Cleanup {
    fn new(runc: PathBuf, id: String) -> Self {
        Cleanup { runc, id, policy: None, container: false, cgroup: None, mount: None, dir: None }
    }

    fn exec(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut cmd = Command::new(&self.runc);
        cmd.arg("exec").arg(&self.id).args(args);
        output_with_timeout(&mut cmd, EXEC_TIMEOUT).with_context(|| format!("runc exec {} {}", self.id, args.join(" ")))
    }

    /// Tear everything down; returns what could not be undone.
    fn finish(&mut self) -> Vec<String> {
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

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in self.finish() {
            eprintln!("driftguard demo: cleanup: {p}");
        }
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
    fn spec_has_what_runc_needs() {
        let spec = oci_spec(Path::new("/tmp/x/rootfs"), "/driftguard-demo-1", "h").unwrap();
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
