//! Fail-closed starts: containers started while the agent is down or nothing is pinned, restarts
//! racing the agent, the hook and the agent together, the DaemonSet's node setup, NRI alone.
use super::*;

/// Fail closed, agent dead: the agent is killed (SIGKILL; enforcement stays pinned) and a
/// container of an enforce pod is created and started through CRI. No NRI plugin is registered,
/// so containerd asks nobody; the OCI hook installs the policy at createRuntime, before the
/// entrypoint runs, and the first drift exec is stopped. When the agent is back it adopts the
/// container.
pub(super) fn container_started_while_agent_down_is_enforced() -> R {
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
pub(super) fn container_refused_when_nothing_is_pinned() -> R {
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
pub(super) fn unannotated_pod_starts_when_nothing_is_pinned() -> R {
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
pub(super) fn containerd_restart_racing_agent_reconnect() -> R {
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
pub(super) fn containerd_restarts_while_starts_loop() -> R {
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
pub(super) fn hook_and_agent_leave_one_policy_removed_at_stop() -> R {
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
pub(super) fn node_setup(prefix: &Path, hook: &Path, config: &Path) -> Result<String, String> {
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
pub(super) fn daemonset_node_setup_makes_start_fail_closed() -> R {
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
pub(super) fn nri_only_container_started_while_agent_down() -> R {
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
