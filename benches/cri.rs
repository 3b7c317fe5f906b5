//! Pod start latency through a real containerd, with and without the agent
//! (`cargo bench --bench cri`; root, containerd from `scripts/install-containerd.sh`).
//!
//! Two private containerd 1.7 instances with the same configuration (`tests/support/containerd.rs`),
//! NRI enabled on both; `driftguard run` (release build) is registered on one of them. Pods are
//! created through CRI like the kubelet does — RunPodSandbox, CreateContainer, StartContainer,
//! each timed separately — in three configurations, interleaved pod by pod (the order rotates
//! every round) so that machine noise hits all of them alike:
//!
//! | config | containerd | pod annotations |
//! |---|---|---|
//! | `no-agent` | no NRI plugin registered | `driftguard.dev/mode: enforce` (ignored) |
//! | `agent-off` | agent registered | none (the agent looks and installs nothing) |
//! | `agent-enforce` | agent registered | `driftguard.dev/mode: enforce` |
//!
//! Every pod is stopped and removed (not timed) before the next one, so each start sees the same
//! state. `DG_BENCH_CRI_PODS` (default 100) pods per configuration, after 3 warm-up pods each.
//! Results: a table on stdout and `$CARGO_TARGET_DIR/bench-cri.json` (or `DG_BENCH_CRI_JSON`).
//! Nothing is asserted. Under `cargo test --all-targets` (no `--bench` argument) it measures
//! nothing.

#[path = "../tests/support/containerd.rs"]
mod containerd;

#[path = "../tests/support/agent_process.rs"]
mod agent_process;
#[path = "../tests/support/vm.rs"]
mod vm;

use std::time::{Duration, Instant};

use agent_process::AgentProcess;
use containerd::Containerd;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    NoAgent,
    AgentOff,
    AgentEnforce,
}

impl Config {
    const ALL: [Config; 3] = [Config::NoAgent, Config::AgentOff, Config::AgentEnforce];

    fn name(self) -> &'static str {
        match self {
            Config::NoAgent => "no-agent",
            Config::AgentOff => "agent-off",
            Config::AgentEnforce => "agent-enforce",
        }
    }
}

/// Per configuration: RunPodSandbox, CreateContainer, StartContainer and their sum, in µs.
#[derive(Default)]
struct Samples {
    run: Vec<f64>,
    create: Vec<f64>,
    start: Vec<f64>,
    total: Vec<f64>,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Nearest-rank percentile of `v` (`p` in 0..=100).
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

fn one_pod(
    ctd: &Containerd,
    name: &str,
    annotations: &[(&str, &str)],
    out: Option<&mut Samples>,
) -> Result<(), String> {
    let t0 = Instant::now();
    let pod = ctd.run_pod(name, annotations)?;
    let t1 = Instant::now();
    let id = ctd.create_container(&pod, "app", &[]).map_err(|e| format!("CreateContainer: {}", e.message()))?;
    let t2 = Instant::now();
    ctd.start_container(&id).map_err(|e| format!("StartContainer: {}", e.message()))?;
    let t3 = Instant::now();
    if let Some(s) = out {
        s.run.push(us(t1 - t0));
        s.create.push(us(t2 - t1));
        s.start.push(us(t3 - t2));
        s.total.push(us(t3 - t0));
    }
    ctd.remove_pod(&pod.id)
}

fn run() -> Result<(), String> {
    let pods: usize = std::env::var("DG_BENCH_CRI_PODS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    containerd::sweep_stale();
    let bare = Containerd::start()?;
    let with = Containerd::start()?;
    let mut agent = AgentProcess::new(&with.nri_sock)?;
    agent.start_synced(1)?;
    println!(
        "containerd {} (two private instances), agent {} ; {pods} pods per configuration, interleaved",
        bare.bins.version,
        env!("CARGO_BIN_EXE_driftguard")
    );
    let enforce: &[(&str, &str)] = &[("driftguard.dev/mode", "enforce")];
    let target = |c: Config| -> (&Containerd, &[(&str, &str)]) {
        match c {
            Config::NoAgent => (&bare, enforce),
            Config::AgentOff => (&with, &[]),
            Config::AgentEnforce => (&with, enforce),
        }
    };
    for i in 0..3 {
        for c in Config::ALL {
            let (ctd, ann) = target(c);
            one_pod(ctd, &format!("warm-{}-{i}", c.name()), ann, None)?;
        }
    }
    let mut samples: Vec<Samples> = Config::ALL.iter().map(|_| Samples::default()).collect();
    let started = Instant::now();
    for i in 0..pods {
        for k in 0..Config::ALL.len() {
            let idx = (i + k) % Config::ALL.len();
            let c = Config::ALL[idx];
            let (ctd, ann) = target(c);
            one_pod(ctd, &format!("b-{}-{i}", c.name()), ann, Some(&mut samples[idx]))
                .map_err(|e| format!("{} pod {i}: {e}\n{}\n{}", c.name(), agent.log_tail(), ctd.log_tail()))?;
        }
    }
    // What the agent itself spent per NRI event (its own histogram), to set against the CRI deltas.
    let metrics = agent.metrics()?;
    let metric = |name: &str, event: &str| -> f64 {
        let prefix = format!("driftguard_nri_handler_seconds_{name}{{event=\"{event}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let mut handlers = serde_json::Map::new();
    for event in ["create_container", "start_container", "stop_container", "remove_container"] {
        let (sum, count) = (metric("sum", event), metric("count", event));
        println!("agent handler {event}: {count} calls, mean {:.1} µs", sum / count * 1e6);
        handlers.insert(event.into(), serde_json::json!({"count": count, "mean_us": sum / count * 1e6}));
    }
    let policies = agent.status()?["containers"].as_array().map(|a| a.len()).unwrap_or(0);
    println!("{} pods in {:.1}s; policies left after removal: {policies}", pods * 3, started.elapsed().as_secs_f64());

    println!("\n| config | phase | p50 ms | p99 ms | min ms | max ms |\n|---|---|---|---|---|---|");
    let mut json = serde_json::Map::new();
    for (c, s) in Config::ALL.iter().zip(&samples) {
        let mut cj = serde_json::Map::new();
        for (phase, v) in [
            ("RunPodSandbox", &s.run),
            ("CreateContainer", &s.create),
            ("StartContainer", &s.start),
            ("total", &s.total),
        ] {
            let (p50, p99, min, max) = (pct(v, 50.0), pct(v, 99.0), pct(v, 0.0), pct(v, 100.0));
            println!(
                "| {} | {phase} | {:.2} | {:.2} | {:.2} | {:.2} |",
                c.name(),
                p50 / 1e3,
                p99 / 1e3,
                min / 1e3,
                max / 1e3
            );
            cj.insert(
                phase.into(),
                serde_json::json!({"p50_us": p50, "p99_us": p99, "min_us": min, "max_us": max, "n": v.len()}),
            );
        }
        json.insert(c.name().into(), serde_json::Value::Object(cj));
    }
    let base = &samples[0];
    for (c, s) in Config::ALL.iter().zip(&samples).skip(1) {
        println!(
            "{}: total p50 {:+.2} ms ({:.3}x), p99 {:+.2} ms; StartContainer p50 {:+.2} ms, CreateContainer p50 {:+.2} ms vs no-agent",
            c.name(),
            (pct(&s.total, 50.0) - pct(&base.total, 50.0)) / 1e3,
            pct(&s.total, 50.0) / pct(&base.total, 50.0),
            (pct(&s.total, 99.0) - pct(&base.total, 99.0)) / 1e3,
            (pct(&s.start, 50.0) - pct(&base.start, 50.0)) / 1e3,
            (pct(&s.create, 50.0) - pct(&base.create, 50.0)) / 1e3,
        );
    }
    let out = std::env::var("DG_BENCH_CRI_JSON").unwrap_or_else(|_| {
        format!("{}/bench-cri.json", std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
    });
    json.insert("pods_per_config".into(), serde_json::json!(pods));
    json.insert("agent_handlers".into(), serde_json::Value::Object(handlers));
    json.insert("containerd".into(), serde_json::json!(bare.bins.version));
    match std::fs::write(&out, serde_json::to_vec_pretty(&serde_json::Value::Object(json)).unwrap_or_default()) {
        Ok(()) => println!("\nwrote {out}"),
        Err(e) => eprintln!("writing {out}: {e}"),
    }
    Ok(())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test --all-targets` runs bench targets without `--bench`: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cri bench: not run by `cargo bench` (no --bench argument); nothing measured");
        return;
    }
    if let Some(why) = containerd::requirements() {
        eprintln!("cri bench: {why}; nothing measured");
        return;
    }
    if let Err(e) = run() {
        eprintln!("cri bench failed: {e}");
        std::process::exit(1);
    }
}
