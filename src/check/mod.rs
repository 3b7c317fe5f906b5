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

mod kernel;
mod runtime;
/// `(major, minor)` of a kernel release string such as `6.1.0-57-cloud-amd64`.
pub use crate::enforcer::memlock::kernel_version as parse_kernel_version;
use kernel::*;
use runtime::*;

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
        let spec = include_str!("../../packaging/containerd/base-runtime-spec.json");
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
        let shipped = include_str!("../../packaging/containerd/oci-hook-1.7.toml");
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
        let v3 = include_str!("../../packaging/containerd/oci-hook-2.x.toml");
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
            include_str!("../../packaging/containerd/oci-hook-1.7.toml")
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
