//! Node policy rules (`[[rules]]`, `[exclusions]`) through the real containerd: a namespace rule
//! puts unannotated pods under policy, the built-in exclusions hold, every event and the status
//! say which rule set the mode, and the OCI hook, which does not see labels, takes the strictest
//! rule that could apply until the agent (which does) corrects it.
use super::*;

/// containerd with the hook, and an agent whose config (and the hook's) ends with `extra`.
fn env_with_config(extra: &str) -> Result<Env, String> {
    let env = Env::without_agent()?;
    let text = std::fs::read_to_string(&env.agent.config).map_err(|e| e.to_string())?;
    std::fs::write(&env.agent.config, format!("{text}\n{extra}")).map_err(|e| e.to_string())?;
    std::fs::copy(&env.agent.config, &env.ctd.hook_config).map_err(|e| format!("hook config: {e}"))?;
    env.start_agent()
}

/// The `driftguard status --json` row of cgroup `cg`.
fn status_row(env: &Env, cg: u64) -> Result<serde_json::Value, String> {
    let st = env.agent.status()?;
    st["containers"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["cgroup_id"].as_u64() == Some(cg)).cloned())
        .ok_or_else(|| format!("no status row for cgroup {cg}: {st}"))
}

const NAMESPACE_RULES: &str = r#"
[[rules]]
name = "payments"
namespaces = ["payments"]
mode = "enforce"

[[rules]]
name = "everything"
mode = "monitor"
"#;

pub(super) fn rules_namespace_rule_enforces_unannotated_pod_exclusions_hold() -> R {
    with(env_with_config(NAMESPACE_RULES), |env| {
        // An unannotated pod in `payments`: enforced by the rule.
        let pay = env.ctd.run_pod_in("payments", "pay", &[("app", "pay")], &[])?;
        let pay_id = env.ctd.run_container(&pay, "app", &[])?;
        expect_ok(&env.ctd.sh(&pay_id, "/bin/busybox echo image")?, "image", "an image binary under the rule")?;
        env.assert_stopped(&env.ctd.sh(&pay_id, DRIFT_RUNS)?, "drift in an unannotated pod of `payments`")?;
        let ev = env.agent.wait_event("the verdict in payments", |ev| ev["namespace"] == "payments")?;
        if ev["mode"] != "enforce" || ev["policy_source"] != "rule:payments" || ev["rule"] != "drift" {
            return Err(format!("want an enforce drift verdict from rule:payments: {ev}"));
        }
        // An unannotated pod in kube-system: excluded although a catch-all rule follows.
        let sys = env.ctd.run_pod_in("kube-system", "sys", &[("app", "sys")], &[])?;
        let sys_id = env.ctd.run_container(&sys, "app", &[])?;
        expect_ok(&env.ctd.sh(&sys_id, DRIFT_RUNS)?, "hi", "drift in kube-system (excluded)")?;
        // Elsewhere the catch-all rule monitors: drift runs and is reported. The sentinel pod
        // is annotated, so its mode comes from the annotation.
        let web = env.ctd.run_pod_in("shop", "web", &[("app", "web")], &[])?;
        let web_id = env.ctd.run_container(&web, "app", &[])?;
        expect_ok(&env.ctd.sh(&web_id, DRIFT_RUNS)?, "hi", "drift under the catch-all monitor rule")?;
        let ev = env.agent.wait_event("the alert in shop/web", |ev| ev["pod"] == "web")?;
        if ev["action"] != "alert" || ev["policy_source"] != "rule:everything" {
            return Err(format!("want an alert from rule:everything: {ev}"));
        }
        let at = env.sentinel()?;
        if let Some(ev) = env.agent.events()[..at].iter().find(|ev| ev["namespace"] == "kube-system") {
            return Err(format!("a pod of the excluded kube-system produced an event: {ev}"));
        }
        let sentinel = &env.agent.events()[at];
        if sentinel["policy_source"] != "annotation" {
            return Err(format!("the annotated sentinel's event: want policy_source annotation: {sentinel}"));
        }
        let sys_cg = env.cgroup_id(&sys, &sys_id)?;
        if env.status_rows()?.iter().any(|r| r.0 == sys_cg) {
            return Err(format!("the kube-system container's cgroup {sys_cg} has a policy"));
        }
        // `driftguard status` names the rule of each container and lists the node policy.
        let pay_cg = env.cgroup_id(&pay, &pay_id)?;
        env.wait_status(3)?;
        let row = status_row(env, pay_cg)?;
        if row["policy_source"] != "rule:payments" || row["mode"] != "enforce" {
            return Err(format!("status row of payments/pay: {row}"));
        }
        let st = env.agent.status()?;
        let np = &st["node_policy"];
        if np["exclusions"] != serde_json::json!(["kube-system", "driftguard-system"])
            || np["rules"][0]["name"] != "payments"
            || np["rules"][1]["mode"] != "monitor"
        {
            return Err(format!("status node_policy: {np}"));
        }
        Ok(())
    })
}

const LABEL_RULE: &str = r#"
[[rules]]
name = "canary"
namespaces = ["shop"]
selector = "track=canary"
mode = "enforce"
"#;

pub(super) fn rules_label_rule_hook_takes_strictest_agent_corrects() -> R {
    with(env_with_config(LABEL_RULE), |env| {
        env.agent.kill9();
        // The agent is down: the hook sees the namespace, not the labels, so the label rule may
        // apply to both pods and the hook installs it (fail closed).
        let canary = env.ctd.run_pod_in("shop", "canary", &[("track", "canary")], &[])?;
        let canary_id = env.ctd.run_container(&canary, "app", &[])?;
        let stable = env.ctd.run_pod_in("shop", "stable", &[("track", "stable")], &[])?;
        let stable_id = env.ctd.run_container(&stable, "app", &[])?;
        env.assert_stopped(&env.ctd.sh(&canary_id, DRIFT_RUNS)?, "drift in the canary pod, agent down")?;
        env.assert_stopped(&env.ctd.sh(&stable_id, DRIFT_RUNS)?, "drift in the stable pod, agent down (strictest)")?;
        let stable_cg = env.cgroup_id(&stable, &stable_id)?;
        let canary_cg = env.cgroup_id(&canary, &canary_id)?;
        let record: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(env.ctd.hook_state.join(&stable_id)).map_err(|e| format!("hook record: {e}"))?,
        )
        .map_err(|e| e.to_string())?;
        if record["policy_source"] != "rule:canary" || record["mode"] != "enforce" {
            return Err(format!("the hook's record of the stable pod: {record}"));
        }
        // The agent comes back: Synchronize resolves with the labels. The stable pod does not
        // match: the hook's entry goes; the canary pod keeps the rule.
        let synced = env.agent.synced_count();
        env.agent.start_synced(synced + 1)?;
        let store = env.agent.store()?;
        if store.owner(stable_cg).map_err(|e| e.to_string())?.is_some() {
            return Err(format!("after Synchronize the stable pod's cgroup {stable_cg} still has a policy"));
        }
        expect_ok(&env.ctd.sh(&stable_id, "/tmp/busybox-x echo hi")?, "hi", "drift in the stable pod, agent back")?;
        env.wait_status(1)?;
        let row = status_row(env, canary_cg)?;
        if row["policy_source"] != "rule:canary" || row["mode"] != "enforce" || row["owner"] != "agent" {
            return Err(format!("status row of the canary pod: {row}"));
        }
        env.assert_stopped(&env.ctd.sh(&canary_id, "/tmp/busybox-x echo hi")?, "drift in the canary pod, agent back")
    })
}

const GUARDED_RULE: &str = r#"
[[rules]]
name = "payments"
namespaces = ["payments"]
mode = "enforce"
forbid_weakening = true
"#;

pub(super) fn rules_forbid_weakening_refuses_mode_off_with_event_and_metric() -> R {
    with(env_with_config(GUARDED_RULE), |env| {
        let pod = env.ctd.run_pod_in("payments", "optout", &[("app", "optout")], &[("driftguard.dev/mode", "off")])?;
        let err = match env.ctd.create_container(&pod, "app", &[]) {
            Ok(id) => return Err(format!("a pod annotated mode: off in `payments` was created ({id})")),
            Err(e) => e.message().to_string(),
        };
        eprintln!("containerd's refusal: {err}");
        for want in ["driftguard.dev/mode", "forbidden by rule \"payments\"", "lowers the mode from enforce to off"] {
            if !err.contains(want) {
                return Err(format!("the refusal does not say {want:?}: {err}"));
            }
        }
        let ev = env.agent.wait_event("the admission event", |ev| ev["event"] == "admission")?;
        if ev["action"] != "refused"
            || ev["reason"] != "forbidden_weakening"
            || ev["rule"] != "payments"
            || ev["key"] != "driftguard.dev/mode"
            || ev["namespace"] != "payments"
            || ev["pod"] != "optout"
        {
            return Err(format!("admission event: {ev}"));
        }
        env.agent.wait_metrics(&["driftguard_containers_refused_total{reason=\"forbidden_weakening\"} 1"])?;
        // A stricter annotation is fine in the same namespace, and enforced.
        let (_, id) = {
            let p = env.ctd.run_pod_in(
                "payments",
                "strict",
                &[("app", "strict")],
                &[("driftguard.dev/allowlist-only", "false")],
            )?;
            let id = env.ctd.run_container(&p, "app", &[])?;
            (p, id)
        };
        env.assert_stopped(&env.ctd.sh(&id, DRIFT_RUNS)?, "drift in `payments` with a harmless annotation")?;
        // The attacker's next try: the same pod while the agent is down. The OCI hook applies
        // the rule and refuses it at start (fail closed).
        env.agent.kill9();
        let pod =
            env.ctd.run_pod_in("payments", "optout2", &[("app", "optout2")], &[("driftguard.dev/mode", "off")])?;
        let id = env.ctd.create_container(&pod, "app", &[]).map_err(|e| format!("CreateContainer: {}", e.message()))?;
        match env.ctd.start_container(&id) {
            Ok(()) => {
                return Err(format!(
                    "mode: off in `payments` started while the agent was down: {}",
                    env.ctd.sh(&id, DRIFT_RUNS)?
                ))
            }
            Err(e)
                if e.message().contains("driftguard-oci-hook")
                    && e.message().contains("forbidden by rule \"payments\"") => {}
            Err(e) => return Err(format!("the hook's refusal does not name the rule: {}", e.message())),
        }
        // The agent, back, reports the hook's refusal as an event and in the metric.
        let synced = env.agent.synced_count();
        env.agent.start_synced(synced + 1)?;
        let ev = env.agent.wait_event("the hook's admission event", |ev| {
            ev["event"] == "admission" && ev["source"] == "oci-hook" && ev["pod"] == "optout2"
        })?;
        if ev["reason"] != "forbidden_weakening"
            || ev["rule"] != "payments"
            || ev["key"] != "driftguard.dev/mode"
            || ev["namespace"] != "payments"
            || ev["container"] != "app"
            || ev["container_id"] != id.as_str()
        {
            return Err(format!("the hook's admission event: {ev}"));
        }
        // (A counter of the restarted agent: the hook's refusal is its first.)
        env.agent.wait_metrics(&["driftguard_containers_refused_total{reason=\"forbidden_weakening\"} 1"])?;
        if std::fs::read_dir(env.ctd.hook_state.join("refused")).map_err(|e| e.to_string())?.next().is_some() {
            return Err("the hook's refusal record is still there after the agent reported it".into());
        }
        Ok(())
    })
}

const CHANGING_RULES: &str = r#"
[[rules]]
name = "payments"
namespaces = ["payments"]
mode = "enforce" # payments

[[rules]]
name = "shop"
namespaces = ["shop"]
mode = "monitor" # shop
"#;

/// The rules change while containers run: after the agent's restart a stronger rule applies
/// to running containers at once, a weaker one does not (the container keeps its pinned policy
/// until it restarts, and a `policy_kept` notice says so); new containers get the new rules.
pub(super) fn rules_changed_while_running_never_weaken_running_containers() -> R {
    with(env_with_config(CHANGING_RULES), |env| {
        let pay = env.ctd.run_pod_in("payments", "pay", &[("app", "pay")], &[])?;
        let pay_id = env.ctd.run_container(&pay, "app", &[])?;
        let web = env.ctd.run_pod_in("shop", "web", &[("app", "web")], &[])?;
        let web_id = env.ctd.run_container(&web, "app", &[])?;
        env.assert_stopped(&env.ctd.sh(&pay_id, DRIFT_RUNS)?, "drift in payments before the change")?;
        expect_ok(&env.ctd.sh(&web_id, DRIFT_RUNS)?, "hi", "drift in shop (monitor) before the change")?;
        env.agent.terminate()?;
        env.agent.edit_config("mode = \"enforce\" # payments", "mode = \"monitor\" # payments")?;
        env.agent.edit_config("mode = \"monitor\" # shop", "mode = \"enforce\" # shop")?;
        std::fs::copy(&env.agent.config, &env.ctd.hook_config).map_err(|e| format!("hook config: {e}"))?;
        let synced = env.agent.synced_count();
        env.agent.start_synced(synced + 1)?;
        // Stronger: at once.
        env.assert_stopped(&env.ctd.sh(&web_id, "/tmp/busybox-x echo hi")?, "drift in shop after it became enforce")?;
        // Weaker: kept, and said.
        let n =
            env.agent.wait_event("the policy_kept notice", |ev| ev["reason"] == "policy_kept" && ev["pod"] == "pay")?;
        let msg = n["message"].as_str().unwrap_or("");
        if !msg.contains("rule:payments")
            || !msg.contains("lowers the mode from enforce to monitor")
            || n["policy_source"] != "rule:payments"
        {
            return Err(format!("policy_kept notice: {n}"));
        }
        env.assert_stopped(&env.ctd.sh(&pay_id, DRIFT_RUNS)?, "drift in the running payments pod after the change")?;
        let cg = env.cgroup_id(&pay, &pay_id)?;
        env.wait_status(2)?;
        let row = status_row(env, cg)?;
        if row["mode"] != "enforce" {
            return Err(format!("status of the running payments pod: {row}"));
        }
        // A new pod in payments gets the new (weaker) rule.
        let (_, new_id) = {
            let p = env.ctd.run_pod_in("payments", "pay2", &[("app", "pay2")], &[])?;
            let id = env.ctd.run_container(&p, "app", &[])?;
            (p, id)
        };
        expect_ok(&env.ctd.sh(&new_id, DRIFT_RUNS)?, "hi", "drift in a new payments pod (now monitor)")?;
        let ev = env.agent.wait_event("the alert of pay2", |ev| ev["event"] == "verdict" && ev["pod"] == "pay2")?;
        if ev["action"] != "alert" || ev["policy_source"] != "rule:payments" {
            return Err(format!("verdict of the new payments pod: {ev}"));
        }
        Ok(())
    })
}

/// The attacker's try against the namespace the OCI hook reads: a pod in `payments` annotated
/// with containerd's own namespace annotation naming the excluded `kube-system`, started while
/// the agent is down. The runtime's value wins (and the shipped passthrough copies only
/// `driftguard.dev/*`): the rule applies.
pub(super) fn rules_namespace_annotation_cannot_be_forged() -> R {
    with(env_with_config(NAMESPACE_RULES), |env| {
        env.agent.kill9();
        let forged =
            [("io.kubernetes.cri.sandbox-namespace", "kube-system"), ("io.kubernetes.pod.namespace", "kube-system")];
        let pod = env.ctd.run_pod_in("payments", "forger", &[("app", "forger")], &forged)?;
        let id = env.ctd.run_container(&pod, "app", &[])?;
        env.assert_stopped(&env.ctd.sh(&id, DRIFT_RUNS)?, "drift in a payments pod claiming kube-system, agent down")?;
        let record: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(env.ctd.hook_state.join(&id)).map_err(|e| format!("hook record: {e}"))?,
        )
        .map_err(|e| e.to_string())?;
        if record["policy_source"] != "rule:payments" || record["mode"] != "enforce" {
            return Err(format!("the hook's record of the forging pod: {record}"));
        }
        Ok(())
    })
}
