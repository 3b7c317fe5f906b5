//! `check`'s kernel items: root, kernel, BTF, lockdown, BPF LSM, the enforcement load test
//! and what it found (`capabilities`), bpffs, overlayfs, cgroup v2. Pure judgements over what
//! [`super::gather`] read.
use super::*;
/// What `check` learnt about enforcement: what is pinned, or what a load test gave.
pub(super) enum Probe {
    Pinned(EnforcementPath),
    Skipped,
    Loaded { path: EnforcementPath, reason: Option<String>, d_path: bool, ovl_proof: LayoutProof },
    Failed(String),
}

/// Whether the layout read of overlay's upper dentry holds on this kernel: the load test's
/// proof, or (an agent's programs are pinned) a proof of its own with the pinned path.
/// `None`: no load test could run.
pub(super) fn overlay_proof(probe: &Probe, ovl: OverlayUpper) -> Option<LayoutProof> {
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
    pub(super) fn lsm_refused(&self) -> Option<String> {
        match self {
            Probe::Loaded { path: EnforcementPath::TracepointKill, reason, .. } => {
                Some(first_line(reason.as_deref().unwrap_or("unknown")).to_string())
            }
            _ => None,
        }
    }
}

pub(super) fn probe_enforcement(cfg: &Config, can_probe: bool) -> Probe {
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

pub(super) fn check_enforcement(cfg: &Config, probe: &Probe) -> Item {
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
pub(super) fn check_capabilities(
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
pub(super) fn lsm_reason_ref(reason: Option<&str>) -> String {
    let reason = first_line(reason.unwrap_or("unknown"));
    if reason.contains("BPF LSM is not active") || reason.contains("BPF LSM program") {
        "see bpf_lsm".to_string()
    } else {
        reason.to_string()
    }
}

pub(super) fn overlay_module_present(release: &str) -> bool {
    let base = PathBuf::from(format!("/lib/modules/{release}/kernel/fs/overlayfs"));
    ["overlay.ko", "overlay.ko.xz", "overlay.ko.zst", "overlay.ko.gz"].iter().any(|f| base.join(f).exists())
}

// ---------------------------------------------------------------------------
// Pure checks

pub(super) const CAP_SYS_ADMIN: u32 = 21;
pub(super) const CAP_PERFMON: u32 = 38;
pub(super) const CAP_BPF: u32 = 39;

pub(super) fn parse_cap_eff(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

pub(super) fn check_root(euid: u32, cap_eff: Option<u64>) -> Item {
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

pub(super) fn check_kernel(release: &str) -> Item {
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

pub(super) fn check_btf(present: bool) -> Item {
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
pub(super) fn lsm_cmdline(active: &[&str]) -> String {
    let mut v: Vec<&str> = active.iter().copied().filter(|l| *l != "bpf").collect();
    v.push("bpf");
    format!("lsm={}", v.join(","))
}

pub(super) fn check_bpf_lsm(list: Option<&str>, verdict_err: Option<&str>, kconfig: Option<&str>) -> Item {
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

pub(super) fn check_lockdown(text: Option<&str>) -> Item {
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

pub(super) fn check_bpffs(parent: &Path, mounted: bool) -> Item {
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

pub(super) fn check_overlayfs(proc_filesystems: &str, module_present: bool) -> Item {
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

pub(super) fn check_cgroup(mountinfo: &str, configured: Option<&Path>) -> Item {
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
