//! What a node operator sees (issue 16): the real `driftguard run` binary's stderr at the
//! default `info` level, `driftguard status` about the agent, and the command-line flags that
//! override the configuration file. The runtime side is the NRI peer of `nri_plugin::testing`
//! (the wire protocol containerd speaks); tests/cri.rs repeats the log checks with the real
//! containerd 1.7.
//!
//! Needs root (the agent loads BPF). Skipped with the reason otherwise; a failure under
//! `DRIFTGUARD_REQUIRE_ALL=1`.

use std::path::Path;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed};
use nri_plugin::testing::{PeerConnection, RuntimePeer};

#[path = "support/agent_process.rs"]
mod agent_process;
#[path = "support/vm.rs"]
mod vm;

use agent_process::AgentProcess;

type R = Result<(), Failed>;

fn main() {
    let args = Arguments::from_args();
    let gate = vm::Gate::from_env();
    // SAFETY: geteuid has no preconditions.
    let reason = (unsafe { libc::geteuid() } != 0).then(|| "needs root (the agent loads BPF programs)".to_string());
    let trials = vec![
        gate.trial("agent_log_is_plain_one_line_per_fact", &reason, agent_log_is_plain_one_line_per_fact),
        gate.trial("flags_override_the_config_file", &reason, flags_override_the_config_file),
        gate.trial("agent_refuses_to_start_on_an_invalid_rule", &reason, agent_refuses_to_start_on_an_invalid_rule),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime")
}

/// Barrier: `text()` contains `needle` at least `n` times (60 s).
fn wait_for(what: &str, n: usize, needle: &str, text: impl Fn() -> String) -> Result<String, Failed> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = text();
        if t.matches(needle).count() >= n {
            return Ok(t);
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: no {n}× {needle:?} within 60 s:\n{t}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Accept the agent's connection and register it like containerd 1.7 does: no NRI version.
async fn register_like_containerd_17(peer: &RuntimePeer) -> Result<PeerConnection, Failed> {
    let mut conn = tokio::time::timeout(Duration::from_secs(60), peer.accept())
        .await
        .map_err(|_| "the agent did not connect within 60 s")?
        .map_err(|e| format!("accept: {e}"))?;
    conn.set_timeout(Duration::from_secs(60));
    conn.registration().await.map_err(|e| format!("registration: {e}"))?;
    let mut req = PeerConnection::default_configure_request();
    req.runtime_version = "1.7.24~ds1".into();
    req.NRI_version = String::new();
    conn.configure(req).await.map_err(|e| format!("configure: {e}"))?;
    conn.synchronize(vec![], vec![], 2).await.map_err(|e| format!("synchronize: {e}"))?;
    Ok(conn)
}

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// At `info` (the shipped level), with stderr a file as under systemd or Kubernetes: no colour
/// codes, no Rust debug formatting, libbpf's loader output only at debug, the enforcement path
/// said once with its reason, the runtime's absence said once however often the agent retries,
/// the NRI version "unknown" when the runtime does not tell it; `status` follows the agent.
fn agent_log_is_plain_one_line_per_fact() -> R {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let socket = dir.path().join("nri.sock");
    let mut agent = AgentProcess::new(&socket)?;
    // The shipped level, plus the runner's debug lines as the count of connection attempts.
    agent.edit_config(
        &format!("level = \"{}\"", agent_process::LOG_LEVEL),
        "level = \"info,nri_plugin::runner=debug\"",
    )?;
    agent.start()?;

    // No runtime yet: the agent retries every 300 ms (the fallback period); barrier: 4 attempts.
    wait_for("retries while the runtime is absent", 4, "NRI connect failed", || agent.raw_log())?;
    let rt = rt();
    let _guard = rt.enter();
    let mut peer = RuntimePeer::bind(&socket).map_err(|e| e.to_string())?;
    peer.set_timeout(Duration::from_secs(60));
    let conn = rt.block_on(register_like_containerd_17(&peer))?;
    let log = wait_for("registration", 1, "registered with the runtime", || agent.raw_log())?;

    let (code, out, err) = agent.cli(&["status"])?;
    let first = out.lines().next().unwrap_or_default();
    if code != 0 || !first.starts_with("agent: running") || !first.contains("registered with containerd 1.7.24~ds1") {
        return Err(format!("status while registered (exit {code}):\n{out}{err}").into());
    }
    let (_, json, _) = agent.cli(&["status", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| format!("status --json: {e}: {json}"))?;
    if v["agent"]["running"] != true || v["agent"]["nri"] != "registered" || v["state"] != "enforcing" {
        return Err(format!("status --json agent: {}", v["agent"]).into());
    }

    // The runtime goes away and comes back: each change once.
    conn.close();
    peer.close();
    wait_for("the disconnect", 1, "NRI connection", || agent.raw_log())?;
    let mut peer = RuntimePeer::bind(&socket).map_err(|e| e.to_string())?;
    peer.set_timeout(Duration::from_secs(60));
    let _conn = rt.block_on(register_like_containerd_17(&peer))?;
    wait_for("re-registration", 2, "registered with the runtime", || agent.raw_log())?;
    let st = agent.terminate()?;
    let log_all = agent.raw_log();
    if !st.success() {
        return Err(format!("SIGTERM: exit {st}\n{log_all}").into());
    }

    let info: Vec<&str> = log_all.lines().filter(|l| !l.contains(" DEBUG ")).collect();
    let info_text = info.join("\n");
    let fail = |what: &str| -> R { Err(format!("{what}\n--- agent stderr (info and above) ---\n{info_text}").into()) };
    if log_all.contains('\x1b') {
        return fail("colour codes in a log that is not a terminal");
    }
    for debug_fmt in ["Some(", "None", "Ok(", "Err("] {
        if info_text.contains(debug_fmt) {
            return fail(&format!("Rust debug formatting ({debug_fmt}) in the log"));
        }
    }
    if info.iter().any(|l| l.contains("libbpf") || l.contains("ulimit")) || log_all.contains("\\n") {
        return fail("libbpf's loader output (or an escaped multi-line message) above debug level");
    }
    let path_lines = lines_with(&info_text, "enforcement path:");
    let pinned = driftguard::enforcer::pinned_path(&agent.pin_dir);
    match pinned {
        // This host (and any kernel refusing the LSM programs): said once, with why and what to do.
        Some(driftguard::enforcer::EnforcementPath::TracepointKill) => {
            if path_lines.len() != 1 || !path_lines[0].contains(" WARN ") || !path_lines[0].contains(" because ") {
                return fail("the fallback is not explained exactly once, as a warning with its reason");
            }
        }
        Some(driftguard::enforcer::EnforcementPath::Lsm) => {
            if path_lines.len() != 1 || path_lines[0].contains("fallback") {
                return fail("the BPF LSM path is not said exactly once");
            }
        }
        None => return fail("nothing pinned after the agent ran"),
    }
    let outage = lines_with(&info_text, "NRI socket unavailable");
    let attempts = lines_with(&log_all, "NRI connect failed").len();
    if outage.len() != 1 {
        return fail(&format!("{} outage lines for one outage of {attempts} attempts", outage.len()));
    }
    if lines_with(&info_text, "registered with the runtime").iter().any(|l| !l.contains("nri_version=unknown")) {
        return fail("a runtime without an NRI version is not logged as nri_version=unknown");
    }
    if lines_with(&info_text, "NRI connection").iter().filter(|l| l.contains("reconnecting")).count() != 1 {
        return fail("the disconnect is not logged exactly once");
    }
    // The SIGTERM: the agent closes its NRI connection after answering what was in flight.
    if lines_with(&info_text, "closed the NRI connection after answering").len() != 1 {
        return fail("the clean NRI close at SIGTERM is not logged exactly once");
    }
    let startup = log.lines().filter(|l| !l.contains(" DEBUG ")).count();
    if startup > 10 {
        // Start-up to registration at info: a handful of facts, not a dump.
        return fail(&format!("{startup} lines from start to registration"));
    }

    let (_, out, _) = agent.cli(&["status"])?;
    if !out.starts_with("agent: not running") {
        return Err(format!("status after a clean stop:\n{out}").into());
    }
    Ok(())
}

/// `--nri-socket` and `--pin-dir` override the configuration file for every subcommand.
fn flags_override_the_config_file() -> R {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // The config names a socket nobody listens on; the flag names the peer's.
    let mut agent = AgentProcess::new(&dir.path().join("not-here.sock"))?;
    let socket = dir.path().join("flag.sock");
    let pin_dir = agent.pin_dir.with_file_name(format!(
        "{}-flag",
        agent.pin_dir.file_name().and_then(|n| n.to_str()).unwrap_or("dg-operator")
    ));
    let _ = driftguard::enforcer::unload(&pin_dir);
    struct Unload<'a>(&'a Path);
    impl Drop for Unload<'_> {
        fn drop(&mut self) {
            let _ = driftguard::enforcer::unload(self.0);
        }
    }
    let _unload = Unload(&pin_dir);
    let (socket_s, pin_s) = (socket.display().to_string(), pin_dir.display().to_string());
    agent.set_extra_args(&["--nri-socket", &socket_s, "--pin-dir", &pin_s]);

    let rt = rt();
    let _guard = rt.enter();
    let mut peer = RuntimePeer::bind(&socket).map_err(|e| e.to_string())?;
    peer.set_timeout(Duration::from_secs(60));
    agent.start()?;
    let _conn = rt.block_on(register_like_containerd_17(&peer))?;
    if driftguard::enforcer::pinned_path(&pin_dir).is_none()
        || driftguard::enforcer::pinned_path(&agent.pin_dir).is_some()
    {
        return Err(
            format!("--pin-dir {pin_s}: the agent did not pin there (config: {})", agent.pin_dir.display()).into()
        );
    }
    let (code, out, err) = agent.cli(&["status", "--pin-dir", &pin_s])?;
    if code != 0 || !out.contains(&format!("pinned under {pin_s}")) || !out.contains("registered with") {
        return Err(format!("status --pin-dir (exit {code}):\n{out}{err}").into());
    }
    // Without the flag, status reads the config's pin dir, where nothing is.
    let (code, out, err) = agent.cli(&["status"])?;
    if code != 3 || !out.contains(&format!("NOT LOADED (nothing pinned under {}", agent.pin_dir.display())) {
        return Err(format!(
            "status without --pin-dir should name the config's empty pin dir (exit {code}): {out}{err}"
        )
        .into());
    }
    let (code, out, err) = agent.cli(&["check", "--json", "--nri-socket", &socket_s])?;
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&out).map_err(|e| format!("check: {e} ({code}): {err}"))?;
    let nri = items.iter().find(|i| i["name"] == "nri_socket").ok_or("no nri_socket item")?;
    if !nri["detail"].as_str().is_some_and(|d| d.contains(&socket_s)) {
        return Err(format!("check --nri-socket did not look at {socket_s}: {nri}").into());
    }
    let (code, _, err) = agent.cli(&["check", "--containerd", "/nonexistent/containerd"])?;
    if code != 1 || !err.contains("--containerd /nonexistent/containerd: no such file") || err.contains(": : ") {
        return Err(format!("check --containerd with a wrong path (exit {code}): {err}").into());
    }
    let st = agent.terminate()?;
    if !st.success() {
        return Err(format!("SIGTERM: exit {st}").into());
    }
    let (code, out, err) = agent.cli(&["unload", "--pin-dir", &pin_s])?;
    if code != 0 || driftguard::enforcer::pinned_path(&pin_dir).is_some() {
        return Err(format!("unload --pin-dir (exit {code}):\n{out}{err}").into());
    }
    Ok(())
}

/// A rule that can never apply is a configuration error: `driftguard run` exits non-zero before
/// loading anything, pointing at the rule.
fn agent_refuses_to_start_on_an_invalid_rule() -> R {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut agent = AgentProcess::new(&dir.path().join("nri.sock"))?;
    let text = std::fs::read_to_string(&agent.config).map_err(|e| e.to_string())?;
    let rules = "\n[[rules]]\nname = \"all\"\nmode = \"monitor\"\n\n[[rules]]\nname = \"pay\"\nnamespaces = [\"payments\"]\nmode = \"enforce\"\n";
    std::fs::write(&agent.config, format!("{text}{rules}")).map_err(|e| e.to_string())?;
    agent.start()?;
    let status = agent.wait_exit()?;
    if status.success() {
        return Err("the agent started with a shadowed rule".into());
    }
    let log = agent.raw_log();
    for want in ["[[rules]]", "^^^^^^^^^", "rule \"pay\" never applies", "matched first by rule \"all\""] {
        if !log.contains(want) {
            return Err(format!("the agent's error does not show {want:?}:\n{log}").into());
        }
    }
    if driftguard::enforcer::pinned_path(&agent.pin_dir).is_some() {
        return Err("the agent pinned enforcement before refusing its config".into());
    }
    Ok(())
}
