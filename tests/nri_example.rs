//! The nri-plugin crate's `adjuster` example (`nri-plugin/examples/adjuster.rs`) against a real
//! containerd (Debian trixie's 1.7 with NRI; see `tests/support/containerd.rs`): the example
//! registers on containerd's NRI socket, a pod and a container are created through CRI the way
//! the kubelet creates them, and ExecSync inside the running container shows the environment
//! variable and the read-only bind mount the plugin added at CreateContainer. Nothing is
//! simulated: containerd applies the adjustment to the OCI spec and runc creates the container.
//!
//! The example binary is the one cargo built for this profile (`<target>/<profile>/examples/
//! adjuster`, which `cargo test --workspace --all-targets` builds, or `$NRI_ADJUSTER_BIN`). Without
//! root, containerd or the binary the trial prints `SKIP <name>: <reason>`; under
//! `DRIFTGUARD_REQUIRE_ALL=1` (CI) it fails instead.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use libtest_mimic::{Arguments, Failed};

#[path = "support/vm.rs"]
mod vm;

#[path = "support/containerd.rs"]
mod containerd;

use containerd::Containerd;

type R = Result<(), Failed>;

const ENV_NAME: &str = "DG_NRI_EXAMPLE";
const ENV_VALUE: &str = "adjusted by the nri-plugin example";
const MOUNT_AT: &str = "/nri-shared";

fn main() {
    let args = Arguments::from_args();
    let gate = vm::Gate::from_env();
    let reason = containerd::requirements().or_else(|| adjuster_binary().err());
    if reason.is_none() {
        containerd::sweep_stale();
    }
    let trials = vec![gate.trial(
        "nri_adjuster_example_adds_env_and_mount_in_real_containerd",
        &reason,
        nri_adjuster_example_adds_env_and_mount_in_real_containerd,
    )];
    libtest_mimic::run(&args, trials).exit();
}

/// `$NRI_ADJUSTER_BIN`, or `examples/adjuster` in the profile directory this test was built into
/// (`<target>/debug/deps/nri_example-<hash>` → `<target>/debug/examples/adjuster`).
fn adjuster_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NRI_ADJUSTER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile =
        exe.parent().and_then(Path::parent).ok_or_else(|| format!("no profile dir above {}", exe.display()))?;
    let bin = profile.join("examples/adjuster");
    if !bin.is_file() {
        return Err(format!(
            "{} not built (run `cargo build -p nri-plugin --example adjuster` with the same target dir and \
             profile first, or set NRI_ADJUSTER_BIN)",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Fails when the example binary is older than a source it is built from: the trial would test
/// old code.
fn check_fresh(bin: &Path) -> Result<(), String> {
    if std::env::var_os("NRI_ADJUSTER_BIN").is_some() {
        return Ok(());
    }
    let built = mtime(bin)?;
    let crate_dir = containerd::repo_root().join("nri-plugin");
    let mut sources = vec![crate_dir.join("examples/adjuster.rs"), crate_dir.join("proto/nri.proto")];
    let src = crate_dir.join("src");
    for e in std::fs::read_dir(&src).map_err(|e| format!("{}: {e}", src.display()))? {
        sources.push(e.map_err(|e| e.to_string())?.path());
    }
    for s in sources {
        if mtime(&s)? > built {
            return Err(format!(
                "{} is older than {}: rebuild it (cargo build -p nri-plugin --example adjuster)",
                bin.display(),
                s.display()
            ));
        }
    }
    Ok(())
}

fn mtime(p: &Path) -> Result<SystemTime, String> {
    std::fs::metadata(p).and_then(|m| m.modified()).map_err(|e| format!("{}: {e}", p.display()))
}

/// The example process, killed (by its pid) and reaped when dropped; its stdout lines arrive on
/// a channel.
struct Plugin {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Plugin {
    fn start(bin: &Path, socket: &Path, shared: &Path, scratch: &Path) -> Result<Plugin, String> {
        let stderr = scratch.join("adjuster.stderr");
        let err_file = std::fs::File::create(&stderr).map_err(|e| format!("{}: {e}", stderr.display()))?;
        let mut child = Command::new(bin)
            .arg("--socket")
            .arg(socket)
            .args(["--namespace", "shop", "--env", &format!("{ENV_NAME}={ENV_VALUE}")])
            .arg("--mount")
            .arg(format!("{}:{MOUNT_AT}:ro", shared.display()))
            .env_remove("NRI_PLUGIN_SOCKET")
            .env_remove("NRI_PLUGIN_NAME")
            .env_remove("NRI_PLUGIN_IDX")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err_file)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        let out = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Plugin { child, lines, stderr })
    }

    /// The next stdout line, within `timeout`.
    fn next_line(&self, timeout: Duration, what: &str) -> Result<String, String> {
        self.lines.recv_timeout(timeout).map_err(|e| {
            let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            format!("adjuster example: no line ({what}) within {timeout:?}: {e}; its stderr:\n{err}")
        })
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nri_adjuster_example_adds_env_and_mount_in_real_containerd() -> R {
    let bin = adjuster_binary()?;
    check_fresh(&bin)?;
    let scratch = tempfile::Builder::new().prefix("dg-nri-example-").tempdir().map_err(|e| e.to_string())?;
    let shared = scratch.path().join("shared");
    std::fs::create_dir(&shared).map_err(|e| e.to_string())?;
    let marker = format!("host file {}", std::process::id());
    std::fs::write(shared.join("marker"), &marker).map_err(|e| e.to_string())?;

    let ctd = Containerd::start()?;
    let plugin = Plugin::start(&bin, &ctd.nri_sock, &shared, scratch.path())?;
    // Barrier: containerd registered, configured and synchronized the plugin; from here on it
    // is called for every CreateContainer.
    let line =
        plugin.next_line(Duration::from_secs(30), "synchronized").map_err(|e| format!("{e}\n{}", ctd.log_tail()))?;
    if !line.starts_with("synchronized ") {
        return Err(format!("adjuster example: expected `synchronized …`, got {line:?}").into());
    }

    let pod = ctd.run_pod("adjusted", &[])?;
    let id = ctd.run_container(&pod, "app", &[])?;
    let line = plugin.next_line(Duration::from_secs(10), "adjusted")?;
    let want = format!("adjusted shop/adjusted/app id={id}");
    if line != want {
        return Err(format!("adjuster example: expected {want:?}, got {line:?}").into());
    }

    // The environment variable is in the container's process spec (ExecSync runs with it).
    let e = ctd.sh(&id, &format!("printf '%s' \"${ENV_NAME}\""))?;
    if e.code != 0 || e.stdout != ENV_VALUE {
        return Err(format!("${ENV_NAME} in the container: {e}; want {ENV_VALUE:?}").into());
    }
    // The host directory is mounted, read-only.
    let e = ctd.exec(&id, &["/bin/cat", &format!("{MOUNT_AT}/marker")])?;
    if e.code != 0 || e.stdout != marker {
        return Err(format!("{MOUNT_AT}/marker in the container: {e}; want {marker:?}").into());
    }
    let e = ctd.sh(&id, &format!("awk '$5 == \"{MOUNT_AT}\" {{ print $6 }}' /proc/self/mountinfo"))?;
    let options: Vec<&str> = e.stdout.trim().split(',').collect();
    if e.code != 0 || !options.contains(&"ro") {
        return Err(format!("mount options of {MOUNT_AT} in the container: {e}; want `ro` among them").into());
    }
    let e = ctd.sh(&id, &format!("echo x > {MOUNT_AT}/written"))?;
    if e.code == 0 || shared.join("written").exists() {
        return Err(format!("writing into the read-only mount succeeded: {e}").into());
    }
    drop(plugin);
    ctd.remove_pod(&pod.id)?;
    Ok(())
}
