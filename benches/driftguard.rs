//! driftguard benchmarks (`cargo bench --bench driftguard`, root, BPF, cgroup v2, overlayfs).
//!
//! Every number is a measurement of the real code paths, reported as min/median/max over rounds
//! and, where a baseline makes sense, as a ratio against a baseline measured in the same run:
//!
//! | section  | what | baseline |
//! |----------|------|----------|
//! | `exec`   | fork+exec+wait of `<overlay>/bin/exec-chain 0` (or `busybox true`) in a cgroup | no BPF loaded |
//! | `exec-vm`| the `exec` section re-run inside the Debian 6.12 VM (BPF LSM) | no BPF loaded |
//! | `nri`    | StartContainer / RemoveContainer reply latency, 1,000 containers registered | no-op plugin, same stack |
//! | `sync`   | Synchronize of 5,000 containers in chunks, end to end | no-op plugin, same stack |
//! | `events` | ring-buffer record bytes -> enriched JSON lines, one core; drops under an exec load of 20k/s and unpaced | decode only |
//! | `memory` | `driftguard run` RSS with 1,000 containers under policy; BPF map memory | same agent, 0 containers |
//! | `reconnect` | runtime restart: gap from its socket reappearing to the plugin's RegisterPlugin | the old blind backoff (250 ms doubling to 5 s) |
//!
//! Sections: positional arguments (`cargo bench --bench driftguard -- exec nri`) or
//! `DG_BENCH_ONLY=exec,nri`; default all. Sizes come from environment variables (see `Knobs`).
//! The run writes a machine-readable summary to `$CARGO_TARGET_DIR/bench-driftguard.json` (or
//! `DG_BENCH_JSON`) and the exec-latency charts `bench-exec.svg` (+ `bench-exec-vm.svg`, drawn
//! with plotters) next to it, or into `DG_BENCH_SVG_DIR` (`benches/run.sh --docs` refreshes the
//! tracked copies in docs/).
//!
//! Nothing here asserts on timings: it only measures and prints (targets are shown next to the
//! numbers with "met"/"MISSED").

#[path = "../tests/support/vm.rs"]
mod vm;

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftguard::agent::output::{self, BootClock, Output, Sinks};
use driftguard::agent::{DriftguardPlugin, Metrics, Registry};
use driftguard::annotations::Defaults;
use driftguard::cgroup::CgroupRoot;
use driftguard::enforcer::abi::{self, RawEvent};
use driftguard::enforcer::{Enforcer, EnforcerOptions, Event, PolicyStore};
use driftguard::policy::{Mode, Policy};
use nri_plugin::api::{Container, ContainerState, PodSandbox};
use nri_plugin::testing::{Delivery, LifecycleEvent, PeerConnection, RuntimePeer};
use nri_plugin::{HandlerResult, Plugin};

type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------------
// Knobs

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn in_vm() -> bool {
    std::env::var("DG_BENCH_IN_VM").is_ok_and(|v| v == "1")
}

/// Iteration counts; every one can be overridden from the environment.
struct Knobs {
    /// `DG_BENCH_ROUNDS` (5): rounds of every ratio measurement.
    rounds: usize,
    /// `DG_BENCH_EXECS` (1000 host, 60 in the VM): execs per configuration per round.
    execs: usize,
    /// `DG_BENCH_VM_EXECS` (60): execs per configuration per round inside the VM.
    vm_execs: usize,
    /// `DG_BENCH_VM` (1): run the `exec` section in the 6.12 VM too (when kernels are cached).
    vm: bool,
    /// `DG_BENCH_NRI_CONTAINERS` (1000): containers registered before timing NRI events.
    nri_containers: usize,
    /// `DG_BENCH_NRI_EVENTS` (1000): StartContainer+RemoveContainer pairs timed.
    nri_events: usize,
    /// `DG_BENCH_SYNC_CONTAINERS` (5000).
    sync_containers: usize,
    /// `DG_BENCH_SYNC_CHUNK` (500): pods/containers per Synchronize message.
    sync_chunk: usize,
    /// `DG_BENCH_SYNC_ROUNDS` (3).
    sync_rounds: usize,
    /// `DG_BENCH_EVENTS` (200000): synthetic records per round of the pipeline throughput.
    events: usize,
    /// `DG_BENCH_LOAD_EXECS` (200000): execs of a dropped binary in monitor mode (drop test),
    /// per rate.
    load_execs: usize,
    /// `DG_BENCH_LOAD_WORKERS` (2): parallel exec chains for the drop test.
    load_workers: usize,
    /// `DG_BENCH_LOAD_RATES` (20000,0): total exec rates of the drop test (0 = as fast as the
    /// chains go).
    load_rates: Vec<u64>,
    /// `DG_BENCH_RECONNECT_OUTAGES` (0.3,0.8,1.5,2.5,4,6): seconds the runtime stays away in
    /// each round of the `reconnect` section.
    reconnect_outages: Vec<f64>,
    /// `DG_BENCH_EXEC_BIN` (chain): what the exec loop runs: `chain` = `exec-chain 0` (a 9 KiB
    /// static binary that exits at once), `busybox` = `busybox true`.
    exec_bin: ExecBin,
}

impl Knobs {
    fn from_env() -> Self {
        let vm = in_vm();
        Knobs {
            rounds: env_usize("DG_BENCH_ROUNDS", 5).max(1),
            execs: env_usize("DG_BENCH_EXECS", if vm { 60 } else { 1000 }).max(10),
            vm_execs: env_usize("DG_BENCH_VM_EXECS", 60).max(10),
            vm: env_usize("DG_BENCH_VM", 1) == 1,
            nri_containers: env_usize("DG_BENCH_NRI_CONTAINERS", 1000),
            nri_events: env_usize("DG_BENCH_NRI_EVENTS", 1000).max(10),
            sync_containers: env_usize("DG_BENCH_SYNC_CONTAINERS", 5000),
            sync_chunk: env_usize("DG_BENCH_SYNC_CHUNK", 500).max(1),
            sync_rounds: env_usize("DG_BENCH_SYNC_ROUNDS", 3).max(1),
            events: env_usize("DG_BENCH_EVENTS", 200_000).max(1000),
            load_execs: env_usize("DG_BENCH_LOAD_EXECS", 200_000),
            load_workers: env_usize("DG_BENCH_LOAD_WORKERS", 2).max(1),
            load_rates: std::env::var("DG_BENCH_LOAD_RATES")
                .ok()
                .map(|s| s.split(',').filter_map(|r| r.trim().parse().ok()).collect())
                .unwrap_or_else(|| vec![20_000, 0]),
            reconnect_outages: std::env::var("DG_BENCH_RECONNECT_OUTAGES")
                .ok()
                .map(|s| s.split(',').filter_map(|r| r.trim().parse().ok()).collect())
                .unwrap_or_else(|| vec![0.3, 0.8, 1.5, 2.5, 4.0, 6.0]),
            exec_bin: match std::env::var("DG_BENCH_EXEC_BIN").as_deref() {
                Ok("busybox") => ExecBin::Busybox,
                _ => ExecBin::Chain,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and the report

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v
}

/// Nearest-rank quantile of sorted data.
fn q(s: &[f64], p: f64) -> f64 {
    if s.is_empty() {
        return f64::NAN;
    }
    s[(((s.len() - 1) as f64) * p).round() as usize]
}

fn mmm(v: &[f64]) -> (f64, f64, f64) {
    let s = sorted(v.to_vec());
    (s[0], q(&s, 0.5), s[s.len() - 1])
}

struct Row {
    section: &'static str,
    metric: String,
    value: String,
    target: String,
    met: Option<bool>,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    json: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    fn row(
        &mut self,
        section: &'static str,
        metric: impl Into<String>,
        value: impl Into<String>,
        target: &str,
        met: Option<bool>,
    ) {
        let r = Row { section, metric: metric.into(), value: value.into(), target: target.to_string(), met };
        println!(
            "  {:<8} {:<58} {:<44} {}",
            r.section,
            r.metric,
            r.value,
            match r.met {
                Some(true) => format!("[{} met]", r.target),
                Some(false) => format!("[{} MISSED]", r.target),
                None => String::new(),
            }
        );
        self.rows.push(r);
    }

    fn put(&mut self, key: &str, v: serde_json::Value) {
        self.json.insert(key.to_string(), v);
    }

    fn markdown(&self) -> String {
        let mut s = String::from("| section | metric | value | target | met |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            s.push_str(&format!("| {} | {} | {} | {} | {} |\n", r.section, r.metric, r.value, r.target, met));
        }
        s
    }
}

fn fmt_ratio((lo, med, hi): (f64, f64, f64)) -> String {
    format!("{med:.4}× (min {lo:.4}, max {hi:.4})")
}

// ---------------------------------------------------------------------------------------------
// Environment: cgroups, overlay "container"

fn cgroup_root() -> Res<PathBuf> {
    CgroupRoot::detect().map(|r| r.path).map_err(|e| e.to_string())
}

fn cgroup_id(p: &Path) -> Res<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::metadata(p).map_err(|e| format!("stat {}: {e}", p.display()))?.ino())
}

/// A cgroup directory tree owned by this run (`<root>/dg-bench-<pid>/...`), removed on drop.
struct Cgroups {
    base: PathBuf,
    made: Vec<PathBuf>,
}

impl Cgroups {
    fn new() -> Res<Self> {
        let base = cgroup_root()?.join(format!("dg-bench-{}", std::process::id()));
        fs::create_dir_all(&base).map_err(|e| format!("mkdir {}: {e}", base.display()))?;
        Ok(Cgroups { base, made: Vec::new() })
    }

    /// Create (or reuse) `<base>/<rel>`.
    fn make(&mut self, rel: &str) -> Res<PathBuf> {
        let p = self.base.join(rel);
        if !p.exists() {
            fs::create_dir_all(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
            self.made.push(p.clone());
        }
        Ok(p)
    }

    /// The cgroups_path a runtime would give for `<base>/<rel>` (cgroupfs driver).
    fn cgroups_path(&self, rel: &str) -> String {
        format!("/{}/{rel}", self.base.file_name().unwrap_or_default().to_string_lossy())
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // Every directory under base (create_dir_all made intermediate ones too), deepest first.
        let mut all = std::mem::take(&mut self.made);
        let mut stack = vec![self.base.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                        all.push(e.path());
                    }
                }
            }
        }
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        all.dedup();
        for p in &all {
            rmdir_retry(p);
        }
        rmdir_retry(&self.base);
    }
}

fn rmdir_retry(p: &Path) {
    for _ in 0..50 {
        if fs::remove_dir(p).is_ok() || !p.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn busybox() -> Res<&'static str> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| "busybox-static not installed".to_string())
}

/// Overlay rootfs: lower = "image" (busybox), upper = writable layer (`/tmp/dropped` written
/// through the mount, so it is drift).
struct Overlay {
    _dir: tempfile::TempDir,
    merged: PathBuf,
}

impl Overlay {
    fn new() -> Res<Self> {
        let bb = busybox()?;
        let dir = tempfile::Builder::new().prefix("dg-bench-").tempdir().map_err(|e| e.to_string())?;
        let (lower, upper, work, merged) =
            (dir.path().join("lower"), dir.path().join("upper"), dir.path().join("work"), dir.path().join("merged"));
        for d in [&lower, &upper, &work, &merged, &lower.join("bin"), &lower.join("tmp"), &lower.join("proc")] {
            fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        copy_exec(bb, &lower.join("bin/busybox"))?;
        let chain = exec_chain_binary(dir.path())?;
        copy_exec_path(&chain, &lower.join("bin/exec-chain"))?;
        let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
        mount("overlay", &merged, "overlay", &opts)?;
        let o = Overlay { _dir: dir, merged };
        copy_exec_path(&chain, &o.merged.join("tmp/dropped-chain"))?;
        Ok(o)
    }

    /// The overlay's provenance (its root is `merged`), as the agent would install it.
    fn prov(&self) -> Res<driftguard::provenance::Provenance> {
        let mi = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        driftguard::provenance::resolve(&mi, Path::new("/proc/self/mountinfo"), &self.merged, &Policy::default())
            .map_err(|e| e.to_string())
    }

    /// The image binary and its argv for the exec loop.
    fn image_cmd(&self, bin: ExecBin) -> (PathBuf, Vec<&'static str>) {
        match bin {
            ExecBin::Busybox => (self.merged.join("bin/busybox"), vec!["busybox", "true"]),
            ExecBin::Chain => (self.merged.join("bin/exec-chain"), vec!["exec-chain", "0"]),
        }
    }

    /// The exec chain written into the upper layer (drift).
    fn dropped_chain(&self) -> PathBuf {
        self.merged.join("tmp/dropped-chain")
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if let Ok(t) = CString::new(self.merged.as_os_str().as_bytes()) {
            // SAFETY: valid path string.
            unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn copy_exec(from: &str, to: &Path) -> Res<()> {
    copy_exec_path(Path::new(from), to)
}

fn copy_exec_path(from: &Path, to: &Path) -> Res<()> {
    fs::copy(from, to).map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}

/// What the exec loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExecBin {
    /// `benches/exec-chain.c`: static, no libc, 9 KiB.
    Chain,
    /// busybox (static, ~2 MiB), `busybox true`.
    Busybox,
}

impl ExecBin {
    fn label(self) -> &'static str {
        match self {
            ExecBin::Chain => "exec-chain 0 (9 KiB static, no libc)",
            ExecBin::Busybox => "busybox true (static)",
        }
    }
}

/// `benches/exec-chain.c` built with the system C compiler (`$CC`, default `cc`) into `dir`,
/// or the prebuilt binary named by `DG_BENCH_CHAIN` (the VM guest has no compiler).
fn exec_chain_binary(dir: &Path) -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("DG_BENCH_CHAIN") {
        return Ok(PathBuf::from(p));
    }
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/exec-chain.c");
    let out = dir.join("exec-chain");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let o = Command::new(&cc)
        .args(["-O2", "-static", "-nostdlib", "-fno-stack-protector", "-fno-builtin", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .map_err(|e| format!("running {cc} for {}: {e}", src.display()))?;
    if !o.status.success() {
        return Err(format!("{cc} {}: {}", src.display(), String::from_utf8_lossy(&o.stderr)));
    }
    Ok(out)
}

fn mount(src: &str, target: &Path, fstype: &str, data: &str) -> Res<()> {
    let c = |s: &[u8]| CString::new(s).map_err(|e| e.to_string());
    let (src, tgt, fst, dat) =
        (c(src.as_bytes())?, c(target.as_os_str().as_bytes())?, c(fstype.as_bytes())?, c(data.as_bytes())?);
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fst.as_ptr(), 0, dat.as_ptr().cast()) };
    if rc != 0 {
        return Err(format!("mount {fstype} on {}: {}", target.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

fn load_enforcer() -> Res<Enforcer> {
    Enforcer::load(&EnforcerOptions { pin_dir: None, force_fallback: false, fallback_mappings: false })
        .map_err(|e| format!("loading BPF: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The exec-loop child: joins a cgroup, then fork+execve+waitpid N times, writes the latencies
// (u32 ns, little endian) to stdout. Runs as a re-exec of this binary so that it is small,
// single-threaded and alone in its cgroup.

const CHILD_ENV: &str = "DG_BENCH_CHILD";

fn exec_loop_child() -> ! {
    let code = match exec_loop_child_inner() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("exec loop: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn exec_loop_child_inner() -> Res<()> {
    let procs = std::env::var("DG_CHILD_PROCS").map_err(|_| "DG_CHILD_PROCS")?;
    let bin = std::env::var("DG_CHILD_BIN").map_err(|_| "DG_CHILD_BIN")?;
    let n: usize = std::env::var("DG_CHILD_N").ok().and_then(|s| s.parse().ok()).ok_or("DG_CHILD_N")?;
    let pin: Option<usize> = std::env::var("DG_CHILD_CPU").ok().and_then(|s| s.parse().ok());
    if let Some(cpu) = pin {
        // SAFETY: cpu_set_t is plain data; sched_setaffinity on ourselves.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    fs::write(&procs, "0").map_err(|e| format!("joining {procs}: {e}"))?;
    let path = CString::new(bin.as_bytes()).map_err(|e| e.to_string())?;
    let args: Vec<CString> = std::env::var("DG_CHILD_ARGS")
        .map_err(|_| "DG_CHILD_ARGS")?
        .split('\x1f')
        .map(|a| CString::new(a).map_err(|e| e.to_string()))
        .collect::<Res<_>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp = [std::ptr::null()];
    let mut out = Vec::with_capacity(n * 4);
    let mut failed = 0usize;
    for _ in 0..n {
        let t = Instant::now();
        // SAFETY: single-threaded process; the child only calls execve/_exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: pointers to NUL-terminated strings kept alive by the parent frame.
            unsafe {
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let ns = t.elapsed().as_nanos().min(u32::MAX as u128) as u32;
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed += 1;
        }
        out.extend_from_slice(&ns.to_le_bytes());
    }
    if failed > 0 {
        return Err(format!("{failed} of {n} execs of {bin} did not exit 0"));
    }
    std::io::stdout().write_all(&out).map_err(|e| e.to_string())
}

/// Handle of a running exec loop.
struct LoopChild(std::process::Child);

fn spawn_exec_loop(cgroup: &Path, (bin, args): &(PathBuf, Vec<&str>), n: usize, cpu: Option<usize>) -> Res<LoopChild> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, "exec-loop")
        .env("DG_CHILD_PROCS", cgroup.join("cgroup.procs"))
        .env("DG_CHILD_BIN", bin)
        .env("DG_CHILD_ARGS", args.join("\x1f"))
        .env("DG_CHILD_N", n.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(c) = cpu {
        cmd.env("DG_CHILD_CPU", c.to_string());
    }
    cmd.spawn().map(LoopChild).map_err(|e| format!("spawning the exec loop: {e}"))
}

impl LoopChild {
    fn wait(self) -> Res<Vec<f64>> {
        let out = self.0.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("exec loop failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(out.stdout.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64 / 1000.0).collect())
    }
}

fn run_exec_loop(cgroup: &Path, bin: &(PathBuf, Vec<&str>), n: usize, cpu: Option<usize>) -> Res<Vec<f64>> {
    spawn_exec_loop(cgroup, bin, n, cpu)?.wait()
}

// ---------------------------------------------------------------------------------------------
// 1. Exec overhead

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
enum ExecCfg {
    /// No BPF loaded.
    Base,
    /// Enforcement loaded; this cgroup has no policy (a sibling at the same level has one).
    Unpolicied,
    /// Monitor policy; the image binary matches no rule.
    Monitor,
    /// Enforce policy; the image binary (lower layer) is allowed.
    Enforce,
    /// Monitor policy; a binary written into the upper layer: every exec is an alert, an event
    /// with its parent and command line, read by a consumer as the agent would.
    Alert,
}

impl ExecCfg {
    const ALL: [ExecCfg; 5] = [ExecCfg::Base, ExecCfg::Unpolicied, ExecCfg::Monitor, ExecCfg::Enforce, ExecCfg::Alert];
    fn label(self) -> &'static str {
        match self {
            ExecCfg::Base => "no BPF",
            ExecCfg::Unpolicied => "(a) loaded, cgroup not under policy",
            ExecCfg::Monitor => "(b) monitor, image binary",
            ExecCfg::Enforce => "(c) enforce, image binary allowed",
            ExecCfg::Alert => "(d) monitor, dropped binary: an alert event per exec",
        }
    }
    fn key(self) -> &'static str {
        match self {
            ExecCfg::Base => "base",
            ExecCfg::Unpolicied => "a_unpolicied",
            ExecCfg::Monitor => "b_monitor",
            ExecCfg::Enforce => "c_enforce",
            ExecCfg::Alert => "d_alert",
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct ExecResult {
    kernel: String,
    path: String,
    #[serde(default)]
    binary: String,
    rounds: usize,
    execs_per_block: usize,
    /// Execs per block with kernel.bpf_stats_enabled on (BPF run time; latencies not kept).
    #[serde(default)]
    stats_execs_per_block: usize,
    /// Per configuration: per-round median latency (µs).
    medians: HashMap<String, Vec<f64>>,
    /// Per configuration: every latency (µs), all rounds.
    samples: HashMap<String, Vec<f64>>,
    /// Per configuration (not base): per-round ratio of medians vs base.
    ratios: HashMap<String, Vec<f64>>,
    /// Per configuration (not base): per-round ratio of means vs base.
    mean_ratios: HashMap<String, Vec<f64>>,
    /// Per configuration (not base): per-round BPF run time per exec (ns), from the kernel's
    /// own accounting (`kernel.bpf_stats_enabled`): the exact cost the programs add.
    #[serde(default)]
    bpf_ns_per_exec: HashMap<String, Vec<f64>>,
    /// Per configuration (not base): per-round program runs per exec.
    #[serde(default)]
    runs_per_exec: HashMap<String, Vec<f64>>,
    /// Per configuration (not base): per-round (base median + BPF ns per exec) / base median.
    #[serde(default)]
    bpf_ratios: HashMap<String, Vec<f64>>,
    /// Per configuration (not base), per program: (run time ns, runs) summed over all rounds.
    #[serde(default)]
    per_program: HashMap<String, HashMap<String, (u64, u64)>>,
    /// Per configuration (not base): ring-buffer drops while it ran, all rounds.
    #[serde(default)]
    ringbuf_drops: HashMap<String, u64>,
    /// Events the consumer read (the alerts of configuration (d), all rounds, both blocks).
    #[serde(default)]
    events_read: u64,
}

/// Sets `kernel.bpf_stats_enabled` to 1 while alive; restores the old value on drop.
struct BpfStatsOn(Option<String>);

impl BpfStatsOn {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";
    fn new() -> Self {
        let old = fs::read_to_string(Self::PATH).ok();
        if fs::write(Self::PATH, "1").is_err() {
            eprintln!("    note: cannot enable {}: no per-program run times", Self::PATH);
        }
        BpfStatsOn(old)
    }
}

impl Drop for BpfStatsOn {
    fn drop(&mut self) {
        if let Some(v) = &self.0 {
            let _ = fs::write(Self::PATH, v.trim());
        }
    }
}

/// Per attached program: (run time ns, runs).
fn prog_totals(enf: &Enforcer) -> HashMap<String, (u64, u64)> {
    enf.program_stats().into_iter().map(|p| (p.name, (p.run_time_ns, p.run_count))).collect()
}

fn exec_measure(k: &Knobs, execs: usize) -> Res<ExecResult> {
    let ov = Overlay::new()?;
    let prov = ov.prov()?;
    let mut cg = Cgroups::new()?;
    let target = cg.make("exec")?;
    let sibling = cg.make("other")?;
    let root = cgroup_root()?;
    let level = target.strip_prefix(&root).map(|p| p.components().count() as u32).unwrap_or(2);
    let (tid, sid) = (cgroup_id(&target)?, cgroup_id(&sibling)?);
    let cpu = std::thread::available_parallelism().map(|n| n.get() - 1).ok();
    let bin = ov.image_cmd(k.exec_bin);
    let dropped = (ov.dropped_chain(), vec!["dropped-chain", "0"]);

    // Warm up caches (page cache, dentries) without BPF.
    run_exec_loop(&target, &bin, 200.min(execs * 2), cpu)?;

    let mut res = ExecResult {
        rounds: k.rounds,
        execs_per_block: execs,
        stats_execs_per_block: (execs / 4).max(50),
        binary: k.exec_bin.label().into(),
        ..Default::default()
    };
    res.kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let mut enf: Option<Enforcer> = None;
    let mut drain: Option<Drain> = None;
    let mut path_name = String::new();
    // Wall-clock blocks run with kernel.bpf_stats_enabled off (as in production: the stats
    // cost two clock reads per program run, several µs under TCG); a shorter block with it on
    // follows each, for the kernel's own account of the programs' run time.
    let stats_execs = (execs / 4).max(50);
    for round in 0..k.rounds {
        let mut order = ExecCfg::ALL.to_vec();
        order.rotate_left(round % ExecCfg::ALL.len());
        let mut medians: HashMap<ExecCfg, (f64, f64)> = HashMap::new();
        for cfg in order {
            match cfg {
                ExecCfg::Base => {
                    if let Some(d) = drain.take() {
                        res.events_read += d.stop();
                    }
                    enf = None; // drop: programs detach (nothing pinned)
                }
                _ => {
                    if enf.is_none() {
                        let e = load_enforcer()?;
                        path_name = e.path().as_str().to_string();
                        drain = Some(Drain::start(&e)?);
                        enf = Some(e);
                    }
                    let store = enf.as_ref().map(|e| e.store()).ok_or("no enforcer")?;
                    store.set(sid, level, &Policy::with_mode(Mode::Enforce), &prov).map_err(|e| e.to_string())?;
                    match cfg {
                        ExecCfg::Unpolicied => {
                            store.remove(tid).map_err(|e| e.to_string())?;
                        }
                        ExecCfg::Monitor | ExecCfg::Alert => store
                            .set(tid, level, &Policy::with_mode(Mode::Monitor), &prov)
                            .map_err(|e| e.to_string())?,
                        ExecCfg::Enforce => store
                            .set(tid, level, &Policy::with_mode(Mode::Enforce), &prov)
                            .map_err(|e| e.to_string())?,
                        ExecCfg::Base => {}
                    }
                }
            }
            let bin = if cfg == ExecCfg::Alert { &dropped } else { &bin };
            let drops0 = enf.as_ref().and_then(|e| e.stats().ok()).map_or(0, |s| s.ringbuf_drops);
            let lat = run_exec_loop(&target, bin, execs, cpu)?;
            if let Some(e) = enf.as_ref() {
                let on = BpfStatsOn::new();
                let before = prog_totals(e);
                run_exec_loop(&target, bin, stats_execs, cpu)?;
                let drops = e.stats().map_err(|e| e.to_string())?.ringbuf_drops - drops0;
                *res.ringbuf_drops.entry(cfg.key().into()).or_default() += drops;
                let after = prog_totals(e);
                drop(on);
                let (mut dt, mut dc) = (0u64, 0u64);
                let per = res.per_program.entry(cfg.key().into()).or_default();
                for (name, (t1, c1)) in after {
                    let (t0, c0) = before.get(&name).copied().unwrap_or((0, 0));
                    let (t, c) = (t1.saturating_sub(t0), c1.saturating_sub(c0));
                    dt += t;
                    dc += c;
                    let slot = per.entry(name).or_default();
                    slot.0 += t;
                    slot.1 += c;
                }
                res.bpf_ns_per_exec.entry(cfg.key().into()).or_default().push(dt as f64 / stats_execs as f64);
                res.runs_per_exec.entry(cfg.key().into()).or_default().push(dc as f64 / stats_execs as f64);
            }
            let mean = lat.iter().sum::<f64>() / lat.len() as f64;
            let s = sorted(lat.clone());
            medians.insert(cfg, (q(&s, 0.5), mean));
            res.medians.entry(cfg.key().into()).or_default().push(q(&s, 0.5));
            res.samples.entry(cfg.key().into()).or_default().extend(lat);
        }
        let (bmed, bmean) = medians[&ExecCfg::Base];
        for cfg in &ExecCfg::ALL[1..] {
            let (m, mean) = medians[cfg];
            res.ratios.entry(cfg.key().into()).or_default().push(m / bmed);
            res.mean_ratios.entry(cfg.key().into()).or_default().push(mean / bmean);
            if let Some(ns) = res.bpf_ns_per_exec.get(cfg.key()).and_then(|v| v.last()) {
                let r = (bmed * 1000.0 + ns) / (bmed * 1000.0);
                res.bpf_ratios.entry(cfg.key().into()).or_default().push(r);
            }
        }
        eprintln!(
            "    round {}/{}: medians (µs) {}",
            round + 1,
            k.rounds,
            ExecCfg::ALL.iter().map(|c| format!("{}={:.1}", c.key(), medians[c].0)).collect::<Vec<_>>().join(" ")
        );
    }
    if let Some(d) = drain.take() {
        res.events_read += d.stop();
    }
    drop(enf);
    res.path = path_name;
    Ok(res)
}

/// Reads the ring buffer while the exec loops run, as the agent's consumer does, so that alert
/// events take their whole path (a full ring would make them cheaper: reserve fails first).
struct Drain {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Drain {
    fn start(enf: &Enforcer) -> Res<Self> {
        let mut stream = enf.events().map_err(|e| format!("event stream: {e}"))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                if stream.next_timeout(Duration::from_millis(50)).is_some() {
                    n += 1;
                }
            }
            while stream.try_next().is_some() {
                n += 1;
            }
            n
        });
        Ok(Drain { stop, handle: Some(handle) })
    }

    /// Stop reading; the number of events read.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or(0)
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn exec_report(rep: &mut Report, section: &'static str, r: &ExecResult) {
    let n_total: usize = r.samples.values().map(|v| v.len()).sum();
    rep.row(section, "kernel / enforcement path", format!("{} / {}", r.kernel, r.path), "", None);
    rep.row(section, "binary (fork + execve + waitpid)", r.binary.clone(), "", None);
    rep.row(
        section,
        "execs measured (rounds × configs × execs); + BPF-stats blocks",
        format!(
            "{n_total} ({} × {} × {}); + {} × {} × {}",
            r.rounds,
            ExecCfg::ALL.len(),
            r.execs_per_block,
            r.rounds,
            ExecCfg::ALL.len() - 1,
            r.stats_execs_per_block
        ),
        "",
        None,
    );
    let base = sorted(r.samples["base"].clone());
    rep.row(
        section,
        "no BPF: exec latency p50 / p99",
        format!("{:.1} µs / {:.1} µs", q(&base, 0.5), q(&base, 0.99)),
        "",
        None,
    );
    for cfg in &ExecCfg::ALL[1..] {
        let ratio = mmm(&r.ratios[cfg.key()]);
        let mean_ratio = mmm(&r.mean_ratios[cfg.key()]);
        let (target, met) = match cfg {
            ExecCfg::Unpolicied => ("≤ 1.005×", Some(ratio.1 <= 1.005)),
            ExecCfg::Enforce => ("≤ 1.02×", Some(ratio.1 <= 1.02)),
            _ => ("", None),
        };
        let s = sorted(r.samples[cfg.key()].clone());
        if let (Some(ns), Some(runs), Some(br)) =
            (r.bpf_ns_per_exec.get(cfg.key()), r.runs_per_exec.get(cfg.key()), r.bpf_ratios.get(cfg.key()))
        {
            let (ns, runs, br) = (mmm(ns), mmm(runs), mmm(br));
            // Judged on the median of rounds, like the wall-clock ratio; the max is shown.
            let met = match cfg {
                ExecCfg::Unpolicied => Some(br.1 <= 1.005),
                ExecCfg::Enforce => Some(br.1 <= 1.02),
                _ => None,
            };
            rep.row(
                section,
                format!("{} — BPF run time per exec (kernel bpf_stats)", cfg.label()),
                format!("{:.0} ns (min {:.0}, max {:.0}); {:.2} program runs/exec", ns.1, ns.0, ns.2, runs.1),
                "",
                None,
            );
            if let Some(per) = r.per_program.get(cfg.key()) {
                let total_execs = (r.rounds * r.stats_execs_per_block) as f64;
                let mut names: Vec<_> = per.iter().filter(|(_, (_, c))| *c > 0).collect();
                names.sort_by(|a, b| a.0.cmp(b.0));
                let parts: Vec<String> = names
                    .iter()
                    .map(|(n, (t, c))| {
                        format!("{n} {:.2}/exec × {:.0} ns", *c as f64 / total_execs, *t as f64 / *c as f64)
                    })
                    .collect();
                rep.row(
                    section,
                    format!("{} — per program (runs per exec × ns per run)", cfg.label()),
                    parts.join(", "),
                    "",
                    None,
                );
            }
            rep.row(
                section,
                format!("{} — (base median + BPF time) / base median", cfg.label()),
                fmt_ratio(br),
                if met.is_some() { target } else { "" },
                met,
            );
        }
        rep.row(section, format!("{} — median ratio", cfg.label()), fmt_ratio(ratio), target, met);
        if *cfg == ExecCfg::Alert {
            rep.row(
                section,
                format!("{} — events read; ring-buffer drops", cfg.label()),
                format!("{}; {}", r.events_read, r.ringbuf_drops.get(cfg.key()).copied().unwrap_or(0)),
                "0 drops",
                Some(r.ringbuf_drops.get(cfg.key()).copied().unwrap_or(0) == 0),
            );
        }
        rep.row(
            section,
            format!("{} — mean ratio; p50 / p99", cfg.label()),
            format!("{:.4}×; {:.1} / {:.1} µs", mean_ratio.1, q(&s, 0.5), q(&s, 0.99)),
            "",
            None,
        );
    }
}

fn bench_exec(k: &Knobs, rep: &mut Report) -> Res<()> {
    let r = exec_measure(k, k.execs)?;
    exec_report(rep, "exec", &r);
    write_svg(&svg_dir().join("bench-exec.svg"), &format!("exec latency, {} ({})", r.kernel, r.path), &r)?;
    rep.put("exec", serde_json::to_value(summary_only(&r)).unwrap_or_default());
    Ok(())
}

fn summary_only(r: &ExecResult) -> serde_json::Value {
    serde_json::json!({
        "kernel": r.kernel, "path": r.path, "binary": r.binary, "rounds": r.rounds, "execs_per_block": r.execs_per_block,
        "medians_us": r.medians, "ratios": r.ratios, "mean_ratios": r.mean_ratios,
        "bpf_ns_per_exec": r.bpf_ns_per_exec, "runs_per_exec": r.runs_per_exec, "bpf_ratios": r.bpf_ratios,
    })
}

/// Inside the VM: run the exec section and print the whole result as one marked JSON line.
fn vm_guest_exec(k: &Knobs) -> Res<()> {
    let r = exec_measure(k, k.execs)?;
    println!("@@DG_EXEC_JSON {}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    Ok(())
}

fn bench_exec_vm(k: &Knobs, rep: &mut Report) -> Res<()> {
    let kernel = vm::load_kernel("6.12")?;
    vm::qemu_binary()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // The guest has no C compiler: build the exec chain here and ship it.
    let chain_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let chain = exec_chain_binary(chain_dir.path())?;
    let guest_chain = "/opt/dg-bench/exec-chain";
    let mut req = vm::VmRequest::new(exe).arg("exec-guest").file(&chain, guest_chain);
    req.env = vec![
        ("DG_BENCH_IN_VM".into(), "1".into()),
        ("DG_BENCH_ROUNDS".into(), k.rounds.to_string()),
        ("DG_BENCH_EXECS".into(), k.vm_execs.to_string()),
        ("DG_BENCH_CHAIN".into(), guest_chain.into()),
        ("DG_BENCH_EXEC_BIN".into(), if k.exec_bin == ExecBin::Busybox { "busybox" } else { "chain" }.into()),
    ];
    req.timeout = Duration::from_secs(900);
    req.memory_mb = 1024;
    let t = Instant::now();
    let res = vm::run_in_vm(&kernel, &req)?;
    eprintln!(
        "    VM {} ({}) finished in {:.1}s, exit {}",
        kernel.name,
        kernel.version,
        t.elapsed().as_secs_f64(),
        res.exit_code
    );
    let line = res
        .output
        .lines()
        .find_map(|l| l.strip_prefix("@@DG_EXEC_JSON "))
        .ok_or_else(|| format!("no result from the VM (exit {}):\n{}", res.exit_code, res.output))?;
    let r: ExecResult = serde_json::from_str(line).map_err(|e| e.to_string())?;
    exec_report(rep, "exec-vm", &r);
    write_svg(
        &svg_dir().join("bench-exec-vm.svg"),
        &format!("exec latency in qemu/TCG, {} ({})", r.kernel, r.path),
        &r,
    )?;
    rep.put("exec_vm", summary_only(&r));
    Ok(())
}

/// Where the exec-latency charts go: `$DG_BENCH_SVG_DIR` when set (`benches/run.sh --docs`
/// sets it to docs/ to refresh the charts BENCHMARKS.md shows), else next to the JSON summary,
/// so a bench run never rewrites tracked files by itself.
fn svg_dir() -> PathBuf {
    std::env::var_os("DG_BENCH_SVG_DIR").map(PathBuf::from).unwrap_or_else(target_dir)
}

/// `$CARGO_TARGET_DIR`, else `<repo>/target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

// ---------------------------------------------------------------------------------------------
// SVG (plotters): empirical CDF of exec latency per configuration

fn write_svg(path: &Path, title: &str, r: &ExecResult) -> Res<()> {
    use plotters::prelude::*;
    let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).map_err(|err| e(&err))?;
    }
    let all: Vec<f64> = sorted(r.samples.values().flatten().copied().collect());
    if all.is_empty() {
        return Err("no samples to plot".into());
    }
    // x range: from the 0.5th to the 99.5th percentile of everything (the tails are in the table).
    let (x0, x1) = (q(&all, 0.005), q(&all, 0.995));
    let pad = ((x1 - x0) * 0.02).max(0.5);
    let (x0, x1) = (x0 - pad, x1 + pad);
    let colors = [
        RGBColor(0x22, 0x22, 0x22),
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
    ];

    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|err| e(&err))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, 0f64..1f64)
        .map_err(|err| e(&err))?;
    chart
        .configure_mesh()
        .x_desc(format!("fork+exec+wait of {} (µs)", r.binary))
        .y_desc("fraction of execs ≤ x")
        .draw()
        .map_err(|err| e(&err))?;
    for (i, cfg) in ExecCfg::ALL.iter().enumerate() {
        let Some(v) = r.samples.get(cfg.key()) else { continue };
        let v = sorted(v.clone());
        let n = v.len();
        if n == 0 {
            continue;
        }
        let step = (n / 400).max(1);
        let points =
            (0..n).step_by(step).chain(std::iter::once(n - 1)).map(|j| (v[j].clamp(x0, x1), (j + 1) as f64 / n as f64));
        let label = if *cfg == ExecCfg::Base {
            format!("{} — median {:.1} µs (n={n})", cfg.label(), q(&v, 0.5))
        } else {
            format!("{} — median {:.1} µs, ratio {:.4}× (n={n})", cfg.label(), q(&v, 0.5), mmm(&r.ratios[cfg.key()]).1)
        };
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|err| e(&err))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|err| e(&err))?;
    root.present().map_err(|err| e(&err))?;
    println!("  wrote {}", path.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// NRI plumbing shared by `nri`, `sync` and `memory`

/// The baseline plugin: same Runner, mux and ttrpc stack, handlers do nothing.
struct NoopPlugin;

impl Plugin for NoopPlugin {
    async fn synchronize(
        &self,
        _p: Vec<PodSandbox>,
        _c: Vec<Container>,
    ) -> HandlerResult<Vec<nri_plugin::api::ContainerUpdate>> {
        Ok(Vec::new())
    }
}

fn bench_pod(i: usize) -> PodSandbox {
    let mut p = PodSandbox::new();
    p.id = format!("pod-{i:05}");
    p.name = format!("web-{i:05}");
    p.namespace = format!("ns-{}", i % 20);
    p.uid = format!("uid-{i:05}");
    p.annotations.insert("driftguard.dev/mode".into(), "enforce".into());
    p
}

fn bench_ctr(i: usize, pod: &PodSandbox, cgroups_path: String, pid: u32) -> Container {
    let mut c = Container::new();
    c.id = format!("{:064x}", 0xd6c0_de00_0000_u128 * 1_000_003 + i as u128);
    c.pod_sandbox_id = pod.id.clone();
    c.name = "app".into();
    c.state = ContainerState::CONTAINER_RUNNING.into();
    c.linux.mut_or_insert_default().cgroups_path = cgroups_path;
    c.pid = pid;
    c.annotations.insert("io.kubernetes.cri.image-name".into(), "registry.example/shop/web:1.2.3".into());
    c
}

/// `n` pods with one container each, each in its own real cgroup `<base>/<dir>/c<i>`.
fn make_fleet(
    cg: &mut Cgroups,
    dir: &str,
    n: usize,
    offset: usize,
    pid: u32,
) -> Res<(Vec<PodSandbox>, Vec<Container>)> {
    let mut pods = Vec::with_capacity(n);
    let mut ctrs = Vec::with_capacity(n);
    for i in offset..offset + n {
        let rel = format!("{dir}/c{i:05}");
        cg.make(&rel)?;
        let p = bench_pod(i);
        ctrs.push(bench_ctr(i, &p, cg.cgroups_path(&rel), pid));
        pods.push(p);
    }
    Ok((pods, ctrs))
}

/// A process whose root is the overlay (chrooted `busybox sleep`), so that the plugin's
/// `/proc/<pid>/mountinfo` read sees what it sees for a real container.
struct RootfsProc(std::process::Child);

impl RootfsProc {
    fn spawn(ov: &Overlay) -> Res<Self> {
        use std::os::unix::process::CommandExt;
        let root = CString::new(ov.merged.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("/bin/busybox");
        cmd.args(["sleep", "3600"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: chroot/chdir only, on memory prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().map(RootfsProc).map_err(|e| format!("chrooted sleep: {e}"))
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for RootfsProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // As `driftguard run` builds it.
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Start `plugin` on a Runner connected to a fresh RuntimePeer; returns the handshaken connection.
async fn connect_plugin<P: Plugin>(
    dir: &Path,
    name: &str,
    plugin: Arc<P>,
) -> Res<(PeerConnection, tokio::task::JoinHandle<()>)> {
    let sock = dir.join(format!("{name}.sock"));
    let _ = fs::remove_file(&sock);
    let peer = RuntimePeer::bind(&sock).map_err(|e| e.to_string())?;
    let runner = nri_plugin::Runner::builder("driftguard", "10")
        .socket_path(&sock)
        .reconnect(false)
        .build()
        .map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        let _ = runner.run_shared(plugin).await;
    });
    let mut conn = tokio::time::timeout(Duration::from_secs(20), peer.accept())
        .await
        .map_err(|_| "plugin did not connect")?
        .map_err(|e| e.to_string())?;
    conn.set_timeout(Duration::from_secs(600));
    conn.handshake().await.map_err(|e| e.to_string())?;
    Ok((conn, task))
}

/// The agent's logging (`driftguard run`: fmt subscriber, level info), writing to a sink, so
/// the per-event `tracing::info!` lines cost what they cost in the agent.
fn install_agent_like_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .try_init();
}

struct PluginParts {
    plugin: Arc<DriftguardPlugin>,
    registry: Arc<Registry>,
}

/// The node policy of the agent without rules: annotations decide, default off.
fn no_rules() -> driftguard::rules::NodePolicy {
    driftguard::rules::NodePolicy {
        defaults: Defaults { mode: Mode::Off, ..Defaults::default() },
        ..Default::default()
    }
}

/// Ten policy rules, as a configuration file gives them: nine that the bench pods (namespaces
/// `ns-0`…`ns-19`, no labels) do not match — other namespaces and globs, label selectors with
/// each kind of requirement — and a last one that matches every bench pod.
fn ten_rules(dir: &Path) -> Res<driftguard::rules::NodePolicy> {
    let mut toml = String::from("default_mode = \"off\"\n");
    for (i, (ns, sel)) in [
        ("[\"payments\", \"payments-*\"]", ""),
        ("[\"checkout\"]", "tier in (frontend, edge), !canary"),
        ("", "app.kubernetes.io/name=api"),
        ("[\"team-?\", \"team-??\"]", ""),
        ("", "environment notin (dev, test), release"),
        ("[\"ml-*\"]", "gpu"),
        ("", "tier=db"),
        ("[\"kafka\", \"zookeeper\"]", "!debug"),
        ("[\"edge-*\"]", "app!=legacy"),
    ]
    .iter()
    .enumerate()
    {
        toml += &format!("[[rules]]\nname = \"r{i}\"\nmode = \"enforce\"\n");
        if !ns.is_empty() {
            toml += &format!("namespaces = {ns}\n");
        }
        if !sel.is_empty() {
            toml += &format!("selector = \"{sel}\"\n");
        }
    }
    toml += "[[rules]]\nname = \"bench\"\nnamespaces = [\"ns-*\"]\nmode = \"enforce\"\n";
    let path = dir.join("rules.toml");
    fs::write(&path, toml).map_err(|e| e.to_string())?;
    let cfg = driftguard::config::Config::load(Some(&path)).map_err(|e| format!("{e}"))?;
    Ok(cfg.node_policy())
}

fn make_plugin(store: &PolicyStore, state: Option<&Path>, policy: driftguard::rules::NodePolicy) -> Res<PluginParts> {
    let registry = Arc::new(match state {
        Some(dir) => Registry::load(driftguard::agent::registry_file(dir)),
        None => Registry::new(None),
    });
    let output = Output::new(Sinks::open(false, None, 0, 5).map_err(|e| e.to_string())?);
    let plugin = Arc::new(DriftguardPlugin::new(
        store.try_clone().map_err(|e| e.to_string())?,
        registry.clone(),
        CgroupRoot::detect().map_err(|e| e.to_string())?,
        policy,
        Metrics::new(),
        output,
        "bench-node".into(),
    ));
    Ok(PluginParts { plugin, registry })
}

fn clear_store(store: &PolicyStore) {
    for id in store.cgroup_ids() {
        let _ = store.remove(id);
    }
}

fn lat_summary(v: &[f64]) -> (f64, f64, f64, f64) {
    let s = sorted(v.to_vec());
    (q(&s, 0.5), q(&s, 0.99), s[s.len() - 1], s[0])
}

fn fmt_lat_us((p50, p99, max, _min): (f64, f64, f64, f64)) -> String {
    format!("p50 {p50:.0} µs, p99 {p99:.0} µs, max {max:.0} µs")
}

/// Time StartContainer and RemoveContainer (dedicated RPCs) for `events` pairs over `extra`.
async fn time_start_remove(
    conn: &PeerConnection,
    extra: &[(PodSandbox, Container)],
    events: usize,
) -> Res<(Vec<f64>, Vec<f64>)> {
    let (mut start, mut remove) = (Vec::with_capacity(events), Vec::with_capacity(events));
    for i in 0..events {
        let (p, c) = &extra[i % extra.len()];
        let t = Instant::now();
        conn.send(Delivery::Dedicated, LifecycleEvent::StartContainer(p.clone(), c.clone()))
            .await
            .map_err(|e| format!("StartContainer: {e}"))?;
        start.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        conn.send(Delivery::Dedicated, LifecycleEvent::RemoveContainer(p.clone(), c.clone()))
            .await
            .map_err(|e| format!("RemoveContainer: {e}"))?;
        remove.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok((start, remove))
}

// ---------------------------------------------------------------------------------------------
// 2. NRI handling latency

fn bench_nri(k: &Knobs, rep: &mut Report) -> Res<()> {
    install_agent_like_logging();
    let enf = load_enforcer()?;
    let store = enf.store().try_clone().map_err(|e| e.to_string())?;
    let ov = Overlay::new()?;
    let rootfs = RootfsProc::spawn(&ov)?;
    let mut cg = Cgroups::new()?;
    let t = Instant::now();
    let (pods, ctrs) = make_fleet(&mut cg, "nri", k.nri_containers, 0, rootfs.pid())?;
    let (xp, xc) = make_fleet(&mut cg, "nri-extra", 100, 100_000, rootfs.pid())?;
    eprintln!("    {} real cgroups created in {:.2}s", k.nri_containers + 100, t.elapsed().as_secs_f64());
    let extra: Vec<(PodSandbox, Container)> = xp.into_iter().zip(xc).collect();
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = runtime();
    let result = rt.block_on(async {
        // Baseline: no-op plugin, same stack.
        let (conn, task) = connect_plugin(tmp.path(), "noop", Arc::new(NoopPlugin)).await?;
        conn.synchronize(pods.clone(), ctrs.clone(), 500).await.map_err(|e| e.to_string())?;
        time_start_remove(&conn, &extra, 100).await?; // warm-up
        let (b_start, b_remove) = time_start_remove(&conn, &extra, k.nri_events).await?;
        conn.close();
        task.abort();

        let mut out = Vec::new();
        for (i, (label, persist, policy)) in [
            ("agent (registry persisted, as `driftguard run`)", true, no_rules()),
            ("registry not persisted", false, no_rules()),
            ("agent with 10 policy rules, the last one matching", true, ten_rules(tmp.path())?),
        ]
        .into_iter()
        .enumerate()
        {
            clear_store(&store);
            let state = tmp.path().join(format!("state-{i}"));
            let parts = make_plugin(&store, persist.then_some(state.as_path()), policy)?;
            let (conn, task) = connect_plugin(tmp.path(), &format!("dg-{i}"), parts.plugin.clone()).await?;
            conn.synchronize(pods.clone(), ctrs.clone(), 500).await.map_err(|e| e.to_string())?;
            let registered = parts.registry.snapshot().len();
            if registered != k.nri_containers {
                return Err(format!("{registered} containers registered, expected {}", k.nri_containers));
            }
            time_start_remove(&conn, &extra, 100).await?; // warm-up
            let (start, remove) = time_start_remove(&conn, &extra, k.nri_events).await?;
            if store.cgroup_ids().len() != k.nri_containers {
                return Err(format!("{} policies installed after the run", store.cgroup_ids().len()));
            }
            conn.close();
            task.abort();
            out.push((label, start, remove));
        }
        Ok::<_, String>((b_start, b_remove, out))
    });
    drop(rt);
    clear_store(&store);
    let (b_start, b_remove, out) = result?;
    let bs = lat_summary(&b_start);
    let br = lat_summary(&b_remove);
    rep.row(
        "nri",
        format!("setup: {} containers registered (real cgroups), enforce", k.nri_containers),
        format!("{} events timed per kind", k.nri_events),
        "",
        None,
    );
    rep.row("nri", "baseline no-op plugin: StartContainer", fmt_lat_us(bs), "", None);
    rep.row("nri", "baseline no-op plugin: RemoveContainer", fmt_lat_us(br), "", None);
    let mut json =
        serde_json::json!({"baseline_start_us": [bs.0, bs.1, bs.2], "baseline_remove_us": [br.0, br.1, br.2]});
    for (label, start, remove) in out {
        let s = lat_summary(&start);
        let r = lat_summary(&remove);
        rep.row(
            "nri",
            format!("StartContainer, {label}"),
            format!("{} ({:.2}× baseline p50)", fmt_lat_us(s), s.0 / bs.0),
            "p99 < 1 ms",
            Some(s.1 < 1000.0),
        );
        rep.row(
            "nri",
            format!("RemoveContainer, {label}"),
            format!("{} ({:.2}× baseline p50)", fmt_lat_us(r), r.0 / br.0),
            "p99 < 1 ms",
            Some(r.1 < 1000.0),
        );
        json[format!("start_us {label}")] = serde_json::json!([s.0, s.1, s.2]);
        json[format!("remove_us {label}")] = serde_json::json!([r.0, r.1, r.2]);
    }
    rep.put("nri", json);
    drop(enf);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Synchronize at scale

fn bench_sync(k: &Knobs, rep: &mut Report) -> Res<()> {
    install_agent_like_logging();
    let enf = load_enforcer()?;
    let store = enf.store().try_clone().map_err(|e| e.to_string())?;
    let ov = Overlay::new()?;
    let rootfs = RootfsProc::spawn(&ov)?;
    let mut cg = Cgroups::new()?;
    let t = Instant::now();
    let (pods, ctrs) = make_fleet(&mut cg, "sync", k.sync_containers, 0, rootfs.pid())?;
    eprintln!("    {} real cgroups created in {:.2}s", k.sync_containers, t.elapsed().as_secs_f64());
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = runtime();
    let n = k.sync_containers;
    let result = rt.block_on(async {
        let mut base = Vec::new();
        for _ in 0..k.sync_rounds {
            let (conn, task) = connect_plugin(tmp.path(), "noop", Arc::new(NoopPlugin)).await?;
            let t = Instant::now();
            conn.synchronize(pods.clone(), ctrs.clone(), k.sync_chunk).await.map_err(|e| e.to_string())?;
            base.push(t.elapsed().as_secs_f64() * 1e3);
            conn.close();
            task.abort();
        }
        let mut variants = Vec::new();
        // Not persisted first; the persisted variant is O(n²) today and may take long: one
        // round unless DG_BENCH_SYNC_PERSIST_ROUNDS says otherwise.
        let persist_rounds = env_usize("DG_BENCH_SYNC_PERSIST_ROUNDS", 1).max(1);
        for (label, persist, rounds) in [
            ("registry not persisted (fresh agent)", false, k.sync_rounds),
            ("agent (registry persisted, as `driftguard run`), fresh", true, persist_rounds),
        ] {
            let mut fresh = Vec::new();
            let mut resync = Vec::new();
            for round in 0..rounds {
                clear_store(&store);
                let state = tmp.path().join(format!("sync-state-{persist}-{round}"));
                let parts = make_plugin(&store, persist.then_some(state.as_path()), no_rules())?;
                let (conn, task) = connect_plugin(tmp.path(), "dg", parts.plugin.clone()).await?;
                let t = Instant::now();
                conn.synchronize(pods.clone(), ctrs.clone(), k.sync_chunk).await.map_err(|e| e.to_string())?;
                fresh.push(t.elapsed().as_secs_f64() * 1e3);
                let installed = store.cgroup_ids().len();
                if installed != n {
                    return Err(format!("{installed} policies installed after Synchronize of {n}"));
                }
                conn.close();
                task.abort();
                // Re-sync (agent restart / reconnect): everything already installed.
                let (conn, task) = connect_plugin(tmp.path(), "dg2", parts.plugin.clone()).await?;
                let t = Instant::now();
                conn.synchronize(pods.clone(), ctrs.clone(), k.sync_chunk).await.map_err(|e| e.to_string())?;
                resync.push(t.elapsed().as_secs_f64() * 1e3);
                conn.close();
                task.abort();
                eprintln!(
                    "    sync {label} round {}: fresh {:.0} ms, re-sync {:.0} ms",
                    round + 1,
                    fresh[round],
                    resync[round]
                );
            }
            variants.push((label, fresh, resync));
        }
        Ok::<_, String>((base, variants))
    });
    drop(rt);
    clear_store(&store);
    let (base, variants) = result?;
    let b = mmm(&base);
    rep.row(
        "sync",
        format!("setup: {n} containers (real cgroups), chunks of {}", k.sync_chunk),
        format!("{} rounds", k.sync_rounds),
        "",
        None,
    );
    rep.row(
        "sync",
        "baseline no-op plugin: Synchronize",
        format!("{:.1} ms (min {:.1}, max {:.1})", b.1, b.0, b.2),
        "",
        None,
    );
    let mut json = serde_json::json!({"baseline_ms": base});
    for (label, fresh, resync) in variants {
        let f = mmm(&fresh);
        let r = mmm(&resync);
        rep.row(
            "sync",
            format!("Synchronize {n}, {label}"),
            format!("{:.1} ms (min {:.1}, max {:.1}; {:.1}× baseline)", f.1, f.0, f.2, f.1 / b.1),
            "< 200 ms",
            Some(f.1 < 200.0),
        );
        rep.row(
            "sync",
            format!("re-Synchronize {n} (all installed), {}", label.split(',').next().unwrap_or(label)),
            format!("{:.1} ms (min {:.1}, max {:.1})", r.1, r.0, r.2),
            "< 200 ms",
            Some(r.1 < 200.0),
        );
        json[format!("fresh_ms {label}")] = serde_json::json!(fresh);
        json[format!("resync_ms {label}")] = serde_json::json!(resync);
    }
    rep.put("sync", json);
    drop(enf);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Event pipeline

fn synthetic_records(n_distinct: usize, registered: &[u64]) -> Vec<Vec<u8>> {
    let paths = [
        "/tmp/x",
        "/usr/local/bin/kubectl",
        "/var/tmp/.cache/miner",
        "/dev/shm/payload",
        "/app/node_modules/.bin/esbuild",
    ];
    // As real events are: the parent with its executable (walked by the kernel), a command
    // line of a few arguments.
    let me = std::process::id();
    (0..n_distinct)
        .map(|i| {
            let cg = registered[i % registered.len()];
            let path = paths[i % paths.len()];
            RawEvent {
                ts_ns: 1_000_000_000 + i as u64 * 1000,
                cgroup_id: cg,
                policy_cgroup_id: cg,
                pid: 1000 + i as u32,
                tgid: 1000 + i as u32,
                uid: 0,
                matched: abi::DG_MATCH_DRIFT,
                action: if i % 2 == 0 { abi::DG_ACT_DENY } else { abi::DG_ACT_ALERT },
                hook: abi::DG_HOOK_BPRM_CHECK,
                file_kind: abi::DG_FILE_UPPER,
                mode: if i % 2 == 0 { abi::DG_MODE_ENFORCE } else { abi::DG_MODE_MONITOR },
                flags: 0,
                comm: "sh".into(),
                path: path.into(),
                prot: 0,
                count: 0,
                ppid: me,
                parent_comm: "sh".into(),
                parent_start_ns: 1_000_000,
                args: format!("{path}\0--config\0/etc/app/config.yaml\0-v\0").into_bytes(),
                parent_exe: "/usr/bin/bash".into(),
                ..Default::default()
            }
            .to_bytes()
        })
        .collect()
}

fn fake_registry(n: usize) -> (Registry, Vec<u64>) {
    use driftguard::agent::registry::{ContainerInfo, Rootfs};
    let reg = Registry::new(None);
    let mut ids = Vec::new();
    for i in 0..n {
        let id = 10_000 + i as u64;
        reg.insert(ContainerInfo {
            container_id: format!("{:064x}", i),
            container: "app".into(),
            pod: format!("web-{i:05}"),
            namespace: format!("ns-{}", i % 20),
            pod_uid: format!("uid-{i}"),
            image: "registry.example/shop/web:1.2.3".into(),
            cgroup_path: PathBuf::from(format!("/sys/fs/cgroup/kubepods/pod{i}/ctr")),
            cgroup_id: id,
            mode: Mode::Enforce,
            rootfs: Rootfs::Overlay,
            policy_source: Some(driftguard::rules::PolicySource::Rule("shop".into())),
            workload: Some(driftguard::agent::workload::Workload { kind: "Deployment".into(), name: "web".into() }),
        });
        ids.push(id);
    }
    (reg, ids)
}

fn bench_events(k: &Knobs, rep: &mut Report, skip_load: bool) -> Res<()> {
    // (a) Throughput on one core: record bytes -> Event::decode -> enrich -> serde_json line,
    // the loop of agent::run (metrics, verdict counter, Output::emit to a file).
    let (reg, ids) = fake_registry(1000);
    let recs = synthetic_records(4096, &ids);
    let clock = BootClock::now();
    let metrics = Metrics::new();
    let devnull = Output::new(Sinks::open(false, Some(Path::new("/dev/null")), 0, 5).map_err(|e| e.to_string())?);
    let n = k.events;
    let mut rates: HashMap<&str, Vec<f64>> = HashMap::new();
    let sink = AtomicU64::new(0);
    for _round in 0..k.rounds {
        // decode only (baseline)
        let t = Instant::now();
        for i in 0..n {
            let ev = Event::decode(&recs[i % recs.len()]).ok_or("decode failed")?;
            sink.fetch_add(ev.pid as u64, Ordering::Relaxed);
        }
        rates.entry("decode").or_default().push(n as f64 / t.elapsed().as_secs_f64());
        // decode + enrich + serde_json::to_string
        let t = Instant::now();
        for i in 0..n {
            let ev = Event::decode(&recs[i % recs.len()]).ok_or("decode failed")?;
            let v = output::enrich(&ev, "bench-node", &reg, &clock);
            let line = serde_json::to_string(&v).map_err(|e| e.to_string())?;
            sink.fetch_add(line.len() as u64, Ordering::Relaxed);
        }
        rates.entry("json").or_default().push(n as f64 / t.elapsed().as_secs_f64());
        // the agent loop body: + metrics + Output::emit (file sink = /dev/null, broadcast)
        let t = Instant::now();
        for i in 0..n {
            let ev = Event::decode(&recs[i % recs.len()]).ok_or("decode failed")?;
            output::publish(&ev, "bench-node", &reg, &clock, &metrics, &devnull);
        }
        rates.entry("agent").or_default().push(n as f64 / t.elapsed().as_secs_f64());
    }
    let fmt = |v: (f64, f64, f64)| format!("{:.0}k/s (min {:.0}k, max {:.0}k)", v.1 / 1e3, v.0 / 1e3, v.2 / 1e3);
    let d = mmm(&rates["decode"]);
    let j = mmm(&rates["json"]);
    let a = mmm(&rates["agent"]);
    rep.row("events", format!("decode only (baseline), {} records/round, {} rounds", n, k.rounds), fmt(d), "", None);
    rep.row(
        "events",
        "decode + enrich + serde_json line",
        format!("{} ({:.2}× decode time)", fmt(j), d.1 / j.1),
        "≥ 200k/s",
        Some(j.1 >= 200_000.0),
    );
    rep.row(
        "events",
        "agent loop: + metrics + Output::emit (file write per line)",
        fmt(a),
        "≥ 200k/s",
        Some(a.1 >= 200_000.0),
    );
    let mut json = serde_json::json!({"decode_per_s": rates["decode"], "json_per_s": rates["json"], "agent_loop_per_s": rates["agent"]});
    if !skip_load {
        let mut loads = Vec::new();
        for &rate in &k.load_rates {
            let asked =
                if rate == 0 { "as fast as the chains go".to_string() } else { format!("paced at {}k/s", rate / 1000) };
            match drops_under_load(k, rate) {
                Ok(v) => {
                    let reached = rate == 0 || v.rate >= rate as f64 * 0.98;
                    rep.row(
                        "events",
                        format!(
                            "monitor-mode exec load, {asked}: {} execs of a dropped binary, {} exec chains",
                            v.execs, k.load_workers
                        ),
                        format!("{:.0} execs/s achieved", v.rate),
                        if rate == 0 { "" } else { "20k execs/s" },
                        (rate != 0).then_some(reached),
                    );
                    rep.row(
                        "events",
                        "  ring-buffer drops (Stats.ringbuf_drops) / events emitted / JSON lines written",
                        format!("{} drops / {} events / {} lines", v.drops, v.events, v.lines),
                        "0 drops",
                        Some(v.drops == 0 && v.lines == v.events),
                    );
                    loads.push(serde_json::json!({"asked_per_s": rate, "execs": v.execs, "rate": v.rate, "drops": v.drops, "events": v.events, "lines": v.lines}));
                }
                Err(e) => {
                    rep.row("events", format!("monitor-mode exec load, {asked}"), format!("failed: {e}"), "", None)
                }
            }
        }
        json["load"] = serde_json::json!(loads);
    }
    rep.put("events", json);
    Ok(())
}

struct LoadResult {
    execs: u64,
    rate: f64,
    drops: u64,
    events: u64,
    lines: u64,
}

/// Child mode `exec-into`: join the cgroup, then execve the exec chain (no fork), so every
/// exec the chain makes happens in the policied cgroup.
fn exec_into_child() -> ! {
    let err = (|| -> Res<()> {
        let procs = std::env::var("DG_CHILD_PROCS").map_err(|_| "DG_CHILD_PROCS")?;
        let bin = std::env::var("DG_CHILD_BIN").map_err(|_| "DG_CHILD_BIN")?;
        let args: Vec<CString> = std::env::var("DG_CHILD_ARGS")
            .map_err(|_| "DG_CHILD_ARGS")?
            .split('\x1f')
            .map(|a| CString::new(a).map_err(|e| e.to_string()))
            .collect::<Res<_>>()?;
        fs::write(&procs, "0").map_err(|e| format!("joining {procs}: {e}"))?;
        let path = CString::new(bin.as_bytes()).map_err(|e| e.to_string())?;
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp = [std::ptr::null()];
        // SAFETY: NUL-terminated strings and arrays kept alive in this frame.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        Err(format!("execve {bin}: {}", std::io::Error::last_os_error()))
    })();
    if let Err(e) = err {
        eprintln!("exec-into: {e}");
    }
    std::process::exit(1)
}

/// Drop test: `load_workers` exec chains of the dropped binary in a monitor-mode cgroup, paced
/// to `rate` execs/s in total (0: unpaced), against the real ring buffer and the agent's
/// consumer loop. Every exec is one event.
fn drops_under_load(k: &Knobs, rate: u64) -> Res<LoadResult> {
    let enf = load_enforcer()?;
    let ov = Overlay::new()?;
    let mut cg = Cgroups::new()?;
    let target = cg.make("load")?;
    let root = cgroup_root()?;
    let level = target.strip_prefix(&root).map(|p| p.components().count() as u32).unwrap_or(2);
    let cgid = cgroup_id(&target)?;
    enf.store().set(cgid, level, &Policy::with_mode(Mode::Monitor), &ov.prov()?).map_err(|e| e.to_string())?;
    let (reg, _) = fake_registry(1000);
    let reg = Arc::new(reg);
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = Output::new(Sinks::open(false, Some(&tmp.path().join("events.jsonl")), 0, 5).map_err(|e| e.to_string())?);
    let before = enf.stats().map_err(|e| e.to_string())?;
    let rt = runtime();
    let lines = Arc::new(AtomicU64::new(0));
    let mut stream = enf.events().map_err(|e| e.to_string())?;
    {
        // The agent's consumer task (same body: output::publish).
        let (registry, output, metrics, lines) = (reg.clone(), out.clone(), Metrics::new(), lines.clone());
        rt.spawn(async move {
            let clock = BootClock::now();
            while let Some(ev) = stream.next().await {
                output::publish(&ev, "bench-node", &registry, &clock, &metrics, &output);
                lines.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let workers = k.load_workers as u64;
    let per = (k.load_execs as u64 / workers).max(1);
    let interval_ns = (workers * 1_000_000_000).checked_div(rate).unwrap_or(0);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut children = Vec::new();
    for _ in 0..workers {
        // The chain's first exec comes from exec-into, then `per` more: per + 1 execs each.
        let args = ["dropped-chain".to_string(), (per - 1).to_string(), interval_ns.to_string()].join("\x1f");
        let child = Command::new(&exe)
            .env(CHILD_ENV, "exec-into")
            .env("DG_CHILD_PROCS", target.join("cgroup.procs"))
            .env("DG_CHILD_BIN", ov.dropped_chain())
            .env("DG_CHILD_ARGS", args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning an exec chain: {e}"))?;
        children.push(child);
    }
    for c in children {
        let o = c.wait_with_output().map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("exec chain failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr)));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let total = per * workers;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = enf.stats().map_err(|e| e.to_string())?;
    while Instant::now() < deadline {
        after = enf.stats().map_err(|e| e.to_string())?;
        if lines.load(Ordering::Relaxed) >= after.events - before.events {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(rt);
    let _ = enf.store().remove(cgid);
    let events = after.events - before.events;
    if events != total {
        eprintln!("    note: {events} events for {total} execs");
    }
    Ok(LoadResult {
        execs: total,
        rate: total as f64 / secs,
        drops: after.ringbuf_drops - before.ringbuf_drops,
        events,
        lines: lines.load(Ordering::Relaxed),
    })
}

// ---------------------------------------------------------------------------------------------
// Syscall tracepoints: what enabling one costs every syscall (issue 30, part 2 design input)

/// Enables `syscalls/sys_enter_mmap` through a private tracefs mount while alive. Registering
/// any probe on a syscall tracepoint (ftrace here, a BPF program in production) sets the
/// syscall-tracepoint work flag on every task: every syscall on the node then takes the slow
/// entry/exit path and calls the probe, which looks its syscall up in a bitmap.
struct SyscallTracepointOn {
    mnt: tempfile::TempDir,
}

impl SyscallTracepointOn {
    const EVENT: &'static str = "events/syscalls/sys_enter_mmap/enable";

    fn new() -> Res<Self> {
        let mnt = tempfile::tempdir().map_err(|e| e.to_string())?;
        mount("nodev", mnt.path(), "tracefs", "")?;
        let on = SyscallTracepointOn { mnt };
        fs::write(on.mnt.path().join(Self::EVENT), "1").map_err(|e| format!("enabling {}: {e}", Self::EVENT))?;
        Ok(on)
    }
}

impl Drop for SyscallTracepointOn {
    fn drop(&mut self) {
        let _ = fs::write(self.mnt.path().join(Self::EVENT), "0");
        let c = std::ffi::CString::new(self.mnt.path().as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: unmounting our own private mount point.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// ns per `getpid()` over `n` raw syscalls on the calling thread.
fn getpid_ns(n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: getpid has no preconditions.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getpid) });
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn bench_syscall_slowpath(k: &Knobs, rep: &mut Report) -> Res<()> {
    const CALLS: usize = 2_000_000;
    getpid_ns(CALLS / 4); // warm up
    let (mut off, mut on, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..k.rounds.max(5) {
        // Alternate which configuration goes first, so drift in the machine hits both.
        let (a, b) = if round % 2 == 0 {
            let a = getpid_ns(CALLS);
            let tp = SyscallTracepointOn::new()?;
            let b = getpid_ns(CALLS);
            drop(tp);
            (a, b)
        } else {
            let tp = SyscallTracepointOn::new()?;
            let b = getpid_ns(CALLS);
            drop(tp);
            (getpid_ns(CALLS), b)
        };
        off.push(a);
        on.push(b);
        ratios.push(b / a);
    }
    let (o, n, r) = (mmm(&off), mmm(&on), mmm(&ratios));
    rep.row(
        "syscall",
        "getpid(), no syscall tracepoint: ns/call",
        format!("{:.1} (min {:.1}, max {:.1})", o.1, o.0, o.2),
        "",
        None,
    );
    rep.row(
        "syscall",
        "getpid(), sys_enter_mmap tracepoint enabled: ns/call",
        format!("{:.1} (min {:.1}, max {:.1})", n.1, n.0, n.2),
        "",
        None,
    );
    rep.row("syscall", "ratio (same round)", fmt_ratio(r), "≤ 1.005× (issue 30)", Some(r.1 <= 1.005));
    rep.put(
        "syscall_slowpath",
        serde_json::json!({ "calls_per_block": CALLS, "off_ns": off, "on_ns": on, "ratios": ratios }),
    );
    Ok(())
}

// Mapping calls: what the mapping checks cost (issue 30, part 3): mmap+munmap of an image file
// (read-exec, as ld.so maps libraries) and of anonymous memory (read-write), mprotect of the file
// mapping between read and read-exec, and getpid (no check, but the syscall slow path once a
// syscall tracepoint is attached). Each in a child alone in its cgroup: without BPF, with the
// programs loaded and the cgroup under no policy, and with an enforce policy. Host: the fallback
// with `fallback_mappings`; VM: BPF LSM.

/// The four calls, in this order in the child's output.
const MAP_OPS: [&str; 5] = [
    "mmap+munmap of an image file (r-x)",
    "mmap+munmap anonymous (rw-)",
    "mprotect of the file mapping (r-- <-> r-x)",
    "open+close of the image file (lsm/file_open's hot path)",
    "getpid()",
];

/// The child: joins `DG_CHILD_PROCS`, times `DG_CHILD_N` of each call on `DG_CHILD_FILE`, writes
/// the mean ns of each as f64 (little endian).
fn map_loop_child() -> ! {
    let code = match map_loop_child_inner() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("map loop: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn map_loop_child_inner() -> Res<()> {
    let procs = std::env::var("DG_CHILD_PROCS").map_err(|_| "DG_CHILD_PROCS")?;
    let file = std::env::var("DG_CHILD_FILE").map_err(|_| "DG_CHILD_FILE")?;
    let n: usize = std::env::var("DG_CHILD_N").ok().and_then(|s| s.parse().ok()).ok_or("DG_CHILD_N")?;
    fs::write(&procs, "0").map_err(|e| format!("joining {procs}: {e}"))?;
    let f = fs::File::open(&file).map_err(|e| format!("{file}: {e}"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    const LEN: usize = 4096;
    let rx = libc::PROT_READ | libc::PROT_EXEC;
    let mut out = Vec::new();
    let time = |f: &mut dyn FnMut() -> bool| -> Res<f64> {
        let t = Instant::now();
        for _ in 0..n {
            if !f() {
                return Err(format!("a call failed: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(t.elapsed().as_nanos() as f64 / n as f64)
    };
    // SAFETY (all closures): mappings of our own, unmapped before the next round.
    out.push(time(&mut || unsafe {
        let p = libc::mmap(std::ptr::null_mut(), LEN, rx, libc::MAP_PRIVATE, fd, 0);
        p != libc::MAP_FAILED && libc::munmap(p, LEN) == 0
    })?);
    out.push(time(&mut || unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        p != libc::MAP_FAILED && libc::munmap(p, LEN) == 0
    })?);
    // SAFETY: a read-only mapping of the file, ours until the end.
    let m = unsafe { libc::mmap(std::ptr::null_mut(), LEN, libc::PROT_READ, libc::MAP_PRIVATE, fd, 0) };
    if m == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    let mut exec = false;
    out.push(time(&mut || unsafe {
        exec = !exec;
        libc::mprotect(m, LEN, if exec { rx } else { libc::PROT_READ }) == 0
    })?);
    let cpath = CString::new(file.as_bytes()).map_err(|e| e.to_string())?;
    out.push(time(&mut || {
        // SAFETY: a NUL-terminated path; the fd is ours.
        unsafe {
            let fd = libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            fd >= 0 && libc::close(fd) == 0
        }
    })?);
    out.push(time(&mut || {
        // SAFETY: no preconditions.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getpid) });
        true
    })?);
    let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::io::stdout().write_all(&bytes).map_err(|e| e.to_string())
}

fn run_map_loop(cgroup: &Path, file: &Path, n: usize) -> Res<Vec<f64>> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .env(CHILD_ENV, "map-loop")
        .env("DG_CHILD_PROCS", cgroup.join("cgroup.procs"))
        .env("DG_CHILD_FILE", file)
        .env("DG_CHILD_N", n.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawning the mapping loop: {e}"))?;
    if !out.status.success() {
        return Err(format!("mapping loop failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out.stdout.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
}

/// Per call and configuration (base, unpolicied, enforce): the medians over rounds in ns, the
/// ratios to the base of the same round, and the programs' kernel-accounted ns per checked call.
#[derive(serde::Serialize, serde::Deserialize)]
struct MapResult {
    kernel: String,
    path: String,
    mappings: String,
    calls_per_block: usize,
    /// [config][op] -> ns per round
    ns: Vec<Vec<Vec<f64>>>,
    /// [config 1..][op] -> ratio to base per round
    ratios: Vec<Vec<Vec<f64>>>,
    /// kernel-accounted BPF ns per mmap, mprotect or open call in the enforced cgroup
    bpf_ns_per_call: Vec<f64>,
    /// [config 1..] program -> kernel-accounted ns per run, per round: the programs that ran at
    /// least once per call of the block (the ones on the measured calls' paths; other
    /// processes' runs in the same window are counted too)
    #[serde(default)]
    prog_ns_per_run: Vec<std::collections::BTreeMap<String, Vec<f64>>>,
}

/// Per program that ran at least `min_runs` times between `before` and `after`: ns per run.
fn ns_per_run(
    before: &HashMap<String, (u64, u64)>,
    after: &HashMap<String, (u64, u64)>,
    min_runs: u64,
) -> Vec<(String, f64)> {
    after
        .iter()
        .filter_map(|(name, &(t1, c1))| {
            let (t0, c0) = before.get(name).copied().unwrap_or((0, 0));
            let runs = c1.saturating_sub(c0);
            (runs >= min_runs).then(|| (name.clone(), t1.saturating_sub(t0) as f64 / runs as f64))
        })
        .collect()
}

fn mapping_measure(k: &Knobs, n: usize) -> Res<MapResult> {
    let ov = Overlay::new()?;
    let prov = ov.prov()?;
    let file = ov.merged.join("bin/busybox");
    let mut cg = Cgroups::new()?;
    let free = cg.make("map-free")?;
    let enf_cg = cg.make("map-enforce")?;
    let _stats = BpfStatsOn::new();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let ops = MAP_OPS.len();
    let (mut ns, mut ratios) = (vec![vec![Vec::new(); ops]; 3], vec![vec![Vec::new(); ops]; 2]);
    let (mut path, mut mappings, mut bpf) = (String::new(), String::new(), Vec::new());
    let mut per_run = vec![std::collections::BTreeMap::<String, Vec<f64>>::new(); 2];
    run_map_loop(&free, &file, n / 4)?; // warm up
    for _ in 0..k.rounds {
        let base = run_map_loop(&free, &file, n)?;
        let enf = Enforcer::load(&EnforcerOptions { pin_dir: None, force_fallback: false, fallback_mappings: true })
            .map_err(|e| format!("loading BPF: {e}"))?;
        path = enf.path().as_str().to_string();
        mappings = enf.mapping_checks().as_str().to_string();
        let cgid = cgroup_id(&enf_cg)?;
        let level = enf_cg.strip_prefix(cgroup_root()?).map(|p| p.components().count() as u32).unwrap_or(1);
        enf.store().set(cgid, level, &Policy::with_mode(Mode::Enforce), &prov).map_err(|e| e.to_string())?;
        let before_unpol = prog_totals(&enf);
        let unpol = run_map_loop(&free, &file, n)?;
        let before = prog_totals(&enf);
        for (name, v) in ns_per_run(&before_unpol, &before, n as u64) {
            per_run[0].entry(name).or_default().push(v);
        }
        let enforced = run_map_loop(&enf_cg, &file, n)?;
        let after = prog_totals(&enf);
        let (t0, t1) = (before.values().map(|v| v.0).sum::<u64>(), after.values().map(|v| v.0).sum::<u64>());
        // the mmap, mprotect and open calls of the enforced run (4 blocks of n; munmap, close
        // and getpid run no program of ours)
        bpf.push((t1.saturating_sub(t0)) as f64 / (4 * n) as f64);
        for (name, v) in ns_per_run(&before, &after, n as u64) {
            per_run[1].entry(name).or_default().push(v);
        }
        drop(enf);
        for (c, v) in [&base, &unpol, &enforced].into_iter().enumerate() {
            for (op, x) in v.iter().enumerate().take(ops) {
                ns[c][op].push(*x);
                if c > 0 {
                    ratios[c - 1][op].push(x / base[op]);
                }
            }
        }
    }
    Ok(MapResult {
        kernel,
        path,
        mappings,
        calls_per_block: n,
        ns,
        ratios,
        bpf_ns_per_call: bpf,
        prog_ns_per_run: per_run,
    })
}

fn mapping_report(rep: &mut Report, section: &'static str, r: &MapResult) {
    println!(
        "  kernel {} ({}, mapping checks: {}), {} calls per block",
        r.kernel, r.path, r.mappings, r.calls_per_block
    );
    for (op, name) in MAP_OPS.iter().enumerate() {
        let b = mmm(&r.ns[0][op]);
        rep.row(section, format!("{name}, no BPF: ns"), format!("{:.0} ({:.0}–{:.0})", b.1, b.0, b.2), "", None);
        for (c, (label, target)) in [("not under policy", 1.005), ("enforced", 1.02)].into_iter().enumerate() {
            let x = mmm(&r.ratios[c][op]);
            rep.row(
                section,
                format!("{name}, {label}: ratio"),
                fmt_ratio(x),
                &format!("≤ {target}×"),
                Some(x.1 <= target),
            );
        }
    }
    let b = mmm(&r.bpf_ns_per_call);
    rep.row(
        section,
        "BPF ns per mmap, mprotect or open call, enforced (kernel-accounted)",
        format!("{:.0} ({:.0}–{:.0})", b.1, b.0, b.2),
        "",
        None,
    );
    // Each program's own cost per run: the open hooks' (file_open, sys_exit_openat) is what an
    // open of a task not under policy, and of an enforced one, pays.
    for (c, label) in ["not under policy", "enforced"].into_iter().enumerate() {
        for (prog, v) in r.prog_ns_per_run.get(c).into_iter().flatten() {
            let x = mmm(v);
            rep.row(
                section,
                format!("{prog}: BPF ns per run, {label} (kernel-accounted)"),
                format!("{:.0} ({:.0}–{:.0})", x.1, x.0, x.2),
                "",
                None,
            );
        }
    }
}

fn bench_mapping(k: &Knobs, rep: &mut Report) -> Res<()> {
    let r = mapping_measure(k, 200_000)?;
    mapping_report(rep, "mapping", &r);
    rep.put("mapping", serde_json::to_value(&r).unwrap_or_default());
    Ok(())
}

fn vm_guest_mapping(k: &Knobs) -> Res<()> {
    let r = mapping_measure(k, 5_000)?;
    println!("@@DG_MAP_JSON {}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    Ok(())
}

fn bench_mapping_vm(k: &Knobs, rep: &mut Report) -> Res<()> {
    let kernel = vm::load_kernel("6.12")?;
    vm::qemu_binary()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let chain_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let chain = exec_chain_binary(chain_dir.path())?;
    let guest_chain = "/opt/dg-bench/exec-chain";
    let mut req = vm::VmRequest::new(exe).arg("mapping-guest").file(&chain, guest_chain);
    req.env = vec![
        ("DG_BENCH_IN_VM".into(), "1".into()),
        ("DG_BENCH_ROUNDS".into(), k.rounds.to_string()),
        ("DG_BENCH_CHAIN".into(), guest_chain.into()),
    ];
    req.timeout = Duration::from_secs(900);
    req.memory_mb = 1024;
    let res = vm::run_in_vm(&kernel, &req)?;
    let line = res
        .output
        .lines()
        .find_map(|l| l.strip_prefix("@@DG_MAP_JSON "))
        .ok_or_else(|| format!("no result from the VM (exit {}):\n{}", res.exit_code, res.output))?;
    let r: MapResult = serde_json::from_str(line).map_err(|e| e.to_string())?;
    mapping_report(rep, "mapping-vm", &r);
    rep.put("mapping_vm", serde_json::to_value(&r).unwrap_or_default());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Memory of `driftguard run`

fn rss_kib(pid: u32) -> (u64, u64) {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// BPF maps held by `pid`: (name, memlock bytes), from /proc/<pid>/fdinfo (deduplicated by id).
fn bpf_maps_of(pid: u32) -> Vec<(String, u64, u64)> {
    let mut seen = HashMap::new();
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return Vec::new() };
    for e in rd.flatten() {
        let Ok(info) = fs::read_to_string(e.path()) else { continue };
        let get = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
        let (Some(id), Some(memlock)) = (get("map_id:"), get("memlock:")) else { continue };
        let max = get("max_entries:").and_then(|v| v.parse().ok()).unwrap_or(0);
        seen.insert(id, (memlock.parse::<u64>().unwrap_or(0), max));
    }
    // Names via bpftool (fdinfo has no name on older kernels).
    let names: HashMap<String, String> = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| Some((m["id"].as_u64()?.to_string(), m["name"].as_str()?.to_string())))
        .collect();
    let mut v: Vec<(String, u64, u64)> = seen
        .into_iter()
        .map(|(id, (m, max))| (names.get(&id).cloned().unwrap_or(format!("map {id}")), m, max))
        .collect();
    v.sort();
    v
}

fn bench_memory(k: &Knobs, rep: &mut Report) -> Res<()> {
    let ov = Overlay::new()?;
    let rootfs = RootfsProc::spawn(&ov)?;
    let mut cg = Cgroups::new()?;
    let (pods, ctrs) = make_fleet(&mut cg, "mem", k.nri_containers, 0, rootfs.pid())?;
    let (xp, xc) = make_fleet(&mut cg, "mem-extra", 100, 100_000, rootfs.pid())?;
    let extra: Vec<(PodSandbox, Container)> = xp.into_iter().zip(xc).collect();
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/dg-bench-{}", std::process::id()));
    let _ = driftguard::enforcer::unload(&pin_dir);
    let sock = tmp.path().join("nri.sock");
    let config = tmp.path().join("config.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    fs::write(
        &config,
        format!(
            "default_mode = \"off\"\n[nri]\nsocket = \"{}\"\nreconnect_max_backoff_ms = 300\n[bpf]\npin_dir = \"{}\"\n\
             [events]\nstdout = false\nfile = \"{}\"\nnode_name = \"bench-node\"\n[metrics]\naddress = \"127.0.0.1:{port}\"\n[log]\nlevel = \"info\"\n",
            sock.display(),
            pin_dir.display(),
            tmp.path().join("events.jsonl").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let rt = runtime();
    let _g = rt.enter();
    let peer = RuntimePeer::bind(&sock).map_err(|e| e.to_string())?;
    let log = fs::File::create(tmp.path().join("agent.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .args(["run", "--config"])
        .arg(&config)
        .env("DRIFTGUARD_STATE_DIR", tmp.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("driftguard run: {e}"))?;
    let pid = child.id();
    let res = rt.block_on(async {
        let mut conn = tokio::time::timeout(Duration::from_secs(30), peer.accept())
            .await
            .map_err(|_| "agent did not connect")?
            .map_err(|e| e.to_string())?;
        conn.set_timeout(Duration::from_secs(600));
        conn.handshake().await.map_err(|e| e.to_string())?;
        conn.synchronize(vec![], vec![], 500).await.map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle = rss_kib(pid);
        let t = Instant::now();
        // Same connection: a second Synchronize is not in the protocol, so reconnect by
        // closing; the agent reconnects and we sync the fleet on the new connection.
        conn.close();
        let mut conn = tokio::time::timeout(Duration::from_secs(30), peer.accept())
            .await
            .map_err(|_| "agent did not reconnect")?
            .map_err(|e| e.to_string())?;
        conn.set_timeout(Duration::from_secs(600));
        conn.handshake().await.map_err(|e| e.to_string())?;
        let t_sync = Instant::now();
        conn.synchronize(pods.clone(), ctrs.clone(), 500).await.map_err(|e| e.to_string())?;
        let sync_ms = t_sync.elapsed().as_secs_f64() * 1e3;
        let _ = t;
        time_start_remove(&conn, &extra, 50).await?; // warm-up
        let (start, remove) = time_start_remove(&conn, &extra, 300.min(k.nri_events)).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let loaded = rss_kib(pid);
        let maps = bpf_maps_of(pid);
        conn.close();
        Ok::<_, String>((idle, loaded, maps, sync_ms, start, remove))
    });
    let _ = child.kill();
    let _ = child.wait();
    let installed = driftguard::enforcer::PolicyStore::open_pinned(&pin_dir).map(|s| s.cgroup_ids().len()).unwrap_or(0);
    let _ = driftguard::enforcer::unload(&pin_dir);
    let (idle, loaded, maps, sync_ms, start, remove) = res.map_err(|e| {
        format!("{e}\nagent log:\n{}", fs::read_to_string(tmp.path().join("agent.log")).unwrap_or_default())
    })?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    rep.row("memory", "agent RSS, connected, 0 containers (baseline)", format!("{:.1} MiB", mib(idle.0)), "", None);
    rep.row(
        "memory",
        format!("agent RSS, {} containers under policy (pinned policies: {installed})", k.nri_containers),
        format!(
            "{:.1} MiB (peak VmHWM {:.1} MiB; {:.2}× baseline)",
            mib(loaded.0),
            mib(loaded.1),
            loaded.0 as f64 / idle.0.max(1) as f64
        ),
        "< 30 MiB",
        Some(mib(loaded.0) < 30.0),
    );
    let total: u64 = maps.iter().map(|m| m.1).sum();
    let detail = maps
        .iter()
        .map(|(n, m, max)| format!("{n} {:.1} MiB/{max}", *m as f64 / 1048576.0))
        .collect::<Vec<_>>()
        .join(", ");
    rep.row(
        "memory",
        "BPF map memory (memlock, fdinfo of the agent)",
        format!("{:.1} MiB: {detail}", total as f64 / 1048576.0),
        "",
        None,
    );
    rep.row(
        "memory",
        format!("agent binary: Synchronize {} (log level info)", k.nri_containers),
        format!("{sync_ms:.1} ms"),
        "",
        None,
    );
    let s = lat_summary(&start);
    let r = lat_summary(&remove);
    rep.row(
        "memory",
        "agent binary: StartContainer (1,000 registered)",
        fmt_lat_us(s),
        "p99 < 1 ms",
        Some(s.1 < 1000.0),
    );
    rep.row(
        "memory",
        "agent binary: RemoveContainer (1,000 registered)",
        fmt_lat_us(r),
        "p99 < 1 ms",
        Some(r.1 < 1000.0),
    );
    rep.put(
        "memory",
        serde_json::json!({"rss_idle_kib": idle.0, "rss_kib": loaded.0, "hwm_kib": loaded.1, "bpf_memlock_bytes": total,
            "maps": maps.iter().map(|(n, m, max)| serde_json::json!({"name": n, "memlock": m, "max_entries": max})).collect::<Vec<_>>(),
            "agent_sync_ms": sync_ms, "agent_start_us": [s.0, s.1, s.2], "agent_remove_us": [r.0, r.1, r.2]}),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_default();
    let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    format!("{cpu}, {ncpu} CPUs, {:.0} GiB", mem as f64 / 1048576.0)
}

// ---------------------------------------------------------------------------------------------
// reconnect: containerd restarts

/// One runner (the agent's backoff settings, `watch` on or off) reconnecting to a runtime that
/// goes away for each of `outages` and comes back: the gap between the new socket being bound
/// and the plugin's RegisterPlugin reaching the runtime, per outage.
async fn reconnect_gaps(dir: &Path, watch: bool, outages: &[f64]) -> Res<Vec<f64>> {
    let sock = dir.join(if watch { "watch/nri.sock" } else { "blind/nri.sock" });
    fs::create_dir_all(sock.parent().ok_or("socket dir")?).map_err(|e| e.to_string())?;
    let peer = RuntimePeer::bind(&sock).map_err(|e| e.to_string())?;
    // As agent::run builds it ([nri] reconnect_max_backoff_ms = 5000, the default).
    let runner = nri_plugin::Runner::builder("driftguard", "10")
        .socket_path(&sock)
        .use_env(false)
        .watch_socket(watch)
        .backoff(nri_plugin::Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_millis(5000),
            multiplier: 2.0,
        })
        .build()
        .map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        let _ = runner.run(NoopPlugin).await;
    });
    let accept = |peer: RuntimePeer| async move {
        let mut conn = tokio::time::timeout(Duration::from_secs(60), peer.accept())
            .await
            .map_err(|_| "plugin did not connect within 60s".to_string())?
            .map_err(|e| e.to_string())?;
        conn.set_timeout(Duration::from_secs(60));
        conn.registration().await.map_err(|e| e.to_string())?;
        let at = Instant::now();
        conn.configure(PeerConnection::default_configure_request()).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((peer, conn, at))
    };
    let (mut peer, mut conn, _) = accept(peer).await?;
    let mut gaps = Vec::new();
    for outage in outages {
        conn.close();
        peer.close();
        // The runtime is down for this long (the scenario, not a synchronization).
        tokio::time::sleep(Duration::from_secs_f64(*outage)).await;
        let back = Instant::now();
        let p = RuntimePeer::bind(&sock).map_err(|e| e.to_string())?;
        let (p, c, registered) = accept(p).await?;
        gaps.push((registered - back).as_secs_f64() * 1e3);
        (peer, conn) = (p, c);
    }
    task.abort();
    Ok(gaps)
}

fn bench_reconnect(k: &Knobs, rep: &mut Report) -> Res<()> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = runtime();
    let outages = &k.reconnect_outages;
    let blind = rt.block_on(reconnect_gaps(dir.path(), false, outages))?;
    let watched = rt.block_on(reconnect_gaps(dir.path(), true, outages))?;
    let fmt = |v: &[f64]| {
        let (lo, med, hi) = mmm(v);
        format!("min {lo:.1} / median {med:.1} / max {hi:.1} ms")
    };
    let n = outages.len();
    rep.row(
        "reconnect",
        format!("baseline: blind backoff, gap to RegisterPlugin ({n} outages)"),
        fmt(&blind),
        "",
        None,
    );
    let (_, _, hi) = mmm(&watched);
    rep.row(
        "reconnect",
        format!("inotify on the socket dir, gap to RegisterPlugin ({n} outages)"),
        fmt(&watched),
        "< 100 ms",
        Some(hi < 100.0),
    );
    rep.put("reconnect", serde_json::json!({ "outages_s": outages, "blind_ms": blind, "watched_ms": watched }));
    Ok(())
}

fn main() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("exec-loop") => exec_loop_child(),
        Ok("exec-into") => exec_into_child(),
        Ok("map-loop") => map_loop_child(),
        _ => {}
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--list") || std::env::args().any(|a| a == "--list") {
        return;
    }
    let k = Knobs::from_env();
    if args.first().map(String::as_str) == Some("mapping-guest") {
        if let Err(e) = vm_guest_mapping(&k) {
            eprintln!("mapping-guest: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("exec-guest") {
        if let Err(e) = vm_guest_exec(&k) {
            eprintln!("exec-guest: {e}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo test --all-targets` runs bench targets too, without `--bench`: measure only under
    // `cargo bench` (timings from a debug build would be meaningless anyway).
    if !std::env::args().any(|a| a == "--bench") {
        println!("driftguard bench: not run by `cargo bench` (no --bench argument); nothing measured");
        return;
    }
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("driftguard bench: needs root (BPF, mounts, cgroups); nothing measured");
        return;
    }
    let only: Vec<String> = if !args.is_empty() {
        args
    } else {
        std::env::var("DG_BENCH_ONLY").map(|s| s.split(',').map(str::to_string).collect()).unwrap_or_default()
    };
    let want = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let mut rep = Report::default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    println!("driftguard benchmarks — {} — kernel {kernel}", machine());
    rep.put("machine", serde_json::json!(machine()));
    rep.put("kernel", serde_json::json!(kernel));
    let other_progs = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| {
            v.as_array().map(|a| a.iter().filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("dg_"))).count())
        })
        .unwrap_or(0);
    if other_progs > 0 {
        println!("  note: {other_progs} driftguard BPF programs of other processes are loaded (tests running?): they add to every configuration, baseline included");
    }
    rep.put("foreign_dg_progs", serde_json::json!(other_progs));
    let t0 = Instant::now();
    type Section = Box<dyn Fn(&Knobs, &mut Report) -> Res<()>>;
    let sections: Vec<(&str, Section)> = vec![
        ("exec", Box::new(bench_exec)),
        (
            "exec-vm",
            Box::new(|k: &Knobs, r: &mut Report| if k.vm { bench_exec_vm(k, r) } else { Err("DG_BENCH_VM=0".into()) }),
        ),
        ("nri", Box::new(bench_nri)),
        ("sync", Box::new(bench_sync)),
        ("events", Box::new(|k: &Knobs, r: &mut Report| bench_events(k, r, false))),
        ("memory", Box::new(bench_memory)),
        ("reconnect", Box::new(bench_reconnect)),
        ("syscall", Box::new(bench_syscall_slowpath)),
        ("mapping", Box::new(bench_mapping)),
        (
            "mapping-vm",
            Box::new(
                |k: &Knobs, r: &mut Report| if k.vm { bench_mapping_vm(k, r) } else { Err("DG_BENCH_VM=0".into()) },
            ),
        ),
    ];
    let mut failed = false;
    for (name, f) in sections {
        if !want(name) {
            continue;
        }
        println!("== {name}");
        let t = Instant::now();
        if let Err(e) = f(&k, &mut rep) {
            println!("  {name}: not measured: {e}");
            rep.row("error", name.to_string(), format!("not measured: {}", e.lines().next().unwrap_or("")), "", None);
            failed = true;
        }
        println!("  ({name}: {:.1}s)", t.elapsed().as_secs_f64());
    }
    println!("\n== summary ({:.0}s)\n\n{}", t0.elapsed().as_secs_f64(), rep.markdown());
    let json_path = std::env::var_os("DG_BENCH_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench-driftguard.json"));
    rep.put("table_markdown", serde_json::json!(rep.markdown()));
    if let Ok(s) = serde_json::to_string_pretty(&serde_json::Value::Object(rep.json.clone())) {
        if fs::write(&json_path, s).is_ok() {
            println!("results: {}", json_path.display());
        }
    }
    if failed {
        std::process::exit(1);
    }
}
