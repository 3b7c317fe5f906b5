//! Pods through CRI: the annotation modes, overrides, deny lists, refusals at CreateContainer,
//! events and metrics, the shell-only DDexec attack, agent kill -9 and containerd restarts.
use super::*;

pub(super) fn cri_enforce_pod_kills_drift_and_runs_image_files() -> R {
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

pub(super) fn cri_monitor_pod_alerts_and_runs_drift() -> R {
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

pub(super) fn cri_unannotated_pod_is_untouched() -> R {
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

pub(super) fn cri_per_container_mode_override() -> R {
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

pub(super) fn cri_deny_listed_entrypoint_is_stopped() -> R {
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

pub(super) fn cri_bad_annotation_refused_at_create_container() -> R {
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

pub(super) fn cri_event_fields_and_metrics() -> R {
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
pub(super) fn cri_shell_only_ddexec_is_stopped() -> R {
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

pub(super) fn cri_agent_kill9_keeps_enforcing() -> R {
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

pub(super) fn cri_containerd_restart_agent_reregisters() -> R {
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

pub(super) fn cri_container_removed_while_agent_down_is_cleaned() -> R {
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

/// A pod shaped like a Deployment's (kubelet-style name and `pod-template-hash` label): its
/// events name the workload, in JSON and in `driftguard events -o text`.
pub(super) fn cri_event_names_the_workload() -> R {
    with_env(|env| {
        let name = "api-5c8d7f9b6-x2x4z";
        let pod =
            env.ctd.run_pod_in("shop", name, &[("pod-template-hash", "5c8d7f9b6"), ("app", "api")], &[MONITOR])?;
        let id = env.ctd.run_container(&pod, "app", &[])?;
        expect_ok(&env.ctd.sh(&id, DRIFT_RUNS)?, "hi", "drift in a monitored Deployment pod")?;
        let ev = env.agent.wait_event("the alert of the Deployment's pod", |ev| ev["pod"] == name)?;
        if ev["workload"] != serde_json::json!({"kind": "Deployment", "name": "api"}) {
            return Err(format!("workload of {name}: {ev}"));
        }
        // Parent and command line against a known tree: a shell's subshell runs the dropped
        // binary, then blocks on a fifo (the barrier: the agent reads the living parent's
        // executable) until the test has the event and releases it.
        let script = "/bin/busybox mkfifo /tmp/go && \
                      (/tmp/busybox-x echo hi 'two words'; read x < /tmp/go) > /dev/null 2>&1 &";
        expect_ok(&env.ctd.sh(&id, script)?, "", "a subshell running the dropped binary")?;
        let ev = env.agent.wait_event("the alert with two words", |ev| {
            ev["pod"] == name && ev["args"].as_array().is_some_and(|a| a.iter().any(|w| w == "two words"))
        });
        let released = env.ctd.sh(&id, "echo go > /tmp/go");
        let ev = ev?;
        released?;
        if ev["args"] != serde_json::json!(["/tmp/busybox-x", "echo", "hi", "two words"])
            || ev.get("args_truncated").is_some()
            || ev["parent"]["comm"] != "sh"
            || ev["parent"]["exe"] != "/bin/busybox"
            || ev["parent"]["pid"] != ev["ppid"]
        {
            return Err(format!("parent and args of the subshell's exec: {ev}"));
        }
        let (code, out, err) = env.agent.cli(&["events", "--file", "--pod", "api-*", "-o", "text"])?;
        if code != 0
            || !out.lines().any(|l| l.contains("Deployment/api") && l.contains("/tmp/busybox-x"))
            || !out.lines().any(|l| l.contains(r#"$ /tmp/busybox-x echo hi "two words"  parent sh["#))
        {
            return Err(format!("driftguard events -o text: exit {code}\n{out}\n{err}"));
        }
        Ok(())
    })
}
