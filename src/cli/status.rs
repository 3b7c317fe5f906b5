//! `driftguard status`: what is under policy, from the pinned maps.
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use driftguard::agent::{self, registry::ContainerInfo, state_file, Registry};
use driftguard::config::Config;
use driftguard::enforcer::{self, PolicyStore};
use driftguard::policy::{ExecMemory, ProcessAccess};
use driftguard::rules::Written;
use serde::Serialize;

#[derive(Serialize)]
struct Row {
    cgroup_id: u64,
    cgroup: String,
    mode: String,
    owner: String,
    /// What set the mode (`rule:<name>`, `annotation`, `default`); empty when not known (a
    /// policy only the OCI hook installed, or registered by an agent from before rules).
    policy_source: String,
    namespace: String,
    pod: String,
    container: String,
    rules: Vec<&'static str>,
    allow: Vec<String>,
    deny: Vec<String>,
}

/// What `status` found, each with its exit code (text and `--json` alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum State {
    /// Programs attached under the pin dir, an agent running and registered with the runtime. Exit 0.
    Enforcing,
    /// The pins could not be read (not root, maps of an incompatible version, ...): `error` says
    /// why. Exit 1.
    Error,
    /// Nothing pinned under the pin dir (never loaded, or unloaded), or its maps without programs:
    /// nothing is enforced from it. Exit 3.
    NotLoaded,
    /// Programs attached, but no agent runs or it is not registered with the runtime: installed
    /// policies hold; new containers get policy only from the OCI hook, if wired. Exit 4.
    AgentDown,
}

impl State {
    fn exit_code(self) -> u8 {
        match self {
            State::Enforcing => 0,
            State::Error => 1,
            State::NotLoaded => 3,
            State::AgentDown => 4,
        }
    }
}

#[derive(Serialize)]
struct Status {
    /// One word for scripts; also the exit code.
    state: State,
    /// Why the state is `error`; `null` otherwise.
    error: Option<String>,
    /// The agent that runs (or ran last and did not exit cleanly); `null` when none left a state file.
    agent: Option<state_file::AgentView>,
    pin_dir: String,
    enforcement_path: Option<&'static str>,
    /// Kernel counters; `null` when the maps cannot be read.
    stats: Option<enforcer::Stats>,
    /// The node policy of the config file as it is now (the agent reads it when it starts).
    node_policy: NodePolicyView,
    /// The agent runs, and the config file's node policy (any rule, rule default, exclusion or
    /// default) differs from the one it loaded at its start (`agent.node_policy`, as written):
    /// the file's applies only after a restart.
    node_policy_changed: bool,
    containers: Vec<Row>,
}

/// Exclusions, rules and the default of a node policy.
#[derive(Serialize)]
struct NodePolicyView {
    /// Where it was read: the config file, or `agent.json` for the agent's.
    config: String,
    /// Excluded namespaces: no rule and no `default_mode` reaches them.
    exclusions: Vec<String>,
    /// Rules, first match wins.
    rules: Vec<RuleView>,
    default_mode: String,
}

#[derive(Serialize)]
struct RuleView {
    name: String,
    /// Namespace names and globs; empty: every namespace.
    namespaces: Vec<String>,
    /// Label selector; `null`: every pod.
    selector: Option<String>,
    mode: String,
}

fn node_policy_view(w: &Written, config: String) -> NodePolicyView {
    NodePolicyView {
        config,
        exclusions: w.exclusions.namespaces().into_iter().map(|(ns, _)| ns.to_string()).collect(),
        rules: w
            .rules
            .iter()
            .map(|r| RuleView {
                name: r.name.clone(),
                namespaces: r.namespaces.clone().unwrap_or_default(),
                selector: r.selector.clone(),
                mode: r.mode.clone(),
            })
            .collect(),
        default_mode: w.default_mode.clone(),
    }
}

pub fn run(cfg: &Config, config_path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut status = gather(cfg);
    let file = cfg.node_policy().written();
    status.node_policy = node_policy_view(&file, config_path.display().to_string());
    let loaded = status.agent.as_ref().filter(|a| a.running).and_then(|a| a.state.node_policy.clone());
    status.node_policy_changed = loaded.as_ref().is_some_and(|l| *l != file);
    let code = ExitCode::from(status.state.exit_code());
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(code);
    }
    println!("{}", agent_line(status.agent.as_ref()));
    match (status.state, &status.error) {
        (State::Error, Some(e)) => {
            println!("enforcement: UNKNOWN under {}", status.pin_dir);
            eprintln!("driftguard: error: reading the pinned enforcement: {e}");
            return Ok(code);
        }
        (State::NotLoaded, _) if status.stats.is_none() => {
            println!("enforcement: NOT LOADED (nothing pinned under {}; `driftguard run` loads it)", status.pin_dir);
            return Ok(code);
        }
        _ => {}
    }
    println!("enforcement: {} (pinned under {})", status.enforcement_path.unwrap_or("NOT ATTACHED"), status.pin_dir);
    if let Some(a) = status.agent.as_ref().filter(|a| !a.state.overlay_upper.is_empty()) {
        println!("overlay upper layer: {}", a.state.overlay_upper);
    }
    if let Some(s) = &status.stats {
        println!(
            "kernel counters: checks {} denies {} kills {} alerts {} events {} ring-buffer drops {} \
             distrusted overlay reads {}",
            s.checks, s.denies, s.kills, s.alerts, s.events, s.ringbuf_drops, s.overlay_unknown
        );
    }
    let np = &status.node_policy;
    println!(
        "node policy ({}, read by the agent when it starts): excluded namespaces: {}; {} rule(s); default mode {}",
        np.config,
        if np.exclusions.is_empty() { "none".to_string() } else { np.exclusions.join(", ") },
        np.rules.len(),
        np.default_mode
    );
    for r in &np.rules {
        let ns = if r.namespaces.is_empty() { "every namespace".to_string() } else { r.namespaces.join(", ") };
        let sel = r.selector.as_deref().map(|s| format!(", pods matching {s}")).unwrap_or_default();
        println!("  rule {}: {} in {ns}{sel}", r.name, r.mode);
    }
    if let (true, Some(loaded)) = (status.node_policy_changed, &loaded) {
        let names: Vec<&str> = loaded.rules.iter().map(|r| r.name.as_str()).collect();
        println!(
            "NODE POLICY CHANGED: the running agent loaded another one at its start ({} rule(s){}; default mode {}): \
             restart the agent to apply the file's (running containers keep their policy)",
            names.len(),
            if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) },
            loaded.default_mode
        );
    }
    println!("{} container cgroup(s) under policy", status.containers.len());
    if !status.containers.is_empty() {
        println!(
            "{:<8} {:<9} {:<16} {:<40} {:<30} RULES",
            "MODE", "OWNER", "SOURCE", "NAMESPACE/POD/CONTAINER", "CGROUP"
        );
        for r in &status.containers {
            let who =
                if r.pod.is_empty() { "-".to_string() } else { format!("{}/{}/{}", r.namespace, r.pod, r.container) };
            let source = if r.policy_source.is_empty() { "-" } else { r.policy_source.as_str() };
            println!("{:<8} {:<9} {:<16} {:<40} {:<30} {}", r.mode, r.owner, source, who, r.cgroup, r.rules.join(","));
        }
    }
    Ok(code)
}

fn gather(cfg: &Config) -> Status {
    let mut status = Status {
        state: State::Error,
        error: None,
        agent: state_file::read(&agent::state_dir()),
        pin_dir: cfg.bpf.pin_dir.display().to_string(),
        enforcement_path: enforcer::pinned_path(&cfg.bpf.pin_dir).map(|p| p.as_str()),
        stats: None,
        node_policy: NodePolicyView {
            config: String::new(),
            exclusions: Vec::new(),
            rules: Vec::new(),
            default_mode: String::new(),
        },
        node_policy_changed: false,
        containers: Vec::new(),
    };
    let read = PolicyStore::open_pinned(&cfg.bpf.pin_dir)
        .context("opening pinned policy maps")
        .and_then(|store| Ok((rows(cfg, &store)?, store.stats().context("reading kernel counters")?)));
    match read {
        Ok((rows, stats)) => {
            status.containers = rows;
            status.stats = Some(stats);
        }
        Err(e)
            if e.downcast_ref::<enforcer::Error>().is_some_and(|e| matches!(e, enforcer::Error::NotPinned { .. })) =>
        {
            status.state = State::NotLoaded;
            return status;
        }
        Err(e) => {
            status.error = Some(crate::cli::error_chain(&e));
            return status;
        }
    }
    let registered = status.agent.as_ref().is_some_and(|a| a.running && a.state.nri == "registered");
    status.state = match (status.enforcement_path, registered) {
        (None, _) => State::NotLoaded,
        (Some(_), true) => State::Enforcing,
        (Some(_), false) => State::AgentDown,
    };
    status
}

fn rows(cfg: &Config, store: &PolicyStore) -> anyhow::Result<Vec<Row>> {
    let known: HashMap<u64, ContainerInfo> =
        Registry::read_file(&agent::registry_file(&agent::state_dir())).into_iter().map(|c| (c.cgroup_id, c)).collect();
    let cgroot = cfg.cgroup_root().ok();
    let mut rows = Vec::new();
    for p in store.list().context("reading policies")? {
        let info = known.get(&p.cgroup_id);
        let cgroup = info
            .map(|c| c.cgroup_path.display().to_string())
            .or_else(|| cgroot.as_ref().and_then(|r| r.find_by_id(p.cgroup_id)).map(|p| p.display().to_string()))
            .unwrap_or_else(|| "(cgroup gone)".into());
        let r = &p.policy.rules;
        let rules = [
            ("drift", r.drift),
            ("fileless", r.fileless),
            ("non_image", r.non_image),
            ("allowlist_only", r.allowlist_only),
            ("exec_memory", r.exec_memory == ExecMemory::On),
            ("jit", r.exec_memory == ExecMemory::Jit),
            ("process_access", r.process_access == ProcessAccess::On),
            ("debug", r.process_access == ProcessAccess::Debug),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect();
        rows.push(Row {
            cgroup_id: p.cgroup_id,
            cgroup,
            mode: p.policy.mode.to_string(),
            owner: format!("{:?}", p.owner).to_lowercase(),
            policy_source: info.and_then(|c| c.policy_source.clone()).map(String::from).unwrap_or_default(),
            namespace: info.map(|c| c.namespace.clone()).unwrap_or_default(),
            pod: info.map(|c| c.pod.clone()).unwrap_or_default(),
            container: info.map(|c| c.container.clone()).unwrap_or_default(),
            rules,
            allow: p.policy.allow.iter().map(|p| p.to_string()).collect(),
            deny: p.policy.deny.iter().map(|p| p.to_string()).collect(),
        });
    }
    Ok(rows)
}

/// One line: is an agent running, and is it registered with the runtime.
fn agent_line(agent: Option<&state_file::AgentView>) -> String {
    let Some(a) = agent else {
        return "agent: not running (no state file; pinned enforcement, if any, keeps working)".to_string();
    };
    let s = &a.state;
    if !a.running {
        return format!(
            "agent: NOT RUNNING (pid {} ended without a clean exit; its last NRI state: {}); pinned enforcement keeps working",
            s.pid,
            s.nri
        );
    }
    let nri = match s.nri.as_str() {
        "registered" => format!("registered with {} for {}", s.nri_detail, state_file::ago(s.nri_since)),
        "unreachable" => format!(
            "NOT connected for {}: {} unreachable ({})",
            state_file::ago(s.nri_since),
            s.nri_socket,
            s.nri_detail
        ),
        other => format!("{other} for {} ({})", state_file::ago(s.nri_since), s.nri_socket),
    };
    format!("agent: running (pid {}, driftguard {}, up {}); NRI: {nri}", s.pid, s.version, state_file::ago(s.started))
}
