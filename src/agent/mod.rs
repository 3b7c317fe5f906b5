//! The node agent: NRI events → cgroup → policy in the kernel, verdict events out.
//!
//! ```text
//!  containerd ──NRI──▶ plugin::DriftguardPlugin ──▶ enforcer::PolicyStore (pinned maps)
//!                               │                              │
//!                        registry::Registry ◀── enrich ── ring buffer events
//!                               │
//!                 output::Output (stdout / file / events.sock)   metrics (/metrics)
//! ```

pub mod health;
pub mod metrics;
pub mod output;
pub mod overrun;
pub mod plugin;
pub mod registry;
pub mod sd_notify;
pub mod state_file;
mod tasks;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::{CgroupError, CgroupRoot};
use crate::config::Config;
use crate::enforcer::{Enforcer, LayoutProof};

pub use health::Health;
pub use metrics::Metrics;
pub use output::{Output, Sinks};
pub use plugin::DriftguardPlugin;
pub use registry::Registry;

pub use crate::node_state::{state_dir, DEFAULT_STATE_DIR};

/// File holding the container registry.
pub fn registry_file(state_dir: &Path) -> PathBuf {
    state_dir.join(crate::node_state::REGISTRY_FILE)
}

/// Unix socket streaming event lines to `driftguard events`.
pub fn events_socket(state_dir: &Path) -> PathBuf {
    state_dir.join(crate::node_state::EVENTS_SOCKET)
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No cgroup v2 hierarchy.
    #[error("cgroup v2: {0}")]
    Cgroup(#[from] CgroupError),
    /// The event sinks could not be opened.
    #[error("opening event output {path}: {source}")]
    Output {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Enforcement maps.
    #[error(transparent)]
    Enforcer(#[from] crate::enforcer::Error),
    /// NRI.
    #[error("NRI: {0}")]
    Nri(#[from] nri_plugin::Error),
    /// State directory.
    #[error("state directory {path}: {source}")]
    State {
        /// Directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The metrics endpoint could not listen.
    #[error("metrics endpoint {addr}: {source} (set [metrics] address to a free port, or \"\" to disable it)")]
    Metrics {
        /// Configured address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// An essential task ended: the agent stops so that its supervisor restarts it.
    #[error("agent task '{task}' ended: {reason}")]
    TaskEnded {
        /// Which task.
        task: &'static str,
        /// Why.
        reason: String,
    },
}

/// The agent's essential tasks: each runs for the agent's whole life, and any of them ending
/// (returning, failing or panicking) ends the agent with [`AgentError::TaskEnded`].
struct Tasks {
    set: tokio::task::JoinSet<Result<(), String>>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
}

impl Tasks {
    fn new() -> Self {
        Tasks { set: tokio::task::JoinSet::new(), names: Default::default() }
    }

    fn spawn(
        &mut self,
        name: &'static str,
        fut: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let handle = self.set.spawn(fut);
        self.names.insert(handle.id(), name);
    }

    /// Waits for the first task to end and says which and why. Pending forever without tasks.
    async fn first_ended(&mut self) -> AgentError {
        match self.set.join_next_with_id().await {
            Some(Ok((id, res))) => AgentError::TaskEnded {
                task: self.names.get(&id).copied().unwrap_or("unknown"),
                reason: res.err().unwrap_or_else(|| "returned".to_string()),
            },
            Some(Err(e)) => AgentError::TaskEnded {
                task: self.names.get(&e.id()).copied().unwrap_or("unknown"),
                reason: if e.is_panic() { "panicked".to_string() } else { e.to_string() },
            },
            None => std::future::pending().await,
        }
    }
}

/// How long a shutdown waits for the NRI runner to stop: the farewell connection
/// ([`nri_plugin::FAREWELL_TIMEOUT`], twice), the longest handler deadline (the runtime's request
/// timeout, 2 s by default) and the wait for the runtime to close its end
/// ([`nri_plugin::STOP_CLOSE_TIMEOUT`]), with room to spare; well under systemd's stop timeout.
const NRI_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Run the agent until `shutdown` resolves (`Ok`) or one of its essential tasks ends (`Err`,
/// naming the task and why: the caller exits non-zero so the service manager restarts it).
/// Enforcement stays pinned afterwards either way.
pub async fn run(
    cfg: Config,
    enforcer: Enforcer,
    state_dir: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    std::fs::create_dir_all(&state_dir)
        .map_err(|source| AgentError::State { path: state_dir.display().to_string(), source })?;
    claim_state_dir(&state_dir, &cfg.bpf.pin_dir)?;
    let cgroot = cfg.cgroup_root()?;
    let node = cfg.node_name();
    let metrics = Metrics::new();
    metrics.set_path(enforcer.path());
    metrics.set_overlay(enforcer.overlay_upper(), enforcer.overlay_proof());
    if let Ok(s) = enforcer.stats() {
        metrics.baseline_stats(&s);
    }
    let sinks =
        Sinks::open(cfg.events.stdout, cfg.events.file.as_deref(), cfg.events.file_max_bytes, cfg.events.file_keep)
            .map_err(|source| AgentError::Output {
                path: cfg.events.file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "stdout".into()),
                source,
            })?;
    let output = Output::new(sinks);
    // Containers known before a restart: events are named right away, before the runtime resyncs.
    let registry = Arc::new(Registry::load(registry_file(&state_dir)));
    metrics.set_containers(&registry.count_by_mode());

    let health = Arc::new(Health::default());
    // Bound before anything else runs: a taken port is a start-up error, not a silent gap.
    let metrics_listener = match cfg.metrics.address {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.map_err(|source| AgentError::Metrics { addr, source })?)
        }
        None => None,
    };
    let mut tasks = Tasks::new();
    let stream = enforcer.events()?;
    health.set_reader(stream.heartbeat());
    tasks::event_reader(&mut tasks, stream, registry.clone(), output.clone(), metrics.clone(), node.clone());
    tasks::kernel_counters(&mut tasks, enforcer.store().try_clone()?, metrics.clone());
    tasks::registry_writer(&mut tasks, registry.clone());
    tasks::vanished_collector(&mut tasks, enforcer.store().try_clone()?, cgroot.clone(), registry.clone());
    tasks::events_socket(&mut tasks, &events_socket(&state_dir), output.clone());
    tasks::hook_refusals(&mut tasks, cfg.oci_hook.state_dir.clone(), output.clone(), metrics.clone(), node.clone());
    if let Some(listener) = metrics_listener {
        tasks::metrics_endpoint(&mut tasks, listener, metrics.clone(), health.clone());
    }

    // NRI: connect (and reconnect) for as long as we run.
    let plugin = Arc::new(DriftguardPlugin::new(
        enforcer.store().try_clone()?,
        registry.clone(),
        cgroot.clone(),
        cfg.node_policy(),
        metrics.clone(),
        output.clone(),
        node.clone(),
    ));
    let state_file = Arc::new(state_file::StateFile::create(&state_dir, enforcer.path().as_str(), &cfg.nri.socket));
    state_file.set_node_policy(cfg.node_policy().written());
    state_file.set_overlay_upper(&match enforcer.overlay_proof() {
        LayoutProof::Failed(why) => format!("{}, proof failed: {why}", enforcer.overlay_upper().as_str()),
        p => format!("{}, {}", enforcer.overlay_upper().as_str(), p.as_str()),
    });
    let (nri_stop, nri_done) = nri_connection(&mut tasks, &cfg, plugin, &metrics, &health, &state_file)?;

    // Enforcement is attached and every task runs: ready, whether or not the runtime is there
    // (it may start after us; /readyz tells whether NRI is registered).
    let notifier = sd_notify::Notifier::from_env().map(Arc::new);
    if let Some(n) = &notifier {
        if let Err(e) = n.notify("READY=1\nSTATUS=enforcement attached; waiting for the NRI runtime") {
            tracing::warn!(error = %e, "sd_notify READY failed");
        }
        tasks.spawn("watchdog", supervise(n.clone(), health.clone(), sd_notify::watchdog_interval()));
    }
    tracing::info!(
        path = enforcer.path().as_str(), node = %node, nri_socket = %cfg.nri.socket.display(),
        "driftguard agent running; pinned enforcement stays active if the agent stops"
    );

    let outcome = tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down (enforcement stays pinned; `driftguard unload` removes it)");
            Ok(())
        }
        e = tasks.first_ended() => {
            tracing::error!(error = %e, "agent task ended; exiting with an error so the service manager restarts the agent (enforcement stays pinned)");
            Err(e)
        }
    };
    if let Some(n) = &notifier {
        let _ = n.notify("STOPPING=1");
    }
    if outcome.is_ok() {
        nri_stop.stop();
        // Bounded by the handlers' deadlines and the runner's wait for the runtime's close.
        if tokio::time::timeout(NRI_STOP_TIMEOUT, nri_done).await.is_err() {
            tracing::warn!(timeout = ?NRI_STOP_TIMEOUT, "the NRI connection did not close in time; dropping it");
        }
    }
    tasks.set.abort_all();
    registry.flush();
    let _ = std::fs::remove_file(events_socket(&state_dir));
    state_file.remove();
    drop(enforcer);
    outcome
}

/// Record that the state directory now describes this pin dir: `driftguard unload` of another
/// pin dir leaves it alone.
fn claim_state_dir(state_dir: &Path, pin_dir: &Path) -> Result<(), AgentError> {
    match crate::node_state::claim(state_dir, pin_dir) {
        Ok(None) => Ok(()),
        Ok(Some(before)) => {
            tracing::warn!(
                state_dir = %state_dir.display(),
                before = %before.display(),
                pin_dir = %pin_dir.display(),
                "the state directory described another pin dir; it now describes this agent's (give each \
                 enforcement its own DRIFTGUARD_STATE_DIR)"
            );
            Ok(())
        }
        Err(source) => Err(AgentError::State { path: state_dir.display().to_string(), source }),
    }
}

/// The NRI connection task: connect (and reconnect) for as long as the agent runs. Returns the
/// handle that stops it cleanly and a receiver that fires when it has.
fn nri_connection(
    tasks: &mut Tasks,
    cfg: &Config,
    plugin: Arc<DriftguardPlugin>,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    state_file: &Arc<state_file::StateFile>,
) -> Result<(nri_plugin::StopHandle, tokio::sync::oneshot::Receiver<()>), AgentError> {
    let (m, h, sf) = (metrics.clone(), health.clone(), state_file.clone());
    let socket = cfg.nri.socket.clone();
    let ever_connected = std::sync::atomic::AtomicBool::new(false);
    let outage = std::sync::Mutex::new(None);
    let runner = nri_plugin::Runner::builder(cfg.nri.plugin_name.clone(), cfg.nri.plugin_index.clone())
        .socket_path(cfg.nri.socket.clone())
        .backoff(nri_plugin::Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_millis(cfg.nri.reconnect_max_backoff_ms.max(250)),
            multiplier: 2.0,
        })
        .on_connection_event(move |ev| on_connection_event(&m, &h, &sf, &socket, &ever_connected, &outage, ev))
        .build()?;
    // On shutdown the runner answers the requests in flight and closes the connection, so the
    // runtime is not left waiting for an answer (nri_plugin::StopHandle).
    let nri_stop = runner.stop_handle();
    let (nri_done_tx, nri_done) = tokio::sync::oneshot::channel::<()>();
    tasks.spawn("NRI connection", async move {
        let res = runner.run_shared(plugin).await;
        let _ = nri_done_tx.send(());
        match res {
            Ok(()) => Err("the NRI runner returned".to_string()),
            Err(e) => Err(e.to_string()),
        }
    });

    Ok((nri_stop, nri_done))
}

/// Pings the systemd watchdog, but only while [`Health::liveness`] holds: the ping proves the
/// async runtime schedules tasks, the ring-buffer reader polls and NRI is not stuck (a stuck
/// agent is then killed and restarted by systemd). Also keeps `systemctl status` current.
async fn supervise(n: Arc<sd_notify::Notifier>, health: Arc<Health>, watchdog: Option<Duration>) -> Result<(), String> {
    let period = watchdog.unwrap_or(Duration::from_secs(10)).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = String::new();
    let mut was_live = true;
    loop {
        tick.tick().await;
        let live = health.liveness();
        let status = match (&live, health.registered()) {
            (Ok(_), true) => "enforcing; registered with the NRI runtime".to_string(),
            (Ok(_), false) => "enforcing; waiting for the NRI runtime".to_string(),
            (Err(body), _) => format!("unhealthy: {}", body.lines().skip(1).collect::<Vec<_>>().join("; ")),
        };
        match &live {
            Ok(_) if watchdog.is_some() => {
                let _ = n.notify("WATCHDOG=1");
            }
            Err(body) if was_live => {
                tracing::error!(reason = %body.replace('\n', "; "), "agent unhealthy; not pinging the systemd watchdog");
            }
            _ => {}
        }
        was_live = live.is_ok();
        if status != last_status {
            let _ = n.notify(&format!("STATUS={status}"));
            last_status = status;
        }
    }
}

fn on_connection_event(
    m: &Metrics,
    h: &Health,
    sf: &state_file::StateFile,
    socket: &Path,
    ever_connected: &std::sync::atomic::AtomicBool,
    outage: &std::sync::Mutex<Option<String>>,
    ev: &nri_plugin::ConnectionEvent,
) {
    use nri_plugin::ConnectionEvent as E;
    use std::sync::atomic::Ordering;
    match ev {
        E::Connected { connection } => {
            if *connection > 1 {
                m.nri_reconnects.inc();
            }
            ever_connected.store(true, Ordering::Relaxed);
            if let Ok(mut o) = outage.lock() {
                *o = None;
            }
            h.nri_connected();
            sf.set_nri("handshake", "");
        }
        E::Registered { .. } => {}
        E::Configured { runtime_name, runtime_version, nri_version, events, .. } => {
            m.nri_connected.set(1);
            h.nri_registered(format!("{runtime_name} {runtime_version}"));
            sf.set_nri("registered", &format!("{runtime_name} {runtime_version}"));
            // Runtimes before NRI v0.10 (containerd 1.7, 2.0) do not tell their NRI version.
            let nri_version = if nri_version.is_empty() { "unknown" } else { nri_version.as_str() };
            tracing::info!(%runtime_name, %runtime_version, %nri_version, %events, "registered with the runtime");
        }
        E::Disconnected { error, .. } => {
            m.nri_connected.set(0);
            h.nri_disconnected();
            sf.set_nri("connecting", error.as_deref().unwrap_or(""));
            match error {
                Some(error) => tracing::warn!(
                    %error,
                    "NRI connection lost; reconnecting (pinned enforcement stays active)"
                ),
                None => tracing::warn!(
                    "NRI connection closed by the runtime; reconnecting (pinned enforcement stays active)"
                ),
            }
        }
        E::Stopped { .. } => {
            m.nri_connected.set(0);
            h.nri_disconnected();
            tracing::info!("closed the NRI connection after answering the runtime's requests in flight");
        }
        E::ConnectFailed { attempt, error, .. } => {
            m.nri_connected.set(0);
            h.nri_unreachable(error);
            sf.set_nri("unreachable", error);
            // One line when the runtime becomes unreachable and one when the reason changes, not
            // one per attempt (the runner logs attempts at debug level only).
            let changed = outage.lock().map(|mut o| o.replace(error.clone()).as_ref() != Some(error)).unwrap_or(true);
            if !changed {
                return;
            }
            if ever_connected.load(Ordering::Relaxed) {
                tracing::warn!(
                    socket = %socket.display(), %error, attempt,
                    "NRI socket unavailable; connecting as soon as it appears (pinned enforcement stays active)"
                );
            } else {
                // At start-up the runtime may simply not be up yet, or NRI may be disabled.
                tracing::info!(
                    socket = %socket.display(), %error,
                    "NRI socket unavailable: no NRI runtime yet; connecting as soon as it appears \
                     (is containerd running with NRI enabled? see `driftguard check`)"
                );
            }
        }
        _ => {}
    }
}

/// Remove policies whose cgroup no longer exists. Returns how many were removed.
///
/// Race-free against concurrent installs: the policy ids are read *before* the cgroup
/// hierarchy is walked, and a policy is only ever installed for a cgroup that already
/// exists, so an id missing from the later walk belongs to a cgroup deleted in between.
/// A registry path that still exists vetoes the removal (belt and braces against a walk
/// that missed a directory).
pub fn collect_vanished(store: &crate::enforcer::PolicyStore, cgroot: &CgroupRoot, registry: &Registry) -> usize {
    let policy_ids = store.cgroup_ids();
    let known = registry.snapshot();
    let existing = cgroot.all_ids();
    let still_there =
        |id: u64| known.iter().any(|c| c.cgroup_id == id && crate::cgroup::cgroup_id(&c.cgroup_path).ok() == Some(id));
    let mut removed = 0;
    for id in policy_ids {
        if !existing.contains(&id) && !still_there(id) && store.remove(id).unwrap_or(false) {
            removed += 1;
        }
    }
    for c in known {
        if !existing.contains(&c.cgroup_id) && crate::cgroup::cgroup_id(&c.cgroup_path).ok() != Some(c.cgroup_id) {
            registry.remove(&c.container_id);
        }
    }
    removed
}
