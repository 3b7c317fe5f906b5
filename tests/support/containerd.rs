//! A real containerd (Debian trixie's 1.7 or sid's 2.1, fetched by `scripts/install-containerd.sh`)
//! with the CRI plugin and NRI enabled, private to one test: its own root, state, gRPC/ttrpc addresses,
//! NRI socket, runc root and cgroup parent, all under a scratch directory. Pods are driven
//! through the CRI v1 gRPC API the way the kubelet drives them (k8s-cri bindings over the unix
//! socket).
//!
//! Include from an integration test with:
//! ```ignore
//! #[path = "support/containerd.rs"]
//! mod containerd;
//! ```
//!
//! Images are built locally as OCI image-layout tars (busybox-static rootfs; registries are
//! unreachable) and imported with `ctr images import`:
//! - [`PAUSE_IMAGE`]: the sandbox image; `sh` sleeping until SIGTERM.
//! - [`APP_IMAGE`]: the workload image; also ships the script `/bin/hello.sh` (prints
//!   [`HELLO`]).
//!
//! Cleanup ([`Drop`]) never touches anything this harness did not create: pods are removed
//! through CRI, containerd is stopped, then leftovers are killed by identity (shims whose
//! `-address` is this containerd's socket, processes in this instance's cgroup tree), runc
//! state under the private runc root is deleted, mounts under the scratch directory are
//! detached and the cgroup directories are removed in every hierarchy.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where `scripts/install-containerd.sh` put containerd 1.7 (default `<repo>/.cache/containerd`).
pub const DIR_ENV: &str = "DRIFTGUARD_CONTAINERD_DIR";
/// Where `scripts/install-containerd.sh` put containerd 2.x (Debian sid's; default
/// `<repo>/.cache/containerd-2`).
pub const DIR2_ENV: &str = "DRIFTGUARD_CONTAINERD2_DIR";
/// The sandbox ("pause") image every pod uses.
pub const PAUSE_IMAGE: &str = "docker.io/library/dg-pause:test";
/// The workload image.
pub const APP_IMAGE: &str = "docker.io/library/dg-app:test";
/// What `/bin/hello.sh` of [`APP_IMAGE`] prints.
pub const HELLO: &str = "hello from the image";
/// The runc containerd is told to use.
pub const RUNC: &str = "/usr/sbin/runc";
/// The base runtime spec the packages ship (containerd 1.7's default spec plus the
/// `driftguard-oci-hook` createRuntime and poststop hooks), relative to the repository.
pub const SHIPPED_BASE_SPEC: &str = "packaging/containerd/base-runtime-spec.json";
/// Where the shipped spec expects the hook.
pub const SHIPPED_HOOK_PATH: &str = "/usr/bin/driftguard-oci-hook";

const TAIL: usize = 40;

/// The repository root (the directory with `scripts/install-containerd.sh`).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.ancestors().find(|d| d.join("scripts/install-containerd.sh").is_file()).unwrap_or(&manifest).to_path_buf()
}

/// Which containerd a harness instance runs: the 1.7 line (config version 2, CRI plugin
/// `io.containerd.grpc.v1.cri`) or the 2.x line (config version 3, CRI plugins
/// `io.containerd.cri.v1.runtime` / `io.containerd.cri.v1.images`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    V1_7,
    V2,
}

impl Line {
    /// The environment variable naming its install directory.
    pub fn dir_env(self) -> &'static str {
        match self {
            Line::V1_7 => DIR_ENV,
            Line::V2 => DIR2_ENV,
        }
    }

    /// What `scripts/install-containerd.sh` needs to fetch it.
    pub fn install_hint(self) -> &'static str {
        match self {
            Line::V1_7 => "sudo scripts/install-containerd.sh",
            Line::V2 => "sudo DRIFTGUARD_CONTAINERD_SUITE=sid scripts/install-containerd.sh",
        }
    }
}

/// `$DRIFTGUARD_CONTAINERD_DIR` or `<repo>/.cache/containerd` (containerd 1.7).
pub fn install_dir() -> PathBuf {
    install_dir_of(Line::V1_7)
}

/// The install directory of `line`: its environment variable, or `<repo>/.cache/containerd`
/// (1.7) / `<repo>/.cache/containerd-2` (2.x).
pub fn install_dir_of(line: Line) -> PathBuf {
    if let Some(d) = std::env::var_os(line.dir_env()) {
        return PathBuf::from(d);
    }
    repo_root().join(match line {
        Line::V1_7 => ".cache/containerd",
        Line::V2 => ".cache/containerd-2",
    })
}

/// The OCI hook wired into containerd the way the packages ship it
/// (`packaging/containerd/oci-hook-1.7.toml`): the shipped base runtime spec, with the hook's
/// path replaced by `bin` and private `--config`/`--state-dir` arguments appended, and
/// `pod_annotations`/`container_annotations` = `["driftguard.dev/*"]` on the runc runtime.
#[derive(Debug, Clone)]
pub struct HookWiring {
    /// The `driftguard-oci-hook` binary to run.
    pub bin: PathBuf,
    /// A ready base runtime spec to use instead of the shipped one (e.g. the one the
    /// DaemonSet's node-setup.sh installs). Used as it is, except that a private `--state-dir`
    /// is appended to its driftguard-oci-hook entries; `bin` is then unused.
    pub spec: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    /// The package version recorded by the install script (e.g. `1.7.24~ds1-6+deb13u1`).
    pub version: String,
    pub line: Line,
}

/// containerd 1.7 (`$DRIFTGUARD_CONTAINERD_DIR`).
pub fn binaries() -> Result<Binaries, String> {
    binaries_of(Line::V1_7)
}

/// The installed containerd of `line`; Err says why it is missing, or that the directory holds
/// another line's containerd.
pub fn binaries_of(line: Line) -> Result<Binaries, String> {
    let root = install_dir_of(line);
    let dir = root.join("root/usr/bin");
    for b in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        if !dir.join(b).is_file() {
            return Err(format!(
                "containerd not installed: {} missing (run `{}`, or set {})",
                dir.join(b).display(),
                line.install_hint(),
                line.dir_env()
            ));
        }
    }
    let version = fs::read_to_string(root.join("version")).map(|s| s.trim().to_string()).unwrap_or_default();
    let found = if version.starts_with("1.") { Line::V1_7 } else { Line::V2 };
    if found != line {
        return Err(format!(
            "{} holds containerd {version}, not the {line:?} line (run `{}`, or set {})",
            root.display(),
            line.install_hint(),
            line.dir_env()
        ));
    }
    Ok(Binaries { containerd: dir.join("containerd"), ctr: dir.join("ctr"), dir, version, line })
}

/// Why a real containerd 1.7 cannot run here (`None`: it can).
pub fn requirements() -> Option<String> {
    requirements_of(Line::V1_7)
}

/// Why a real containerd of `line` cannot run here (`None`: it can).
pub fn requirements_of(line: Line) -> Option<String> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root".into());
    }
    if !Path::new(RUNC).is_file() {
        return Some(format!("{RUNC} missing (apt-get install runc)"));
    }
    if !Path::new("/bin/busybox").is_file() {
        return Some("/bin/busybox missing (apt-get install busybox-static)".into());
    }
    for tool in ["tar", "sha256sum"] {
        if !["/usr/bin", "/bin"].iter().any(|d| Path::new(d).join(tool).is_file()) {
            return Some(format!("{tool} not found"));
        }
    }
    if let Err(e) = binaries_of(line) {
        return Some(e);
    }
    if driftguard::cgroup::CgroupRoot::detect().is_err() {
        return Some("no cgroup2 hierarchy mounted".into());
    }
    None
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Poll `f` every 50 ms until it returns `Some`, or fail after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(cmd: &mut Command) -> Result<std::process::Output, String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

// --- images ----------------------------------------------------------------------------------

/// A busybox-static rootfs: `/bin/busybox` and every applet as a symlink to it
/// (`busybox --list-full`, what `busybox --install -s` creates), plus the usual directories.
fn busybox_rootfs(root: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", root.display());
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "root", "var", "run", "tmp"] {
        fs::create_dir_all(root.join(d)).map_err(io)?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).map_err(io)?;
    fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(io)?;
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).map_err(io)?;
    let list = run(Command::new("/bin/busybox").arg("--list-full"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("/bin/busybox", &link).map_err(io)?;
        }
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").map_err(io)?;
    fs::write(root.join("etc/group"), "root:x:0:\n").map_err(io)?;
    Ok(())
}

fn sha256_file(p: &Path) -> Result<String, String> {
    let out = run(Command::new("sha256sum").arg(p))?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace().next().map(str::to_string).ok_or_else(|| format!("sha256sum {}: no output", p.display()))
}

/// Write an OCI image-layout tar of `rootfs` (one uncompressed layer) named `name`.
fn oci_image(work: &Path, rootfs: &Path, name: &str, entrypoint: &[&str], out: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", work.display());
    let layout = work.join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io)?;
    let layer = work.join("layer.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "--mtime=@0", "--sort=name", "-C"])
        .arg(rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg("."))?;
    let layer_digest = sha256_file(&layer)?;
    let layer_size = fs::metadata(&layer).map_err(io)?.len();
    fs::rename(&layer, blobs.join(&layer_digest)).map_err(io)?;
    let put = |bytes: Vec<u8>| -> Result<(String, usize), String> {
        let tmp = work.join("blob.tmp");
        fs::write(&tmp, &bytes).map_err(io)?;
        let d = sha256_file(&tmp)?;
        fs::rename(&tmp, blobs.join(&d)).map_err(io)?;
        Ok((d, bytes.len()))
    };
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Entrypoint": entrypoint, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    });
    let (config_digest, config_size) = put(config.to_string().into_bytes())?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_digest}"), "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().into_bytes())?;
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{manifest_digest}"), "size": manifest_size,
                       "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}}],
    });
    fs::write(layout.join("index.json"), index.to_string()).map_err(io)?;
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
    run(Command::new("tar").arg("-C").arg(&layout).arg("-cf").arg(out).args(["oci-layout", "index.json", "blobs"]))?;
    let _ = fs::remove_dir_all(&layout);
    Ok(())
}

/// Build [`PAUSE_IMAGE`] and [`APP_IMAGE`] as OCI tars in `dir`.
fn build_images(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    let pause_root = dir.join("pause-rootfs");
    busybox_rootfs(&pause_root)?;
    let pause = dir.join("pause.tar");
    // PID 1 of the pod: sleeps until SIGTERM/SIGINT (containerd stops sandboxes with SIGKILL).
    oci_image(
        &dir.join("pause-work"),
        &pause_root,
        PAUSE_IMAGE,
        &["/bin/sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"],
        &pause,
    )?;
    let app_root = dir.join("app-rootfs");
    busybox_rootfs(&app_root)?;
    fs::write(app_root.join("bin/hello.sh"), format!("#!/bin/sh\necho '{HELLO}'\n")).map_err(io)?;
    fs::set_permissions(app_root.join("bin/hello.sh"), fs::Permissions::from_mode(0o755)).map_err(io)?;
    let app = dir.join("app.tar");
    oci_image(
        &dir.join("app-work"),
        &app_root,
        APP_IMAGE,
        &["/bin/sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"],
        &app,
    )?;
    for d in [pause_root, app_root] {
        let _ = fs::remove_dir_all(d);
    }
    Ok(vec![pause, app])
}

// --- containerd --------------------------------------------------------------------------------

/// A pod as created by [`Containerd::run_pod`]: its id and the config CreateContainer needs again.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub config: cri::PodSandboxConfig,
}

/// Result of an ExecSync.
#[derive(Debug, Clone)]
pub struct Exec {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}, stdout {:?}, stderr {:?}", self.code, self.stdout, self.stderr)
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Containerd {
    pub bins: Binaries,
    /// Scratch directory holding everything of this instance.
    pub dir: PathBuf,
    /// gRPC socket (CRI and containerd API).
    pub sock: PathBuf,
    /// NRI socket the agent connects to.
    pub nri_sock: PathBuf,
    pub config: PathBuf,
    /// With [`HookWiring`]: the driftguard config file the hook reads (`--config`), written by
    /// the test (read at every hook run, so it may be written after containerd started).
    pub hook_config: PathBuf,
    /// With [`HookWiring`]: the hook's per-container records (`--state-dir`).
    pub hook_state: PathBuf,
    hook: Option<HookWiring>,
    /// Cgroup parent of every pod of this instance (`/dg-cri-<pid>-<n>`), relative to each
    /// hierarchy's root.
    pub cgroup_base: String,
    pods: AtomicU32,
    /// The containerd process. Behind locks so that one thread can restart containerd while
    /// others make CRI calls (those fail with `Unavailable` while it is away).
    child: Mutex<Option<Child>>,
    rt: tokio::runtime::Runtime,
    client: Mutex<Option<RuntimeServiceClient<Channel>>>,
    /// Set when the scratch directory must not be deleted (a mount could not be detached).
    keep_dir: bool,
}

impl Containerd {
    /// Start a private containerd 1.7 (NRI only, no OCI hook) and import the test images.
    pub fn start() -> Result<Self, String> {
        Self::start_with(None)
    }

    /// Start a private containerd 1.7, with the OCI hook wired in when `hook` is given, and
    /// import the test images.
    pub fn start_with(hook: Option<HookWiring>) -> Result<Self, String> {
        Self::start_line(Line::V1_7, hook)
    }

    /// Start a private containerd of `line`, with the OCI hook wired in when `hook` is given,
    /// and import the test images.
    pub fn start_line(line: Line, hook: Option<HookWiring>) -> Result<Self, String> {
        let bins = binaries_of(line)?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Short: unix socket paths are limited to 108 bytes.
        let dir = PathBuf::from(format!("/tmp/dg-cri-{pid}-{n}"));
        if dir.exists() {
            return Err(format!("{} already exists (a previous run with the same pid?)", dir.display()));
        }
        for d in ["root", "state", "runc", "cni", "nri-conf", "nri-plugins", "opt", "images"] {
            fs::create_dir_all(dir.join(d)).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let c = Containerd {
            bins,
            sock: dir.join("c.sock"),
            nri_sock: dir.join("nri.sock"),
            config: dir.join("config.toml"),
            hook_config: dir.join("hook-config.toml"),
            hook_state: dir.join("hook-state"),
            hook,
            cgroup_base: format!("/dg-cri-{pid}-{n}"),
            dir,
            pods: AtomicU32::new(0),
            child: Mutex::new(None),
            rt,
            client: Mutex::new(None),
            keep_dir: false,
        };
        if let Some(h) = &c.hook {
            let spec = match &h.spec {
                None => c.base_spec(&h.bin)?,
                Some(p) => c.given_spec(p)?,
            };
            fs::write(c.dir.join("base-spec.json"), spec).map_err(|e| format!("{}: {e}", c.dir.display()))?;
        }
        fs::write(&c.config, c.config_toml()).map_err(|e| format!("{}: {e}", c.config.display()))?;
        c.launch()?;
        let images = build_images(&c.dir.join("images"))?;
        for tar in &images {
            c.ctr(&["images", "import"], tar)?;
        }
        Ok(c)
    }

    /// The shipped base runtime spec with the hook at `bin` and this instance's `--config` and
    /// `--state-dir`. Fails if the shipped spec does not run the hook at both stages.
    fn base_spec(&self, bin: &Path) -> Result<String, String> {
        let path = repo_root().join(SHIPPED_BASE_SPEC);
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut spec: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for stage in ["createRuntime", "poststop"] {
            let hooks =
                spec["hooks"][stage].as_array_mut().ok_or_else(|| format!("{}: no hooks.{stage}", path.display()))?;
            let mut found = false;
            for h in hooks.iter_mut().filter(|h| h["path"] == SHIPPED_HOOK_PATH) {
                found = true;
                h["path"] = bin.to_string_lossy().into_owned().into();
                let args = h["args"].as_array_mut().ok_or_else(|| format!("{}: hook without args", path.display()))?;
                for a in
                    ["--config", &self.hook_config.to_string_lossy(), "--state-dir", &self.hook_state.to_string_lossy()]
                {
                    args.push(a.into());
                }
            }
            if !found {
                return Err(format!("{}: hooks.{stage} does not run {SHIPPED_HOOK_PATH}", path.display()));
            }
        }
        serde_json::to_string_pretty(&spec).map_err(|e| e.to_string())
    }

    /// The spec at `path` with this instance's `--state-dir` appended to every
    /// driftguard-oci-hook entry. Fails if it has none at createRuntime or poststop.
    fn given_spec(&self, path: &Path) -> Result<String, String> {
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut spec: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for stage in ["createRuntime", "poststop"] {
            let hooks =
                spec["hooks"][stage].as_array_mut().ok_or_else(|| format!("{}: no hooks.{stage}", path.display()))?;
            let mut found = false;
            for h in
                hooks.iter_mut().filter(|h| h["path"].as_str().is_some_and(|p| p.ends_with("/driftguard-oci-hook")))
            {
                found = true;
                let args = h["args"].as_array_mut().ok_or_else(|| format!("{}: hook without args", path.display()))?;
                args.push("--state-dir".into());
                args.push(self.hook_state.to_string_lossy().into_owned().into());
            }
            if !found {
                return Err(format!("{}: hooks.{stage} does not run driftguard-oci-hook", path.display()));
            }
        }
        serde_json::to_string_pretty(&spec).map_err(|e| e.to_string())
    }

    fn config_toml(&self) -> String {
        let d = self.dir.display();
        // What packaging/containerd/oci-hook-{1.7,2.x}.toml tell admins to add to the runc
        // runtime (the same keys on both lines).
        let hook = if self.hook.is_some() {
            format!(
                "base_runtime_spec = \"{d}/base-spec.json\"\n      \
                 pod_annotations = [\"driftguard.dev/*\"]\n      container_annotations = [\"driftguard.dev/*\"]"
            )
        } else {
            "# no OCI hook".to_string()
        };
        let (version, cri) = match self.bins.line {
            Line::V1_7 => (
                2,
                format!(
                    r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root lacks CAP_SYS_RESOURCE on these machines.
  restrict_oom_score_adj = true
  enable_cdi = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      {hook}
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
        Root = "{d}/runc"
  # Pods use the host network: no CNI plugin runs.
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni"
    conf_dir = "{d}/cni"

[plugins."io.containerd.nri.v1.nri"]
  disable = false
  disable_connections = false"#
                ),
            ),
            // containerd 2.x (config version 3): the CRI plugin is split into an images and a
            // runtime plugin; key names as in `containerd config default` of 2.1 and
            // containerd's docs/cri/config.md. NRI is on by default; set anyway.
            Line::V2 => (
                3,
                format!(
                    r#"[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  # root lacks CAP_SYS_RESOURCE on these machines.
  restrict_oom_score_adj = true
  enable_cdi = false
  disable_apparmor = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      {hook}
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
        Root = "{d}/runc"
  # Pods use the host network: no CNI plugin runs.
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{d}/cni"]
    conf_dir = "{d}/cni"

[plugins."io.containerd.nri.v1.nri"]
  disable = false
  disable_connections = false"#
                ),
            ),
        };
        format!(
            r#"version = {version}
root = "{d}/root"
state = "{d}/state"
# Snapshotters that cannot work here only add noise to the log.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

{cri}
  socket_path = "{d}/nri.sock"
  plugin_config_path = "{d}/nri-conf"
  plugin_path = "{d}/nri-plugins"
  plugin_registration_timeout = "5s"
  plugin_request_timeout = "2s"
"#
        )
    }

    /// Start the containerd process and wait until CRI answers.
    fn launch(&self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .map_err(|e| format!("containerd.log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let path = format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", self.bins.dir.display());
        let mut cmd = Command::new(&self.bins.containerd);
        // SAFETY: prctl is async-signal-safe. If the test process dies (its drop guards do not
        // run), containerd goes with it; `sweep_stale` removes the rest on the next run.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        };
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .env_clear()
            .env("PATH", path)
            .env("HOME", "/root")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a Ctrl-C of the test run is for the test binary.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bins.containerd.display()))?;
        *lock(&self.child) = Some(child);
        let sock = self.sock.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            {
                let mut guard = lock(&self.child);
                if let Some(c) = guard.as_mut() {
                    if let Ok(Some(st)) = c.try_wait() {
                        *guard = None;
                        drop(guard);
                        return Err(format!("containerd exited at start ({st})\n{}", self.log_tail()));
                    }
                }
            }
            if sock.exists() {
                let r = self.rt.block_on(async {
                    let mut client = connect(&sock).await?;
                    client
                        .version(cri::VersionRequest { version: "v1".into() })
                        .await
                        .map_err(|e| format!("CRI Version: {e}"))?;
                    Ok::<_, String>(client)
                });
                if let Ok(client) = r {
                    *lock(&self.client) = Some(client);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("containerd did not serve CRI within 30s\n{}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop containerd (SIGTERM, SIGKILL after 10 s). Shims and containers keep running, as
    /// on a node where containerd restarts. CRI calls of other threads fail meanwhile.
    pub fn stop(&self) {
        *lock(&self.client) = None;
        let child = lock(&self.child).take();
        if let Some(mut c) = child {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop and start containerd again with the same state. Call it from a thread that lives
    /// as long as containerd should: containerd gets SIGKILL when the thread that started it
    /// exits (`PR_SET_PDEATHSIG` follows the parent thread, not the process).
    pub fn restart(&self) -> Result<(), String> {
        self.stop();
        self.launch()
    }

    pub fn running(&self) -> bool {
        lock(&self.child).is_some()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        format!("--- containerd log (last {TAIL} lines) ---\n{}", tail(&self.log(), TAIL))
    }

    fn ctr(&self, args: &[&str], file: &Path) -> Result<(), String> {
        run(Command::new(&self.bins.ctr)
            .arg("--address")
            .arg(&self.sock)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .arg(file))
        .map(|_| ())
        .map_err(|e| format!("{e}\n{}", self.log_tail()))
    }

    fn client(&self) -> Result<RuntimeServiceClient<Channel>, String> {
        lock(&self.client).clone().ok_or_else(|| "containerd is not running".to_string())
    }

    /// Run one CRI call with a 60 s deadline.
    fn call<T, F>(&self, what: &str, f: impl FnOnce(RuntimeServiceClient<Channel>) -> F) -> Result<T, tonic::Status>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.client().map_err(tonic::Status::unavailable)?;
        self.rt.block_on(async {
            match tokio::time::timeout(Duration::from_secs(60), f(client)).await {
                Ok(r) => r.map(tonic::Response::into_inner),
                Err(_) => Err(tonic::Status::deadline_exceeded(format!("{what}: no answer within 60s"))),
            }
        })
    }

    /// RunPodSandbox: host network, cgroup parent `<cgroup_base>/pod-<n>`, namespace `shop`,
    /// label `app=<name>`.
    pub fn run_pod(&self, name: &str, annotations: &[(&str, &str)]) -> Result<Pod, String> {
        self.run_pod_in("shop", name, &[("app", name)], annotations)
    }

    /// [`Containerd::run_pod`] in `namespace` with `labels`.
    pub fn run_pod_in(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Result<Pod, String> {
        let n = self.pods.fetch_add(1, Ordering::Relaxed);
        let namespace = namespace.to_string();
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}-{n}"),
                namespace: namespace.clone(),
                attempt: 0,
            }),
            // Host network means the host's UTS namespace too: runc refuses a hostname then
            // ("unable to set hostname without a private UTS namespace"); the kubelet leaves it
            // empty for hostNetwork pods.
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod-{n}", self.cgroup_base),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        pid: cri::NamespaceMode::Pod as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let resp = self
            .call("RunPodSandbox", |mut c| async move { c.run_pod_sandbox(req).await })
            .map_err(|e| format!("RunPodSandbox {name}: {}\n{}", e.message(), self.log_tail()))?;
        Ok(Pod { id: resp.pod_sandbox_id, name: name.into(), namespace, config })
    }

    /// CreateContainer of [`APP_IMAGE`] running `command` (the image's entrypoint if empty).
    /// Err is containerd's status, e.g. an NRI plugin's refusal.
    pub fn create_container(&self, pod: &Pod, name: &str, command: &[&str]) -> Result<String, tonic::Status> {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(cri::ImageSpec { image: APP_IMAGE.into(), ..Default::default() }),
            command: command.iter().map(|s| s.to_string()).collect(),
            labels: HashMap::from([("container".to_string(), name.to_string())]),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: pod
                        .config
                        .linux
                        .as_ref()
                        .and_then(|l| l.security_context.as_ref())
                        .and_then(|s| s.namespace_options.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        self.call("CreateContainer", |mut c| async move { c.create_container(req).await }).map(|r| r.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        let req = cri::StartContainerRequest { container_id: id.into() };
        self.call("StartContainer", |mut c| async move { c.start_container(req).await }).map(|_| ())
    }

    /// StartContainer of every id at once: all requests in flight together on this client's
    /// connection, as a kubelet starting many pods. Per id (in order): the time from sending the
    /// request to its answer, and the answer.
    pub fn start_containers_concurrently(&self, ids: &[String]) -> Vec<(Duration, Result<(), tonic::Status>)> {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                return ids.iter().map(|_| (Duration::ZERO, Err(tonic::Status::unavailable(e.clone())))).collect()
            }
        };
        self.rt.block_on(async {
            let tasks: Vec<_> = ids
                .iter()
                .map(|id| {
                    let mut c = client.clone();
                    let req = cri::StartContainerRequest { container_id: id.clone() };
                    tokio::spawn(async move {
                        let t = Instant::now();
                        let r = match tokio::time::timeout(Duration::from_secs(60), c.start_container(req)).await {
                            Ok(r) => r.map(|_| ()),
                            Err(_) => Err(tonic::Status::deadline_exceeded("StartContainer: no answer within 60s")),
                        };
                        (t.elapsed(), r)
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(t.await.unwrap_or_else(|e| (Duration::ZERO, Err(tonic::Status::internal(e.to_string())))));
            }
            out
        })
    }

    /// CreateContainer + StartContainer, with the containerd log on failure.
    pub fn run_container(&self, pod: &Pod, name: &str, command: &[&str]) -> Result<String, String> {
        let id = self
            .create_container(pod, name, command)
            .map_err(|e| format!("CreateContainer {}/{name}: {}\n{}", pod.name, e.message(), self.log_tail()))?;
        self.start_container(&id)
            .map_err(|e| format!("StartContainer {}/{name}: {}\n{}", pod.name, e.message(), self.log_tail()))?;
        Ok(id)
    }

    /// `ctr images import` of an OCI image archive into the CRI namespace (`k8s.io`).
    pub fn import_image(&self, tar: &Path) -> Result<(), String> {
        self.ctr(&["images", "import"], tar)
    }

    /// RunPodSandbox of a config the caller built (e.g. from a Kubernetes pod spec). Its cgroup
    /// parent is set to this instance's next one (`<cgroup_base>/pod-<n>`).
    pub fn run_pod_config(&self, mut config: cri::PodSandboxConfig) -> Result<Pod, String> {
        let n = self.pods.fetch_add(1, Ordering::Relaxed);
        let meta = config.metadata.clone().unwrap_or_default();
        config.linux.get_or_insert_with(Default::default).cgroup_parent = format!("{}/pod-{n}", self.cgroup_base);
        let req = cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let resp = self
            .call("RunPodSandbox", |mut c| async move { c.run_pod_sandbox(req).await })
            .map_err(|e| format!("RunPodSandbox {}: {}\n{}", meta.name, e.message(), self.log_tail()))?;
        Ok(Pod { id: resp.pod_sandbox_id, name: meta.name, namespace: meta.namespace, config })
    }

    /// CreateContainer + StartContainer of a config the caller built.
    pub fn run_container_config(&self, pod: &Pod, config: cri::ContainerConfig) -> Result<String, String> {
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let id = self
            .call("CreateContainer", |mut c| async move { c.create_container(req).await })
            .map(|r| r.container_id)
            .map_err(|e| format!("CreateContainer {}/{name}: {}\n{}", pod.name, e.message(), self.log_tail()))?;
        self.start_container(&id)
            .map_err(|e| format!("StartContainer {}/{name}: {}\n{}", pod.name, e.message(), self.log_tail()))?;
        Ok(id)
    }

    /// ExecSync (`kubectl exec` without a TTY), 30 s timeout.
    pub fn exec(&self, id: &str, cmd: &[&str]) -> Result<Exec, String> {
        let req = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        };
        let r = self
            .call("ExecSync", |mut c| async move { c.exec_sync(req).await })
            .map_err(|e| format!("ExecSync {cmd:?} in {id}: {}\n{}", e.message(), self.log_tail()))?;
        Ok(Exec {
            code: r.exit_code,
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        })
    }

    /// `sh -c <script>` in the container.
    pub fn sh(&self, id: &str, script: &str) -> Result<Exec, String> {
        self.exec(id, &["/bin/sh", "-c", script])
    }

    pub fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, String> {
        let req = cri::ContainerStatusRequest { container_id: id.into(), verbose: false };
        self.call("ContainerStatus", |mut c| async move { c.container_status(req).await })
            .map_err(|e| format!("ContainerStatus {id}: {}", e.message()))?
            .status
            .ok_or_else(|| format!("ContainerStatus {id}: no status"))
    }

    pub fn list_containers(&self) -> Result<Vec<cri::Container>, String> {
        let req = cri::ListContainersRequest { filter: None };
        self.call("ListContainers", |mut c| async move { c.list_containers(req).await })
            .map(|r| r.containers)
            .map_err(|e| format!("ListContainers: {}", e.message()))
    }

    /// StopContainer (SIGKILL right away: timeout 0) + RemoveContainer.
    pub fn remove_container(&self, id: &str) -> Result<(), String> {
        let req = cri::StopContainerRequest { container_id: id.into(), timeout: 0 };
        self.call("StopContainer", |mut c| async move { c.stop_container(req).await })
            .map_err(|e| format!("StopContainer {id}: {}", e.message()))?;
        let req = cri::RemoveContainerRequest { container_id: id.into() };
        self.call("RemoveContainer", |mut c| async move { c.remove_container(req).await })
            .map_err(|e| format!("RemoveContainer {id}: {}", e.message()))?;
        Ok(())
    }

    /// StopPodSandbox + RemovePodSandbox (removes the pod's containers too).
    pub fn remove_pod(&self, id: &str) -> Result<(), String> {
        let req = cri::StopPodSandboxRequest { pod_sandbox_id: id.into() };
        self.call("StopPodSandbox", |mut c| async move { c.stop_pod_sandbox(req).await })
            .map_err(|e| format!("StopPodSandbox {id}: {}", e.message()))?;
        let req = cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() };
        self.call("RemovePodSandbox", |mut c| async move { c.remove_pod_sandbox(req).await })
            .map_err(|e| format!("RemovePodSandbox {id}: {}", e.message()))?;
        Ok(())
    }

    fn remove_all_pods(&self) -> Result<(), String> {
        let req = cri::ListPodSandboxRequest { filter: None };
        let pods = self
            .call("ListPodSandbox", |mut c| async move { c.list_pod_sandbox(req).await })
            .map_err(|e| format!("ListPodSandbox: {}", e.message()))?
            .items;
        let mut errs = Vec::new();
        for p in pods {
            if let Err(e) = self.remove_pod(&p.id) {
                errs.push(e);
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    /// The container's cgroup in the cgroup v2 hierarchy (cgroupfs driver:
    /// `<cgroup parent>/<container id>`).
    pub fn cgroup_dir(&self, pod: &Pod, container_id: &str) -> Result<PathBuf, String> {
        let root = driftguard::cgroup::CgroupRoot::detect().map_err(|e| e.to_string())?;
        let parent = pod.config.linux.as_ref().map(|l| l.cgroup_parent.clone()).unwrap_or_default();
        Ok(root.path.join(parent.trim_start_matches('/')).join(container_id))
    }

    // --- cleanup ---

    fn cleanup(&mut self) {
        // 1. The orderly way: remove every pod through CRI, so containerd unmounts and deletes.
        if self.running() {
            if let Err(e) = self.remove_all_pods() {
                eprintln!("containerd cleanup: removing pods: {e}");
            }
        }
        // 2. Stop containerd.
        self.stop();
        // 3.-6. Whatever is left, by identity only.
        self.keep_dir = !remove_leftovers(&self.dir, &self.cgroup_base);
        if !self.keep_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Remove what a harness containerd with scratch directory `dir` and cgroup parent
/// `cgroup_base` left behind once containerd itself is gone: processes in its cgroup tree, its
/// shims (by `-address`), runc state under its private runc root, mounts under `dir` (deepest
/// first) and its cgroup directories in every hierarchy. False if a mount could not be
/// detached (then `dir` must not be deleted).
fn remove_leftovers(dir: &Path, cgroup_base: &str) -> bool {
    if let Ok(root) = driftguard::cgroup::CgroupRoot::detect() {
        let top = root.path.join(cgroup_base.trim_start_matches('/'));
        if top.is_dir() {
            let _ = fs::write(top.join("cgroup.kill"), "1");
        }
    }
    let shims = pids_with_args(&["-address", &dir.join("c.sock").to_string_lossy()]);
    for pid in &shims {
        // SAFETY: a shim of a containerd this harness started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let _ = wait_for(Duration::from_secs(5), "shims to exit", || {
        shims.iter().all(|p| !Path::new(&format!("/proc/{p}")).exists()).then_some(())
    });
    let runc_root = dir.join("runc");
    if let Ok(out) = Command::new(RUNC).arg("--root").arg(&runc_root).args(["list", "-q"]).output() {
        for id in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()) {
            let _ = Command::new(RUNC)
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "-f", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    for _ in 0..5 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            break;
        }
        for m in mounts {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: valid C string.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
    let clean = mounts_under(dir).is_empty();
    if !clean {
        eprintln!("containerd cleanup: mounts left under {}; keeping the directory", dir.display());
    }
    for top in cgroup_dirs(cgroup_base) {
        let _ = wait_for(Duration::from_secs(5), "cgroups to be removable", || {
            remove_cgroup_tree(&top);
            (!top.exists()).then_some(())
        });
        if top.exists() {
            eprintln!("containerd cleanup: could not remove cgroup {}", top.display());
        }
    }
    clean
}

/// A poisoned lock (a panicking thread) still guards valid data here.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Pids of processes whose command line contains `args` as consecutive arguments.
fn pids_with_args(args: &[&str]) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else { return pids };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else { continue };
        let have: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if have.windows(args.len()).any(|w| w.iter().zip(args).all(|(h, a)| *h == a.as_bytes())) {
            pids.push(pid);
        }
    }
    pids
}

/// `<hierarchy>/<cgroup_base>` for every mounted cgroup v1 and v2 hierarchy where it exists.
fn cgroup_dirs(cgroup_base: &str) -> Vec<PathBuf> {
    let rel = cgroup_base.trim_start_matches('/');
    let mut out = Vec::new();
    for line in fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines() {
        let Some((_, post)) = line.split_once(" - ") else { continue };
        let fstype = post.split_whitespace().next().unwrap_or("");
        if fstype == "cgroup" || fstype == "cgroup2" {
            if let Some(mp) = line.split_whitespace().nth(4) {
                let p = Path::new(&unescape_mountinfo(mp)).join(rel);
                if p.is_dir() && !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// `(pid, n)` of a harness name `dg-cri-<pid>-<n>` whose test process is gone.
fn dead_run(name: &str) -> Option<(u32, u32)> {
    let (pid, n) = name.strip_prefix("dg-cri-")?.split_once('-')?;
    let (pid, n) = (pid.parse::<u32>().ok()?, n.parse::<u32>().ok()?);
    (!Path::new(&format!("/proc/{pid}")).exists()).then_some((pid, n))
}

/// Clean up after earlier test processes that died without running their drop guards
/// (SIGKILL, a Ctrl-C of an ignored panic): their containerds (found by the `--config` path
/// only this harness uses), shims, containers, mounts, cgroups, and the agents' pinned BPF
/// state. Only `dg-cri-<pid>-<n>` names whose `<pid>` no longer exists are touched.
pub fn sweep_stale() {
    if let Ok(rd) = fs::read_dir("/tmp") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Agent directories (`support/agent_process.rs`): `dg-cri-agent-<pid>-<random>`.
            if let Some(pid) = name.strip_prefix("dg-cri-agent-").and_then(|r| r.split('-').next()) {
                if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = fs::remove_dir_all(e.path());
                }
                continue;
            }
            let Some((pid, n)) = dead_run(&name) else { continue };
            let dir = e.path();
            eprintln!("cleaning up after a dead test run: {}", dir.display());
            let config = dir.join("config.toml");
            for p in pids_with_args(&["--config", &config.to_string_lossy()]) {
                // SAFETY: a containerd started by this harness (its config path is unique to it).
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            if remove_leftovers(&dir, &format!("/dg-cri-{pid}-{n}")) {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }
    if let Ok(rd) = fs::read_dir("/sys/fs/bpf") {
        for e in rd.flatten() {
            if dead_run(&e.file_name().to_string_lossy()).is_some() {
                let _ = driftguard::enforcer::unload(&e.path());
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    // Cgroup parents whose scratch directory is already gone.
    for top in cgroup_dirs("") {
        let Ok(rd) = fs::read_dir(&top) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && dead_run(&name).is_some() {
                let _ = fs::write(e.path().join("cgroup.kill"), "1");
                remove_cgroup_tree(&e.path());
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// A tonic channel to a unix socket (the URI is a placeholder; the connector dials the path).
async fn connect(sock: &Path) -> Result<RuntimeServiceClient<Channel>, String> {
    let sock = sock.to_path_buf();
    let channel = Endpoint::try_from("http://localhost")
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move {
                let s = tokio::net::UnixStream::connect(sock).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .map_err(|e| format!("connecting to CRI: {e}"))?;
    Ok(RuntimeServiceClient::new(channel))
}
