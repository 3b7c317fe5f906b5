//! The operator's view: check, status, the log, a clean stop (containerd 1.7 and 2.x).
use super::*;

/// The operator's view of a node with the real containerd 1.7 (issue 16): `check` pointed at a
/// containerd that is not on PATH (binary, config, NRI socket given as flags) finds it ready;
/// `status` says the agent runs and is registered; the agent's log is plain text without debug
/// formatting; a SIGTERM stops the agent with exit 0, and containerd logs no error about it,
/// neither at the stop nor at the events after it.
pub(super) fn operator_check_status_log_and_clean_stop() -> R {
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
pub(super) fn clean_stop_reports_no_error(env: &mut Env, id: &str) -> T {
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
pub(super) fn clean_stop_on_containerd2() -> R {
    with(Env::nri_only(), |env| {
        let (_, id) = env.pod_with("op", &[ENFORCE], "srv")?;
        env.assert_stopped(&env.ctd.sh(&id, DRIFT_RUNS)?, "drift exec")?;
        clean_stop_reports_no_error(env, &id)
    })
}
