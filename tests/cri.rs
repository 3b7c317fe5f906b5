//! Real-runtime tests: a real containerd (Debian trixie's 1.7, NRI enabled; the `containerd2_*`
//! trials: Debian sid's 2.1; see `scripts/install-containerd.sh` and `tests/support/containerd.rs`) driven through the CRI
//! gRPC API like the kubelet drives it, the real `driftguard run` binary registered on its NRI
//! socket, real runc containers on overlayfs snapshots, and the BPF programs of this kernel.
//! Nothing is simulated: verdicts come from execs made with CRI ExecSync.
//!
//! Each trial gets its own containerd (own root/state/sockets/cgroup parent) and agent (own pin
//! dir), so trials run in parallel and clean up after themselves even when they fail.
//!
//! containerd runs the way the packages ship it (`packaging/containerd/oci-hook-1.7.toml`):
//! `driftguard-oci-hook` runs as a createRuntime and poststop hook of every runc container from
//! the shipped base runtime spec, and the pod's and container's `driftguard.dev/` annotations
//! are passed through into the spec. The hook binary is the one cargo built next to this test
//! (`<target>/<profile>/driftguard-oci-hook`, or `$DRIFTGUARD_OCI_HOOK_BIN`): build it first with
//! `cargo build -p driftguard-oci-hook` (a hook older than its sources fails every trial).
//! Trials named `nri_only_*` run containerd without the hook, to show what the hook adds.
//! `daemonset_image_protects_another_pod` runs the agent not as a process of the test but in
//! the image `packaging/image/build.sh` builds, as the pod of the rendered DaemonSet.
//!
//! Without root, containerd or the hook binary the trials print `SKIP <name>: <reason>`; under
//! `DRIFTGUARD_REQUIRE_ALL=1` (CI) they fail instead.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use driftguard::enforcer::{self, EnforcementPath};
use k8s_cri::v1 as cri;
use libtest_mimic::{Arguments, Failed, Trial};

#[path = "support/vm.rs"]
mod vm;

#[path = "support/containerd.rs"]
mod containerd;

#[path = "support/agent_process.rs"]
mod agent_process;

use agent_process::AgentProcess;
use containerd::{Containerd, Exec, HookWiring, Line, Pod, APP_IMAGE, HELLO};

type R = Result<(), Failed>;
type T = Result<(), String>;
type TrialFn = fn() -> R;

/// Every trial, in order.
const TRIALS: &[(&str, TrialFn)] = &[
    ("cri_enforce_pod_kills_drift_and_runs_image_files", cri_enforce_pod_kills_drift_and_runs_image_files),
    ("cri_monitor_pod_alerts_and_runs_drift", cri_monitor_pod_alerts_and_runs_drift),
    ("cri_unannotated_pod_is_untouched", cri_unannotated_pod_is_untouched),
    ("cri_per_container_mode_override", cri_per_container_mode_override),
    ("cri_deny_listed_entrypoint_is_stopped", cri_deny_listed_entrypoint_is_stopped),
    ("cri_bad_annotation_refused_at_create_container", cri_bad_annotation_refused_at_create_container),
    ("cri_event_fields_and_metrics", cri_event_fields_and_metrics),
    ("cri_shell_only_ddexec_is_stopped", cri_shell_only_ddexec_is_stopped),
    ("cri_agent_kill9_keeps_enforcing_and_restart_restores_status", cri_agent_kill9_keeps_enforcing),
    ("cri_containerd_restart_agent_reregisters_and_reconciles", cri_containerd_restart_agent_reregisters),
    ("cri_container_removed_while_agent_down_is_cleaned", cri_container_removed_while_agent_down_is_cleaned),
    ("runtime_mount_dev_tmpfs_exec_is_denied", runtime_mount_dev_tmpfs_exec_is_denied),
    ("runtime_mount_etc_hostname_exec_is_denied", runtime_mount_etc_hostname_exec_is_denied),
    ("every_writable_mount_refuses_a_written_binary", every_writable_mount_refuses_a_written_binary),
    ("container_started_while_agent_down_is_enforced", container_started_while_agent_down_is_enforced),
    ("container_refused_when_nothing_is_pinned", container_refused_when_nothing_is_pinned),
    ("unannotated_pod_starts_when_nothing_is_pinned", unannotated_pod_starts_when_nothing_is_pinned),
    ("containerd_restart_racing_agent_reconnect_enforces_every_start", containerd_restart_racing_agent_reconnect),
    ("containerd_restarts_while_starts_loop_enforces_every_start", containerd_restarts_while_starts_loop),
    ("hook_and_agent_leave_one_policy_removed_at_stop", hook_and_agent_leave_one_policy_removed_at_stop),
    ("nri_only_container_started_while_agent_down_is_unprotected", nri_only_container_started_while_agent_down),
    ("daemonset_node_setup_makes_start_fail_closed", daemonset_node_setup_makes_start_fail_closed),
    ("operator_check_status_log_and_clean_stop", operator_check_status_log_and_clean_stop),
    ("daemonset_image_protects_another_pod", daemonset_image_protects_another_pod),
];

/// The core trials again on containerd 2.x (Debian sid's 2.1; config version 3, CRI plugins
/// `io.containerd.cri.v1.runtime`/`images`), with the OCI hook wired in the same way: drift
/// denied, a bad annotation refused by the agent, and fail-closed start through the hook while
/// the agent is dead and when nothing is pinned.
const TRIALS_2X: &[(&str, TrialFn)] = &[
    ("containerd2_enforce_pod_kills_drift_and_runs_image_files", || {
        on(Line::V2, cri_enforce_pod_kills_drift_and_runs_image_files)
    }),
    ("containerd2_bad_annotation_refused_at_create_container", || {
        on(Line::V2, cri_bad_annotation_refused_at_create_container)
    }),
    ("containerd2_container_started_while_agent_down_is_enforced", || {
        on(Line::V2, container_started_while_agent_down_is_enforced)
    }),
    ("containerd2_container_refused_when_nothing_is_pinned", || on(Line::V2, container_refused_when_nothing_is_pinned)),
    ("containerd2_daemonset_node_setup_makes_start_fail_closed", || {
        on(Line::V2, daemonset_node_setup_makes_start_fail_closed)
    }),
    ("containerd2_clean_stop_reports_no_error", || on(Line::V2, clean_stop_on_containerd2)),
    ("containerd2_daemonset_image_protects_another_pod", || on(Line::V2, daemonset_image_protects_another_pod)),
];

thread_local! {
    /// The containerd line the trial on this thread runs against ([`on`]).
    static LINE: Cell<Line> = const { Cell::new(Line::V1_7) };
}

/// Run trial `f` against containerd of `line`.
fn on(line: Line, f: TrialFn) -> R {
    LINE.with(|l| l.set(line));
    let r = f();
    LINE.with(|l| l.set(Line::V1_7));
    r
}

fn main() {
    let args = Arguments::from_args();
    let gate = vm::Gate::from_env();
    let reason = containerd::requirements().or_else(|| hook_binary().err());
    let reason2 = containerd::requirements_of(Line::V2).or_else(|| hook_binary().err());
    if reason.is_none() || reason2.is_none() {
        containerd::sweep_stale();
    }
    // The VM re-run runs a subset (containerd under TCG emulation is slow).
    let only: Option<Vec<String>> =
        std::env::var(ONLY_ENV).ok().map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let mut trials: Vec<Trial> = TRIALS
        .iter()
        .map(|t| (t, &reason))
        .chain(TRIALS_2X.iter().map(|t| (t, &reason2)))
        .filter(|((name, _), _)| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name)))
        .map(|(&(name, f), why)| gate.trial(name, why, f))
        .collect();
    if !vm::in_vm() {
        // The oldest and the newest kernel of the matrix (5.10: no module BTF, the most
        // fallbacks): containerd under TCG takes minutes per kernel, and CI has an hour.
        trials.extend(
            gate.vm_trials_if("vm_cri", &reason, cri_suite_in_vm)
                .into_iter()
                .filter(|t| t.name().ends_with("_6_12") || t.name().ends_with("_5_10")),
        );
    } else {
        // The guest's loopback is down by default; the agent's metrics endpoint needs it.
        let _ = std::process::Command::new("/bin/busybox").args(["ip", "link", "set", "lo", "up"]).status();
        // containerd copies these host files into every sandbox; the minimal guest has none.
        for (f, body) in [("/etc/hosts", "127.0.0.1 localhost\n"), ("/etc/resolv.conf", ""), ("/etc/hostname", "vm\n")]
        {
            if !std::path::Path::new(f).exists() {
                let _ = std::fs::write(f, body);
            }
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

/// Restricts the trials to a comma-separated list of names (the VM re-run).
const ONLY_ENV: &str = "DG_CRI_ONLY";

/// The trials the VM re-run must pass: drift, the runtime-made mounts, a refused annotation and
/// a container started while the agent is down (the hook's policy), DDexec's shell-only write
/// into its own memory, with containerd, runc, the
/// hook and the agent inside a Debian kernel with BPF LSM, where a stopped exec is EPERM.
const VM_TRIALS: [&str; 7] = [
    "cri_enforce_pod_kills_drift_and_runs_image_files",
    "cri_shell_only_ddexec_is_stopped",
    "runtime_mount_dev_tmpfs_exec_is_denied",
    "runtime_mount_etc_hostname_exec_is_denied",
    "every_writable_mount_refuses_a_written_binary",
    "cri_bad_annotation_refused_at_create_container",
    "container_started_while_agent_down_is_enforced",
];

/// The same containerd, runc, images and agent inside the Debian VMs (BPF LSM: EPERM).
fn cri_suite_in_vm(k: &vm::Kernel) -> R {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bins = containerd::binaries().map_err(Failed::from)?;
    let agent_bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_driftguard"));
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let stripped = vm::stripped(&agent_bin, scratch.path()).map_err(Failed::from)?;
    let install = containerd::install_dir();
    let runc = std::path::PathBuf::from(containerd::RUNC);
    // GNU tar builds the images reproducibly (busybox's tar lacks --owner/--sort/--mtime).
    let tar = std::path::PathBuf::from("/usr/bin/tar");
    let hook = hook_binary().map_err(Failed::from)?;
    let hook_env = hook.display().to_string();
    let spec = containerd::repo_root().join(containerd::SHIPPED_BASE_SPEC);
    let mut files = vec![
        (runc.clone(), runc),
        (stripped, agent_bin),
        (tar.clone(), tar),
        (hook.clone(), hook),
        (spec.clone(), spec),
    ];
    for b in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        files.push((bins.dir.join(b), bins.dir.join(b)));
    }
    let version = install.join("version");
    if version.is_file() {
        files.push((version.clone(), version));
    }
    let req = vm::VmRequest {
        exe,
        args: vec!["--test-threads=1".into(), "--color=never".into()],
        env: vm::suite_env()
            .into_iter()
            .chain([
                (ONLY_ENV.into(), VM_TRIALS.join(",")),
                (containerd::DIR_ENV.into(), install.display().to_string()),
                // The guest runs the suite from another directory than the host's target dir,
                // so it cannot find the hook next to itself: name it (placed at the same path).
                ("DRIFTGUARD_OCI_HOOK_BIN".into(), hook_env),
            ])
            .collect(),
        files,
        timeout: Duration::from_secs(900),
        memory_mb: 2048,
    };
    let res = vm::run_suite(k, &req, "CRI suite").map_err(Failed::from)?;
    res.check_trials(&VM_TRIALS).map_err(Failed::from)
}

/// `$DRIFTGUARD_OCI_HOOK_BIN`, or `driftguard-oci-hook` in the profile directory this test was
/// built into (`<target>/debug/deps/cri-<hash>` → `<target>/debug/driftguard-oci-hook`). Err:
/// why the trials cannot run (missing: skipped; see [`check_fresh`] for a stale one).
fn hook_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("DRIFTGUARD_OCI_HOOK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile =
        exe.parent().and_then(Path::parent).ok_or_else(|| format!("no profile dir above {}", exe.display()))?;
    let bin = profile.join("driftguard-oci-hook");
    if !bin.is_file() {
        return Err(format!(
            "{} not built (run `cargo build -p driftguard-oci-hook` with the same target dir and profile first, \
             or set DRIFTGUARD_OCI_HOOK_BIN)",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Fail when the hook binary is older than a source it is built from: the trials would test
/// old code.
fn check_fresh(bin: &Path) -> T {
    if std::env::var_os("DRIFTGUARD_OCI_HOOK_BIN").is_some() {
        return Ok(());
    }
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).map_err(|e| format!("{}: {e}", bin.display()))?;
    let root = containerd::repo_root();
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut stack: Vec<PathBuf> = ["oci-hooks/src", "src", "bpf"].iter().map(|d| root.join(d)).collect();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                    newest = Some((t, p));
                }
            }
        }
    }
    match newest {
        Some((t, p)) if t > built => Err(format!(
            "{} is older than {}: run `cargo build -p driftguard-oci-hook` before the CRI suite",
            bin.display(),
            p.display()
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

/// One containerd and one agent registered with it. The agent is dropped (killed, pins
/// unloaded) before containerd (pods removed, everything cleaned).
struct Env {
    agent: AgentProcess,
    ctd: Containerd,
    seq: u32,
}

impl Env {
    /// containerd with the OCI hook wired in (as shipped) and a synchronized agent.
    fn new() -> Result<Env, String> {
        let env = Env::without_agent()?;
        env.start_agent()
    }

    /// containerd with the OCI hook wired in; the agent is configured (pin dir, the hook's
    /// config) but never started: nothing is pinned, as on a node where the agent has not run
    /// since boot.
    fn without_agent() -> Result<Env, String> {
        let bin = hook_binary()?;
        check_fresh(&bin)?;
        let ctd = Containerd::start_line(LINE.with(Cell::get), Some(HookWiring { bin, spec: None }))?;
        eprintln!("containerd {} in {}", ctd.bins.version, ctd.dir.display());
        let agent = AgentProcess::new(&ctd.nri_sock)?;
        // The hook reads the agent's config: same pin dir, same defaults.
        std::fs::copy(&agent.config, &ctd.hook_config)
            .map_err(|e| format!("{} -> {}: {e}", agent.config.display(), ctd.hook_config.display()))?;
        Ok(Env { agent, ctd, seq: 0 })
    }

    /// containerd without the hook (NRI only) and a synchronized agent.
    fn nri_only() -> Result<Env, String> {
        let ctd = Containerd::start_line(LINE.with(Cell::get), None)?;
        let agent = AgentProcess::new(&ctd.nri_sock)?;
        Env { agent, ctd, seq: 0 }.start_agent()
    }

    fn start_agent(mut self) -> Result<Env, String> {
        let n = self.agent.synced_count() + 1;
        self.agent.start_synced(n).map_err(|e| format!("{e}\n{}", self.ctd.log_tail()))?;
        Ok(self)
    }

    fn diagnostics(&self) -> String {
        format!("{}\n{}", self.agent.log_tail(), self.ctd.log_tail())
    }

    fn path(&self) -> Option<EnforcementPath> {
        enforcer::pinned_path(&self.agent.pin_dir)
    }

    /// A pod with `annotations` and one running container `name` (the image's entrypoint).
    fn pod_with(&self, pod: &str, annotations: &[(&str, &str)], name: &str) -> Result<(Pod, String), String> {
        let p = self.ctd.run_pod(pod, annotations)?;
        let id = self.ctd.run_container(&p, name, &[])?;
        Ok((p, id))
    }

    /// The exec was stopped by enforcement ([`stopped`]).
    fn assert_stopped(&self, e: &Exec, what: &str) -> T {
        stopped(self.path(), e, what)
    }

    /// Barrier for "no event" checks: a drift exec in a fresh monitor pod, whose alert must
    /// arrive. Events before it in the file were emitted before it.
    fn sentinel(&mut self) -> Result<usize, String> {
        self.seq += 1;
        let name = format!("sentinel-{}", self.seq);
        let (_, id) = self.pod_with(&name, &[("driftguard.dev/mode", "monitor")], "probe")?;
        let bin = format!("/tmp/busybox-{name}");
        let e = self.ctd.sh(&id, &format!("cp /bin/busybox {bin} && {bin} true"))?;
        if e.code != 0 {
            return Err(format!("sentinel exec failed: {e}"));
        }
        self.agent.wait_event(&format!("for the sentinel {bin}"), |ev| ev["path"] == bin.as_str())?;
        let evs = self.agent.events();
        Ok(evs.iter().position(|ev| ev["path"] == bin.as_str()).unwrap_or(evs.len()))
    }

    /// `(cgroup_id, namespace/pod/container, mode)` of every row of `driftguard status --json`.
    fn status_rows(&self) -> Result<BTreeSet<(u64, String, String)>, String> {
        let st = self.agent.status()?;
        let rows = st["containers"].as_array().ok_or_else(|| format!("status --json without containers: {st}"))?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r["cgroup_id"].as_u64().unwrap_or(0),
                    format!(
                        "{}/{}/{}",
                        r["namespace"].as_str().unwrap_or(""),
                        r["pod"].as_str().unwrap_or(""),
                        r["container"].as_str().unwrap_or("")
                    ),
                    r["mode"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect())
    }

    /// [`Env::status_rows`] once it lists `n` containers, all named. The agent persists the
    /// names `driftguard status` shows every 100 ms, so right after a start they can lag.
    fn wait_status(&self, n: usize) -> Result<BTreeSet<(u64, String, String)>, String> {
        let mut last = Ok(BTreeSet::new());
        containerd::wait_for(Duration::from_secs(60), &format!("{n} named containers in `driftguard status`"), || {
            last = self.status_rows();
            last.as_ref().ok().filter(|r| r.len() == n && r.iter().all(|r| !r.1.starts_with("//"))).cloned()
        })
        .map_err(|e| format!("{e}; last: {last:?}"))
    }

    fn cgroup_id(&self, pod: &Pod, id: &str) -> Result<u64, String> {
        let dir = self.ctd.cgroup_dir(pod, id)?;
        driftguard::cgroup::cgroup_id(&dir).map_err(|e| format!("cgroup id of {}: {e}", dir.display()))
    }
}

/// The exec was stopped by enforcement: SIGKILL (137) on the tracepoint fallback, EPERM on the
/// BPF LSM path (`path`: what the agent pinned).
fn stopped(path: Option<EnforcementPath>, e: &Exec, what: &str) -> T {
    let text = format!("{}{}", e.stdout, e.stderr).to_lowercase();
    // Inside the VMs BPF LSM must be what stopped it: a silent fallback is a failure.
    if std::env::var("DG_EXPECT_PATH").as_deref() == Ok("lsm") && path != Some(EnforcementPath::Lsm) {
        return Err(format!("{what}: expected the BPF LSM path, the agent pinned {path:?}"));
    }
    match path {
        Some(EnforcementPath::TracepointKill) if e.code == 137 => Ok(()),
        Some(EnforcementPath::Lsm)
            if e.code != 0 && (text.contains("permission denied") || text.contains("operation not permitted")) =>
        {
            Ok(())
        }
        p => Err(format!("{what}: expected the exec to be stopped (enforcement path {p:?}), got {e}")),
    }
}

/// Run `f` in a fresh [`Env`]; a failure carries the agent's and containerd's log tails.
fn with_env(f: impl FnOnce(&mut Env) -> T) -> R {
    with(Env::new(), f)
}

fn with(env: Result<Env, String>, f: impl FnOnce(&mut Env) -> T) -> R {
    let mut env = env?;
    match f(&mut env) {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("{e}\n{}", env.diagnostics()).into()),
    }
}

const ENFORCE: (&str, &str) = ("driftguard.dev/mode", "enforce");
const MONITOR: (&str, &str) = ("driftguard.dev/mode", "monitor");

/// A dropped copy of busybox, run under a name starting with "busybox" so that it works as
/// busybox (exit 0, prints "hi") when nothing stops it.
const DRIFT_RUNS: &str = "cp /bin/busybox /tmp/busybox-x && /tmp/busybox-x echo hi";

fn expect_ok(e: &Exec, want_stdout: &str, what: &str) -> T {
    if e.code != 0 || !e.stdout.contains(want_stdout) {
        return Err(format!("{what}: expected exit 0 and {want_stdout:?} on stdout, got {e}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Trials

fn cri_enforce_pod_kills_drift_and_runs_image_files() -> R {
    with_env(|env| {
        let (pod, id) = env.pod_with("web", &[ENFORCE], "app")?;
        let e = env.ctd.sh(&id, "/bin/busybox echo image-binary && ls /bin/hello.sh && /bin/hello.sh")?;
        expect_ok(&e, "image-binary", "image binaries in an enforce pod")?;
        expect_ok(&e, HELLO, "the image's script /bin/hello.sh")?;
        // The script exec'd directly (kernel `#!` handling, then /bin/sh from the image).
        expect_ok(&env.ctd.exec(&id, &["/bin/hello.sh"])?, HELLO, "ExecSync of /bin/hello.sh")?;
        let e = env.ctd.sh(&id, "cp /bin/busybox /tmp/x && /tmp/x echo hi")?;
        env.assert_stopped(&e, "drift exec /tmp/x in an enforce pod")?;
        let ev = env.agent.wait_event("for /tmp/x", |ev| ev["event"] == "verdict" && ev["path"] == "/tmp/x")?;
        let want_action = if env.path() == Some(EnforcementPath::Lsm) { "deny" } else { "kill" };
        if ev["action"] != want_action || ev["rule"] != "drift" || ev["mode"] != "enforce" || ev["pod"] != "web" {
            return Err(format!("verdict for /tmp/x: want action {want_action}, rule drift: {ev}"));
        }
        // The container itself is unharmed.
        expect_ok(&env.ctd.sh(&id, "echo still-running")?, "still-running", "exec after the kill")?;
        let st = env.ctd.container_status(&id)?;
        if st.state != k8s_cri::v1::ContainerState::ContainerRunning as i32 {
            return Err(format!("container {} of pod {} is not running any more: {st:?}", id, pod.name));
        }
        Ok(())
    })
}

fn cri_monitor_pod_alerts_and_runs_drift() -> R {
    with_env(|env| {
        let (_, id) = env.pod_with("batch", &[MONITOR], "job")?;
        expect_ok(&env.ctd.sh(&id, DRIFT_RUNS)?, "hi", "drift exec in a monitor pod")?;
        let ev = env.agent.wait_event("alert for /tmp/busybox-x", |ev| {
            ev["event"] == "verdict" && ev["path"] == "/tmp/busybox-x" && ev["pod"] == "batch"
        })?;
        if ev["action"] != "alert" || ev["mode"] != "monitor" || ev["rule"] != "drift" || ev["container"] != "job" {
            return Err(format!("monitor verdict: want action alert, mode monitor, rule drift: {ev}"));
        }
        Ok(())
    })
}

fn cri_unannotated_pod_is_untouched() -> R {
    with_env(|env| {
        let (pod, id) = env.pod_with("plain", &[], "app")?;
        expect_ok(&env.ctd.sh(&id, DRIFT_RUNS)?, "hi", "drift exec in an unannotated pod")?;
        env.sentinel()?;
        if let Some(ev) = env.agent.events().iter().find(|ev| ev["pod"] == "plain") {
            return Err(format!("an unannotated pod produced an event: {ev}"));
        }
        let cg = env.cgroup_id(&pod, &id)?;
        if env.status_rows()?.iter().any(|r| r.0 == cg) {
            return Err(format!("the unannotated container's cgroup {cg} has a policy"));
        }
        Ok(())
    })
}

fn cri_per_container_mode_override() -> R {
    with_env(|env| {
        let pod = env.ctd.run_pod("mixed", &[ENFORCE, ("driftguard.dev/mode.debug", "monitor")])?;
        let app = env.ctd.run_container(&pod, "app", &[])?;
        let debug = env.ctd.run_container(&pod, "debug", &[])?;
        let e = env.ctd.sh(&app, "cp /bin/busybox /tmp/x && /tmp/x echo hi")?;
        env.assert_stopped(&e, "drift exec in container app (pod-level enforce)")?;
        expect_ok(&env.ctd.sh(&debug, DRIFT_RUNS)?, "hi", "drift exec in container debug (override: monitor)")?;
        let ev = env.agent.wait_event("alert from container debug", |ev| {
            ev["path"] == "/tmp/busybox-x" && ev["container"] == "debug"
        })?;
        if ev["action"] != "alert" || ev["mode"] != "monitor" {
            return Err(format!("override: want an alert in monitor mode: {ev}"));
        }
        let rows = env.wait_status(2)?;
        let want: BTreeSet<(String, String)> = [
            ("shop/mixed/app".to_string(), "enforce".to_string()),
            ("shop/mixed/debug".to_string(), "monitor".to_string()),
        ]
        .into();
        let got: BTreeSet<(String, String)> = rows.into_iter().map(|r| (r.1, r.2)).collect();
        if got != want {
            return Err(format!("status: want {want:?}, got {got:?}"));
        }
        Ok(())
    })
}

fn cri_deny_listed_entrypoint_is_stopped() -> R {
    with_env(|env| {
        // The entrypoint /bin/sleep resolves to /bin/busybox, which the pod denies.
        let pod = env.ctd.run_pod("denied", &[ENFORCE, ("driftguard.dev/deny", "/bin/busybox")])?;
        let id = env
            .ctd
            .create_container(&pod, "app", &["/bin/sleep", "3600"])
            .map_err(|e| format!("CreateContainer: {}", e.message()))?;
        match env.ctd.start_container(&id) {
            Err(e) => eprintln!("deny-listed entrypoint: StartContainer failed: {}", e.message()),
            Ok(()) => {
                let st = containerd::wait_for(Duration::from_secs(30), "the container to exit", || {
                    env.ctd
                        .container_status(&id)
                        .ok()
                        .filter(|s| s.state == k8s_cri::v1::ContainerState::ContainerExited as i32)
                })
                .map_err(|e| {
                    format!("{e}: the deny-listed entrypoint keeps running: {:?}", env.ctd.container_status(&id))
                })?;
                let want = if env.path() == Some(EnforcementPath::Lsm) { None } else { Some(137) };
                if want.is_some_and(|w| st.exit_code != w) || st.exit_code == 0 {
                    return Err(format!("deny-listed entrypoint: exit code {} ({st:?})", st.exit_code));
                }
            }
        }
        let ev = env.agent.wait_event("deny_list verdict for the entrypoint", |ev| {
            ev["pod"] == "denied" && ev["rule"] == "deny_list"
        })?;
        if ev["path"] != "/bin/busybox" || ev["container"] != "app" || ev["container_id"] != id.as_str() {
            return Err(format!("deny_list verdict: {ev}"));
        }
        Ok(())
    })
}

fn cri_bad_annotation_refused_at_create_container() -> R {
    with_env(|env| {
        let pod = env.ctd.run_pod("typo", &[("driftguard.dev/mode", "enforcing")])?;
        let err = match env.ctd.create_container(&pod, "app", &[]) {
            Ok(id) => return Err(format!("CreateContainer with driftguard.dev/mode=enforcing succeeded: {id}")),
            Err(e) => e.message().to_string(),
        };
        eprintln!("containerd's refusal: {err}");
        if !err.contains("driftguard.dev/mode") || !err.contains("enforcing") {
            return Err(format!("the refusal does not name the annotation: {err}"));
        }
        let left: Vec<_> = env.ctd.list_containers()?.into_iter().filter(|c| c.pod_sandbox_id == pod.id).collect();
        if !left.is_empty() {
            return Err(format!("a refused container exists: {left:?}"));
        }
        let m = env.agent.metrics()?;
        if !m.lines().any(|l| l.starts_with("driftguard_containers_refused_total{reason=\"annotation\"} ")) {
            return Err(format!("metrics lack the refusal:\n{m}"));
        }
        // The pod can still run a container once fixed? Not with the same pod config (annotations
        // are immutable), but another pod is served normally.
        let (_, id) = env.pod_with("fixed", &[ENFORCE], "app")?;
        env.assert_stopped(&env.ctd.sh(&id, "cp /bin/busybox /tmp/x && /tmp/x")?, "drift after a refusal")?;
        Ok(())
    })
}

fn cri_event_fields_and_metrics() -> R {
    with_env(|env| {
        let (_, id) = env.pod_with("shopfront", &[ENFORCE], "app")?;
        env.assert_stopped(&env.ctd.sh(&id, "cp /bin/busybox /tmp/x && /tmp/x echo hi")?, "drift exec")?;
        let ev = env.agent.wait_event("for /tmp/x", |ev| ev["path"] == "/tmp/x")?;
        for (k, want) in [
            ("event", "verdict"),
            ("namespace", "shop"),
            ("pod", "shopfront"),
            ("container", "app"),
            ("container_id", id.as_str()),
            ("image", APP_IMAGE),
            ("node", "test-node"),
            ("rule", "drift"),
            ("mode", "enforce"),
            ("file", "upper"),
        ] {
            if ev[k] != want {
                return Err(format!("event field {k} = {}, want {want:?}: {ev}", ev[k]));
            }
        }
        let action = ev["action"].as_str().unwrap_or("").to_string();
        // The connected gauge follows the runtime's Configure asynchronously: wait for it. The
        // verdict is counted before its event is written and the container gauge inside the
        // NRI handler, so the same answer then holds them.
        let m = env.agent.wait_metrics(&["driftguard_nri_connected 1"])?;
        let verdicts: Vec<&str> = m
            .lines()
            .filter(|l| {
                l.starts_with("driftguard_verdicts_total{")
                    && l.contains(&format!("action=\"{action}\""))
                    && l.contains("rule=\"drift\"")
                    && l.contains("namespace=\"shop\"")
            })
            .collect();
        let n: f64 = verdicts.first().and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        if n < 1.0 {
            return Err(format!("driftguard_verdicts_total does not count the kill:\n{m}"));
        }
        let want = "driftguard_containers_under_policy{mode=\"enforce\"} 1";
        if !m.contains(want) {
            return Err(format!("metrics lack {want}:\n{m}"));
        }
        Ok(())
    })
}

/// DDexec's primitive driven through CRI exec with nothing but the image's shell and `dd`: `dd`
/// copies a byte of its own text from `/proc/self/mem` onto itself (the static busybox's text
/// starts at 0x401000; the real tool writes a loader there). Denied by BPF LSM (the VMs); on
/// the host's fallback the agent runs with `fallback_mappings`, which also checks process
/// memory, and `dd` is killed. The event names the pod, container and image, and its target.
fn cri_shell_only_ddexec_is_stopped() -> R {
    let env = Env::without_agent().and_then(|env| {
        env.agent.edit_config("[bpf]\n", "[bpf]\nfallback_mappings = true\n")?;
        std::fs::copy(&env.agent.config, &env.ctd.hook_config).map_err(|e| format!("hook config: {e}"))?;
        env.start_agent()
    });
    with(env, |env| {
        const DD: &str = "dd if=/proc/self/mem of=/proc/self/mem bs=1 count=1 skip=4198400 seek=4198400 conv=notrunc";
        let (_, free) = env.pod_with("ddexec-free", &[], "app")?;
        let e = env.ctd.sh(&free, DD)?;
        if e.code != 0 {
            return Err(format!("control: dd writing its own text in a pod without policy should work: {e}"));
        }
        let (_, id) = env.pod_with("ddexec", &[ENFORCE], "app")?;
        env.assert_stopped(&env.ctd.sh(&id, DD)?, "dd writing its own text through /proc/self/mem")?;
        let ev = env.agent.wait_event("memory_write of dd", |ev| {
            ev["event"] == "verdict" && ev["rule"] == "memory_write" && ev["pod"] == "ddexec"
        })?;
        let lsm = env.path() == Some(EnforcementPath::Lsm);
        let (action, hook) = if lsm { ("deny", "file_open") } else { ("kill", "sys_open") };
        for (k, want) in [
            ("container", "app"),
            ("container_id", id.as_str()),
            ("image", APP_IMAGE),
            ("comm", "dd"),
            ("file", "own_memory"),
            ("action", action),
            ("hook", hook),
        ] {
            if ev[k] != want {
                return Err(format!("event field {k} = {}, want {want:?}: {ev}", ev[k]));
            }
        }
        if ev["namespace"].as_str().unwrap_or("").is_empty() || !ev["path"].as_str().unwrap_or("").ends_with("/mem") {
            return Err(format!("event without namespace or mem path: {ev}"));
        }
        // The target is dd itself, in the same container.
        if ev["target"]["pid"] != ev["pid"] || ev["target_container"]["pod"] != "ddexec" {
            return Err(format!("event target is not dd in pod ddexec: {ev}"));
        }
        expect_ok(&env.ctd.sh(&id, "echo still-running")?, "still-running", "exec after the refusal")?;
        // reading other processes (read mode) keeps working in the enforced pod
        expect_ok(&env.ctd.sh(&id, "ps && top -b -n 1 && echo ps-ok")?, "ps-ok", "ps and top in the enforced pod")?;
        Ok(())
    })
}

fn cri_agent_kill9_keeps_enforcing() -> R {
    with_env(|env| {
        let (_, id) = env.pod_with("api", &[ENFORCE], "srv")?;
        let (_, mon) = env.pod_with("api-mon", &[MONITOR], "srv")?;
        let before = env.wait_status(2)?;
        env.agent.kill9();
        env.assert_stopped(
            &env.ctd.sh(&id, "cp /bin/busybox /tmp/x && /tmp/x echo hi")?,
            "drift exec while the agent is dead",
        )?;
        expect_ok(&env.ctd.sh(&mon, "echo alive")?, "alive", "monitor container while the agent is dead")?;
        let synced = env.agent.synced_count();
        env.agent.start_synced(synced + 1)?;
        let after = env.wait_status(2)?;
        if after != before {
            return Err(format!("status after the restart differs:\nbefore {before:?}\nafter  {after:?}"));
        }
        env.assert_stopped(&env.ctd.sh(&id, "/tmp/x echo hi")?, "drift exec after the agent restart")?;
        env.agent.wait_event("enriched verdict after the restart", |ev| {
            ev["path"] == "/tmp/x" && ev["pod"] == "api" && ev["container_id"] == id.as_str()
        })?;
        Ok(())
    })
}

fn cri_containerd_restart_agent_reregisters() -> R {
    with_env(|env| {
        let (_, a) = env.pod_with("before", &[ENFORCE], "app")?;
        let before = env.wait_status(1)?;
        let registered = env.agent.log().matches("registered with the runtime").count();
        let synced = env.agent.synced_count();
        env.ctd.restart()?;
        env.agent.wait_synced(synced + 1)?;
        let now = env.agent.log().matches("registered with the runtime").count();
        if now <= registered {
            return Err(format!("no new registration after the containerd restart ({registered} -> {now})"));
        }
        // The running container (its shim survived) is still under the same policy.
        let st = env.ctd.container_status(&a)?;
        if st.state != k8s_cri::v1::ContainerState::ContainerRunning as i32 {
            return Err(format!("container not running after the containerd restart: {st:?}"));
        }
        let after = env.wait_status(1)?;
        if after != before {
            return Err(format!("status changed over the containerd restart:\nbefore {before:?}\nafter  {after:?}"));
        }
        env.assert_stopped(&env.ctd.sh(&a, "cp /bin/busybox /tmp/x && /tmp/x")?, "drift after containerd restart")?;
        let m = env.agent.metrics()?;
        if !m.lines().any(|l| l.starts_with("driftguard_nri_reconnects_total ") && !l.ends_with(" 0")) {
            return Err(format!("driftguard_nri_reconnects_total did not count the reconnection:\n{m}"));
        }
        // New containers go through the new NRI connection.
        let (_, b) = env.pod_with("after", &[ENFORCE], "app")?;
        env.assert_stopped(&env.ctd.sh(&b, "cp /bin/busybox /tmp/x && /tmp/x")?, "drift in a pod made after it")?;
        env.wait_status(2)?;
        Ok(())
    })
}

fn cri_container_removed_while_agent_down_is_cleaned() -> R {
    with_env(|env| {
        let (keep_pod, keep) = env.pod_with("keep", &[ENFORCE], "app")?;
        let (gone_pod, gone) = env.pod_with("gone", &[ENFORCE], "app")?;
        let (keep_cg, gone_cg) = (env.cgroup_id(&keep_pod, &keep)?, env.cgroup_id(&gone_pod, &gone)?);
        let ids: BTreeSet<u64> = env.status_rows()?.into_iter().map(|r| r.0).collect();
        if ids != BTreeSet::from([keep_cg, gone_cg]) {
            return Err(format!("policies before: {ids:?}, want {keep_cg} and {gone_cg}"));
        }
        env.agent.kill9();
        env.ctd.remove_container(&gone)?;
        env.ctd.remove_pod(&gone_pod.id)?;
        // containerd restarts too while the agent is down: the agent must learn everything from
        // Synchronize.
        env.ctd.restart()?;
        let synced = env.agent.synced_count();
        env.agent.start_synced(synced + 1)?;
        let log = env.agent.log();
        let how = log.lines().rev().find(|l| l.contains("synchronized with the runtime")).unwrap_or_default();
        eprintln!("agent back after the removal: {}", how.trim());
        let ids: BTreeSet<u64> = env.status_rows()?.into_iter().map(|r| r.0).collect();
        if ids != BTreeSet::from([keep_cg]) {
            return Err(format!(
                "policies after the agent is back: {ids:?}, want only {keep_cg} (removed container's was {gone_cg})"
            ));
        }
        env.assert_stopped(&env.ctd.sh(&keep, "cp /bin/busybox /tmp/x && /tmp/x")?, "drift in the kept pod")?;
        Ok(())
    })
}

/// runc's `/dev` is a writable tmpfs without noexec in every container.
fn runtime_mount_dev_tmpfs_exec_is_denied() -> R {
    with_env(|env| {
        let (_, id) = env.pod_with("devtmpfs", &[ENFORCE], "app")?;
        let e = env.ctd.sh(&id, "cp /bin/busybox /dev/x && /dev/x true")?;
        env.assert_stopped(&e, "exec of a binary copied to /dev (runtime-made tmpfs) in an enforce pod").map_err(|m| {
            format!("{m} (exit 127 \"x: applet not found\" means the copied busybox RAN and printed that)")
        })
    })
}

/// The attacker's next step after `/dev` and `/etc/hostname`: every mount point the runtime gives
/// the container (from the container's own `/proc/self/mounts`: `/dev`, `/dev/shm`, `/dev/mqueue`,
/// `/dev/pts`, the `/etc/hosts|hostname|resolv.conf` binds, the root's upper layer, whatever a
/// newer runtime adds) gets a copy of busybox written into it (a file named `echo` in a directory,
/// the file itself for a file mount) and run. Not one may run: exit 126 (EPERM, or the mount's own
/// `noexec`) or 137 (killed) for every mount the container can write. procfs and sysfs hold no
/// regular files a process can create and are left out.
fn every_writable_mount_refuses_a_written_binary() -> R {
    const PROBE: &str = r#"
for m in $(awk '{print $2}' /proc/self/mounts | sort -u); do
  case "$m" in /proc|/proc/*|/sys|/sys/*) continue;; esac
  if [ -d "$m" ]; then t="${m%/}/echo"; else t="$m"; fi
  if cat /bin/busybox > "$t" 2>/dev/null && chmod 755 "$t" 2>/dev/null; then
    "$t" DG-RAN >/dev/null 2>&1
    rc=$?
    case $rc in 126|137) echo "STOPPED $m $rc";; *) echo "RAN $m $rc";; esac
  else
    echo "READONLY $m"
  fi
done
"#;
    with_env(|env| {
        let (_, id) = env.pod_with("allmounts", &[ENFORCE], "app")?;
        let e = env.ctd.sh(&id, PROBE)?;
        println!("{}", e.stdout.trim_end());
        let lines: Vec<(&str, &str)> = e.stdout.lines().filter_map(|l| l.split_once(' ')).collect();
        let ran: Vec<&str> = lines.iter().filter(|(v, _)| *v == "RAN").map(|(_, m)| *m).collect();
        if !ran.is_empty() {
            return Err(format!("a binary written into these mounts RAN in an enforce pod: {ran:?}\n{e}"));
        }
        let tried: Vec<&str> =
            lines.iter().filter(|(v, _)| *v == "STOPPED").filter_map(|(_, m)| m.split(' ').next()).collect();
        for must in ["/", "/dev", "/dev/shm", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"] {
            if !tried.contains(&must) {
                return Err(format!("the probe could not write {must}, so it proves nothing there: {e}"));
            }
        }
        let ok = env.ctd.sh(&id, "/bin/echo image-ok")?;
        if ok.code != 0 || !ok.stdout.contains("image-ok") {
            return Err(format!("control: the image's /bin/echo must still run after the probe: {ok}"));
        }
        Ok(())
    })
}

/// `/etc/hostname` is a writable bind mount of a file in containerd's sandbox directory.
fn runtime_mount_etc_hostname_exec_is_denied() -> R {
    with_env(|env| {
        let (_, id) = env.pod_with("hostnamefile", &[ENFORCE], "app")?;
        let e = env.ctd.sh(&id, "cat /bin/busybox > /etc/hostname && chmod 755 /etc/hostname && /etc/hostname true")?;
        env.assert_stopped(&e, "exec of a binary written over /etc/hostname (runtime bind mount) in an enforce pod")
            .map_err(|m| format!("{m} (busybox ran as its `hostname` applet: the exec was not stopped)"))
    })
}

/// Fail closed, agent dead: the agent is killed (SIGKILL; enforcement stays pinned) and a
/// container of an enforce pod is created and started through CRI. No NRI plugin is registered,
/// so containerd asks nobody; the OCI hook installs the policy at createRuntime, before the
/// entrypoint runs, and the first drift exec is stopped. When the agent is back it adopts the
/// container.
fn container_started_while_agent_down_is_enforced() -> R {
    with_env(|env| {
        env.agent.kill9();
        let (pod, id) = env.pod_with("unguarded", &[ENFORCE], "app")?;
        // Named busybox-*: if nothing stops it, it runs and prints "hi".
        let e = env.ctd.sh(&id, DRIFT_RUNS)?;
        env.assert_stopped(&e, "first drift exec in a container started while the agent was down")?;
        let cg = env.cgroup_id(&pod, &id)?;
        let synced = env.agent.synced_count();
        env.agent.start_synced(synced + 1)?;
        let rows = env.wait_status(1)?;
        if !rows.iter().any(|r| r.0 == cg && r.1 == "shop/unguarded/app" && r.2 == "enforce") {
            return Err(format!("the agent did not adopt container {id} (cgroup {cg}): {rows:?}"));
        }
        env.assert_stopped(&env.ctd.sh(&id, "/tmp/busybox-x echo hi")?, "drift exec after the agent is back")
    })
}

/// Fail closed, nothing pinned (the agent never ran since boot): the hook refuses an opted-in
/// container (failure-policy fail, the default) and containerd returns the hook's message from
/// StartContainer. The pod's sandbox starts (the hook skips sandboxes). Once the agent has
/// started (after containerd), the retried container starts and is enforced.
fn container_refused_when_nothing_is_pinned() -> R {
    with(Env::without_agent(), |env| {
        let pod = env.ctd.run_pod("early", &[ENFORCE])?;
        let id = env.ctd.create_container(&pod, "app", &[]).map_err(|e| format!("CreateContainer: {}", e.message()))?;
        let err = match env.ctd.start_container(&id) {
            Ok(()) => {
                let e = env.ctd.sh(&id, DRIFT_RUNS)?;
                return Err(format!(
                    "StartContainer of an enforce container succeeded with nothing pinned; drift: {e}"
                ));
            }
            Err(e) => e.message().to_string(),
        };
        eprintln!("containerd's refusal: {err}");
        for want in ["driftguard-oci-hook", "no driftguard enforcement is pinned", "start the agent"] {
            if !err.contains(want) {
                return Err(format!("the refusal does not say {want:?}: {err}"));
            }
        }
        let st = env.ctd.container_status(&id)?;
        if st.state == k8s_cri::v1::ContainerState::ContainerRunning as i32 {
            return Err(format!("the refused container is running: {st:?}"));
        }
        // The agent starts after containerd (its unit is ordered after it, or its DaemonSet pod
        // comes up later): the kubelet's next attempt, a new container in the same pod, starts
        // and is enforced from its first exec.
        let synced = env.agent.synced_count();
        env.agent.start_synced(synced + 1)?;
        env.ctd.remove_container(&id)?;
        let retry = env.ctd.run_container(&pod, "app", &[])?;
        env.assert_stopped(&env.ctd.sh(&retry, DRIFT_RUNS)?, "drift in the retried container once the agent runs")?;
        let cg = env.cgroup_id(&pod, &retry)?;
        let rows = env.wait_status(1)?;
        if !rows.iter().any(|r| r.0 == cg && r.2 == "enforce") {
            return Err(format!("the retried container {retry} (cgroup {cg}) is not under policy: {rows:?}"));
        }
        Ok(())
    })
}

/// Nothing pinned, pod without driftguard annotations: the hook does nothing, the pod runs.
fn unannotated_pod_starts_when_nothing_is_pinned() -> R {
    with(Env::without_agent(), |env| {
        let (_, id) = env.pod_with("plain", &[], "app")?;
        expect_ok(&env.ctd.sh(&id, DRIFT_RUNS)?, "hi", "drift exec in an unannotated pod with nothing pinned")?;
        // Explicit off is the same.
        let (_, off) = env.pod_with("off", &[("driftguard.dev/mode", "off")], "app")?;
        expect_ok(&env.ctd.sh(&off, "echo up")?, "up", "a mode-off pod with nothing pinned")
    })
}

/// containerd restarts, and containers start before the agent is back on NRI (the agent is
/// stopped with SIGSTOP over the restart: deterministic) and while it reconnects and
/// synchronizes (after SIGCONT). Every started enforce container is enforced, and once the
/// agent has synchronized each has exactly its one policy.
fn containerd_restart_racing_agent_reconnect() -> R {
    with_env(|env| {
        let mut started = vec![env.pod_with("before", &[ENFORCE], "app")?];
        env.wait_status(1)?;
        let synced = env.agent.synced_count();
        if !env.agent.pause() {
            return Err("could not SIGSTOP the agent".into());
        }
        let restarted = env.ctd.restart();
        // Started and exec'd while the agent cannot answer: only the hook can have put the
        // policy there.
        let early = restarted.and_then(|()| {
            let (pod, id) = env.pod_with("early", &[ENFORCE], "app")?;
            env.assert_stopped(&env.ctd.sh(&id, DRIFT_RUNS)?, "drift before the agent is back")?;
            let store = enforcer::PolicyStore::open_pinned(&env.agent.pin_dir).map_err(|e| e.to_string())?;
            let owner = store.owner(env.cgroup_id(&pod, &id)?).map_err(|e| e.to_string())?;
            if owner != Some(enforcer::Owner::OciHook) {
                return Err(format!("container started while the agent was stopped: owner {owner:?}, want OciHook"));
            }
            Ok((pod, id))
        });
        // Start containers on another thread while the agent is resumed and reconnects and
        // synchronizes. Resumed whatever happened above, so that a failure does not leave it
        // stopped.
        let env_ref: &Env = env;
        let (racing, before_sync) = std::thread::scope(|s| {
            let racer = s.spawn(|| {
                let mut v = Vec::new();
                let mut before_sync = 0;
                for i in 0..4 {
                    v.push(env_ref.pod_with(&format!("racing-{i}"), &[ENFORCE], "app")?);
                    if env_ref.agent.synced_count() <= synced {
                        before_sync += 1;
                    }
                }
                Ok::<_, String>((v, before_sync))
            });
            env_ref.agent.resume();
            racer.join().unwrap_or_else(|_| Err("the racing thread panicked".into()))
        })?;
        started.push(early?);
        started.extend(racing);
        eprintln!(
            "{} containers started around the restart; {before_sync} of the 4 racing ones completed StartContainer \
             before the agent's Synchronize",
            started.len()
        );
        for (_, id) in &started {
            env.assert_stopped(&env.ctd.sh(id, DRIFT_RUNS)?, &format!("drift in {id} (started around the restart)"))?;
        }
        env.agent.wait_synced(synced + 1)?;
        let want: BTreeSet<u64> = started.iter().map(|(p, id)| env.cgroup_id(p, id)).collect::<Result<_, _>>()?;
        let rows = env.wait_status(started.len())?;
        let got: BTreeSet<u64> = rows.iter().map(|r| r.0).collect();
        if got != want || rows.iter().any(|r| r.2 != "enforce") {
            return Err(format!("status after the agent is back: {rows:?}, want enforce on {want:?}"));
        }
        let store = enforcer::PolicyStore::open_pinned(&env.agent.pin_dir).map_err(|e| e.to_string())?;
        let ids: BTreeSet<u64> = store.cgroup_ids().into_iter().collect();
        if ids != want {
            return Err(format!("policies in the map: {ids:?}, want exactly {want:?}"));
        }
        Ok(())
    })
}

/// containerd restarts twice while another thread starts enforce pods in a loop (as kubelets
/// retry), the agent running throughout and reconnecting on its own. Starts land before the
/// restart, fail while containerd is away, and race the agent's re-registration and
/// Synchronize after it. Afterwards every container containerd runs (whether or not its
/// StartContainer answer reached the loop) is enforced from its first exec: the drift exec is
/// stopped; none runs drift.
fn containerd_restarts_while_starts_loop() -> R {
    with_env(|env| {
        let stop = AtomicBool::new(false);
        // Set from before containerd stops until the agent has synchronized again.
        let restarting = AtomicBool::new(false);
        let ok_starts = AtomicUsize::new(0);
        let raced = AtomicUsize::new(0);
        let env_ref: &Env = env;
        let (restarts, loops) = std::thread::scope(|s| {
            // Two loops, as two kubelet workers.
            let racers: Vec<_> = (0..2)
                .map(|t| {
                    let (stop, restarting, ok_starts, raced) = (&stop, &restarting, &ok_starts, &raced);
                    s.spawn(move || {
                        let (mut attempts, mut failures, mut first_errors) = (0usize, 0usize, Vec::new());
                        while !stop.load(Ordering::SeqCst) {
                            attempts += 1;
                            let during = restarting.load(Ordering::SeqCst);
                            let r = env_ref
                                .ctd
                                .run_pod(&format!("race-{t}-{attempts}"), &[ENFORCE])
                                .and_then(|p| env_ref.ctd.run_container(&p, "app", &[]));
                            match r {
                                Ok(_) => {
                                    ok_starts.fetch_add(1, Ordering::SeqCst);
                                    if during {
                                        raced.fetch_add(1, Ordering::SeqCst);
                                    }
                                }
                                Err(e) => {
                                    failures += 1;
                                    if first_errors.len() < 2 {
                                        first_errors.push(e.lines().next().unwrap_or_default().to_string());
                                    }
                                    // containerd is away: retry soon, as the kubelet does.
                                    std::thread::sleep(Duration::from_millis(5));
                                }
                            }
                        }
                        (attempts, failures, first_errors)
                    })
                })
                .collect();
            // Barrier on the loops' progress, not on time: some starts before each restart, and
            // some after the last one, once the agent is back.
            let wait_starts = |n: usize| {
                containerd::wait_for(Duration::from_secs(120), &format!("{n} started containers"), || {
                    (ok_starts.load(Ordering::SeqCst) >= n).then_some(())
                })
            };
            let restarts = (|| {
                for _ in 0..2 {
                    wait_starts(ok_starts.load(Ordering::SeqCst) + 2)?;
                    let synced = env_ref.agent.synced_count();
                    restarting.store(true, Ordering::SeqCst);
                    env_ref.ctd.restart()?;
                    // The loops keep starting while the agent reconnects and synchronizes.
                    let r = containerd::wait_for(Duration::from_secs(60), "the agent to synchronize again", || {
                        (env_ref.agent.synced_count() > synced).then_some(())
                    });
                    restarting.store(false, Ordering::SeqCst);
                    r?;
                }
                wait_starts(ok_starts.load(Ordering::SeqCst) + 2)
            })();
            stop.store(true, Ordering::SeqCst);
            let loops: Result<Vec<_>, String> = racers
                .into_iter()
                .map(|r| r.join().map_err(|_| "a racing thread panicked".to_string()))
                .collect::<Result<_, _>>();
            (restarts, loops)
        });
        let loops = loops?;
        restarts?;
        eprintln!(
            "{} pod starts tried, {} answered OK ({} of them begun while containerd restarted or before the agent's \
             Synchronize), failures (containerd away): {:?}",
            loops.iter().map(|l| l.0).sum::<usize>(),
            ok_starts.load(Ordering::SeqCst),
            raced.load(Ordering::SeqCst),
            loops.iter().map(|l| (l.1, &l.2)).collect::<Vec<_>>()
        );
        let running: Vec<_> = env
            .ctd
            .list_containers()?
            .into_iter()
            .filter(|c| c.state == k8s_cri::v1::ContainerState::ContainerRunning as i32)
            .collect();
        if running.len() < ok_starts.load(Ordering::SeqCst) {
            return Err(format!(
                "{} containers running, fewer than the {} StartContainer calls answered OK",
                running.len(),
                ok_starts.load(Ordering::SeqCst)
            ));
        }
        for c in &running {
            let name = c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("?");
            env.assert_stopped(&env.ctd.sh(&c.id, DRIFT_RUNS)?, &format!("first exec (drift) in {name} {}", c.id))?;
        }
        Ok(())
    })
}

/// Hook and agent together: the hook installs at createRuntime, the agent takes the entry over
/// at StartContainer (same policy, the hook's provenance kept). The container has exactly one
/// policy, and it is gone, with the hook's record, once the container is stopped and removed.
fn hook_and_agent_leave_one_policy_removed_at_stop() -> R {
    with_env(|env| {
        let (pod, id) = env.pod_with("both", &[ENFORCE], "app")?;
        let (_, plain) = env.pod_with("both-plain", &[], "app")?;
        let cg = env.cgroup_id(&pod, &id)?;
        let record = env.ctd.hook_state.join(&id);
        if !record.is_file() {
            return Err(format!("the hook did not run for {id}: no record {}", record.display()));
        }
        if env.ctd.hook_state.join(&plain).exists() || env.ctd.hook_state.join(&pod.id).exists() {
            return Err("the hook recorded an unannotated container or a sandbox".into());
        }
        let store = enforcer::PolicyStore::open_pinned(&env.agent.pin_dir).map_err(|e| e.to_string())?;
        let list = store.list().map_err(|e| e.to_string())?;
        if list.len() != 1 || list[0].cgroup_id != cg || store.owner(cg).ok().flatten() != Some(enforcer::Owner::Agent)
        {
            return Err(format!("want one agent-owned policy on {cg}, got {list:?}"));
        }
        env.assert_stopped(&env.ctd.sh(&id, DRIFT_RUNS)?, "drift with hook and agent")?;
        env.ctd.remove_container(&id)?;
        containerd::wait_for(Duration::from_secs(10), "the policy and the hook's record to be removed", || {
            (store.cgroup_ids().is_empty() && !record.exists()).then_some(())
        })
        .map_err(|e| format!("{e}: policies {:?}, record exists: {}", store.cgroup_ids(), record.exists()))?;
        Ok(())
    })
}

/// Run the DaemonSet's init container script (`deploy/kustomize/base/node-setup.sh`)
/// with this machine as the node (`HOST_ROOT=/`, so the hook's trial run needs no chroot) and
/// `prefix` instead of `/opt/driftguard`; its output on failure.
fn node_setup(prefix: &Path, hook: &Path, config: &Path) -> Result<String, String> {
    let script = containerd::repo_root().join("deploy/kustomize/base/node-setup.sh");
    let out = std::process::Command::new("/bin/sh")
        .arg(&script)
        .env("HOST_ROOT", "/")
        .env("PREFIX", prefix)
        .env("SRC_HOOK", hook)
        .env("SRC_SPEC", containerd::repo_root().join(containerd::SHIPPED_BASE_SPEC))
        .env("SRC_CONFIG", config)
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || text.contains("ERROR") {
        return Err(format!("node-setup.sh failed ({}):\n{text}", out.status));
    }
    Ok(text)
}

/// A node set up through the DaemonSet: its init container's script installs the hook, its
/// config and a base runtime spec (here under a scratch prefix), and containerd runs with that
/// spec and the three keys the script prints. `driftguard check` then reports the hook in
/// place, an opted-in container is refused while nothing is pinned, and one started while the
/// agent is dead is enforced from its first exec.
fn daemonset_node_setup_makes_start_fail_closed() -> R {
    let bin = hook_binary()?;
    check_fresh(&bin)?;
    let prefix = tempfile::Builder::new().prefix("dg-node-").tempdir().map_err(|e| e.to_string())?;
    let defaults = containerd::repo_root().join("packaging/config.toml");
    // First run: the ConfigMap's config is not known yet (the agent's pin dir is private to
    // this trial); the spec only names the config file.
    let printed = node_setup(prefix.path(), &bin, &defaults)?;
    let spec = prefix.path().join("containerd/base-runtime-spec.json");
    let snippet = std::fs::read_to_string(prefix.path().join("containerd/oci-hook.toml")).map_err(|e| e.to_string())?;
    if !printed.contains("base_runtime_spec") || !snippet.contains(&spec.display().to_string()) {
        return Err(
            format!("node-setup.sh did not print the containerd change for {}:\n{printed}", spec.display()).into()
        );
    }
    let line = LINE.with(Cell::get);
    let ctd = Containerd::start_line(line, Some(HookWiring { bin: bin.clone(), spec: Some(spec.clone()) }))?;
    eprintln!("containerd {} in {}", ctd.bins.version, ctd.dir.display());
    let agent = AgentProcess::new(&ctd.nri_sock)?;
    let before = std::fs::read(&spec).map_err(|e| e.to_string())?;
    // The init container runs again at every pod start, now with the agent's config: idempotent.
    node_setup(prefix.path(), &bin, &agent.config)?;
    if std::fs::read(&spec).map_err(|e| e.to_string())? != before {
        return Err("node-setup.sh changed the base runtime spec on its second run".into());
    }
    with(Ok(Env { agent, ctd, seq: 0 }), |env| {
        // `driftguard check` finds the hook in containerd's config (both config versions).
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftguard"))
            .args(["check", "--json", "--containerd-config"])
            .arg(&env.ctd.config)
            .output()
            .map_err(|e| format!("driftguard check: {e}"))?;
        let items: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("driftguard check --json: {e}: {}", String::from_utf8_lossy(&out.stdout)))?;
        let hook = items
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == "containerd_hook"))
            .ok_or_else(|| format!("no containerd_hook item: {items}"))?;
        if hook["status"] != "ok" {
            return Err(format!("driftguard check containerd_hook: {hook}"));
        }
        // Nothing pinned yet: refused.
        let pod = env.ctd.run_pod("ds-early", &[ENFORCE])?;
        let id = env.ctd.create_container(&pod, "app", &[]).map_err(|e| format!("CreateContainer: {}", e.message()))?;
        match env.ctd.start_container(&id) {
            Ok(()) => {
                return Err(format!(
                    "StartContainer of an enforce container succeeded with nothing pinned; drift: {}",
                    env.ctd.sh(&id, DRIFT_RUNS)?
                ))
            }
            Err(e) if e.message().contains("no driftguard enforcement is pinned") => {}
            Err(e) => return Err(format!("refused, but not by the hook: {}", e.message())),
        }
        // The agent ran once and died: enforced from the first exec.
        let n = env.agent.synced_count() + 1;
        env.agent.start_synced(n)?;
        env.agent.kill9();
        let (_, id) = env.pod_with("ds-unguarded", &[ENFORCE], "app")?;
        env.assert_stopped(&env.ctd.sh(&id, DRIFT_RUNS)?, "first drift exec, agent dead, DaemonSet-installed hook")
    })
}

/// What the hook adds: with NRI only (no hook wired), a container started while the agent is
/// down runs unprotected until the agent is back. The threat model's "fail open" claim.
fn nri_only_container_started_while_agent_down() -> R {
    with(Env::nri_only(), |env| {
        env.agent.kill9();
        let (_, id) = env.pod_with("unguarded", &[ENFORCE], "app")?;
        expect_ok(
            &env.ctd.sh(&id, DRIFT_RUNS)?,
            "hi",
            "NRI only: drift in a container started while the agent is down",
        )?;
        let synced = env.agent.synced_count();
        env.agent.start_synced(synced + 1)?;
        env.wait_status(1)?;
        env.assert_stopped(&env.ctd.sh(&id, "/tmp/busybox-x echo hi")?, "NRI only: drift once the agent is back")
    })
}

/// The operator's view of a node with the real containerd 1.7 (issue 16): `check` pointed at a
/// containerd that is not on PATH (binary, config, NRI socket given as flags) finds it ready;
/// `status` says the agent runs and is registered; the agent's log is plain text without debug
/// formatting; a SIGTERM stops the agent with exit 0, and containerd logs no error about it,
/// neither at the stop nor at the events after it.
fn operator_check_status_log_and_clean_stop() -> R {
    with(Env::nri_only(), |env| {
        let bin = env.ctd.bins.containerd.display().to_string();
        let (code, out, err) = env.agent.cli(&[
            "check",
            "--json",
            "--containerd",
            &bin,
            "--containerd-config",
            &env.ctd.config.display().to_string(),
            "--nri-socket",
            &env.ctd.nri_sock.display().to_string(),
        ])?;
        let items: Vec<serde_json::Value> =
            serde_json::from_str(&out).map_err(|e| format!("check --json: {e} (exit {code}): {out}{err}"))?;
        for name in ["containerd", "containerd_nri", "nri_socket"] {
            let item = items.iter().find(|i| i["name"] == name).ok_or(format!("check has no {name} item: {out}"))?;
            if item["status"] != "ok" {
                return Err(format!("check item {name} is not ok with the flags' containerd: {item}"));
            }
        }
        let ctd_item = items.iter().find(|i| i["name"] == "containerd").map(|i| i["detail"].to_string());
        if !ctd_item.as_deref().is_some_and(|d| d.contains(&bin) && d.contains("1.7")) {
            return Err(format!("check's containerd item does not name {bin} and its version: {ctd_item:?}"));
        }

        let (code, out, err) = env.agent.cli(&["status"])?;
        if code != 0
            || !out
                .lines()
                .next()
                .is_some_and(|l| l.starts_with("agent: running") && l.contains("registered with containerd"))
        {
            return Err(format!("status does not say the agent runs and is registered (exit {code}):\n{out}{err}"));
        }

        let (_, id) = env.pod_with("op", &[ENFORCE], "srv")?;
        env.assert_stopped(&env.ctd.sh(&id, DRIFT_RUNS)?, "drift exec")?;
        let log = env.agent.raw_log();
        for bad in ["\x1b[", "Some(", "=None", "nri_version= ", "libbpf: "] {
            if log.contains(bad) {
                return Err(format!("the agent's log contains {bad:?}:\n{log}"));
            }
        }
        if !log.contains("nri_version=unknown") {
            return Err(format!("containerd 1.7 sends no NRI version: the log should say nri_version=unknown:\n{log}"));
        }

        clean_stop_reports_no_error(env, &id)
    })
}

/// SIGTERM: the agent exits 0, `status` says it is not running, and containerd saw the plugin
/// close its connection, with no request of it cut off, and reports no error about it, at the stop
/// or at the events after it (removing `id`, a new pod): the agent's farewell connection
/// (`nri_plugin::RunnerBuilder::farewell`) made containerd's NRI adaptation drop the closed plugin
/// before any event was dispatched to it. Without it, the first event driftguard subscribed to
/// after the stop logged "closing plugin 10-driftguard, failed to handle event …: ttrpc: closed".
fn clean_stop_reports_no_error(env: &mut Env, id: &str) -> T {
    let st = env.agent.terminate()?;
    if !st.success() {
        return Err(format!("SIGTERM: the agent exited with {st}"));
    }
    let (_, out, _) = env.agent.cli(&["status"])?;
    if !out.starts_with("agent: not running") {
        return Err(format!("status after a clean stop:\n{out}"));
    }
    // Events driftguard subscribed to, after it left.
    env.ctd.remove_container(id)?;
    let (_, id2) = env.pod_with("op-after", &[ENFORCE], "srv")?;
    env.ctd.remove_container(&id2)?;
    let ctd_log = env.ctd.log();
    let lines: Vec<&str> = ctd_log.lines().filter(|l| l.contains("10-driftguard")).collect();
    println!("containerd's lines about driftguard:\n{}", lines.join("\n"));
    let closed = lines
        .iter()
        .position(|l| l.contains(r#"connection to plugin \"10-driftguard\" closed"#))
        .ok_or(format!("containerd did not log the plugin's connection closing:\n{}", lines.join("\n")))?;
    if let Some(l) = lines.iter().find(|l| l.contains("level=error") || l.contains("level=warn")) {
        return Err(format!("containerd reported an error about the plugin around a clean stop: {l}"));
    }
    // The farewell connection registered before the main one closed, and closed after it.
    let closes =
        lines[closed..].iter().filter(|l| l.contains(r#"connection to plugin \"10-driftguard\" closed"#)).count();
    if closes != 2 {
        return Err(format!("expected the main and the farewell connection to close:\n{}", lines.join("\n")));
    }
    Ok(())
}

/// On containerd 2.x: a pod under enforcement, then a SIGTERM to the agent; see
/// [`clean_stop_reports_no_error`].
fn clean_stop_on_containerd2() -> R {
    with(Env::nri_only(), |env| {
        let (_, id) = env.pod_with("op", &[ENFORCE], "srv")?;
        env.assert_stopped(&env.ctd.sh(&id, DRIFT_RUNS)?, "drift exec")?;
        clean_stop_reports_no_error(env, &id)
    })
}

// ---------------------------------------------------------------------------------------------
// The DaemonSet's image, run the way the kubelet runs the DaemonSet's pod

/// The deploy kit as applied: the objects of `deploy/daemonset.yaml`, which CI checks is the
/// rendering of `deploy/kustomize/base` (tests/packaging/test.sh), parsed with python3-yaml.
fn rendered_deploy_kit() -> Result<Vec<serde_json::Value>, String> {
    let file = containerd::repo_root().join("deploy/daemonset.yaml");
    // Debian's python3 has python3-yaml (scripts/install-deps.sh); another one on PATH may not.
    let python = if Path::new("/usr/bin/python3").is_file() { "/usr/bin/python3" } else { "python3" };
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
        ])
        .arg(&file)
        .output()
        .map_err(|e| format!("python3 (apt-get install python3-yaml): {e}"))?;
    if !out.status.success() {
        return Err(format!("parsing {}: {}", file.display(), String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{}: {e}", file.display()))
}

/// This trial's node: the DaemonSet's hostPath volumes point at the node's real paths except
/// where that would touch the machine's own driftguard or runtime: those are mapped to
/// scratch directories (the NRI socket directory to this test's containerd, /run/driftguard,
/// /opt/driftguard and /etc/containerd to private ones). bpffs is the host's, through a shared
/// bind mount of /sys/fs/bpf: HostToContainer propagation needs a shared or slave source mount
/// (systemd makes every mount shared on a real node; this test machine's are private).
/// Dropped after the containerd: unloads the agent's pins, detaches the bind mount.
struct DaemonSetNode {
    dir: tempfile::TempDir,
    map: Vec<(&'static str, PathBuf)>,
    pin_dir: PathBuf,
    bpffs: PathBuf,
    /// Empty directories made on this machine as the kubelet would ([`DaemonSetNode::mountpoint`]).
    made: std::cell::RefCell<Vec<PathBuf>>,
}

impl DaemonSetNode {
    /// Before containerd starts (so that it is dropped after it); [`DaemonSetNode::attach`] then.
    fn new() -> Result<Self, String> {
        let dir = tempfile::Builder::new().prefix("dg-ds-node-").tempdir().map_err(|e| e.to_string())?;
        let d = dir.path().to_path_buf();
        let bpffs = d.join("bpffs");
        let etc_containerd = d.join("etc-containerd");
        for p in [&bpffs, &etc_containerd, &d.join("run-driftguard"), &d.join("opt-driftguard")] {
            std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let sh = |cmd: &str| -> T {
            let st = std::process::Command::new("/bin/sh").args(["-c", cmd]).status().map_err(|e| e.to_string())?;
            st.success().then_some(()).ok_or(format!("`{cmd}`: {st}"))
        };
        sh(&format!("mount --bind /sys/fs/bpf {0} && mount --make-shared {0}", bpffs.display()))?;
        // `dg-cri-<pid>-<n>`: `containerd::sweep_stale` unloads it if this process dies.
        static DS_SEQ: AtomicUsize = AtomicUsize::new(0);
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/dg-cri-{}-{}",
            std::process::id(),
            9000 + DS_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let map = vec![
            ("/sys/fs/bpf", bpffs.clone()),
            ("/run/driftguard", d.join("run-driftguard")),
            ("/opt/driftguard", d.join("opt-driftguard")),
            ("/etc/containerd", etc_containerd),
        ];
        Ok(DaemonSetNode { dir, map, pin_dir, bpffs, made: Default::default() })
    }

    /// The node's runtime is `ctd`: its NRI socket directory and its config.
    fn attach(&mut self, ctd: &Containerd) -> T {
        let etc = self.host_path("/etc/containerd");
        std::fs::copy(&ctd.config, etc.join("config.toml")).map_err(|e| e.to_string())?;
        self.map.push(("/var/run/nri", ctd.dir.clone()));
        Ok(())
    }

    /// A mount inside the read-only mount of the node's root (node-setup's `/host/opt/driftguard`
    /// in `/host`) needs its mountpoint on the node: there the kubelet has made it for the
    /// DirectoryOrCreate volume. Here that volume is a scratch directory, so make the (empty)
    /// node directory when it is missing, and remove it again at the end.
    fn mountpoint(&self, node_path: &Path) -> T {
        if !node_path.exists() {
            std::fs::create_dir_all(node_path).map_err(|e| format!("{}: {e}", node_path.display()))?;
            self.made.borrow_mut().push(node_path.to_path_buf());
        }
        Ok(())
    }

    fn host_path(&self, node_path: &str) -> PathBuf {
        self.map.iter().find(|(p, _)| *p == node_path).map(|(_, h)| h.clone()).unwrap_or_else(|| node_path.into())
    }
}

impl Drop for DaemonSetNode {
    fn drop(&mut self) {
        let _ = enforcer::unload(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        if let Ok(c) = std::ffi::CString::new(self.bpffs.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid C string; our own bind mount.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        for d in self.made.borrow().iter() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// The HTTP status code of GET `path` on 127.0.0.1:`port` (the kubelet's httpGet probe).
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// The CRI ContainerConfig the kubelet makes of container `c` of `pod_spec` (the fields the
/// DaemonSet uses; any other field is an error, so this keeps up with the manifest): command,
/// args, env (values and the spec.nodeName field), security context and volume mounts (hostPath
/// through `node`, the ConfigMap as the directory `configmap`, which is named after it, emptyDir
/// as a scratch directory).
fn cri_container(
    c: &serde_json::Value,
    pod_spec: &serde_json::Value,
    node: &DaemonSetNode,
    configmap: &Path,
    ns: &cri::NamespaceOption,
) -> Result<cri::ContainerConfig, String> {
    let name = c["name"].as_str().ok_or(format!("container without a name: {c}"))?;
    let known = [
        "name",
        "image",
        "imagePullPolicy",
        "command",
        "args",
        "env",
        "ports",
        "readinessProbe",
        "livenessProbe",
        "resources",
        "securityContext",
        "volumeMounts",
    ];
    if let Some(k) = c.as_object().into_iter().flatten().map(|(k, _)| k).find(|k| !known.contains(&k.as_str())) {
        return Err(format!("container {name}: field {k} is not translated by this trial"));
    }
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
    };
    let node_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let mut envs = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let key = e["name"].as_str().unwrap_or_default().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
            node_name.clone()
        } else {
            return Err(format!("container {name}: env {e} is not translated by this trial"));
        };
        envs.push(cri::KeyValue { key, value });
    }
    let volumes: Vec<&serde_json::Value> = pod_spec["volumes"].as_array().into_iter().flatten().collect();
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let vname = m["name"].as_str().unwrap_or_default();
        let v = volumes.iter().find(|v| v["name"] == vname).ok_or(format!("{name}: no volume {vname}"))?;
        let host = if let Some(p) = v["hostPath"]["path"].as_str() {
            let h = node.host_path(p);
            if v["hostPath"]["type"] == "DirectoryOrCreate" {
                std::fs::create_dir_all(&h).map_err(|e| format!("{}: {e}", h.display()))?;
            }
            h
        } else if v.get("configMap").is_some() {
            let want = configmap.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if v["configMap"]["name"] != want {
                return Err(format!("volume {v}: not the deploy kit's ConfigMap {want}"));
            }
            configmap.to_path_buf()
        } else if v.get("emptyDir").is_some() {
            let h = node.dir.path().join(format!("empty-{name}-{vname}"));
            std::fs::create_dir_all(&h).map_err(|e| format!("{}: {e}", h.display()))?;
            h
        } else {
            return Err(format!("volume {v} is not translated by this trial"));
        };
        let propagation = match m["mountPropagation"].as_str() {
            None | Some("None") => cri::MountPropagation::PropagationPrivate,
            Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
            Some(o) => return Err(format!("mountPropagation {o}")),
        };
        mounts.push(cri::Mount {
            container_path: m["mountPath"].as_str().unwrap_or_default().to_string(),
            host_path: host.display().to_string(),
            readonly: m["readOnly"] == true,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    for m in &mounts {
        let outer = mounts.iter().find(|o| {
            o.host_path == "/"
                && o.container_path != m.container_path
                && Path::new(&m.container_path).starts_with(&o.container_path)
        });
        if let Some(o) = outer {
            let rel = Path::new(&m.container_path).strip_prefix(&o.container_path).map_err(|e| e.to_string())?;
            node.mountpoint(&Path::new("/").join(rel))?;
        }
    }
    let sc = &c["securityContext"];
    let unconfined = || cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Unconfined as i32,
        ..Default::default()
    };
    let security = cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            // As rendered: this machine's bounding set lacks CAP_SYS_RESOURCE, as some nodes'
            // do, and the DaemonSet must start there (kernels before 5.11 add it with an overlay).
            add_capabilities: strings(&sc["capabilities"]["add"]),
            drop_capabilities: strings(&sc["capabilities"]["drop"]),
            ..Default::default()
        }),
        privileged: sc["privileged"] == true,
        namespace_options: Some(ns.clone()),
        run_as_user: sc["runAsUser"].as_i64().map(|value| cri::Int64Value { value }),
        readonly_rootfs: sc["readOnlyRootFilesystem"] == true,
        no_new_privs: sc["allowPrivilegeEscalation"] == false,
        seccomp: (sc["seccompProfile"]["type"] == "Unconfined").then(unconfined),
        apparmor: (sc["appArmorProfile"]["type"] == "Unconfined").then(unconfined),
        ..Default::default()
    };
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: c["image"].as_str().unwrap_or_default().into(), ..Default::default() }),
        command: strings(&c["command"]),
        args: strings(&c["args"]),
        envs,
        mounts,
        log_path: format!("{name}.log"),
        labels: HashMap::from([("io.kubernetes.container.name".to_string(), name.to_string())]),
        linux: Some(cri::LinuxContainerConfig { security_context: Some(security), ..Default::default() }),
        ..Default::default()
    })
}

/// The messages of a CRI container log (`<time> <stream> <tag> <message>` lines).
fn cri_log(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect()
}

/// The issue-16 acceptance test of the deploy kit: the image `packaging/image/build.sh` builds
/// from this checkout's binaries, imported into containerd, runs the pod of the rendered
/// DaemonSet the way the kubelet would run it (host PID and network namespaces, its security
/// contexts, host mounts, env, the ConfigMap's files; the init container to completion first),
/// registers over the NRI socket it finds at the DaemonSet's path, and protects another pod:
/// drift in an enforce pod is stopped and reported as an event on the agent's stdout, an image
/// binary runs. Stopping the agent's pod leaves enforcement pinned (the DaemonSet's promise),
/// which the trial then unloads.
///
/// Test-only changes to the ConfigMap's config.toml: a private pin dir and metrics port (the
/// machine may run its own agent). Not exercised: the Service, probes' periods, resources.
fn daemonset_image_protects_another_pod() -> R {
    let hook = hook_binary()?;
    check_fresh(&hook)?;
    let objs = rendered_deploy_kit()?;
    let kind = |k: &str| objs.iter().find(|o| o["kind"] == k).ok_or(format!("the deploy kit has no {k}"));
    let ds = kind("DaemonSet")?;
    let cm = kind("ConfigMap")?;
    let spec = &ds["spec"]["template"]["spec"];
    let known = [
        "serviceAccountName",
        "automountServiceAccountToken",
        "hostPID",
        "hostNetwork",
        "dnsPolicy",
        "priorityClassName",
        "tolerations",
        "terminationGracePeriodSeconds",
        "initContainers",
        "containers",
        "volumes",
    ];
    if let Some(k) = spec.as_object().into_iter().flatten().map(|(k, _)| k).find(|k| !known.contains(&k.as_str())) {
        return Err(format!("pod spec field {k} is not translated by this trial").into());
    }
    let [agent_spec] = spec["containers"].as_array().map(Vec::as_slice).unwrap_or_default() else {
        return Err(format!("expected one container in the DaemonSet's pod: {}", spec["containers"]).into());
    };
    let image = agent_spec["image"].as_str().ok_or("the agent container has no image")?.to_string();

    // Declared first, dropped last: after containerd has removed the pods.
    let mut node = DaemonSetNode::new()?;
    let ctd = Containerd::start_line(LINE.with(Cell::get), None)?;
    eprintln!("containerd {} in {}", ctd.bins.version, ctd.dir.display());
    node.attach(&ctd)?;
    let fail = |e: String| -> Failed { format!("{e}\n{}", ctd.log_tail()).into() };

    // 1. The image, from the binaries this test was built with.
    let bins = node.dir.path().join("bins");
    std::fs::create_dir_all(&bins).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_driftguard"), bins.join("driftguard")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&hook, bins.join("driftguard-oci-hook")).map_err(|e| e.to_string())?;
    let tar = node.dir.path().join("image.oci.tar");
    let out = std::process::Command::new(containerd::repo_root().join("packaging/image/build.sh"))
        .arg("--bin-dir")
        .arg(&bins)
        .arg("--out")
        .arg(&tar)
        .args(["--name", &image])
        .output()
        .map_err(|e| format!("packaging/image/build.sh: {e}"))?;
    if !out.status.success() {
        return Err(
            format!("packaging/image/build.sh: {}: {}", out.status, String::from_utf8_lossy(&out.stderr)).into()
        );
    }
    ctd.import_image(&tar).map_err(fail)?;

    // 2. The ConfigMap's files.
    let port = free_port()?;
    // Named after the ConfigMap: [`cri_container`] checks the volumes name it.
    let cm_dir = node.dir.path().join(cm["metadata"]["name"].as_str().ok_or("ConfigMap without a name")?);
    std::fs::create_dir_all(&cm_dir).map_err(|e| e.to_string())?;
    for (file, body) in cm["data"].as_object().ok_or("ConfigMap without data")? {
        let mut body = body.as_str().unwrap_or_default().to_string();
        if file == "config.toml" {
            for (from, to) in [
                (
                    "pin_dir = \"/sys/fs/bpf/driftguard\"".to_string(),
                    format!("pin_dir = \"{}\"", node.pin_dir.display()),
                ),
                ("address = \"0.0.0.0:9963\"".to_string(), format!("address = \"127.0.0.1:{port}\"")),
            ] {
                if body.matches(&from).count() != 1 {
                    return Err(format!("the ConfigMap's config.toml has no single `{from}`:\n{body}").into());
                }
                body = body.replace(&from, &to);
            }
        }
        std::fs::write(cm_dir.join(file), body).map_err(|e| e.to_string())?;
    }

    // 3. The DaemonSet's pod: sandbox, init container to completion, agent.
    let node_ns = |on: bool| (if on { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod }) as i32;
    let ns = cri::NamespaceOption {
        network: node_ns(spec["hostNetwork"] == true),
        pid: node_ns(spec["hostPID"] == true),
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let logs = node.dir.path().join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let meta = &ds["metadata"];
    let pod = ctd
        .run_pod_config(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: format!("{}-node", meta["name"].as_str().unwrap_or_default()),
                uid: "ds-uid".into(),
                namespace: meta["namespace"].as_str().unwrap_or_default().into(),
                attempt: 0,
            }),
            log_directory: logs.display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(ns.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .map_err(fail)?;
    for init in spec["initContainers"].as_array().into_iter().flatten() {
        let name = init["name"].as_str().unwrap_or_default();
        let id = ctd.run_container_config(&pod, cri_container(init, spec, &node, &cm_dir, &ns)?).map_err(fail)?;
        let st = containerd::wait_for(Duration::from_secs(60), &format!("init container {name} to exit"), || {
            ctd.container_status(&id).ok().filter(|s| s.state == cri::ContainerState::ContainerExited as i32)
        })
        .map_err(fail)?;
        let out = cri_log(&logs.join(format!("{name}.log"))).join("\n");
        println!("init container {name} (exit {}):\n{out}", st.exit_code);
        if st.exit_code != 0 || out.contains("ERROR") {
            return Err(format!("init container {name} failed (exit {}):\n{out}", st.exit_code).into());
        }
    }
    let installed = node.host_path("/opt/driftguard").join("bin/driftguard-oci-hook");
    if !installed.is_file() {
        return Err(format!("node-setup did not install {}", installed.display()).into());
    }
    let agent_log = logs.join(format!("{}.log", agent_spec["name"].as_str().unwrap_or_default()));
    let agent_cfg = cri_container(agent_spec, spec, &node, &cm_dir, &ns)?;
    ctd.run_container_config(&pod, agent_cfg).map_err(fail)?;
    let agent_diag = || format!("--- agent log ---\n{}", containerd::tail(&cri_log(&agent_log).join("\n"), 40));
    // Barrier: ready (the readiness probe's /readyz: registered with containerd over NRI) and
    // synchronized with the runtime (its log, which reaches the CRI log file a moment later).
    containerd::wait_for(Duration::from_secs(60), "the agent's /readyz to answer 200 and its sync log line", || {
        (http_status(port, "/readyz") == Some(200)
            && cri_log(&agent_log).iter().any(|l| l.contains("synchronized with the runtime")))
        .then_some(())
    })
    .map_err(|e| fail(format!("{e}\n{}", agent_diag())))?;

    // 4. Another pod, opted in: drift stopped and reported, image binaries run.
    let check = || -> T {
        let (victim, id) = {
            let p = ctd.run_pod("victim", &[ENFORCE])?;
            let id = ctd.run_container(&p, "app", &[])?;
            (p, id)
        };
        expect_ok(&ctd.sh(&id, "/bin/hello.sh")?, HELLO, "an image binary in a pod the DaemonSet's agent protects")?;
        let e = ctd.sh(&id, DRIFT_RUNS)?;
        stopped(enforcer::pinned_path(&node.pin_dir), &e, "drift in a pod the DaemonSet's agent protects")?;
        let ev = containerd::wait_for(Duration::from_secs(10), "the drift event on the agent's stdout", || {
            cri_log(&agent_log)
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|ev| ev["path"] == "/tmp/busybox-x" && ev["pod"] == "victim")
        })?;
        if ev["mode"] != "enforce" || ev["container"] != "app" || ev["namespace"] != victim.namespace.as_str() {
            return Err(format!("unexpected event: {ev}"));
        }
        println!("event: {ev}");
        ctd.remove_pod(&victim.id)?;
        // The agent's pod goes; its enforcement stays pinned for the next one.
        ctd.remove_pod(&pod.id)?;
        if enforcer::pinned_path(&node.pin_dir).is_none() {
            return Err(format!(
                "enforcement is not pinned in {} after the agent's pod stopped",
                node.pin_dir.display()
            ));
        }
        Ok(())
    };
    check().map_err(|e| fail(format!("{e}\n{}", agent_diag())))?;
    // Unload before the scratch node goes (DaemonSetNode's drop does it again on failure).
    enforcer::unload(&node.pin_dir).map_err(|e| format!("unloading {}: {e}", node.pin_dir.display()))?;
    let _ = std::fs::remove_dir_all(&node.pin_dir);
    if node.pin_dir.exists() {
        return Err(format!("{} still exists after unload", node.pin_dir.display()).into());
    }
    Ok(())
}
