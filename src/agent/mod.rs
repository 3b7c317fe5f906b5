//! The node agent: NRI events → cgroup → policy in the kernel, verdict events out.
//!
//! ```text
//!  containerd ──NRI──▶ plugin::DriftguardPlugin ──▶ enforcer::PolicyStore (pinned maps)
//!                               │                              │
//!                        registry::Registry ◀── enrich ── ring buffer events
//!                               │
//!                 output::Output (stdout / file / events.sock)   metrics (/metrics)
//! ```

pub mod metrics;
pub mod output;
pub mod plugin;
pub mod registry;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::cgroup::{CgroupError, CgroupRoot};
use crate::config::Config;
use crate::enforcer::Enforcer;

pub use metrics::Metrics;
pub use output::{Output, Sinks};
pub use plugin::DriftguardPlugin;
pub use registry::Registry;

/// Where the agent keeps runtime state (container registry, events socket).
pub const DEFAULT_STATE_DIR: &str = "/run/driftguard";

/// State directory: `$DRIFTGUARD_STATE_DIR` or [`DEFAULT_STATE_DIR`].
pub fn state_dir() -> PathBuf {
    std::env::var_os("DRIFTGUARD_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// File holding the container registry.
pub fn registry_file(state_dir: &Path) -> PathBuf {
    state_dir.join("containers.json")
}

/// Unix socket streaming event lines to `driftguard events`.
pub fn events_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("events.sock")
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
}

/// Run the agent until `shutdown` resolves. Enforcement stays pinned afterwards.
pub async fn run(
    cfg: Config,
    enforcer: Enforcer,
    state_dir: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    std::fs::create_dir_all(&state_dir)
        .map_err(|source| AgentError::State { path: state_dir.display().to_string(), source })?;
    let cgroot = match &cfg.cgroup.root {
        Some(p) => CgroupRoot::at(p.clone()),
        None => CgroupRoot::detect()?,
    };
    let node = cfg.node_name();
    let metrics = Metrics::new();
    metrics.set_path(enforcer.path());
    if let Ok(s) = enforcer.stats() {
        metrics.baseline_stats(&s);
    }
    let sinks = Sinks::open(cfg.events.stdout, cfg.events.file.as_deref()).map_err(|source| AgentError::Output {
        path: cfg.events.file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "stdout".into()),
        source,
    })?;
    let output = Output::new(sinks);
    // Containers known before a restart: events are named right away, before the runtime resyncs.
    let registry = Arc::new(Registry::load(registry_file(&state_dir)));
    metrics.set_containers(&registry.count_by_mode());

    let mut tasks = tokio::task::JoinSet::new();

    // Verdict events → enriched JSON lines + metrics.
    let mut stream = enforcer.events()?;
    {
        let (registry, output, metrics, node) = (registry.clone(), output.clone(), metrics.clone(), node.clone());
        tasks.spawn(async move {
            let clock = output::BootClock::now();
            while let Some(ev) = stream.next().await {
                output::publish(&ev, &node, &registry, &clock, &metrics, &output);
            }
            tracing::error!("event stream ended");
        });
    }

    // Kernel counters → metrics.
    {
        let store = enforcer.store().try_clone()?;
        let metrics = metrics.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                match store.stats() {
                    Ok(s) => {
                        let before = metrics.ringbuf_drops.get();
                        metrics.observe_stats(&s);
                        if metrics.ringbuf_drops.get() > before {
                            tracing::warn!(
                                total = metrics.ringbuf_drops.get(),
                                "ring buffer full: events were dropped"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading kernel counters failed"),
                }
            }
        });
    }

    // Persist the registry (debounced: an NRI event never rewrites the file itself).
    {
        let registry = registry.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                registry.flush();
            }
        });
    }

    // Policies of cgroups that vanished (containers gone while we were away, OCI hook leftovers).
    {
        let store = enforcer.store().try_clone()?;
        let cgroot = cgroot.clone();
        let registry = registry.clone();
        tasks.spawn(async move {
            // Not at start: that is when the runtime is busy starting and resyncing containers.
            let period = Duration::from_secs(60);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tick.tick().await;
                let removed = collect_vanished(&store, &cgroot, &registry);
                if removed > 0 {
                    tracing::info!(removed, "dropped policies of vanished cgroups");
                }
            }
        });
    }

    // Live event subscribers.
    {
        let path = events_socket(&state_dir);
        let _ = std::fs::remove_file(&path);
        match tokio::net::UnixListener::bind(&path) {
            Ok(listener) => {
                let output = output.clone();
                tasks.spawn(async move {
                    loop {
                        let Ok((mut sock, _)) = listener.accept().await else { continue };
                        let mut rx = output.subscribe();
                        tokio::spawn(async move {
                            loop {
                                match rx.recv().await {
                                    Ok(line) => {
                                        if sock.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                                            break;
                                        }
                                    }
                                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                        let _ = sock
                                            .write_all(format!("{{\"event\":\"lagged\",\"missed\":{n}}}\n").as_bytes())
                                            .await;
                                    }
                                    Err(_) => break,
                                }
                            }
                        });
                    }
                });
            }
            Err(e) => tracing::warn!(socket = %path.display(), error = %e, "events socket unavailable"),
        }
    }

    if let Some(addr) = cfg.metrics.address {
        let metrics = metrics.clone();
        tasks.spawn(async move {
            if let Err(e) = metrics::serve(addr, metrics).await {
                tracing::error!(%addr, error = %e, "metrics endpoint failed");
            }
        });
    }

    // NRI: connect (and reconnect) for as long as we run.
    let plugin = Arc::new(DriftguardPlugin::new(
        enforcer.store().try_clone()?,
        registry.clone(),
        cgroot.clone(),
        cfg.annotation_defaults(),
        metrics.clone(),
        output.clone(),
        node.clone(),
    ));
    let m = metrics.clone();
    let socket = cfg.nri.socket.clone();
    let runner = nri_plugin::Runner::builder(cfg.nri.plugin_name.clone(), cfg.nri.plugin_index.clone())
        .socket_path(cfg.nri.socket.clone())
        .backoff(nri_plugin::Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_millis(cfg.nri.reconnect_max_backoff_ms.max(250)),
            multiplier: 2.0,
        })
        .on_connection_event(move |ev| on_connection_event(&m, &socket, ev))
        .build()?;
    tracing::info!(
        path = enforcer.path().as_str(), node = %node, nri_socket = %cfg.nri.socket.display(),
        "driftguard agent running; pinned enforcement stays active if the agent stops"
    );
    tasks.spawn(async move {
        if let Err(e) = runner.run_shared(plugin).await {
            tracing::error!(error = %e, "NRI runner stopped");
        }
    });

    tokio::select! {
        _ = shutdown => tracing::info!("shutting down (enforcement stays pinned; `driftguard unload` removes it)"),
        Some(res) = tasks.join_next() => {
            if let Err(e) = res {
                tracing::error!(error = %e, "an agent task failed");
            }
        }
    }
    tasks.abort_all();
    registry.flush();
    let _ = std::fs::remove_file(events_socket(&state_dir));
    drop(enforcer);
    Ok(())
}

fn on_connection_event(m: &Metrics, socket: &Path, ev: &nri_plugin::ConnectionEvent) {
    use nri_plugin::ConnectionEvent as E;
    match ev {
        E::Connected { connection } => {
            if *connection > 1 {
                m.nri_reconnects.inc();
            }
            tracing::info!(connection, "connected to the NRI socket");
        }
        E::Registered { .. } => {}
        E::Configured { runtime_name, runtime_version, nri_version, .. } => {
            m.nri_connected.set(1);
            tracing::info!(%runtime_name, %runtime_version, %nri_version, "registered with the runtime");
        }
        E::Disconnected { error, .. } => {
            m.nri_connected.set(0);
            tracing::warn!(error = ?error, "NRI connection closed; reconnecting (pinned enforcement stays active)");
        }
        E::ConnectFailed { attempt, error, retry_in } => {
            m.nri_connected.set(0);
            if *attempt == 1 || attempt % 20 == 0 {
                tracing::info!(
                    socket = %socket.display(), %error, retry_in = ?retry_in,
                    "waiting for the container runtime's NRI socket (is containerd running with NRI enabled? see `driftguard check`)"
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
