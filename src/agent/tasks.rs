//! The agent's long-running tasks, one function each: [`super::run`] starts them, and the
//! agent exits (non-zero, for the service manager to restart it) when any of them ends.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{collect_vanished, metrics, output, Health, Metrics, Output, Registry, Tasks};
use crate::cgroup::CgroupRoot;
use crate::enforcer::{EventStream, PolicyStore};

/// Verdict events from the ring buffer: enriched JSON lines and metrics.
pub(super) fn event_reader(
    tasks: &mut Tasks,
    mut stream: EventStream,
    registry: Arc<Registry>,
    output: Arc<Output>,
    metrics: Arc<Metrics>,
    node: String,
) {
    tasks.spawn("ring buffer reader", async move {
        let clock = output::BootClock::now();
        while let Some(ev) = stream.next().await {
            output::publish(&ev, &node, &registry, &clock, &metrics, &output);
        }
        Err("the ring buffer reader stopped".to_string())
    });
}

/// Kernel counters into metrics every 5 s; a warning when events were dropped or the overlay
/// upper layer could not be read.
pub(super) fn kernel_counters(tasks: &mut Tasks, store: PolicyStore, metrics: Arc<Metrics>) {
    tasks.spawn("kernel counters", async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            match store.stats() {
                Ok(s) => {
                    let before = metrics.ringbuf_drops.get();
                    let unknown_before = metrics.overlay_unknown.get();
                    metrics.observe_stats(&s);
                    if metrics.overlay_unknown.get() > unknown_before {
                        tracing::warn!(
                            total = metrics.overlay_unknown.get(),
                            "overlay upper layer could not be read reliably: files judged as drift (upper_unknown)"
                        );
                    }
                    if metrics.ringbuf_drops.get() > before {
                        tracing::warn!(total = metrics.ringbuf_drops.get(), "ring buffer full: events were dropped");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading kernel counters failed"),
            }
        }
    });
}

/// Persist the registry (debounced: an NRI event never rewrites the file itself).
pub(super) fn registry_writer(tasks: &mut Tasks, registry: Arc<Registry>) {
    tasks.spawn("registry writer", async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            registry.flush();
        }
    });
}

/// Policies of cgroups that vanished (containers gone while we were away, OCI hook leftovers).
pub(super) fn vanished_collector(tasks: &mut Tasks, store: PolicyStore, cgroot: CgroupRoot, registry: Arc<Registry>) {
    tasks.spawn("vanished-cgroup collector", async move {
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

/// Live event subscribers (`driftguard events`) on a unix socket at `path`. A socket that
/// cannot be bound is a warning: events still go to the configured sinks.
pub(super) fn events_socket(tasks: &mut Tasks, path: &Path, output: Arc<Output>) {
    let _ = std::fs::remove_file(path);
    let listener = match tokio::net::UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => return tracing::warn!(socket = %path.display(), error = %e, "events socket unavailable"),
    };
    tasks.spawn("events socket", async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
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
                            let _ =
                                sock.write_all(format!("{{\"event\":\"lagged\",\"missed\":{n}}}\n").as_bytes()).await;
                        }
                        Err(_) => break,
                    }
                }
            });
        }
    });
}

/// `/metrics`, `/healthz`, `/readyz` on the listener bound at start.
pub(super) fn metrics_endpoint(
    tasks: &mut Tasks,
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    tasks.spawn("metrics endpoint", async move {
        metrics::serve(listener, metrics, health).await;
        Err("stopped serving".to_string())
    });
}

/// Refusals the OCI hook recorded under its state directory (`<dir>/refused/`): each becomes an
/// `admission` event (`source: oci-hook`) and counts in `driftguard_containers_refused_total`,
/// once, also those recorded while the agent was down. Checked every second.
pub(super) fn hook_refusals(
    tasks: &mut Tasks,
    dir: std::path::PathBuf,
    output: Arc<Output>,
    metrics: Arc<Metrics>,
    node: String,
) {
    tasks.spawn("OCI hook refusals", async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            for r in crate::node_state::take_refusals(&dir) {
                match r {
                    Ok(r) => report_hook_refusal(r, &output, &metrics, &node),
                    Err((path, e)) => {
                        tracing::warn!(file = %path.display(), error = %e, "unreadable OCI hook refusal record dropped")
                    }
                }
            }
        }
    });
}

fn report_hook_refusal(r: crate::node_state::HookRefusal, output: &Output, metrics: &Metrics, node: &str) {
    if output::REFUSAL_REASONS.contains(&r.reason.as_str()) {
        metrics.refused.with_label_values(&[r.reason.as_str()]).inc();
    } else {
        tracing::warn!(reason = %r.reason, "OCI hook refusal with an unknown reason (a newer hook?)");
    }
    tracing::warn!(
        namespace = %r.namespace, pod = %r.pod, container = %r.container, reason = %r.reason,
        error = %r.message, "the OCI hook refused a container"
    );
    // The hook does not see the pod's labels: the workload is guessed from the name alone.
    let workload = super::workload::of_pod(&r.pod, &std::collections::BTreeMap::new());
    let ev = output::Refusal {
        event: "admission",
        time: r.time,
        node: node.to_string(),
        namespace: r.namespace,
        pod: r.pod,
        container: r.container,
        container_id: r.container_id,
        image: r.image,
        workload,
        action: "refused",
        source: "oci-hook",
        reason: r.reason,
        key: r.key,
        rule: r.rule,
        message: r.message,
    };
    if let Ok(line) = serde_json::to_string(&ev) {
        output.emit(&line);
    }
}
