//! Container start through a real containerd, with and without the agent
//! (`cargo bench --bench cri [-- SECTION...]`; root, containerd from
//! `scripts/install-containerd.sh`). Sections (all when none is named):
//!
//! - `pods`: pod start latency, one pod at a time. Two private containerd 1.7 instances with the
//!   same configuration (`tests/support/containerd.rs`), NRI enabled on both; `driftguard run`
//!   (release build) is registered on one of them. Pods are created through CRI like the kubelet
//!   does — RunPodSandbox, CreateContainer, StartContainer, each timed separately — in three
//!   configurations, interleaved pod by pod (the order rotates every round) so that machine
//!   noise hits all of them alike:
//!
//!   | config | containerd | pod annotations |
//!   |---|---|---|
//!   | `no-agent` | no NRI plugin registered | `driftguard.dev/mode: enforce` (ignored) |
//!   | `agent-off` | agent registered | none (the agent looks and installs nothing) |
//!   | `agent-enforce` | agent registered | `driftguard.dev/mode: enforce` |
//!
//!   Every pod is stopped and removed (not timed) before the next one, so each start sees the
//!   same state. `DG_BENCH_CRI_PODS` (default 100) pods per configuration, after 3 warm-up pods
//!   each.
//! - `scale`: StartContainer under load. One containerd 1.7 (NRI only, no OCI hook: the agent's
//!   cost alone) runs `DG_BENCH_CRI_REGISTERED` (default 1,000) enforce containers in
//!   `DG_BENCH_CRI_BASE_PODS` (default 10) pods, all registered with the agent (its Synchronize
//!   installs their policies). Then, per round and configuration, `DG_BENCH_CRI_PARALLEL`
//!   (default 100) containers are created (not timed) in 10 fresh enforce pods and started with
//!   all StartContainer requests in flight at once; each request is timed from send to answer.
//!   The configurations alternate round by round (`DG_BENCH_CRI_ROUNDS`, default 6, the order
//!   flipping each round) on the same containerd and the same registered containers:
//!   `agent` (registered) and `no-agent` (killed with SIGKILL: containerd has no plugin and asks
//!   nobody). The round's containers are removed before the next one.
//!   `DG_BENCH_CRI_HOOK=<path of driftguard-oci-hook>` wires the OCI hook into containerd as
//!   the packages recommend (shipped base runtime spec), for both configurations.
//! - `reconnect`: containerd restarts (`DG_BENCH_CRI_RESTARTS`, default 10) with the agent
//!   registered. Per restart: the time from containerd's NRI socket reappearing (inotify
//!   `IN_CREATE` in its directory, wall clock) to the agent logging "registered with the
//!   runtime" (the tracing timestamp of that line: the runtime has configured the plugin, events
//!   flow). Also the time containerd itself took until CRI answers.
//!
//! `DG_BENCH_CRI_CONTAINERD=2` runs `scale` and `reconnect` on containerd 2.x
//! (`scripts/install-containerd.sh 2`, `DRIFTGUARD_CONTAINERD2_DIR`) instead of 1.7.
//!
//! Results: tables on stdout and `$CARGO_TARGET_DIR/bench-cri.json` (or `DG_BENCH_CRI_JSON`).
//! Nothing is asserted. Under `cargo test --all-targets` (no `--bench` argument) it measures
//! nothing.

#[path = "../tests/support/containerd.rs"]
mod containerd;

#[path = "../tests/support/agent_process.rs"]
mod agent_process;
#[path = "../tests/support/vm.rs"]
mod vm;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use agent_process::AgentProcess;
use containerd::{Containerd, Pod};

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

/// `DG_BENCH_CRI_CONTAINERD=2`: the `scale` and `reconnect` sections run containerd 2.x
/// (`scripts/install-containerd.sh 2`) instead of 1.7.
fn line() -> containerd::Line {
    match std::env::var("DG_BENCH_CRI_CONTAINERD").as_deref() {
        Ok("2") => containerd::Line::V2,
        _ => containerd::Line::V1_7,
    }
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn bench_pods(json: &mut serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    let pods = knob("DG_BENCH_CRI_PODS", 100);
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
    json.insert("pods_per_config".into(), serde_json::json!(pods));
    json.insert("agent_handlers".into(), serde_json::Value::Object(handlers));
    json.insert("containerd".into(), serde_json::json!(bare.bins.version));
    Ok(())
}

// --- scale: StartContainer with 1,000 registered, 100 in parallel --------------------------------

/// Create `n` containers of the app image in `pods` (round robin), `threads` CRI calls at a time.
fn create_many(ctd: &Containerd, pods: &[Pod], n: usize, prefix: &str, threads: usize) -> Result<Vec<String>, String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<Vec<(usize, String)>, String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return Ok(mine);
                        }
                        let pod = &pods[i % pods.len()];
                        let id = ctd
                            .create_container(pod, &format!("{prefix}-{i}"), &[])
                            .map_err(|e| format!("CreateContainer {prefix}-{i}: {}", e.message()))?;
                        mine.push((i, id));
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err("worker panicked".into()))).collect()
    });
    let mut all = Vec::with_capacity(n);
    for r in results {
        all.extend(r?);
    }
    all.sort();
    Ok(all.into_iter().map(|(_, id)| id).collect())
}

/// Start `ids`, `threads` at a time (setup, not timed).
fn start_many(ctd: &Containerd, ids: &[String], threads: usize) -> Result<(), String> {
    for chunk in ids.chunks(threads.max(1) * 4) {
        for (id, (_, r)) in chunk.iter().zip(ctd.start_containers_concurrently(chunk)) {
            r.map_err(|e| format!("StartContainer {id}: {}", e.message()))?;
        }
    }
    Ok(())
}

fn metric_value(metrics: &str, prefix: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(f64::NAN)
}

fn bench_scale(json: &mut serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    let registered = knob("DG_BENCH_CRI_REGISTERED", 1000);
    let base_pods = knob("DG_BENCH_CRI_BASE_PODS", 10).max(1);
    let parallel = knob("DG_BENCH_CRI_PARALLEL", 100);
    let rounds = knob("DG_BENCH_CRI_ROUNDS", 6);
    let enforce: &[(&str, &str)] = &[("driftguard.dev/mode", "enforce")];
    // DG_BENCH_CRI_HOOK=<driftguard-oci-hook binary>: containerd runs it from the shipped base
    // runtime spec (fail-closed start), as the packages recommend.
    let hook = std::env::var_os("DG_BENCH_CRI_HOOK")
        .map(|bin| containerd::HookWiring { bin: std::path::PathBuf::from(bin), spec: None });
    let ctd = Containerd::start_line(line(), hook.clone())?;
    let mut agent = AgentProcess::new(&ctd.nri_sock)?;
    if hook.is_some() {
        std::fs::copy(&agent.config, &ctd.hook_config).map_err(|e| format!("hook config: {e}"))?;
    }
    agent.start_synced(1)?;
    println!(
        "== scale (OCI hook wired: {}): containerd {}; {registered} enforce containers in {base_pods} pods registered, then {rounds} rounds of \
         {parallel} concurrent StartContainer per configuration",
        hook.is_some(),
        ctd.bins.version
    );
    let t = Instant::now();
    let pods: Vec<Pod> =
        (0..base_pods).map(|i| ctd.run_pod(&format!("base-{i}"), enforce)).collect::<Result<_, _>>()?;
    let ids = create_many(&ctd, &pods, registered, "c", 4)?;
    start_many(&ctd, &ids, 4)?;
    println!("{registered} containers running after {:.1}s", t.elapsed().as_secs_f64());
    let under = |agent: &AgentProcess| -> Result<usize, String> {
        Ok(agent.status()?["containers"].as_array().map(|a| a.len()).unwrap_or(0))
    };
    // Wait until the agent lists them all (its registry is persisted every 100 ms).
    let mut n_under = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        n_under = under(&agent)?;
        if n_under >= registered {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("the agent lists {n_under} containers under policy");
    let mut samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut failures: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let names = ["agent", "no-agent"];
    let mut syncs = Vec::new();
    let mut round_pod = 0usize;
    for r in 0..rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for &c in &order {
            // Set the configuration up (not timed).
            if c == 0 && !agent.running() {
                let n = agent.synced_count() + 1;
                let t = Instant::now();
                agent.start_synced(n)?;
                syncs.push(t.elapsed().as_secs_f64() * 1e3);
            } else if c == 1 {
                agent.kill9();
            }
            let round_pods: Vec<Pod> = (0..10)
                .map(|_| {
                    round_pod += 1;
                    ctd.run_pod(&format!("round-{round_pod}"), enforce)
                })
                .collect::<Result<_, _>>()?;
            let new = create_many(&ctd, &round_pods, parallel, &format!("r{r}-{}", names[c]), 4)?;
            let res = ctd.start_containers_concurrently(&new);
            let mut failed = Vec::new();
            let before = samples[c].len();
            for (id, (d, r)) in new.iter().zip(res) {
                match r {
                    Ok(()) => samples[c].push(us(d)),
                    Err(e) => failed.push(format!("{id}: {}", e.message())),
                }
            }
            if !failed.is_empty() {
                // Reported, not fatal: a refused start is an outcome to count.
                let keep = format!(
                    "{}/bench-cri-failed-{r}-{}.log",
                    std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
                    names[c]
                );
                let _ = std::fs::write(&keep, format!("{}\n--- containerd ---\n{}", agent.log(), ctd.log()));
                eprintln!(
                    "round {r} {}: {} of {parallel} StartContainer failed, e.g. {} (logs: {keep})",
                    names[c],
                    failed.len(),
                    failed[0]
                );
                failures[c].extend(failed);
            }
            if c == 0 {
                // The agent really handled them: its StartContainer count since it (re)started.
                let m = agent.metrics()?;
                let starts = metric_value(&m, "driftguard_nri_handler_seconds_count{event=\"start_container\"} ");
                if starts.is_nan() || starts < parallel as f64 {
                    return Err(format!("round {r}: the agent counted {starts} StartContainer, want >= {parallel}"));
                }
            }
            for p in &round_pods {
                ctd.remove_pod(&p.id)?;
            }
            let s = &samples[c];
            let last = &s[before..];
            println!(
                "round {r} {:>8}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                names[c],
                pct(last, 50.0) / 1e3,
                pct(last, 99.0) / 1e3,
                pct(last, 100.0) / 1e3
            );
        }
    }
    if !agent.running() {
        let n = agent.synced_count() + 1;
        agent.start_synced(n)?;
    }
    let m = agent.metrics()?;
    let handler = metric_value(&m, "driftguard_nri_handler_seconds_sum{event=\"start_container\"} ")
        / metric_value(&m, "driftguard_nri_handler_seconds_count{event=\"start_container\"} ");
    println!(
        "\n| config | StartContainer ok | refused | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|"
    );
    let mut sj = serde_json::Map::new();
    for (c, s) in samples.iter().enumerate() {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            names[c],
            s.len(),
            failures[c].len(),
            pct(s, 50.0) / 1e3,
            pct(s, 90.0) / 1e3,
            pct(s, 99.0) / 1e3,
            pct(s, 100.0) / 1e3
        );
        sj.insert(
            names[c].into(),
            serde_json::json!({"n": s.len(), "failed": failures[c].len(), "failed_examples": &failures[c][..failures[c].len().min(5)], "p50_us": pct(s, 50.0), "p90_us": pct(s, 90.0),
                               "p99_us": pct(s, 99.0), "max_us": pct(s, 100.0)}),
        );
    }
    println!(
        "agent p99 - no-agent p99: {:+.1} ms; p50: {:+.1} ms",
        (pct(&samples[0], 99.0) - pct(&samples[1], 99.0)) / 1e3,
        (pct(&samples[0], 50.0) - pct(&samples[1], 50.0)) / 1e3
    );
    println!(
        "agent Synchronize with {registered}+ containers at each re-start: {:?} ms; last agent's own StartContainer handler mean {:.0} µs",
        syncs.iter().map(|v| v.round()).collect::<Vec<_>>(),
        handler * 1e6
    );
    sj.insert("registered".into(), serde_json::json!(registered));
    sj.insert("under_policy_before".into(), serde_json::json!(n_under));
    sj.insert("parallel".into(), serde_json::json!(parallel));
    sj.insert("rounds".into(), serde_json::json!(rounds));
    sj.insert("agent_start_synced_ms".into(), serde_json::json!(syncs));
    sj.insert("agent_start_handler_mean_us".into(), serde_json::json!(handler * 1e6));
    sj.insert("containerd".into(), serde_json::json!(ctd.bins.version));
    sj.insert("oci_hook".into(), serde_json::json!(hook.is_some()));
    json.extend(sj);
    drop(agent);
    Ok(())
}

// --- reconnect: containerd restart, NRI socket back -> agent registered -----------------------

/// An inotify watch for files created in `dir`.
struct CreateWatch {
    fd: OwnedFd,
}

impl CreateWatch {
    fn new(dir: &Path) -> Result<Self, String> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(format!("inotify_init1: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: valid fd and C string.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_CREATE) } < 0 {
            return Err(format!("inotify_add_watch {}: {}", dir.display(), std::io::Error::last_os_error()));
        }
        Ok(CreateWatch { fd })
    }

    /// Drop pending events.
    fn drain(&self) {
        let mut buf = [0u8; 4096];
        // SAFETY: reading into our buffer from our fd.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }

    /// Block until `name` is created in the directory; the wall-clock time the event was read.
    fn wait_for(&self, name: &str, timeout: Duration) -> Result<SystemTime, String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{name} not created within {timeout:?}"));
            }
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            // SAFETY: reading into our buffer from our fd.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let now = SystemTime::now();
            if n <= 0 {
                continue;
            }
            let mut off = 0usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            while off + head <= n as usize {
                // SAFETY: the kernel wrote a whole event at `off`; read unaligned.
                let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                let name_bytes = &buf[off + head..off + head + ev.len as usize];
                let got = name_bytes.split(|b| *b == 0).next().unwrap_or(&[]);
                if got == name.as_bytes() {
                    return Ok(now);
                }
                off += head + ev.len as usize;
            }
        }
    }
}

/// Timestamps (RFC 3339, the tracing fmt layer's) of the agent's "registered with the runtime" lines.
fn registrations(log: &str) -> Vec<SystemTime> {
    log.lines()
        .filter(|l| l.contains("registered with the runtime"))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|ts| humantime::parse_rfc3339_weak(ts).ok())
        .collect()
}

fn bench_reconnect(json: &mut serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    let restarts = knob("DG_BENCH_CRI_RESTARTS", 10);
    let ctd = Containerd::start_line(line(), None)?;
    let mut agent = AgentProcess::new(&ctd.nri_sock)?;
    agent.start_synced(1)?;
    let (_pod, _id) = {
        let p = ctd.run_pod("running", &[("driftguard.dev/mode", "enforce")])?;
        let id = ctd.run_container(&p, "app", &[])?;
        (p, id)
    };
    println!("== reconnect: containerd {} restarted {restarts} times with the agent registered", ctd.bins.version);
    let watch = CreateWatch::new(&ctd.dir)?;
    let sock_name = ctd.nri_sock.file_name().and_then(|n| n.to_str()).unwrap_or("nri.sock").to_string();
    let mut gaps = Vec::new();
    let mut cri_ready = Vec::new();
    for i in 0..restarts {
        let before = registrations(&agent.log()).len();
        let synced = agent.synced_count();
        ctd.stop();
        watch.drain();
        let t0 = Instant::now();
        // Another thread waits for the socket. containerd is started from this one: it dies with
        // the thread that spawned it (PR_SET_PDEATHSIG).
        let (sock_at, launched) = std::thread::scope(|s| {
            let h = s.spawn(|| watch.wait_for(&sock_name, Duration::from_secs(30)));
            let launched = ctd.restart();
            let at = h.join().unwrap_or_else(|_| Err("the socket watcher panicked".into()));
            (at, launched)
        });
        launched?;
        cri_ready.push(t0.elapsed().as_secs_f64() * 1e3);
        let sock_at = sock_at?;
        agent.wait_synced(synced + 1).map_err(|e| format!("restart {i}: {e}\n{}", ctd.log_tail()))?;
        let regs = registrations(&agent.log());
        let reg_at = *regs.get(before).ok_or_else(|| {
            format!("restart {i}: no new \"registered with the runtime\" line with a timestamp\n{}", agent.log_tail())
        })?;
        let gap = match reg_at.duration_since(sock_at) {
            Ok(d) => d.as_secs_f64() * 1e3,
            Err(e) => -e.duration().as_secs_f64() * 1e3,
        };
        println!(
            "restart {i}: socket back -> registered {gap:.1} ms (containerd serving CRI after {:.0} ms)",
            cri_ready[i]
        );
        gaps.push(gap);
    }
    println!(
        "\nsocket back -> agent registered over {restarts} restarts: median {:.1} ms, p90 {:.1} ms, max {:.1} ms, min {:.1} ms",
        pct(&gaps, 50.0),
        pct(&gaps, 90.0),
        pct(&gaps, 100.0),
        pct(&gaps, 0.0)
    );
    for (k, v) in [
        ("restarts", serde_json::json!(restarts)),
        ("gaps_ms", serde_json::json!(gaps)),
        ("median_ms", serde_json::json!(pct(&gaps, 50.0))),
        ("max_ms", serde_json::json!(pct(&gaps, 100.0))),
        ("containerd_cri_ready_ms", serde_json::json!(cri_ready)),
        ("containerd", serde_json::json!(ctd.bins.version)),
    ] {
        json.insert(k.into(), v);
    }
    drop(agent);
    Ok(())
}

fn run(sections: &[String]) -> Result<(), String> {
    containerd::sweep_stale();
    let want = |s: &str| sections.is_empty() || sections.iter().any(|x| x == s);
    let mut json = serde_json::Map::new();
    let mut res = Ok(());
    for (name, f) in [
        ("pods", bench_pods as fn(&mut serde_json::Map<String, serde_json::Value>) -> Result<(), String>),
        ("scale", bench_scale),
        ("reconnect", bench_reconnect),
    ] {
        if want(name) {
            let mut j = serde_json::Map::new();
            match f(&mut j) {
                Ok(()) => {
                    json.insert(name.into(), serde_json::Value::Object(j));
                }
                Err(e) => {
                    eprintln!("section {name} failed: {e}");
                    res = Err(format!("section {name} failed"));
                }
            }
        }
    }
    let out = std::env::var("DG_BENCH_CRI_JSON").unwrap_or_else(|_| {
        format!("{}/bench-cri.json", std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
    });
    match std::fs::write(&out, serde_json::to_vec_pretty(&serde_json::Value::Object(json)).unwrap_or_default()) {
        Ok(()) => println!("\nwrote {out}"),
        Err(e) => eprintln!("writing {out}: {e}"),
    }
    res
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
    if let Some(why) = containerd::requirements_of(line()) {
        eprintln!("cri bench: {why}; nothing measured");
        return;
    }
    let sections: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if let Err(e) = run(&sections) {
        eprintln!("cri bench failed: {e}");
        std::process::exit(1);
    }
}
