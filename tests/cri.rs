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
    ("cri_event_names_the_workload", cri_event_names_the_workload),
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
    (
        "rules_namespace_rule_enforces_unannotated_pod_exclusions_hold",
        rules_namespace_rule_enforces_unannotated_pod_exclusions_hold,
    ),
    ("rules_label_rule_hook_takes_strictest_agent_corrects", rules_label_rule_hook_takes_strictest_agent_corrects),
    (
        "rules_forbid_weakening_refuses_mode_off_with_event_and_metric",
        rules_forbid_weakening_refuses_mode_off_with_event_and_metric,
    ),
    (
        "rules_changed_while_running_never_weaken_running_containers",
        rules_changed_while_running_never_weaken_running_containers,
    ),
    ("rules_namespace_annotation_cannot_be_forged", rules_namespace_annotation_cannot_be_forged),
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
        // The agent reports the refusals the hook leaves in its state directory.
        let text = std::fs::read_to_string(&agent.config).map_err(|e| e.to_string())?;
        let hook_state = format!("\n[oci_hook]\nstate_dir = {:?}\n", ctd.hook_state.display().to_string());
        std::fs::write(&agent.config, text + &hook_state).map_err(|e| e.to_string())?;
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
// Trials, one module per scenario (modules of this test binary, in tests/cri/).

#[path = "cri/daemonset.rs"]
mod daemonset;
#[path = "cri/fail_closed.rs"]
mod fail_closed;
#[path = "cri/mounts.rs"]
mod mounts;
#[path = "cri/operator.rs"]
mod operator;
#[path = "cri/pods.rs"]
mod pods;
#[path = "cri/rules.rs"]
mod rules;
use daemonset::*;
use fail_closed::*;
use mounts::*;
use operator::*;
use pods::*;
use rules::*;
