//! Graceful stop ([`StopHandle`], `Runner::run_until`): a request in flight when the stop is asked
//! for is still answered; a request arriving after it reaches no handler; the connection is then
//! closed and the runner returns `Ok(())`. Against the in-process test peer over a real socket.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use nri_plugin::api::*;
use nri_plugin::testing::{Delivery, LifecycleEvent, PeerConnection, RuntimePeer};
use nri_plugin::{ConnectionEvent, EventMask, HandlerResult, Plugin, Runner};
use tokio::sync::{mpsc, Notify};

/// Reports every StartContainer it is given on `seen`; pods named `slow` wait for `release`.
struct Gatekeeper {
    seen: mpsc::UnboundedSender<String>,
    release: Arc<Notify>,
}

impl Plugin for Gatekeeper {
    fn events(&self) -> EventMask {
        EventMask::ALL
    }

    async fn start_container(&self, pod: &PodSandbox, _ctr: &Container) -> HandlerResult<()> {
        let _ = self.seen.send(pod.name.clone());
        if pod.name == "slow" {
            self.release.notified().await;
        }
        Ok(())
    }
}

fn start(pod_name: &str) -> LifecycleEvent {
    let p = pod_named(1, pod_name);
    let c = container_named(1, &p, "app");
    LifecycleEvent::StartContainer(p, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_in_flight_is_answered_and_later_requests_are_not_served() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(dir.path().join("nri.sock")).unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ev = events.clone();
    let (stopping_tx, mut stopping) = mpsc::unbounded_channel();
    let runner = Runner::builder("stopper", "10")
        .socket_path(peer.path())
        .use_env(false)
        .farewell(false)
        .on_connection_event(move |e| {
            if matches!(e, ConnectionEvent::Stopping { .. }) {
                let _ = stopping_tx.send(());
            }
            ev.lock().unwrap().push(e.clone())
        })
        .build()
        .unwrap();
    let stop = runner.stop_handle();
    let run = tokio::spawn(runner.run(Gatekeeper { seen: seen_tx, release: release.clone() }));
    let mut conn = peer.accept().await.unwrap();
    conn.handshake().await.unwrap();
    conn.synchronize(Vec::new(), Vec::new(), 100).await.unwrap();

    // Served normally before the stop.
    conn.send(Delivery::Dedicated, start("before")).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), "before");

    // A request in flight: its handler is running when the stop is asked for. Then a request
    // sent after the stop, while the connection is still open (the slow handler holds it).
    // (PeerConnection is not Sync: the calls run side by side in this task.)
    let in_flight = conn.send(Delivery::Dedicated, start("slow"));
    let after_stop = async {
        assert_eq!(tokio::time::timeout(WAIT, seen.recv()).await.unwrap().unwrap(), "slow");
        stop.stop();
        assert!(stop.is_stopped());
        // Barrier: the runner has stopped taking requests.
        tokio::time::timeout(WAIT, stopping.recv()).await.unwrap().unwrap();
        let late = conn.send(Delivery::StateChange, start("late"));
        let release_later = async {
            // Give the late request time to reach the plugin while the connection is open
            // (there is no barrier for "arrived and dropped"; the assertions below hold either
            // way, this only makes the interesting order the usual one).
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!run.is_finished(), "the runner returned with a request in flight");
            assert!(!conn.is_closed(), "the connection closed with a request in flight");
            release.notify_waiters();
        };
        tokio::join!(late, release_later).0
    };
    let (reply, late) = tokio::time::timeout(WAIT, async { tokio::join!(in_flight, after_stop) }).await.unwrap();
    assert!(reply.is_ok(), "the request in flight must get its reply: {reply:?}");
    assert!(late.is_err(), "a request after the stop must not be answered: {late:?}");

    // The runner closes the connection and returns Ok.
    let res = tokio::time::timeout(WAIT, run).await.expect("the runner must return after a stop").unwrap();
    assert!(res.is_ok(), "{res:?}");
    conn.closed().await.expect("the peer must see the connection close");
    // No handler ran for it.
    assert!(seen.try_recv().is_err(), "a handler saw a request sent after the stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_returns_when_the_signal_fires_also_while_waiting_for_the_runtime() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let (seen_tx, _seen) = mpsc::unbounded_channel();

    // No runtime yet: the runner waits for the socket, and the signal ends that wait.
    let runner = Runner::builder("stopper", "10").socket_path(&socket).use_env(false).build().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run =
        tokio::spawn(runner.run_until(Gatekeeper { seen: seen_tx.clone(), release: Arc::new(Notify::new()) }, async {
            let _ = rx.await;
        }));
    tokio::time::sleep(Duration::from_millis(50)).await; // let it reach its wait (either way is fine)
    tx.send(()).unwrap();
    let res = tokio::time::timeout(WAIT, run).await.expect("a stopped runner must return").unwrap();
    assert!(res.is_ok(), "{res:?}");

    // Connected and idle: the signal closes the connection, and the peer sees it.
    let peer = RuntimePeer::bind(&socket).unwrap();
    let runner =
        Runner::builder("stopper", "10").socket_path(peer.path()).use_env(false).farewell(false).build().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(runner.run_until(Gatekeeper { seen: seen_tx, release: Arc::new(Notify::new()) }, async {
        let _ = rx.await;
    }));
    let mut conn: PeerConnection = peer.accept().await.unwrap();
    conn.handshake().await.unwrap();
    conn.synchronize(Vec::new(), Vec::new(), 100).await.unwrap();
    tx.send(()).unwrap();
    let res = tokio::time::timeout(WAIT, run).await.expect("a stopped runner must return").unwrap();
    assert!(res.is_ok(), "{res:?}");
    conn.closed().await.expect("the peer must see the connection close");
}

/// The farewell connection, as containerd's NRI adaptation sees it: after the stop a second
/// connection registers under the same name and index and subscribes to one event; the main
/// connection serves requests until the runtime synchronizes that connection, and is closed (the
/// runtime's end too) by the time that Synchronize is answered, so the runtime drops it when it
/// adds the farewell connection. Then the farewell connection closes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn farewell_connection_closes_the_main_one_inside_its_synchronize() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(dir.path().join("nri.sock")).unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ev = events.clone();
    let runner = Runner::builder("stopper", "10")
        .socket_path(peer.path())
        .use_env(false)
        .on_connection_event(move |e| ev.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let stop = runner.stop_handle();
    let run = tokio::spawn(runner.run(Gatekeeper { seen: seen_tx, release: release.clone() }));
    let mut main = peer.accept().await.unwrap();
    main.handshake().await.unwrap();
    main.synchronize(Vec::new(), Vec::new(), 100).await.unwrap();

    stop.stop();
    let mut farewell = peer.accept().await.expect("a farewell connection");
    let reg = farewell.registration().await.unwrap();
    assert_eq!((reg.plugin_name.as_str(), reg.plugin_idx.as_str()), ("stopper", "10"));
    let resp = farewell.configure(PeerConnection::default_configure_request()).await.unwrap();
    assert_eq!(resp.events, EventMask::of(&[Event::POST_UPDATE_CONTAINER]).bits() as i32);

    // Until the runtime synchronizes the farewell connection, the main one serves requests.
    main.send(Delivery::StateChange, start("meanwhile")).await.expect("served before the farewell's Synchronize");
    assert_eq!(seen.recv().await.unwrap(), "meanwhile");
    assert!(!main.is_closed());

    // A request in flight on the main connection when the runtime synchronizes the farewell one
    // (in two chunks, as a large node's would be). That Synchronize is answered only after the
    // request in flight was answered and the main connection closed, both ends.
    let slow = main.send(Delivery::Dedicated, start("slow"));
    let sync_then_release = async {
        assert_eq!(tokio::time::timeout(WAIT, seen.recv()).await.unwrap().unwrap(), "slow");
        let (p, c) = (pod(1), container(1, &pod(1)));
        let sync = async {
            let updates = farewell.synchronize(vec![p], vec![c], 1).await;
            (updates, main.is_closed())
        };
        // Released later than a Synchronize answered at once would arrive: only the order
        // matters, not the delay.
        let release_later = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            release.notify_waiters();
        };
        tokio::join!(sync, release_later).0
    };
    let (slow_reply, (updates, main_closed)) =
        tokio::time::timeout(WAIT, async { tokio::join!(slow, sync_then_release) }).await.unwrap();
    assert!(slow_reply.is_ok(), "the request in flight must be answered: {slow_reply:?}");
    assert!(updates.unwrap().is_empty());
    assert!(main_closed, "the main connection must be closed before the farewell's Synchronize is answered");
    farewell.closed().await.expect("the farewell connection closes after its Synchronize");

    let res = tokio::time::timeout(WAIT, run).await.expect("a stopped runner must return").unwrap();
    assert!(res.is_ok(), "{res:?}");
    let events = events.lock().unwrap().clone();
    assert!(
        events.iter().any(|e| matches!(e, ConnectionEvent::Stopping { connection: 1, farewell: true })),
        "{events:?}"
    );
    assert!(matches!(events.last(), Some(ConnectionEvent::Stopped { connection: 1 })), "{events:?}");
    assert!(seen.try_recv().is_err());
}

/// Without a runtime that takes the farewell connection (this peer never accepts it), the stop
/// still completes, after at most FAREWELL_TIMEOUT, and closes the main connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_completes_when_the_farewell_is_not_taken() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(dir.path().join("nri.sock")).unwrap();
    let (seen_tx, _seen) = mpsc::unbounded_channel();
    let runner = Runner::builder("stopper", "10").socket_path(peer.path()).use_env(false).build().unwrap();
    let stop = runner.stop_handle();
    let run = tokio::spawn(runner.run(Gatekeeper { seen: seen_tx, release: Arc::new(Notify::new()) }));
    let mut main = peer.accept().await.unwrap();
    main.handshake().await.unwrap();
    main.synchronize(Vec::new(), Vec::new(), 100).await.unwrap();
    stop.stop();
    let res = tokio::time::timeout(WAIT, run).await.expect("a stopped runner must return").unwrap();
    assert!(res.is_ok(), "{res:?}");
    main.closed().await.expect("the main connection closes");
}
