//! Prometheus metrics and their HTTP endpoint.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::health::Health;
use crate::enforcer::{EnforcementPath, LayoutProof, OverlayUpper, Stats};
use crate::policy::Mode;

/// All driftguard metrics.
pub struct Metrics {
    registry: Registry,
    /// Verdicts by action, rule and namespace.
    pub verdicts: IntCounterVec,
    /// Containers under policy by mode.
    pub containers: IntGaugeVec,
    /// Ring-buffer drops reported by the kernel.
    pub ringbuf_drops: IntCounter,
    /// Events decoded from the ring buffer.
    pub events: IntCounter,
    /// NRI reconnects (connections after the first).
    pub nri_reconnects: IntCounter,
    /// 1 while registered with the runtime.
    pub nri_connected: IntGauge,
    /// NRI handler latency by event.
    pub handler_seconds: HistogramVec,
    /// Containers refused (bad annotations, policy not installable with failure-policy fail).
    pub refused: IntCounterVec,
    /// Policy install failures by reason.
    pub policy_errors: IntCounterVec,
    /// 1 for the active enforcement path.
    pub enforcement_path: IntGaugeVec,
    /// 1 for where the programs find overlay's upper dentry, and how its proof went.
    pub overlay_upper: IntGaugeVec,
    /// Overlay upper-layer reads the kernel could not trust (judged as drift).
    pub overlay_unknown: IntCounter,
    last_drops: std::sync::atomic::AtomicU64,
    last_overlay_unknown: std::sync::atomic::AtomicU64,
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let verdicts = IntCounterVec::new(
            Opts::new("driftguard_verdicts_total", "Exec/mmap verdicts reported by the kernel"),
            &["action", "rule", "namespace"],
        )
        .expect("static metric definition");
        let containers = IntGaugeVec::new(
            Opts::new("driftguard_containers_under_policy", "Containers with a policy installed, by mode"),
            &["mode"],
        )
        .expect("static metric definition");
        let ringbuf_drops =
            IntCounter::new("driftguard_ringbuf_drops_total", "Events lost because the ring buffer was full")
                .expect("static metric definition");
        let events = IntCounter::new("driftguard_events_total", "Events read from the ring buffer")
            .expect("static metric definition");
        let nri_reconnects = IntCounter::new("driftguard_nri_reconnects_total", "Reconnections to the NRI socket")
            .expect("static metric definition");
        let nri_connected =
            IntGauge::new("driftguard_nri_connected", "1 while the agent is registered with the runtime")
                .expect("static metric definition");
        let handler_seconds = HistogramVec::new(
            HistogramOpts::new("driftguard_nri_handler_seconds", "Time spent handling NRI events").buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.0,
            ]),
            &["event"],
        )
        .expect("static metric definition");
        let refused = IntCounterVec::new(
            Opts::new("driftguard_containers_refused_total", "Containers refused, by reason"),
            &["reason"],
        )
        .expect("static metric definition");
        // Every reason from the start, at 0: an alert on increase() then sees the first refusal.
        for reason in super::output::REFUSAL_REASONS {
            refused.with_label_values(&[reason]);
        }
        let policy_errors = IntCounterVec::new(
            Opts::new("driftguard_policy_errors_total", "Failures to install or remove a policy"),
            &["reason"],
        )
        .expect("static metric definition");
        let enforcement_path = IntGaugeVec::new(
            Opts::new("driftguard_enforcement_path", "1 for the active enforcement path (lsm or tracepoint_kill)"),
            &["path"],
        )
        .expect("static metric definition");
        let overlay_upper = IntGaugeVec::new(
            Opts::new(
                "driftguard_overlay_upper",
                "1 for where the programs find overlay's upper dentry (source) and whether its layout read was \
                 proved at start (proof: not_needed, proven, failed)",
            ),
            &["source", "proof"],
        )
        .expect("static metric definition");
        let overlay_unknown = IntCounter::new(
            "driftguard_overlay_upper_unknown_total",
            "Overlay files whose upper-layer state could not be trusted (file kind upper_unknown, judged as drift)",
        )
        .expect("static metric definition");
        for c in [
            Box::new(verdicts.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(containers.clone()),
            Box::new(ringbuf_drops.clone()),
            Box::new(events.clone()),
            Box::new(nri_reconnects.clone()),
            Box::new(nri_connected.clone()),
            Box::new(handler_seconds.clone()),
            Box::new(refused.clone()),
            Box::new(policy_errors.clone()),
            Box::new(enforcement_path.clone()),
            Box::new(overlay_upper.clone()),
            Box::new(overlay_unknown.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Arc::new(Metrics {
            registry,
            verdicts,
            containers,
            ringbuf_drops,
            events,
            nri_reconnects,
            nri_connected,
            handler_seconds,
            refused,
            policy_errors,
            enforcement_path,
            overlay_upper,
            overlay_unknown,
            last_drops: std::sync::atomic::AtomicU64::new(0),
            last_overlay_unknown: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Mark the active enforcement path.
    pub fn set_path(&self, path: EnforcementPath) {
        for p in [EnforcementPath::Lsm, EnforcementPath::TracepointKill] {
            self.enforcement_path.with_label_values(&[p.as_str()]).set(i64::from(p == path));
        }
    }

    /// Mark where the programs find overlay's upper dentry and how its proof went.
    pub fn set_overlay(&self, source: OverlayUpper, proof: &LayoutProof) {
        self.overlay_upper.reset();
        self.overlay_upper.with_label_values(&[source.as_str(), proof.as_str()]).set(1);
    }

    /// Set the per-mode container gauge.
    pub fn set_containers(&self, counts: &std::collections::HashMap<Mode, usize>) {
        for m in [Mode::Monitor, Mode::Enforce] {
            self.containers.with_label_values(&[m.as_str()]).set(counts.get(&m).copied().unwrap_or(0) as i64);
        }
    }

    /// Fold kernel counters in (drops are cumulative in the pinned map).
    pub fn observe_stats(&self, stats: &Stats) {
        use std::sync::atomic::Ordering;
        let last = self.last_drops.swap(stats.ringbuf_drops, Ordering::Relaxed);
        if stats.ringbuf_drops > last {
            self.ringbuf_drops.inc_by(stats.ringbuf_drops - last);
        }
        let last = self.last_overlay_unknown.swap(stats.overlay_unknown, Ordering::Relaxed);
        if stats.overlay_unknown > last {
            self.overlay_unknown.inc_by(stats.overlay_unknown - last);
        }
    }

    /// Seed the drop baseline (drops before this agent started are not re-reported).
    pub fn baseline_stats(&self, stats: &Stats) {
        self.last_drops.store(stats.ringbuf_drops, std::sync::atomic::Ordering::Relaxed);
        self.last_overlay_unknown.store(stats.overlay_unknown, std::sync::atomic::Ordering::Relaxed);
    }

    /// Text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The answer to one request: `/metrics`, `/healthz`, `/readyz`, or 404.
fn respond(path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let probe = |v: super::health::Verdict| match v {
        Ok(body) => (StatusCode::OK, "text/plain", body),
        Err(body) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", body),
    };
    let (status, ctype, body) = match path {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", metrics.render()),
        "/healthz" => probe(health.liveness()),
        "/readyz" => probe(health.readiness()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz or /readyz\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

/// Serve `/metrics`, `/healthz` and `/readyz` (HTTP/1.1, hyper) on `listener` until the task is
/// dropped. Each connection answers one request and closes; a client has
/// [`HEADER_READ_TIMEOUT`] to send its request head. A failing `accept` (e.g. out of file
/// descriptors) is logged and retried, not fatal.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics endpoint listening");
    }
    let mut accept_failing = false;
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => {
                accept_failing = false;
                sock
            }
            Err(e) => {
                if !accept_failing {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed; retrying");
                    accept_failing = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let health = health.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let resp = respond(req.uri().path(), &metrics, &health);
            async move { Ok::<_, std::convert::Infallible>(resp) }
        });
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(sock), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.verdicts.with_label_values(&["deny", "drift", "default"]).inc();
        m.set_path(EnforcementPath::TracepointKill);
        m.baseline_stats(&Stats { ringbuf_drops: 5, overlay_unknown: 2, ..Stats::default() });
        m.observe_stats(&Stats { ringbuf_drops: 8, overlay_unknown: 9, ..Stats::default() });
        assert_eq!(m.overlay_unknown.get(), 7);
        m.set_overlay(OverlayUpper::Layout, &LayoutProof::Failed("x".into()));
        assert!(m.render().contains("driftguard_overlay_upper{proof=\"failed\",source=\"layout\"} 1"));
        m.handler_seconds.with_label_values(&["start_container"]).observe(0.0003);
        let text = m.render();
        assert!(text.contains("driftguard_verdicts_total{action=\"deny\",namespace=\"default\",rule=\"drift\"} 1"));
        assert!(text.contains("driftguard_enforcement_path{path=\"tracepoint_kill\"} 1"));
        assert!(text.contains("driftguard_enforcement_path{path=\"lsm\"} 0"));
        assert!(text.contains("driftguard_ringbuf_drops_total 3"));
        assert!(text.contains("driftguard_nri_handler_seconds_bucket"));
    }

    /// One raw HTTP/1.1 request; the server closes after answering.
    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .expect("the server closes the connection after its answer")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_404() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = Metrics::new();
        m.events.inc_by(7);
        let server = tokio::spawn(serve(listener, m, Arc::new(Health::default())));
        // A client that connects and sends nothing does not hold up the others.
        let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();

        // No `Connection: close` from the client: the server closes anyway.
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4\r\n"), "{r}");
        assert!(r.contains("\ndriftguard_events_total 7\n"), "{r}");
        // Health::default() has no reader and no NRI connection yet: neither live nor ready.
        for path in ["/healthz", "/readyz"] {
            let r = get(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).await;
            assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{path}: {r}");
        }
        let r = get(addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n") && r.contains("try /metrics"), "{r}");
        // A request body is read, not reset: the answer still arrives.
        let r = get(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        server.abort();
    }
}
