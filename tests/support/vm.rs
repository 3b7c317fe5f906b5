//! qemu VM harness: boot a real Debian kernel (BPF LSM enabled) under TCG with a throw-away
//! initramfs and run one command in it.
//!
//! Include from an integration test with:
//! ```ignore
//! #[path = "support/vm.rs"]
//! mod vm;
//! ```
//! Kernels come from `tests/vm/fetch-kernels.sh` (cache `${DRIFTGUARD_VM_CACHE:-<repo>/.vm-cache}`).
//! See `tests/vm/README.md`.
//!
//! Guest layout: the initramfs is copied into a tmpfs and `switch_root`ed into (so `pivot_root`
//! works in the guest), then `/init` mounts proc, sysfs, devtmpfs, devpts, tmpfs (/tmp, /run,
//! /dev/shm), securityfs, bpffs, cgroup2 (/sys/fs/cgroup), debugfs and tracefs, loads the
//! kernel's modules (overlay first), and runs the command with stdin=/dev/null and
//! stdout+stderr on the second serial port (ttyS1), which the host captures as
//! [`VmResult::output`]. The kernel console (ttyS0) is [`VmResult::console`].
//!
//! The guest command always gets `DRIFTGUARD_IN_VM=1` and `DRIFTGUARD_VM_KERNEL=<name>` in
//! its environment, plus `PATH`, `HOME=/root` and the request's `env`. Its cwd is `/`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Environment variable set to `1` for the command run inside the VM.
pub const IN_VM_ENV: &str = "DRIFTGUARD_IN_VM";
/// Environment variable holding the kernel name ("5.10", "6.1", "6.12") inside the VM.
pub const VM_KERNEL_ENV: &str = "DRIFTGUARD_VM_KERNEL";
/// When set to `1`, missing kernels/qemu must fail tests instead of skipping them (CI).
pub const REQUIRE_VM_ENV: &str = "DRIFTGUARD_REQUIRE_VM";
/// Kernel names of the test matrix, in order (cache sub-directories).
pub const EXPECTED_KERNELS: &[&str] = &["5.10", "6.1", "6.12"];

const START_MARKER: &str = "@@DG_START@@";
const EXIT_MARKER: &str = "@@DG_EXIT=";
const INSMOD_FAIL_MARKER: &str = "@@DG_INSMOD_FAIL=";
const INIT_FAIL_MARKER: &str = "@@DG_INIT_FAIL=";
const TAIL_LINES: usize = 40;

#[derive(Debug, Clone)]
pub struct Kernel {
    /// "5.10", "6.1" or "6.12" (cache sub-directory name).
    pub name: String,
    /// Kernel release (`uname -r`), e.g. "6.12.95+deb12-cloud-amd64".
    pub version: String,
    pub vmlinuz: PathBuf,
    /// Modules insmod'ed by init, in this order (overlay.ko first).
    pub modules: Vec<PathBuf>,
    /// Extra kernel command line from `<cache>/<name>/cmdline` (5.10: the `lsm=` list with
    /// `bpf`, which its default CONFIG_LSM lacks). Empty when the file is absent.
    pub cmdline: String,
}

#[derive(Debug, Clone)]
pub struct VmRequest {
    /// Host executable; copied (debug info stripped) to the same absolute path in the guest, or
    /// to `/opt/test/<file name>` when that path is under /tmp, /run, /proc, /sys or /dev.
    /// See [`guest_path`].
    pub exe: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Extra files or directories, host path -> absolute guest path. Dynamically linked ELF
    /// files get their shared libraries (from `ldd`) added too.
    pub files: Vec<(PathBuf, PathBuf)>,
    /// qemu is killed after this long (boot included).
    pub timeout: Duration,
    pub memory_mb: u32,
}

impl VmRequest {
    /// A request with no args/env/files, timeout 300 s and 1024 MiB of guest memory.
    pub fn new(exe: impl Into<PathBuf>) -> Self {
        VmRequest {
            exe: exe.into(),
            args: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
            timeout: Duration::from_secs(300),
            memory_mb: 1024,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn file(mut self, host: impl Into<PathBuf>, guest: impl Into<PathBuf>) -> Self {
        self.files.push((host.into(), guest.into()));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

#[derive(Debug, Clone)]
pub struct VmResult {
    /// Exit status of the guest command (128+N when killed by signal N).
    pub exit_code: i32,
    /// The guest command's stdout+stderr (CRLF turned into LF).
    pub output: String,
    /// Full kernel/init console log (ttyS0).
    pub console: String,
    /// Wall time from qemu start to qemu exit.
    pub elapsed: Duration,
}

impl VmResult {
    /// For a libtest guest command: every `must_run` trial appears in the output, and the summary
    /// is `ok` with 0 failed and 0 ignored (nothing may be skipped inside the VM).
    pub fn check_trials(&self, must_run: &[&str]) -> Result<(), String> {
        for must in must_run {
            if !self
                .output
                .lines()
                .any(|l| l.strip_prefix("test ").and_then(|r| r.split_whitespace().next()) == Some(must))
            {
                return Err(format!("VM output lacks trial `{must}`"));
            }
        }
        if !self
            .output
            .lines()
            .any(|l| l.starts_with("test result: ok.") && l.contains(" 0 failed;") && l.contains(" 0 ignored;"))
        {
            return Err("VM summary is not `ok` with 0 failed and 0 ignored".into());
        }
        Ok(())
    }
}

/// Trials that, on a kernel of the matrix, state a kernel limit (`LIMIT <trial>: <why>` on stdout)
/// instead of making their check, because the kernel cannot run it or the attack cannot be staged
/// there. docs/bpf.md's kernel table lists the same. [`VmResult::check_limits`] fails a VM run
/// with a LIMIT line not in this list, and prints the ones it saw: a limit is never a silent pass.
pub const EXPECTED_LIMITS: &[(&str, &[&str])] = &[
    (
        "5.10",
        &[
            // BPF_PROG_TYPE_SYSCALL (the decision tester) is 5.14+
            "decision_function_matches_spec",
            // overlay mounts in a user namespace are 5.11+
            "second_overlay_in_user_namespace_exec_denied",
            // binfmt_misc in a user namespace is 6.7+
            "binfmt_misc_in_user_namespace_cannot_launder_drift",
        ],
    ),
    ("6.1", &["binfmt_misc_in_user_namespace_cannot_launder_drift"]),
];

impl VmResult {
    /// The trials that printed `LIMIT <trial>:` must be among [`EXPECTED_LIMITS`] for `kernel`;
    /// prints them, so the VM trial's output counts them. Returns how many there were.
    pub fn check_limits(&self, kernel: &str) -> Result<usize, String> {
        let expected: &[&str] = EXPECTED_LIMITS.iter().find(|(k, _)| *k == kernel).map(|(_, l)| *l).unwrap_or(&[]);
        let mut seen: Vec<&str> = Vec::new();
        for l in self.output.lines() {
            // the line may follow libtest's "test <name> ... " on the same line
            if let Some(rest) = l.split("LIMIT ").nth(1) {
                if let Some((name, _)) = rest.split_once(':') {
                    if !name.contains(' ') {
                        seen.push(name);
                    }
                }
            }
        }
        let unexpected: Vec<&&str> = seen.iter().filter(|n| !expected.contains(n)).collect();
        if !unexpected.is_empty() {
            return Err(format!(
                "kernel {kernel}: trials stated a limit not listed in EXPECTED_LIMITS: {unexpected:?}"
            ));
        }
        println!("kernel {kernel}: {} trial(s) stated a kernel limit (listed in docs/bpf.md): {seen:?}", seen.len());
        Ok(seen.len())
    }
}

/// True inside the VM (the guest command's environment has `DRIFTGUARD_IN_VM=1`).
pub fn in_vm() -> bool {
    std::env::var(IN_VM_ENV).map(|v| v == "1").unwrap_or(false)
}

/// Kernel name ("5.10", "6.1", "6.12") when running inside the VM.
pub fn guest_kernel() -> Option<String> {
    if in_vm() {
        std::env::var(VM_KERNEL_ENV).ok()
    } else {
        None
    }
}

/// `DRIFTGUARD_REQUIRE_VM=1`: missing VM support is a failure, not a skip.
pub fn require_vm() -> bool {
    std::env::var(REQUIRE_VM_ENV).map(|v| v == "1").unwrap_or(false)
}

/// Builds the trials of a suite: each runs, fails (CI sets `DRIFTGUARD_REQUIRE_ALL=1`) or is
/// skipped with a `SKIP <name>: <reason>` line when it cannot run here. Shared by every suite
/// that includes this module.
pub struct Gate {
    pub require_all: bool,
    soft: Vec<&'static str>,
}

impl Gate {
    pub fn from_env() -> Self {
        Gate { require_all: std::env::var("DRIFTGUARD_REQUIRE_ALL").is_ok_and(|v| v == "1"), soft: Vec::new() }
    }

    /// Reasons starting with `prefix` are skips even under `DRIFTGUARD_REQUIRE_ALL`: they name
    /// trials that run elsewhere (inside the VM, or on the host only).
    pub fn soft(mut self, prefix: &'static str) -> Self {
        self.soft.push(prefix);
        self
    }

    /// `reason`: why the trial cannot run here (`None`: it can).
    pub fn trial(
        &self,
        name: &str,
        reason: &Option<String>,
        f: fn() -> Result<(), libtest_mimic::Failed>,
    ) -> libtest_mimic::Trial {
        use libtest_mimic::Trial;
        match reason {
            None => Trial::test(name, f),
            Some(why) if self.require_all && !self.soft.iter().any(|p| why.starts_with(p)) => {
                let why = why.clone();
                Trial::test(name, move || Err(format!("cannot run (DRIFTGUARD_REQUIRE_ALL=1): {why}").into()))
            }
            Some(why) => {
                eprintln!("SKIP {name}: {why}");
                Trial::test(name, f).with_ignored_flag(true)
            }
        }
    }

    /// One trial per VM kernel (`<prefix>_5_10`, `<prefix>_6_1`, `<prefix>_6_12`) running `run`; failed (CI, or
    /// `DRIFTGUARD_REQUIRE_VM=1`) or skipped when the kernels are missing.
    pub fn vm_trials(
        &self,
        prefix: &str,
        run: fn(&Kernel) -> Result<(), libtest_mimic::Failed>,
    ) -> Vec<libtest_mimic::Trial> {
        self.vm_trials_if(prefix, &None, run)
    }

    /// [`Gate::vm_trials`], also failed or skipped when `reason` says the suite cannot run.
    pub fn vm_trials_if(
        &self,
        prefix: &str,
        reason: &Option<String>,
        run: fn(&Kernel) -> Result<(), libtest_mimic::Failed>,
    ) -> Vec<libtest_mimic::Trial> {
        use libtest_mimic::Trial;
        let required = self.require_all || require_vm();
        let missing = |name: String, why: String| {
            if required {
                Trial::test(name, move || Err(format!("cannot run: {why}").into()))
            } else {
                eprintln!("SKIP {name}: {why}");
                Trial::test(name, || Ok(())).with_ignored_flag(true)
            }
        };
        let trial_name = |k: &str| format!("{prefix}_{}", k.replace('.', "_"));
        let why = match (kernels(), reason) {
            (Ok(kernels), None) => {
                // A kernel of the matrix that is not cached is a skip (failure under
                // DRIFTGUARD_REQUIRE_VM / _ALL), never silently absent -- unless the run is
                // restricted to other kernels with DRIFTGUARD_VM_KERNELS.
                let only = std::env::var("DRIFTGUARD_VM_KERNELS").ok();
                let selected = |n: &str| only.as_deref().map(|o| o.split([',', ' ']).any(|x| x == n)).unwrap_or(true);
                let mut out = Vec::new();
                for n in EXPECTED_KERNELS.iter().filter(|n| selected(n)) {
                    if !kernels.iter().any(|k| k.name == *n) {
                        let why = load_kernel(n).err().unwrap_or_else(|| format!("kernel {n} not loadable"));
                        out.push(missing(trial_name(n), format!("{why} (run tests/vm/fetch-kernels.sh)")));
                    }
                }
                out.extend(kernels.into_iter().map(|k| Trial::test(trial_name(&k.name), move || run(&k))));
                return out;
            }
            (Err(e), _) => format!("{e} (run tests/vm/fetch-kernels.sh)"),
            (Ok(_), Some(r)) => r.clone(),
        };
        EXPECTED_KERNELS.iter().map(|v| missing(trial_name(v), why.clone())).collect()
    }
}

/// The kernel cache: `$DRIFTGUARD_VM_CACHE` or `<repo>/.vm-cache`. `<repo>` is the nearest
/// ancestor of the crate's manifest dir holding `tests/vm/fetch-kernels.sh`, so workspace
/// members (e.g. `oci-hooks/`) share the root's cache.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DRIFTGUARD_VM_CACHE") {
        return PathBuf::from(d);
    }
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let repo =
        manifest.ancestors().find(|d| d.join("tests/vm/fetch-kernels.sh").is_file()).unwrap_or(&manifest).to_path_buf();
    repo.join(".vm-cache")
}

fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return p.is_file().then_some(p);
    }
    driftguard::check::find_in_path(prog)
}

/// `$DRIFTGUARD_QEMU` or `qemu-system-x86_64` from PATH.
pub fn qemu_binary() -> Result<PathBuf, String> {
    let name = std::env::var("DRIFTGUARD_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    which(&name).ok_or_else(|| format!("{name} not found (install qemu-system-x86 from bookworm-backports)"))
}

fn busybox_binary() -> Result<PathBuf, String> {
    if let Ok(b) = std::env::var("DRIFTGUARD_BUSYBOX") {
        return Ok(PathBuf::from(b));
    }
    driftguard::demo::BUSYBOX_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| which("busybox"))
        .ok_or_else(|| "busybox not found (install busybox-static)".to_string())
}

/// Load one kernel from `<cache>/<name>/`.
pub fn load_kernel(name: &str) -> Result<Kernel, String> {
    let dir = cache_dir().join(name);
    let vmlinuz = dir.join("vmlinuz");
    if !vmlinuz.is_file() {
        return Err(format!("kernel {name}: {} missing (run tests/vm/fetch-kernels.sh as root)", vmlinuz.display()));
    }
    let version =
        fs::read_to_string(dir.join("version")).map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into());
    let mut modules: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().map(|x| x == "ko").unwrap_or(false))
        .collect();
    modules.sort_by_key(|p| (p.file_name() != Some("overlay.ko".as_ref()), p.clone()));
    let cmdline = match fs::read_to_string(dir.join("cmdline")) {
        Ok(s) => s.split_whitespace().collect::<Vec<_>>().join(" "),
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("kernel {name}: {}: {e}", dir.join("cmdline").display())),
    };
    Ok(Kernel { name: name.to_string(), version, vmlinuz, modules, cmdline })
}

/// For each name of [`EXPECTED_KERNELS`]: the kernel, or why it cannot be used (for skip or
/// failure messages). qemu/busybox missing is reported for every name.
pub fn kernel_matrix() -> Vec<(String, Result<Kernel, String>)> {
    let tools = qemu_binary().and_then(|_| busybox_binary());
    EXPECTED_KERNELS
        .iter()
        .map(|n| {
            let r = match &tools {
                Err(e) => Err(e.clone()),
                Ok(_) => load_kernel(n),
            };
            (n.to_string(), r)
        })
        .collect()
}

/// Kernels present in the cache; Err(reason) if none / qemu missing, for skip messages.
pub fn kernels() -> Result<Vec<Kernel>, String> {
    qemu_binary()?;
    busybox_binary()?;
    let cache = cache_dir();
    let mut names: Vec<String> = EXPECTED_KERNELS.iter().map(|s| s.to_string()).collect();
    if let Ok(rd) = fs::read_dir(&cache) {
        let mut extra: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("vmlinuz").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && !names.contains(n))
            .collect();
        extra.sort();
        names.extend(extra);
    }
    let only: Option<Vec<String>> = std::env::var("DRIFTGUARD_VM_KERNELS")
        .ok()
        .map(|s| s.split([',', ' ']).filter(|x| !x.is_empty()).map(String::from).collect());
    let ks: Vec<Kernel> = names
        .iter()
        .filter(|n| only.as_ref().map(|o| o.contains(n)).unwrap_or(true))
        .filter_map(|n| load_kernel(n).ok())
        .collect();
    if ks.is_empty() {
        return Err(format!("no kernels in {} (run `sudo tests/vm/fetch-kernels.sh`)", cache.display()));
    }
    Ok(ks)
}

/// Where [`run_in_vm`] puts `exe` in the guest.
pub fn guest_path(exe: &Path) -> PathBuf {
    let abs = fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
    let hidden = ["/tmp", "/run", "/proc", "/sys", "/dev"].iter().any(|p| abs.starts_with(p));
    if hidden || !abs.is_absolute() {
        PathBuf::from("/opt/test").join(abs.file_name().unwrap_or("exe".as_ref()))
    } else {
        abs
    }
}

/// A request that re-runs the current (libtest-mimic) test binary inside the VM with
/// `--exact <trial> --nocapture --test-threads=1`.
pub fn self_request(trial: &str) -> Result<VmRequest, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut req = VmRequest::new(exe);
    req.args = vec![trial.to_string(), "--exact".into(), "--nocapture".into(), "--test-threads=1".into()];
    if let Ok(v) = std::env::var("RUST_BACKTRACE") {
        req.env.push(("RUST_BACKTRACE".into(), v));
    }
    Ok(req)
}

// ---------------------------------------------------------------------------------------------

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> io::Result<TempDir> {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::var_os("DRIFTGUARD_VM_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let p = base.join(format!("dg-vm-{}-{}-{:x}", std::process::id(), N.fetch_add(1, Ordering::SeqCst), nanos));
        fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("DRIFTGUARD_VM_KEEP").is_some() {
            eprintln!("vm: keeping {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `root` joined with an absolute guest path, refusing `..`.
fn in_root(root: &Path, guest: &Path) -> Result<PathBuf, String> {
    if !guest.is_absolute() {
        return Err(format!("guest path {} is not absolute", guest.display()));
    }
    let mut p = root.to_path_buf();
    for c in guest.components() {
        match c {
            Component::Normal(x) => p.push(x),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(format!("guest path {} contains ..", guest.display())),
        }
    }
    Ok(p)
}

fn copy_file(src: &Path, dst: &Path) -> Result<(), String> {
    if let Some(d) = dst.parent() {
        fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    fs::copy(src, dst).map_err(|e| format!("copy {} -> {}: {e}", src.display(), dst.display()))?;
    Ok(())
}

/// `bin` without debug info, as `<dir>/<its file name>` (a plain copy if `strip` fails): for a
/// [`VmRequest::files`] entry that keeps the guest's initramfs small.
pub fn stripped(bin: &Path, dir: &Path) -> Result<PathBuf, String> {
    let name = bin.file_name().ok_or_else(|| format!("{}: no file name", bin.display()))?;
    let dst = dir.join(name);
    copy_stripped(bin, &dst)?;
    Ok(dst)
}

/// The environment of a suite re-run inside a VM kernel ([`VmRequest::env`]): BPF LSM expected
/// (`DG_EXPECT_PATH=lsm`), skips fail (`DRIFTGUARD_REQUIRE_ALL=1`), backtraces, and a PATH with
/// the sbin directories.
pub fn suite_env() -> Vec<(String, String)> {
    [
        ("DG_EXPECT_PATH", "lsm"),
        ("DRIFTGUARD_REQUIRE_ALL", "1"),
        ("RUST_BACKTRACE", "1"),
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Copy `src` to `dst` without debug info (falls back to a plain copy if `strip` fails).
fn copy_stripped(src: &Path, dst: &Path) -> Result<(), String> {
    if let Some(d) = dst.parent() {
        fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(dst)
        .arg(src)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        copy_file(src, dst)?;
    }
    let mode = fs::metadata(src).map(|m| m.permissions().mode()).unwrap_or(0o755);
    fs::set_permissions(dst, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path, elves: &mut Vec<PathBuf>) -> Result<(), String> {
    let md = fs::symlink_metadata(src).map_err(|e| format!("{}: {e}", src.display()))?;
    if md.file_type().is_symlink() {
        let t = fs::read_link(src).map_err(|e| e.to_string())?;
        if let Some(d) = dst.parent() {
            fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        let _ = fs::remove_file(dst);
        std::os::unix::fs::symlink(&t, dst).map_err(|e| format!("symlink {}: {e}", dst.display()))
    } else if md.is_dir() {
        fs::create_dir_all(dst).map_err(|e| format!("mkdir {}: {e}", dst.display()))?;
        fs::set_permissions(dst, fs::Permissions::from_mode(md.permissions().mode())).map_err(|e| e.to_string())?;
        let mut ents: Vec<_> =
            fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))?.filter_map(|e| e.ok()).collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            copy_tree(&e.path(), &dst.join(e.file_name()), elves)?;
        }
        Ok(())
    } else {
        copy_file(src, dst)?;
        if is_dynamic_elf(src) {
            elves.push(src.to_path_buf());
        }
        Ok(())
    }
}

/// ELF with a PT_INTERP program header (i.e. needs ld.so and shared libraries).
fn is_dynamic_elf(p: &Path) -> bool {
    let Ok(data) = read_prefix(p, 64 * 1024) else {
        return false;
    };
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return false;
    }
    let u16le = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16le(0x36), u16le(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= data.len() && u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) == 3
    })
}

fn read_prefix(p: &Path, n: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(n);
    fs::File::open(p)?.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Shared libraries of `exe` (absolute host paths, incl. the dynamic loader) from `ldd`.
fn ldd(exe: &Path) -> Result<Vec<PathBuf>, String> {
    if !is_dynamic_elf(exe) {
        return Ok(Vec::new());
    }
    let out = Command::new("ldd")
        .arg(exe)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ldd {}: {e}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("ldd {} failed: {}{}", exe.display(), text, String::from_utf8_lossy(&out.stderr)));
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            return Err(format!("ldd {}: {line}", exe.display()));
        }
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

// --- newc cpio writer ------------------------------------------------------------------------

struct Cpio<W: Write> {
    w: W,
    ino: u32,
    off: u64,
}

impl<W: Write> Cpio<W> {
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        mtime: u64,
        data: &[u8],
        rdev: (u32, u32),
    ) -> io::Result<()> {
        self.ino += 1;
        let hdr = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            mtime as u32,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.put(hdr.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.off += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = ((4 - self.off % 4) % 4) as usize;
        self.put(&[0u8; 3][..n])
    }

    /// Add everything under `dir` (as paths relative to it), parents before children.
    fn add_tree(&mut self, dir: &Path, rel: &str) -> io::Result<()> {
        let mut ents: Vec<_> = fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let p = e.path();
            let md = fs::symlink_metadata(&p)?;
            let ft = md.file_type();
            let mtime = md.mtime().max(0) as u64;
            if ft.is_symlink() {
                let t = fs::read_link(&p)?;
                self.entry(&rel, 0o120777, 1, mtime, t.as_os_str().as_encoded_bytes(), (0, 0))?;
            } else if ft.is_dir() {
                self.entry(&rel, 0o040000 | (md.mode() & 0o7777), 2, mtime, &[], (0, 0))?;
                self.add_tree(&p, &rel)?;
            } else if ft.is_file() {
                let data = fs::read(&p)?;
                self.entry(&rel, 0o100000 | (md.mode() & 0o7777), 1, mtime, &data, (0, 0))?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, 0, &[], (0, 0))?;
        self.w.flush()?;
        Ok(self.w)
    }
}

// --- init --------------------------------------------------------------------------------------

fn init_script(guest_exe: &Path, req: &VmRequest, kernel: &Kernel) -> Result<String, String> {
    let mut exports = String::new();
    let mut env: Vec<(String, String)> =
        vec![(IN_VM_ENV.into(), "1".into()), (VM_KERNEL_ENV.into(), kernel.name.clone())];
    env.extend(req.env.iter().cloned());
    for (k, v) in &env {
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("invalid environment variable name {k:?}"));
        }
        exports.push_str(&format!("export {k}={}; ", sh_quote(v)));
    }
    let mut cmd = sh_quote(&guest_exe.to_string_lossy());
    for a in &req.args {
        cmd.push(' ');
        cmd.push_str(&sh_quote(a));
    }
    Ok(format!(
        r#"#!/bin/busybox sh
# generated by tests/support/vm.rs
B=/bin/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
fail() {{ echo "{INIT_FAIL}$*@@"; $B sync; $B poweroff -f; $B sleep 5; }}
if [ "$1" != stage2 ]; then
    # Stage 1 (on rootfs): copy everything to a tmpfs and switch_root into it so that
    # pivot_root (runc, unshare tests) works in the guest.
    $B mkdir -p /newroot || fail mkdir
    $B mount -t tmpfs -o mode=0755 tmpfs /newroot || fail tmpfs
    for f in /* /.[!.]*; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        [ "$f" = /newroot ] && continue
        $B cp -a "$f" /newroot/ || fail "cp $f"
    done
    exec $B switch_root /newroot /init stage2
    fail switch_root
fi
$B mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /run /root /etc
$B --install -s 2>/dev/null
mount -t proc proc /proc || fail proc
mount -t sysfs sysfs /sys || fail sysfs
mount -t devtmpfs devtmpfs /dev || fail devtmpfs
mkdir -p /dev/pts /dev/shm
mount -t devpts -o ptmxmode=0666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
for d in /tmp /run; do
    mkdir -p /.mnt
    mount -t tmpfs tmpfs /.mnt || fail "tmpfs $d"
    cp -a "$d/." /.mnt/
    rm -rf "$d"/* "$d"/.[!.]* 2>/dev/null
    mount -o move /.mnt "$d" || fail "move $d"
done
chmod 1777 /tmp
rmdir /.mnt
mount -t securityfs securityfs /sys/kernel/security || fail securityfs
mount -t bpf bpf /sys/fs/bpf || fail bpffs
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail cgroup2
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
[ -e /etc/mtab ] || ln -s /proc/mounts /etc/mtab
[ -e /etc/passwd ] || echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd
[ -e /etc/group ] || echo 'root:x:0:' > /etc/group
hostname driftguard-vm
ip link set lo up 2>/dev/null
for m in /lib/modules/driftguard-vm/*.ko; do
    [ -e "$m" ] || continue
    insmod "$m" || echo "{INSMOD_FAIL}$m@@"
done
OUT=/dev/ttyS1
stty -F $OUT raw -echo 2>/dev/null || OUT=/dev/console
echo "@@DG_RUN uptime=$(cut -d' ' -f1 /proc/uptime) out=$OUT@@"
cd /
{{
    echo "{START}"
    ( {exports}exec {cmd} )
    printf '\n{EXIT}%d@@\n' $?
}} >$OUT 2>&1 </dev/null
# Kill leftovers so that the last close of ttyS1 drains its buffer before power-off.
kill -9 -1 2>/dev/null
sleep 0.1
echo "@@DG_DONE uptime=$(cut -d' ' -f1 /proc/uptime)@@"
sync
poweroff -f
"#,
        INIT_FAIL = INIT_FAIL_MARKER,
        INSMOD_FAIL = INSMOD_FAIL_MARKER,
        START = START_MARKER,
        EXIT = EXIT_MARKER,
    ))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn read_log(p: &Path) -> String {
    let b = fs::read(p).unwrap_or_default();
    String::from_utf8_lossy(&b).replace("\r\n", "\n")
}

/// Drop terminal escape sequences (SeaBIOS clears the screen on the console).
fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if it.peek() == Some(&'[') {
            it.next();
            while let Some(&n) = it.peek() {
                it.next();
                if n.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            it.next();
        }
    }
    out
}

/// The "Kernel panic - ..." line, if any.
fn panic_line(console: &str) -> Option<&str> {
    console.lines().find(|l| l.contains("Kernel panic"))
}

/// Parse "START\n<output>\n@@DG_EXIT=<n>@@" from a serial log.
fn parse_output(log: &str) -> Option<(String, i32)> {
    let start = log.find(START_MARKER)?;
    let rest = &log[start + START_MARKER.len()..];
    let rest = rest.strip_prefix('\n').unwrap_or(rest);
    let end = rest.rfind(EXIT_MARKER)?;
    let code: i32 = rest[end + EXIT_MARKER.len()..].split("@@").next()?.trim().parse().ok()?;
    let out = &rest[..end];
    // init prints "\n" before the exit marker.
    let out = out.strip_suffix('\n').unwrap_or(out);
    Some((out.to_string(), code))
}

fn build_initrd(kernel: &Kernel, req: &VmRequest, root: &Path, initrd: &Path) -> Result<(), String> {
    let busybox = busybox_binary()?;
    let mut elves: Vec<PathBuf> = vec![busybox.clone()];
    copy_file(&busybox, &root.join("bin/busybox"))?;
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).map_err(|e| e.to_string())?;

    let exe = fs::canonicalize(&req.exe).map_err(|e| format!("{}: {e}", req.exe.display()))?;
    let guest_exe = guest_path(&exe);
    copy_stripped(&exe, &in_root(root, &guest_exe)?)?;
    elves.push(exe.clone());

    for (host, guest) in &req.files {
        copy_tree(host, &in_root(root, guest)?, &mut elves)?;
    }

    let mut libs = BTreeSet::new();
    for e in &elves {
        libs.extend(ldd(e)?);
    }
    for lib in &libs {
        let dst = in_root(root, lib)?;
        if !dst.exists() {
            copy_file(lib, &dst)?;
        }
    }

    let moddir = root.join("lib/modules/driftguard-vm");
    fs::create_dir_all(&moddir).map_err(|e| e.to_string())?;
    for (i, m) in kernel.modules.iter().enumerate() {
        let name = m.file_name().unwrap_or_default().to_string_lossy();
        copy_file(m, &moddir.join(format!("{i:02}-{name}")))?;
    }

    let init = root.join("init");
    fs::write(&init, init_script(&guest_exe, req, kernel)?).map_err(|e| e.to_string())?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    for d in ["proc", "sys", "dev", "tmp", "run", "root", "etc"] {
        fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }

    let f = fs::File::create(initrd).map_err(|e| format!("{}: {e}", initrd.display()))?;
    let mut cpio = Cpio { w: BufWriter::with_capacity(1 << 20, f), ino: 0, off: 0 };
    let w = (|| -> io::Result<()> {
        cpio.add_tree(root, "")?;
        // /dev/console for the kernel to open as init's stdio (char 5:1).
        cpio.entry("dev/console", 0o020600, 1, 0, &[], (5, 1))?;
        cpio.finish()?;
        Ok(())
    })();
    w.map_err(|e| format!("writing initrd: {e}"))
}

/// [`run_in_vm`] for a suite re-run inside `kernel`: prints the guest's output under a
/// `--- kernel <name> (<version>) in <s>s ---` line; Err also when the guest's run failed, with
/// `what` (e.g. "agent trials") in the message.
pub fn run_suite(kernel: &Kernel, req: &VmRequest, what: &str) -> Result<VmResult, String> {
    let t = std::time::Instant::now();
    let res = run_in_vm(kernel, req).map_err(|e| format!("VM {} ({}): {e}", kernel.name, kernel.version))?;
    println!(
        "--- kernel {} ({}) in {:.1}s ---\n{}",
        kernel.name,
        kernel.version,
        t.elapsed().as_secs_f64(),
        res.output
    );
    if res.exit_code != 0 {
        return Err(format!("{what} failed inside the {} VM (exit {}); output above", kernel.name, res.exit_code));
    }
    Ok(res)
}

/// Boot `kernel` in qemu (TCG) and run `req.exe` in it. Err if the VM could not be built or
/// started, timed out, panicked, or finished without the exit marker (with the console tail).
pub fn run_in_vm(kernel: &Kernel, req: &VmRequest) -> Result<VmResult, String> {
    let qemu = qemu_binary()?;
    let tmp = TempDir::new().map_err(|e| format!("temp dir: {e}"))?;
    let root = tmp.0.join("root");
    let initrd = tmp.0.join("initrd.cpio");
    build_initrd(kernel, req, &root, &initrd)?;
    let _ = fs::remove_dir_all(&root);

    let console_log = tmp.0.join("console.log");
    let output_log = tmp.0.join("output.log");
    let qemu_log = tmp.0.join("qemu.log");
    let accel = std::env::var("DRIFTGUARD_VM_ACCEL").unwrap_or_else(|_| "tcg".into());
    let mut append = String::from("console=ttyS0 panic=-1 oops=panic quiet 8250.nr_uarts=2");
    if !kernel.cmdline.is_empty() {
        append.push(' ');
        append.push_str(&kernel.cmdline);
    }
    if let Ok(extra) = std::env::var("DRIFTGUARD_VM_APPEND") {
        append.push(' ');
        append.push_str(&extra);
    }
    let qlog = fs::File::create(&qemu_log).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = Command::new(&qemu)
        .args(["-accel", &accel, "-cpu", "max", "-smp", "1"])
        .arg("-m")
        .arg(req.memory_mb.to_string())
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console_log.display()))
        .arg("-serial")
        .arg(format!("file:{}", output_log.display()))
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(&append)
        .stdin(Stdio::null())
        .stdout(qlog.try_clone().map_err(|e| e.to_string())?)
        .stderr(qlog)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", qemu.display()))?;

    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for qemu: {e}")),
        }
        if started.elapsed() >= req.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let console = strip_escapes(&read_log(&console_log));
    let out_log = read_log(&output_log);
    let diag = |what: String| -> String {
        let ql = read_log(&qemu_log);
        let mut s = format!(
            "{what} (kernel {} {}, {:.1}s)\n--- last {TAIL_LINES} console lines ---\n{}",
            kernel.name,
            kernel.version,
            elapsed.as_secs_f64(),
            tail(&console, TAIL_LINES)
        );
        if !out_log.trim().is_empty() {
            s.push_str(&format!("\n--- last {TAIL_LINES} output lines ---\n{}", tail(&out_log, TAIL_LINES)));
        }
        if !ql.trim().is_empty() {
            s.push_str(&format!("\n--- qemu ---\n{}", tail(&ql, 10)));
        }
        s
    };

    let Some(status) = status else {
        return Err(diag(format!("VM timed out after {:?}", req.timeout)));
    };
    if let Some(i) = console.find(INIT_FAIL_MARKER) {
        let what = console[i + INIT_FAIL_MARKER.len()..].split("@@").next().unwrap_or("");
        return Err(diag(format!("guest init failed: {what}")));
    }
    if let Some(i) = console.find(INSMOD_FAIL_MARKER) {
        let what = console[i + INSMOD_FAIL_MARKER.len()..].split("@@").next().unwrap_or("");
        return Err(diag(format!("guest insmod failed: {what}")));
    }
    let parsed = parse_output(&out_log).or_else(|| parse_output(&console));
    match parsed {
        Some((output, exit_code)) => {
            if let Some(l) = panic_line(&console) {
                return Err(diag(l.trim().to_string()));
            }
            Ok(VmResult { exit_code, output, console, elapsed })
        }
        None => {
            let why = if let Some(l) = panic_line(&console) {
                l.trim().to_string()
            } else {
                format!("no exit marker from the guest (qemu {status})")
            };
            Err(diag(why))
        }
    }
}
