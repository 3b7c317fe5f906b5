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
