//! End-to-end tests of the agent binary: a runtime-side NRI peer (nri_plugin::testing, the
//! stand-in for containerd, which does not run here) drives the real `driftguard run` process
//! while real runc containers with overlay rootfs and real cgroups run under the real BPF
//! programs of this kernel.
//!
//! The NRI peer is the only stand-in: containerd is not installed on these machines; the peer
//! speaks the same wire protocol (mux + ttrpc + NRI protobuf) and sends the same messages, with
//! `linux.cgroups_path` pointing at the cgroup runc really created.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use driftguard::check::find_in_path;
use driftguard::enforcer::{EnforcementPath, Owner, TEST_OVL_LAYOUT_ENV};
use driftguard::policy::{Mode, Policy};
use driftguard::provenance::Provenance;
use libtest_mimic::{Arguments, Failed};

#[path = "support/agent_process.rs"]
mod agent_process;
#[path = "support/rootfs.rs"]
mod rootfs;
#[path = "support/runc_nri.rs"]
mod runc_nri;
#[path = "support/vm.rs"]
mod vm;

use agent_process::AgentProcess;
use nri_plugin::testing::{Delivery, LifecycleEvent, PeerConnection, RuntimePeer};
use runc_nri::{assert_stopped, cgroup2_root, connect, pod, rt, start_container, CgroupDirs, KillOnDrop, RuncCtr};

type R = Result<(), Failed>;

/// A named trial.
type NamedTrial = (&'static str, fn() -> R);

/// Every trial (the VM re-run runs them all and checks the count).
const TRIALS: &[NamedTrial] = &[
    ("agent_enforces_annotated_pods_in_both_delivery_styles", agent_enforces_annotated_pods),
    ("agent_refuses_bad_annotations", agent_refuses_bad_annotations),
    ("agent_restart_keeps_enforcing_and_resynchronizes", agent_restart_keeps_enforcing_and_resynchronizes),
    ("agent_reports_non_overlay_rootfs", agent_reports_non_overlay_rootfs),
    ("agent_exempts_only_declared_volumes", agent_exempts_only_declared_volumes),
    ("agent_fails_closed_on_a_wrong_overlay_layout", agent_fails_closed_on_a_wrong_overlay_layout),
];

fn main() {
    let args = Arguments::from_args();
    let gate = vm::Gate::from_env();
    let reason = requirements();
    let mut trials = Vec::new();
    for (name, f) in TRIALS {
        trials.push(gate.trial(name, &reason, *f));
    }
    // Host only (their names do not match the VM re-run's `agent_` filter): the process-level
    // behaviour does not depend on the kernel.
    for (name, f) in [
        ("exits_nonzero_when_the_metrics_port_is_taken", exits_nonzero_when_the_metrics_port_is_taken as fn() -> R),
        ("health_endpoints_and_sd_notify_follow_nri_registration", health_endpoints_and_sd_notify_follow_nri),
        ("reregisters_as_soon_as_the_nri_socket_reappears", reregisters_as_soon_as_the_nri_socket_reappears),
        (
            "start_without_a_pid_uses_the_one_process_of_the_cgroup",
            start_without_a_pid_uses_the_one_process_of_the_cgroup,
        ),
        (
            "upgrade_keeps_running_containers_without_the_memory_rule",
            upgrade_keeps_running_containers_without_the_memory_rule,
        ),
        ("events_cli_follows_filters_and_reads_the_file", events_cli_follows_filters_and_reads_the_file),
    ] {
        trials.push(gate.trial(name, &reason, f));
    }
    let unprivileged =
        reason.clone().or_else(|| find_in_path("setpriv").is_none().then(|| "setpriv not installed".into()));
    for (name, f) in [
        ("pins_resist_an_unprivileged_user", pins_resist_an_unprivileged_user as fn() -> R),
        ("refuses_a_pin_dir_owned_by_nobody", refuses_a_pin_dir_owned_by_nobody),
    ] {
        trials.push(gate.trial(name, &unprivileged, f));
    }
    if !vm::in_vm() {
        trials.extend(gate.vm_trials("vm_agent", agent_suite_in_vm));
    } else {
        // The guest's loopback is down by default; the metrics endpoint needs it.
        let _ = Command::new("/bin/busybox").args(["ip", "link", "set", "lo", "up"]).status();
    }
    libtest_mimic::run(&args, trials).exit();
}

/// The same agent trials inside the Debian 5.10 / 6.1 / 6.12 VMs, where BPF LSM denies with EPERM.
fn agent_suite_in_vm(k: &vm::Kernel) -> R {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let runc = find_in_path("runc").ok_or("runc not installed")?;
    let agent_bin = PathBuf::from(env!("CARGO_BIN_EXE_driftguard"));
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let stripped = vm::stripped(&agent_bin, scratch.path())?;
    let req = vm::VmRequest {
        exe,
        args: vec!["agent_".into(), "--test-threads=1".into(), "--color=never".into()],
        env: vm::suite_env(),
        files: vec![(runc.clone(), runc), (stripped, agent_bin)],
        timeout: Duration::from_secs(600),
        memory_mb: 1536,
    };
    let res = vm::run_suite(k, &req, "agent trials")?;
    let want = format!("test result: ok. {} passed;", TRIALS.len());
    if !res.output.lines().any(|l| l.starts_with(&want) && l.contains(" 0 ignored;")) {
        return Err(format!("VM summary is not `ok. {} passed` with 0 ignored", TRIALS.len()).into());
    }
    res.check_limits(&k.name)?;
    Ok(())
}

fn requirements() -> Option<String> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root".into());
    }
    if find_in_path("runc").is_none() {
        return Some("runc not installed (apt-get install runc)".into());
    }
    if let Some(why) = rootfs::busybox_missing() {
        return Some(why);
    }
    None
}

// ---------------------------------------------------------------------------
// Trials

fn agent_enforces_annotated_pods() -> R {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = rt();
    let _guard = rt.enter();
    let (agent, _peer, conn) = registered_agent(&rt)?;
    let path = agent.path();
    if std::env::var("DG_EXPECT_PATH").as_deref() == Ok("lsm") && path != Some(EnforcementPath::Lsm) {
        return Err(format!("expected the BPF LSM path, agent pinned {path:?}\n{}", agent.log()).into());
    }
    // The agent states at start what this kernel cannot guarantee (docs/bpf.md, "Kernels").
    let log = agent.log();
    let limits: Vec<&str> = log.lines().filter(|l| l.contains("kernel limit")).collect();
    let want: &[&str] = match (path, vm::guest_kernel().as_deref()) {
        (Some(EnforcementPath::TracepointKill), _) => &["PROT_EXEC mappings are not checked", "SIGKILL"],
        (Some(EnforcementPath::Lsm), Some("5.10")) => {
            &["bpf_d_path is refused", "no BTF has struct ovl_inode (module BTF needs 5.11 and overlay loaded first): the pointer after struct inode, the layout of kernels 4.19 to 6.18; proved at start"]
        }
        _ => &[],
    };
    if limits.len() != want.len() || !want.iter().all(|w| limits.iter().any(|l| l.contains(w))) {
        return Err(format!("kernel limits logged at start {limits:?}, expected lines with {want:?}").into());
    }

    // `driftguard events` follows the running agent's events socket.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .args(["events", "--config"])
        .arg(&agent.config)
        .env("DRIFTGUARD_STATE_DIR", agent.state_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("driftguard events: {e}"))?;
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    let follower_out = follower.stdout.take().ok_or("events stdout")?;
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(follower_out).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let _follower = KillOnDrop(follower);

    // Enforced pod, dedicated RPCs (NRI v0.12+).
    let enforced = RuncCtr::create(dir.path(), "enf")?;
    let p1 = pod("web", &[("driftguard.dev/mode", "enforce")]);
    let c1 = enforced.nri(&p1, "app");
    rt.block_on(start_container(&conn, Delivery::Dedicated, &p1, &c1))?;
    enforced.start()?;
    let (code, out) = enforced.exec(&["/bin/busybox", "true"])?;
    if code != 0 {
        return Err(format!("image binary via runc exec failed: {code} {out}\n{}", agent.log()).into());
    }
    enforced.drop_binary("/tmp/dropped")?;
    let (code, out) = enforced.exec(&["/tmp/dropped", "true"])?;
    assert_stopped(path, code, &out, "dropped binary in the enforced pod")?;
    // runc's /dev tmpfs is not image: a binary copied there is stopped too.
    let (code, out) = enforced.exec(&["/bin/sh", "-c", "cp /bin/busybox /dev/x && /dev/x true"])?;
    assert_stopped(path, code, &out, "binary copied into runc's /dev tmpfs")?;
    let ev = agent.wait_event("for /dev/x", |e| e["path"] == "/dev/x" && e["rule"] == "non_image")?;
    if ev["file"] != "other_fs" {
        return Err(format!("event for /dev/x: {ev}").into());
    }
    let ev = agent.wait_event("for /tmp/dropped", |e| e["event"] == "verdict" && e["path"] == "/tmp/dropped")?;
    for (k, want) in [
        ("namespace", "shop"),
        ("pod", "web"),
        ("container", "app"),
        ("image", "busybox:test"),
        ("rule", "drift"),
        ("node", "test-node"),
        ("mode", "enforce"),
    ] {
        if ev[k] != want {
            return Err(format!("event field {k} = {}, want {want}: {ev}", ev[k]).into());
        }
    }
    if ev["container_id"] != enforced.id.as_str() {
        return Err(format!("container_id wrong: {ev}").into());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match line_rx.recv_timeout(left) {
            Ok(line) if line.contains("\"/tmp/dropped\"") && line.contains("\"pod\":\"web\"") => break,
            Ok(_) => continue,
            Err(_) => return Err("`driftguard events` did not print the verdict".into()),
        }
    }

    events_name_parent_and_args(&agent, &enforced, path)?;

    // Monitor pod, StateChange delivery (runtimes up to NRI v0.11: StartContainer arrives as StateChange).
    let monitored = RuncCtr::create(dir.path(), "mon")?;
    let p2 = pod("batch", &[("driftguard.dev/mode", "monitor")]);
    let c2 = monitored.nri(&p2, "job");
    rt.block_on(start_container(&conn, Delivery::StateChange, &p2, &c2))?;
    monitored.start()?;
    monitored.drop_binary("/tmp/busybox-tool")?;
    // busybox runs as itself only under a name starting with "busybox".
    let (code, out) = monitored.exec(&["/tmp/busybox-tool", "true"])?;
    if code != 0 {
        return Err(format!("monitor mode must not block: exit {code} {out}").into());
    }
    agent.wait_event("alert for /tmp/busybox-tool", |e| {
        e["path"] == "/tmp/busybox-tool" && e["action"] == "alert" && e["pod"] == "batch"
    })?;

    // Unannotated pod: untouched.
    let plain = RuncCtr::create(dir.path(), "plain")?;
    let p3 = pod("plain", &[]);
    let c3 = plain.nri(&p3, "app");
    rt.block_on(start_container(&conn, Delivery::Dedicated, &p3, &c3))?;
    plain.start()?;
    plain.drop_binary("/tmp/busybox-dropped")?;
    let (code, out) = plain.exec(&["/tmp/busybox-dropped", "true"])?;
    if code != 0 {
        return Err(format!("unannotated pod must be untouched: exit {code} {out}").into());
    }

    // Pinned state: two policies, owned by the agent, right modes.
    let store = agent.store()?;
    let list = store.list().map_err(|e| e.to_string())?;
    let modes: Vec<(Mode, Owner)> = list.iter().map(|p| (p.policy.mode, p.owner)).collect();
    if list.len() != 2
        || !modes.contains(&(Mode::Enforce, Owner::Agent))
        || !modes.contains(&(Mode::Monitor, Owner::Agent))
    {
        return Err(format!("pinned policies: {modes:?}").into());
    }

    // `driftguard status --json` names what is under policy while the agent runs. The names come
    // from the registry file, which the agent writes at most every 100 ms after a change: wait
    // for it (the CI run of 006d769 read it before the monitor pod's names were written).
    let status_json = || -> Result<serde_json::Value, Failed> {
        let out = Command::new(env!("CARGO_BIN_EXE_driftguard"))
            .args(["status", "--json", "--config"])
            .arg(&agent.config)
            .env("DRIFTGUARD_STATE_DIR", agent.state_dir())
            .output()
            .map_err(|e| format!("driftguard status: {e}"))?;
        Ok(serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("status --json: {e}: {}", String::from_utf8_lossy(&out.stderr)))?)
    };
    let named = |st: &serde_json::Value| {
        let rows = st["containers"].as_array().cloned().unwrap_or_default();
        rows.iter().any(|r| r["pod"] == "web" && r["container"] == "app" && r["mode"] == "enforce")
            && rows.iter().any(|r| r["pod"] == "batch" && r["mode"] == "monitor")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut st = status_json()?;
    while !named(&st) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        st = status_json()?;
    }
    if !named(&st) || st["enforcement_path"].is_null() {
        return Err(format!("status --json: {st}").into());
    }
    // The agent recorded the node policy it loaded; the config file changed after its start
    // (a rule added) is reported as not yet applied, and not after it is put back.
    if st["node_policy_changed"] != false || st["agent"]["node_policy"]["default_mode"].is_null() {
        return Err(format!("status --json before the config change: {st}").into());
    }
    let original = fs::read_to_string(&agent.config).map_err(|e| e.to_string())?;
    let status_of = |what: &str| -> Result<(serde_json::Value, String), Failed> {
        let run = |json: bool| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_driftguard"));
            c.arg("status");
            if json {
                c.arg("--json");
            }
            c.arg("--config").arg(&agent.config).env("DRIFTGUARD_STATE_DIR", agent.state_dir()).output()
        };
        let j = run(true).map_err(|e| format!("driftguard status --json ({what}): {e}"))?;
        let t = run(false).map_err(|e| format!("driftguard status ({what}): {e}"))?;
        let v = serde_json::from_slice(&j.stdout).map_err(|e| format!("status --json ({what}): {e}"))?;
        Ok((v, String::from_utf8_lossy(&t.stdout).into_owned()))
    };
    fs::write(
        &agent.config,
        format!("{original}\n[[rules]]\nname = \"later\"\nnamespaces = [\"later\"]\nmode = \"enforce\"\n"),
    )
    .map_err(|e| e.to_string())?;
    let (changed, text) = status_of("with a rule added")?;
    fs::write(&agent.config, &original).map_err(|e| e.to_string())?;
    if changed["node_policy_changed"] != true
        || !text.contains("NODE POLICY CHANGED")
        || !text.contains("rule later: enforce")
    {
        return Err(format!("status after a rule was added to the config file:\n{changed}\n{text}").into());
    }
    let (back, text) = status_of("with the config put back")?;
    if back["node_policy_changed"] != false || text.contains("NODE POLICY CHANGED") {
        return Err(format!("status after the config was put back:\n{back}\n{text}").into());
    }

    // Metrics.
    // driftguard_nri_connected is set when the runner sees the runtime's Configure, asynchronously
    // to the replies: a barrier, not one read.
    agent.wait_metrics(&[
        "driftguard_verdicts_total{action=",
        "driftguard_containers_under_policy{mode=\"enforce\"} 1",
        "driftguard_nri_connected 1",
        "driftguard_nri_handler_seconds_count{event=\"start_container\"}",
    ])?;

    // Stop + remove: the policy goes.
    rt.block_on(async {
        conn.send(Delivery::Dedicated, LifecycleEvent::StopContainer(p1.clone(), c1.clone())).await?;
        conn.send(Delivery::Dedicated, LifecycleEvent::RemoveContainer(p1.clone(), c1.clone())).await
    })
    .map_err(|e| format!("Stop/RemoveContainer: {e}"))?;
    let left = store.list().map_err(|e| e.to_string())?;
    if left.len() != 1 || left[0].policy.mode != Mode::Monitor {
        return Err(format!("after StopContainer/RemoveContainer: {left:?}").into());
    }
    Ok(())
}

/// The agent started against a test runtime on its own socket, connected and synchronized with
/// nothing. Call with `rt` entered (the peer's listener lives on it).
fn registered_agent(rt: &tokio::runtime::Runtime) -> Result<(AgentProcess, RuntimePeer, PeerConnection), Failed> {
    let mut agent = AgentProcess::with_own_socket("agent")?;
    let mut peer = RuntimePeer::bind(&agent.socket).map_err(|e| e.to_string())?;
    // The VMs run under TCG emulation: everything is ~10x slower there.
    peer.set_timeout(Duration::from_secs(60));
    agent.start()?;
    let conn = rt.block_on(connect(&peer, vec![], vec![]))?;
    Ok((agent, peer, conn))
}

/// `parent` and `args` of verdicts against a known process tree: a shell in the container runs a
/// dropped binary twice, the second time with an argument longer than the event holds, and
/// exits. The parent's executable is walked by the kernel at the check: the shell may be gone
/// before the agent writes the event, and nothing is read from `/proc`.
fn events_name_parent_and_args(agent: &AgentProcess, ctr: &RuncCtr, path: Option<EnforcementPath>) -> R {
    let long = "a".repeat(300);
    // `; true`: a shell execs its last command in place of itself; a builtin keeps it the parent.
    let script = format!("/tmp/dropped hello-args 'two words'; /tmp/dropped {long}; true");
    let st = Command::new("runc")
        .args(["exec", "-d", &ctr.id, "/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("runc exec -d: {e}"))?;
    if !st.success() {
        return Err(format!("runc exec -d: {st}").into());
    }
    let first = agent.wait_event("for /tmp/dropped hello-args", |e| {
        e["path"] == "/tmp/dropped" && e["parent"]["comm"] == "sh" && e["pid"] != e["ppid"] && {
            // LSM on 5.10 has no bpf_task_pt_regs: no args there (docs/events.md).
            e.get("args").is_none() || e["args"][1] == "hello-args"
        }
    })?;
    let second = agent.wait_event("for /tmp/dropped with a long argument", |e| {
        e["path"] == "/tmp/dropped" && e["parent"] == first["parent"] && e["pid"] != first["pid"]
    })?;
    let lsm_510 = path == Some(EnforcementPath::Lsm) && vm::guest_kernel().as_deref() == Some("5.10");
    let parent = &first["parent"];
    if parent["pid"] != first["ppid"] || parent["exe"] != "/bin/busybox" || parent.get("exe_truncated").is_some() {
        return Err(format!("parent of the shell's child: {first}").into());
    }
    // The fallback judges after the exec: the task already has the new name.
    let comm = if path == Some(EnforcementPath::Lsm) { "sh" } else { "dropped" };
    if first["comm"] != comm {
        return Err(format!("comm {} on {path:?}, want {comm}: {first}", first["comm"]).into());
    }
    if lsm_510 {
        if first.get("args").is_some() || second.get("args").is_some() || second.get("args_truncated").is_some() {
            return Err(format!("args on 5.10 (no bpf_task_pt_regs): {first}\n{second}").into());
        }
        return Ok(());
    }
    if first["args"] != serde_json::json!(["/tmp/dropped", "hello-args", "two words"])
        || first.get("args_truncated").is_some()
    {
        return Err(format!("args of the first exec: {first}").into());
    }
    let cut = second["args"][1].as_str().unwrap_or("");
    if second["args"][0] != "/tmp/dropped"
        || second["args_truncated"] != true
        || cut.is_empty()
        || cut.len() >= long.len()
        || !long.starts_with(cut)
    {
        return Err(format!("args of the exec with a 300-byte argument: {second}").into());
    }
    Ok(())
}

fn agent_refuses_bad_annotations() -> R {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = rt();
    let _guard = rt.enter();
    let (agent, _peer, conn) = registered_agent(&rt)?;
    let ctr = RuncCtr::create(dir.path(), "bad")?;
    for (key, value, expect) in [
        ("driftguard.dev/mode", "enforcing", "invalid mode"),
        ("driftguard.dev/mdoe", "enforce", "driftguard.dev/mdoe"),
        ("driftguard.dev/deny", "bin/sh", "not absolute"),
    ] {
        let p = pod("bad", &[("driftguard.dev/mode", "enforce"), (key, value)]);
        let c = ctr.nri(&p, "app");
        for d in [Delivery::Dedicated, Delivery::StateChange] {
            let ev = if d == Delivery::Dedicated {
                LifecycleEvent::CreateContainer(p.clone(), c.clone())
            } else {
                LifecycleEvent::StartContainer(p.clone(), c.clone())
            };
            match rt.block_on(conn.send(d, ev)) {
                Err(e) => {
                    let msg = e.to_string();
                    if !msg.contains(key) || !msg.contains(expect) {
                        return Err(format!("refusal for {key}={value} does not say why: {msg}").into());
                    }
                }
                Ok(r) => return Err(format!("{key}={value} was accepted ({d:?}): {r:?}").into()),
            }
        }
    }
    let store = agent.store()?;
    if !store.list().map_err(|e| e.to_string())?.is_empty() {
        return Err("a refused container got a policy".into());
    }
    // Every refusal is an `admission` event naming the key, and counted by reason.
    for key in ["driftguard.dev/mode", "driftguard.dev/mdoe", "driftguard.dev/deny"] {
        let ev =
            agent.wait_event(&format!("admission for {key}"), |ev| ev["event"] == "admission" && ev["key"] == key)?;
        if ev["action"] != "refused" || ev["reason"] != "annotation" || ev["pod"] != "bad" || ev["container"] != "app" {
            return Err(format!("admission event for {key}: {ev}").into());
        }
        if !ev["message"].as_str().is_some_and(|m| m.contains(key)) {
            return Err(format!("admission event for {key} without the error: {ev}").into());
        }
    }
    let n = agent.events().iter().filter(|ev| ev["event"] == "admission").count();
    if n != 6 {
        return Err(format!("want 6 admission events (3 annotations, 2 deliveries), got {n}").into());
    }
    agent.wait_metrics(&[
        "driftguard_containers_refused_total{reason=\"annotation\"} 6",
        "driftguard_containers_refused_total{reason=\"forbidden_weakening\"} 0",
    ])?;
    // The agent is still alive and serving.
    let p = pod("good", &[("driftguard.dev/mode", "enforce")]);
    rt.block_on(conn.send(Delivery::Dedicated, LifecycleEvent::StartContainer(p.clone(), ctr.nri(&p, "app"))))
        .map_err(|e| format!("valid container refused after bad ones: {e}"))?;
    Ok(())
}

fn agent_restart_keeps_enforcing_and_resynchronizes() -> R {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = rt();
    let _guard = rt.enter();
    let (mut agent, peer, conn) = registered_agent(&rt)?;
    let ctr = RuncCtr::create(dir.path(), "restart")?;
    let p = pod("api", &[("driftguard.dev/mode", "enforce")]);
    let c = ctr.nri(&p, "srv");
    rt.block_on(start_container(&conn, Delivery::Dedicated, &p, &c))?;
    ctr.start()?;
    ctr.drop_binary("/tmp/dropped")?;
    let path = agent.path();

    // kill -9 the agent: enforcement stays (pinned).
    agent.kill9();
    drop(conn);
    let (code, out) = ctr.exec(&["/tmp/dropped", "true"])?;
    assert_stopped(path, code, &out, "dropped binary while the agent is dead")?;

    // A stale entry from "before the restart" (a container that went away meanwhile).
    // Real (existing) cgroups, so the vanished-cgroup GC leaves them alone and only
    // reconciliation decides.
    let store = agent.store()?;
    let root = cgroup2_root()?;
    let stale_dir = root.join(format!("dg-agent-stale-{}", std::process::id()));
    let foreign_dir = root.join(format!("dg-agent-foreign-{}", std::process::id()));
    let _cleanup = CgroupDirs(vec![stale_dir.clone(), foreign_dir.clone()]);
    for d in [&stale_dir, &foreign_dir] {
        fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let id = |p: &Path| driftguard::cgroup::cgroup_id(p).map_err(|e| Failed::from(e.to_string()));
    let (stale, foreign) = (id(&stale_dir)?, id(&foreign_dir)?);
    store
        .set_owned(stale, 1, &Policy::with_mode(Mode::Enforce), &Provenance::unknown(), Owner::Agent)
        .map_err(|e| e.to_string())?;
    store
        .set_owned(foreign, 1, &Policy::with_mode(Mode::Enforce), &Provenance::unknown(), Owner::OciHook)
        .map_err(|e| e.to_string())?;

    // Restart: the new agent adopts the pins and resynchronizes with the runtime's view.
    agent.start()?;
    let mut c_now = c.clone();
    c_now.pid = ctr.pid();
    let _conn2 = rt.block_on(connect(&peer, vec![p.clone()], vec![c_now]))?;
    let ids = store.cgroup_ids();
    if ids.contains(&stale) {
        return Err("stale agent-owned entry survived Synchronize".into());
    }
    if !ids.contains(&foreign) {
        return Err("Synchronize removed an entry the OCI hook owns".into());
    }
    let want = driftguard::cgroup::cgroup_id(&cgroup2_root()?.join(ctr.cgroups_path.trim_start_matches('/')))
        .map_err(|e| e.to_string())?;
    if !ids.contains(&want) {
        return Err(format!("running container's policy missing after resync: {ids:?}").into());
    }
    let _ = store.remove(foreign);
    let (code, out) = ctr.exec(&["/tmp/dropped", "true"])?;
    assert_stopped(path, code, &out, "dropped binary after the restart")?;
    agent.wait_event("enriched event after restart", |e| e["path"] == "/tmp/dropped" && e["pod"] == "api")?;
    if !agent.log().contains("synchronized with the runtime") {
        return Err(format!("no resync in the log:\n{}", agent.log()).into());
    }
    Ok(())
}

/// `driftguard.dev/exec-volumes`: the exempt volume's files run, runc's /dev tmpfs still does
/// not; a path that is not a mount of the container, or a runtime-made mount, is refused.
fn agent_exempts_only_declared_volumes() -> R {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = rt();
    let _guard = rt.enter();
    let (agent, _peer, conn) = registered_agent(&rt)?;
    let path = agent.path();
    let ctr = RuncCtr::create(dir.path(), "vols")?;
    // Not a mount in the container: refused at StartContainer, naming the path.
    let p = pod("tools", &[("driftguard.dev/mode", "enforce"), ("driftguard.dev/exec-volumes", "/bin")]);
    match rt.block_on(start_container(&conn, Delivery::Dedicated, &p, &ctr.nri(&p, "app"))) {
        Err(e) if format!("{e:?}").contains("/bin") && format!("{e:?}").contains("no mount") => {}
        other => return Err(format!("exempting a path that is not a mount must be refused: {other:?}").into()),
    }
    // A runtime-made mount: refused at CreateContainer, naming the annotation.
    let p = pod("tools", &[("driftguard.dev/mode", "enforce"), ("driftguard.dev/exec-volumes", "/dev")]);
    match rt.block_on(conn.send(Delivery::Dedicated, LifecycleEvent::CreateContainer(p.clone(), ctr.nri(&p, "app")))) {
        Err(e) if e.to_string().contains("driftguard.dev/exec-volumes") && e.to_string().contains("runtime") => {}
        other => return Err(format!("exempting /dev must be refused: {other:?}").into()),
    }
    let p = pod("tools", &[("driftguard.dev/mode", "enforce"), ("driftguard.dev/exec-volumes", "/data")]);
    rt.block_on(start_container(&conn, Delivery::Dedicated, &p, &ctr.nri(&p, "app")))?;
    ctr.start()?;
    let (code, out) = ctr.exec(&["/bin/sh", "-c", "cp /bin/busybox /data/busybox && /data/busybox true"])?;
    if code != 0 {
        return Err(format!("binary on the exempt volume: exit {code} {out}\n{}", agent.log()).into());
    }
    let (code, out) = ctr.exec(&["/bin/sh", "-c", "cp /bin/busybox /dev/x && /dev/x true"])?;
    assert_stopped(path, code, &out, "binary in /dev with /data exempt")?;
    let installed = agent.store()?.list().map_err(|e| e.to_string())?;
    if installed.len() != 1 || installed[0].exec_mount_ids.len() != 1 || installed[0].rootfs_dev == 0 {
        return Err(format!("pinned policy: {installed:?}").into());
    }
    Ok(())
}

/// The test knob puts the agent's layout read of overlay's upper dentry 8 bytes off, as a kernel
/// with another `struct ovl_inode` would: the start-time proof fails, the agent says so once as an
/// error (`kernel limit`), in its metrics and in `driftguard status`, and enforces fail closed: an
/// image binary of an enforced container is stopped as drift of unknown layer and counted.
fn agent_fails_closed_on_a_wrong_overlay_layout() -> R {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = rt();
    let _guard = rt.enter();
    let mut agent = AgentProcess::with_own_socket("ovl")?;
    agent.env.push((TEST_OVL_LAYOUT_ENV.to_string(), "layout+8".to_string()));
    let mut peer = RuntimePeer::bind(&agent.socket).map_err(|e| e.to_string())?;
    peer.set_timeout(Duration::from_secs(60));
    agent.start()?;
    let conn = rt.block_on(connect(&peer, vec![], vec![]))?;
    let path = agent.path();

    let log = agent.log();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("kernel limit") && l.contains("proof FAILED")).collect();
    if failed.len() != 1 || !failed[0].contains("ERROR") || !failed[0].contains("counts as drift") {
        return Err(format!("one error line must say the layout proof failed: {failed:?}\n{log}").into());
    }
    let metrics = agent.metrics()?;
    if !metrics.contains("driftguard_overlay_upper{proof=\"failed\",source=\"layout_forced\"} 1") {
        return Err(format!("metrics must show the failed proof:\n{metrics}").into());
    }
    let status = agent.status()?;
    let ovl = status["agent"]["overlay_upper"].as_str().unwrap_or_default();
    if !ovl.starts_with("layout_forced, proof failed: ") {
        return Err(format!("status must show the failed proof: {status}").into());
    }

    let ctr = RuncCtr::create(dir.path(), "ovl")?;
    let p = pod("ovl", &[("driftguard.dev/mode", "enforce")]);
    rt.block_on(start_container(&conn, Delivery::Dedicated, &p, &ctr.nri(&p, "app")))?;
    // The entrypoint is an image binary: it is stopped (EPERM, or killed right after exec on
    // the fallback), so the container never runs its code. `runc start` itself may report
    // success either way: it returns once runc's init was told to exec.
    let _ = ctr.start();
    let action = if path == Some(EnforcementPath::Lsm) { "deny" } else { "kill" };
    let e = agent.wait_event("upper_unknown drift", |e| {
        e["file"] == "upper_unknown" && e["rule"] == "drift" && e["action"] == action
    })?;
    if e["path_image"] != true {
        return Err(format!("the stopped file must be on the container's root overlay: {e}").into());
    }
    let (code, out) = ctr.exec(&["/bin/busybox", "true"])?;
    if code == 0 {
        return Err(format!("an image binary ran while the overlay layout is unproved: {out}").into());
    }
    let unknown = agent.status()?["stats"]["overlay_unknown"].as_u64().unwrap_or(0);
    if unknown == 0 {
        return Err("distrusted overlay reads must be counted".into());
    }
    Ok(())
}

/// containerd sends StartContainer with pid 0 when its own task-state call to the shim times out
/// (seen under load in benches/cri.rs). The container's cgroup then holds exactly one process,
/// runc's init waiting to start: the agent reads the container's mounts from it. With a second
/// process in the cgroup it cannot tell which one is the container's, and refuses.
fn start_without_a_pid_uses_the_one_process_of_the_cgroup() -> R {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = rt();
    let _guard = rt.enter();
    let (agent, _peer, conn) = registered_agent(&rt)?;
    let path = agent.path();
    let p = pod("nopid", &[("driftguard.dev/mode", "enforce")]);

    // A stranger in the container's cgroup: two processes, no guess.
    let crowded = RuncCtr::create(dir.path(), "crowded")?;
    let cgroup = cgroup2_root()?.join(crowded.cgroups_path.trim_start_matches('/'));
    let stranger = KillOnDrop(Command::new("sleep").arg("600").spawn().map_err(|e| format!("sleep: {e}"))?);
    fs::write(cgroup.join("cgroup.procs"), stranger.0.id().to_string())
        .map_err(|e| format!("moving a process into {}: {e}", cgroup.display()))?;
    let mut c = crowded.nri(&p, "app");
    c.pid = 0;
    match rt.block_on(start_container(&conn, Delivery::Dedicated, &p, &c)) {
        Err(e) if format!("{e:?}").contains("holds 2 processes") => {}
        other => return Err(format!("pid 0 with two processes in the cgroup must be refused: {other:?}").into()),
    }
    drop(stranger);
    drop(crowded);

    let ctr = RuncCtr::create(dir.path(), "nopid")?;
    let mut c = ctr.nri(&p, "app");
    c.pid = 0;
    rt.block_on(start_container(&conn, Delivery::Dedicated, &p, &c))?;
    if !agent.log().contains("runtime sent no pid") {
        return Err(format!("the agent did not say it used the cgroup's process:\n{}", agent.log()).into());
    }
    let installed = agent.store()?.list().map_err(|e| e.to_string())?;
    if installed.len() != 1 || installed[0].rootfs_dev == 0 {
        return Err(format!("pinned policy: {installed:?}").into());
    }
    ctr.start()?;
    let (code, out) = ctr.exec(&["/bin/busybox", "true"])?;
    if code != 0 {
        return Err(format!("image binary: exit {code} {out}\n{}", agent.log()).into());
    }
    ctr.drop_binary("/tmp/dropped")?;
    let (code, out) = ctr.exec(&["/tmp/dropped", "true"])?;
    assert_stopped(path, code, &out, "dropped binary in a container started with pid 0")
}

fn agent_reports_non_overlay_rootfs() -> R {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut agent = AgentProcess::with_own_socket("agent")?;
    // With the unit's capabilities (no CAP_SYS_PTRACE) the agent cannot look into the container's
    // /proc/<pid>/root and must tell the filesystem from mountinfo. (Host only: the VM re-run's
    // minimal guest runs the agent with full root.)
    agent.unit_caps = true;
    let rt = rt();
    let _guard = rt.enter();
    let mut peer = RuntimePeer::bind(&agent.socket).map_err(|e| e.to_string())?;
    peer.set_timeout(Duration::from_secs(60));
    agent.start()?;
    let conn = rt.block_on(connect(&peer, vec![], vec![]))?;
    let ctr = RuncCtr::create_with(dir.path(), "plainfs", false)?;
    // Enforce with the default rules: no file of a plain-directory root can be told to be
    // image, so the container is refused (failure-policy fail) with the reason.
    let p = pod("legacy", &[("driftguard.dev/mode", "enforce")]);
    let c = ctr.nri(&p, "app");
    match rt.block_on(start_container(&conn, Delivery::Dedicated, &p, &c)) {
        Err(e) if format!("{e:?}").contains("not overlayfs") && format!("{e:?}").contains("non-image") => {}
        other => return Err(format!("enforce on a non-overlay root must be refused with the reason: {other:?}").into()),
    }
    if !agent.store()?.list().map_err(|e| e.to_string())?.is_empty() {
        return Err("a refused container got a policy".into());
    }
    // With the non-image rule off for it, it runs under policy and the notice says why the
    // drift rule cannot apply.
    let p = pod("legacy", &[("driftguard.dev/mode", "enforce"), ("driftguard.dev/non-image", "false")]);
    let c = ctr.nri(&p, "app");
    rt.block_on(start_container(&conn, Delivery::Dedicated, &p, &c))?;
    let n = agent.wait_event("rootfs notice", |e| e["event"] == "notice" && e["pod"] == "legacy")?;
    if n["reason"] != "rootfs_not_overlay" || !n["message"].as_str().unwrap_or("").contains("not overlayfs") {
        return Err(format!("notice: {n}").into());
    }
    // Still under policy: the fileless rule and lists apply.
    if agent.store()?.list().map_err(|e| e.to_string())?.len() != 1 {
        return Err("non-overlay container should still get its policy".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Staying up, health, re-registration, pin ownership (host only)

/// Polls an HTTP endpoint of the agent until it answers (the agent binds it at start).
fn exits_nonzero_when_the_metrics_port_is_taken() -> R {
    let mut agent = AgentProcess::with_own_socket("agent")?;
    let _taken = std::net::TcpListener::bind(&agent.metrics_addr).map_err(|e| e.to_string())?;
    agent.start()?;
    let st = agent.wait_exit()?;
    if st.success() {
        return Err(format!("exited {st} with the metrics port taken\n{}", agent.log()).into());
    }
    let log = agent.log();
    if !log.contains(&format!("metrics endpoint {}", agent.metrics_addr)) || !log.contains("in use") {
        return Err(format!("exit {st}, but the error does not name the endpoint and the cause:\n{log}").into());
    }
    Ok(())
}

fn health_endpoints_and_sd_notify_follow_nri() -> R {
    use nri_plugin::api::Event;
    use nri_plugin::EventMask;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut agent = AgentProcess::with_own_socket("agent")?;
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).map_err(|e| e.to_string())?;
    notify.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    agent.env =
        vec![("NOTIFY_SOCKET".into(), notify_path.display().to_string()), ("WATCHDOG_USEC".into(), "400000".into())];
    let rt = rt();
    let _guard = rt.enter();
    // No runtime yet (boot): live, not ready.
    agent.start()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !(got.iter().any(|m: &String| m.contains("READY=1")) && got.iter().any(|m| m == "WATCHDOG=1")) {
        let n =
            notify.recv(&mut buf).map_err(|e| format!("no READY=1 and WATCHDOG=1 ({got:?}): {e}\n{}", agent.log()))?;
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // Barrier on the state asserted: the NRI line says "connecting" until the first attempt has
    // failed, which on a loaded machine is well after READY=1 and the first 200.
    agent.wait_http("/healthz", "200 with the reader polling and NRI waiting for its socket", |h| {
        h.starts_with("HTTP/1.1 200")
            && h.contains("ring buffer reader: polling")
            && h.contains("waiting for its socket")
    })?;
    // Not ready in every NRI state but "registered": one read is the assertion.
    let r = agent.http_get("/readyz")?;
    if !r.starts_with("HTTP/1.1 503") || !r.contains("not ready") {
        return Err(format!("/readyz without the runtime:\n{r}").into());
    }

    // The runtime arrives: registered, ready, subscribed to exactly the four events handled.
    let mut peer = RuntimePeer::bind(&agent.socket).map_err(|e| e.to_string())?;
    peer.set_timeout(Duration::from_secs(60));
    let conn = rt.block_on(connect(&peer, vec![], vec![]))?;
    let want = EventMask::of(&[
        Event::CREATE_CONTAINER,
        Event::START_CONTAINER,
        Event::STOP_CONTAINER,
        Event::REMOVE_CONTAINER,
    ]);
    if conn.events() != Some(want) {
        return Err(format!("subscription {:?}, want {want:?}", conn.events()).into());
    }
    agent.wait_http("/readyz", "200, registered with containerd", |r| {
        r.starts_with("HTTP/1.1 200") && r.contains("registered with containerd")
    })?;

    // The runtime goes away: not ready, still live (restarting the agent would not help).
    peer.close();
    conn.close();
    agent.wait_http("/readyz", "503", |r| r.starts_with("HTTP/1.1 503"))?;
    // Live in every state the agent passes through without a runtime: one read is the assertion.
    let h = agent.http_get("/healthz")?;
    if !h.starts_with("HTTP/1.1 200") {
        return Err(format!("/healthz after the runtime left:\n{h}").into());
    }
    Ok(())
}

fn reregisters_as_soon_as_the_nri_socket_reappears() -> R {
    let mut agent = AgentProcess::with_own_socket("agent")?;
    // The slow fallback retry is 10 minutes away: only the socket's appearance brings it back.
    agent.edit_config("reconnect_max_backoff_ms = 300", "reconnect_max_backoff_ms = 600000")?;
    let rt = rt();
    let _guard = rt.enter();
    let mut peer = RuntimePeer::bind(&agent.socket).map_err(|e| e.to_string())?;
    peer.set_timeout(Duration::from_secs(60));
    agent.start()?;
    let conn = rt.block_on(connect(&peer, vec![], vec![]))?;

    // containerd restarts: the socket goes away; barrier: the agent waits for it.
    peer.close();
    conn.close();
    agent.wait_log("waiting for the NRI socket to appear", 1)?;
    let t = Instant::now();
    let mut peer = RuntimePeer::bind(&agent.socket).map_err(|e| e.to_string())?;
    peer.set_timeout(Duration::from_secs(30));
    let _conn = rt
        .block_on(connect(&peer, vec![], vec![]))
        .map_err(|e| format!("not re-registered after the socket reappeared: {e:?}\n{}", agent.log()))?;
    println!(
        "re-registered {:.1} ms after the socket reappeared (fallback retry: 600 s)",
        t.elapsed().as_secs_f64() * 1e3
    );
    // One line per outage, not one per attempt.
    if agent.log().matches("NRI socket unavailable").count() > 2 {
        return Err(format!("the outage was logged more than once per reason:\n{}", agent.log()).into());
    }
    Ok(())
}

/// An agent from before the memory rules pinned a running container's policy (neither memory
/// bit, no process-access bit). The new agent, resynchronizing after the upgrade, keeps those
/// rules off for that container (a running JIT or debugger must not start failing) and says so; a container started afterwards gets
/// the rule (docs/annotations.md, "Upgrades").
fn upgrade_keeps_running_containers_without_the_memory_rule() -> R {
    use driftguard::policy::{ExecMemory, ProcessAccess};
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = rt();
    let _guard = rt.enter();
    let (mut agent, peer, conn) = registered_agent(&rt)?;
    let old = RuncCtr::create(dir.path(), "jvm")?;
    let p = pod("jvm", &[("driftguard.dev/mode", "enforce")]);
    let c = old.nri(&p, "app");
    rt.block_on(start_container(&conn, Delivery::Dedicated, &p, &c))?;
    old.start()?;
    let cg = old.cgroup_id()?;
    let store = agent.store()?;
    let mem = |cg: u64| -> Result<ExecMemory, Failed> {
        let p = store.get(cg).map_err(|e| e.to_string())?.ok_or_else(|| format!("no policy pinned for {cg}"))?;
        Ok(p.policy.rules.exec_memory)
    };
    if mem(cg)? != ExecMemory::On {
        return Err("a container started by this agent must get the memory rule".into());
    }
    let access = |cg: u64| -> Result<ProcessAccess, Failed> {
        let p = store.get(cg).map_err(|e| e.to_string())?.ok_or_else(|| format!("no policy pinned for {cg}"))?;
        Ok(p.policy.rules.process_access)
    };

    // The pins as the old agent left them: the same policy without either memory bit.
    agent.kill9();
    drop(conn);
    let pinned = store.get(cg).map_err(|e| e.to_string())?.ok_or("policy gone")?;
    let (rootfs_dev, mounts) = store.provenance(cg).map_err(|e| e.to_string())?.ok_or("no provenance")?;
    let mut before = pinned.policy.clone();
    before.rules.exec_memory = ExecMemory::Off;
    before.rules.process_access = ProcessAccess::Off;
    if !mounts.is_empty() {
        return Err(format!("the pod exempts no volume, yet mounts {mounts:?} are pinned").into());
    }
    let prov = Provenance { rootfs_dev, rootfs_type: "overlay".into(), exec_mounts: Vec::new() };
    store.set_owned(cg, pinned.level, &before, &prov, Owner::Agent).map_err(|e| e.to_string())?;

    // The upgraded agent resynchronizes: the running container keeps its rules.
    agent.start()?;
    let mut c_now = c.clone();
    c_now.pid = old.pid();
    // connect returns after the Synchronize reply: the resync is done.
    let conn2 = rt.block_on(connect(&peer, vec![p.clone()], vec![c_now]))?;
    if mem(cg)? != ExecMemory::Off {
        return Err(format!("resync changed the running container's memory rule: {:?}", mem(cg)?).into());
    }
    if access(cg)? != ProcessAccess::Off {
        return Err(format!("resync changed the running container's process-access rule: {:?}", access(cg)?).into());
    }
    if !agent.log().contains("container started before this agent's memory rules")
        || !agent.log().contains("container started before this agent's process-access rule")
    {
        return Err(format!("the agent did not say it kept the old rules:\n{}", agent.log()).into());
    }
    // A container started now gets the rule.
    let fresh = RuncCtr::create(dir.path(), "fresh")?;
    let p2 = pod("fresh", &[("driftguard.dev/mode", "enforce")]);
    rt.block_on(start_container(&conn2, Delivery::Dedicated, &p2, &fresh.nri(&p2, "app")))?;
    if mem(fresh.cgroup_id()?)? != ExecMemory::On || access(fresh.cgroup_id()?)? != ProcessAccess::On {
        return Err("a container started after the upgrade must get the memory and process-access rules".into());
    }
    Ok(())
}

fn as_nobody(args: &[&str]) -> Result<std::process::Output, Failed> {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "/bin/busybox"])
        .args(args)
        .output()
        .map_err(|e| format!("setpriv {args:?}: {e}").into())
}

fn pins_resist_an_unprivileged_user() -> R {
    use std::os::unix::fs::MetadataExt;
    let mut agent = AgentProcess::with_own_socket("agent")?;
    agent.start()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.path().is_none() {
        if Instant::now() > deadline {
            return Err(format!("nothing pinned under {}\n{}", agent.pin_dir.display(), agent.log()).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let meta = fs::metadata(&agent.pin_dir).map_err(|e| e.to_string())?;
    if meta.uid() != 0 || meta.mode() & 0o777 != 0o700 {
        return Err(format!("pin dir owner {} mode {:o}", meta.uid(), meta.mode() & 0o7777).into());
    }
    let listing = |d: &Path| -> Result<Vec<(String, u64)>, Failed> {
        let mut v: Vec<(String, u64)> = fs::read_dir(d)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), e.metadata().ok()?.ino())))
            .collect();
        v.sort();
        Ok(v)
    };
    let before = listing(&agent.pin_dir)?;
    if !before.iter().any(|(n, _)| n.starts_with("link_")) || !before.iter().any(|(n, _)| n == "dg_policies") {
        return Err(format!("unexpected pins: {before:?}").into());
    }
    // Something nobody may create next to the pin directory (bpffs's root is sticky and
    // world-writable unless mounted with a mode), to try renaming over the pins.
    let decoy = agent.pin_dir.with_file_name(format!("dg-nobody-{}", std::process::id()));
    let _ = fs::remove_dir(&decoy);
    let decoy_made = as_nobody(&["mkdir", decoy.to_str().ok_or("path")?])?.status.success();
    struct Rmdir(PathBuf);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            let _ = fs::remove_dir(&self.0);
        }
    }
    let _decoy = Rmdir(decoy.clone());
    let pin_dir = agent.pin_dir.to_str().ok_or("path")?.to_string();
    let mut attempts: Vec<Vec<String>> = vec![
        vec!["rm".into(), "-rf".into(), pin_dir.clone()],
        vec!["mv".into(), pin_dir.clone(), format!("{pin_dir}-moved")],
        vec!["mkdir".into(), format!("{pin_dir}/link_dg_new")],
    ];
    for (name, _) in &before {
        let pin = format!("{pin_dir}/{name}");
        attempts.push(vec!["rm".into(), "-f".into(), pin.clone()]);
        attempts.push(vec!["mv".into(), pin.clone(), format!("{pin}_x")]);
        attempts.push(vec!["ln".into(), "-sf".into(), "/dev/null".into(), pin.clone()]);
        if decoy_made {
            attempts.push(vec!["mv".into(), "-f".into(), decoy.display().to_string(), pin.clone()]);
        }
    }
    let mut succeeded = Vec::new();
    for a in &attempts {
        let args: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = as_nobody(&args)?;
        if out.status.success() {
            succeeded.push(a.join(" "));
        }
    }
    let after = listing(&agent.pin_dir)?;
    if !succeeded.is_empty() || after != before || agent.path().is_none() {
        return Err(format!(
            "an unprivileged user changed the pins: succeeded {succeeded:?}\nbefore {before:?}\nafter {after:?}"
        )
        .into());
    }
    println!("{} removal/replacement attempts as uid 65534 all failed", attempts.len());
    Ok(())
}

fn refuses_a_pin_dir_owned_by_nobody() -> R {
    use std::os::unix::fs::MetadataExt;
    let mut agent = AgentProcess::with_own_socket("agent")?;
    let pin_dir = agent.pin_dir.clone();
    // Created first by an unprivileged user (possible while /sys/fs/bpf is drwxrwxrwt); when
    // bpffs was mounted with a mode, root creates it and hands it over.
    if !as_nobody(&["mkdir", pin_dir.to_str().ok_or("path")?])?.status.success() {
        fs::create_dir(&pin_dir).map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(&pin_dir, Some(65534), Some(65534)).map_err(|e| e.to_string())?;
    }
    if fs::metadata(&pin_dir).map_err(|e| e.to_string())?.uid() != 65534 {
        return Err("could not set up a pin dir owned by nobody".into());
    }
    agent.start()?;
    let st = agent.wait_exit()?;
    let log = agent.log();
    let named = log.contains(&format!("refusing to pin under {}", pin_dir.display()))
        && log.contains("is not owned by root")
        && log.contains("uid 65534");
    if st.success() || !named {
        return Err(format!("exit {st}; the refusal must name the path and owner:\n{log}").into());
    }
    if fs::read_dir(&pin_dir).map_err(|e| e.to_string())?.next().is_some() {
        return Err("something was pinned into the refused directory".into());
    }
    Ok(())
}

/// `driftguard events` against a running agent and real execs: `--follow` with filters on the
/// live stream, each filter and the text format on the events file, a broken line skipped with
/// its number, and `--file --follow` seeing what the agent appends.
fn events_cli_follows_filters_and_reads_the_file() -> R {
    use std::io::BufRead;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = rt();
    let _guard = rt.enter();
    let (agent, _peer, conn) = registered_agent(&rt)?;
    let cli = |args: &[&str]| -> Result<(i32, String, String), Failed> {
        let mut all = vec!["events"];
        all.extend_from_slice(args);
        Ok(agent.cli(&all)?)
    };
    // A follower of the live stream with filters; its stderr line says when it is connected.
    let spawn = |args: &[&str]| -> Result<(KillOnDrop, std::sync::mpsc::Receiver<String>), Failed> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_driftguard"))
            .args(["events", "--config"])
            .arg(&agent.config)
            .args(args)
            .env("DRIFTGUARD_STATE_DIR", agent.state_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("driftguard events: {e}"))?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let out = child.stdout.take().ok_or("stdout")?;
        let err = child.stderr.take().ok_or("stderr")?;
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {l}"));
            }
        });
        Ok((KillOnDrop(child), rx))
    };
    let wait_line = |rx: &std::sync::mpsc::Receiver<String>,
                     what: &str,
                     pred: &dyn Fn(&str) -> bool|
     -> Result<Vec<String>, Failed> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if pred(&l) => {
                    seen.push(l);
                    return Ok(seen);
                }
                Ok(l) => seen.push(l),
                Err(_) => return Err(format!("{what}: not seen within 30 s; got {seen:?}").into()),
            }
        }
    };
    let (_live, live) = spawn(&["--follow", "--pod", "web", "--rule", "drift"])?;
    wait_line(&live, "the live follower connected", &|l| l.contains("following the agent's events"))?;
    let (_tail, tail) = spawn(&["--file", "--follow", "--action", "alert", "-o", "text"])?;
    wait_line(&tail, "the file follower's header", &|l| l.starts_with("TIME "))?;

    let path = agent.path();
    let enforced = RuncCtr::create(dir.path(), "evweb")?;
    let p1 = pod("web", &[("driftguard.dev/mode", "enforce")]);
    let c1 = enforced.nri(&p1, "app");
    rt.block_on(start_container(&conn, Delivery::Dedicated, &p1, &c1))?;
    enforced.start()?;
    enforced.drop_binary("/tmp/dropped")?;
    let (code, out) = enforced.exec(&["/tmp/dropped", "true"])?;
    assert_stopped(path, code, &out, "dropped binary in web")?;
    let monitored = RuncCtr::create(dir.path(), "evbatch")?;
    let p2 = pod("batch", &[("driftguard.dev/mode", "monitor")]);
    let c2 = monitored.nri(&p2, "job");
    rt.block_on(start_container(&conn, Delivery::Dedicated, &p2, &c2))?;
    monitored.start()?;
    monitored.drop_binary("/tmp/busybox-tool")?;
    let (code, out) = monitored.exec(&["/tmp/busybox-tool", "true"])?;
    if code != 0 {
        return Err(format!("monitor mode must not block: exit {code} {out}").into());
    }
    agent.wait_event("alert of batch", |e| e["pod"] == "batch" && e["action"] == "alert")?;
    agent.wait_event("verdict of web", |e| e["pod"] == "web" && e["path"] == "/tmp/dropped")?;

    // Live, filtered: web's drift verdict, never batch's alert.
    let seen = wait_line(&live, "web's verdict on the live follower", &|l| l.contains("\"/tmp/dropped\""))?;
    if let Some(l) = seen.iter().find(|l| l.contains("\"pod\":\"batch\"")) {
        return Err(format!("the --pod web follower printed batch's event: {l}").into());
    }
    // The file, followed, in text: batch's alert line.
    let seen = wait_line(&tail, "batch's alert on the file follower", &|l| l.contains("shop/batch/job"))?;
    let l = seen.last().cloned().unwrap_or_default();
    if !(l.contains("  alert  ") && l.contains("drift") && l.contains("/tmp/busybox-tool"))
        || seen.iter().any(|l| l.contains("shop/web/"))
    {
        return Err(format!("the --action alert text follower printed {seen:?}").into());
    }

    // Each filter on the events file (the config's `[events] file`).
    let pods_of = |args: &[&str]| -> Result<Vec<String>, Failed> {
        let (code, out, err) = cli(args)?;
        if code != 0 {
            return Err(format!("driftguard events {args:?}: exit {code}: {err}").into());
        }
        let mut pods: Vec<String> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "verdict")
            .map(|v| v["pod"].as_str().unwrap_or("").to_string())
            .collect();
        pods.sort();
        pods.dedup();
        Ok(pods)
    };
    for (args, want) in [
        (&["--file"][..], &["batch", "web"][..]),
        (&["--since", "1h"], &["batch", "web"]),
        (&["--file", "--pod", "b*"], &["batch"]),
        (&["--file", "--namespace", "shop", "--container", "app"], &["web"]),
        (&["--file", "--namespace", "other"], &[]),
        (&["--file", "--rule", "drift", "--action", "deny", "--action", "kill"], &["web"]),
        (&["--file", "--rule", "fileless"], &[]),
        (&["--until", "2000-01-01T00:00:00Z"], &[]),
        (&["--since", "2000-01-01T00:00:00Z", "--until", "0s"], &["batch", "web"]),
    ] {
        let got = pods_of(args)?;
        if got != want {
            return Err(format!("driftguard events {args:?}: pods {got:?}, want {want:?}").into());
        }
    }
    let (code, _, err) = cli(&["--file", "--rule", "drfit"])?;
    if code == 0 || !err.contains("--rule \"drfit\": expected one of") {
        return Err(format!("a misspelt rule must be refused: exit {code}: {err}").into());
    }
    // A broken line and a cut last line: reported with their numbers, the rest still read.
    let text = std::fs::read_to_string(&agent.events_file).map_err(|e| e.to_string())?;
    let broken = dir.path().join("broken.jsonl");
    let n = text.lines().count();
    std::fs::write(&broken, format!("{text}garbage\n{{\"event\":\"verd")).map_err(|e| e.to_string())?;
    let broken_s = broken.display().to_string();
    let (code, out, err) = cli(&["--file", &broken_s, "-o", "text"])?;
    let lines: Vec<&str> = out.lines().collect();
    if code != 0
        || lines.len() != n + 1
        || !err.contains(&format!("line {}: not a JSON event", n + 1))
        || !err.contains(&format!("line {}: not a JSON event", n + 2))
        || !err.contains("no newline")
    {
        return Err(format!(
            "reading a broken file: exit {code}, {} lines (want {} with the header)\n{err}",
            lines.len(),
            n + 1
        )
        .into());
    }
    Ok(())
}
