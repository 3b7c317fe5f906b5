//! `driftguard check`: is this node ready for driftguard, and what to do if not.
//!
//! Every item has a status (`ok`, `warn`, `fail`), what was found and, when
//! something should change, a concrete command or config line. The decisions
//! are pure functions over the inputs read from the system (lsm list, mountinfo,
//! containerd config text, version strings), unit-tested below; [`gather`]
//! only reads the system, using the enforcer's probes ([`crate::enforcer`]) for
//! BTF, the LSM list and bpffs. The binary's `src/cli/check.rs` handles the flags
//! and prints the report.
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cgroup::CgroupRoot;
use crate::config::Config;
use crate::enforcer::{
    self, parse_lsm_list, EnforcementPath, Enforcer, EnforcerOptions, LayoutProof, OverlayUpper, BTF_PATH, LSM_LIST,
};
use serde::Serialize;

const LOCKDOWN: &str = "/sys/kernel/security/lockdown";
#[cfg(test)]
const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
const NRI_SECTION: &str = "io.containerd.nri.v1.nri";
/// Where the packages install the base runtime spec with driftguard's hooks.
const SHIPPED_BASE_SPEC: &str = "/usr/share/driftguard/containerd/base-runtime-spec.json";
const ANNOTATION_PATTERN: &str = "driftguard.dev/*";

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Only root can know (the verdict needs the load test): never `ok` for one user and `warn`
    /// for another on the same node.
    Unknown,
}

impl Status {
    /// `ok`, `warn` or `fail`, as in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Stable identifier (`btf`, `bpf_lsm`, ...).
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (command or config text); `None` when nothing is needed.
    pub fix: Option<String>,
}

impl Item {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Item { name, status: Status::Ok, detail: detail.into(), fix: None }
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Item { name, status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Item { name, status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
    fn unknown(name: &'static str, detail: impl Into<String>) -> Self {
        Item {
            name,
            status: Status::Unknown,
            detail: detail.into(),
            fix: Some("run `driftguard check` as root: the verdict needs the load test".into()),
        }
    }
}

/// Names of every item, in report order: what [`gather`] returns (tests/cli_check_demo.rs checks
/// the binary's report against it).
pub const ITEM_NAMES: [&str; 16] = [
    "root",
    "kernel",
    "btf",
    "lockdown",
    "bpf_lsm",
    "enforcement",
    "capabilities",
    "bpffs",
    "overlayfs",
    "cgroup_v2",
    "nri_socket",
    "containerd",
    "containerd_nri",
    "containerd_hook",
    "runc",
    "podman",
];

/// Where the runtime is, when not at its default place (`--containerd-config`, `--containerd`;
/// the NRI socket comes from `--nri-socket` / `[nri] socket`).
#[derive(Debug, Clone)]
pub struct Runtime {
    /// containerd's config file.
    pub containerd_config: PathBuf,
    /// containerd's binary; `None`: `containerd` on `$PATH` or in the sbin directories.
    pub containerd_bin: Option<PathBuf>,
}

// ---------------------------------------------------------------------------
// Gathering (reads the system, calls the pure checks)

/// Read the system and judge every item, in [`ITEM_NAMES`] order. Runs a load test of the BPF
/// programs (unpinned, no policy) when nothing is pinned and it runs as root with BTF.
pub fn gather(cfg: &Config, runtime: &Runtime) -> Vec<Item> {
    let containerd_config = runtime.containerd_config.as_path();
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let cap_eff = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| parse_cap_eff(&s));
    let root = check_root(euid, cap_eff);
    let privileged = root.status != Status::Fail;

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = check_kernel(release.trim());

    let vmlinux_btf = enforcer::has_vmlinux_btf();
    let btf = check_btf(vmlinux_btf);

    // lsm_list mounts securityfs when it is missing (root only).
    let lsm_list = enforcer::lsm_list();
    let kconfig = std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok();
    let lockdown = check_lockdown(std::fs::read_to_string(LOCKDOWN).ok().as_deref());

    // One load test (or the pinned state) feeds bpf_lsm, enforcement and capabilities, so they
    // cannot contradict each other.
    let probe = probe_enforcement(cfg, privileged && btf.status == Status::Ok);
    let mut bpf_lsm =
        check_bpf_lsm(lsm_list.as_deref().ok(), lsm_list.as_ref().err().map(String::as_str), kconfig.as_deref());
    if bpf_lsm.status == Status::Ok && matches!(probe, Probe::Skipped) {
        bpf_lsm = Item::unknown(
            "bpf_lsm",
            format!(
                "{}; whether this kernel accepts BPF LSM programs is known only from the load test (root)",
                bpf_lsm.detail
            ),
        );
    }
    if bpf_lsm.status == Status::Ok {
        if let Some(why) = probe.lsm_refused() {
            let in_list = "bpf is in the active LSM list";
            bpf_lsm = Item::warn(
                "bpf_lsm",
                if why.contains(in_list) {
                    why
                } else {
                    format!("{in_list}, but this kernel refuses the BPF LSM programs: {why}")
                },
                "nothing to configure: the kernel refuses BPF trampolines (see the enforcement item); \
                 a kernel that allows them gets EPERM enforcement",
            );
        }
    }
    let enforcement = check_enforcement(cfg, &probe);
    // A test knob with a bad value fails the load test (probe), which names it.
    let ovl = enforcer::overlay_upper().unwrap_or(OverlayUpper::Layout);
    let proof = overlay_proof(&probe, ovl);
    let capabilities =
        check_capabilities(&probe, enforcer::kernel_has_bpf_helper("BPF_FUNC_loop"), vmlinux_btf, ovl, proof.as_ref());

    let bpffs = {
        let parent = cfg.bpf.pin_dir.parent().unwrap_or(Path::new("/sys/fs/bpf")).to_path_buf();
        check_bpffs(&parent, enforcer::is_bpffs(&parent))
    };

    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay_module = overlay_module_present(release.trim());
    let overlayfs = check_overlayfs(&filesystems, overlay_module);

    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup = check_cgroup(&mountinfo, cfg.cgroup.root.as_deref());

    let containerd_bin = runtime.containerd_bin.clone().or_else(|| find_in_path("containerd"));
    let containerd_version_text = containerd_bin.as_ref().and_then(|p| command_output(p, &["--version"]));
    let containerd_version = containerd_version_text.as_deref().and_then(parse_containerd_version);
    let containerd =
        check_containerd(containerd_bin.as_deref(), containerd_version_text.as_deref(), containerd_version);

    let config_text = std::fs::read_to_string(containerd_config).ok();
    let nri = check_containerd_nri(
        config_text.as_deref(),
        containerd_config,
        containerd_bin.is_some(),
        containerd_version,
        &cfg.nri.socket,
    );

    let socket_kind = match std::fs::metadata(&cfg.nri.socket) {
        Ok(md) if md.file_type().is_socket() => SocketState::Socket,
        Ok(_) => SocketState::NotASocket,
        Err(_) => SocketState::Missing,
    };
    let hook = check_containerd_hook(config_text.as_deref(), containerd_config, containerd_bin.is_some(), |p| {
        std::fs::read_to_string(p).map_err(|e| e.to_string())
    });

    let nri_socket = check_nri_socket(&cfg.nri.socket, socket_kind, containerd_bin.is_some(), nri.status);

    let runc_bin = find_in_path("runc");
    let runc_version = runc_bin.as_ref().and_then(|p| command_output(p, &["--version"]));
    let runc = check_runtime_tool("runc", runc_bin.as_deref(), runc_version.as_deref());
    let podman_bin = find_in_path("podman");
    let podman_version = podman_bin.as_ref().and_then(|p| command_output(p, &["--version"]));
    let podman = check_runtime_tool("podman", podman_bin.as_deref(), podman_version.as_deref());

    let items = vec![
        root,
        kernel,
        btf,
        lockdown,
        bpf_lsm,
        enforcement,
        capabilities,
        bpffs,
        overlayfs,
        cgroup,
        nri_socket,
        containerd,
        nri,
        hook,
        runc,
        podman,
    ];
    debug_assert!(items.iter().map(|i| i.name).eq(ITEM_NAMES));
    items
}

/// What `check` learnt about enforcement: what is pinned, or what a load test gave.
enum Probe {
    Pinned(EnforcementPath),
    Skipped,
    Loaded { path: EnforcementPath, reason: Option<String>, d_path: bool, ovl_proof: LayoutProof },
    Failed(String),
}

/// Whether the layout read of overlay's upper dentry holds on this kernel: the load test's
/// proof, or (an agent's programs are pinned) a proof of its own with the pinned path.
/// `None`: no load test could run.
fn overlay_proof(probe: &Probe, ovl: OverlayUpper) -> Option<LayoutProof> {
    if !ovl.is_layout() {
        return Some(LayoutProof::NotNeeded);
    }
    match probe {
        Probe::Loaded { ovl_proof, .. } => Some(ovl_proof.clone()),
        Probe::Pinned(path) => Some(match quiet(|| enforcer::prove_overlay_layout(*path, ovl)) {
            Ok(()) => LayoutProof::Proven,
            Err(why) => LayoutProof::Failed(why),
        }),
        Probe::Skipped | Probe::Failed(_) => None,
    }
}

impl Probe {
    /// Why BPF LSM is not usable, when a load test found out.
    fn lsm_refused(&self) -> Option<String> {
        match self {
            Probe::Loaded { path: EnforcementPath::TracepointKill, reason, .. } => {
                Some(first_line(reason.as_deref().unwrap_or("unknown")).to_string())
            }
            _ => None,
        }
    }
}

fn probe_enforcement(cfg: &Config, can_probe: bool) -> Probe {
    if let Some(p) = enforcer::pinned_path(&cfg.bpf.pin_dir) {
        return Probe::Pinned(p);
    }
    if !can_probe {
        return Probe::Skipped;
    }
    // Load test: attach unpinned programs for a moment (no policy installed: nothing is affected).
    match quiet(|| {
        Enforcer::load(&EnforcerOptions {
            pin_dir: None,
            force_fallback: cfg.bpf.force_fallback,
            fallback_mappings: cfg.bpf.fallback_mappings,
        })
    }) {
        Ok(e) => Probe::Loaded {
            path: e.path(),
            reason: e.fallback_reason().map(str::to_string),
            d_path: e.uses_d_path(),
            ovl_proof: e.overlay_proof().clone(),
        },
        Err(e) => Probe::Failed(first_line(&e.to_string()).to_string()),
    }
}

fn check_enforcement(cfg: &Config, probe: &Probe) -> Item {
    let dir = &cfg.bpf.pin_dir;
    match probe {
        Probe::Pinned(EnforcementPath::Lsm) => Item::ok(
            "enforcement",
            format!("BPF LSM enforcement pinned under {} (exec of drifted files fails with EPERM)", dir.display()),
        ),
        Probe::Pinned(EnforcementPath::TracepointKill) => Item::warn(
            "enforcement",
            format!(
                "fallback enforcement pinned under {}: drifted binaries are SIGKILLed right after exec; \
                 no checks of executable mappings (ld.so, LD_PRELOAD), #! scripts are seen as their interpreter",
                dir.display()
            ),
            "enable BPF LSM (see bpf_lsm), then restart the agent: it replaces the pinned links without a gap",
        ),
        Probe::Skipped => Item::unknown(
            "enforcement",
            format!("nothing pinned under {} and the load test was skipped (needs root and BTF)", dir.display()),
        ),
        Probe::Loaded { path, reason, .. } => {
            let not_running = format!("no agent enforcement pinned under {}", dir.display());
            let start = "start the agent: `driftguard run` (or the DaemonSet)";
            match path {
                EnforcementPath::Lsm => Item::warn(
                    "enforcement",
                    format!("{not_running}; load test: BPF LSM programs load and attach (path: lsm)"),
                    start,
                ),
                EnforcementPath::TracepointKill => Item::warn(
                    "enforcement",
                    format!(
                        "{not_running}; load test: BPF LSM unusable (why: {}), the exec tracepoint fallback \
                         works (path: tracepoint_kill; drifted binaries are SIGKILLed, exit 137)",
                        lsm_reason_ref(reason.as_deref())
                    ),
                    format!("{start}; for EPERM instead of SIGKILL enable BPF LSM (see bpf_lsm)"),
                ),
            }
        }
        Probe::Failed(e) => Item::fail(
            "enforcement",
            format!("load test failed: no enforcement path works: {e}"),
            "run `DRIFTGUARD_LOG=debug driftguard check` for the verifier log; see the kernel, btf and lockdown items",
        ),
    }
}

/// What this kernel gives, in one table: the rows of docs/bpf.md's kernel table.
fn check_capabilities(
    probe: &Probe,
    has_loop: Option<bool>,
    vmlinux_btf: bool,
    ovl: OverlayUpper,
    proof: Option<&LayoutProof>,
) -> Item {
    let path = match probe {
        Probe::Pinned(p) => Some(*p),
        Probe::Loaded { path, .. } => Some(*path),
        Probe::Skipped | Probe::Failed(_) => None,
    };
    let lsm = match (path, probe) {
        (Some(EnforcementPath::Lsm), _) => "yes: bprm_check_security, mmap_file, file_mprotect (EPERM)".to_string(),
        (Some(EnforcementPath::TracepointKill), Probe::Loaded { reason, .. }) => {
            format!("no ({})", lsm_reason_ref(reason.as_deref()))
        }
        (Some(EnforcementPath::TracepointKill), _) => "no (fallback pinned)".to_string(),
        (None, _) => "unknown (no load test)".to_string(),
    };
    let fallback = match path {
        Some(EnforcementPath::TracepointKill) => "in use: tp_btf/sched_process_exec + SIGKILL (exit 137)",
        Some(EnforcementPath::Lsm) => "not needed (tp_btf/sched_process_exec + SIGKILL when BPF LSM is refused)",
        None => "unknown (no load test)",
    };
    let prot_exec = match path {
        Some(EnforcementPath::Lsm) => "covered: mmap_file and file_mprotect deny PROT_EXEC of drifted files",
        Some(EnforcementPath::TracepointKill) => {
            "NOT covered: ld.so /dropped, LD_PRELOAD and dlopen of drifted files run; #! scripts seen as their interpreter"
        }
        None => "unknown (no load test)",
    };
    let d_path = match probe {
        Probe::Loaded { path: EnforcementPath::Lsm, d_path: true, .. } => "bpf_d_path in LSM hooks",
        Probe::Loaded { path: EnforcementPath::Lsm, d_path: false, .. } => {
            "dentry walk (bpf_d_path is refused in LSM hooks before 5.11; same verdicts)"
        }
        Probe::Loaded { .. } => "dentry walk (the tracepoint cannot use bpf_d_path; same verdicts)",
        _ => "unknown (no load test)",
    };
    let bpf_loop = match has_loop {
        Some(true) => "present (not needed: the path walks are bounded loops on every kernel)",
        Some(false) => "absent (5.17+); not needed: the path walks are bounded loops",
        None => "unknown (no readable BTF)",
    };
    let btf = if vmlinux_btf {
        format!(
            "kernel ({BTF_PATH}){}",
            if enforcer::overlay_module_btf() { "; overlay module BTF loaded" } else { "" }
        )
    } else {
        "none: CO-RE cannot relocate the programs".to_string()
    };
    let rows = [
        ("LSM hooks", lsm),
        ("fallback", fallback.to_string()),
        ("PROT_EXEC", prot_exec.to_string()),
        ("event paths", d_path.to_string()),
        ("bpf_loop", bpf_loop.to_string()),
        ("BTF", btf),
        ("overlay", ovl.describe()),
        (
            "upper check",
            match proof {
                Some(p) => p.describe(),
                None => "layout read not proved (no load test)".to_string(),
            },
        ),
    ];
    let detail = rows.iter().map(|(k, v)| format!("{k:<12}{v}")).collect::<Vec<_>>().join("\n");
    if let Some(LayoutProof::Failed(_)) = proof {
        return Item::fail(
            "capabilities",
            detail,
            "the overlay layout this kernel has is not the one driftguard reads without BTF: on 5.11+ load the \
             overlay module before the agent (`modprobe overlay`, so /sys/kernel/btf/overlay exists) and restart \
             it; otherwise report the kernel version",
        );
    }
    match path {
        Some(EnforcementPath::Lsm) if vmlinux_btf => Item::ok("capabilities", detail),
        Some(EnforcementPath::Lsm) | Some(EnforcementPath::TracepointKill) => Item::warn(
            "capabilities",
            detail,
            "for EPERM and PROT_EXEC coverage use a kernel with BPF LSM and trampolines (see bpf_lsm); tested: 5.10, 6.1, 6.12",
        ),
        None => Item::unknown("capabilities", detail),
    }
}

/// The fallback's reason for not using BPF LSM, said once: the bpf_lsm item carries the long
/// text when BPF LSM is inactive or refused; other reasons (a config knob) are short and shown.
fn lsm_reason_ref(reason: Option<&str>) -> String {
    let reason = first_line(reason.unwrap_or("unknown"));
    if reason.contains("BPF LSM is not active") || reason.contains("BPF LSM program") {
        "see bpf_lsm".to_string()
    } else {
        reason.to_string()
    }
}

fn overlay_module_present(release: &str) -> bool {
    let base = PathBuf::from(format!("/lib/modules/{release}/kernel/fs/overlayfs"));
    ["overlay.ko", "overlay.ko.xz", "overlay.ko.zst", "overlay.ko.gz"].iter().any(|f| base.join(f).exists())
}

/// Re-exported from [`crate::host`] for the tests and `check`'s own use.
pub use crate::host::find_in_path;

fn command_output(bin: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(bin).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `f` without the agent's log lines (the report says what matters) unless
/// `DRIFTGUARD_LOG` asks for them.
pub fn quiet<T>(f: impl FnOnce() -> T) -> T {
    if std::env::var_os("DRIFTGUARD_LOG").is_some() {
        f()
    } else {
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), f)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

// ---------------------------------------------------------------------------
// Pure checks

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn parse_cap_eff(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

fn check_root(euid: u32, cap_eff: Option<u64>) -> Item {
    let has = |cap: u32| cap_eff.is_some_and(|c| c & (1u64 << cap) != 0);
    let missing: Vec<&str> = [(CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .collect();
    if euid != 0 {
        return Item::fail(
            "root",
            format!("running as uid {euid}: the agent loads BPF programs, mounts and reads every cgroup"),
            "run it as root (`sudo driftguard check`); the agent runs as root with only CAP_BPF, CAP_PERFMON \
             and CAP_SYS_ADMIN (systemd unit and DaemonSet, which is not privileged), plus CAP_SYS_RESOURCE on kernels before 5.11",
        );
    }
    if missing.is_empty() {
        Item::ok("root", "running as root with CAP_SYS_ADMIN, CAP_BPF and CAP_PERFMON")
    } else {
        Item::fail(
            "root",
            format!("root, but the effective capabilities lack {}", missing.join(", ")),
            "grant the capabilities BPF, PERFMON and SYS_ADMIN (Kubernetes: securityContext.capabilities.add, \
             as deploy/daemonset.yaml does; privileged is not needed)",
        )
    }
}

/// `(major, minor)` of a kernel release string such as `6.1.0-57-cloud-amd64`.
pub use crate::enforcer::memlock::kernel_version as parse_kernel_version;

fn check_kernel(release: &str) -> Item {
    match parse_kernel_version(release) {
        None => Item::warn("kernel", format!("cannot parse kernel release {release:?}"), "check `uname -r`"),
        Some(v) if v < (5, 10) => Item::fail(
            "kernel",
            format!("kernel {release}: too old (the oldest supported and tested kernel is 5.10)"),
            "upgrade the kernel; tested: 5.10, 6.1, 6.12, 6.18 (Debian: linux-image-cloud-amd64)",
        ),
        Some(v) if v < (5, 11) => Item::ok(
            "kernel",
            format!("kernel {release} (5.10 LTS: tested; BPF LSM needs bpf in lsm=, see bpf_lsm and capabilities)"),
        ),
        Some(_) => Item::ok("kernel", format!("kernel {release}")),
    }
}

fn check_btf(present: bool) -> Item {
    if present {
        Item::ok("btf", format!("{BTF_PATH} present (CO-RE relocation works)"))
    } else {
        Item::fail(
            "btf",
            format!("{BTF_PATH} is missing: the BPF programs cannot be relocated for this kernel"),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every current distribution kernel is)",
        )
    }
}

/// `lsm=` value to put on the kernel command line: the active list with `bpf` appended.
fn lsm_cmdline(active: &[&str]) -> String {
    let mut v: Vec<&str> = active.iter().copied().filter(|l| *l != "bpf").collect();
    v.push("bpf");
    format!("lsm={}", v.join(","))
}

fn check_bpf_lsm(list: Option<&str>, verdict_err: Option<&str>, kconfig: Option<&str>) -> Item {
    let Some(list) = list else {
        return Item::warn(
            "bpf_lsm",
            format!("cannot read {LSM_LIST}: {}", verdict_err.unwrap_or("securityfs not mounted")),
            "mount -t securityfs securityfs /sys/kernel/security   (as root)",
        );
    };
    let active = parse_lsm_list(list);
    if active.contains(&"bpf") {
        return Item::ok("bpf_lsm", format!("bpf is in the active LSM list ({})", active.join(",")));
    }
    let built = kconfig.map(|c| c.lines().any(|l| l.trim() == "CONFIG_BPF_LSM=y"));
    let cmdline = lsm_cmdline(&active);
    let detail = format!(
        "BPF LSM is not active (active LSMs: {}): the tracepoint fallback is used (SIGKILL after exec; mappings and writes into process memory are checked only with `[bpf] fallback_mappings`, at a cost to every syscall)",
        if active.is_empty() { "none".to_string() } else { active.join(",") }
    );
    let fix = match built {
        Some(false) => format!(
            "this kernel is built without CONFIG_BPF_LSM=y: use a kernel that has it (e.g. Debian's), then boot with {cmdline}"
        ),
        _ => format!(
            "add {cmdline} to the kernel command line, e.g. in /etc/default/grub:\n\
             GRUB_CMDLINE_LINUX=\"... {cmdline}\"\n\
             then `update-grub` (or `grub2-mkconfig -o /boot/grub2/grub.cfg`) and reboot"
        ),
    };
    Item::warn("bpf_lsm", detail, fix)
}

fn check_lockdown(text: Option<&str>) -> Item {
    let Some(text) = text else {
        return Item::ok("lockdown", "kernel lockdown not present");
    };
    let current = text.split_whitespace().find(|w| w.starts_with('[')).map(|w| w.trim_matches(['[', ']']));
    match current {
        Some("confidentiality") => Item::fail(
            "lockdown",
            "kernel lockdown is 'confidentiality': BPF programs may not read kernel memory",
            "boot with lockdown=integrity or lockdown=none (Secure Boot may force it: check `mokutil --sb-state`)",
        ),
        Some(mode) => Item::ok("lockdown", format!("kernel lockdown: {mode}")),
        None => Item::ok("lockdown", format!("kernel lockdown: {}", text.trim())),
    }
}

fn check_bpffs(parent: &Path, mounted: bool) -> Item {
    if mounted {
        return Item::ok("bpffs", format!("{} is a bpf filesystem (pins survive agent restarts)", parent.display()));
    }
    if parent == Path::new("/sys/fs/bpf") {
        Item::warn(
            "bpffs",
            "/sys/fs/bpf is not mounted (the agent mounts it when it starts)",
            "mount -t bpf -o mode=0700 bpf /sys/fs/bpf   (persist: `bpf /sys/fs/bpf bpf mode=0700 0 0` in /etc/fstab)",
        )
    } else {
        Item::fail(
            "bpffs",
            format!("{} (parent of bpf.pin_dir) is not a bpf filesystem", parent.display()),
            format!("mount -t bpf -o mode=0700 bpf {}   or set bpf.pin_dir under /sys/fs/bpf", parent.display()),
        )
    }
}

fn check_overlayfs(proc_filesystems: &str, module_present: bool) -> Item {
    let loaded = proc_filesystems.lines().any(|l| l.split_whitespace().last() == Some("overlay"));
    if loaded {
        Item::ok("overlayfs", "overlay filesystem available (drift = files in the container's upper layer)")
    } else if module_present {
        Item::warn(
            "overlayfs",
            "overlay module not loaded (containerd/runc load it on first use)",
            "modprobe overlay   (persist: `echo overlay > /etc/modules-load.d/overlay.conf`)",
        )
    } else {
        Item::fail(
            "overlayfs",
            "overlay filesystem not in /proc/filesystems and no overlay module found: drift cannot be detected",
            "use a kernel with CONFIG_OVERLAY_FS, and the overlayfs snapshotter (containerd default)",
        )
    }
}

fn check_cgroup(mountinfo: &str, configured: Option<&Path>) -> Item {
    if let Some(root) = configured {
        return Item::ok("cgroup_v2", format!("cgroup root set in the config: {}", root.display()));
    }
    match CgroupRoot::from_mountinfo(mountinfo) {
        Some(r) if r.path == Path::new("/sys/fs/cgroup") => {
            Item::ok("cgroup_v2", "pure cgroup v2 (unified hierarchy at /sys/fs/cgroup)")
        }
        Some(r) => Item::ok(
            "cgroup_v2",
            format!(
                "hybrid: cgroup v1 controllers plus cgroup2 at {}; containers are found in the unified hierarchy \
                 (runc and containerd's cgroupfs driver put them there)",
                r.path.display()
            ),
        ),
        None => Item::fail(
            "cgroup_v2",
            "no cgroup2 filesystem mounted: policy is keyed by cgroup v2 id",
            "boot with systemd.unified_cgroup_hierarchy=1 (pure v2), or at least \
             `mount -t cgroup2 none /sys/fs/cgroup/unified`",
        ),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SocketState {
    Socket,
    NotASocket,
    Missing,
}

fn check_nri_socket(path: &Path, state: SocketState, containerd_installed: bool, nri_config: Status) -> Item {
    match state {
        SocketState::Socket => Item::ok("nri_socket", format!("{} is a socket", path.display())),
        SocketState::NotASocket => Item::fail(
            "nri_socket",
            format!("{} exists but is not a socket", path.display()),
            "point nri.socket in /etc/driftguard/config.toml at the runtime's NRI socket",
        ),
        SocketState::Missing => {
            let why = if !containerd_installed {
                "containerd is not installed (or not on PATH); CRI-O: NRI needs `[crio.nri] enable_nri = true`"
            } else if nri_config != Status::Ok {
                "containerd runs with NRI disabled (see containerd_nri)"
            } else {
                "containerd is not running, or uses another NRI socket_path"
            };
            Item::warn(
                "nri_socket",
                format!(
                    "{} is missing: {why}; without NRI, containers can only be covered by the OCI hook",
                    path.display()
                ),
                "enable NRI (see containerd_nri) and `systemctl restart containerd`",
            )
        }
    }
}

/// `containerd --version` → (major, minor). Accepts `v1.7.13`, `1.6.33`, `2.0.0-rc.1`.
fn parse_containerd_version(text: &str) -> Option<(u32, u32)> {
    text.split_whitespace().find_map(|w| {
        let w = w.strip_prefix('v').unwrap_or(w);
        let mut parts = w.split('.');
        let major: u32 = parts.next()?.parse().ok()?;
        let minor: u32 = parts.next()?.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()?;
        Some((major, minor))
    })
}

fn check_containerd(bin: Option<&Path>, version_text: Option<&str>, version: Option<(u32, u32)>) -> Item {
    let Some(bin) = bin else {
        return Item::warn(
            "containerd",
            "containerd not found on PATH (fine for runc/podman with the OCI hook, or CRI-O)",
            "Kubernetes nodes: install containerd 1.7 or newer (NRI support); elsewhere on disk: \
             `driftguard check --containerd /path/to/containerd --containerd-config /path/to/config.toml`",
        );
    };
    let shown = version_text.map(|t| first_line(t).trim().to_string()).unwrap_or_else(|| "version unknown".into());
    match version {
        Some(v) if v < (1, 7) => Item::fail(
            "containerd",
            format!("{}: {shown}: NRI needs containerd 1.7 or newer", bin.display()),
            "upgrade containerd to 1.7+ (or 2.x, where NRI is on by default)",
        ),
        Some(_) => Item::ok("containerd", format!("{}: {shown}", bin.display())),
        None => Item::warn(
            "containerd",
            format!("{}: cannot tell the version ({shown})", bin.display()),
            "check `containerd --version`: NRI needs 1.7 or newer",
        ),
    }
}

/// The TOML section that enables NRI (same section name for config versions 2 and 3).
fn nri_toml(socket: &Path) -> String {
    format!("[plugins.\"{NRI_SECTION}\"]\n  disable = false\n  socket_path = \"{}\"", socket.display())
}

fn check_containerd_nri(
    config: Option<&str>,
    config_path: &Path,
    containerd_installed: bool,
    containerd_version: Option<(u32, u32)>,
    socket: &Path,
) -> Item {
    let restart = "systemctl restart containerd";
    let Some(text) = config else {
        if !containerd_installed {
            return Item::warn(
                "containerd_nri",
                format!("{} not found and containerd not installed", config_path.display()),
                format!(
                    "after installing containerd 1.7, add to {}:\nversion = 2\n{}",
                    config_path.display(),
                    nri_toml(socket)
                ),
            );
        }
        return match containerd_version {
            Some((major, _)) if major >= 2 => Item::ok(
                "containerd_nri",
                format!("no {}: containerd {major}.x enables NRI by default", config_path.display()),
            ),
            _ => Item::fail(
                "containerd_nri",
                format!("no {}: containerd 1.7 keeps NRI disabled by default", config_path.display()),
                format!("create {} with:\nversion = 2\n{}\nthen `{restart}`", config_path.display(), nri_toml(socket)),
            ),
        };
    };
    let doc: toml::Table = match text.parse() {
        Ok(d) => d,
        Err(e) => {
            return Item::fail(
                "containerd_nri",
                format!("{} is not valid TOML: {}", config_path.display(), first_line(&e.to_string())),
                format!("fix the file (`containerd config dump` shows what containerd uses), then `{restart}`"),
            )
        }
    };
    let cfg_version = doc.get("version").and_then(|v| v.as_integer()).unwrap_or(1);
    let section = doc.get("plugins").and_then(|p| p.get(NRI_SECTION)).and_then(|s| s.as_table());
    let disable = section.and_then(|s| s.get("disable")).and_then(|v| v.as_bool());
    let no_connections = section.and_then(|s| s.get("disable_connections")).and_then(|v| v.as_bool()) == Some(true);
    let socket_path = section.and_then(|s| s.get("socket_path")).and_then(|v| v.as_str());
    let imports = doc.get("imports").and_then(|v| v.as_array()).is_some_and(|a| !a.is_empty());
    let imports_note = if imports { " (the config imports drop-ins; NRI settings there were not read)" } else { "" };

    // containerd 2.x enables NRI unless disabled; 1.7 disables it unless enabled.
    // The binary's version decides the default; the config version is the hint when it is unknown.
    let default_enabled = match containerd_version {
        Some((major, _)) => major >= 2,
        None => cfg_version >= 3,
    };
    let enabled = disable.map(|d| !d).unwrap_or(default_enabled);
    let where_ = format!("{} (config version {cfg_version})", config_path.display());

    if cfg_version < 2 {
        return Item::fail(
            "containerd_nri",
            format!("{where_}: version 1 config format, NRI cannot be configured in it{imports_note}"),
            format!(
                "convert it: `containerd config migrate > new.toml` (2.x) or start from `containerd config default`, \
                 then make sure it contains:\nversion = 2\n{}\nand `{restart}`",
                nri_toml(socket)
            ),
        );
    }
    if !enabled {
        let why = match disable {
            Some(true) => format!("NRI is disabled (`disable = true` in [plugins.\"{NRI_SECTION}\"])"),
            _ if cfg_version == 2 => {
                "NRI is disabled: containerd 1.7 (config version 2) keeps it off unless `disable = false`".to_string()
            }
            _ => "NRI is disabled by default for this containerd version".to_string(),
        };
        let fix = match section {
            Some(_) => format!(
                "in the existing [plugins.\"{NRI_SECTION}\"] section of {} set:\n  disable = false\nthen `{restart}`",
                config_path.display()
            ),
            None => format!("add to {}:\n{}\nthen `{restart}`", config_path.display(), nri_toml(socket)),
        };
        return Item::fail("containerd_nri", format!("{where_}: {why}{imports_note}"), fix);
    }
    if no_connections {
        return Item::fail(
            "containerd_nri",
            format!("{where_}: NRI is on but `disable_connections = true` refuses external plugins like driftguard"),
            format!("set `disable_connections = false` in [plugins.\"{NRI_SECTION}\"], then `{restart}`"),
        );
    }
    if let Some(sp) = socket_path {
        if Path::new(sp) != socket {
            return Item::warn(
                "containerd_nri",
                format!("{where_}: NRI is on, socket_path is {sp} but driftguard connects to {}", socket.display()),
                format!("set in /etc/driftguard/config.toml:\n[nri]\nsocket = \"{sp}\""),
            );
        }
    }
    let how = if disable == Some(false) { "`disable = false`" } else { "on by default in containerd 2.x" };
    Item::ok("containerd_nri", format!("{where_}: NRI enabled ({how}){imports_note}"))
}

/// Where the DaemonSet's init container (deploy/helm/driftguard/files/node-setup.sh) installs
/// the base runtime spec on a node.
const DAEMONSET_BASE_SPEC: &str = "/opt/driftguard/containerd/base-runtime-spec.json";

/// The base runtime spec to name in a fix: the DaemonSet's on a node it set up (the agent's pod
/// mounts the node's /opt/driftguard), else the package's.
fn base_spec_path() -> &'static str {
    if Path::new(DAEMONSET_BASE_SPEC).is_file() {
        DAEMONSET_BASE_SPEC
    } else {
        SHIPPED_BASE_SPEC
    }
}

/// The runtime keys that make containerd run `driftguard-oci-hook` for every container of the
/// runtime, fail closed (packaging/containerd/oci-hook-1.7.toml).
fn hook_toml(cri_plugin: &str, runtime: &str) -> String {
    let spec = base_spec_path();
    format!(
        "[plugins.\"{cri_plugin}\".containerd.runtimes.{runtime}]\n  base_runtime_spec = \"{spec}\"\n  \
         pod_annotations = [\"{ANNOTATION_PATTERN}\"]\n  container_annotations = [\"{ANNOTATION_PATTERN}\"]"
    )
}

/// containerd's annotation passthrough patterns (Go's `path.Match`, where `*` does not cross
/// `/`): do they pass both pod-wide and per-container driftguard keys?
fn passes_driftguard_keys(patterns: Option<&toml::Value>) -> bool {
    let Some(list) = patterns.and_then(|v| v.as_array()) else { return false };
    let matches = |pat: &str, key: &str| match pat.strip_suffix('*') {
        Some(prefix) => key.strip_prefix(prefix).is_some_and(|rest| !rest.contains('/')),
        None => pat == key,
    };
    ["driftguard.dev/mode", "driftguard.dev/mode.app", "driftguard.dev/allow"]
        .iter()
        .all(|k| list.iter().filter_map(|p| p.as_str()).any(|p| matches(p, k)))
}

/// Does the OCI spec text run `driftguard-oci-hook <stage-arg>` at `stage`?
fn spec_runs_hook(spec: &serde_json::Value, stage: &str, arg: &str) -> bool {
    spec["hooks"][stage].as_array().is_some_and(|hooks| {
        hooks.iter().any(|h| {
            h["path"].as_str().is_some_and(|p| p.ends_with("/driftguard-oci-hook"))
                && h["args"].as_array().is_some_and(|a| a.iter().any(|x| x == arg))
        })
    })
}

/// Is `driftguard-oci-hook` in the default runtime's base runtime spec, with the driftguard
/// annotations passed through (fail-closed start)? `read` reads the spec file.
fn check_containerd_hook(
    config: Option<&str>,
    config_path: &Path,
    containerd_installed: bool,
    read: impl Fn(&Path) -> Result<String, String>,
) -> Item {
    const NAME: &str = "containerd_hook";
    let restart = "systemctl restart containerd";
    let consequence = "containerd starts opted-in containers while the agent is down or restarting without \
                       their policy (fail open; docs/oci-hooks.md, \"containerd\")";
    let Some(text) = config else {
        if !containerd_installed {
            return Item::ok(NAME, "containerd not installed (CRI-O and podman run the hook from hooks.d)");
        }
        return Item::warn(
            NAME,
            format!("no {}: {consequence}", config_path.display()),
            format!(
                "create {} with `version = 2` (containerd 1.7) and:\n{}\nthen `{restart}`",
                config_path.display(),
                hook_toml("io.containerd.grpc.v1.cri", "runc")
            ),
        );
    };
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Item::warn(
            NAME,
            format!("{} is not valid TOML (see containerd_nri)", config_path.display()),
            "fix the file",
        );
    };
    let cfg_version = doc.get("version").and_then(|v| v.as_integer()).unwrap_or(1);
    let cri_plugin = if cfg_version >= 3 { "io.containerd.cri.v1.runtime" } else { "io.containerd.grpc.v1.cri" };
    let ctd = doc.get("plugins").and_then(|p| p.get(cri_plugin)).and_then(|c| c.get("containerd"));
    let runtime = ctd.and_then(|c| c.get("default_runtime_name")).and_then(|v| v.as_str()).unwrap_or("runc");
    let section = ctd.and_then(|c| c.get("runtimes")).and_then(|r| r.get(runtime)).and_then(|s| s.as_table());
    let where_ = format!("{} [plugins.\"{cri_plugin}\".containerd.runtimes.{runtime}]", config_path.display());
    let fix = |what: &str| {
        format!(
            "{what} in {}:\n{}\nthen `{restart}` (docs/oci-hooks.md, \"containerd\")",
            config_path.display(),
            hook_toml(cri_plugin, runtime)
        )
    };
    let Some(section) = section else {
        return Item::warn(NAME, format!("{where_} is not in the file: {consequence}"), fix("add"));
    };
    let mut missing = Vec::new();
    match section.get("base_runtime_spec").and_then(|v| v.as_str()) {
        None => missing.push("no base_runtime_spec".to_string()),
        Some(p) => match read(Path::new(p))
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()))
        {
            Err(e) => missing.push(format!("base_runtime_spec {p} unreadable: {e}")),
            Ok(spec) => {
                for (stage, arg) in [("createRuntime", "create-runtime"), ("poststop", "poststop")] {
                    if !spec_runs_hook(&spec, stage, arg) {
                        missing.push(format!("base_runtime_spec {p} has no {stage} hook `driftguard-oci-hook {arg}`"));
                    }
                }
            }
        },
    }
    for key in ["pod_annotations", "container_annotations"] {
        if !passes_driftguard_keys(section.get(key)) {
            missing.push(format!("{key} does not pass \"{ANNOTATION_PATTERN}\""));
        }
    }
    if missing.is_empty() {
        return Item::ok(
            NAME,
            format!(
                "{where_}: driftguard-oci-hook in the base runtime spec, driftguard.dev/* passed through (fail closed)"
            ),
        );
    }
    Item::warn(NAME, format!("{where_}: {}: {consequence}", missing.join("; ")), fix("set"))
}

fn check_runtime_tool(name: &'static str, bin: Option<&Path>, version_text: Option<&str>) -> Item {
    let role = match name {
        "runc" => "OCI runtime: `driftguard demo` and the OCI hook path use it",
        _ => "runs containers without Kubernetes; covered through the OCI hook (driftguard-oci-hook)",
    };
    match bin {
        Some(b) => Item::ok(
            name,
            format!(
                "{} ({}); {role}",
                b.display(),
                version_text.map(|t| first_line(t).trim().to_string()).unwrap_or_else(|| "version unknown".into())
            ),
        ),
        None => Item::warn(
            name,
            format!("{name} not found; {role}"),
            format!("apt-get install {name}   (only needed for the demo / OCI hook path)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCK: &str = "/var/run/nri/nri.sock";

    fn nri(config: Option<&str>, installed: bool, v: Option<(u32, u32)>) -> Item {
        check_containerd_nri(config, Path::new(CONTAINERD_CONFIG), installed, v, Path::new(SOCK))
    }

    #[test]
    fn cap_eff_parses() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        let c = parse_cap_eff(s).unwrap();
        assert_eq!(c, 0x1fffeffffff);
        assert_eq!(check_root(0, Some(c)).status, Status::Ok);
        let no_bpf = c & !(1 << CAP_BPF);
        let i = check_root(0, Some(no_bpf));
        assert_eq!(i.status, Status::Fail);
        assert!(i.detail.contains("CAP_BPF"), "{i:?}");
        assert_eq!(check_root(1000, Some(0)).status, Status::Fail);
        // The advice matches docs/install.md: root with three capabilities, not privileged.
        for i in [check_root(1000, Some(0)), check_root(0, Some(0))] {
            let fix = i.fix.unwrap_or_default();
            assert!(!fix.contains("privileged: true") && !fix.contains("runs privileged"), "{fix}");
            assert!(fix.contains("BPF") && fix.contains("PERFMON") && fix.contains("SYS_ADMIN"), "{fix}");
        }
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.0-custom"), Some((6, 18)));
        assert_eq!(parse_kernel_version("6.1.0-28-cloud-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert_eq!(check_kernel("5.4.0-42-generic").status, Status::Fail);
        assert_eq!(check_kernel("5.10.0-32-cloud-amd64").status, Status::Ok);
        assert_eq!(check_kernel("5.19.1").status, Status::Ok);
        assert_eq!(check_kernel("6.12.9+bpo-cloud-amd64").status, Status::Ok);
    }

    /// The capabilities table follows the one probe: no row says more than the load test found.
    #[test]
    fn capabilities_follow_the_probe() {
        let fallback = Probe::Loaded {
            path: EnforcementPath::TracepointKill,
            reason: Some("BPF program 'dg_bprm_check' was rejected: EPERM\nmore".into()),
            d_path: false,
            ovl_proof: LayoutProof::NotNeeded,
        };
        let i =
            check_capabilities(&fallback, Some(true), true, OverlayUpper::VmlinuxBtf, Some(&LayoutProof::NotNeeded));
        assert_eq!(i.status, Status::Warn);
        assert!(i.detail.contains("LSM hooks   no (BPF program 'dg_bprm_check' was rejected: EPERM)"), "{}", i.detail);
        assert!(i.detail.contains("PROT_EXEC   NOT covered"), "{}", i.detail);
        assert!(!i.detail.contains("covered: mmap_file"), "{}", i.detail);

        let lsm510 =
            Probe::Loaded { path: EnforcementPath::Lsm, reason: None, d_path: false, ovl_proof: LayoutProof::Proven };
        let i = check_capabilities(&lsm510, Some(false), true, OverlayUpper::Layout, Some(&LayoutProof::Proven));
        assert_eq!(i.status, Status::Ok);
        assert!(i.detail.contains("event paths dentry walk (bpf_d_path is refused"), "{}", i.detail);
        assert!(i.detail.contains("bpf_loop    absent"), "{}", i.detail);
        assert!(i.detail.contains("overlay     no BTF has struct ovl_inode"), "{}", i.detail);
        assert!(i.detail.contains("upper check proved at start"), "{}", i.detail);

        // A failed proof fails the item, whatever else is fine.
        let failed = LayoutProof::Failed("a written one image".into());
        let i = check_capabilities(&lsm510, Some(false), true, OverlayUpper::Layout, Some(&failed));
        assert_eq!(i.status, Status::Fail);
        assert!(i.detail.contains("upper check proof FAILED (a written one image)"), "{}", i.detail);
        assert!(i.fix.as_deref().is_some_and(|f| f.contains("modprobe overlay")), "{:?}", i.fix);

        let i = check_capabilities(&Probe::Skipped, None, false, OverlayUpper::Layout, None);
        assert_eq!(i.status, Status::Unknown);
        assert!(i.detail.contains("LSM hooks   unknown"), "{}", i.detail);
    }

    #[test]
    fn lsm_list_and_cmdline() {
        let l = parse_lsm_list("lockdown,capability,landlock,yama,apparmor\n");
        assert_eq!(l, ["lockdown", "capability", "landlock", "yama", "apparmor"]);
        assert_eq!(lsm_cmdline(&l), "lsm=lockdown,capability,landlock,yama,apparmor,bpf");
        let i = check_bpf_lsm(Some("lockdown,capability,apparmor"), None, None);
        assert_eq!(i.status, Status::Warn);
        assert!(i.fix.as_deref().unwrap().contains("lsm=lockdown,capability,apparmor,bpf"), "{i:?}");
        assert!(i.detail.contains("lockdown,capability,apparmor"));
        assert_eq!(check_bpf_lsm(Some("capability,bpf\n"), None, None).status, Status::Ok);
        let no_kconfig = check_bpf_lsm(Some("capability"), None, Some("CONFIG_BPF=y\n# CONFIG_BPF_LSM is not set\n"));
        assert!(no_kconfig.fix.unwrap().contains("without CONFIG_BPF_LSM"));
        assert_eq!(check_bpf_lsm(None, Some("x"), None).status, Status::Warn);
    }

    #[test]
    fn lockdown_modes() {
        assert_eq!(check_lockdown(Some("none [integrity] confidentiality\n")).status, Status::Ok);
        assert_eq!(check_lockdown(Some("none integrity [confidentiality]\n")).status, Status::Fail);
        assert_eq!(check_lockdown(None).status, Status::Ok);
    }

    #[test]
    fn overlay_and_bpffs() {
        assert_eq!(check_overlayfs("nodev\tsysfs\nnodev\toverlay\n", false).status, Status::Ok);
        assert_eq!(check_overlayfs("nodev\tsysfs\n", true).status, Status::Warn);
        assert_eq!(check_overlayfs("nodev\tsysfs\n", false).status, Status::Fail);
        assert_eq!(check_bpffs(Path::new("/sys/fs/bpf"), false).status, Status::Warn);
        assert_eq!(check_bpffs(Path::new("/mnt/x"), false).status, Status::Fail);
        assert_eq!(check_bpffs(Path::new("/sys/fs/bpf"), true).status, Status::Ok);
    }

    #[test]
    fn cgroup_kinds() {
        let pure = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        let i = check_cgroup(pure, None);
        assert_eq!(i.status, Status::Ok);
        assert!(i.detail.starts_with("pure"));
        let hybrid = "30 23 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                      32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let i = check_cgroup(hybrid, None);
        assert_eq!(i.status, Status::Ok);
        assert!(i.detail.starts_with("hybrid") && i.detail.contains("/sys/fs/cgroup/unified"), "{i:?}");
        let v1 = "32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(check_cgroup(v1, None).status, Status::Fail);
        assert_eq!(check_cgroup(v1, Some(Path::new("/x"))).status, Status::Ok);
    }

    #[test]
    fn containerd_versions() {
        assert_eq!(
            parse_containerd_version("containerd github.com/containerd/containerd v1.7.13 7c3aca7a6\n"),
            Some((1, 7))
        );
        assert_eq!(parse_containerd_version("containerd containerd.io 1.6.33 d2d58213"), Some((1, 6)));
        assert_eq!(
            parse_containerd_version("containerd github.com/containerd/containerd/v2 v2.0.0-rc.1 x"),
            Some((2, 0))
        );
        assert_eq!(parse_containerd_version("nothing here"), None);
        let bin = Path::new("/usr/bin/containerd");
        assert_eq!(check_containerd(Some(bin), Some("x 1.6.3"), Some((1, 6))).status, Status::Fail);
        assert_eq!(check_containerd(Some(bin), Some("x v1.7.2"), Some((1, 7))).status, Status::Ok);
        assert_eq!(check_containerd(None, None, None).status, Status::Warn);
    }

    #[test]
    fn containerd_17_needs_explicit_enable() {
        let cfg = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"x\"\n";
        let i = nri(Some(cfg), true, Some((1, 7)));
        assert_eq!(i.status, Status::Fail, "{i:?}");
        let fix = i.fix.unwrap();
        assert!(fix.contains("[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = false"), "{fix}");
        // Without a binary version, config version 2 means 1.7 semantics.
        assert_eq!(nri(Some(cfg), false, None).status, Status::Fail);

        let on = "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = false\n";
        assert_eq!(nri(Some(on), true, Some((1, 7))).status, Status::Ok);

        let explicit_off = "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n";
        let i = nri(Some(explicit_off), true, Some((1, 7)));
        assert_eq!(i.status, Status::Fail);
        assert!(i.fix.unwrap().contains("set:\n  disable = false"));
    }

    #[test]
    fn containerd_2_enabled_unless_disabled() {
        let cfg = "version = 3\n";
        assert_eq!(nri(Some(cfg), true, Some((2, 0))).status, Status::Ok);
        assert_eq!(nri(Some(cfg), false, None).status, Status::Ok);
        // A version 2 config on containerd 2.x: migrated, NRI default on.
        assert_eq!(nri(Some("version = 2\n"), true, Some((2, 1))).status, Status::Ok);
        let off = "version = 3\n[plugins.'io.containerd.nri.v1.nri']\ndisable = true\n";
        assert_eq!(nri(Some(off), true, Some((2, 0))).status, Status::Fail);
        let no_conn = "version = 3\n[plugins.\"io.containerd.nri.v1.nri\"]\ndisable_connections = true\n";
        let i = nri(Some(no_conn), true, Some((2, 0)));
        assert_eq!(i.status, Status::Fail);
        assert!(i.detail.contains("disable_connections"));
        let other_sock = "version = 3\n[plugins.\"io.containerd.nri.v1.nri\"]\nsocket_path = \"/run/other.sock\"\n";
        let i = nri(Some(other_sock), true, Some((2, 0)));
        assert_eq!(i.status, Status::Warn);
        assert!(i.fix.unwrap().contains("socket = \"/run/other.sock\""));
    }

    #[test]
    fn containerd_config_edge_cases() {
        assert_eq!(nri(Some("this is = = not toml"), true, None).status, Status::Fail);
        let v1 = nri(Some("[plugins.cri]\n"), true, Some((1, 7)));
        assert_eq!(v1.status, Status::Fail);
        assert!(v1.detail.contains("version 1"));
        assert_eq!(nri(None, true, Some((1, 7))).status, Status::Fail);
        assert_eq!(nri(None, true, Some((2, 0))).status, Status::Ok);
        assert_eq!(nri(None, false, None).status, Status::Warn);
        let imports = nri(Some("version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n"), true, Some((2, 0)));
        assert!(imports.detail.contains("drop-ins"), "{imports:?}");
    }

    #[test]
    fn nri_socket_states() {
        let p = Path::new(SOCK);
        assert_eq!(check_nri_socket(p, SocketState::Socket, true, Status::Ok).status, Status::Ok);
        assert_eq!(check_nri_socket(p, SocketState::NotASocket, true, Status::Ok).status, Status::Fail);
        let i = check_nri_socket(p, SocketState::Missing, true, Status::Fail);
        assert_eq!(i.status, Status::Warn);
        assert!(i.detail.contains("NRI disabled"));
        assert!(check_nri_socket(p, SocketState::Missing, false, Status::Warn).detail.contains("not installed"));
    }

    fn hook(config: Option<&str>) -> Item {
        let spec = include_str!("../packaging/containerd/base-runtime-spec.json");
        check_containerd_hook(config, Path::new(CONTAINERD_CONFIG), true, |p| {
            if p == Path::new(SHIPPED_BASE_SPEC) {
                Ok(spec.to_string())
            } else if p == Path::new("/etc/containerd/plain-spec.json") {
                Ok(r#"{"ociVersion":"1.1.0","process":{},"root":{"path":"rootfs"}}"#.to_string())
            } else {
                Err("No such file or directory (os error 2)".to_string())
            }
        })
    }

    #[test]
    fn containerd_hook_shipped_snippet_is_ok() {
        // The snippet the packages ship, merged into a stock 1.7 config.
        let shipped = include_str!("../packaging/containerd/oci-hook-1.7.toml");
        let it = hook(Some(shipped));
        assert_eq!(it.status, Status::Ok, "{it:?}");
        assert!(it.detail.contains("fail closed"), "{it:?}");
        let cfg = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    base_runtime_spec = "/usr/share/driftguard/containerd/base-runtime-spec.json"
    pod_annotations = ["driftguard.dev/*"]
    container_annotations = ["driftguard.dev/*", "other/*"]
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = true
"#;
        assert_eq!(hook(Some(cfg)).status, Status::Ok);
        // containerd 2.x (config version 3): the same keys under the new plugin name.
        let v3 = include_str!("../packaging/containerd/oci-hook-2.x.toml");
        assert_eq!(hook(Some(v3)).status, Status::Ok, "{:?}", hook(Some(v3)));
    }

    #[test]
    fn containerd_hook_missing_pieces_are_named() {
        // NRI only: fail open, with the keys to add.
        let nri_only = "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = false\n";
        let it = hook(Some(nri_only));
        assert_eq!(it.status, Status::Warn);
        assert!(it.detail.contains("fail open"), "{it:?}");
        let fix = it.fix.unwrap_or_default();
        assert!(
            fix.contains("base_runtime_spec = \"/usr/share/driftguard/containerd/base-runtime-spec.json\""),
            "{fix}"
        );
        assert!(fix.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]"), "{fix}");
        // Spec without the hooks, annotations not passed.
        let cfg = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  base_runtime_spec = "/etc/containerd/plain-spec.json"
  pod_annotations = ["driftguard.dev/mode"]
"#;
        let it = hook(Some(cfg));
        assert_eq!(it.status, Status::Warn);
        for want in [
            "has no createRuntime hook `driftguard-oci-hook create-runtime`",
            "has no poststop hook",
            "pod_annotations does not pass",
            "container_annotations does not pass",
        ] {
            assert!(it.detail.contains(want), "{want}: {it:?}");
        }
        // Unreadable spec file; another default runtime without the keys.
        let cfg = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  base_runtime_spec = \"/nope.json\"\n";
        assert!(hook(Some(cfg)).detail.contains("/nope.json unreadable"), "{:?}", hook(Some(cfg)));
        let cfg = format!(
            "{}\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"kata\"\n",
            include_str!("../packaging/containerd/oci-hook-1.7.toml")
        );
        let it = hook(Some(&cfg));
        assert_eq!(it.status, Status::Warn, "{it:?}");
        assert!(it.detail.contains("runtimes.kata] is not in the file"), "{it:?}");
        // No config at all; containerd not installed.
        assert_eq!(hook(None).status, Status::Warn);
        let it = check_containerd_hook(None, Path::new(CONTAINERD_CONFIG), false, |_| Err(String::new()));
        assert_eq!(it.status, Status::Ok);
    }

    #[test]
    fn annotation_patterns_follow_path_match() {
        let v = |l: &[&str]| toml::Value::Array(l.iter().map(|s| toml::Value::String(s.to_string())).collect());
        assert!(passes_driftguard_keys(Some(&v(&["driftguard.dev/*"]))));
        assert!(!passes_driftguard_keys(Some(&v(&["*", "x"])))); // `*` does not cross `/`
        assert!(!passes_driftguard_keys(Some(&v(&["driftguard.*"]))));
        assert!(!passes_driftguard_keys(Some(&v(&["driftguard.dev/mode"]))));
        assert!(!passes_driftguard_keys(None));
    }
}
