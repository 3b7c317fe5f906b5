//! Handler deadlines: a handler that overruns is answered for before the runtime's request
//! timeout, with the plugin's chosen answer, and the connection stays up.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nri_plugin::api::*;
use nri_plugin::testing::{Delivery, LifecycleEvent, PeerConnection, RuntimePeer};
use nri_plugin::{Deadline, DeadlinePolicy, Error, EventMask, HandlerResult, Overrun, OverrunAnswer, Plugin, Runner};
use tokio::sync::{mpsc, Notify};

/// Pods named `stuck` never finish StartContainer (until released); `blocking` blocks its thread
/// for a while; the deadline each handler saw is reported on `seen`. Containers named `lenient`
/// are let through when their handler overruns; the rest are refused.
struct Slow {
    seen: mpsc::UnboundedSender<(String, Option<Deadline>)>,
    release: Arc<Notify>,
    finished: mpsc::UnboundedSender<String>,
}

impl Plugin for Slow {
    fn events(&self) -> EventMask {
        EventMask::ALL
    }

    fn on_deadline(&self, o: &Overrun<'_>) -> OverrunAnswer {
        match o.container {
            Some(c) if c.name == "lenient" => OverrunAnswer::Proceed,
            _ => OverrunAnswer::Error,
        }
    }

    async fn start_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
        let _ = self.seen.send((pod.name.clone(), Deadline::current()));
        match pod.name.as_str() {
            "stuck" => self.release.notified().await,
            // Synchronous work the runtime's timer cannot interrupt.
            "blocking" => std::thread::sleep(Duration::from_millis(3000)),
            _ => {}
        }
        let _ = self.finished.send(format!("{}/{}", pod.name, ctr.name));
        Ok(())
    }
}

const REQUEST_TIMEOUT_MS: i64 = 2000;
const MARGIN: Duration = Duration::from_millis(500);

struct Setup {
    _dir: tempfile::TempDir,
    _peer: RuntimePeer,
    conn: PeerConnection,
    seen: mpsc::UnboundedReceiver<(String, Option<Deadline>)>,
    finished: mpsc::UnboundedReceiver<String>,
    release: Arc<Notify>,
}

async fn setup() -> Setup {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(dir.path().join("nri.sock")).unwrap();
    let (stx, seen) = mpsc::unbounded_channel();
    let (ftx, finished) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let runner = Runner::builder("driftguard", "10")
        .socket_path(peer.path())
        .use_env(false)
        .deadlines(Some(DeadlinePolicy { margin: MARGIN, ..DeadlinePolicy::default() }))
        .build()
        .unwrap();
    tokio::spawn(runner.run(Slow { seen: stx, release: release.clone(), finished: ftx }));
    let mut conn = peer.accept().await.unwrap();
    conn.registration().await.unwrap();
    let mut cfg = PeerConnection::default_configure_request();
    cfg.request_timeout = REQUEST_TIMEOUT_MS;
    conn.configure(cfg).await.unwrap();
    Setup { _dir: dir, _peer: peer, conn, seen, finished, release }
}

fn start(pod_name: &str, ctr_name: &str) -> LifecycleEvent {
    let p = pod_named(1, pod_name);
    let c = container_named(1, &p, ctr_name);
    LifecycleEvent::StartContainer(p, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrunning_handler_is_refused_before_the_runtime_timeout_and_the_connection_stays() {
    let mut s = setup().await;
    let budget = Duration::from_millis(REQUEST_TIMEOUT_MS as u64) - MARGIN;

    // Stuck forever: refused by the deadline, in both delivery styles, well before the runtime
    // would have given up on the plugin.
    for delivery in [Delivery::Dedicated, Delivery::StateChange] {
        let t = Instant::now();
        let err = s.conn.send(delivery, start("stuck", "app")).await.expect_err("must be refused");
        let took = t.elapsed();
        match &err {
            Error::Rpc { code: 2, message, .. } => {
                let names_method = message.contains("StartContainer") || message.contains("StateChange");
                assert!(message.contains("deadline") && names_method, "{message}");
                assert!(message.contains(&format!("{budget:?}")), "{message}");
            }
            other => panic!("expected an UNKNOWN status naming the deadline, got {other:?}"),
        }
        assert!(took >= budget, "answered after {took:?}, before the deadline {budget:?}");
        assert!(took < Duration::from_millis(REQUEST_TIMEOUT_MS as u64), "answered after {took:?}: too late");
        let (pod, deadline) = s.seen.recv().await.unwrap();
        assert_eq!(pod, "stuck");
        let d = deadline.expect("the handler sees its deadline");
        assert_eq!(d.budget(), budget);
        assert_eq!(d.runtime_timeout(), Duration::from_millis(REQUEST_TIMEOUT_MS as u64));
    }
    assert!(!s.conn.is_closed(), "the plugin must not be dropped");

    // A handler blocking its thread is answered for too; `lenient` gets the Proceed answer.
    let reply = s.conn.send(Delivery::Dedicated, start("blocking", "lenient")).await;
    assert!(reply.is_ok(), "Proceed must answer success: {reply:?}");
    let err = s.conn.send(Delivery::Dedicated, start("blocking", "strict")).await.expect_err("refused");
    assert!(matches!(err, Error::Rpc { code: 2, .. }), "{err:?}");

    // The connection serves fast requests as before, and overrunning handlers finish in the
    // background (their result is dropped).
    s.conn.send(Delivery::Dedicated, start("fast", "app")).await.unwrap();
    let mut done = Vec::new();
    while done.len() < 3 {
        done.push(tokio::time::timeout(WAIT, s.finished.recv()).await.unwrap().unwrap());
    }
    done.sort();
    assert_eq!(done, ["blocking/lenient", "blocking/strict", "fast/app"]);
    s.release.notify_waiters();
    assert!(!s.conn.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_follows_the_runtime_timeout_of_the_request() {
    let mut s = setup().await;
    // The runtime's own per-request timeout (ttrpc timeout_nano) is shorter than Configure's.
    s.conn.set_timeout(Duration::from_millis(1200));
    let t = Instant::now();
    let err = s.conn.send(Delivery::Dedicated, start("stuck", "app")).await.expect_err("refused");
    assert!(matches!(err, Error::Rpc { code: 2, .. }), "expected the plugin's answer, not a timeout: {err:?}");
    assert!(t.elapsed() < Duration::from_millis(1200), "{:?}", t.elapsed());
    let (_, d) = s.seen.recv().await.unwrap();
    assert_eq!(d.unwrap().budget(), Duration::from_millis(700));
    s.release.notify_waiters();
}
