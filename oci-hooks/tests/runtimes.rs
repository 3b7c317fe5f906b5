//! `driftguard-oci-hook` with real runtimes: runc and podman on the host kernel (the
//! tracepoint + SIGKILL fallback here: a denied exec is exit 137), runc again inside qemu VMs
//! with Debian's 6.1 / 6.12 kernels (BPF LSM: a denied exec fails with EPERM), and the real
//! binary fed bad input.
//!
//! The BPF programs are loaded once per process with `Enforcer::load` into a test-private
//! pin dir (`/sys/fs/bpf/dg-oci-test-<pid>`); the hook only sees that pin dir.
//! Images are overlay mounts of a busybox-static rootfs built here.
//!
//! Trials that cannot run print `SKIP <name>: <reason>` and are ignored; with
//! DRIFTGUARD_REQUIRE_ALL=1 they fail instead.

#[path = "../../tests/support/rootfs.rs"]
mod rootfs;
#[path = "../../tests/support/vm.rs"]
mod vm;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use driftguard::cgroup::{cgroup_id, CgroupRoot};
use driftguard::check::find_in_path;
use driftguard::enforcer::{self, EnforcementPath, Enforcer, EnforcerOptions, PolicyStore};
use driftguard::policy::Mode;
use libtest_mimic::{Arguments, Failed};
use rootfs::{build_image, drop_binary, Scratch};

type R = Result<(), Failed>;

const HOOK: &str = env!("CARGO_BIN_EXE_driftguard-oci-hook");
/// A dropped busybox named `true` (busybox picks the applet from argv[0]).
const DROPPED: &str = "/drop/true";

fn main() {
    let args = Arguments::from_args();
    let base_reason = base_requirements();
    let runc_reason =
        base_reason.clone().or_else(|| find_in_path("runc").is_none().then(|| "runc not installed".into()));
    let podman_reason = if vm::in_vm() {
        Some("podman runs on the host only (the VM initramfs has no conmon/storage/network stack)".to_string())
    } else {
        base_reason.clone().or_else(|| podman_requirements().err())
    };
    let needs_bpf = runc_reason.is_none() || podman_reason.is_none();
    // Load the enforcement once (pinned): every runtime trial uses it.
    let bpf = if needs_bpf && !args.list { Some(bpf()) } else { None };
    let bpf_reason = match &bpf {
        Some(Err(e)) => Some(format!("loading the BPF enforcement failed: {e}")),
        _ => None,
    };
    let runc_reason = runc_reason.or_else(|| bpf_reason.clone());
    let podman_reason = podman_reason.or(bpf_reason);

    let gate = vm::Gate::from_env().soft("podman runs on the host only");

    let mut trials = Vec::new();
    // The real binary, bad input (no BPF needed).
    for (name, f) in [
        ("hook_malformed_state_json", hook_malformed_state_json as fn() -> R),
        ("hook_missing_bundle", hook_missing_bundle),
        ("hook_missing_config_json", hook_missing_config_json),
        ("hook_invalid_annotation", hook_invalid_annotation),
        ("hook_vanished_pid", hook_vanished_pid),
        ("hook_nothing_pinned_fails_closed", hook_nothing_pinned_fails_closed),
        ("hook_nothing_pinned_ignore_warns", hook_nothing_pinned_ignore_warns),
        ("hook_unannotated_touches_nothing", hook_unannotated_touches_nothing),
        ("hook_usage_error", hook_usage_error),
        ("packaged_descriptors_are_valid", packaged_descriptors_are_valid),
    ] {
        trials.push(gate.trial(name, &None, f));
    }
    for (name, f) in [
        ("runc_enforced_container", runc_enforced_container as fn() -> R),
        ("runc_unannotated_container_untouched", runc_unannotated_container_untouched),
        ("runc_nothing_pinned_refuses_container", runc_nothing_pinned_refuses_container),
        ("runc_nothing_pinned_ignore_starts_unprotected", runc_nothing_pinned_ignore_starts_unprotected),
        ("runc_invalid_annotation_refuses_container", runc_invalid_annotation_refuses_container),
        ("runc_non_overlay_root_refused", runc_non_overlay_root_refused),
    ] {
        trials.push(gate.trial(name, &runc_reason, f));
    }
    for (name, f) in [
        ("podman_enforced_container", podman_enforced_container as fn() -> R),
        ("podman_unannotated_container_untouched", podman_unannotated_container_untouched),
    ] {
        trials.push(gate.trial(name, &podman_reason, f));
    }
    if !vm::in_vm() {
        trials.extend(gate.vm_trials_if("vm_runc", &runc_reason, runc_suite_in_vm));
    }

    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(Ok(b)) = &bpf {
        let _ = enforcer::unload(&b.pin_dir);
    }
    conclusion.exit();
}

// ---------------------------------------------------------------------------
// Environment

fn base_requirements() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (BPF, mounts, cgroups, runtimes)".into());
    }
    if !enforcer::has_vmlinux_btf() {
        return Some("kernel has no BTF".into());
    }
    if let Some(why) = rootfs::busybox_missing() {
        return Some(why);
    }
    if let Err(e) = CgroupRoot::detect() {
        return Some(format!("no cgroup v2: {e}"));
    }
    None
}

struct Bpf {
    pin_dir: PathBuf,
    path: EnforcementPath,
}

fn bpf() -> Result<&'static Bpf, String> {
    static B: OnceLock<Result<Bpf, String>> = OnceLock::new();
    B.get_or_init(|| {
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/dg-oci-test-{}", std::process::id()));
        let _ = enforcer::unload(&pin_dir);
        let enf = Enforcer::load(&EnforcerOptions {
            pin_dir: Some(pin_dir.clone()),
            force_fallback: false,
            fallback_mappings: false,
        })
        .map_err(|e| e.to_string())?;
        let path = enf.path();
        if std::env::var("DG_EXPECT_PATH").as_deref() == Ok("lsm") && path != EnforcementPath::Lsm {
            return Err(format!(
                "expected BPF LSM in this VM, got {} ({})",
                path.as_str(),
                enf.fallback_reason().unwrap_or("")
            ));
        }
        eprintln!("enforcement: {} pinned under {}", path.as_str(), pin_dir.display());
        // The agent "exits": only the pins remain, as for a hook on a real node.
        drop(enf);
        Ok(Bpf { pin_dir, path })
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn store() -> Result<PolicyStore, Failed> {
    let b = bpf()?;
    PolicyStore::open_pinned(&b.pin_dir).map_err(|e| e.to_string().into())
}

fn unique(name: &str) -> String {
    rootfs::unique("dgoci", name)
}

/// A temp dir for one trial, removed (its overlay unmounted) on drop.
fn scratch(name: &str) -> Result<Scratch, Failed> {
    Ok(Scratch::new("dgoci", name)?)
}

fn run(cmd: &mut Command) -> Result<Output, Failed> {
    cmd.stdin(Stdio::null()).output().map_err(|e| format!("running {cmd:?}: {e}").into())
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn expect_ok(o: &Output, what: &str) -> R {
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {}", text(o)).into())
    }
}

/// The exec of a drifted file was stopped: SIGKILL (exit 137) on the tracepoint fallback,
/// EPERM with BPF LSM (the runtime reports "operation not permitted").
fn expect_denied(o: &Output, what: &str) -> R {
    let path = bpf()?.path;
    let all = text(o);
    let ok = match path {
        EnforcementPath::TracepointKill => o.status.code() == Some(137),
        EnforcementPath::Lsm => !o.status.success() && all.contains("operation not permitted"),
    };
    if ok {
        println!("{what}: denied as expected ({}): {}", path.as_str(), all.replace('\n', " | "));
        Ok(())
    } else {
        Err(format!("{what}: expected a denial ({}), got {all}", path.as_str()).into())
    }
}

fn installed_mode(cgid: u64) -> Result<Option<Mode>, Failed> {
    Ok(store()?.get(cgid).map_err(|e| e.to_string())?.map(|p| p.policy.mode))
}

fn cgroup_of(pid: u32) -> Result<(PathBuf, u64), Failed> {
    let root = CgroupRoot::detect().map_err(|e| e.to_string())?;
    let cg = root.cgroup_of_pid(pid).map_err(|e| e.to_string())?;
    let id = cgroup_id(&cg).map_err(|e| e.to_string())?;
    Ok((cg, id))
}

fn empty_config(dir: &Path) -> Result<PathBuf, Failed> {
    let p = dir.join("driftguard.toml");
    fs::write(&p, "# test config: defaults\n").map_err(|e| e.to_string())?;
    Ok(p)
}

// ---------------------------------------------------------------------------
// The real binary, bad input

fn hook(args: &[&str], stdin: &[u8]) -> Result<Output, Failed> {
    use std::io::Write;
    let mut child = Command::new(HOOK)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{HOOK}: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    child.wait_with_output().map_err(|e| e.to_string().into())
}

fn expect_fail(o: &Output, code: i32, needles: &[&str]) -> R {
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.code() != Some(code) {
        return Err(format!("expected exit {code}, got {}", text(o)).into());
    }
    for n in needles {
        if !err.contains(n) {
            return Err(format!("stderr lacks {n:?}: {err}").into());
        }
    }
    println!("exit {code}: {}", err.trim());
    Ok(())
}

fn state_json(id: &str, pid: Option<u32>, bundle: &Path) -> Vec<u8> {
    let mut v = serde_json::json!({"ociVersion": "1.0.2", "id": id, "status": "creating", "bundle": bundle});
    if let Some(p) = pid {
        v["pid"] = p.into();
    }
    v.to_string().into_bytes()
}

/// A bundle dir whose config.json carries `annotations`.
fn bundle_with(dir: &Path, annotations: &[(&str, &str)]) -> Result<PathBuf, Failed> {
    let b = dir.join("bundle");
    fs::create_dir_all(&b).map_err(|e| e.to_string())?;
    let ann: serde_json::Map<String, serde_json::Value> =
        annotations.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
    let cfg = serde_json::json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "annotations": ann});
    fs::write(b.join("config.json"), cfg.to_string()).map_err(|e| e.to_string())?;
    Ok(b)
}

fn common_args(s: &Scratch, pin_dir: &Path) -> Result<Vec<String>, Failed> {
    Ok(vec![
        "--pin-dir".into(),
        pin_dir.display().to_string(),
        "--state-dir".into(),
        s.path().join("state").display().to_string(),
        "--config".into(),
        empty_config(s.path())?.display().to_string(),
    ])
}

fn hook_with(stage: &str, s: &Scratch, pin_dir: &Path, stdin: &[u8]) -> Result<Output, Failed> {
    let mut a = vec![stage.to_string()];
    a.extend(common_args(s, pin_dir)?);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    hook(&refs, stdin)
}

fn nowhere(s: &Scratch) -> PathBuf {
    s.path().join("not-pinned")
}

fn hook_malformed_state_json() -> R {
    let s = scratch("badjson")?;
    let o = hook_with("create-runtime", &s, &nowhere(&s), b"{\"id\": \"x\", oops")?;
    expect_fail(&o, 2, &["malformed container state JSON on stdin", "oops"])?;
    let o = hook_with("poststop", &s, &nowhere(&s), b"")?;
    expect_fail(&o, 2, &["malformed container state JSON on stdin"])
}

fn hook_missing_bundle() -> R {
    let s = scratch("nobundle")?;
    let missing = s.path().join("no-such-bundle");
    let o = hook_with("create-runtime", &s, &nowhere(&s), &state_json("c1", Some(1), &missing))?;
    expect_fail(&o, 2, &["container c1", "bundle directory", "no-such-bundle", "does not exist"])
}

fn hook_missing_config_json() -> R {
    let s = scratch("noconfig")?;
    let b = s.path().join("bundle");
    fs::create_dir_all(&b).map_err(|e| e.to_string())?;
    let o = hook_with("create-runtime", &s, &nowhere(&s), &state_json("c1", Some(1), &b))?;
    expect_fail(&o, 2, &["container c1", "config.json", "No such file"])
}

fn hook_invalid_annotation() -> R {
    let s = scratch("badann")?;
    let b = bundle_with(s.path(), &[("driftguard.dev/mode", "enforcing")])?;
    let o = hook_with("create-runtime", &s, &nowhere(&s), &state_json("c1", Some(1), &b))?;
    expect_fail(
        &o,
        2,
        &[
            "invalid driftguard annotations",
            "annotation \"driftguard.dev/mode\" = \"enforcing\"",
            "off, monitor, enforce",
        ],
    )
}

fn hook_vanished_pid() -> R {
    let s = scratch("vanished")?;
    let b = bundle_with(s.path(), &[("driftguard.dev/mode", "enforce")])?;
    let mut child = Command::new("true").spawn().map_err(|e| e.to_string())?;
    let pid = child.id();
    child.wait().map_err(|e| e.to_string())?;
    let o = hook_with("create-runtime", &s, &nowhere(&s), &state_json("c1", Some(pid), &b))?;
    expect_fail(&o, 1, &["container c1", &format!("process {pid} does not exist")])?;
    if s.path().join("state/c1").exists() {
        return Err("a record was left behind".into());
    }
    Ok(())
}

fn hook_nothing_pinned_fails_closed() -> R {
    let s = scratch("nopin")?;
    let b = bundle_with(s.path(), &[("driftguard.dev/mode", "enforce")])?;
    let o = hook_with("create-runtime", &s, &nowhere(&s), &state_json("c1", Some(std::process::id()), &b))?;
    expect_fail(&o, 1, &["container c1", "no driftguard enforcement is pinned under", "not-pinned"])
}

fn hook_nothing_pinned_ignore_warns() -> R {
    let s = scratch("nopin-ignore")?;
    let b = bundle_with(s.path(), &[("driftguard.dev/mode", "enforce"), ("driftguard.dev/failure-policy", "ignore")])?;
    let o = hook_with("create-runtime", &s, &nowhere(&s), &state_json("c1", Some(std::process::id()), &b))?;
    expect_fail(&o, 0, &["warning", "WITHOUT driftguard protection", "no driftguard enforcement is pinned"])?;
    // The config default applies when the annotation is absent.
    let b = bundle_with(s.path(), &[("driftguard.dev/mode", "enforce")])?;
    let cfg = s.path().join("ignore.toml");
    fs::write(&cfg, "failure_policy = \"ignore\"\n").map_err(|e| e.to_string())?;
    let o = hook(
        &[
            "create-runtime",
            "--pin-dir",
            &nowhere(&s).display().to_string(),
            "--state-dir",
            &s.path().join("state").display().to_string(),
            "--config",
            &cfg.display().to_string(),
        ],
        &state_json("c1", Some(std::process::id()), &b),
    )?;
    expect_fail(&o, 0, &["WITHOUT driftguard protection"])
}

fn hook_unannotated_touches_nothing() -> R {
    let s = scratch("unann")?;
    let b = bundle_with(s.path(), &[("org.example/other", "x")])?;
    let o = hook_with("create-runtime", &s, &nowhere(&s), &state_json("c1", Some(std::process::id()), &b))?;
    expect_fail(&o, 0, &[])?;
    if !o.stderr.is_empty() || s.path().join("state").exists() {
        return Err(format!("unannotated container: expected silence and no state dir: {}", text(&o)).into());
    }
    let o = hook_with("poststop", &s, &nowhere(&s), &state_json("c1", None, &b))?;
    expect_fail(&o, 0, &[])
}

fn hook_usage_error() -> R {
    let o = hook(&["create-runtime", "--pin-dir"], b"")?;
    expect_fail(&o, 2, &["a value is required for '--pin-dir <DIR>'", "try '--help'"])?;
    let o = hook(&["create-runtime", "--pin-dir", ""], b"")?;
    expect_fail(&o, 2, &["--pin-dir <DIR>", "needs a non-empty value"])?;
    let o = hook(&[], b"")?;
    expect_fail(&o, 2, &["Usage: driftguard-oci-hook", "create-runtime"])
}

fn descriptor_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/oci")
}

fn packaged_descriptors_are_valid() -> R {
    for (file, stage, sub) in
        [("driftguard.json", "createRuntime", "create-runtime"), ("driftguard-poststop.json", "poststop", "poststop")]
    {
        let p = descriptor_dir().join(file);
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?)
            .map_err(|e| e.to_string())?;
        if v["version"] != "1.0.0"
            || v["hook"]["path"] != "/usr/bin/driftguard-oci-hook"
            || v["hook"]["args"][1] != sub
            || v["stages"] != serde_json::json!([stage])
        {
            return Err(format!("{file}: unexpected content {v}").into());
        }
        let when = v["when"]["annotations"].as_object().ok_or("no when.annotations")?;
        if when.len() != 1 {
            return Err(format!("{file}: expected one annotation matcher").into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// runc

struct Runc {
    s: Scratch,
    id: String,
    root: PathBuf,
    rootfs: PathBuf,
    created: bool,
}

impl Runc {
    /// A bundle with an overlay rootfs, the hook for createRuntime and poststop with
    /// `pin_dir`, and `annotations`.
    fn new(name: &str, annotations: &[(&str, &str)], pin_dir: &Path) -> Result<Runc, Failed> {
        Runc::new_with(name, annotations, pin_dir, true)
    }

    /// [`Runc::new`] with the rootfs an overlay (`overlay`) or a plain directory of the
    /// scratch filesystem.
    fn new_with(name: &str, annotations: &[(&str, &str)], pin_dir: &Path, overlay: bool) -> Result<Runc, Failed> {
        let s = scratch(name)?;
        let id = unique(name);
        let root = s.path().join("runc-root");
        let rootfs = s.path().join("merged");
        if overlay {
            rootfs::overlay_rootfs(s.path(), &rootfs, &[])?;
        } else {
            rootfs::build_image(&rootfs, &[])?;
        }
        let bundle = s.path().join("bundle");
        fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
        expect_ok(&run(Command::new("runc").arg("spec").arg("--bundle").arg(&bundle))?, "runc spec")?;
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&fs::read(&cfg_path).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        cfg["root"] = serde_json::json!({"path": rootfs, "readonly": false});
        cfg["process"]["terminal"] = false.into();
        cfg["process"]["args"] = serde_json::json!(["/bin/sleep", "3600"]);
        cfg["linux"]["cgroupsPath"] = format!("/dg-oci-test/{id}").into();
        let ann: serde_json::Map<String, serde_json::Value> =
            annotations.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        cfg["annotations"] = ann.into();
        let mut hook_args = vec![];
        hook_args.extend(common_args(&s, pin_dir)?);
        let h = |stage: &str| {
            let mut a = vec!["driftguard-oci-hook".to_string(), stage.to_string()];
            a.extend(hook_args.iter().cloned());
            serde_json::json!([{"path": HOOK, "args": a, "timeout": 30}])
        };
        cfg["hooks"] = serde_json::json!({"createRuntime": h("create-runtime"), "poststop": h("poststop")});
        fs::write(&cfg_path, cfg.to_string()).map_err(|e| e.to_string())?;
        Ok(Runc { s, id, root, rootfs, created: false })
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&self.root);
        c
    }

    fn record(&self) -> PathBuf {
        self.s.path().join("state").join(&self.id)
    }

    /// `runc create` (runs the createRuntime hook). Its output goes to a file: the container
    /// inherits runc's stdio.
    fn create(&mut self) -> Result<Output, Failed> {
        let log = self.s.path().join("create.log");
        let f = fs::File::create(&log).map_err(|e| e.to_string())?;
        let f2 = f.try_clone().map_err(|e| e.to_string())?;
        let t = Instant::now();
        let status = self
            .cmd()
            .arg("create")
            .arg("--bundle")
            .arg(self.s.path().join("bundle"))
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .status()
            .map_err(|e| format!("runc create: {e}"))?;
        println!("runc create took {:.0} ms", t.elapsed().as_secs_f64() * 1000.0);
        self.created = true;
        let out = fs::read(&log).unwrap_or_default();
        Ok(Output { status, stdout: Vec::new(), stderr: out })
    }

    fn pid(&self) -> Result<u32, Failed> {
        let o = run(self.cmd().arg("state").arg(&self.id))?;
        expect_ok(&o, "runc state")?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
        v["pid"].as_u64().map(|p| p as u32).ok_or_else(|| format!("no pid in runc state: {v}").into())
    }

    fn start(&self) -> R {
        expect_ok(&run(self.cmd().arg("start").arg(&self.id))?, "runc start")
    }

    fn exec(&self, argv: &[&str]) -> Result<Output, Failed> {
        run(self.cmd().arg("exec").arg(&self.id).args(argv))
    }

    /// `runc delete --force`: kills the container and runs the poststop hook.
    fn delete(&mut self) -> R {
        self.created = false;
        expect_ok(&run(self.cmd().arg("delete").arg("--force").arg(&self.id))?, "runc delete")
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        if self.created {
            let _ = self.delete();
        }
    }
}

fn runc_enforced_container() -> R {
    let pin = &bpf()?.pin_dir;
    let mut c = Runc::new("enforced", &[("driftguard.dev/mode", "enforce")], pin)?;
    expect_ok(&c.create()?, "runc create")?;
    let pid = c.pid()?;
    let (cg, cgid) = cgroup_of(pid)?;
    // The policy is there before the entrypoint runs.
    if installed_mode(cgid)? != Some(Mode::Enforce) {
        return Err(format!("no enforce policy for {} (id {cgid}) after createRuntime", cg.display()).into());
    }
    let owner = store()?.get(cgid).map_err(|e| e.to_string())?.map(|p| p.owner);
    if owner != Some(enforcer::Owner::OciHook) {
        return Err(format!("policy owner is {owner:?}, expected OciHook").into());
    }
    let rec: serde_json::Value = serde_json::from_slice(&fs::read(c.record()).map_err(|e| format!("record: {e}"))?)
        .map_err(|e| e.to_string())?;
    if rec["cgroup_id"] != cgid {
        return Err(format!("record {rec} does not name cgroup id {cgid}").into());
    }
    c.start()?;
    expect_ok(&c.exec(&["/bin/true"])?, "image binary /bin/true via runc exec")?;
    drop_binary(&c.rootfs, DROPPED)?;
    expect_denied(&c.exec(&[DROPPED])?, "dropped binary via runc exec")?;
    // Still denied from a shell inside (an image binary exec'ing the dropped one).
    let o = c.exec(&["/bin/sh", "-c", "/drop/true; echo rc=$?"])?;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let want = match bpf()?.path {
        EnforcementPath::TracepointKill => "rc=137",
        EnforcementPath::Lsm => "rc=126",
    };
    if !out.contains(want) {
        return Err(format!("shell in the container: expected {want}, got {}", text(&o)).into());
    }
    c.delete()?;
    if installed_mode(cgid)?.is_some() {
        return Err("poststop (runc delete) left the policy in the map".into());
    }
    if c.record().exists() {
        return Err("poststop left the record behind".into());
    }
    Ok(())
}

fn runc_unannotated_container_untouched() -> R {
    let pin = &bpf()?.pin_dir;
    let mut c = Runc::new("plain", &[], pin)?;
    expect_ok(&c.create()?, "runc create")?;
    let (_, cgid) = cgroup_of(c.pid()?)?;
    if installed_mode(cgid)?.is_some() || c.record().exists() {
        return Err("unannotated container got a policy or a record".into());
    }
    c.start()?;
    drop_binary(&c.rootfs, DROPPED)?;
    expect_ok(&c.exec(&[DROPPED])?, "dropped binary in an unannotated container")?;
    c.delete()
}

fn runc_nothing_pinned_refuses_container() -> R {
    let empty = PathBuf::from(format!("/sys/fs/bpf/dg-oci-empty-{}", std::process::id()));
    let mut c = Runc::new("nopin", &[("driftguard.dev/mode", "enforce")], &empty)?;
    let o = c.create()?;
    if o.status.success() {
        return Err(format!("runc create succeeded with nothing pinned: {}", text(&o)).into());
    }
    let all = text(&o);
    if !all.contains("no driftguard enforcement is pinned under") {
        return Err(format!("runc's error lacks the hook's message: {all}").into());
    }
    println!("refused: {}", all.replace('\n', " | "));
    c.delete().or(Ok::<(), Failed>(()))?;
    Ok(())
}

fn runc_nothing_pinned_ignore_starts_unprotected() -> R {
    let empty = PathBuf::from(format!("/sys/fs/bpf/dg-oci-empty-{}", std::process::id()));
    let mut c = Runc::new(
        "nopin-ignore",
        &[("driftguard.dev/mode", "enforce"), ("driftguard.dev/failure-policy", "ignore")],
        &empty,
    )?;
    expect_ok(&c.create()?, "runc create (failure-policy ignore)")?;
    c.start()?;
    drop_binary(&c.rootfs, DROPPED)?;
    expect_ok(&c.exec(&[DROPPED])?, "dropped binary in an unprotected container")?;
    c.delete()
}

fn runc_invalid_annotation_refuses_container() -> R {
    let pin = &bpf()?.pin_dir;
    let mut c = Runc::new("badann", &[("driftguard.dev/mode", "enforce"), ("driftguard.dev/drift", "yes")], pin)?;
    let o = c.create()?;
    let all = text(&o);
    if o.status.success()
        || !all.contains("annotation \\\"driftguard.dev/drift\\\" = \\\"yes\\\"")
            && !all.contains("annotation \"driftguard.dev/drift\" = \"yes\"")
    {
        return Err(format!("expected a refusal naming the annotation: {all}").into());
    }
    println!("refused: {}", all.replace('\n', " | "));
    c.delete().or(Ok::<(), Failed>(()))?;
    Ok(())
}

/// The install rule the agent applies at StartContainer (tests/agent.rs,
/// `agent_reports_non_overlay_rootfs`), through the hook: a root filesystem that is not
/// overlayfs is refused under the non-image rule (no file of it can be told to be image), and
/// with the rule off the container gets its policy.
fn runc_non_overlay_root_refused() -> R {
    let pin = &bpf()?.pin_dir;
    let mut c = Runc::new_with("plainfs", &[("driftguard.dev/mode", "enforce")], pin, false)?;
    let o = c.create()?;
    let all = text(&o);
    if o.status.success() || !all.contains("not overlayfs") || !all.contains("non-image") {
        return Err(format!("enforce on a non-overlay root must be refused with the reason: {all}").into());
    }
    if c.record().exists() {
        return Err("a refused container left a record".into());
    }
    c.delete().or(Ok::<(), Failed>(()))?;
    let ann = [("driftguard.dev/mode", "enforce"), ("driftguard.dev/non-image", "false")];
    let mut c = Runc::new_with("plainfs-ok", &ann, pin, false)?;
    expect_ok(&c.create()?, "runc create with non-image off")?;
    let (_, cgid) = cgroup_of(c.pid()?)?;
    if installed_mode(cgid)? != Some(Mode::Enforce) {
        return Err("a non-overlay container with non-image off got no policy".into());
    }
    c.delete()
}

// ---------------------------------------------------------------------------
// podman

fn podman_requirements() -> Result<(), String> {
    if find_in_path("podman").is_none() {
        return Err("podman not installed".into());
    }
    if find_in_path("tar").is_none() {
        return Err("tar not installed (podman import needs a tarball)".into());
    }
    Ok(())
}

struct Podman {
    s: Scratch,
    hooks: PathBuf,
}

impl Podman {
    fn new(name: &str) -> Result<Podman, Failed> {
        let s = scratch(name)?;
        let pin = &bpf()?.pin_dir;
        // The shipped descriptors, pointed at the test binary and the test's pin dir.
        let hooks = s.path().join("hooks.d");
        fs::create_dir_all(&hooks).map_err(|e| e.to_string())?;
        let extra = common_args(&s, pin)?;
        for file in ["driftguard.json", "driftguard-poststop.json"] {
            let mut v: serde_json::Value =
                serde_json::from_slice(&fs::read(descriptor_dir().join(file)).map_err(|e| format!("{file}: {e}"))?)
                    .map_err(|e| e.to_string())?;
            v["hook"]["path"] = HOOK.into();
            if let Some(a) = v["hook"]["args"].as_array_mut() {
                a.extend(extra.iter().map(|x| serde_json::Value::from(x.as_str())));
            }
            fs::write(hooks.join(file), v.to_string()).map_err(|e| e.to_string())?;
        }
        let p = Podman { s, hooks };
        let image = p.s.path().join("image");
        build_image(&image, &[])?;
        let tarball = p.s.path().join("rootfs.tar");
        expect_ok(&run(Command::new("tar").arg("-C").arg(&image).arg("-cf").arg(&tarball).arg("."))?, "tar")?;
        expect_ok(&run(p.cmd().arg("import").arg(&tarball).arg("dg-oci-test"))?, "podman import")?;
        Ok(p)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.s.path().join("storage"))
            .arg("--runroot")
            .arg(self.s.path().join("runroot"))
            // Private libpod state: the default /run/libpod is shared, and `system reset` in
            // another trial's cleanup would delete it under us.
            .arg("--tmpdir")
            .arg(self.s.path().join("libpod-tmp"))
            .args(["--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--hooks-dir")
            .arg(&self.hooks);
        c
    }

    fn run_detached(&self, name: &str, annotations: &[(&str, &str)]) -> Result<Output, Failed> {
        let mut c = self.cmd();
        c.args([
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        for (k, v) in annotations {
            c.arg("--annotation").arg(format!("{k}={v}"));
        }
        c.args(["dg-oci-test", "/bin/sleep", "3600"]);
        run(&mut c)
    }

    fn inspect(&self, name: &str, fmt: &str) -> Result<String, Failed> {
        let o = run(self.cmd().args(["inspect", "--format", fmt, name]))?;
        expect_ok(&o, "podman inspect")?;
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    fn exec(&self, name: &str, argv: &[&str]) -> Result<Output, Failed> {
        run(self.cmd().arg("exec").arg(name).args(argv))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = run(self.cmd().args(["rm", "-af", "-t", "0"]));
        let _ = run(self.cmd().args(["system", "reset", "-f"]));
        // podman leaves its storage overlay mounted on failures.
        let _ = run(Command::new("umount").arg("-R").arg("-l").arg(self.s.path().join("storage/overlay")));
    }
}

/// podman trials run one at a time: they share podman's global locks.
static PODMAN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn podman_enforced_container() -> R {
    let _serial = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    let p = Podman::new("podman-enf")?;
    let name = unique("enf");
    expect_ok(&p.run_detached(&name, &[("driftguard.dev/mode", "enforce")])?, "podman run")?;
    let pid: u32 = p.inspect(&name, "{{.State.Pid}}")?.parse().map_err(|e| format!("pid: {e}"))?;
    let (cg, cgid) = cgroup_of(pid)?;
    if installed_mode(cgid)? != Some(Mode::Enforce) {
        return Err(format!("no enforce policy for {} (id {cgid})", cg.display()).into());
    }
    expect_ok(&p.exec(&name, &["/bin/true"])?, "image binary via podman exec")?;
    let merged = PathBuf::from(p.inspect(&name, "{{.GraphDriver.Data.MergedDir}}")?);
    drop_binary(&merged, DROPPED)?;
    expect_denied(&p.exec(&name, &[DROPPED])?, "dropped binary via podman exec")?;
    expect_ok(&run(p.cmd().args(["rm", "-f", "-t", "0", &name]))?, "podman rm")?;
    // podman runs the poststop hook when it cleans the container up.
    // conmon's cleanup runs after `podman rm` returns; the bound is generous for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    while installed_mode(cgid)?.is_some() {
        if Instant::now() > deadline {
            return Err("poststop did not remove the policy within 60 s of podman rm".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn podman_unannotated_container_untouched() -> R {
    let _serial = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    let p = Podman::new("podman-plain")?;
    let name = unique("plain");
    expect_ok(&p.run_detached(&name, &[])?, "podman run")?;
    let pid: u32 = p.inspect(&name, "{{.State.Pid}}")?.parse().map_err(|e| format!("pid: {e}"))?;
    let (_, cgid) = cgroup_of(pid)?;
    if installed_mode(cgid)?.is_some() {
        return Err("unannotated podman container got a policy".into());
    }
    let merged = PathBuf::from(p.inspect(&name, "{{.GraphDriver.Data.MergedDir}}")?);
    drop_binary(&merged, DROPPED)?;
    expect_ok(&p.exec(&name, &[DROPPED])?, "dropped binary in an unannotated podman container")?;
    expect_ok(&run(p.cmd().args(["rm", "-f", "-t", "0", &name]))?, "podman rm")
}

// ---------------------------------------------------------------------------
// The runc trials inside the VM kernels (BPF LSM: EPERM)

fn runc_suite_in_vm(k: &vm::Kernel) -> R {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let runc = find_in_path("runc").ok_or("runc not installed")?;
    // The hook binary goes to the same path in the guest (config.json names it), without debug info.
    let scratch = scratch("vm-hook")?;
    let hook = vm::stripped(Path::new(HOOK), scratch.path())?;
    let req = vm::VmRequest {
        exe,
        args: vec!["runc_".into(), "--test-threads=1".into(), "--color=never".into(), "--nocapture".into()],
        env: vm::suite_env(),
        files: vec![(runc.clone(), runc), (hook, PathBuf::from(HOOK))],
        timeout: Duration::from_secs(600),
        memory_mb: 1536,
    };
    let res = vm::run_suite(k, &req, "runc trials")?;
    if !res.output.contains("denied as expected (lsm)") {
        return Err("VM output lacks an LSM denial".into());
    }
    res.check_trials(&["runc_enforced_container", "runc_unannotated_container_untouched"]).map_err(Failed::from)
}
